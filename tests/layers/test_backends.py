"""SharedRNN on every backend keras-seq supports: the same outputs and
gradients as Keras's own SimpleRNN (its generic loop, differentiated by the
backend's autodiff) with the same weights.

This module runs twice in the README's test command: under TensorFlow and,
in a second pytest process, under JAX (`KERAS_BACKEND=jax`). Gradients are
taken with the backend's own machinery: `tf.GradientTape`, or `jax.grad` of
the layer's `stateless_call` (under `jax.jit`, as `fit` runs it).
"""

import os

import keras
import numpy as np
import pytest
from conftest import BACKEND, assert_close

from keras_seq.layers import SharedRNN

ops = keras.ops


def _loss(outputs):
    """A loss that weighs every output differently (a reversed order or a
    wrong step shows)."""
    total = 0.0
    for i, out in enumerate(keras.tree.flatten(outputs)):
        weights = ops.sin(ops.cast(ops.arange(ops.size(out)), out.dtype) + i)
        weights = ops.reshape(weights, ops.shape(out))
        total = total + ops.sum(weights * out + 0.3 * out * out)
    return total


def outputs_and_gradients(layer, x, **kwargs):
    """`(outputs, [dL/dw for the trainable weights] + [dL/dx])` of `_loss`
    of `layer(x, **kwargs)`, by the backend's autodiff."""
    x = np.asarray(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, **kwargs)
            loss = _loss(outputs)
        grads = tape.gradient(loss, layer.trainable_variables + [x])
        return outputs, grads
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        outputs, _ = layer.stateless_call(trainable, non_trainable, x, **kwargs)
        return _loss(outputs), outputs

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, outputs), (weights, inputs) = grad(trainable, jax.numpy.asarray(x))
    return outputs, list(weights) + [inputs]


def assert_same(shared, reference, x, tol=1e-5, **kwargs):
    got, got_grads = outputs_and_gradients(shared, x, **kwargs)
    want, want_grads = outputs_and_gradients(reference, x, **kwargs)
    for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
        assert_close(a, b, tol)
    assert len(got_grads) == len(want_grads)
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b, tol)


def _pair(x, shared_kwargs=None, **kwargs):
    """A SharedRNN and a SimpleRNN with the same arguments and weights."""
    reference = keras.layers.SimpleRNN(4, **kwargs)
    reference(x)
    shared = SharedRNN(4, **kwargs, **(shared_kwargs or {}))
    shared(x)
    shared.set_weights(reference.get_weights())
    return shared, reference


