"""GradientMonitor behaviour: verdicts, actions, TensorBoard, frames, errors."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN


def _model(rnn, steps, features=2, outputs=1):
    model = keras_seq.Sequential(
        [keras.Input((steps, features)), rnn, keras.layers.Dense(outputs, name="head")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _fit(model, x, y, monitor, **kwargs):
    kwargs.setdefault("batch_size", 4)
    return model.fit(x, y, shuffle=False, verbose=0, callbacks=[monitor], **kwargs)


def test_vanishing_found_for_small_recurrent_weights():
    steps = 60
    x = np.random.RandomState(0).randn(8, steps, 2).astype("float32")
    y = np.ones((8, 1), "float32")
    small = _model(
        SharedRNN(
            6, recurrent_initializer=keras.initializers.Orthogonal(0.1), name="rnn"
        ),
        steps,
    )
    monitor = GradientMonitor(every=1)
    _fit(small, x, y, monitor, epochs=1)
    diagnosis = monitor.diagnosis()
    assert diagnosis.vanishing == ["rnn/level_0"]
    assert diagnosis.sublayers["rnn/level_0"].horizon < 6
    assert diagnosis.sublayers["rnn/level_0"].decay < 0.3
    assert "vanishing" in monitor.report()

    # Control: a linear orthogonal recurrence keeps the gradient's norm.
    healthy = _model(SharedRNN(6, activation="linear", name="rnn"), steps)
    control = GradientMonitor(every=1)
    _fit(healthy, x * 0.1, y, control, epochs=1, batch_size=8)
    assert control.diagnosis().vanishing == []
    assert control.diagnosis().sublayers["rnn/level_0"].horizon == steps


def test_exploding_found_with_a_scaled_up_recurrent_kernel():
    steps = 30
    x = np.abs(np.random.RandomState(0).randn(8, steps, 2)).astype("float32")
    model = _model(
        SharedRNN(
            4,
            activation="relu",
            recurrent_initializer=keras.initializers.Identity(gain=1.6),
            kernel_initializer="ones",
            name="rnn",
        ),
        steps,
    )
    monitor = GradientMonitor(every=1, on_explode="stop")
    with pytest.warns(UserWarning, match=r"Exploding gradients at step 0.*Stopping"):
        history = _fit(model, x, np.zeros((8, 1), "float32"), monitor, epochs=3)
    assert monitor.diagnosis().exploding
    assert monitor.diagnosis().exploding_steps == [0]
    assert monitor.to_frame().global_norm.iloc[0] > 1e3
    assert monitor.diagnosis().sublayers["rnn/level_0"].decay > 1.0
    assert len(history.history["loss"]) == 1  # stopped in the first epoch


def _nan_data():
    x = np.random.RandomState(0).randn(12, 8, 2).astype("float32")
    x[5, 3, 1] = np.nan  # second batch (of 4), time step 3
    return x, np.ones((12, 1), "float32")


class _WeightSnapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.before, self.after = {}, {}

    def _state(self):
        return [
            v.numpy().copy()
            for v in self.model.weights + self.model.optimizer.variables
        ]

    def on_train_batch_begin(self, batch, logs=None):
        self.before[batch] = self._state()

    def on_train_batch_end(self, batch, logs=None):
        self.after[batch] = self._state()


def test_nan_is_located_and_skipped_bit_for_bit():
    x, y = _nan_data()
    model = _model(SharedRNN(5, depth=2, name="rnn"), 8)
    model.compile(optimizer="adam", loss="mse")
    snapshots = _WeightSnapshots()
    monitor = GradientMonitor(every=1, on_nan="skip")
    history = model.fit(
        x, y, batch_size=4, shuffle=False, verbose=0, callbacks=[snapshots, monitor]
    )
    for before, after in zip(snapshots.before[1], snapshots.after[1]):
        np.testing.assert_array_equal(before, after)
    # Training went on: the third batch changed the weights again.
    assert not np.array_equal(snapshots.before[2][0], snapshots.after[2][0])
    assert np.all(np.isfinite(model.get_weights()[0]))
    assert monitor.skipped_steps == 1
    nonfinite = monitor.diagnosis().nonfinite
    assert (nonfinite.step, nonfinite.layer, nonfinite.timestep) == (
        1,
        "rnn/level_0",
        3,
    )
    frame = monitor.to_frame()
    assert frame.finite.tolist() == [True, False, True]
    assert frame.skipped.tolist() == [False, True, False]
    assert not np.isfinite(history.history["loss"][0])  # Keras's mean saw NaN


def test_nan_stops_with_the_last_good_weights():
    x, y = _nan_data()
    model = _model(SharedRNN(5, name="rnn"), 8)
    snapshots = _WeightSnapshots()
    monitor = GradientMonitor(on_nan="stop", every=2)  # batch 1 is not recorded
    with pytest.warns(UserWarning, match=r"Non-finite gradients at step 1.*last good"):
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[snapshots, monitor],
        )
    # The host reads the counters at recorded steps only: the fit stops at
    # step 2 (the next record), and no update after the bad step 1 was
    # applied: the weights are the last good step's.
    assert sorted(snapshots.after) == [0, 1, 2]
    for before, after in zip(snapshots.before[1], snapshots.after[2]):
        np.testing.assert_array_equal(before, after)
    assert monitor.diagnosis().nonfinite.step == 1
    assert monitor.diagnosis().nonfinite.layer is None  # not a recorded step
    assert monitor.skipped_steps == 2  # the bad update and the one withheld
    assert monitor.to_frame().skipped.tolist() == [False, True]


def test_nan_warn_applies_the_update():
    x, y = _nan_data()
    model = _model(SharedRNN(5, name="rnn"), 8)
    with pytest.warns(UserWarning, match="update was applied"):
        _fit(model, x, y, GradientMonitor(every=1, on_nan="warn"))
    assert not np.all(np.isfinite(model.get_weights()[0]))


def test_tensorboard_tags_match_the_frames(tmp_path):
    x = np.random.RandomState(0).randn(8, 6, 2).astype("float32")
    model = _model(SharedRNN(4, depth=2, name="rnn"), 6)
    monitor = GradientMonitor(every=1, log_dir=tmp_path, histograms=True)
    _fit(model, x, np.ones((8, 1)), monitor, epochs=2)

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradients"), size_guidance={"tensors": 0, "images": 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    frame = monitor.to_frame()
    scalar_tags = {
        "gradients/global_norm": "global_norm",
        "gradients/applied_norm": "applied_norm",
        "gradients/loss": "loss",
        "gradients/norm/rnn": "norm/rnn",
        "gradients/norm/head": "norm/head",
        "gradients/horizon/rnn/level_1": "horizon/rnn/level_1",
        "gradients/decay/rnn/level_0": "decay/rnn/level_0",
    }
    for tag, column in scalar_tags.items():
        events = accumulator.Tensors(tag)
        assert [e.step for e in events] == frame.step.tolist()
        values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        np.testing.assert_allclose(values, frame[column], rtol=1e-6)
    assert "gradients/skipped_steps" in tags["tensors"]
    text = accumulator.Tensors("gradients/diagnosis")
    assert len(text) == 2  # one per epoch
    markdown = tensor_util.make_ndarray(text[-1].tensor_proto).item().decode()
    assert "| rnn/level_1 | 6 |" in markdown
    assert any(t.startswith("gradients/values/") for t in tags["tensors"])
    heatmaps = [t for t in tags["tensors"] if t.startswith("gradients/heatmap/")]
    assert sorted(heatmaps) == [
        "gradients/heatmap/rnn/level_0",
        "gradients/heatmap/rnn/level_1",
    ]
    events = accumulator.Tensors("gradients/heatmap/rnn/level_0")
    assert len(events) == 2  # one per epoch
    width, height, png = tensor_util.make_ndarray(events[-1].tensor_proto)
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (int(height), int(width), 3)
    np.testing.assert_array_equal(image, monitor.heatmaps()["rnn/level_0"])
    # The heatmap figure's data: 4 recorded steps (rows) x 6 time steps.
    figure = monitor.plot()["heatmap/rnn/level_0"]
    drawn = figure.axes[0].images[0].get_array()
    rows = monitor.timestep_frame().query("layer == 'rnn/level_0'")
    np.testing.assert_allclose(
        drawn, np.log10(rows.grad_norm.to_numpy().reshape(4, 6)), rtol=1e-6
    )
    assert figure.axes[0].get_title() == (
        f"rnn/level_0: horizon {monitor.diagnosis().sublayers['rnn/level_0'].horizon}"
    )
    assert "gradients/decay" in tags["tensors"]


def test_works_next_to_keras_tensorboard(tmp_path):
    x = np.random.RandomState(0).randn(8, 6, 2).astype("float32")
    model = _model(SharedRNN(4, name="rnn"), 6)
    monitor = GradientMonitor(every=1, log_dir=tmp_path)
    model.fit(
        x,
        np.ones((8, 1)),
        batch_size=4,
        verbose=0,
        validation_split=0.5,
        callbacks=[keras.callbacks.TensorBoard(tmp_path, update_freq="batch"), monitor],
    )
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["gradients", "train", "validation"]
    train = event_accumulator.EventAccumulator(str(tmp_path / "train"))
    train.Reload()
    assert "epoch_loss" in train.Tags()["tensors"]
    assert len(monitor.to_frame()) == 1


def test_frames_and_save(tmp_path):
    x = np.random.RandomState(0).randn(12, 5, 2).astype("float32")
    model = _model(keras.layers.Bidirectional(SharedRNN(3, name="rnn")), 5)
    monitor = GradientMonitor(every=2)
    _fit(model, x, np.ones((12, 1)), monitor, epochs=2)
    frame = monitor.to_frame()
    assert frame.step.tolist() == [0, 2, 4]
    assert frame.epoch.tolist() == [0, 0, 1]
    for column in [
        "step",
        "epoch",
        "loss",
        "global_norm",
        "finite",
        "norm/bidirectional",
        "norm/head",
        "horizon/forward_rnn/level_0",
        "decay/backward_rnn/level_0",
    ]:
        assert column in frame.columns
    steps = monitor.timestep_frame()
    assert list(steps.columns) == [
        "step",
        "fit",
        "layer",
        "timestep",
        "grad_norm",
        "contribution",
        "valid_fraction",
        "cell_grad_norm",
    ]
    assert len(steps) == 3 * 2 * 5
    variables = monitor.variable_frame()
    # Per-layer norms are the root sum of squares of their variables' norms.
    first = variables[variables.step == 0]
    expected = np.sqrt((first[first.layer == "head"].grad_norm ** 2).sum())
    assert frame["norm/head"].iloc[0] == pytest.approx(expected, rel=1e-6)

    csv, csv_steps = monitor.save(tmp_path / "grads.csv")
    # CSV reads an empty `skipped_by` back as NaN.
    read = pd.read_csv(csv).fillna({"skipped_by": ""})
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)
    assert len(pd.read_csv(csv_steps)) == len(steps)
    parquet, parquet_steps = monitor.save(tmp_path / "grads.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_steps), steps)
    with pytest.raises(
        ValueError, match=r"`path` must end in .csv or .parquet.*grads.txt"
    ):
        monitor.save(tmp_path / "grads.txt")


def test_keras_layers_get_per_layer_norms():
    x = np.random.RandomState(0).randn(4, 6, 2).astype("float32")
    y = np.ones((4, 1), "float32")
    model = keras_seq.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.LSTM(3, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    monitor = GradientMonitor(every=1)
    _fit(model, x, y, monitor)
    row = monitor.to_frame().iloc[0]
    lstm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in grads[:3]))
    assert row["norm/lstm"] == pytest.approx(lstm, rel=1e-5)
    assert row["norm/head"] == pytest.approx(
        np.linalg.norm(np.concatenate([g.numpy().ravel() for g in grads[3:]])), rel=1e-5
    )
    # ... and since they are Keras's own LSTM, per-step data too.
    assert set(monitor.timestep_frame().layer) == {"lstm/level_0"}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"every": 0},
            ValueError,
            r"`every` must be an integer >= 1. Received: every=0",
        ),
        ({"on_nan": "ignore"}, ValueError, r"`on_nan` must be one of .*'ignore'"),
        ({"on_explode": "skip"}, ValueError, r"`on_explode` must be one of .*'skip'"),
        ({"log_dir": 3}, TypeError, r"`log_dir` must be a path.*log_dir=3"),
        ({"histograms": "yes"}, TypeError, r"`histograms` must be a boolean"),
        ({"horizon_fraction": 2.0}, ValueError, r"`horizon_fraction` must be a float"),
        (
            {"vanishing_ratio": 0.0},
            ValueError,
            r"`vanishing_ratio` must be .*\(0, 1\)",
        ),
        (
            {"exploding_ratio": 1.0},
            ValueError,
            r"`exploding_ratio` must be a number > 1. Received: exploding_ratio=1.0",
        ),
        (
            {"explode_threshold": -1},
            ValueError,
            r"`explode_threshold` must be a positive",
        ),
        ({"explode_jump": 0.5}, ValueError, r"`explode_jump` must be a number > 1"),
        (
            {"depth_exploding_ratio": 1},
            ValueError,
            r"`depth_exploding_ratio` must be a number > 1",
        ),
        ({"depth_vanishing_ratio": 0}, ValueError, r"`depth_vanishing_ratio`.*\(0,"),
        ({"every": 2.5}, TypeError, r"`every` must be an integer"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        GradientMonitor(**kwargs)


def test_loss_scale_overflow_is_not_a_nan_event():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras_seq.Sequential(
        [
            keras.Input((6, 2)),
            SharedRNN(4, name="rnn"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.01), initial_scale=2.0**60
    )
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.RandomState(0).randn(8, 6, 2).astype("float32")
    monitor = GradientMonitor(every=1, on_nan="stop")
    history = _fit(model, x, np.ones((8, 1)), monitor, epochs=2)
    frame = monitor.to_frame()
    assert not frame.finite.iloc[0] and frame.skipped.iloc[0]  # an overflow
    assert len(history.history["loss"]) == 2  # not stopped
    assert float(optimizer.dynamic_scale.numpy()) < 2.0**60  # it lowered the scale
    # One truth: the rows it skipped are counted and named as the LSO's, in
    # the frame, the report and the attribute; no NaN event is claimed.
    skipped = frame[frame.skipped]
    assert (skipped.skipped_by == "loss_scale").all() and len(skipped) >= 1
    updates = int(optimizer.iterations.numpy())
    assert monitor.skipped_steps == monitor.loss_scale_skips == monitor.steps - updates
    assert monitor.skipped_steps >= len(skipped)
    diagnosis = monitor.diagnosis()
    assert diagnosis.nonfinite is None and not diagnosis.exploding_steps
    report = monitor.report()
    assert f"skipped updates: {monitor.skipped_steps}: " in report
    assert "by the LossScaleOptimizer" in report
    assert "non-finite values: none, apart from the LossScaleOptimizer" in report


def test_nan_inside_a_multi_step_execution_is_not_missed():
    x, y = _nan_data()  # batch 1 of 3 has a NaN
    model = _model(SharedRNN(5, name="rnn"), 8)
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    monitor = GradientMonitor(every=1, on_nan="stop")
    with pytest.warns(UserWarning, match=r"Non-finite gradients at step 1"):
        history = model.fit(
            x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[monitor]
        )
    assert len(history.history["loss"]) == 1
    assert monitor.skipped_steps == 1
    assert monitor.diagnosis().nonfinite.step == 1
    assert np.all(np.isfinite(model.get_weights()[0]))


def test_loss_scale_factor_is_undone():
    x = np.random.RandomState(0).randn(4, 6, 2).astype("float32")
    frames = []
    for factor in (None, 8.0):
        keras.utils.set_random_seed(0)
        model = _model(SharedRNN(3, name="rnn"), 6)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, loss_scale_factor=factor), loss="mse"
        )
        monitor = GradientMonitor(every=1)
        _fit(model, x, np.ones((4, 1)), monitor)
        frames.append(monitor.to_frame())
    np.testing.assert_allclose(frames[1].global_norm, frames[0].global_norm, rtol=1e-5)


def test_monitor_reused_across_fits(tmp_path):
    x = np.random.RandomState(0).randn(8, 6, 2).astype("float32")
    model = _model(SharedRNN(3, name="rnn"), 6)
    monitor = GradientMonitor(every=1, log_dir=tmp_path)
    _fit(model, x, np.ones((8, 1)), monitor)
    _fit(model, x, np.ones((8, 1)), monitor)
    assert monitor.to_frame().step.tolist() == [0, 1, 2, 3]


def test_a_layer_called_twice_is_recorded_per_call():
    a, b = keras.Input((5, 2)), keras.Input((5, 2))
    encoder = SharedRNN(3, name="encoder")
    outputs = keras.layers.Dense(1)(
        keras.layers.Concatenate()([encoder(a), encoder(b)])
    )
    model = keras_seq.Model([a, b], outputs)
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.RandomState(0).randn(4, 5, 2).astype("float32")
    monitor = GradientMonitor(every=1)
    model.fit([x, -x], np.ones((4, 1)), verbose=0, callbacks=[monitor])
    frame = monitor.timestep_frame()
    assert sorted(frame.layer.unique()) == ["encoder#1/level_0", "encoder/level_0"]
    assert len(frame) == 2 * 5


def test_epoch_logs_carry_a_gradient_summary(tmp_path):
    x = np.random.RandomState(0).randn(16, 7, 2).astype("float32")
    y = np.random.RandomState(1).randn(16, 1).astype("float32")
    model = keras_seq.Sequential(
        [
            keras.Input((7, 2)),
            SharedRNN(3, return_sequences=True, name="rnn"),
            keras.layers.LSTM(3, name="top"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    monitor = GradientMonitor(every=3)
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[monitor, keras.callbacks.TensorBoard(tmp_path)],
    )
    frame = monitor.to_frame()
    np.testing.assert_allclose(
        history.history["grad_norm"],
        frame.groupby("epoch").global_norm.mean().to_numpy(),
        rtol=1e-12,
    )
    # The sublayer nearest the loss: the LSTM, not the SharedRNN below it.
    top = monitor.diagnosis().sublayers["top/level_0"].horizon
    assert history.history["grad_horizon"][-1] == top
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "train"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    assert "epoch_grad_norm" in accumulator.Tags()["tensors"]
    quiet = GradientMonitor(every=3, epoch_logs=False)
    history = model.fit(x, y, batch_size=4, verbose=0, callbacks=[quiet])
    assert set(history.history) == {"loss"}
    with pytest.raises(TypeError, match="epoch_logs"):
        GradientMonitor(epoch_logs="yes")
