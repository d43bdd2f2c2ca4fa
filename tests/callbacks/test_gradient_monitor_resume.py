"""A monitored fit killed with SIGKILL mid-epoch and started again with the
same command (`keras.callbacks.BackupAndRestore`) resumes the monitor's
frames and TensorBoard scalars: every training step once, none lost.

resume_worker.py runs twice, in fresh processes (about 10 s each), on the
backend of this test process (the module runs on TensorFlow and on JAX).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

from keras_seq.callbacks import journal

WORKER = pathlib.Path(__file__).with_name("resume_worker.py")
KILL_STEP = 13  # epoch 1 of 4 (6 batches each), after the backup at 12 batches


def _run(workdir, mode):
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=keras.backend.backend()
    )
    return subprocess.run(
        [sys.executable, str(WORKER), str(workdir), str(KILL_STEP), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _killed_and_resumed(workdir, mode):
    first = _run(workdir, mode)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    state = journal.load(workdir / "logs" / "gradients" / journal.STATE_DIR)
    second = _run(workdir, mode)
    assert second.returncode == 0, second.stderr[-3000:]
    return state, json.loads((workdir / "out.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # One pair of runs: NaN batches (skipped, so training steps and optimizer
    # iterations differ) and the kill inside the monitor's own journal write.
    workdir = tmp_path_factory.mktemp("resume")
    state, out = _killed_and_resumed(workdir, "nan,torn")
    return "nan", workdir, state, out


def _resume_step(out):
    return out["steps"][out["fits"].index(1)]


def test_every_training_step_appears_once(run):
    mode, _, _, out = run
    # Training steps count skipped batches too; the optimizer does not.
    total = out["iterations"] + out["skipped_steps"]
    assert out["steps"] == list(range(total))
    assert out["skipped_steps"] == (5 if mode == "nan" else 0)
    assert out["skipped"] == [mode == "nan" and step % 6 == 1 for step in out["steps"]]


def test_resumes_at_the_step_the_backup_stands_for(run):
    mode, _, _, out = run
    assert 0 < out["restored"] <= KILL_STEP
    # The backup holds `restored` applied updates; before it the NaN batch
    # of epoch 0 (step 1) and, when the backup came after it, of epoch 1
    # (step 7) were skipped without an update.
    skipped_before = sum(1 for s in (1, 7) if mode == "nan" and s < out["restored"] + 2)
    assert _resume_step(out) == out["restored"] + skipped_before
    assert set(out["fits"][: _resume_step(out)]) == {0}
    assert set(out["fits"][_resume_step(out) :]) == {1}


def test_records_before_the_resume_step_are_the_first_runs(run):
    _, _, state, out = run
    first = {line["row"]["step"]: line["row"] for line in state.records}
    resume = _resume_step(out)
    # The first run recorded past the backup (those steps ran again), up to
    # the step whose journal line the kill tore.
    assert max(first) == KILL_STEP - 1 >= resume
    for step in range(resume):
        np.testing.assert_equal(out["global_norm"][step], first[step]["global_norm"])


def test_per_time_step_rows_are_complete_and_unique(run):
    _, _, _, out = run
    keys = [tuple(k) for k in out["timestep_keys"]]
    assert len(keys) == len(set(keys))
    layers = {k[1] for k in keys}
    assert layers == {"rnn/level_0", "rnn/level_1", "lstm/level_0"}
    expected = {
        (s, layer, t) for s in out["steps"] for layer in layers for t in range(9)
    }
    assert set(keys) == expected
    assert out["variable_steps"] == [
        s for s in out["steps"] for _ in range(out["variables"])
    ]


def test_tensorboard_shows_each_step_once(run):
    # TensorBoard's own reader, purging orphaned data (its default).
    _, workdir, _, out = run
    events = plugin_event_accumulator.EventAccumulator(
        str(workdir / "logs" / "gradients"), size_guidance={"tensors": 0}
    )
    events.Reload()
    points = events.Tensors("gradients/global_norm")
    assert [p.step for p in points] == out["steps"]
    values = [float(tensor_util.make_ndarray(p.tensor_proto)) for p in points]
    np.testing.assert_allclose(values, out["global_norm"], rtol=1e-6)


def test_without_the_resume_event_tensorboard_would_show_steps_twice(run):
    # The check above bites: the same files minus the START event.
    _, workdir, _, out = run
    source = workdir / "logs" / "gradients"
    copy = workdir / "no_resume"
    copy.mkdir(exist_ok=True)
    for path in source.glob("events.out.tfevents.*"):
        if not path.name.endswith("-session-start"):
            (copy / path.name).write_bytes(path.read_bytes())
    events = plugin_event_accumulator.EventAccumulator(
        str(copy), size_guidance={"tensors": 0}
    )
    events.Reload()
    steps = [p.step for p in events.Tensors("gradients/global_norm")]
    assert len(steps) > len(out["steps"])


def test_resume_counts_the_loss_scale_optimizers_own_skips(tmp_path):
    # In process: a second monitor and model restored by BackupAndRestore
    # from the end of the first fit. A LossScaleOptimizer starting at a huge
    # scale skips its first updates (overflows, not NaN data): training
    # steps run ahead of its iteration count, and the restart must know.
    import keras

    import keras_seq

    keras.config.set_dtype_policy("mixed_float16")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    def fit(epochs):
        model = keras.Sequential(
            [
                keras.Input((6, 3)),
                keras_seq.layers.SharedRNN(4, name="rnn"),
                keras.layers.Dense(1, dtype="float32"),
            ]
        )
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(0.01), initial_scale=2.0**60
        )
        model.compile(optimizer=optimizer, loss="mse")
        monitor = keras_seq.callbacks.GradientMonitor(
            log_dir=tmp_path / "logs", every=1
        )
        backup = keras.callbacks.BackupAndRestore(
            tmp_path / "backup", delete_checkpoint=False
        )
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[backup, monitor],
        )
        return model, monitor

    first, monitor = fit(2)
    assert int(first.optimizer.iterations.numpy()) < monitor.steps == 8
    # The LSO's overflow skips are counted as such, not as NaN events.
    skipped = monitor.steps - int(first.optimizer.iterations.numpy())
    assert monitor.skipped_steps == monitor.loss_scale_skips == skipped
    assert monitor.diagnosis().nonfinite is None
    _, resumed = fit(3)
    frame = resumed.to_frame()
    assert frame["step"].tolist() == list(range(12))
    assert frame["fit"].tolist() == [0] * 8 + [1] * 4


def test_another_model_in_the_same_log_dir_starts_over(tmp_path):
    import keras

    import keras_seq

    x = np.ones((16, 5, 2), "float32")
    y = np.ones((16, 1), "float32")

    def fit(units, iterations):
        model = keras.Sequential(
            [
                keras.Input((5, 2)),
                keras_seq.layers.SharedRNN(units),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse")
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(iterations)
        monitor = keras_seq.callbacks.GradientMonitor(log_dir=tmp_path, every=1)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
        return monitor.to_frame()

    assert fit(units=3, iterations=0)["step"].tolist() == [0, 1, 2, 3]
    # Same steps, same log_dir, other weights: nothing of the first run is
    # taken over (its journal maps iterations 2 to step 2).
    frame = fit(units=4, iterations=2)
    assert frame["step"].tolist() == [2, 3, 4, 5]
    assert frame["fit"].tolist() == [0] * 4
    # The same model again continues the journal.
    again = fit(units=4, iterations=6)
    assert again["step"].tolist() == list(range(2, 10))
    assert again["fit"].tolist() == [0] * 4 + [1] * 4
