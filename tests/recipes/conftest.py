import json

import keras
import pandas as pd
import pytest
from tensorboard.backend.event_processing import event_accumulator


def _tags(directory):
    accumulator = event_accumulator.EventAccumulator(
        str(directory), size_guidance={"tensors": 0}
    ).Reload()
    return set(accumulator.Tags()["tensors"])


@pytest.fixture
def check_run():
    """Checks the files a recipe's run left and returns its summary and
    `{label: loaded model}`; models labelled in `nonfinite` may have
    recorded non-finite gradients."""

    def check(run_dir, labels=("model",), nonfinite=()):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert sorted(summary["models"]) == sorted(labels)
        models = {}
        for label, entry in summary["models"].items():
            files = {kind: run_dir / path for kind, path in entry["files"].items()}
            directory = files["model"].parent
            assert directory == (run_dir if label == "model" else run_dir / label)
            # TensorBoard: Keras's own run and the monitor's.
            assert "epoch_loss" in _tags(directory / "train")
            assert "gradients/global_norm" in _tags(directory / "gradients")
            steps = pd.read_parquet(files["gradients"])
            timesteps = pd.read_parquet(files["timesteps"])
            assert len(steps) >= 1
            # The diagnosis names the last model's sublayers; the frame also
            # holds those of models before a depth reduction.
            assert set(entry["diagnosis"]) <= set(timesteps.layer)
            if label not in nonfinite:
                assert steps.finite.all() and timesteps.grad_norm.notna().all()
            assert "Gradient diagnosis at step" in files["report"].read_text()
            models[label] = keras.saving.load_model(files["model"])
        return summary, models

    return check
