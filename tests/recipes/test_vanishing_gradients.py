import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from keras_seq.recipes import vanishing_gradients


def test_smoke_run_draws_three_models_side_by_side(tmp_path, check_run, capsys):
    assert vanishing_gradients.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path, labels=("simple_rnn", "irnn", "lstm"))

    kinds = {label: type(m.layers[0]).__name__ for label, m in models.items()}
    assert kinds == {"simple_rnn": "SimpleRNN", "irnn": "SharedRNN", "lstm": "LSTM"}
    rows = summary["tables"]["Gradients through time"]
    assert [row["model"] for row in rows] == ["simple_rnn", "irnn", "lstm"]
    timesteps = summary["figures"]["timesteps"]
    for row in rows:
        (diagnosis,) = summary["models"][row["model"]]["diagnosis"].values()
        assert row["horizon"] == diagnosis["horizon"]
        assert 1 <= row["horizon"] <= row["T"] == timesteps
        assert summary["figures"][f"{row['model']}/decay"] == pytest.approx(
            row["decay/step"]
        )

    assert summary["pictures"] == {
        "gradients_through_time": "gradients_through_time.png"
    }
    png = (tmp_path / "gradients_through_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    images = event_accumulator.EventAccumulator(
        str(tmp_path / "figures"), size_guidance={"tensors": 0}
    ).Reload()
    assert images.Tags()["tensors"] == ["figures/gradients_through_time"]
    assert "Gradients through time:" in out and "Picture gradients_through_time" in out


def test_gradient_matrix_is_step_by_timestep(tmp_path):
    class FakeMonitor:
        def timestep_frame(self):
            import pandas as pd

            return pd.DataFrame(
                {
                    "step": [4, 4, 4, 0, 0, 0],
                    "layer": ["r/level_0"] * 6,
                    "timestep": [2, 0, 1, 0, 1, 2],
                    "grad_norm": [6.0, 4.0, 5.0, 1.0, 2.0, 3.0],
                }
            )

    steps, matrix = vanishing_gradients.gradient_matrix(FakeMonitor())
    np.testing.assert_array_equal(steps, [0, 4])
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [4, 5, 6]])
