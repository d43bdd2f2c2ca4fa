"""SharedRNN against independent computations: keras.layers.SimpleRNN with
the same weights, a numpy recurrence, an unrolled GradientTape loop, and
TensorFlow's automatic gradient of the same loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close

import keras_seq
from keras_seq.layers import SharedRNN


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _outputs_and_grads(layer, x, mask=None, initial_state=None, training=False):
    """Outputs and d(loss)/d(inputs, initial states, weights) for a loss that
    weighs every output element differently (so no gradient is symmetric)."""
    x = tf.constant(x)
    states = None if initial_state is None else [tf.constant(s) for s in initial_state]
    kwargs = {"training": training}
    if mask is not None:
        kwargs["mask"] = tf.constant(mask)
    if states is not None:
        kwargs["initial_state"] = states
    with tf.GradientTape() as tape:
        tape.watch(x)
        if states is not None:
            tape.watch(states)
        outputs = _as_list(layer(x, **kwargs))
        loss = 0.0
        for i, out in enumerate(outputs):
            weights = tf.reshape(
                tf.sin(tf.range(tf.size(out), dtype=out.dtype) + i), tf.shape(out)
            )
            loss += tf.reduce_sum(weights * out + 0.3 * out**2)
    sources = [x] + (states or []) + layer.trainable_weights
    return outputs, tape.gradient(loss, sources)


def _assert_same(result, expected, tol=1e-5):
    (out_a, grads_a), (out_b, grads_b) = result, expected
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        assert_close(a, b, tol)
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
        assert_close(a, b, tol)


def _pair(x, **kwargs):
    """A SimpleRNN and a SharedRNN holding the same weights."""
    reference = keras.layers.SimpleRNN(5, **kwargs)
    reference(x)
    layer = SharedRNN(5, **kwargs)
    layer(x)
    layer.set_weights(reference.get_weights())
    return reference, layer


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_sequences": True},
        {"go_backwards": True},
        {"go_backwards": True, "return_sequences": True},
        {"return_state": True, "return_sequences": True},
        {"activation": "relu", "recurrent_initializer": "identity"},
        {"activation": "sigmoid", "return_sequences": True},
        {"activation": "gelu", "return_sequences": True},
        {"activation": None, "use_bias": False},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_matches_simple_rnn(sequences, options):
    reference, layer = _pair(sequences, **options)
    _assert_same(
        _outputs_and_grads(layer, sequences),
        _outputs_and_grads(reference, sequences),
    )


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_matches_simple_rnn_with_mask_and_initial_state(
    sequences, padded_mask, go_backwards, return_sequences
):
    reference, layer = _pair(
        sequences,
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        return_state=True,
    )
    h0 = [np.random.RandomState(1).randn(3, 5).astype("float32")]
    _assert_same(
        _outputs_and_grads(layer, sequences, mask=padded_mask, initial_state=h0),
        _outputs_and_grads(reference, sequences, mask=padded_mask, initial_state=h0),
    )


def test_matches_simple_rnn_with_embedding_mask():
    tokens = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], dtype="int32")

    def model(rnn):
        return keras.Sequential(
            [keras.layers.Embedding(10, 4, mask_zero=True), rnn, keras.layers.Dense(2)]
        )

    reference = model(keras.layers.SimpleRNN(5, return_sequences=True))
    shared = model(SharedRNN(5, return_sequences=True))
    reference(tokens)
    shared(tokens)
    shared.set_weights(reference.get_weights())

    def run(m):
        with tf.GradientTape() as tape:
            y = m(tokens)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, m.trainable_weights)

    (y_a, g_a), (y_b, g_b) = run(shared), run(reference)
    assert_close(y_a, y_b)
    for a, b in zip(g_a, g_b):
        assert_close(a, b)


def test_matches_stacked_simple_rnn_cells(sequences, padded_mask):
    reference = keras.layers.RNN(
        [keras.layers.SimpleRNNCell(5) for _ in range(3)], return_sequences=True
    )
    reference(sequences)
    layer = SharedRNN(5, depth=3, return_sequences=True)
    layer(sequences)
    assert [w.shape for w in layer.get_weights()] == [
        w.shape for w in reference.get_weights()
    ]
    layer.set_weights(reference.get_weights())
    _assert_same(
        _outputs_and_grads(layer, sequences, mask=padded_mask),
        _outputs_and_grads(reference, sequences, mask=padded_mask),
    )


def test_depth_return_state_gives_every_sublayer_state(sequences):
    layer = SharedRNN(5, depth=3, return_state=True, return_sequences=True)
    outputs = layer(sequences)
    assert len(outputs) == 4
    assert outputs[0].shape == (3, 6, 5)
    assert [s.shape for s in outputs[1:]] == [(3, 5)] * 3
    assert_close(outputs[3], outputs[0][:, -1])


def test_bidirectional_matches_simple_rnn(sequences, padded_mask):
    reference = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(5, return_sequences=True)
    )
    layer = keras.layers.Bidirectional(SharedRNN(5, return_sequences=True))
    reference(sequences)
    layer(sequences)
    layer.set_weights(reference.get_weights())
    _assert_same(
        _outputs_and_grads(layer, sequences, mask=padded_mask),
        _outputs_and_grads(reference, sequences, mask=padded_mask),
    )


def test_stateful_matches_simple_rnn_and_resets(sequences):
    def stateful(rnn):
        return keras.Sequential([keras.Input((6, 4), batch_size=3), rnn])

    reference = stateful(keras.layers.SimpleRNN(5, stateful=True))
    shared = stateful(SharedRNN(5, stateful=True))
    shared.set_weights(reference.get_weights())
    first = shared(sequences)
    second = shared(sequences)
    assert_close(first, reference(sequences))
    assert_close(second, reference(sequences))
    assert np.max(np.abs(first - second)) > 1e-3  # the state was carried
    shared.layers[0].reset_state()
    assert_close(shared(sequences), first)


def _numpy_recurrence(x, weights, depth, share_depth, activation=np.tanh):
    """Independent forward reference: plain numpy, batch-major."""
    per_level = [weights[0:3]]
    if share_depth:
        per_level += [weights[3:6]] * (depth - 1)
    else:
        per_level += [weights[3 * i : 3 * i + 3] for i in range(1, depth)]
    seq = x.astype(np.float64)
    for kernel, recurrent_kernel, bias in per_level:
        h = np.zeros((x.shape[0], kernel.shape[1]))
        outputs = []
        for t in range(x.shape[1]):
            h = activation(seq[:, t] @ kernel + h @ recurrent_kernel + bias)
            outputs.append(h)
        seq = np.stack(outputs, axis=1)
    return seq


@pytest.mark.parametrize("share_depth", [False, True])
def test_forward_matches_numpy_recurrence(sequences, share_depth):
    layer = SharedRNN(5, depth=3, share_depth=share_depth, return_sequences=True)
    out = layer(sequences)
    expected = _numpy_recurrence(sequences, layer.get_weights(), 3, share_depth)
    assert_close(out, expected)


def test_share_depth_shares_one_weight_set(sequences):
    deep = SharedRNN(5, depth=6, share_depth=True)
    shallow = SharedRNN(5, depth=2, share_depth=True)
    deep(sequences)
    shallow(sequences)
    assert deep.count_params() == shallow.count_params()
    assert len(deep.trainable_weights) == 6
    cell = deep.cell
    for level in range(2, 6):
        assert cell.level_weights(level)[1] is cell.level_weights(1)[1]


def _unrolled_gradients(x, weights, depth, share_depth, probe_steps=True):
    """Independent gradient reference: a Python loop over time in eager mode
    whose hidden states are all watched by one tape."""
    x = tf.constant(x)
    variables = [tf.Variable(w) for w in weights]
    per_level = [variables[0:3]]
    if share_depth:
        per_level += [variables[3:6]] * (depth - 1)
    else:
        per_level += [variables[3 * i : 3 * i + 3] for i in range(1, depth)]
    with tf.GradientTape() as tape:
        seq = [x[:, t] for t in range(x.shape[1])]
        for kernel, recurrent_kernel, bias in per_level:
            h = tf.zeros((x.shape[0], kernel.shape[1]))
            new_seq = []
            for x_t in seq:
                h = tf.tanh(x_t @ kernel + h @ recurrent_kernel + bias)
                new_seq.append(h)
            seq = new_seq
        loss = tf.reduce_sum(tf.sin(seq[-1]) * 3.0) + tf.reduce_sum(seq[2] ** 2)
    return tape.gradient(loss, variables)


@pytest.mark.parametrize("share_depth", [False, True])
def test_gradients_match_unrolled_tape(sequences, share_depth):
    layer = SharedRNN(5, depth=3, share_depth=share_depth, return_sequences=True)
    layer(sequences)
    with tf.GradientTape() as tape:
        seq = layer(sequences)
        loss = tf.reduce_sum(tf.sin(seq[:, -1]) * 3.0) + tf.reduce_sum(seq[:, 2] ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    expected = _unrolled_gradients(sequences, layer.get_weights(), 3, share_depth)
    for a, b in zip(grads, expected):
        assert_close(a, b)


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 3, "share_depth": True, "go_backwards": True},
        {"depth": 2, "dropout": 0.3, "recurrent_dropout": 0.4, "seed": 7},
        {"activation": "elu", "return_sequences": True},
        {"activation": "relu", "depth": 2, "return_state": True},
    ],
    ids=["shared-backwards", "dropout", "elu", "relu-state"],
)
def test_explicit_bptt_equals_autodiff(sequences, padded_mask, options):
    explicit = SharedRNN(5, **options)
    autodiff = SharedRNN(5, **options)
    explicit(sequences)
    autodiff(sequences)
    autodiff.set_weights(explicit.get_weights())
    assert explicit.explicit_bptt
    autodiff.explicit_bptt = False
    # Same seed and same number of draws: both layers get the same dropout masks.
    _assert_same(
        _outputs_and_grads(explicit, sequences, mask=padded_mask, training=True),
        _outputs_and_grads(autodiff, sequences, mask=padded_mask, training=True),
    )


def test_dropout_applies_only_in_training(sequences):
    layer = SharedRNN(5, dropout=0.5, recurrent_dropout=0.5, seed=3)
    inference = layer(sequences, training=False)
    assert_close(layer(sequences, training=False), inference)
    assert np.max(np.abs(layer(sequences, training=True) - inference)) > 1e-3


def test_custom_activation_falls_back_to_autodiff(sequences):
    layer = SharedRNN(5, activation=lambda a: tf.tanh(a) * 0.9)
    reference = keras.layers.SimpleRNN(5, activation=lambda a: tf.tanh(a) * 0.9)
    reference(sequences)
    layer(sequences)
    layer.set_weights(reference.get_weights())
    assert not layer.explicit_bptt
    _assert_same(
        _outputs_and_grads(layer, sequences),
        _outputs_and_grads(reference, sequences),
    )


def test_jit_compile_matches_graph_and_dynamic_time_runs(sequences):
    layer = SharedRNN(5, depth=2, return_sequences=True)
    layer(sequences)
    x = tf.constant(sequences)

    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    expected = grads()
    xla = tf.function(grads, jit_compile=True)()
    for a, b in zip(xla, expected):
        assert_close(a, b)
    dynamic = tf.function(
        lambda x: layer(x),
        input_signature=[tf.TensorSpec((None, None, 4), tf.float32)],
    )
    assert_close(dynamic(x), layer(x))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(sequences, policy):
    float32 = SharedRNN(5, depth=2, return_sequences=True, return_state=True)
    float32(sequences)
    keras.config.set_dtype_policy(policy)
    mixed = SharedRNN(5, depth=2, return_sequences=True, return_state=True)
    outputs = mixed(sequences)
    mixed.set_weights(float32.get_weights())
    outputs = mixed(sequences)
    compute = keras.config.dtype_policy().compute_dtype
    assert all(keras.backend.standardize_dtype(o.dtype) == compute for o in outputs)
    assert all(w.dtype == "float32" for w in mixed.weights)
    expected = float32(sequences)
    for a, b in zip(outputs, expected):
        assert_close(a, b, tol=3e-2)
    _, grads = _outputs_and_grads(mixed, sequences)
    _, expected_grads = _outputs_and_grads(float32, sequences)
    for a, b in zip(grads, expected_grads):
        assert_close(a, b, tol=5e-2)


def test_mixed_precision_stateful_fit():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras_seq.Sequential(
        [
            keras.Input((6, 4), batch_size=4),
            SharedRNN(5, stateful=True, depth=2),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = np.random.RandomState(0).randn(8, 6, 4).astype("float32")
    history = model.fit(x, np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_explicit_bptt_equals_autodiff_in_mixed_precision(sequences, policy):
    keras.config.set_dtype_policy(policy)
    explicit = SharedRNN(5, depth=2, return_sequences=True)
    autodiff = SharedRNN(5, depth=2, return_sequences=True)
    explicit(sequences)
    autodiff(sequences)
    autodiff.set_weights(explicit.get_weights())
    autodiff.explicit_bptt = False
    # Both run in the same low precision; only the order of operations
    # differs, so they agree to a few units of that precision.
    tol = 2e-3 if policy == "mixed_float16" else 2e-2
    _assert_same(
        _outputs_and_grads(explicit, sequences),
        _outputs_and_grads(autodiff, sequences),
        tol=tol,
    )
