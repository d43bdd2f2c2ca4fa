"""One training process of the kill storm (see storm.py): the README's
crash recipe (keras_seq's BackupAndRestore backing up every step, a
GradientMonitor with a log_dir, NaN batches skipped), run with the same
command again and again until it finishes; each run writes
WORKDIR/training.<pid> when training begins, and the run that finishes
writes WORKDIR/weights.npz and WORKDIR/out.json.

    storm_worker.py WORKDIR [MODE]

MODE `late_journal` plants the bug the storm must catch: the monitor's
journal commits each record one record late (after the backups of the
steps that follow it), as a journal written after the backup would.
"""

import json
import os
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_seq
from keras_seq.callbacks import journal

# The suite's size; benchmarks/kill_storm.py trains longer (the environment).
EPOCHS = int(os.environ.get("STORM_EPOCHS", 2))
SAMPLES = int(os.environ.get("STORM_SAMPLES", 64))
BATCH, TIMESTEPS = 8, 12
EVERY = 2
NAN_SAMPLE = 3 * BATCH + 1  # batch 3 of every epoch: an unrecorded step

workdir = pathlib.Path(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else ""

if mode == "late_journal":
    record = journal.Journal.record
    held = []

    def late_record(self, *args):
        held.append(args)
        if len(held) > 1:
            record(self, *held.pop(0))

    close = journal.Journal.close

    def late_close(self):
        while held:
            record(self, *held.pop(0))
        close(self)

    journal.Journal.record = late_record
    journal.Journal.close = late_close

tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(SAMPLES, TIMESTEPS, 3)).astype("float32")
y = rng.normal(size=(SAMPLES, 1)).astype("float32")
x[NAN_SAMPLE, 5, 1] = np.nan

model = keras.Sequential(
    [
        keras.Input((TIMESTEPS, 3)),
        keras_seq.layers.SharedRNN(6, depth=2, name="rnn"),
        keras.layers.Dense(1, name="head"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
monitor = keras_seq.callbacks.GradientMonitor(
    log_dir=workdir / "logs", every=EVERY, on_nan="skip"
)


class Started(keras.callbacks.Callback):
    """Marks the start of training; times the steps after the first."""

    first = last = None
    steps = 0

    def on_train_begin(self, logs=None):
        (workdir / f"training.{os.getpid()}").write_text("")

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.steps += 1


started = Started()


model.fit(
    x,
    y,
    batch_size=BATCH,
    epochs=EPOCHS,
    shuffle=False,
    verbose=0,
    callbacks=[
        # Listed first: Keras calls it before the monitor at each batch end.
        keras_seq.callbacks.BackupAndRestore(
            workdir / "backup", save_freq=1, delete_checkpoint=False
        ),
        monitor,
        started,
    ],
)
frame = monitor.to_frame()
timesteps = monitor.timestep_frame()
np.savez(workdir / "weights.partial.npz", *model.get_weights())
os.replace(workdir / "weights.partial.npz", workdir / "weights.npz")
out = {
    "iterations": int(model.optimizer.iterations.numpy()),
    "skipped_steps": monitor.skipped_steps,
    "lost_steps": monitor.lost_steps,
    "steps": frame["step"].tolist(),
    "global_norm": frame["global_norm"].tolist(),
    "skipped": frame["skipped"].tolist(),
    "timestep_keys": timesteps[["step", "layer", "timestep"]].values.tolist(),
    "grad_norm": timesteps["grad_norm"].tolist(),
    "planned": EPOCHS * SAMPLES // BATCH,
    # None when this run trained no batch (killed after its last backup).
    "seconds_per_step": None
    if started.first is None
    else (started.last - started.first) / max(1, started.steps - 1),
}
(workdir / "out.partial.json").write_text(json.dumps(out))
os.replace(workdir / "out.partial.json", workdir / "out.json")
