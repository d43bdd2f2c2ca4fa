"""Which recurrent layers a model holds, and which of them the monitor
sees through time (backend-neutral)."""

import keras

from keras_seq.layers import SharedRNN
from keras_seq.models.walk import nested_layers

_CELLS = (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)


def recurrent_layers(model):
    """Every recurrent layer reachable from `model`, depth first: Keras's
    `RNN` layers (including keras_seq's `SharedRNN`) and the two directions
    of each `Bidirectional`, each once."""
    return [layer for layer in nested_layers(model, stop=_is_rnn) if _is_rnn(layer)]


def _is_rnn(layer):
    return isinstance(layer, keras.layers.RNN)


def probeable(layer):
    """Whether `keras_rnn.probing` gives `layer` per-step data (a Keras RNN
    layer with a SimpleRNN, GRU or LSTM cell and plain tensor inputs)."""
    return (
        isinstance(layer, keras.layers.RNN)
        and not isinstance(layer, SharedRNN)  # has its own probes
        and isinstance(layer.cell, _CELLS)
    )


def has_timestep_data(layer):
    """Whether the monitor records per-step data for `layer`: a
    `keras_seq.layers.SharedRNN` (its own probes) or a `probeable` one."""
    return isinstance(layer, SharedRNN) or probeable(layer)
