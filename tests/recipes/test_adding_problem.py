import numpy as np
import pytest

from keras_seq.recipes import adding_problem


def test_data_has_one_marker_per_half_and_sums_the_marked_values():
    x, y = adding_problem.adding_problem(500, 10, np.random.RandomState(0))
    assert x.shape == (500, 10, 2) and y.shape == (500, 1)
    markers = x[..., 1]
    assert (markers[:, :5].sum(axis=1) == 1).all()
    assert (markers[:, 5:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(axis=1))
    # Always answering 1: MSE 1/6, the variance of the sum of two U(0, 1).
    big_x, big_y = adding_problem.adding_problem(20000, 10, np.random.RandomState(1))
    assert np.mean((big_y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)


def test_smoke_run_compares_three_models(tmp_path, check_run, capsys):
    assert adding_problem.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path, labels=("tanh_rnn", "irnn", "lstm"))

    rows = summary["tables"]["Comparison"]
    assert [row["model"] for row in rows] == ["tanh_rnn", "irnn", "lstm"]
    for row in rows:
        assert row["val_mse"] == pytest.approx(
            row["vs_baseline"] * summary["figures"]["baseline_mse"]
        )
        assert 1 <= row["horizon"] <= row["T"] == summary["figures"]["timesteps"]
        assert summary["figures"][f"{row['model']}/horizon"] == row["horizon"]
        (diagnosis,) = summary["models"][row["model"]]["diagnosis"].values()
        assert diagnosis["horizon"] == row["horizon"]
    irnn = models["irnn"].layers[0].get_config()
    assert irnn["activation"] == "relu"
    assert irnn["recurrent_initializer"]["class_name"] == "Identity"
    assert type(models["lstm"].layers[0]).__name__ == "LSTM"
    assert "Comparison:" in out and "vs_baseline" in out
    assert "this run is too short to show that" in out  # 8 steps do not


def test_timesteps_must_allow_two_halves(capsys):
    with pytest.raises(SystemExit) as exit_:
        adding_problem.main(["--timesteps", "1"])
    assert exit_.value.code == 2
    assert "--timesteps must be >= 2" in capsys.readouterr().err
