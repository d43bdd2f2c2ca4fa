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
import typing
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_seq.layers import probes
from keras_seq.monitoring import keras_rnn

STATISTICS_KEY = "_keras_seq_gradient_statistics"

# The int64 counters every step updates in the graph, by index: steps run,
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
_STOPPED = COUNTERS.index("stopped")


class SublayerInfo(typing.NamedTuple):
    """Static description of one recurrent sublayer seen by the step."""

    name: str
    reverse: bool  # processing order is the reverse of input order


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
        statistics = _statistics(
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
        squares = tf.add_n(_sum_replicas(_sums(weight_grads)))
        finite = tf.math.is_finite(squares)
        _track_peak(settings.peak, finite, tf.sqrt(squares))
    overflow = tf.constant(False)
    # Under `hold` a non-finite step withholds every later update of the
    # fit: the host, which reads the counters only at recorded steps and
    # epoch ends, stops the fit there with the last good step's weights.
    held = settings.counters[_STOPPED] > 0 if settings.hold else tf.constant(False)
    if loss_scaling:
        # Non-finite scaled gradients are routine overflows that the
        # LossScaleOptimizer skips itself; only a non-finite loss is news.
        # Its skips are counted apart, so the report can name them.
        bad = ~tf.math.is_finite(_sum_replicas(tf.cast(loss, tf.float32)))
        weight_grads = _nonfinite_everywhere(weight_grads)
        if not record:
            finite = _finite(_sum_replicas(_sums(weight_grads)))
        overflow = ~finite & ~bad & ~held
        condition = ~held if settings.hold else None
    else:
        bad = ~finite
        condition = finite & ~held if settings.guard else None
    if variables:  # Keras's step applies nothing to a frozen model
        if condition is None:
            model.optimizer.apply(weight_grads, variables)
        else:
            _apply_if(condition, model.optimizer, weight_grads, variables)
    _count(settings.counters, bad, overflow, held & ~bad, settings.hold)
    if statistics:
        statistics["held"] = tf.cast(held, tf.float32)
    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    if statistics:
        logs[STATISTICS_KEY] = statistics
    return logs


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


def _end_aligned(dh, mask):
    """Per-step squared norms of dL/dh over the valid steps only, each
    sequence's valid steps packed against the end (its last valid step at
    index T-1, the one before at T-2, ...), summed over the batch.

    Padded steps carry no gradient in the lower sublayers (nothing above
    reads them) but do in the top one, and a batch padded to T counts
    "steps back" from the wrong place; this makes the padded batch look
    exactly like its unpadded twin.

    Args:
        dh: `(T, B, U)` float32, processing order.
        mask: `(T, B, 1)` bool, processing order, or None (all valid).

    Returns:
        `(aligned_sq, aligned_count, valid_count)`, each `(T,)` float32:
        the summed squares, how many sequences reach each aligned position,
        and how many are valid at each (unaligned) step.
    """
    sq = tf.reduce_sum(tf.square(dh), axis=2)  # (T, B)
    steps, batch = tf.shape(sq)[0], tf.shape(sq)[1]
    if mask is None:
        count = tf.fill([steps], tf.cast(batch, tf.float32))
        return tf.reduce_sum(sq, axis=1), count, count
    valid = tf.cast(mask[:, :, 0], tf.int32)
    rank = tf.cumsum(valid, axis=0)  # 1..n_b at valid steps
    position = steps - rank[-1:] + rank - 1
    position = tf.where(valid > 0, position, steps)  # padding -> dropped slot
    segments = tf.reshape(position, [-1])
    valid = tf.cast(valid, tf.float32)
    aligned_sq = tf.math.unsorted_segment_sum(
        tf.reshape(sq * valid, [-1]), segments, steps + 1
    )[:steps]
    aligned_count = tf.math.unsorted_segment_sum(
        tf.reshape(valid, [-1]), segments, steps + 1
    )[:steps]
    return aligned_sq, aligned_count, tf.reduce_sum(valid, axis=1)


def _track_peak(peak, finite, global_norm):
    """The largest finite global norm since the monitor last read (and
    reset) `peak`: an explosion between two recorded steps shows there."""
    if peak is None:
        return
    norm = tf.cast(global_norm, tf.float32)
    peak.assign(tf.where(finite, tf.maximum(peak, norm), peak))


def _sum_replicas(values):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _nonfinite_everywhere(grads):
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


def _dense(grad, variable):
    if grad is None:
        return tf.zeros_like(variable)
    if isinstance(grad, tf.IndexedSlices):
        return tf.convert_to_tensor(grad)
    return grad


def _sums(grads):
    # Sums of squares, not of values: a gradient whose squared norm
    # overflows float32 (an element above ~1.8e19) is as fatal as an Inf
    # (Adam's second moment becomes Inf, then Inf - Inf = NaN; clipnorm's
    # norm is Inf), so the guard treats it as non-finite.
    return [tf.constant(0.0)] + [
        tf.reduce_sum(tf.square(tf.cast(_values(g), tf.float32)))
        for g in grads
        if g is not None
    ]


def _finite(sums):
    # A sum of squares is finite iff every element is finite and none
    # overflows when squared: one reduction per gradient.
    return tf.math.is_finite(tf.add_n(sums))


def _count(counters, bad, overflow, held, hold):
    """Update `counters` (see `COUNTERS`) after one step."""
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


def _loss_scale(optimizer):
    """The factor `optimizer.scale_loss` multiplied the loss by."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return tf.constant(float(optimizer.loss_scale_factor or 1.0))


def _norms(grads):
    """The norm of each gradient, `(len(grads),)` (empty for no weights)."""
    if not grads:
        return tf.zeros([0])
    return tf.stack([tf.norm(g) for g in grads])


def _values(grad):
    return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def _apply_if(finite, optimizer, grads, variables):
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


def _clip_scales(optimizer, grads):
    """What the optimizer's clipping does to `grads` (one replica's: Keras
    clips before summing replicas): per-variable factors for clipnorm and
    global_clipnorm, "value" for clipvalue (not a scaling), None for none."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if optimizer.clipnorm and optimizer.clipnorm > 0:
        clip = optimizer.clipnorm
        return [clip / tf.maximum(tf.norm(g), clip) for g in grads]
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        clip = optimizer.global_clipnorm
        norm = tf.norm(_norms(grads))
        return [clip / tf.maximum(norm, clip)] * len(grads)
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        return "value"
    return None


