"""Where a backup meets the training functions and the callbacks that keep
state of their own, whatever order the user lists the callbacks in.

`keras_seq.callbacks.BackupAndRestore` restores a model at a batch inside
an epoch; Keras's `fit` can only start an epoch from its first batch. The
batches of that epoch the backup already holds are *passed over*: the
training function that Keras calls for them reads each batch from the
iterator and drops it, updating nothing (the logs are the model's metrics,
as after a step), so the epoch goes on at the first batch the backup does
not hold, in the order an uninterrupted run would have trained it. Both
training functions a fit can run check this: the one the backup wraps
around Keras's (`passing_over`) and the monitored ones of
`MonitoredTraining`, which `GradientMonitor` selects per batch.

Callbacks whose state must agree with the backup (the monitor's journal
and step numbers) register a *committer*: before each backup,
`Resumption.commit()` calls them all (each makes its state durable and
returns it as JSON-able data) and the backup saves what they return in the
same unit as the weights; after a restore, `Resumption.restored` holds it
for them, by name.
"""

import weakref

import keras


class Resumption:
    """One model's meeting point (see the module docstring).

    Attributes:
        pass_over: batches still to pass over (read and drop) before the
            next one is trained.
        restored: `{name: state}` the committers saved in the backup that
            was restored for this fit; empty when none was.
    """

    def __init__(self):
        self.pass_over = 0
        self.restored = {}
        self._committers = {}

    def register(self, name, commit):
        """Call `commit()` (returning JSON-able data) before every backup
        and save its result under `name`."""
        self._committers[name] = commit

    def unregister(self, name):
        self._committers.pop(name, None)

    def commit(self):
        """Make every registered state durable; `{name: state}`."""
        return {name: commit() for name, commit in self._committers.items()}


_BY_MODEL = {}  # id(model) -> (weakref to the model, Resumption)


def of(model):
    """The model's `Resumption` (made on first use, dropped with the model)."""
    key = id(model)
    entry = _BY_MODEL.get(key)
    if entry is None or entry[0]() is not model:
        entry = (weakref.ref(model, lambda _: _BY_MODEL.pop(key, None)), Resumption())
        _BY_MODEL[key] = entry
    return entry[1]


def pending(model):
    """True while batches of a restored epoch are still to pass over."""
    entry = _BY_MODEL.get(id(model))
    return entry is not None and entry[1].pass_over > 0


def pass_over(model, iterator, state=None):
    """Read and drop the next execution's batches (`steps_per_execution` of
    them, or fewer when fewer are pending) instead of training them; return
    what Keras's training function returns: the metrics' results, and on
    JAX (`state`: the step's input) `(results, state)` unchanged."""
    resumption = of(model)
    count = min(resumption.pass_over, model.steps_per_execution)
    for _ in range(count):
        next(iterator)  # StopIteration at the end of the data: Keras's signal
        resumption.pass_over -= 1
    if state is None:
        return model.get_metrics_result()
    # JAX: `fit` holds the metric variables empty; their values are state.
    mapping = list(zip(model.metrics_variables, state[3]))
    with keras.StatelessScope(state_mapping=mapping):
        return model.get_metrics_result(), state


def passing_over(model, function):
    """`function` (a Keras training function: `function(iterator)` on
    TensorFlow, `function(state, iterator)` on JAX) that first passes over
    the pending batches; `function` itself when it already does."""
    if getattr(function, "passes_over", False):
        return function

    def train_function(*args):
        if pending(model):
            state = args[0] if len(args) == 2 else None
            return pass_over(model, args[-1], state)
        return function(*args)

    train_function.passes_over = True
    return train_function
