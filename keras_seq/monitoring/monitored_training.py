import dataclasses

import keras
import numpy as np

from keras_seq.monitoring import resumption
from keras_seq.monitoring.statistics import STATISTICS_KEY

_JAX = keras.backend.backend() == "jax"
if _JAX:
    from keras_seq.monitoring import train_step_jax
else:
    import tensorflow as tf

    from keras_seq.monitoring import train_step

# Keras's own training step; a model class that replaces it is not supported.
_KERAS_TRAIN_STEP = keras.Model.train_step
# id(model) -> the MonitoredTraining installed on it (one at a time).
_INSTALLED = {}


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """What the monitored training step must do (read at trace time).

    Attributes:
        counters: a `tf.Variable` (int64) on TensorFlow, a `keras.Variable`
            (int32) on JAX, one value per name in
            `keras_seq.monitoring.guard.COUNTERS`, updated in the graph on
            every step.
        guard: skip non-finite updates in the graph.
        hold: after a non-finite step, withhold every later update until
            the counters are reset (`on_nan="stop"`: the host reads them at
            recorded steps and epoch ends only).
        histograms: return the applied gradients on recorded steps.
        contributions: project each time step's recurrent-kernel gradient on
            the applied gradient.
        peak: optional float32 variable (as `counters`), the largest finite global
            gradient norm of any step since the monitor last reset it (not
            tracked under a LossScaleOptimizer).
    """

    counters: object
    guard: bool
    histograms: bool
    contributions: bool
    peak: object = None
    hold: bool = False


def device_variable(model, value):
    """A non-trainable variable holding `value` (an int64 or float32 numpy
    value) where the model's training step runs: a `tf.Variable` under the
    model's strategy on TensorFlow (read from the first replica), a
    `keras.Variable` on JAX (int32: JAX runs without 64-bit types), whose
    value `MonitoredTraining` carries through each step."""
    value = np.asarray(value)
    if _JAX:
        dtype = "int32" if value.dtype.kind == "i" else "float32"
        return keras.Variable(value.astype(dtype), dtype=dtype, trainable=False)
    with model.distribute_strategy.scope():
        return tf.Variable(
            value,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )


def writes_summaries(model):
    """Whether this process writes the monitor's files: the chief under a
    multi-worker `tf.distribute` strategy, process 0 of a multi-process JAX
    run, always otherwise."""
    if _JAX:
        import jax

        return jax.process_index() == 0
    return bool(model.distribute_strategy.extended.should_save_summary)


