"""The Elman recurrence with an explicit BPTT backward pass, on JAX.

The same kernels as `keras_seq.layers.bptt` (see its docstring for the
recurrence, the probes and `recompute`), with the same arguments and the
same outputs and gradients, written with `jax.lax.scan` and
`jax.custom_vjp`:

- the forward pass is one `scan` per sublayer doing a single
  `(batch, units) x (units, units)` matmul per step (the input projection is
  one large matmul before it, by the caller);
- the backward pass is one reverse `scan` carrying the total dL/dh_t, one
  matmul per step, with f'(a_t) read off h_t for tanh, sigmoid, relu and
  linear (JAX's own gradient of the forward scan would store the
  pre-activations and do two matmuls per step); dL/dU is one contraction
  after it;
- `checkpointed_recurrence` cuts the sequence into segments and runs the
  stack segment by segment under `jax.checkpoint`: only each sublayer's
  state at the start of each segment is kept for the backward pass, which
  recomputes one segment at a time and runs the same reverse scan over it.

Sequence lengths are static under `jax.jit`, so everything here works on
Python ints.
"""

import functools

import jax
import jax.numpy as jnp

from keras_seq.layers.recurrence import (
    DERIVATIVE_FROM_OUTPUT,
    ELEMENTWISE_ACTIVATIONS,
    activation_name,
    static_segment_length,
    supports_explicit_bptt,
)

__all__ = [
    "ELEMENTWISE_ACTIVATIONS",
    "project",
    "activation_name",
    "checkpointed_recurrence",
    "recurrence",
    "segment_length",
    "supports_explicit_bptt",
]


def segment_length(recompute, steps):
    """Steps per segment (see `keras_seq.layers.bptt.segment_length`)."""
    return static_segment_length(recompute, int(steps))


def project(x, kernel):
    """`x @ kernel` over the last axis of a `(T, B, F)` sequence, as one 2-D
    matmul: XLA's CPU dot for a contraction over (T, B) (this product's
    kernel gradient) took 2.4x longer as a 3-D tensordot than as the 2-D
    product (T=5000, B=32, 128 units: 147 against 62 ms)."""
    flat = x.reshape((-1, x.shape[-1])) @ kernel
    return flat.reshape(x.shape[:-1] + (kernel.shape[-1],))


def _contract_steps(a, b):
    """Sum over steps and rows of `a_t^T b_t`: `(T, B, I), (T, B, J) -> (I, J)`
    as one 2-D matmul (see `project`)."""
    return a.reshape((-1, a.shape[-1])).T @ b.reshape((-1, b.shape[-1]))


def _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe):
    """h_t for every step, time-major `(T, B, U)`."""

    def step(h, inputs):
        xw_t, mask_t, probe_t = inputs
        h_in = h if rmask is None else h * rmask
        new_h = activation(xw_t + h_in @ recurrent_kernel)
        if mask_t is not None:
            new_h = jnp.where(mask_t, new_h, h)
        if probe_t is not None:
            new_h = new_h + probe_t
        return new_h, new_h

    _, outputs = jax.lax.scan(step, h0, (xw, mask, probe))
    return outputs


def _shifted(h0, outputs, rmask):
    """h_{t-1} for every step (times the recurrent dropout mask)."""
    h_prev = jnp.concatenate([h0[None], outputs[:-1]], axis=0)
    return h_prev if rmask is None else h_prev * rmask


def _generic_gains(activation, outputs, xw, h0, recurrent_kernel, rmask):
    """f'(a_t) for every step of an activation whose derivative is not read
    off its output: the gradient of sum(f(a)) at the recomputed
    pre-activations."""
    pre_activation = xw + jnp.einsum(
        "tbi,ij->tbj", _shifted(h0, outputs, rmask), recurrent_kernel
    )
    return jax.grad(lambda a: jnp.sum(activation(a)))(pre_activation)


def _backward(
    grad_outputs, outputs, h0, recurrent_kernel, gain_of, gains, mask, rmask, want_dh
):
    """Reverse scan: total dL/dh_t -> dL/da_t; (dxw, dh0, dU, dL/dh_t or
    None). f'(a_t) is `gain_of(h_t)` in the loop, or read from `gains`."""
    kernel_t = recurrent_kernel.T

    def step(carry, inputs):
        grad_t, h_t, gain_t, mask_t = inputs
        dh = grad_t + carry
        if gain_t is None:
            gain_t = gain_of(h_t)
        if mask_t is not None:
            # A masked step passes dh straight to h_{t-1} and trains nothing.
            gain_t = jnp.where(mask_t, gain_t, jnp.zeros_like(gain_t))
        da = dh * gain_t
        carry = da @ kernel_t
        if rmask is not None:
            carry = carry * rmask
        if mask_t is not None:
            carry = carry + jnp.where(mask_t, jnp.zeros_like(dh), dh)
        return carry, ((da, dh) if want_dh else (da, None))

    grad_h0, (grad_xw, grad_h) = jax.lax.scan(
        step,
        jnp.zeros_like(h0),
        (grad_outputs, outputs if gains is None else None, gains, mask),
        reverse=True,
    )
    if rmask is None:
        # Sum_t h_{t-1}^T da_t without building the shifted (T, B, U) copy.
        grad_kernel = _contract_steps(outputs[:-1], grad_xw[1:]) + h0.T @ grad_xw[0]
    else:
        grad_kernel = _contract_steps(_shifted(h0, outputs, rmask), grad_xw)
    return grad_xw, grad_h0, grad_kernel, grad_h


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _explicit(activation, probed, xw, h0, recurrent_kernel, mask, rmask, probe):
    return _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe)


