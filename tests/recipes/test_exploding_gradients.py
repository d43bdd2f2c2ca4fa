import math

import pytest

from keras_seq.recipes import exploding_gradients


def test_smoke_run_explodes_then_skip_and_clipnorm_survive(tmp_path, check_run, capsys):
    assert exploding_gradients.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(
        tmp_path, labels=("keras", "skip", "clipnorm"), nonfinite=("keras", "skip")
    )
    rows = {row["run"]: row for row in summary["tables"]["Comparison"]}

    # Keras alone: flagged as exploding from the start, then the first
    # non-finite gradient, located in the recurrent layer; NaN weights.
    keras_run = rows["keras"]
    assert keras_run["first_exploding"] == 0 and keras_run["exploding_steps"] > 10
    assert keras_run["first_nonfinite"].startswith("step ")
    assert "rnn/level_0" in keras_run["first_nonfinite"]
    assert keras_run["weights_finite"] is False and keras_run["skipped"] == 0
    assert math.isnan(keras_run["final_loss"])

    # skip: the same run (same steps) but no non-finite update applied.
    skip = rows["skip"]
    assert skip["first_nonfinite"] == keras_run["first_nonfinite"]
    assert skip["weights_finite"] is True and skip["skipped"] >= 1
    assert summary["models"]["skip"]["healthy"] is False

    # clipnorm: trains with finite, small losses.
    clipnorm = rows["clipnorm"]
    assert clipnorm["weights_finite"] is True and clipnorm["first_nonfinite"] == "-"
    assert clipnorm["final_loss"] < 1.0
    assert "Comparison:" in out and "skip kept every weight finite" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gain", "0"], "--gain must be a number > 0. Received: 0.0"),
        (["--learning-rate", "-1"], "--learning-rate must be > 0. Received: -1.0"),
        (["--timesteps", "1"], "--timesteps must be >= 2"),
    ],
)
def test_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        exploding_gradients.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