def check_model(model):
    """Raise a TypeError unless `model` can host monitored training: a Keras
    model (Sequential, functional or subclassed) that trains with Keras's own
    `train_step`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "GradientMonitor must be attached to a keras.Model (Sequential, "
            f"functional or subclassed). Received: {type(model).__name__}"
        )
    overridden = type(model).train_step is not _KERAS_TRAIN_STEP
    if overridden:
        raise TypeError(
            "GradientMonitor records gradients inside Keras's own training "
            f"step, but {type(model).__module__}.{type(model).__name__} "
            "overrides `train_step`. Supported: keras.Sequential, functional "
            "keras.Model, keras_seq.Sequential/Model and subclassed models that "
            "keep Keras's `train_step` (override `call`, and `compute_loss` for "
            "a custom loss). Move the custom logic into `compute_loss`, or "
            "train without the monitor."
        )


class MonitoredTraining:
    """The one owner of a model's monitored training functions and of the
    statistics they return.

    A `keras_seq.callbacks.GradientMonitor` creates one per model it is
    attached to and drives it: `install()` when training begins (after
    Keras has built its own function), `select(record)` before each batch,
    `statistics` after it, `uninstall()` when training ends. The model is any
    Keras model that keeps Keras's `train_step`; it carries none of this
    state. Data flows one way: the layers' probes -> the step's in-graph
    statistics -> `statistics` -> the callback.

    The two functions (recording and light, see
    `keras_seq.monitoring.train_step`) are built with Keras's own
    `make_train_function`, so distribution strategies, `steps_per_execution`,
    `jit_compile` and `run_eagerly` behave as in Keras. Under a multi-worker
    `MultiWorkerMirroredStrategy` that call is where `keras_seq.Sequential`
    and `keras_seq.Model` apply their workaround for keras-team/keras#20585
    (`keras_seq._multiworker`) to these functions too; a plain Keras model
    fails there in Keras's `fit` before any callback runs. They are traced once
    and reused by later `fit` calls while the optimizer, the metrics and
    `steps_per_execution` stay the same (a `compile` makes new ones).

    Args:
        model: a `keras.Model` (see `check_model`).
        settings: a `MonitorSettings`.
        on_execution: optional callable, called after each execution of the
            training function (`steps_per_execution` steps) with the
            recorded step's statistics, or None after light steps: where a
            callback reads what it needs without a batch-end hook (which
            would make Keras wait for every batch on backends that dispatch
            them asynchronously).

    Attributes:
        statistics: the last recorded step's statistics (a dict of numpy-
            convertible tensors), or None after a light step.
        sublayers: `SublayerInfo` of every recurrent sublayer the recording
            step saw (set when it is traced).
        layer_names: the top-level layer owning each trainable variable.
        variable_names: each trainable variable's path.
    """

    def __init__(self, model, settings, on_execution=None):
        check_model(model)
        self.model = model
        self.settings = settings
        self.on_execution = on_execution
        self.statistics = None
        self.sublayers = ()
        self.layer_names, self.variable_names = (), ()
        self._functions = None
        self._key = None
        self._keras_function = None
        self._installed = False
        self._selected = False  # the monitor chose this batch's function
        self._iterations = None  # JAX: the optimizer's count after a step

    def install(self):
        """Make the model train with the monitored functions (light first)."""
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            # Variables cannot be created inside the guard's tf.cond.
            model.optimizer.build(model.trainable_variables)
        self.layer_names, self.variable_names = _layer_map(model)
        # The traced steps capture the settings, the optimizer and the metric
        # objects: reuse them while all are the same.
        key = (
            id(model.optimizer),
            tuple(id(m) for m in model.metrics),
            model.steps_per_execution,
            model.jit_compile,
            model.run_eagerly,
        )
        if self._functions is None or key != self._key:
            self._functions = self._build()
            self._key = key
        other = _INSTALLED.get(id(model))
        if other is not None and other is not self:
            # Two monitors in one fit would each wrap the other's function.
            other.uninstall()
            raise ValueError(
                "Argument `callbacks` holds two GradientMonitor instances for "
                f"one model ({model.name!r}). One monitor records everything "
                "(pass one; several log_dir's need separate fits)."
            )
        if not self._installed:
            self._keras_function = model.train_function
            self._installed = True
            _INSTALLED[id(model)] = self
        self.statistics = None
        self._selected = False
        self._iterations = None
        model.train_function = self._functions[False]

    def __enter__(self):
        """`with training:` installs, and gives Keras's function back on any
        exit (an exception, Ctrl-C) of the block."""
        self.install()
        return self

    def __exit__(self, *exc_info):
        self.uninstall()
        return False

    def select(self, record):
        """Train the next batch with the recording (True) or light step."""
        self._selected = True
        self.model.train_function = self._functions[bool(record)]

    def uninstall(self):
        """Give the model back the training function Keras built."""
        if self._installed:
            self.model.train_function = self._keras_function
            self._keras_function = None
            self._installed = False
            if _INSTALLED.get(id(self.model)) is self:
                del _INSTALLED[id(self.model)]

    def iterations(self):
        """The optimizer's count of applied updates (0 without an
        optimizer): on JAX, where `fit` holds the model's variables empty
        between epochs, the count the last step returned."""
        if self._iterations is not None:
            return int(self._iterations)
        optimizer = getattr(self.model, "optimizer", None)
        return (
            0
            if optimizer is None
            else int(keras.ops.convert_to_numpy(optimizer.iterations))
        )

    def _build(self):
        if _JAX:
            return {
                record: self._jax_function(train_step_jax.make_step(self, record))
                for record in (False, True)
            }
        model = self.model
        keras_function = model.train_function
        functions = {}
        try:
            for record in (False, True):
                # Keras's make_train_function wraps `self.train_step` (looked
                # up on the instance) exactly as it wraps its own.
                model.train_step = _step(self, record)
                try:
                    model.make_train_function(force=True)
                finally:
                    del model.train_step
                functions[record] = self._strip_statistics(model.train_function)
        finally:
            model.train_function = keras_function
        return functions

    def _strip_statistics(self, function):
        def train_function(iterator):
            if not self._selected:
                # Called with no monitor choosing it: a fit the monitor is
                # not part of, after an earlier monitored fit ended with an
                # exception or Ctrl-C (Keras's fit has no try/finally, so
                # on_train_end never ran, and make_train_function keeps an
                # existing function). Give Keras its own function back.
                keras_function = self._keras_function
                self.uninstall()
                return keras_function(iterator)
            self._selected = False
            if resumption.pending(self.model):
                # A batch a restored backup holds already: not trained,
                # not counted, not recorded (see keras_seq.monitoring
                # .resumption).
                return resumption.pass_over(self.model, iterator)
            try:
                logs = dict(function(iterator))
            except (StopIteration, tf.errors.OutOfRangeError):
                raise  # the end of the data: Keras's fit goes on
            except BaseException:
                # Ctrl-C or an error in the step ends the fit without
                # on_train_end: Keras gets its function back now.
                self.uninstall()
                raise
            self.statistics = logs.pop(STATISTICS_KEY, None)
            if self.on_execution is not None:
                # Python only on a light step: nothing read from the device.
                self.on_execution(self.statistics)
            return logs

        return train_function

    def _jax_function(self, step):
        """Keras's JAX `train_function(state, iterator)` around `step` (see
        `keras_seq.monitoring.train_step_jax`): `steps_per_execution` steps,
        the monitor's counters and peak carried from step to step on the
        device, the last step's statistics kept."""
        model = self.model
        settings = self.settings

        def train_function(state, iterator):
            if not self._selected:
                keras_function = self._keras_function
                self.uninstall()
                return keras_function(state, iterator)
            self._selected = False
            if resumption.pending(model):
                return resumption.pass_over(model, iterator, state)
            monitor = (settings.counters.value, settings.peak.value)
            statistics = None
            try:
                for index in range(model.steps_per_execution):
                    try:
                        data = next(iterator)
                    except StopIteration:
                        if index == 0:
                            raise
                        break
                    logs, state, monitor, statistics, iterations = step(
                        state, data, monitor
                    )
            except StopIteration:
                raise
            except BaseException:
                self.uninstall()
                raise
            settings.counters.assign(monitor[0])
            settings.peak.assign(monitor[1])
            self._iterations = iterations
            self.statistics = statistics or None
            if self.on_execution is not None:
                self.on_execution(self.statistics)
            return logs, state

        return train_function


def _step(training, record):
    def step(data):
        return train_step.monitored_step(training, data, record)

    return step


def _layer_map(model):
    """Top-level layer name and variable path of every trainable variable."""
    owner = {}
    for layer in model.layers:
        for variable in layer.trainable_variables:
            owner.setdefault(id(variable), layer.name)
    variables = model.trainable_variables
    return (
        tuple(owner.get(id(v), "(model)") for v in variables),
        tuple(v.path for v in variables),
    )
