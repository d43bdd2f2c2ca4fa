"""The guard's TensorFlow part: sums across `tf.distribute` replicas, the
update applied only when the step is finite (weights and optimizer state
untouched otherwise, also under a strategy), and the all-replica poisoning
a `LossScaleOptimizer` needs."""

import numpy as np
import tensorflow as tf


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
