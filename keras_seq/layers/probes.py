"""Zero "probe" tensors that expose the total dL/dh_t of every sublayer.

While a `ProbeRecorder` is active (the monitored training step opens one
around its forward pass), every `SharedRNN` sublayer adds two zero tensors:
one to its input projection `xw` (its gradient is dL/da_t) and one to each
h_t inside the recurrence (its gradient is the total dL/dh_t, carried back
through time). The explicit BPTT pass computes both anyway, so asking the
same tape for them costs one extra `(batch, units)` write per step. Outside a
recorder nothing is added and the layer pays nothing.
"""

import contextlib
import dataclasses
import threading

import keras

_state = threading.local()


@dataclasses.dataclass
class SublayerProbe:
    """What one recurrent sublayer exposes during a recorded step.

    All sequences are time-major `(T, B, U)` in processing order (reversed
    for `go_backwards`).
    """

    # Fields that hold this pass's values (see `probes_jax`).
    CARRIED = ("initial_state", "recurrent_dropout_mask", "mask", "outputs")

    layer: object
    level: int
    call: int  # 0, or 1, 2, ... when the layer is called again in one step
    xw_probe: object
    h_probe: object
    initial_state: object
    recurrent_dropout_mask: object = None
    mask: object = None  # (T, B, 1) bool, processing order; None: all valid
    outputs: object = None

    @property
    def name(self):
        suffix = f"#{self.call}" if self.call else ""
        return f"{self.layer.name}{suffix}/level_{self.level}"

    @property
    def sources(self):
        """The tensors whose gradients the step asks for: `[h, xw]`."""
        return [self.h_probe, self.xw_probe]

    @property
    def cell_index(self):
        """Index in `sources` of a carry probe (dL/dc_t); None: no carry."""
        return None

    @property
    def recurrent_kernel(self):
        """The variable whose per-step contributions `contribution` gives."""
        return self.layer.cell.level_weights(self.level)[1]

    def contribution(self, grads, direction):
        """Each step's contribution to the recurrent-kernel gradient,
        projected on `direction`: `<h_{t-1}^T dL/da_t, direction>`.

        Args:
            grads: float32 gradients of `sources`, in order.
            direction: `(units, units)` float32.

        Returns:
            `(T,)` float32, processing order.
        """
        grad_a = grads[1]
        ops = keras.ops
        h_prev = ops.concatenate([self.initial_state[None], self.outputs[:-1]], axis=0)
        h_prev = ops.cast(h_prev, "float32")
        if self.recurrent_dropout_mask is not None:
            h_prev = h_prev * ops.cast(self.recurrent_dropout_mask, "float32")
        projected = ops.tensordot(h_prev, direction, axes=1)
        return ops.sum(projected * grad_a, axis=[1, 2])


class ProbeRecorder:
    """Collects the probes of every `SharedRNN` sublayer called while active.

    On TensorFlow the probes are zeros watched on the step's tape. On JAX,
    which has no tape, they are arguments of the differentiated function
    (`keras_seq.layers.probes_jax`): `values` hands each probed layer its
    own, in call order; without `values` each gets zeros (the pass that
    finds their shapes).

    Args:
        tape: the `tf.GradientTape` that must watch the probes, or None.
        contributions: whether per-step contributions to the recurrent
            kernels will be asked for (probes that need extra tensors for
            them add those only then).
        values: optional list, one entry per probed call in call order, of
            the probes in the order of that record's `sources`.
    """

    def __init__(self, tape=None, contributions=True, values=None):
        self.tape = tape
        self.contributions = contributions
        self.values = values
        self.probes = []

    def add(self, layer, level, xw, initial_state, recurrent_dropout_mask, mask=None):
        """A `SublayerProbe` with zero probes shaped like `xw` (watched on
        the tape, or this call's `values`). The layer adds them and sets
        `outputs`."""
        given = self.next_values()
        if given is not None:
            h_probe, xw_probe = given
        else:
            xw_probe = keras.ops.zeros_like(xw)
            h_probe = keras.ops.zeros_like(xw)
        if self.tape is not None:
            self.tape.watch(xw_probe)
            self.tape.watch(h_probe)
        call = self.calls(layer, level)
        record = SublayerProbe(
            layer=layer,
            level=level,
            call=call,
            xw_probe=xw_probe,
            h_probe=h_probe,
            initial_state=initial_state,
            recurrent_dropout_mask=recurrent_dropout_mask,
            mask=mask,
        )
        self.probes.append(record)
        return record

    def next_values(self):
        """The probes given for the next record (in its `sources` order),
        or None when the recorder makes its own."""
        if self.values is None:
            return None
        return self.values[len(self.probes)]

    def calls(self, layer, level=0):
        """How many probes `layer`'s `level` has added so far (a layer called
        twice in one step gets `name#1`)."""
        return sum(1 for p in self.probes if p.layer is layer and p.level == level)


def active_recorder():
    """The innermost active `ProbeRecorder`, or None."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def recording(tape=None, contributions=True, values=None):
    """Activate a `ProbeRecorder` for the layers called inside the block
    (see its arguments)."""
    recorder = ProbeRecorder(tape, contributions, values)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(recorder)
    try:
        yield recorder
    finally:
        stack.pop()
