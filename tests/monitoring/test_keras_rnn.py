"""Keras's own SimpleRNN, GRU and LSTM through time: per-step dL/dh_t,
dL/dc_t and recurrent-kernel contributions against an independent eager
reference (the cell equations written out in float64)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_keras_rnn import assert_frame_matches, timestep_gradients

from keras_seq.callbacks import GradientMonitor
from keras_seq.monitoring import MonitoredTraining, MonitorSettings, train_step

T, B, F = 7, 4, 3


def _data(masked):
    rng = np.random.RandomState(0)
    x = rng.randn(B, T, F).astype("float32")
    mask = None
    if masked:
        mask = np.ones((B, T), bool)
        mask[0, 5:] = False  # trailing padding
        mask[1, :2] = False  # leading padding
        mask[2, 1:3] = False  # a hole
        x[~mask] = 0.0
    return x, rng.randn(B, 2).astype("float32"), mask


def _layers(case):
    def rnn(kind, **kwargs):
        return getattr(keras.layers, kind)(4, **kwargs)

    if case == "simple":
        return [rnn("SimpleRNN", name="rnn")]
    if case == "gru":
        return [rnn("GRU", name="rnn")]
    if case == "lstm":
        return [rnn("LSTM", name="rnn")]
    if case == "lstm-stack":
        return [rnn("LSTM", return_sequences=True, name="low"), rnn("LSTM", name="top")]
    if case == "simple-backwards":
        return [rnn("SimpleRNN", go_backwards=True, name="rnn")]
    if case == "bidirectional-gru":
        return [keras.layers.Bidirectional(rnn("GRU"), name="bi")]
    if case == "bidirectional-lstm-sequences":
        return [
            keras.layers.Bidirectional(rnn("LSTM", return_sequences=True), name="bi"),
            rnn("SimpleRNN", name="top"),
        ]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, masked",
    [
        ("simple", False),
        ("gru", False),
        ("lstm", False),
        ("lstm-stack", True),
        ("simple-backwards", True),
        ("bidirectional-gru", True),
        ("bidirectional-lstm-sequences", True),
    ],
)
def test_builtin_layers_match_the_eager_reference(case, masked):
    keras.utils.set_random_seed(0)
    x, y, mask = _data(masked)
    layers = [keras.Input((T, F))]
    if masked:
        layers.append(keras.layers.Masking(0.0))
    model = keras.Sequential(layers + _layers(case) + [keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    reference = timestep_gradients(model, x, y, mask)

    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=B, shuffle=False, verbose=0, callbacks=[monitor])
    assert_frame_matches(monitor, reference, mask)


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM"])
def test_monitored_training_with_dropout_equals_keras(kind):
    # The recorded steps run the probed loop, the others Keras's own: with
    # dropout and recurrent dropout both must train exactly as Keras does.
    def train(callbacks):
        keras.utils.set_random_seed(4)
        rnn = getattr(keras.layers, kind)(
            4, dropout=0.3, recurrent_dropout=0.3, return_sequences=True, name="rnn"
        )
        model = keras.Sequential(
            [keras.Input((T, F)), keras.layers.Masking(0.0), rnn, keras.layers.Dense(2)]
        )
        model.compile(optimizer="adam", loss="mse")
        x, _, _ = _data(masked=True)
        y = np.random.RandomState(1).randn(B, T, 2).astype("float32")
        x, y = np.concatenate([x] * 3), np.concatenate([y] * 3)
        history = model.fit(
            x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=callbacks
        )
        return model.get_weights(), history.history["loss"]

    plain_weights, plain_loss = train([])
    monitor = GradientMonitor(every=2)
    weights, loss = train([monitor])
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
    for a, b in zip(weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert set(monitor.timestep_frame().layer) == {"rnn/level_0"}
    assert len(monitor.records) == 3


class _MinimalCell(keras.layers.Layer):
    state_size = 3

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3))

    def call(self, x, states):
        h = keras.ops.tanh(x @ self.w + states[0])
        return h, [h]


def test_layers_without_per_step_data_are_named_once():
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.LSTM(3, return_sequences=True, name="lstm"),
            keras.layers.RNN(_MinimalCell(), name="custom"),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x, y, _ = _data(masked=False)
    monitor = GradientMonitor(every=1)
    message = r"per-layer gradient norms only .* for custom:"
    with pytest.warns(UserWarning, match=message) as seen:
        model.fit(x, y, batch_size=2, verbose=0, callbacks=[monitor])
        model.fit(x, y, batch_size=2, verbose=0, callbacks=[monitor])
    assert sum("per-layer gradient norms only" in str(w.message) for w in seen) == 1
    # Warned at train begin, pointing at the user's fit line, and said again
    # in the report (not an empty table).
    (warning,) = [w for w in seen if "per-layer gradient" in str(w.message)]
    assert warning.filename == __file__
    assert "for custom: per-step data needs keras_seq.layers.SharedRNN" in (
        monitor.report()
    )
    assert set(monitor.timestep_frame().layer) == {"lstm/level_0"}
    assert "norm/custom" in monitor.to_frame()


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("SimpleRNN", {"return_sequences": True, "zero_output_for_mask": True}),
        ("SimpleRNN", {"return_sequences": True, "go_backwards": True}),
        ("GRU", {"return_sequences": True, "return_state": True}),
        ("LSTM", {"return_state": True, "go_backwards": True}),
        ("LSTM", {"return_sequences": True, "zero_output_for_mask": True}),
    ],
)
def test_probed_forward_equals_keras(kind, kwargs):
    # Every output (sequences, padded positions included, and states) of the
    # probed loop equals Keras's own loop, which a loss may not see.
    import tensorflow as tf

    from keras_seq.layers import probes
    from keras_seq.monitoring import keras_rnn

    keras.utils.set_random_seed(2)
    layer = getattr(keras.layers, kind)(4, **kwargs)
    x, _, mask = _data(masked=True)
    expected = layer(x, mask=mask)
    model = keras.Sequential([keras.Input((T, F)), layer])
    with tf.GradientTape() as tape, probes.recording(tape) as recorder:
        with keras_rnn.probing(model, True):
            probed = layer(x, mask=mask)
    assert [p.name for p in recorder.probes] == [f"{layer.name}/level_0"]
    for a, b in zip(keras.tree.flatten(probed), keras.tree.flatten(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert "inner_loop" not in vars(layer)  # the patch is gone


def test_a_model_without_recurrent_layers_is_said_once_and_in_the_report():
    model = keras.Sequential([keras.Input((T, F)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, T, F), "float32")
    monitor = GradientMonitor(every=1)
    with pytest.warns(UserWarning, match="has no recurrent layer") as seen:
        model.fit(x, np.zeros((4, T, 2)), batch_size=2, verbose=0, callbacks=[monitor])
    assert sum("recurrent layer" in str(w.message) for w in seen) == 1
    report = monitor.report()
    assert "the model has no recurrent layer: per-layer gradient norms only" in report
    assert "| sublayer |" not in report  # no header-only table


def test_two_monitors_in_one_fit_are_refused_and_keras_gets_its_step_back():
    model = keras.Sequential([keras.Input((T, F)), keras.layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((4, T, F), "float32"), np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match="two GradientMonitor instances"):
        model.fit(x, y, verbose=0, callbacks=[GradientMonitor(), GradientMonitor()])
    model.fit(x, y, verbose=0)  # plain Keras again
    assert "monitor" not in model.train_function.__qualname__.lower()
    assert "strip_statistics" not in model.train_function.__qualname__


def test_a_monitor_moved_to_another_model_warns():
    monitor = GradientMonitor(every=1)
    x, y = np.zeros((4, T, F), "float32"), np.zeros((4, 2), "float32")
    for i in range(2):
        model = keras.Sequential([keras.Input((T, F)), keras.layers.SimpleRNN(2)])
        model.compile(optimizer="sgd", loss="mse")
        if i == 0:
            model.fit(x, y, verbose=0, callbacks=[monitor])
            continue
        with pytest.warns(UserWarning, match="recorded another model"):
            model.fit(x, y, verbose=0, callbacks=[monitor])


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_interrupted_fit_leaves_keras_training_as_it_was(error):
    x = np.random.RandomState(0).randn(16, T, F).astype("float32")
    y = np.random.RandomState(1).randn(16, 2).astype("float32")

    def train(monitor):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((T, F)), keras.layers.SimpleRNN(2)])
        model.compile(optimizer="sgd", loss="mse")
        callbacks = [_Interrupt(error)] + ([monitor] if monitor else [])
        with pytest.raises(type(error)):
            model.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=callbacks)
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0)  # plain Keras
        return model

    monitored = train(GradientMonitor(every=1))
    plain = train(None)
    # The later plain fit ran Keras's own step (no guard, no recording) and
    # gave Keras its function back: weights as if no monitor had been there.
    assert "train_step" not in monitored.train_function.__qualname__
    assert monitored.train_function.__qualname__ == plain.train_function.__qualname__
    for a, b in zip(monitored.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


class _Trap(keras.layers.Layer):
    """Raises while armed: inside the training step when it is traced."""

    armed = False

    def call(self, x):
        if _Trap.armed:
            raise KeyboardInterrupt
        return x


class _Arm(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        _Trap.armed = True  # after Keras's symbolic build, before the step


def test_ctrl_c_inside_the_step_gives_keras_its_function_at_once():
    x = np.random.RandomState(0).randn(8, T, F).astype("float32")
    y = np.random.RandomState(1).randn(8, 2).astype("float32")
    model = keras.Sequential([keras.Input((T, F)), _Trap(), keras.layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, verbose=0, callbacks=[_Arm(), GradientMonitor(every=1)])
    finally:
        _Trap.armed = False
    # No later fit needed: the wrapper gave the function back on the way out.
    assert "_strip_statistics" not in model.train_function.__qualname__
    assert model.train_function.__qualname__.startswith("TensorFlowTrainer.")
    model.fit(x, y, verbose=0)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hosting_is_a_context_that_restores_keras_on_any_exit(error):
    # The hosting part on its own, without fit: install, select, and any
    # exit from the block gives the model Keras's function back.
    model = keras.Sequential([keras.Input((T, F)), keras.layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.make_train_function()
    keras_function = model.train_function
    counters = tf.Variable([0] * len(train_step.COUNTERS), dtype=tf.int64)
    training = MonitoredTraining(
        model,
        MonitorSettings(counters, guard=True, histograms=False, contributions=False),
    )
    with pytest.raises(type(error)):
        with training:
            assert model.train_function is not keras_function
            training.select(True)
            raise error
    assert model.train_function is keras_function
    with training:  # and again: the traced functions are kept
        assert model.train_function is not keras_function
    assert model.train_function is keras_function
