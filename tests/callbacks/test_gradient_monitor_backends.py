"""GradientMonitor on both backends (this file runs under TensorFlow and
under JAX): the recorded numbers against an unrolled recurrence
differentiated by the backend's own autodiff (`tf.GradientTape` or
`jax.grad`: no scan, no custom gradient), the guard, what the monitor reads
from the device, and its TensorBoard files (written without TensorFlow on
JAX)."""

import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN

BACKEND = keras.backend.backend()
STEPS, FEATURES, UNITS, DEPTH = 7, 4, 5, 2


def gradients(loss, values):
    """d loss(*values) / d values, by the backend's autodiff."""
    if BACKEND == "jax":
        import jax

        return jax.grad(loss, argnums=tuple(range(len(values))))(*values)
    import tensorflow as tf

    values = [tf.convert_to_tensor(v) for v in values]
    with tf.GradientTape() as tape:
        tape.watch(values)
        result = loss(*values)
    return tape.gradient(result, values)


def reference(weights, x, mask, y, go_backwards):
    """The weight gradients and, per level, dL/dh_t in processing order of
    the model's MSE loss, through zeros added to every h_t of a Python loop
    (time-major `(T, B, U)` per level)."""
    ops = keras.ops
    weights = [np.asarray(w) for w in weights]
    batch = x.shape[0]
    order = list(range(STEPS))[::-1] if go_backwards else list(range(STEPS))

    count = len(weights)

    def loss(*values):
        weights, eps = values[:count], values[count:]
        inputs = [x[:, t] for t in order]
        valid = [mask[:, t : t + 1] for t in order]
        for level in range(DEPTH):
            kernel, recurrent, bias = weights[3 * level : 3 * level + 3]
            h = ops.zeros((batch, UNITS))
            outputs = []
            for k, x_t in enumerate(inputs):
                a = ops.matmul(x_t, kernel) + ops.matmul(h, recurrent) + bias
                h = ops.where(valid[k], ops.tanh(a), h) + eps[level][k]
                outputs.append(h)
            inputs = outputs
        head, head_bias = weights[3 * DEPTH :]
        prediction = ops.matmul(inputs[-1], head) + head_bias
        return ops.mean((prediction - y) ** 2)

    zeros = [np.zeros((STEPS, batch, UNITS), "float32") for _ in range(DEPTH)]
    grads = gradients(loss, list(weights) + zeros)
    weight_grads = [np.asarray(g) for g in grads[: len(weights)]]
    return weight_grads, [np.asarray(g) for g in grads[len(weights) :]]


def data(nan_batches=()):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, STEPS, FEATURES)).astype("float32")
    mask = np.ones((12, STEPS), bool)
    mask[0, 5:] = False  # trailing padding
    mask[1, :2] = False  # leading padding
    y = rng.standard_normal((12, 2)).astype("float32")
    for batch in nan_batches:
        y[3 * batch] = np.nan
    return x, mask, y


def model(go_backwards=False, optimizer="sgd"):
    inputs = keras.Input((STEPS, FEATURES))
    valid = keras.Input((STEPS,), dtype="bool")
    h = SharedRNN(UNITS, depth=DEPTH, go_backwards=go_backwards, name="rnn")(
        inputs, mask=valid
    )
    result = keras.Model([inputs, valid], keras.layers.Dense(2, name="head")(h))
    result.compile(optimizer=optimizer, loss="mse")
    return result