def _statistics(model, settings, loss, weight_grads, probe_grads, sublayer_probes):
    variables = model.trainable_variables
    optimizer = model.optimizer
    unscale = 1.0 / _loss_scale(optimizer)

    def local(gradient):
        return tf.cast(gradient, tf.float32) * unscale

    weight_local = [local(_dense(g, v)) for g, v in zip(weight_grads, variables)]
    per_probe, start = [], 0
    for probe in sublayer_probes:
        count = len(probe.sources)
        per_probe.append([local(g) for g in probe_grads[start : start + count]])
        start += count
    dh = [grads[0] for grads in per_probe]
    scales = _clip_scales(optimizer, weight_local)
    if scales == "value":
        clip = optimizer.clipvalue
        applied_local = [tf.clip_by_value(g, -clip, clip) for g in weight_local]
    elif scales is not None:
        applied_local = [g * s for g, s in zip(weight_local, scales)]
    # Per-step sums: a non-finite element makes its step's sum non-finite.
    summed = _sum_replicas(
        {
            "loss": tf.cast(loss, tf.float32),
            "grads": weight_local,
            "applied": applied_local if scales is not None else [],
            "dh_sq": [tf.reduce_sum(tf.square(g), axis=[1, 2]) for g in dh],
            # dL/dc_t of an LSTM's carry; NaN for cells without one.
            "dc_sq": [
                tf.fill(tf.shape(g[0])[:1], float("nan"))
                if p.cell_index is None
                else tf.reduce_sum(tf.square(g[p.cell_index]), axis=[1, 2])
                for g, p in zip(per_probe, sublayer_probes)
            ],
            # Per-sample norms aligned at each sequence's last valid step.
            "aligned": [_end_aligned(g, p.mask) for g, p in zip(dh, sublayer_probes)],
            "sequences": [tf.cast(tf.shape(g)[1], tf.float32) for g in dh],
            "h_sum": [
                tf.reduce_sum(tf.cast(p.outputs, tf.float32), axis=[1, 2])
                for p in sublayer_probes
            ],
        }
    )
    grads = summed["grads"]
    variable_norms = _norms(grads)
    global_norm = tf.norm(variable_norms)
    finite = _finite(_sums(grads))
    applied = summed["applied"] or grads
    applied_norm = tf.norm(_norms(applied)) if scales is not None else global_norm

    projections = []
    if settings.contributions and sublayer_probes:
        # Each step's contribution to the applied recurrent-kernel gradient G,
        # projected on G's direction: over steps (and over the sublayers that
        # share the kernel) they add up to ||G||. clipvalue is no scaling:
        # there they add up to the unclipped gradient's norm.
        target = grads if scales == "value" else applied
        factors = scales if isinstance(scales, list) else [1.0] * len(grads)
        index = {id(v): i for i, v in enumerate(variables)}
        for probe, grads in zip(sublayer_probes, per_probe):
            k = index.get(id(probe.recurrent_kernel))
            if k is None:  # frozen kernel, or none to probe
                projections.append(tf.fill(tf.shape(grads[0])[:1], float("nan")))
                continue
            direction = target[k] / tf.maximum(tf.norm(target[k]), 1e-30)
            projections.append(factors[k] * probe.contribution(grads, direction))
        projections = _sum_replicas(projections)

    sublayers = {}
    for i, probe in enumerate(sublayer_probes):
        grad_norm = tf.sqrt(summed["dh_sq"][i])
        values = {
            "grad_norm": grad_norm,
            "cell_grad_norm": tf.sqrt(summed["dc_sq"][i]),
            "contribution": projections[i]
            if projections
            else tf.fill(tf.shape(grad_norm), float("nan")),
            "grad_finite": tf.cast(tf.math.is_finite(grad_norm), tf.float32),
            "forward_finite": tf.cast(
                tf.math.is_finite(summed["h_sum"][i]), tf.float32
            ),
        }
        aligned_sq, aligned_count, valid_count = summed["aligned"][i]
        values["valid_fraction"] = valid_count / summed["sequences"][i]
        if probe.layer.go_backwards:  # report in input order
            values = {k: tf.reverse(v, [0]) for k, v in values.items()}
        # Processing order, index -1 = every sequence's own last valid step.
        values["aligned_norm"] = tf.sqrt(aligned_sq)
        values["aligned_count"] = aligned_count
        sublayers[probe.name] = values
    statistics = {
        "loss": summed["loss"],
        "finite": tf.cast(finite, tf.float32),
        "global_norm": global_norm,
        "applied_norm": applied_norm,
        "variable_norms": variable_norms,
        "sublayers": sublayers,
    }
    if settings.histograms:
        # A dict, not a list: Keras would try to stack a list into one tensor.
        statistics["gradients"] = {f"{i:05d}": g for i, g in enumerate(applied)}
    return statistics
