"""The monitored training step, hosted by any Keras model.

Without a `GradientMonitor` a model trains with Keras's own step. With one,
`MonitoredTraining` builds two functions from this step with Keras's
`make_train_function`, and the monitor picks one per batch:

- the *recording* step opens a `ProbeRecorder` around the forward pass (the
  `SharedRNN` layers and, through `keras_rnn.probing`, Keras's own
  SimpleRNN/GRU/LSTM add zero probes to every h_t), asks
  the tape for the weight gradients and the probe gradients in one call, and
  computes every statistic in the graph from the gradient the optimizer
  receives (summed across replicas, loss scaling undone, clipping applied as
  the optimizer will);
- the *light* step is Keras's step, plus an all-finite guard when the monitor
  must skip or stop on NaN/Inf.

Statistics leave the function in the logs under `STATISTICS_KEY`; a wrapper
pops them before Keras sees the logs, so neither the progress bar nor
`History` shows them.
"""

import contextlib
import inspect
import warnings

import keras
import tensorflow as tf

from keras_seq.layers import probes
from keras_seq.monitoring import guard, guard_tf, keras_rnn
from keras_seq.monitoring import statistics as in_graph
from keras_seq.monitoring.guard import COUNTERS
from keras_seq.monitoring.statistics import STATISTICS_KEY, SublayerInfo

_STOPPED = COUNTERS.index("stopped")


def monitored_step(training, data, record):
    """One training step of `training.model` on `data`, as Keras's own step,
    recording gradient statistics when `record` (see the module docstring).

    Args:
        training: the `keras_seq.monitoring.MonitoredTraining` that owns the
            step: its `settings` are read (at trace time) and its `sublayers`
            set when the recording step is traced.
        data: the batch, as Keras passes it to `train_step`.
        record: Python bool.
    """
    model = training.model
    settings = training.settings
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        recording = (
            probes.recording(tape, settings.contributions)
            if record
            else contextlib.nullcontext()
        )
        with recording as recorder, keras_rnn.probing(model, record):
            y_pred = model(x, training=True)
        loss = _compute_loss(model, x, y, y_pred, sample_weight)
        _update_loss_metric(model, loss, x)
        scaled_loss = model.optimizer.scale_loss(loss)
    if not variables:
        # As Keras's step: nothing to update (frozen model), a warning at
        # trace time; the step still counts, and records dL/dh_t.
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
    sources = list(variables)
    if record:
        for probe in recorder.probes:
            sources += probe.sources
    grads = tape.gradient(scaled_loss, sources)
    weight_grads = grads[: len(variables)]

    statistics = {}
    loss_scaling = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if record:
        training.sublayers = tuple(
            SublayerInfo(p.name, p.layer.go_backwards) for p in recorder.probes
        )
        statistics = in_graph.compute(
            model,
            settings,
            loss,
            weight_grads,
            grads[len(variables) :],
            recorder.probes,
        )
        finite = statistics["finite"] > 0
        _track_peak(settings.peak, finite, statistics["global_norm"])
    elif not loss_scaling:
        squares = tf.add_n(guard.sum_replicas(guard.squared_sums(weight_grads)))
        finite = tf.math.is_finite(squares)
        _track_peak(settings.peak, finite, tf.sqrt(squares))
    # Under `hold` a non-finite step withholds every later update of the
    # fit: the host, which reads the counters only at recorded steps and
    # epoch ends, stops the fit there with the last good step's weights.
    held = settings.counters[_STOPPED] > 0 if settings.hold else tf.constant(False)
    loss_finite = None
    if loss_scaling:
        loss_finite = tf.math.is_finite(guard.sum_replicas(tf.cast(loss, tf.float32)))
        weight_grads = guard_tf.nonfinite_everywhere(weight_grads)
        if not record:
            finite = guard.all_finite(
                guard.sum_replicas(guard.squared_sums(weight_grads))
            )
    bad, overflow, condition = guard.decide(settings, finite, loss_finite, held)
    if variables:  # Keras's step applies nothing to a frozen model
        if condition is None:
            model.optimizer.apply(weight_grads, variables)
        else:
            guard_tf.apply_if(condition, model.optimizer, weight_grads, variables)
    # A held step is no new non-finite event, whatever its gradient.
    counters = settings.counters
    counters.assign(guard.counted(counters, bad & ~held, overflow, held, settings.hold))
    if statistics:
        statistics["held"] = tf.cast(held, tf.float32)
    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    if statistics:
        logs[STATISTICS_KEY] = statistics
    return logs


def _track_peak(peak, finite, global_norm):
    if peak is not None:
        peak.assign(guard.raised_peak(peak, finite, global_norm))


def _compute_loss(model, x, y, y_pred, sample_weight):
    """`model.compute_loss` as Keras's step calls it: with `training=True`
    when the method takes it (an override written for Keras 3.0-3.3 may
    not)."""
    kwargs = {}
    if "training" in inspect.signature(model.compute_loss).parameters:
        kwargs["training"] = True
    return model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, **kwargs
    )


def _update_loss_metric(model, loss, x):
    # As Keras's own train_step: the metric shows the loss of the global
    # batch. Keras lists its loss tracker first among `model.metrics`.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    batch_size = tf.shape(next(i for i in tf.nest.flatten(x) if i is not None))[0]
    tracker = next((m for m in model.metrics if m.name == "loss"), None)
    if tracker is not None:
        tracker.update_state(loss * replicas, sample_weight=batch_size)
