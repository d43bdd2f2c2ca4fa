"""Per-time-step gradients of Keras's own `SimpleRNN`, `GRU` and `LSTM`.

While the recording step traces its forward pass, `probing(model, True)`
gives every such layer of the model (alone, stacked, inside `Bidirectional`)
an instance-level `inner_loop` that runs the layer's own cell over time in a
`tf.scan`, exactly as Keras's `backend.rnn` does (same cell calls, same
masking: a masked step keeps the previous state, and outputs zeros or the
previous output), and adds zero probes that a `ProbeRecorder`'s tape
watches:

- `h` `(T, B, units)`, added to each step's new h_t before masking and used
  both as the output and as the state carried on: its gradient is the total
  dL/dh_t through the recurrence;
- `c` (LSTM only), added to the new carry c_t both where the cell reads it
  for h_t = o * tanh(c_t) and where it is carried on: its gradient is the
  total dL/dc_t;
- `kernel` `(T, *recurrent_kernel.shape)` when contributions are asked for:
  the cell reads `recurrent_kernel + kernel[t]` at step t (through
  `keras.StatelessScope`), so its gradient is each step's own share of
  dL/d(recurrent_kernel). This costs `T x units x gates x 4` bytes per layer
  on recorded steps; above `KERNEL_PROBE_LIMIT` elements the contributions
  are left NaN.

The patch exists only while the recording function is traced; the light step
and every other function trace Keras's own loop (and on GPU its fused cuDNN
kernel, which the recorded steps then do not use).
"""

import contextlib
import dataclasses
import inspect
import math

import keras
from keras import ops

from keras_seq.layers import probes
from keras_seq.monitoring.recurrent import (  # noqa: F401
    has_timestep_data,
    probeable,
    recurrent_layers,
)

_TF = keras.backend.backend() == "tensorflow"
if _TF:
    import tensorflow as tf
else:
    import jax

# Elements of one layer's per-step recurrent-kernel probe (4 bytes each):
# above this the layer's contributions are not computed.
KERNEL_PROBE_LIMIT = 2**24


@dataclasses.dataclass
class KerasRNNProbe:
    """What one Keras recurrent layer exposes during a recorded step.

    Sequences are time-major `(T, B, ...)` in processing order.
    """

    # Fields that hold this pass's values (see `probes_jax`).
    CARRIED = ("mask", "outputs")

    layer: object
    call: int
    h_probe: object
    c_probe: object = None
    kernel_probe: object = None
    mask: object = None  # (T, B, 1) bool or None
    outputs: object = None  # the h_t sequence, (T, B, units)
    level: int = 0

    @property
    def name(self):
        suffix = f"#{self.call}" if self.call else ""
        return f"{self.layer.name}{suffix}/level_0"

    @property
    def sources(self):
        extra = [p for p in (self.c_probe, self.kernel_probe) if p is not None]
        return [self.h_probe] + extra

    @property
    def cell_index(self):
        """Index in `sources` of the carry probe (LSTM), or None."""
        return 1 if self.c_probe is not None else None

    @property
    def recurrent_kernel(self):
        if self.kernel_probe is None:
            return None
        return self.layer.cell.recurrent_kernel

    def contribution(self, grads, direction):
        """`<dL/dU_t, direction>` for every step t, processing order."""
        return ops.sum(ops.cast(grads[-1], "float32") * direction[None], axis=[1, 2])


