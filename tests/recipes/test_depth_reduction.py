import numpy as np

from keras_seq.recipes import depth_reduction


def test_smoke_run_writes_everything_and_loads(tmp_path, check_run, capsys):
    assert depth_reduction.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path)

    figures = summary["figures"]
    stages = summary["tables"]["Stages"]
    assert figures["levels_before"] == 4  # --smoke: at most 4 levels
    assert figures["levels_after"] == stages[-1]["depth"] <= 4
    assert figures["val_mse_final"] == stages[-1]["val_loss"]
    assert models["model"].count_params() == stages[-1]["parameters"]
    assert "Before: 4 sigmoid levels" in out and "Stages:" in out


def test_recent_sum_targets_the_last_three():
    x, y = depth_reduction.recent_sum(4, 6, np.random.RandomState(0))
    np.testing.assert_allclose(y[:, 0], x[:, 3:, 0].sum(axis=1), rtol=1e-6)
