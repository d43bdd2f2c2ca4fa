"""The probes on JAX (`keras_seq.layers.probes_jax`): every sublayer's total
dL/dh_t and dL/da_t from one differentiation, checked against `jax.grad` of
an unrolled Python loop over the same weights (no scan, no custom VJP)."""

import keras
import numpy as np
import pytest

from keras_seq.layers import SharedRNN

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the JAX probes"
)


def reference(weights, x, mask, y, go_backwards, depth):
    """Per level, dL/dh_t and dL/da_t (processing order) of the model's MSE
    loss, by jax.grad through zeros added to every h_t and a_t."""
    import jax
    import jax.numpy as jnp

    steps = x.shape[1]
    order = list(range(steps))[::-1] if go_backwards else list(range(steps))

    def loss(eps_h, eps_a):
        inputs = [x[:, t] for t in order]
        valid = [mask[:, t : t + 1] for t in order]
        for level in range(depth):
            kernel, recurrent, bias = weights[3 * level : 3 * level + 3]
            h = jnp.zeros((x.shape[0], kernel.shape[1]))
            outputs = []
            for k, x_t in enumerate(inputs):
                a = x_t @ kernel + h @ recurrent + bias + eps_a[level][k]
                h = jnp.where(valid[k], jnp.tanh(a), h) + eps_h[level][k]
                outputs.append(h)
            inputs = outputs
        head, head_bias = weights[3 * depth :]
        prediction = inputs[-1] @ head + head_bias
        return jnp.mean((prediction - y) ** 2)

    zeros = [
        [jnp.zeros((x.shape[0], weights[3 * level].shape[1]))] * steps
        for level in range(depth)
    ]
    grad_h, grad_a = jax.grad(loss, argnums=(0, 1))(zeros, zeros)
    return [np.stack(g) for g in grad_h], [np.stack(g) for g in grad_a]


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("recompute", [None, 4])
def test_probe_gradients_equal_an_unrolled_loop(go_backwards, recompute):
    import jax

    from keras_seq.layers import probes_jax

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 4)).astype("float32")
    mask = np.ones((3, 7), bool)
    mask[0, 5:] = False  # trailing padding
    mask[1, :2] = False  # leading padding
    y = rng.standard_normal((3, 2)).astype("float32")
    inputs = keras.Input((7, 4))
    valid = keras.Input((7,), dtype="bool")
    h = SharedRNN(
        5, depth=2, go_backwards=go_backwards, recompute=recompute, name="rnn"
    )(inputs, mask=valid)
    model = keras.Model([inputs, valid], keras.layers.Dense(2)(h))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(params):
        prediction, _ = model.stateless_call(
            params, non_trainable, [x, mask], training=True
        )
        return keras.ops.mean((prediction - y) ** 2), prediction

    names = []

    @jax.jit  # as a training step runs it
    def step(params):
        (_, _, records), (grads, probe_grads) = probes_jax.value_and_grad(loss_fn)(
            params
        )
        names.extend((r.layer.name, r.level) for r in records)  # at trace time
        return grads, probe_grads, records[1].outputs

    grads, probe_grads, top_outputs = step(trainable)
    assert names == [("rnn", 0), ("rnn", 1)]
    want_h, want_a = reference(
        [np.asarray(w) for w in trainable], x, mask, y, go_backwards, depth=2
    )
    for level, (dh, da) in enumerate(probe_grads):
        np.testing.assert_allclose(dh, want_h[level], atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(da, want_a[level], atol=1e-6, rtol=1e-5)
    # The weight gradients are those of plain autodiff, and the outputs the
    # layer's own.
    plain = jax.grad(lambda p: loss_fn(p)[0])(trainable)
    for a, b in zip(grads, plain):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    assert top_outputs.shape == (7, 3, 5)
