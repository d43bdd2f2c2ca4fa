"""The Elman recurrence with an explicit backpropagation-through-time pass.

Everything here works on one recurrent sublayer in time-major layout:

    a_t = xw_t + (h_{t-1} * rmask) @ U        xw = x @ W + b, computed outside
    h_t = m_t * activation(a_t) + (1 - m_t) * h_{t-1} + p_t

`xw` is computed by the caller with one large matmul, so TensorFlow's own
autodiff gives dW, db and dx from dL/dxw; this module only owns the loop.
The backward pass is a reverse loop that carries the total dL/dh_t back
through time doing one (batch, units) x (units, units) matmul per step, and
forms dU as one contraction after the loop. That keeps training time linear
in the sequence length, where TensorFlow's automatic gradient of a
`tf.while_loop` is not (see FIELD_NOTES).

Monitoring reads two exact by-products of that pass:
- `probe` (zeros, shape of the output; never anything else, since the
  derivative of tanh/sigmoid/relu is read off h_t) is added to every h_t inside the
  recurrence, so dL/dprobe is the *total* dL/dh_t, carried through time;
- the caller may add a zero tensor to `xw`; its gradient is dL/da_t, from which
  each step's contribution to dL/dU follows.
Both cost nothing unless a probe is passed.
"""

import keras
import tensorflow as tf

# Activations whose derivative is cheap to read off the output h = f(a).
_DERIVATIVE_FROM_OUTPUT = {
    "tanh": lambda h: 1.0 - h * h,
    "sigmoid": lambda h: h * (1.0 - h),
    "relu": lambda h: tf.cast(h > 0, h.dtype),
    "linear": lambda h: tf.ones_like(h),
}

# Element-wise activations: their derivative is the gradient of sum(f(a)).
ELEMENTWISE_ACTIVATIONS = frozenset(
    list(_DERIVATIVE_FROM_OUTPUT)
    + [
        "celu",
        "elu",
        "exponential",
        "gelu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "hard_tanh",
        "leaky_relu",
        "log_sigmoid",
        "mish",
        "relu6",
        "selu",
        "silu",
        "softplus",
        "softsign",
        "sparse_plus",
        "squareplus",
        "swish",
        "tanh_shrink",
    ]
)


# As keras' own rnn(): lets TensorArray reads/writes of neighbouring steps
# overlap with the step's matmul.
_PARALLEL_ITERATIONS = 32


def activation_name(activation):
    """The registered name of a Keras activation, or None for a custom one."""
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # noqa: BLE001 - any custom callable
        return None
    return name if isinstance(name, str) else None


def supports_explicit_bptt(activation):
    return activation_name(activation) in ELEMENTWISE_ACTIVATIONS


def _num_steps(x):
    # Static when known (XLA needs fixed TensorArray sizes), dynamic otherwise.
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe):
    steps = _num_steps(xw)
    # Steps are read by index from the big tensors: a TensorArray.unstack
    # would hold a second copy of them for the whole loop.
    out_ta = tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, out_ta):
        h_in = h if rmask is None else h * rmask
        new_h = activation(xw[t] + tf.matmul(h_in, recurrent_kernel))
        if mask is not None:
            new_h = tf.where(mask[t], new_h, h)
        if probe is not None:
            new_h = new_h + probe[t]
        return t + 1, new_h, out_ta.write(t, new_h)

    _, _, out_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, out_ta),
        maximum_iterations=steps,
        parallel_iterations=_PARALLEL_ITERATIONS,
    )
    return out_ta.stack()


def _generic_derivative(activation, xw, h_prev, recurrent_kernel):
    """f'(a_t) for every step of an element-wise activation, from autodiff."""
    pre_activation = xw + tf.einsum("tbi,ij->tbj", h_prev, recurrent_kernel)
    with tf.GradientTape() as tape:
        tape.watch(pre_activation)
        y = activation(pre_activation)
    return tape.gradient(y, pre_activation)


def _shifted(h0, outputs, rmask):
    """h_{t-1} for every step (times the recurrent dropout mask)."""
    h_prev = tf.concat([h0[None], outputs[:-1]], axis=0)
    return h_prev if rmask is None else h_prev * rmask