@pytest.mark.parametrize("go_backwards", [False, True])
def test_recorded_step_equals_an_unrolled_loop(go_backwards):
    x, mask, y = data()
    net = model(go_backwards)
    weights = [v.numpy() for v in net.trainable_variables]
    monitor = GradientMonitor(every=1)
    net.fit([x, mask], y, batch_size=12, epochs=1, callbacks=[monitor], verbose=0)

    weight_grads, dh = reference(weights, x, mask, y, go_backwards)
    row = monitor.to_frame().iloc[0]
    norms = [np.linalg.norm(g) for g in weight_grads]
    np.testing.assert_allclose(row.global_norm, np.linalg.norm(norms), rtol=1e-5)
    variables = monitor.variable_frame().query("step == 0")
    np.testing.assert_allclose(variables.grad_norm.to_numpy(), norms, rtol=1e-5)
    steps = monitor.timestep_frame()
    for level in range(DEPTH):
        rows = steps.query(f"layer == 'rnn/level_{level}'").sort_values("timestep")
        expected = np.sqrt(np.sum(dh[level] ** 2, axis=(1, 2)))  # processing order
        if go_backwards:
            expected = expected[::-1]  # the frame is in input order
        np.testing.assert_allclose(rows.grad_norm.to_numpy(), expected, rtol=1e-5)
        # Each step's share of the level's recurrent-kernel gradient adds
        # up to that gradient's norm.
        recurrent = weight_grads[3 * level + 1]
        np.testing.assert_allclose(
            rows.contribution.sum(), np.linalg.norm(recurrent), rtol=1e-4
        )


@pytest.mark.parametrize("every", [1, 10])  # the NaN step recorded, or not
def test_skip_leaves_weights_and_optimizer_untouched(every):
    x, mask, y = data(nan_batches=[1])
    guarded = model(optimizer="adam")
    clean = model(optimizer="adam")
    clean.set_weights(guarded.get_weights())
    monitor = GradientMonitor(every=every, on_nan="skip")
    guarded.fit(
        [x, mask], y, batch_size=3, shuffle=False, callbacks=[monitor], verbose=0
    )
    keep = np.r_[0:3, 6:12]  # the same batches without the NaN one
    clean.fit([x[keep], mask[keep]], y[keep], batch_size=3, shuffle=False, verbose=0)

    assert monitor.skipped_steps == 1
    assert monitor.steps == 4
    assert int(keras.ops.convert_to_numpy(guarded.optimizer.iterations)) == 3
    for ours, theirs in zip(guarded.get_weights(), clean.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert all(np.isfinite(w).all() for w in guarded.get_weights())


def test_unrecorded_steps_read_nothing_from_the_device():
    x, mask, y = data()
    net = model()
    monitor = GradientMonitor(every=3)
    reads = []
    net.fit([x[:3], mask[:3]], y[:3], epochs=1, verbose=0)  # built, traced
    monitor.set_model(net)
    for name in ("_counters", "_peak"):
        variable = getattr(monitor, name)
        read = variable.numpy

        def counted(read=read, name=name):
            reads.append(name)
            return read()

        variable.numpy = counted
    net.fit(
        [x, mask], y, batch_size=2, epochs=1, callbacks=[monitor], verbose=0
    )  # steps 1-6 (the optimizer's count goes on): 3 and 6 recorded
    # One read of the counters at train begin, each recorded step, the
    # epoch end and the train end: none on the four other steps.
    assert reads == ["_counters"] * 5
    assert monitor.to_frame().step.tolist() == [3, 6]
    # No batch-end hook: Keras keeps dispatching batch hooks asynchronously
    # where the backend allows it (JAX).
    assert (
        type(monitor).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    )
    assert type(monitor).on_batch_end is keras.callbacks.Callback.on_batch_end


def test_tensorboard_files_hold_the_frame(tmp_path):
    x, mask, y = data()
    net = model()
    monitor = GradientMonitor(log_dir=tmp_path, every=2)
    net.fit([x, mask], y, batch_size=3, epochs=1, callbacks=[monitor], verbose=0)
    frame = monitor.to_frame()
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradients"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    for tag, column in {
        "gradients/global_norm": "global_norm",
        "gradients/norm/rnn": "norm/rnn",
        "gradients/horizon/rnn/level_0": "horizon/rnn/level_0",
    }.items():
        events = accumulator.Tensors(tag)
        assert [e.step for e in events] == frame.step.tolist()
        values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        np.testing.assert_allclose(values, frame[column], rtol=1e-6)
    (text,) = accumulator.Tensors("gradients/diagnosis")
    assert "rnn/level_1" in tensor_util.make_ndarray(text.tensor_proto).item().decode()
    (image,) = accumulator.Tensors("gradients/heatmap/rnn/level_0")
    width, height, png = tensor_util.make_ndarray(image.tensor_proto)
    assert png.startswith(b"\x89PNG") and int(width) > 0 and int(height) > 0
    if BACKEND == "jax":
        assert "tensorflow" not in sys.modules


