"""The monitored step's non-finite guard and counters, in the graph: one
all-finite decision per step from the summed gradient, the update applied
only when it holds (weights and optimizer state untouched otherwise, also
under `tf.distribute`), and the int64 counters the host reads at recorded
steps and epoch ends (see `train_step.COUNTERS`)."""

import numpy as np
import tensorflow as tf


def track_peak(peak, finite, global_norm):
    """The largest finite global norm since the monitor last read (and
    reset) `peak`: an explosion between two recorded steps shows there."""
    if peak is None:
        return
    norm = tf.cast(global_norm, tf.float32)
    peak.assign(tf.where(finite, tf.maximum(peak, norm), peak))


def sum_replicas(values):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def nonfinite_everywhere(grads):
    """Under several replicas, every gradient NaN when any replica's holds
    a non-finite element. Keras's LossScaleOptimizer checks each replica's
    own (unsummed) gradient, so a replica with a clean share of the batch
    would apply the summed NaN update; this makes every replica skip (and
    lower its loss scale) together. One replica: the gradients unchanged."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
    count = tf.add_n(
        [tf.constant(0.0)]
        + [
            tf.reduce_sum(tf.cast(~tf.math.is_finite(v), tf.float32))
            for v in values
            if v is not None
        ]
    )
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, count) > 0

    def poisoned(grad):
        if grad is None:
            return None
        if isinstance(grad, tf.IndexedSlices):
            return tf.IndexedSlices(
                poisoned(grad.values), grad.indices, grad.dense_shape
            )
        return grad * tf.where(bad, tf.constant(np.nan, grad.dtype), 1)

    return [poisoned(g) for g in grads]


def squared_sums(grads):
    # Sums of squares, not of values: a gradient whose squared norm
    # overflows float32 (an element above ~1.8e19) is as fatal as an Inf
    # (Adam's second moment becomes Inf, then Inf - Inf = NaN; clipnorm's
    # norm is Inf), so the guard treats it as non-finite.
    return [tf.constant(0.0)] + [
        tf.reduce_sum(tf.square(tf.cast(_values(g), tf.float32)))
        for g in grads
        if g is not None
    ]


def all_finite(sums):
    # A sum of squares is finite iff every element is finite and none
    # overflows when squared: one reduction per gradient.
    return tf.math.is_finite(tf.add_n(sums))


def count(counters, bad, overflow, held, hold):
    """Update `counters` (see `train_step.COUNTERS`) after one step."""
    step, count, first, last, overflows, held_count, stopped = tf.unstack(counters)
    bad = tf.cast(bad, tf.int64)
    if hold:
        stopped = tf.maximum(stopped, bad)
    counters.assign(
        tf.stack(
            [
                step + 1,
                count + bad,
                tf.where((bad > 0) & (first < 0), step, first),
                tf.where(bad > 0, step, last),
                overflows + tf.cast(overflow, tf.int64),
                held_count + tf.cast(held, tf.int64),
                stopped,
            ]
        )
    )


def _values(grad):
    return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def apply_if(finite, optimizer, grads, variables):
    """optimizer.apply when `finite`, else nothing: weights and optimizer
    state stay exactly as they were."""
    context = tf.distribute.get_replica_context()
    if not tf.distribute.has_strategy() or context is None:
        tf.cond(finite, lambda: _apply(optimizer, grads, variables), _nothing)
        return

    # A cond in the replica context cannot hold optimizer.apply (it calls
    # merge_call); do as keras.optimizers.LossScaleOptimizer: cond in the
    # cross-replica context, apply in each replica.
    def cross_replica(strategy, finite, grads):
        finite = strategy.experimental_local_results(finite)[0]

        def apply():
            strategy.extended.call_for_each_replica(
                optimizer.apply, args=(grads, variables)
            )
            return tf.constant(True)

        tf.cond(finite, apply, _nothing)

    context.merge_call(cross_replica, args=(finite, grads))


def _apply(optimizer, grads, variables):
    optimizer.apply(grads, variables)
    return tf.constant(True)


def _nothing():
    return tf.constant(False)
