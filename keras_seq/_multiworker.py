"""Training under `tf.distribute.MultiWorkerMirroredStrategy` despite
keras-team/keras#20585 (open in Keras 3.15; tensorflow/tensorflow#72388).

Keras's TensorFlow trainer fails twice there, for any model:

1. `fit` and `evaluate` build the model from one batch of the distributed
   dataset, reducing it first with an eager `strategy.reduce("MEAN", batch)`,
   which the collective strategy cannot do on a `PerReplica` batch
   ("Attempt to convert a value (PerReplica:...)").
2. The step's outputs (the logs) are reduced with
   `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar losses
   and metrics ("Invalid reduction dimension 0 for input with 0 dimensions").

`MultiWorkerTraining`, a base of `keras_seq.Sequential` and
`keras_seq.Model`, works around both, and only while the model's strategy is
a `MultiWorkerMirroredStrategy` spanning several workers (the case in which
Keras takes that path); elsewhere every method is Keras's own. It builds the
model from the first replica's part of the batch (the shape Keras's reduction
would give), and gives every output of the training and evaluation steps a
leading axis of length 1, over which Keras's reduction averages the
replicas' values, as it does on one machine (the monitor's statistics,
already summed over replicas, come back exactly). The monitored training
functions of `keras_seq.monitoring.MonitoredTraining` are built through
`make_train_function` and so get the same treatment.

`tests/distribute/test_multi_worker.py` checks that a plain `keras.Sequential`
still fails this way; when it starts passing, this module can go.
"""

import contextlib

import keras


def active(model):
    """True when `model` trains under a `MultiWorkerMirroredStrategy` with
    more than one worker (Keras's own test, written with public API: more
    replicas in sync than devices on this worker)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = model.distribute_strategy
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


class MultiWorkerTraining:
    """Mixin for `keras.Model` subclasses: `fit`, `evaluate` and monitored
    training under a multi-worker `MultiWorkerMirroredStrategy` (see the
    module docstring). Listed before the Keras class in the bases."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # keras-team/keras#20585: Keras reduces the distributed batch eagerly,
        # which fails under the collective strategy; build from the first
        # replica's part instead (same shape as the reduced batch).
        if iterator is not None and active(self):
            data_batch, iterator = _first_local_batch(iterator, self), None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_train_function(self, force=False):
        with _replica_axis(self, "train_step", self.train_function, force):
            return super().make_train_function(force=force)

    def make_test_function(self, force=False):
        with _replica_axis(self, "test_step", self.test_function, force):
            return super().make_test_function(force=force)


def _first_local_batch(epoch_iterator, model):
    import tensorflow as tf

    local = model.distribute_strategy.experimental_local_results
    for _, _, iterator in epoch_iterator:
        batch = next(iterator)
        break
    return keras.tree.map_structure(
        lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v,
        batch,
    )


@contextlib.contextmanager
def _replica_axis(model, name, function, force):
    """While Keras wraps `model.<name>` into a function: under multi-worker,
    that step (Keras's, or one set on the instance, as `MonitoredTraining`
    does) with a leading axis of length 1 on each output."""
    if not active(model) or (function is not None and not force):
        yield
        return
    own = model.__dict__.get(name)  # a step set on the instance, else None
    step = getattr(model, name)

    # keras-team/keras#20585: Keras reduces the step's outputs across workers
    # with strategy.reduce("MEAN", v, axis=0), which fails on scalars; over a
    # leading axis of 1 it is the mean over replicas, as on one machine.
    def step_with_replica_axis(data):
        return keras.tree.map_structure(
            lambda v: None if v is None else keras.ops.expand_dims(v, 0), step(data)
        )

    setattr(model, name, step_with_replica_axis)
    try:
        yield
    finally:
        if own is None:
            delattr(model, name)
        else:
            setattr(model, name, own)
