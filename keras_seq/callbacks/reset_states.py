import keras

from keras_seq.data.truncated_bptt import TruncatedBPTT
from keras_seq.models.walk import nested_layers


class ResetStates(keras.callbacks.Callback):
    """Zeroes a model's stateful recurrent layers where a sequence group of
    a `keras_seq.data.TruncatedBPTT` begins: before the first chunk of every
    group in training, and in validation (`validation_data` with its own
    `TruncatedBPTT`) before validation and before each of its groups, so
    training state never leaks into validation or back.

    Every layer with `stateful=True` and a `reset_state()` method is reset
    (`SharedRNN` and Keras's `SimpleRNN`/`GRU`/`LSTM`/`RNN`, also inside a
    `Bidirectional`, a nested model or a subclassed layer).

    It also tells `data` which epoch begins, so that a shuffled
    `TruncatedBPTT` yields that epoch's group order.

    Args:
        data: the training `keras_seq.data.TruncatedBPTT` (`fit` gets its
            `.dataset`).
        validation_data: optional `TruncatedBPTT` whose `.dataset` is
            `fit`'s `validation_data` (without it, states are only reset as
            validation begins).

    Raises:
        TypeError: `data`/`validation_data` is not a `TruncatedBPTT`.
        ValueError (at the start of `fit`): the model has no stateful
            recurrent layer, `steps_per_epoch` is not one pass over `data`,
            the model runs several steps per call (`steps_per_execution >
            1`, which would carry states across a group boundary inside one
            call), or, on JAX, a stateful layer's states are not among the
            model's variables (Keras 3.15's own `SimpleRNN`/`GRU`/`LSTM`:
            the JAX trainer would not carry them; `SharedRNN` lists them).
    """

    def __init__(self, data, validation_data=None):
        super().__init__()
        for name, value in (("data", data), ("validation_data", validation_data)):
            if value is not None and not isinstance(value, TruncatedBPTT):
                raise TypeError(
                    f"Argument `{name}` must be a keras_seq.data.TruncatedBPTT"
                    f"{' or None' if name != 'data' else ''}. Received: "
                    f"{name} of type {type(value).__name__}"
                )
        if data is None:
            raise TypeError(
                "Argument `data` must be a keras_seq.data.TruncatedBPTT. "
                "Received: data=None"
            )
        self.data = data
        self.validation_data = validation_data
        self._layers = []
        self._boundaries = self._validation_boundaries = frozenset()

    def on_train_begin(self, logs=None):
        self._layers = stateful_layers(self.model)
        if not self._layers:
            raise ValueError(
                "ResetStates needs a model with a stateful recurrent layer "
                "(stateful=True and a static batch size, e.g. keras.Input("
                "(None, features), batch_size=...)). Received: a model "
                "without one"
            )
        if self.model.steps_per_execution > 1:
            raise ValueError(
                "ResetStates resets states between batches, so it needs "
                "`steps_per_execution=1` in `compile`. Received: "
                f"steps_per_execution={self.model.steps_per_execution}"
            )
        self._check_carried()
        steps = (self.params or {}).get("steps")
        if steps is not None and steps != len(self.data):
            raise ValueError(
                "ResetStates expects each epoch to be one pass over the "
                f"TruncatedBPTT data ({len(self.data)} batches). Received: "
                f"steps_per_epoch={steps}"
            )
        self._boundaries = frozenset()
        self._reset()

    def _check_carried(self):
        untracked = _untracked_states(self.model, self._layers)
        if untracked:
            raise ValueError(
                "On the JAX backend, `fit` and `evaluate` carry only the "
                "states that are among the model's variables, and Keras "
                "3.15's RNN layers create theirs untracked, so these layers "
                "would start every "
                f"batch from the same states: {untracked}. Use "
                "keras_seq.layers.SharedRNN (a drop-in for SimpleRNN, which "
                "lists its states) or the TensorFlow backend for truncated "
                "BPTT with Keras's GRU/LSTM. Received: KERAS_BACKEND="
                f"{keras.backend.backend()!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        # Before the epoch's iterator starts: the data's generator then
        # yields this epoch's group order, whose boundaries are these.
        self.data.set_epoch(epoch)
        self._boundaries = self.data.boundaries(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if batch in self._boundaries:
            self._reset()

    def on_test_begin(self, logs=None):
        # Validation starts from zero states; training resumes from zero
        # too, since every epoch begins with a group.
        if not self._layers:  # evaluate() alone: no on_train_begin
            self._layers = stateful_layers(self.model)
        self._check_carried()
        self._validation_boundaries = frozenset()
        if self.validation_data is not None:
            self.validation_data.set_epoch(0)
            self._validation_boundaries = self.validation_data.boundaries(0)
        self._reset()

    def on_test_batch_begin(self, batch, logs=None):
        if batch in self._validation_boundaries:
            self._reset()

    def _reset(self):
        # On JAX, Keras's `Callback.model` first writes the trainer's
        # in-flight state into the variables and marks it for re-reading
        # before the next step, so the zeroed states reach that step.
        self.model  # noqa: B018 (read for the JAX state sync)
        for layer in self._layers:
            layer.reset_state()


def _untracked_states(model, layers):
    """Names of the `layers` whose states the JAX trainer would not carry
    (not among `model.non_trainable_variables`); none on other backends,
    whose steps assign the variables themselves."""
    if keras.backend.backend() != "jax":
        return []
    held = {id(v) for v in model.non_trainable_variables}
    names = []
    for layer in layers:
        for sublayer in nested_layers(layer):
            states = getattr(sublayer, "states", None)
            if getattr(sublayer, "stateful", False) and states is not None:
                if any(id(v) not in held for v in keras.tree.flatten(states)):
                    names.append(f"{sublayer.name} ({type(sublayer).__name__})")
    return names


def stateful_layers(model):
    """Every layer of `model` (nested models, wrappers and the layers of
    subclassed layers included) with `stateful=True` and a `reset_state()`
    method, outermost first: a stateful `Bidirectional` is listed, not its
    two directions, since it resets them itself."""

    def resettable(layer):
        return (
            layer is not model
            and getattr(layer, "stateful", False)
            and hasattr(layer, "reset_state")
        )

    return [
        layer for layer in nested_layers(model, stop=resettable) if resettable(layer)
    ]