OPTIONS = [
    {},
    {"return_sequences": True},
    {"go_backwards": True, "return_sequences": True},
    {"activation": "relu", "return_sequences": True},
    {"activation": "sigmoid"},
    # No derivative read off the output: f'(a) from the backend's autodiff.
    {"activation": "gelu", "return_sequences": True},
    {"return_state": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_matches_simple_rnn(sequences, options):
    shared, reference = _pair(sequences, **options)
    assert_same(shared, reference, sequences)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_matches_simple_rnn_with_mask(
    sequences, padded_mask, go_backwards, zero_output_for_mask
):
    shared, reference = _pair(
        sequences,
        return_sequences=True,
        go_backwards=go_backwards,
        zero_output_for_mask=zero_output_for_mask,
    )
    assert_same(shared, reference, sequences, mask=padded_mask)


def test_matches_simple_rnn_with_initial_state(sequences, padded_mask):
    shared, reference = _pair(sequences, return_sequences=True)
    state = np.random.RandomState(3).randn(3, 4).astype("float32")
    # Leading padding: see the next test.
    mask = padded_mask if BACKEND == "tensorflow" else padded_mask[[0, 2, 2]]
    assert_same(shared, reference, sequences, initial_state=[state], mask=mask)


def test_leading_masked_steps_output_zeros_with_initial_state(sequences, padded_mask):
    """Before a row's first valid step its output is zero, as Keras's
    SimpleRNN gives on TensorFlow, on every backend (one file, the same
    numbers). Keras's JAX rnn() shows the initial state there instead."""
    shared, reference = _pair(sequences, return_sequences=True)
    state = np.random.RandomState(3).randn(3, 4).astype("float32")
    got = keras.ops.convert_to_numpy(
        shared(sequences, initial_state=[state], mask=padded_mask)
    )
    assert np.all(got[1, :2] == 0) and np.all(got[1, 2:] != 0)
    keras_jax = keras.ops.convert_to_numpy(
        reference(sequences, initial_state=[state], mask=padded_mask)
    )
    if BACKEND == "jax":  # notices when Keras's JAX rnn() changes
        assert_close(keras_jax[1, :2], np.stack([state[1]] * 2))
    else:
        assert_close(got, keras_jax)


@pytest.mark.parametrize("share_depth", [False, True])
def test_depth_matches_stacked_simple_rnn_cells(sequences, padded_mask, share_depth):
    reference = keras.layers.RNN(
        [keras.layers.SimpleRNNCell(4) for _ in range(3)], return_sequences=True
    )
    reference(sequences)
    shared = SharedRNN(4, depth=3, share_depth=share_depth, return_sequences=True)
    shared(sequences)
    weights = reference.get_weights()
    if share_depth:  # levels 2 and 3 read one weight set
        weights[6:9] = weights[3:6]
        reference.set_weights(weights)
        weights = weights[:6]
    shared.set_weights(weights)
    got, got_grads = outputs_and_gradients(shared, sequences, mask=padded_mask)
    want, want_grads = outputs_and_gradients(reference, sequences, mask=padded_mask)
    assert_close(got, want)
    if share_depth:  # the shared set's gradient sums those of levels 2 and 3
        want_grads = (
            want_grads[:3]
            + [a + b for a, b in zip(want_grads[3:6], want_grads[6:9])]
            + want_grads[9:]
        )
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b)


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_matches_simple_rnn(sequences, padded_mask, merge_mode):
    reference = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(4, return_sequences=True), merge_mode=merge_mode
    )
    reference(sequences)
    shared = keras.layers.Bidirectional(
        SharedRNN(4, return_sequences=True), merge_mode=merge_mode
    )
    shared(sequences)
    shared.set_weights(reference.get_weights())
    assert_same(shared, reference, sequences, mask=padded_mask)


@pytest.mark.parametrize("recompute", [2, 4, True])
def test_recompute_gives_the_same_outputs_and_gradients(
    sequences, padded_mask, recompute
):
    # depth 2: the segments carry every sublayer's state.
    # The last states too: padding steps must not move them.
    kwargs = dict(depth=2, return_sequences=True, return_state=True)
    plain = SharedRNN(4, **kwargs)
    plain(sequences)
    recomputing = SharedRNN(4, **kwargs, recompute=recompute)
    recomputing(sequences)
    recomputing.set_weights(plain.get_weights())
    assert_same(recomputing, plain, sequences, mask=padded_mask)
    # 7 steps: segments of 4 (or 3) leave a padded last segment to mask.
    longer = np.concatenate([sequences, sequences[:, :1]], axis=1)
    assert_same(recomputing, plain, longer)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_explicit_pass_equals_autodiff_with_dropout(sequences, padded_mask, activation):
    """With input and recurrent dropout (the same masks: the same seed), the
    explicit backward pass equals the backend's autodiff of the same loop
    (gelu: f'(a) from recomputed pre-activations, recurrent mask included)."""
    kwargs = dict(
        depth=2,
        return_sequences=True,
        dropout=0.3,
        recurrent_dropout=0.4,
        seed=7,
        activation=activation,
    )
    explicit, autodiff = SharedRNN(4, **kwargs), SharedRNN(4, **kwargs)
    explicit(sequences)
    autodiff(sequences)
    autodiff.set_weights(explicit.get_weights())
    autodiff.explicit_bptt = False
    assert_same(explicit, autodiff, sequences, mask=padded_mask, training=True)
    out_train = outputs_and_gradients(explicit, sequences, training=True)[0]
    out_infer = outputs_and_gradients(explicit, sequences, training=False)[0]
    assert np.max(np.abs(np.asarray(out_train) - np.asarray(out_infer))) > 1e-3


