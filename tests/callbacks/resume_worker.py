"""Run by test_gradient_monitor_resume.py, twice with the same command: a
monitored fit with `keras.callbacks.BackupAndRestore` that SIGKILLs its own
process at one training step the first time (a marker file says it did).

    resume_worker.py WORKDIR KILL_STEP MODES

MODES is a comma-separated subset of: `nan` puts a NaN in one batch of
every epoch (skipped: training steps and optimizer iterations then differ);
`torn` kills inside the monitor's own journal write, after half a line
(otherwise the kill comes after the step's callbacks). The second run
writes WORKDIR/out.json.
"""

import json
import os
import pathlib
import signal
import sys

import keras
import numpy as np

import keras_seq
from keras_seq.callbacks import journal

workdir, kill_step = pathlib.Path(sys.argv[1]), int(sys.argv[2])
modes = set(sys.argv[3].split(","))
marker = workdir / "killed"


def die():
    marker.write_text("killed")
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(keras.callbacks.Callback):
    """Last in the list: runs after the monitor wrote the step."""

    def __init__(self, monitor):
        super().__init__()
        self.monitor = monitor

    def on_train_batch_end(self, batch, logs=None):
        if not marker.exists() and self.monitor.steps - 1 == kill_step:
            die()


if "torn" in modes and not marker.exists():
    record = journal.Journal.record

    def torn_record(self, row, *args):
        if row["step"] != kill_step:
            return record(self, row, *args)
        self._write = lambda line: (
            self._lines.write(json.dumps(line)[:40]),
            self._lines.flush(),
            die(),
        )
        return record(self, row, *args)

    journal.Journal.record = torn_record


class Restored(keras.callbacks.Callback):
    """After every on_train_begin: the optimizer's restored step count."""

    iterations = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.iterations is None:
            self.iterations = int(self.model.optimizer.iterations.numpy())


keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(48, 9, 3)).astype("float32")
y = rng.normal(size=(48, 1)).astype("float32")
if "nan" in modes:
    x[9, 4, 1] = np.nan  # batch 1 of every epoch (batch size 8, no shuffle)

model = keras.Sequential(
    [
        keras.Input((9, 3)),
        keras_seq.layers.SharedRNN(5, depth=2, return_sequences=True, name="rnn"),
        keras.layers.LSTM(4, name="lstm"),
        keras.layers.Dense(1, name="head"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
monitor = keras_seq.callbacks.GradientMonitor(
    log_dir=workdir / "logs", every=1, on_nan="skip"
)
restored = Restored()
model.fit(
    x,
    y,
    batch_size=8,
    epochs=4,
    shuffle=False,
    verbose=0,
    callbacks=[
        keras.callbacks.BackupAndRestore(workdir / "backup", save_freq=4),
        monitor,
        restored,
        KillAt(monitor),
    ],
)
frame = monitor.to_frame()
steps = monitor.timestep_frame()
(workdir / "out.json").write_text(
    json.dumps(
        {
            "restored": restored.iterations,
            "iterations": int(model.optimizer.iterations.numpy()),
            "skipped_steps": monitor.skipped_steps,
            "steps": frame["step"].tolist(),
            "fits": frame["fit"].tolist(),
            "skipped": frame["skipped"].tolist(),
            "global_norm": frame["global_norm"].tolist(),
            "timestep_keys": steps[["step", "layer", "timestep"]].values.tolist(),
            "variable_steps": monitor.variable_frame()["step"].tolist(),
            "variables": len(model.trainable_variables),
        }
    )
)