@contextlib.contextmanager
def probing(model, record):
    """While active (and `record`), the model's Keras SimpleRNN/GRU/LSTM
    layers add probes to the active `ProbeRecorder`."""
    if not record:
        yield
        return
    layers = [layer for layer in recurrent_layers(model) if probeable(layer)]
    for layer in layers:
        layer.inner_loop = _probed_inner_loop(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.inner_loop


def _probed_inner_loop(layer):
    keras_inner_loop = type(layer).inner_loop

    def inner_loop(sequences, initial_state, mask, training=False):
        recorder = probes.active_recorder()
        if recorder is None or not ops.is_tensor(sequences):
            return keras_inner_loop(layer, sequences, initial_state, mask, training)
        return _run(layer, recorder, sequences, initial_state, mask, training)

    return inner_loop


@contextlib.contextmanager
def _probed_carry(cell, probe):
    """While an LSTMCell computes one step, add `probe` to the new carry c_t
    where h_t = o * activation(c_t) reads it (the cell's second activation
    call; the first is the candidate's), so that the probe's gradient is the
    total dL/dc_t, through h_t and through the carry. Yields the arguments
    of the activation calls, for the caller to check that the second was
    the carry it returned."""
    activation = cell.activation
    seen = []

    def probed(value):
        seen.append(value)
        if len(seen) == 2:
            value = value + ops.cast(probe, value.dtype)
        return activation(value)

    cell.activation = probed
    try:
        yield seen
    finally:
        cell.activation = activation


def _run(layer, recorder, sequences, initial_state, mask, training):
    cell = layer.cell
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    kwargs = {}
    if "training" in inspect.signature(cell.call).parameters:
        kwargs["training"] = training
    x = ops.transpose(sequences, [1, 0, 2])  # (T, B, F)
    time_mask = None
    if mask is not None:
        time_mask = ops.transpose(ops.cast(mask, "bool"))[:, :, None]
    if layer.go_backwards:
        x = ops.flip(x, 0)
        if time_mask is not None:
            time_mask = ops.flip(time_mask, 0)
    states = list(keras.tree.flatten(initial_state))
    h0 = states[0]
    steps = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
    batch = ops.shape(x)[1]
    variable = cell.recurrent_kernel
    size = (x.shape[0] or 0) * math.prod(variable.shape)
    with_kernel = (
        recorder.contributions and variable.trainable and size <= KERNEL_PROBE_LIMIT
    )
    lstm = isinstance(cell, keras.layers.LSTMCell)
    shapes = [((steps, batch, h0.shape[-1]), h0.dtype)]
    if lstm:
        shapes.append(((steps, batch, states[1].shape[-1]), states[1].dtype))
    if with_kernel:
        shapes.append(((steps, *variable.shape), variable.dtype))
    given = recorder.next_values()
    if given is None:
        # TensorFlow: zeros the step's tape watches. JAX: zeros (the pass
        # that finds the probes' shapes) or the arguments given.
        given = [ops.zeros(shape, dtype) for shape, dtype in shapes]
        if recorder.tape is not None:
            for probe in given:
                recorder.tape.watch(probe)
    given = list(given)
    h_probe = given.pop(0)
    c_probe = given.pop(0) if lstm else None
    kernel_probe, kernel = None, None
    if with_kernel:
        kernel_probe = given.pop(0)
        kernel = ops.convert_to_tensor(variable.value)
        # On JAX the cell runs inside Keras's stateless call, whose scope
        # maps every variable to its value: an inner scope must map all of
        # the cell's, not only the probed kernel (Keras reads the innermost
        # scope only, then the variable's own value, empty during `fit`).
        current = (
            [] if _TF else [(v, v.value) for v in cell.variables if v is not variable]
        )

    elems = [x, h_probe]
    for extra in (c_probe, kernel_probe, time_mask):
        if extra is not None:
            elems.append(extra)

    def step(carry, elems):
        previous, states = carry[0], list(carry[1:])
        x_t, h_t, rest = elems[0], elems[1], list(elems[2:])
        c_t = rest.pop(0) if c_probe is not None else None
        k_t = rest.pop(0) if kernel_probe is not None else None
        m_t = rest.pop(0) if time_mask is not None else None
        with contextlib.ExitStack() as stack:
            if k_t is not None:
                mapped = kernel + ops.cast(k_t, kernel.dtype)
                stack.enter_context(
                    keras.StatelessScope(state_mapping=current + [(variable, mapped)])
                )
            if c_t is not None:
                carries = stack.enter_context(_probed_carry(cell, c_t))
            output, new_states = cell(x_t, states, **kwargs)
        new_states = list(keras.tree.flatten(new_states))
        output = output + h_t
        new_states[0] = output  # SimpleRNN, GRU, LSTM: h is both
        if c_t is not None:
            if len(carries) != 2 or carries[1] is not new_states[1]:
                raise RuntimeError(
                    "keras_seq could not probe the carry of "
                    f"{type(cell).__name__}: Keras's LSTMCell no longer "
                    "computes h = o * activation(c) as its second activation "
                    "call. Please report this to keras-seq."
                )
            new_states[1] = new_states[1] + c_t
        if m_t is not None:
            hidden = ops.zeros_like(output) if layer.zero_output_for_mask else previous
            output = ops.where(m_t, output, hidden)
            new_states = [ops.where(m_t, n, o) for n, o in zip(new_states, states)]
        return (output, *new_states)

    initializer = (ops.zeros_like(h0), *states)
    carried = _scan(step, tuple(elems), initializer)
    outputs, state_sequences = carried[0], carried[1:]
    probe = KerasRNNProbe(
        layer=layer,
        call=recorder.calls(layer),
        h_probe=h_probe,
        c_probe=c_probe,
        kernel_probe=kernel_probe,
        mask=time_mask,
        outputs=state_sequences[0],
    )
    recorder.probes.append(probe)
    last_output = outputs[-1]
    if layer.return_sequences:
        sequence = ops.transpose(outputs, [1, 0, 2])
    else:
        sequence = last_output[:, None]
    return last_output, sequence, [s[-1] for s in state_sequences]


def _scan(step, elems, initializer):
    """Every carry of `step` over time, stacked, as `tf.scan` gives them
    (`jax.lax.scan` on JAX)."""
    if _TF:
        return tf.scan(step, elems, initializer=initializer)

    def body(carry, elems):
        carry = step(carry, elems)
        return carry, carry

    return jax.lax.scan(body, initializer, elems)[1]
