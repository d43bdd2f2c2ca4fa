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

import tensorflow as tf

_state = threading.local()


@dataclasses.dataclass
class SublayerProbe:
    """What one recurrent sublayer exposes during a recorded step.

    All sequences are time-major `(T, B, U)` in processing order (reversed
    for `go_backwards`).
    """

    layer: object
    level: int
    call: int  # 0, or 1, 2, ... when the layer is called again in one step
    xw_probe: tf.Tensor
    h_probe: tf.Tensor
    initial_state: tf.Tensor
    recurrent_dropout_mask: object = None
    mask: object = None  # (T, B, 1) bool, processing order; None: all valid
    outputs: object = None

    @property
    def name(self):
        suffix = f"#{self.call}" if self.call else ""
        return f"{self.layer.name}{suffix}/level_{self.level}"


class ProbeRecorder:
    """Collects the probes of every `SharedRNN` sublayer called while active.

    Args:
        tape: the `tf.GradientTape` that must watch the probes.
    """

    def __init__(self, tape):
        self.tape = tape
        self.probes = []

    def add(self, layer, level, xw, initial_state, recurrent_dropout_mask, mask=None):
        """A `SublayerProbe` with zero probes shaped like `xw`, watched on the
        tape. The layer adds them and sets `outputs`."""
        xw_probe = tf.zeros_like(xw)
        h_probe = tf.zeros_like(xw)
        self.tape.watch(xw_probe)
        self.tape.watch(h_probe)
        call = sum(1 for p in self.probes if p.layer is layer and p.level == level)
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


def active_recorder():
    """The innermost active `ProbeRecorder`, or None."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def recording(tape):
    """Activate a `ProbeRecorder` for the layers called inside the block."""
    recorder = ProbeRecorder(tape)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(recorder)
    try:
        yield recorder
    finally:
        stack.pop()
