"""Long runs and small things: bounded memory by spilling per-step rows to
Parquet, a `fit` column, the pictures in TensorBoard, an unwritable log_dir,
report() before any record."""

import pathlib

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_seq
from keras_seq.callbacks import GradientMonitor, records
from keras_seq.layers import SharedRNN

T = 5


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((T, 2)), SharedRNN(3, depth=2, name="rnn"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _data():
    rng = np.random.RandomState(0)
    return rng.randn(24, T, 2).astype("float32"), rng.randn(24, 1).astype("float32")


def _fit(model, monitor, epochs=1):
    x, y = _data()
    model.fit(
        x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=[monitor]
    )


@pytest.mark.parametrize("cap", [25, 33], ids=["between-records", "mid-record"])
@pytest.mark.parametrize("with_log_dir", [True, False])
def test_spilled_rows_come_back_whole(tmp_path, monkeypatch, with_log_dir, cap):
    kept = GradientMonitor(every=1)
    _fit(_model(), kept, epochs=2)
    expected = kept.timestep_frame()
    assert len(expected) == 12 * 2 * T

    # Sublayer records of 5 rows, 24 of them (12 steps x 2 sublayers): a cap
    # of 25 spills every 5th (last after a whole step), 33 every 7th (the
    # last between the two sublayers of step 11, the other still in memory).
    monkeypatch.setattr(records, "MAX_TIMESTEP_ROWS", cap)
    spilled = GradientMonitor(every=1, log_dir=tmp_path if with_log_dir else None)
    _fit(_model(), spilled, epochs=2)
    frame = spilled.timestep_frame()
    pd.testing.assert_frame_equal(frame, expected)
    # 12 steps x 2 sublayers x 5 time steps = 120 rows, over the cap.
    assert len(spilled._records.store._memory) <= 5  # records of 5 rows
    parts = sorted(pathlib.Path(tmp_path).rglob("part-*.parquet"))
    # With a log_dir the journal holds the rows: one copy on disk, no parts;
    # without, the parts go to a temporary directory, not the user's.
    assert parts == []
    if with_log_dir:
        segments = list(pathlib.Path(tmp_path).rglob("segment-*.arrows"))
        assert len(segments) == 1
    path, timestep_path = spilled.save(tmp_path / "frames.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(timestep_path), expected)
    assert len(pd.read_parquet(path)) == 12


def test_fit_column_tells_consecutive_fits_apart():
    model, monitor = _model(), GradientMonitor(every=3)
    _fit(model, monitor)
    _fit(model, monitor)
    assert monitor.to_frame().fit.tolist() == [0, 0, 1, 1]
    assert monitor.to_frame().step.tolist() == [0, 3, 6, 9]
    steps = monitor.timestep_frame()
    assert steps.groupby("fit").step.unique().map(list).tolist() == [[0, 3], [6, 9]]
    assert sorted(monitor.variable_frame().fit.unique()) == [0, 1]


def test_pictures_land_in_tensorboard(tmp_path):
    monitor = GradientMonitor(every=1, log_dir=tmp_path)
    _fit(_model(), monitor, epochs=2)
    figures = monitor.plot()
    assert sorted(figures) == ["decay", "heatmap/rnn/level_0", "heatmap/rnn/level_1"]
    # The decay lines: this epoch's norms by steps back, one per sublayer,
    # averaged over its records (here every record has all T valid steps).
    axes = figures["decay"].axes[0]
    assert [line.get_label() for line in axes.lines] == ["rnn/level_0", "rnn/level_1"]
    assert axes.get_yscale() == "log"
    rows = monitor.timestep_frame().query("layer == 'rnn/level_1' and step >= 6")
    expected = rows.grad_norm.to_numpy().reshape(6, T)[:, ::-1].mean(axis=0)
    np.testing.assert_allclose(axes.lines[1].get_ydata(), expected, rtol=1e-5)

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradients"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()["tensors"]
    for tag in ["gradients/decay", "gradients/heatmap/rnn/level_1"]:
        events = accumulator.Tensors(tag)
        assert [e.step for e in events] == [5, 11]  # each epoch's last step
        width, height, png = tensor_util.make_ndarray(events[-1].tensor_proto)
        image = tf.io.decode_png(png).numpy()
        assert image.shape == (int(height), int(width), 3)
        assert int(width) == 320  # drawn at TensorBoard's card width
    assert "gradients/diagnosis" in tags


def test_unwritable_log_dir_fails_before_the_first_update(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = _model()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"`log_dir` must be a directory.*file"):
        _fit(model, GradientMonitor(every=1, log_dir=blocker / "logs"))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_report_before_any_record_says_so():
    monitor = GradientMonitor(every=1)
    assert "no training step recorded yet" in monitor.report()
    assert monitor.plot() == {}
    assert monitor.timestep_frame().empty


def test_keras_seq_sequential_still_works():
    keras.utils.set_random_seed(0)
    model = keras_seq.Sequential(
        [keras.Input((T, 2)), SharedRNN(3, name="rnn"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = GradientMonitor(every=1)
    _fit(model, monitor)
    assert len(monitor.records) == 6
