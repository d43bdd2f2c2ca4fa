"""SharedRNN(recompute=k) against the default SharedRNN with the same
weights: outputs, gradients and the GradientMonitor's per-step statistics
are the same; bad values raise; the option survives serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN, bptt

B, T, F, U = 3, 7, 4, 5


def _data(steps=T, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(B, steps, F).astype("float32")
    mask = np.ones((B, steps), bool)
    mask[0, -3:] = False  # trailing padding
    mask[1, :2] = False  # leading padding
    mask[2, 3] = False  # inner gap
    return x, mask


def _pair(recompute, x, **options):
    """The default layer and a recomputing one holding the same weights."""
    default = SharedRNN(U, **options)
    default(x)
    recomputing = SharedRNN(U, recompute=recompute, **options)
    recomputing(x)
    recomputing.set_weights(default.get_weights())
    return default, recomputing


def _outputs_and_grads(layer, x, mask=None, initial_state=None, training=False):
    """Outputs and d(loss)/d(inputs, initial states, weights) for a loss that
    weighs every output element differently."""
    x = tf.convert_to_tensor(x)
    kwargs = {"training": training}
    if mask is not None:
        kwargs["mask"] = tf.convert_to_tensor(mask)
    states = []
    if initial_state is not None:
        states = kwargs["initial_state"] = [tf.constant(s) for s in initial_state]
    with tf.GradientTape() as tape:
        tape.watch([x] + states)
        outputs = layer(x, **kwargs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        loss = 0.0
        for i, out in enumerate(outputs):
            weights = tf.reshape(
                tf.sin(tf.range(tf.size(out), dtype=out.dtype) + i), tf.shape(out)
            )
            loss += tf.reduce_sum(weights * tf.cast(out, weights.dtype) + 0.3 * out**2)
    grads = tape.gradient(loss, [x] + states + layer.trainable_weights)
    return outputs, grads


def _assert_same(actual, expected, tol=1e-6):
    (out_a, grads_a), (out_b, grads_b) = actual, expected
    assert len(out_a) == len(out_b) and len(grads_a) == len(grads_b)
    for a, b in zip(out_a + grads_a, out_b + grads_b):
        assert_close(a, b, tol)


CASES = {
    # T=7: k=3 leaves a padded last segment, k=50 is longer than T.
    "k3": dict(recompute=3),
    "k1": dict(recompute=1),
    "k-longer-than-T": dict(recompute=50),
    "auto-sqrt": dict(recompute=True),
    "depth2-sequences-masked": dict(
        recompute=2, depth=2, return_sequences=True, masked=True
    ),
    "depth3-shared-relu-go-backwards-masked": dict(
        recompute=3,
        depth=3,
        share_depth=True,
        activation="relu",
        go_backwards=True,
        masked=True,
    ),
    "gelu-masked-zero-output": dict(
        recompute=3, depth=2, activation="gelu", masked=True, zero_output_for_mask=True
    ),
    "initial-state-return-state": dict(
        recompute=4, depth=2, return_state=True, return_sequences=True, initial=True
    ),
    "dropout-training": dict(
        recompute=2,
        depth=2,
        dropout=0.3,
        recurrent_dropout=0.4,
        seed=7,
        training=True,
        masked=True,
    ),
    "no-bias-linear": dict(recompute=3, use_bias=False, activation="linear"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_outputs_and_gradients_equal_default(case):
    options = dict(CASES[case])
    masked = options.pop("masked", False)
    initial = options.pop("initial", False)
    training = options.pop("training", False)
    recompute = options.pop("recompute")
    x, mask = _data()
    default, recomputing = _pair(recompute, x, **options)
    h0 = None
    if initial:
        rng = np.random.RandomState(3)
        h0 = [rng.randn(B, U).astype("float32") for _ in range(default.depth)]
    kwargs = dict(mask=mask if masked else None, initial_state=h0, training=training)
    _assert_same(
        _outputs_and_grads(recomputing, x, **kwargs),
        _outputs_and_grads(default, x, **kwargs),
    )


def _traced(layer, masked, **function_options):
    """`_outputs_and_grads` in a tf.function, given a mask or not (without
    one, only the padding of the last segment is masked)."""

    def run(x, mask):
        return _outputs_and_grads(layer, x, mask=mask if masked else None)

    return tf.function(run, **function_options)


# T=11 and k=4: two full segments and a last one with one padding step.
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_graph_with_dynamic_time(masked):
    x, mask = _data(steps=11)
    default, recomputing = _pair(4, x, depth=2, return_sequences=True)
    dynamic = _traced(
        recomputing,
        masked,
        input_signature=[
            tf.TensorSpec((None, None, F), tf.float32),
            tf.TensorSpec((None, None), tf.bool),
        ],
    )
    expected = _outputs_and_grads(default, x, mask=mask if masked else None)
    _assert_same(dynamic(x, mask), expected)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_xla_with_static_time(masked):
    x, mask = _data(steps=11)
    default, recomputing = _pair(4, x, go_backwards=True, return_sequences=True)
    expected = _outputs_and_grads(default, x, mask=mask if masked else None)
    _assert_same(_traced(recomputing, masked, jit_compile=True)(x, mask), expected)


def test_stateful_carries_states_like_default():
    x, _ = _data()
    layers = [
        SharedRNN(U, depth=2, stateful=True, recompute=recompute)
        for recompute in (None, 3)
    ]
    for layer in layers:
        layer.build((B, T, F))
    layers[1].set_weights(layers[0].get_weights())
    for half in (x[:, :4], x[:, 4:]):
        results = [_outputs_and_grads(layer, half) for layer in layers]
        _assert_same(results[1], results[0])
    for a, b in zip(layers[1].states, layers[0].states):
        assert_close(a, b, 1e-6)


def test_mixed_precision_matches_default():
    keras.config.set_dtype_policy("mixed_float16")
    x, mask = _data()
    default, recomputing = _pair(3, x, depth=2, return_sequences=True)
    actual = _outputs_and_grads(recomputing, x, mask=mask)
    assert actual[0][0].dtype == tf.float16
    # float16 sums in a different order (the recomputing pass sums weight
    # gradients per segment, in float32): equal to float16 precision.
    _assert_same(actual, _outputs_and_grads(default, x, mask=mask), tol=2e-3)


def _monitored_fit(rnn, x, y, mask, weights=None):
    layers = [keras.Input((T, F), batch_size=B)]
    if mask is not None:
        layers.append(keras.layers.Masking(0.0))
        x = np.where(mask[..., None], x, 0.0).astype("float32")
    layers.append(rnn)
    model = keras_seq.Sequential(layers + [keras.layers.Dense(2, name="head")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    start = model.get_weights()
    if weights is not None:
        model.set_weights(weights)
        start = weights
    monitor = GradientMonitor(every=1)
    model.fit(
        x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[monitor]
    )
    return start, model, monitor


MONITORED = {
    # Bidirectional: one direction goes backwards; two levels; unmasked,
    # k=3 pads the last segment.
    "bidirectional": dict(
        rnn=lambda recompute: keras.layers.Bidirectional(
            SharedRNN(
                U, depth=2, return_sequences=True, recompute=recompute, name="rnn"
            )
        ),
        masked=False,
    ),
    "bidirectional-masked": dict(
        rnn=lambda recompute: keras.layers.Bidirectional(
            SharedRNN(
                U, depth=2, return_sequences=True, recompute=recompute, name="rnn"
            )
        ),
        masked=True,
    ),
    # The second epoch starts from the first one's last states (float32
    # variables under float16 compute).
    "stateful-mixed-float16": dict(
        rnn=lambda recompute: SharedRNN(
            U,
            depth=2,
            return_sequences=True,
            stateful=True,
            recompute=recompute,
            name="rnn",
        ),
        masked=False,
        policy="mixed_float16",
    ),
}


@pytest.mark.parametrize("case", list(MONITORED), ids=list(MONITORED))
def test_gradient_monitor_statistics_equal_default(case):
    spec = MONITORED[case]
    keras.config.set_dtype_policy(spec.get("policy", "float32"))
    # float16: the recomputing pass sums per segment (in float32).
    tol, weights_tol = (2e-3, 2e-3) if "policy" in spec else (1e-5, 1e-6)
    x, mask = _data()
    mask = mask if spec["masked"] else None
    y = np.random.RandomState(1).randn(B, T, 2)
    start, reference, expected = _monitored_fit(spec["rnn"](None), x, y, mask)
    _, recomputing, monitor = _monitored_fit(spec["rnn"](3), x, y, mask, start)
    for a, b in zip(recomputing.get_weights(), reference.get_weights()):
        assert_close(a, b, weights_tol)

    columns = ["step", "layer", "timestep", "grad_norm", "contribution"]
    frame = monitor.timestep_frame()[columns + ["valid_fraction"]]
    wanted = expected.timestep_frame()[columns + ["valid_fraction"]]
    assert len(frame) == len(wanted) == 2 * T * len(set(wanted.layer))
    for column in ("step", "layer", "timestep"):
        assert list(frame[column]) == list(wanted[column])
    for column in ("grad_norm", "contribution", "valid_fraction"):
        assert_close(frame[column].to_numpy(), wanted[column].to_numpy(), tol)
    for column in ("loss", "global_norm", "applied_norm"):
        assert_close(
            monitor.to_frame()[column].to_numpy(),
            expected.to_frame()[column].to_numpy(),
            weights_tol,
        )


@pytest.mark.parametrize(
    "value, error, message",
    [
        (-1, ValueError, r"Argument `recompute` must be .* Received: recompute=-1"),
        (2.5, TypeError, r"Received: recompute=2.5 \(of type float\)"),
        ("auto", TypeError, r"Received: recompute='auto' \(of type str\)"),
    ],
)
def test_bad_values_raise(value, error, message):
    with pytest.raises(error, match=message):
        SharedRNN(U, recompute=value)


def test_custom_activation_cannot_recompute():
    with pytest.raises(ValueError, match=r"`recompute` needs the explicit BPTT"):
        SharedRNN(U, activation=lambda a: tf.tanh(a) * 0.5, recompute=4)
    # Off is fine: the layer falls back to TensorFlow's automatic gradient.
    SharedRNN(U, activation=lambda a: tf.tanh(a) * 0.5, recompute=0)


@pytest.mark.parametrize(
    "recompute, steps, expected",
    [(True, 5000, 71), (True, 7, 3), (100, 5000, 100), (100, 101, 51), (50, 7, 7)],
)
def test_segment_length(recompute, steps, expected):
    assert bptt.segment_length(recompute, steps) == expected
    assert int(bptt.segment_length(recompute, tf.constant(steps))) == expected


def test_config_and_keras_file_round_trip(tmp_path):
    layer = SharedRNN(U, depth=2, recompute=np.int64(3))
    config = layer.get_config()
    assert config["recompute"] == 3 and type(config["recompute"]) is int
    assert SharedRNN.from_config(config).get_config() == config
    assert SharedRNN(U).get_config()["recompute"] is None

    x, _ = _data()
    model = keras_seq.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.Bidirectional(SharedRNN(U, depth=2, recompute=True)),
            keras.layers.Dense(2),
        ]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    bidirectional = loaded.layers[0]
    assert bidirectional.forward_layer.recompute is True
    assert bidirectional.backward_layer.recompute is True
    assert_close(loaded.predict_on_batch(x), model.predict_on_batch(x), 1e-6)
