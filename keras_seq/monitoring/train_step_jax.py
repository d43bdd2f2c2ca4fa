"""The monitored training step on JAX: Keras's functional step, with the
monitor's statistics, guard and counters as inputs and outputs.

Keras's JAX trainer trains with `train_function(state, iterator)`, a pure
step jitted over `(trainable, non_trainable, optimizer, metrics)` values.
This step takes one more input and gives three more outputs:

- in and out: `monitor = (counters, peak)`, the counters of
  `guard.COUNTERS` and the peak global norm since the last read, device
  arrays that `MonitoredTraining` keeps between steps (read on the host at
  recorded steps and epoch ends only);
- out: the recorded step's statistics (`statistics.compute`, as on
  TensorFlow), or an empty dict on a light step; and the optimizer's
  iteration count after the step (the monitor reads it with the counters;
  Keras holds the model's variables empty during `fit` on JAX).

The recording step differentiates the loss with respect to the weights and
to every recurrent sublayer's zero probes in one pass
(`keras_seq.layers.probes_jax`). The guard keeps the old weights and
optimizer state with a select where the step must not update: exactly the
values it had, and no host round trip.
"""

import jax
import jax.numpy as jnp
import keras

from keras_seq.layers import probes_jax
from keras_seq.monitoring import guard, keras_rnn
from keras_seq.monitoring import statistics as in_graph
from keras_seq.monitoring.guard import COUNTERS

_STOPPED = COUNTERS.index("stopped")


def monitored_step(training, state, data, monitor, record):
    """One training step of `training.model`, as Keras's JAX `train_step`
    (see the module docstring).

    Returns:
        `(logs, state, monitor, statistics, iterations)`.
    """
    model = training.model
    settings = training.settings
    optimizer = model.optimizer
    trainable, non_trainable, optimizer_values, metrics_values = state
    counters, peak = monitor
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def loss_fn(trainable):
        return model.compute_loss_and_updates(
            trainable,
            non_trainable,
            metrics_values,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_values,
        )

    if record:
        run = probes_jax.value_and_grad(loss_fn, settings.contributions)
        with keras_rnn.probing(model, True):
            (_, aux, records), (grads, probe_grads) = run(trainable)
        flat_probe_grads = [g for pair in probe_grads for g in pair]
    else:
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    loss, y_pred, non_trainable, metrics_values = aux

    optimizer_state = list(zip(optimizer.variables, optimizer_values))
    statistics = {}
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if record:
        training.sublayers = tuple(
            in_graph.SublayerInfo(p.name, p.layer.go_backwards) for p in records
        )
        # The loss scale is optimizer state: read it from this step's values.
        with keras.StatelessScope(state_mapping=optimizer_state):
            statistics = in_graph.compute(
                model, settings, loss, grads, flat_probe_grads, records
            )
        finite = statistics["finite"] > 0
        peak = guard.raised_peak(peak, finite, statistics["global_norm"])
    elif not loss_scaling:
        squares = sum(guard.squared_sums(grads))
        finite = jnp.isfinite(squares)
        peak = guard.raised_peak(peak, finite, jnp.sqrt(squares))
    held = counters[_STOPPED] > 0 if settings.hold else jnp.asarray(False)
    loss_finite = None
    if loss_scaling:
        loss_finite = jnp.isfinite(jnp.asarray(loss, "float32"))
        if not record:
            finite = guard.all_finite(guard.squared_sums(grads))
    bad, overflow, condition = guard.decide(settings, finite, loss_finite, held)
    if trainable:  # Keras's step applies nothing to a frozen model
        new_trainable, new_optimizer = optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        if condition is not None:
            new_trainable = _select(condition, new_trainable, trainable)
            new_optimizer = _select(condition, new_optimizer, optimizer_values)
        trainable, optimizer_values = new_trainable, new_optimizer
    counters = guard.counted(counters, bad & ~held, overflow, held, settings.hold)
    if statistics:
        statistics["held"] = jnp.asarray(held, "float32")
    logs, metrics_values = _update_metrics(
        model, metrics_values, loss, x, y, y_pred, sample_weight
    )
    state = (trainable, non_trainable, optimizer_values, metrics_values)
    iterations = _iterations(optimizer, optimizer_values)
    return logs, state, (counters, peak), statistics, iterations


def _select(condition, new, old):
    return [jnp.where(condition, n, o) for n, o in zip(new, old)]


def _iterations(optimizer, values):
    for variable, value in zip(optimizer.variables, values):
        if variable is optimizer.iterations:
            return value
    return jnp.asarray(0)


def _update_metrics(model, metrics_values, loss, x, y, y_pred, sample_weight):
    """The metrics' new values and logs, as Keras's JAX step updates them:
    the loss tracker with the batch's loss (weighted by the batch size),
    then `compute_metrics`."""
    mapping = list(zip(model.metrics_variables, metrics_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        tracker = next((m for m in model.metrics if m.name == "loss"), None)
        if tracker is not None:
            batch = next(i for i in keras.tree.flatten(x) if i is not None)
            tracker.update_state(loss, sample_weight=batch.shape[0])
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    values = []
    for variable, old in zip(model.metrics_variables, metrics_values):
        new = scope.get_current_value(variable)
        values.append(old if new is None else new)
    return logs, values


def make_step(training, record):
    """The step as `step(state, data, monitor)`, jitted unless the model
    runs eagerly (`run_eagerly=True` or `jit_compile=False`), with the
    state's buffers donated as Keras's own train function does."""
    model = training.model

    def step(state, data, monitor):
        return monitored_step(training, state, data, monitor, record)

    if not model.run_eagerly and model.jit_compile:
        step = jax.jit(step, donate_argnums=0)
    return step
