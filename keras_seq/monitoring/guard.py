"""The monitored step's non-finite guard and counters, backend-neutral
(`keras.ops`): one all-finite decision per step from the summed gradient,
the int64 (int32 on JAX) counters the host reads at recorded steps and
epoch ends (see `COUNTERS`) and the peak norm between reads, as
pure functions of their old values. Applying the update only when it holds
is the backend's part (`guard_tf.apply_if` on TensorFlow, a select of the
old and new state in `train_step_jax`)."""

import keras
from keras import ops

# The counters every step updates in the graph, by index: steps run,
# non-finite steps, the first and last of those, updates a
# LossScaleOptimizer skipped on an overflow behind a finite loss, updates
# withheld after a non-finite step (`hold`), and whether one was seen
# (`hold`: 1 from the first non-finite step of the fit on).
COUNTERS = (
    "steps",
    "nonfinite",
    "first_nonfinite",
    "last_nonfinite",
    "overflows",
    "held",
    "stopped",
)


def sum_replicas(values):
    """`values` (a nest of tensors) summed over the replicas in sync.

    TensorFlow: the replica context's all-reduce under `tf.distribute`.
    JAX: the values themselves; under `keras.distribution` the jitted step
    computes on global (sharded) arrays, so every reduction is global.
    """
    if keras.backend.backend() == "tensorflow":
        from keras_seq.monitoring import guard_tf

        return guard_tf.sum_replicas(values)
    return values


def is_sparse(grad):
    """A `tf.IndexedSlices` gradient (an `Embedding`'s, on TensorFlow)."""
    return hasattr(grad, "indices") and hasattr(grad, "dense_shape")


def squared_sums(grads):
    # Sums of squares, not of values: a gradient whose squared norm
    # overflows float32 (an element above ~1.8e19) is as fatal as an Inf
    # (Adam's second moment becomes Inf, then Inf - Inf = NaN; clipnorm's
    # norm is Inf), so the guard treats it as non-finite.
    return [ops.zeros((), "float32")] + [
        ops.sum(ops.square(ops.cast(g.values if is_sparse(g) else g, "float32")))
        for g in grads
        if g is not None
    ]


def all_finite(sums):
    # A sum of squares is finite iff every element is finite and none
    # overflows when squared: one reduction per gradient.
    return ops.isfinite(sum(sums[1:], sums[0]))


def decide(settings, finite, loss_finite, held):
    """What one step does about its gradient: `(bad, overflow, condition)`.

    Args:
        settings: the `MonitorSettings` (`guard`, `hold`).
        finite: whether the summed gradient is all finite (see `all_finite`).
        loss_finite: whether the summed loss is finite, or None without a
            `LossScaleOptimizer`.
        held: whether a non-finite step under `hold` withholds this update.

    Returns:
        `bad`: a non-finite event. Under a `LossScaleOptimizer` non-finite
        scaled gradients are routine overflows that it skips itself; only a
        non-finite loss is news, and the overflows (`overflow`) are counted
        apart, so the report can name them. `condition`: apply the update
        only where it holds, or None to apply it as Keras would.
    """
    if loss_finite is not None:
        bad = ~loss_finite
        overflow = ~finite & ~bad & ~held
        return bad, overflow, (~held if settings.hold else None)
    condition = finite & ~held if settings.guard else None
    return ~finite, ops.zeros((), "bool"), condition


def raised_peak(peak, finite, global_norm):
    """The largest finite global norm since the monitor last read (and
    reset) the peak: an explosion between two recorded steps shows there."""
    norm = ops.cast(global_norm, "float32")
    return ops.where(finite, ops.maximum(peak, norm), peak)


def counted(counters, bad, overflow, held, hold):
    """`counters` (see `COUNTERS`) after one step."""
    dtype = counters.dtype
    step, count, first, last, overflows, held_count, stopped = ops.unstack(counters)
    bad = ops.cast(bad, dtype)
    if hold:
        stopped = ops.maximum(stopped, bad)
    return ops.stack(
        [
            step + 1,
            count + bad,
            ops.where((bad > 0) & (first < 0), step, first),
            ops.where(bad > 0, step, last),
            overflows + ops.cast(overflow, dtype),
            held_count + ops.cast(held, dtype),
            stopped,
        ]
    )