def _explicit_forward(activation, probed, xw, h0, recurrent_kernel, mask, rmask, probe):
    outputs = _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe)
    # f'(a_t) is read off h_t for the common activations: xw need not be kept.
    keep_xw = DERIVATIVE_FROM_OUTPUT.get(activation_name(activation)) is None
    return outputs, (
        outputs,
        xw if keep_xw else None,
        h0,
        recurrent_kernel,
        mask,
        rmask,
    )


def _explicit_backward(activation, probed, saved, grad_outputs):
    outputs, xw, h0, recurrent_kernel, mask, rmask = saved
    gain_of = DERIVATIVE_FROM_OUTPUT.get(activation_name(activation))
    gains = None
    if gain_of is None:
        gains = _generic_gains(activation, outputs, xw, h0, recurrent_kernel, rmask)
    grad_xw, grad_h0, grad_kernel, grad_h = _backward(
        grad_outputs,
        outputs,
        h0,
        recurrent_kernel,
        gain_of,
        gains,
        mask,
        rmask,
        want_dh=probed,
    )
    # No gradient for the masks; the probe's is the total dL/dh_t.
    return grad_xw, grad_h0, grad_kernel, None, None, grad_h if probed else None


_explicit.defvjp(_explicit_forward, _explicit_backward)


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
    """All hidden states of one Elman sublayer, time-major (the arguments of
    `keras_seq.layers.bptt.recurrence`; `explicit=False` lets JAX
    differentiate the scan)."""
    if not explicit:
        return _forward(xw, h0, recurrent_kernel, activation, mask, rmask, probe)
    probed = probe is not None  # static: whether dL/dh_t is asked for
    return _explicit(activation, probed, xw, h0, recurrent_kernel, mask, rmask, probe)


def checkpointed_recurrence(
    x,
    initial_states,
    weights,
    activation,
    recompute,
    mask=None,
    input_masks=None,
    rmasks=None,
    xw_probes=None,
    h_probes=None,
    sequences="top",
):
    """A stack of Elman sublayers that keeps only every k-th state for the
    backward pass (the arguments and results of
    `keras_seq.layers.bptt.checkpointed_recurrence`).

    The sequence is padded to whole segments with masked steps (which carry
    the state and train nothing) and scanned segment by segment; each
    segment's body runs every sublayer through `recurrence` under
    `jax.checkpoint`, so the scan keeps only the states between segments
    and the backward pass recomputes a segment before its reverse scans.
    """
    depth = len(weights)
    input_masks = input_masks or [None] * depth
    rmasks = rmasks or [None] * depth
    kept = {"all": list(range(depth)), "top": [depth - 1], None: []}[sequences]

    steps = int(x.shape[0])
    k = segment_length(recompute, steps)
    segments = -(-steps // k)
    pad = segments * k - steps
    if pad and mask is None:
        mask = jnp.ones((steps, 1, 1), bool)

    def split(tensor, value=0):
        """(T, ...) -> (segments, k, ...), padding the end of the time axis."""
        if tensor is None:
            return None
        if pad:
            widths = [(0, pad)] + [(0, 0)] * (tensor.ndim - 1)
            tensor = jnp.pad(tensor, widths, constant_values=value)
        return tensor.reshape((segments, k) + tensor.shape[1:])

    def join(tensor):
        """(segments, k, ...) -> (T, ...), dropping the padding."""
        return tensor.reshape((segments * k,) + tensor.shape[2:])[:steps]

    xw_probes = xw_probes or [None] * depth
    h_probes = h_probes or [None] * depth

    @jax.checkpoint
    def segment(states, inputs):
        x_s, mask_s, xw_ps, h_ps = inputs
        new_states, outputs = [], []
        for level in range(depth):
            kernel, recurrent_kernel, bias = weights[level]
            if input_masks[level] is not None:
                x_s = x_s * input_masks[level]
            xw = project(x_s, kernel)
            if bias is not None:
                xw = xw + bias
            if xw_ps[level] is not None:
                xw = xw + xw_ps[level]
            x_s = recurrence(
                xw,
                states[level],
                recurrent_kernel,
                activation,
                mask=mask_s,
                rmask=rmasks[level],
                probe=h_ps[level],
            )
            new_states.append(x_s[-1])
            outputs.append(x_s)
        return new_states, [outputs[level] for level in kept]

    inputs = (
        split(x),
        split(mask, False),
        [split(p) for p in xw_probes],
        [split(p) for p in h_probes],
    )
    finals, outputs = jax.lax.scan(segment, list(initial_states), inputs)
    return [join(o) for o in outputs], list(finals)