def keras_layers(case):
    def rnn(kind, **kwargs):
        return getattr(keras.layers, kind)(4, **kwargs)

    return {
        "simple": [rnn("SimpleRNN", name="rnn")],
        "gru-backwards": [rnn("GRU", go_backwards=True, name="rnn")],
        "lstm-stack": [
            rnn("LSTM", return_sequences=True, name="low"),
            rnn("LSTM", name="top"),
        ],
        "bidirectional-lstm-sequences": [
            keras.layers.Bidirectional(rnn("LSTM", return_sequences=True), name="bi"),
            rnn("GRU", name="top"),
        ],
    }[case]


@pytest.mark.parametrize(
    "case", ["simple", "gru-backwards", "lstm-stack", "bidirectional-lstm-sequences"]
)
def test_keras_layers_equal_an_unrolled_loop(case):
    from reference_keras_rnn import assert_frame_matches, unrolled_gradients

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, STEPS, 3)).astype("float32")
    y = rng.standard_normal((4, 2)).astype("float32")
    mask = np.ones((4, STEPS), bool)
    mask[0, 5:] = False  # trailing padding
    mask[1, :2] = False  # leading padding
    mask[2, 1:3] = False  # a hole
    x[~mask] = 0.0
    net = keras.Sequential(
        [keras.Input((STEPS, 3)), keras.layers.Masking(0.0)]
        + keras_layers(case)
        + [keras.layers.Dense(2)]
    )
    net.compile(optimizer="sgd", loss="mse")
    reference = unrolled_gradients(net, x, y, mask)

    monitor = GradientMonitor(every=1)
    net.fit(x, y, batch_size=4, verbose=0, callbacks=[monitor])
    assert_frame_matches(monitor, reference, mask, atol=1e-8)


def test_a_monitored_fit_trains_as_keras_does():
    # Embedding with mask_zero, dropout, BatchNormalization (non-trainable
    # updates), Keras's GRU, sample weights and validation: the weights,
    # metrics and validation of a monitored fit are Keras's own.
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(24, 9))
    tokens[::4, 6:] = 0  # padding
    labels = rng.integers(0, 3, size=(24,))
    weights = rng.random(24).astype("float32")

    def fit(callbacks):
        keras.utils.set_random_seed(3)
        net = keras.Sequential(
            [
                keras.Input((9,), dtype="int32"),
                keras.layers.Embedding(20, 6, mask_zero=True),
                SharedRNN(5, return_sequences=True, dropout=0.2),
                keras.layers.BatchNormalization(),
                keras.layers.GRU(4),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
        net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = net.fit(
            tokens,
            labels,
            sample_weight=weights,
            batch_size=6,
            epochs=2,
            shuffle=False,
            validation_data=(tokens[:8], labels[:8]),
            callbacks=callbacks,
            verbose=0,
        )
        return net, history.history

    monitor = GradientMonitor(every=2, on_nan="warn")
    monitored, ours = fit([monitor])
    plain, theirs = fit([])
    for key, values in theirs.items():
        np.testing.assert_allclose(ours[key], values, rtol=1e-5, err_msg=key)
    for a, b in zip(monitored.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert monitor.to_frame().step.tolist() == [0, 2, 4, 6]