def _backward(
    grad_outputs, outputs, h0, recurrent_kernel, gain_of, mask, rmask, want_dh
):
    """Reverse loop: total dL/dh_t -> dL/da_t; weight gradients after it.

    `gain_of(t)` returns f'(a_t) for step t.
    """
    steps = _num_steps(outputs)
    kernel_t = tf.transpose(recurrent_kernel)
    da_ta = tf.TensorArray(outputs.dtype, size=steps, element_shape=h0.shape)
    dh_ta = (
        tf.TensorArray(outputs.dtype, size=steps, element_shape=h0.shape)
        if want_dh
        else None
    )

    def body(t, carry, da_ta, *maybe_dh_ta):
        dh = grad_outputs[t] + carry
        gain = gain_of(t)
        if mask is not None:
            # A masked step passes dh straight to h_{t-1} and trains nothing.
            gain = tf.where(mask[t], gain, tf.zeros_like(gain))
        da = dh * gain
        carry = tf.matmul(da, kernel_t)
        if rmask is not None:
            carry = carry * rmask
        if mask is not None:
            carry = carry + tf.where(mask[t], tf.zeros_like(dh), dh)
        extra = (maybe_dh_ta[0].write(t, dh),) if maybe_dh_ta else ()
        return (t - 1, carry, da_ta.write(t, da)) + extra

    loop_vars = (steps - 1, tf.zeros_like(h0), da_ta)
    if dh_ta is not None:
        loop_vars += (dh_ta,)
    result = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        loop_vars,
        maximum_iterations=steps,
        parallel_iterations=_PARALLEL_ITERATIONS,
    )
    grad_h0 = result[1]
    grad_xw = result[2].stack()
    grad_dh = result[3].stack() if dh_ta is not None else None
    if rmask is None:
        # Sum_t h_{t-1}^T da_t without building the shifted (T, B, U) copy.
        grad_kernel = tf.tensordot(
            outputs[:-1], grad_xw[1:], axes=[[0, 1], [0, 1]]
        ) + tf.matmul(h0, grad_xw[0], transpose_a=True)
    else:
        grad_kernel = tf.tensordot(
            _shifted(h0, outputs, rmask), grad_xw, axes=[[0, 1], [0, 1]]
        )
    return grad_xw, grad_h0, grad_kernel, grad_dh


def _gradient_function(
    outputs, xw, h0, recurrent_kernel, activation, mask, rmask, want_dh
):
    derivative = _DERIVATIVE_FROM_OUTPUT.get(activation_name(activation))
    if derivative is not None:
        xw = None  # f'(a_t) is read off h_t in the loop: xw need not be kept

    def grad(grad_outputs):
        if derivative is not None:

            def gain_of(t):
                return derivative(outputs[t])

        else:
            h_prev = _shifted(h0, outputs, rmask)
            gain_of = _generic_derivative(
                activation, xw, h_prev, recurrent_kernel
            ).__getitem__
        return _backward(
            grad_outputs, outputs, h0, recurrent_kernel, gain_of, mask, rmask, want_dh
        )

    return grad


def recurrence(
    xw,
    h0,
    recurrent_kernel,
    activation,
    mask=None,
    rmask=None,
    probe=None,
    explicit=True,
):
    """All hidden states of one Elman sublayer, time-major.

    Args:
        xw: `(T, B, U)` input projection plus bias, `x_t @ W + b`.
        h0: `(B, U)` initial state.
        recurrent_kernel: `(U, U)` tensor.
        activation: element-wise activation callable.
        mask: optional `(T, B, 1)` boolean tensor, True where the step is
            valid; masked steps carry the previous state.
        rmask: optional `(B, U)` recurrent dropout mask, applied to h_{t-1}.
        probe: optional `(T, B, U)` zeros added to each h_t; its gradient is
            the total dL/dh_t.
        explicit: use the explicit BPTT backward pass (True) or let
            TensorFlow differentiate the loop.

    Returns:
        `(T, B, U)`: h_t for every step (masked steps hold the carried state).
    """
    if not explicit:
        return _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe)

    probes = () if probe is None else (probe,)

    @tf.custom_gradient
    def _run(xw, h0, recurrent_kernel, *probe):
        outputs = _forward(
            xw, h0, recurrent_kernel, activation, mask, rmask, *(probe or (None,))
        )
        grad = _gradient_function(
            outputs, xw, h0, recurrent_kernel, activation, mask, rmask, bool(probe)
        )

        def gradients(grad_outputs):
            # dxw, dh0, dU, and dL/dprobe (the total dL/dh_t) when probed.
            return grad(grad_outputs)[: 3 + len(probe)]

        return outputs, gradients

    return _run(xw, h0, recurrent_kernel, *probes)