def test_stateful_matches_simple_rnn(sequences):
    x = np.concatenate([sequences, sequences[::-1]])[:4]
    kwargs = dict(stateful=True, return_sequences=True)
    reference = keras.layers.SimpleRNN(4, **kwargs)
    shared = SharedRNN(4, **kwargs)
    for layer in (reference, shared):
        keras.Sequential([keras.Input((6, 4), batch_size=4), layer])
    shared.set_weights(reference.get_weights())
    for _ in range(2):  # the second call starts from the first one's states
        assert_close(shared(x), reference(x))
    shared.reset_states()
    reference.reset_states()
    assert_close(shared(x), reference(x))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_matches_simple_rnn(sequences, padded_mask, policy):
    keras.config.set_dtype_policy(policy)
    shared, reference = _pair(sequences, return_sequences=True)
    got, got_grads = outputs_and_gradients(shared, sequences, mask=padded_mask)
    want, want_grads = outputs_and_gradients(reference, sequences, mask=padded_mask)
    assert got.dtype == want.dtype
    tol = 1e-2 if policy == "mixed_float16" else 5e-2
    assert_close(got, want, tol)
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b, tol)


def test_fit_matches_simple_rnn_model(sequences):
    """`fit` (jit-compiled on JAX, a tf.function on TensorFlow): the same
    weights after two epochs as the same model with Keras's SimpleRNN."""
    y = np.random.RandomState(5).randn(3, 2).astype("float32")

    def model(layer):
        built = keras.Sequential([keras.Input((6, 4)), layer, keras.layers.Dense(2)])
        built.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return built

    reference = model(keras.layers.SimpleRNN(4, return_sequences=False))
    shared = model(SharedRNN(4))
    shared.set_weights(reference.get_weights())
    for built in (reference, shared):
        built.fit(sequences, y, epochs=2, batch_size=3, verbose=0, shuffle=False)
    for a, b in zip(shared.get_weights(), reference.get_weights()):
        assert_close(a, b)


# ------------------------------------------------ files across backends

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "shared_rnn_tf.keras")
EXPECTED = os.path.join(os.path.dirname(__file__), "data", "shared_rnn_tf.npz")


def fixture_inputs():
    rng = np.random.RandomState(11)
    x = rng.randn(3, 7, 4).astype("float32")
    mask = np.ones((3, 7), bool)
    mask[0, 5:] = False
    mask[1, :2] = False
    return x, mask


def fixture_model():
    """The model saved to FIXTURE (by `python tests/layers/test_backends.py`
    under TensorFlow): masked, two levels, a Bidirectional one, recompute."""
    inputs = keras.Input((7, 4))
    mask = keras.Input((7,), dtype="bool")
    h = SharedRNN(5, depth=2, return_sequences=True, name="stack")(inputs, mask=mask)
    h = keras.layers.Bidirectional(
        SharedRNN(3, go_backwards=False, recompute=3), name="bi"
    )(h, mask=mask)
    return keras.Model([inputs, mask], keras.layers.Dense(2, name="head")(h))


def model_outputs_and_gradients(model):
    x, mask = fixture_inputs()
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(model([x, mask]))
        grads = tape.gradient(loss, model.trainable_variables)
        return model([x, mask]), grads
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        outputs, _ = model.stateless_call(trainable, non_trainable, [x, mask])
        return _loss(outputs), outputs

    (_, outputs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable)
    return outputs, grads


def test_a_file_saved_under_tensorflow_gives_the_same_numbers():
    """FIXTURE was saved under TensorFlow with its outputs and gradients;
    loaded here (either backend), it gives them again (<= 1e-5)."""
    model = keras.models.load_model(FIXTURE)
    expected = np.load(EXPECTED)
    outputs, grads = model_outputs_and_gradients(model)
    assert_close(outputs, expected["outputs"])
    assert len(grads) == len(model.trainable_variables)
    for i, grad in enumerate(grads):
        assert_close(grad, expected[f"grad_{i}"])


if __name__ == "__main__":  # writes FIXTURE and EXPECTED (TensorFlow)
    assert BACKEND == "tensorflow", "write the fixture under TensorFlow"
    keras.utils.set_random_seed(0)
    model = fixture_model()
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    model.save(FIXTURE)
    outputs, grads = model_outputs_and_gradients(model)
    np.savez(
        EXPECTED,
        outputs=keras.ops.convert_to_numpy(outputs),
        **{f"grad_{i}": keras.ops.convert_to_numpy(g) for i, g in enumerate(grads)},
    )
