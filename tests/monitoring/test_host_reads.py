"""The monitor reads nothing from the device on the steps it does not record."""

import os
import sys

import keras
import numpy as np
import pytest
from tensorflow.python.framework import ops  # the one place tensors reach the host

import keras_seq
from keras_seq.callbacks import GradientMonitor

_PACKAGE = os.path.dirname(keras_seq.__file__) + os.sep
_KERAS = os.path.dirname(keras.__file__) + os.sep


class _HostReads:
    """Counts device-to-host conversions of eager tensors (and variables,
    whose `numpy()` reads a tensor) made by keras_seq: the nearest caller
    in keras_seq or Keras is keras_seq's. Keras's own reads (the logs, the
    iterator's `has_value`) are not counted."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = ops._EagerTensorBase._numpy

        def counted(tensor):
            frame = sys._getframe(1)
            while frame is not None:
                name = frame.f_code.co_filename
                if name.startswith((_PACKAGE, _KERAS)):
                    self.count += name.startswith(_PACKAGE)
                    break
                frame = frame.f_back
            return original(tensor)

        monkeypatch.setattr(ops._EagerTensorBase, "_numpy", counted)


def _model(name):
    model = keras_seq.Sequential(
        [
            keras.Input((6, 2)),
            keras_seq.layers.SharedRNN(4, return_sequences=True, name="shared"),
            keras.layers.LSTM(3, name=name),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.parametrize("log_dir", [False, True], ids=["memory", "log_dir"])
def test_no_host_read_on_unrecorded_steps(tmp_path, monkeypatch, log_dir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 2)).astype("float32")
    y = rng.normal(size=(96, 1)).astype("float32")
    reads = {}
    for batches in (8, 24):
        model = _model(f"lstm_{batches}")
        monitor = GradientMonitor(
            every=1000, log_dir=tmp_path / str(batches) if log_dir else None
        )
        model.fit(
            x[: 4 * batches],
            y[: 4 * batches],
            batch_size=4,
            verbose=0,
            callbacks=[monitor],
        )
        assert len(monitor.records) == 1  # step 0 only
        counter = _HostReads(monkeypatch)
        model.fit(
            x[: 4 * batches],
            y[: 4 * batches],
            batch_size=4,
            verbose=0,
            callbacks=[monitor],
        )
        monkeypatch.undo()
        assert monitor.steps == 2 * batches
        reads[batches] = counter.count
    # 16 more unrecorded steps, not one more read: the reads are those of
    # train begin, the first batch, the epoch end and train end.
    assert reads[8] == reads[24]
    assert reads[8] <= 12


def test_no_batch_end_hook():
    # A batch-end hook makes Keras wait for every batch on backends that
    # dispatch them asynchronously (JAX, torch).
    for hook in ("on_train_batch_end", "on_batch_end"):
        assert getattr(GradientMonitor, hook) is getattr(keras.callbacks.Callback, hook)
