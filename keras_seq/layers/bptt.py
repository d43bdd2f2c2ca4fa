"""The Elman recurrence with an explicit backpropagation-through-time pass.

Everything here works on one recurrent sublayer in time-major layout:

    a_t = xw_t + (h_{t-1} * rmask) @ U        xw = x @ W + b, computed outside
    h_t = m_t * activation(a_t) + (1 - m_t) * h_{t-1} + p_t

`xw` is computed by the caller with one large matmul, so TensorFlow's own
autodiff gives dW, db and dx from dL/dxw; this module only owns the loop.
The backward pass is a reverse loop that carries the total dL/dh_t back
through time doing one (batch, units) x (units, units) matmul per step, and
forms dU as one contraction after the loop. That keeps training time close
to linear in the sequence length, where TensorFlow's automatic gradient of a
`tf.while_loop` grows superlinearly on long sequences whose input needs a
gradient (`benchmarks/rnn_speed.py` measures both; the README's "Training
speed and memory" section has its numbers).

Monitoring reads two exact by-products of that pass:
- `probe` (zeros, shape of the output; never anything else, since the
  derivative of tanh/sigmoid/relu is read off h_t) is added to every h_t inside the
  recurrence, so dL/dprobe is the *total* dL/dh_t, carried through time;
- the caller may add a zero tensor to `xw`; its gradient is dL/da_t, from which
  each step's contribution to dL/dU follows.
Both cost nothing unless a probe is passed.

`checkpointed_recurrence` runs a whole stack of sublayers with gradient
checkpointing (`SharedRNN(recompute=k)`): the forward pass keeps only each
sublayer's state every k steps, and the backward pass recomputes one segment
of states at a time from those checkpoints before running the same reverse
loop (`_backward`) over it. It takes the same probes and gives the same
gradients.
"""

import tensorflow as tf

from keras_seq.layers.recurrence import (
    DERIVATIVE_FROM_OUTPUT as _DERIVATIVE_FROM_OUTPUT,
)
from keras_seq.layers.recurrence import (
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

# As keras' own rnn(): lets TensorArray reads/writes of neighbouring steps
# overlap with the step's matmul.
_PARALLEL_ITERATIONS = 32


def project(x, kernel):
    """`x @ kernel` over the last axis of a `(T, B, F)` sequence."""
    return tf.tensordot(x, kernel, axes=1)


def _num_steps(x):
    # Static when known (XLA needs fixed TensorArray sizes), dynamic otherwise.
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _forward(
    xw, h0, recurrent_kernel, activation, mask, rmask, probe, returns="outputs"
):
    """h_t for every step (`returns="outputs"`), the last state h_T only
    (`"last"`), or both (`"both"`). h_T is its own tensor: a slice of the
    stacked outputs would keep all of them alive."""
    steps = _num_steps(xw)
    # Steps are read by index from the big tensors: a TensorArray.unstack
    # would hold a second copy of them for the whole loop.
    out_ta = ()
    if returns != "last":
        out_ta = (tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape),)

    def body(t, h, *out_ta):
        h_in = h if rmask is None else h * rmask
        new_h = activation(xw[t] + tf.matmul(h_in, recurrent_kernel))
        if mask is not None:
            new_h = tf.where(mask[t], new_h, h)
        if probe is not None:
            new_h = new_h + probe[t]
        return (t + 1, new_h) + tuple(ta.write(t, new_h) for ta in out_ta)

    _, h, *out_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0) + out_ta,
        maximum_iterations=steps,
        parallel_iterations=_PARALLEL_ITERATIONS,
    )
    if returns == "last":
        return h
    outputs = out_ta[0].stack()
    return (outputs, h) if returns == "both" else outputs


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
    grad_outputs,
    outputs,
    h0,
    recurrent_kernel,
    gain_of,
    mask,
    rmask,
    want_dh,
    carry=None,
):
    """Reverse loop: total dL/dh_t -> dL/da_t; weight gradients after it.

    `gain_of(t)` returns f'(a_t) for step t. `carry` is dL/dh of the last
    step from beyond the sequence (a later segment, or the final state);
    None means zeros.
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

    loop_vars = (steps - 1, tf.zeros_like(h0) if carry is None else carry, da_ta)
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


# ------------------------------------------------- recomputation (checkpoints)


def segment_length(recompute, steps):
    """Steps per segment for `recompute` and a sequence of `steps` steps.

    `recompute` is an integer k >= 1 (segments of at most k steps) or True
    (at most ceil(sqrt(steps))). The length is then evened out over the
    segments, ceil(steps / ceil(steps / k)), so the last segment is never
    mostly padding. A Python int when `steps` is one, else a scalar tensor.
    """
    if isinstance(steps, int):
        return static_segment_length(recompute, steps)
    steps = tf.convert_to_tensor(steps, tf.int32)
    if recompute is True:
        limit = tf.cast(tf.math.ceil(tf.sqrt(tf.cast(steps, tf.float32))), tf.int32)
    else:
        limit = tf.constant(int(recompute), tf.int32)
    limit = tf.maximum(1, tf.minimum(limit, steps))
    segments = (steps + limit - 1) // limit
    return (steps + segments - 1) // segments


def _static_shape(tensor):
    """The shape as a list: Python ints where known, scalar tensors elsewhere."""
    dynamic = tf.shape(tensor)
    return [
        dim if dim is not None else dynamic[i] for i, dim in enumerate(tensor.shape)
    ]


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
    backward pass and recomputes the others, one segment at a time.

    The sequence is cut into segments of k steps (`segment_length`). The
    last one is padded with masked steps, which carry the state and train
    nothing; without a user mask only that segment runs with a mask. The
    forward pass runs segment by segment through every sublayer and keeps
    only each sublayer's state at the start of each segment. The backward
    pass walks the segments in reverse: it recomputes the segment's states
    of every sublayer from those checkpoints (the same ops on the same
    inputs, so the same values), then runs the reverse loop of `_backward`
    over the segment, top sublayer first, carrying dL/dh into the previous
    segment. Weight gradients are summed over segments, so no
    `(T, B, units)` tensor is kept between the passes or built in the
    backward pass: memory grows with T only through the input, its gradient
    and whatever output the caller asks for.

    Every argument that `recurrence` takes per sublayer is a list here (one
    entry per sublayer, None entries allowed), and the gradients are those
    of `recurrence` applied sublayer after sublayer: the same quantities,
    summed in a different order.

    Args:
        x: `(T, B, F)` input of the first sublayer, time-major.
        initial_states: list of `(B, U)` tensors, one per sublayer.
        weights: list of `(kernel, recurrent_kernel, bias)` tensors per
            sublayer (bias may be None).
        activation: an activation `supports_explicit_bptt` accepts.
        recompute: integer >= 1 or True, see `segment_length`.
        mask: optional `(T, B, 1)` boolean tensor, True on valid steps.
        input_masks: optional list of dropout masks on each sublayer's input.
        rmasks: optional list of recurrent dropout masks.
        xw_probes, h_probes: optional lists of `(T, B, U)` zero tensors added
            to each sublayer's `x @ W + b` and h_t (see the module docstring).
        sequences: which sublayers' `(T, B, U)` outputs to return: `"top"`,
            `"all"` or None.

    Returns:
        `(outputs, final_states)`: a list of the requested output sequences
        (bottom to top) and a list of every sublayer's last state.
    """
    depth = len(weights)
    input_masks = input_masks or [None] * depth
    rmasks = rmasks or [None] * depth
    probed = xw_probes is not None
    kept = {"all": list(range(depth)), "top": [depth - 1], None: []}[sequences]

    steps = _num_steps(x)
    static = isinstance(steps, int)
    k = segment_length(recompute, steps)
    num_segments = (steps + k - 1) // k
    pad = num_segments * k - steps

    def pad_time(tensor, value=0):
        if static and pad == 0:
            return tensor
        paddings = [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1)
        return tf.pad(tensor, paddings, constant_values=value)

    def split(tensor, value=0):
        """(T, ...) -> (segments, k, ...), padding the end of the time axis."""
        tensor = pad_time(tensor, value)
        return tf.reshape(tensor, [num_segments, k] + _static_shape(tensor)[1:])

    def join(tensor):
        """(segments, k, ...) -> (T, ...), dropping the padding."""
        tensor = tf.reshape(tensor, [num_segments * k] + _static_shape(tensor)[2:])
        return tensor if static and pad == 0 else tensor[:steps]

    step_mask = tail_mask = None
    if mask is not None:
        step_mask = split(mask, False)
    elif not (static and pad == 0):
        # Only the last segment can hold padding, and only it pays for a
        # mask (a tf.where per step costs as much as ~15% of the step here).
        valid = steps - (num_segments - 1) * k
        tail_mask = tf.range(k)[:, None, None] < valid
    # Full segments run in a loop; a padded last one runs on its own.
    looped = num_segments if tail_mask is None else num_segments - 1

    derivative = _DERIVATIVE_FROM_OUTPUT.get(activation_name(activation))
    biased = [level[2] is not None for level in weights]
    flat_weights = [w for level in weights for w in level if w is not None]
    probe_args = []
    if probed:
        probe_args = [split(p) for p in xw_probes] + [split(p) for p in h_probes]

    def unpack(args):
        xs, args = args[0], list(args[1:])
        h0s, args = args[:depth], args[depth:]
        levels = []
        for level in range(depth):
            count = 3 if biased[level] else 2
            kernel, recurrent_kernel, *bias = args[:count]
            levels.append((kernel, recurrent_kernel, bias[0] if bias else None))
            args = args[count:]
        xw_ps = args[:depth] if probed else [None] * depth
        h_ps = args[depth:] if probed else [None] * depth
        return xs, h0s, levels, xw_ps, h_ps

    @tf.custom_gradient
    def _run(*args):
        xs, h0s, levels, xw_ps, h_ps = unpack(args)
        acc_dtype = tf.float32 if xs.dtype.size < 4 else xs.dtype

        def segment_mask(s, tail):
            if tail:
                return tail_mask
            return None if step_mask is None else step_mask[s]

        def run_level(level, s, inputs, h, returns="outputs", tail=False):
            """(input, xw, what `_forward` returns) of `level` over segment
            `s` from state h."""
            kernel, recurrent_kernel, bias = levels[level]
            if input_masks[level] is not None:
                inputs = inputs * input_masks[level]
            xw = tf.tensordot(inputs, kernel, axes=1)
            if bias is not None:
                xw = xw + bias
            if xw_ps[level] is not None:
                xw = xw + xw_ps[level][s]
            probe = None if h_ps[level] is None else h_ps[level][s]
            outputs = _forward(
                xw,
                h,
                recurrent_kernel,
                activation,
                segment_mask(s, tail),
                rmasks[level],
                probe,
                returns=returns,
            )
            return inputs, xw, outputs

        def new_ta(element):
            return tf.TensorArray(
                element.dtype, size=num_segments, element_shape=element.shape
            )

        def forward_segment(s, states, checkpoint_tas, sequence_tas, tail=False):
            inputs = xs[s]
            checkpoint_tas = [ta.write(s, h) for ta, h in zip(checkpoint_tas, states)]
            sequence_tas = list(sequence_tas)
            new_states = []
            for level in range(depth):
                # The checkpoint must not be a view of the segment's outputs,
                # which it would keep alive until the backward pass; the top
                # sublayer's outputs are needed only when returned.
                needed = level < depth - 1 or level in kept
                _, _, result = run_level(
                    level,
                    s,
                    inputs,
                    states[level],
                    "both" if needed else "last",
                    tail,
                )
                inputs, last = result if needed else (None, result)
                new_states.append(last)
                if level in kept:
                    i = kept.index(level)
                    sequence_tas[i] = sequence_tas[i].write(s, inputs)
            return s + 1, new_states, checkpoint_tas, sequence_tas

        segment_shape = tf.TensorShape([None if not static else k]).concatenate(
            h0s[0].shape
        )
        sequence_tas = [
            tf.TensorArray(xs.dtype, size=num_segments, element_shape=segment_shape)
            for _ in kept
        ]
        _, finals, checkpoint_tas, sequence_tas = tf.while_loop(
            lambda s, *_: s < looped,
            forward_segment,
            (tf.constant(0), list(h0s), [new_ta(h) for h in h0s], sequence_tas),
            maximum_iterations=looped,
            # Segments depend on each other through the state; 2 lets a
            # sublayer start the next segment while the one above it is
            # still in this one.
            parallel_iterations=2,
        )
        if tail_mask is not None:
            _, finals, checkpoint_tas, sequence_tas = forward_segment(
                looped, finals, checkpoint_tas, sequence_tas, tail=True
            )
        checkpoints = [ta.stack() for ta in checkpoint_tas]
        outputs = [ta.stack() for ta in sequence_tas]

        def gradients(*upstream):
            upstream = list(upstream)
            sequence_grads = dict(zip(kept, upstream[: len(kept)]))
            final_grads = upstream[len(kept) :]

            def backward_segment(
                s, carries, accumulators, dx_ta, probe_tas, tail=False
            ):
                inputs = xs[s]
                cache = []
                for level in range(depth):
                    h = checkpoints[level][s]
                    level_input, xw, inputs = run_level(level, s, inputs, h, tail=tail)
                    cache.append((h, level_input, xw, inputs))
                carries, accumulators = list(carries), list(accumulators)
                probe_tas = list(probe_tas)
                grad_out = None
                for level in reversed(range(depth)):
                    h, level_input, xw, level_outputs = cache[level]
                    kernel, recurrent_kernel, bias = levels[level]
                    if sequence_grads.get(level) is not None:
                        grad = sequence_grads[level][s]
                        grad_out = grad if grad_out is None else grad_out + grad
                    if grad_out is None:
                        grad_out = tf.zeros_like(level_outputs)
                    if derivative is not None:

                        def gain_of(t, level_outputs=level_outputs):
                            return derivative(level_outputs[t])

                    else:
                        h_prev = _shifted(h, level_outputs, rmasks[level])
                        gain_of = _generic_derivative(
                            activation, xw, h_prev, recurrent_kernel
                        ).__getitem__
                    grad_xw, carries[level], grad_recurrent, grad_dh = _backward(
                        grad_out,
                        level_outputs,
                        h,
                        recurrent_kernel,
                        gain_of,
                        segment_mask(s, tail),
                        rmasks[level],
                        probed,
                        carry=carries[level],
                    )
                    grad_kernel = tf.tensordot(
                        level_input, grad_xw, axes=[[0, 1], [0, 1]]
                    )
                    level_grads = [grad_kernel, grad_recurrent]
                    if bias is not None:
                        level_grads.append(tf.reduce_sum(grad_xw, axis=[0, 1]))
                    accumulators[level] = [
                        total + tf.cast(grad, acc_dtype)
                        for total, grad in zip(accumulators[level], level_grads)
                    ]
                    if probed:
                        probe_tas[level] = probe_tas[level].write(s, grad_xw)
                        probe_tas[depth + level] = probe_tas[depth + level].write(
                            s, grad_dh
                        )
                    grad_out = tf.tensordot(grad_xw, kernel, axes=[[2], [1]])
                    if input_masks[level] is not None:
                        grad_out = grad_out * input_masks[level]
                return (
                    s - 1,
                    carries,
                    accumulators,
                    dx_ta.write(s, grad_out),
                    probe_tas,
                )

            carries = [
                tf.zeros_like(h) if g is None else tf.cast(g, h.dtype)
                for g, h in zip(final_grads, h0s)
            ]
            accumulators = [
                [tf.zeros(w.shape, acc_dtype) for w in level if w is not None]
                for level in levels
            ]
            probe_tas = [new_ta(p[0]) for p in (xw_ps + h_ps)] if probed else []
            state = (carries, accumulators, new_ta(xs[0]), probe_tas)
            if tail_mask is not None:
                state = backward_segment(looped, *state, tail=True)[1:]
            result = tf.while_loop(
                lambda s, *_: s >= 0,
                backward_segment,
                (looped - 1,) + tuple(state),
                maximum_iterations=looped,
                # 2: the next segment's recomputation (which needs only its
                # checkpoints) can overlap this segment's reverse loop.
                parallel_iterations=2,
            )
            _, grad_h0s, accumulators, dx_ta, probe_tas = result
            grad_weights = [
                tf.cast(g, xs.dtype) for level in accumulators for g in level
            ]
            grad_probes = [ta.stack() for ta in probe_tas]
            return [dx_ta.stack()] + list(grad_h0s) + grad_weights + grad_probes

        return outputs + list(finals), gradients

    results = _run(split(x), *initial_states, *flat_weights, *probe_args)
    outputs = [join(sequence) for sequence in results[: len(kept)]]
    return outputs, list(results[len(kept) :])
