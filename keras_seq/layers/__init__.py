"""Recurrent layers: the Elman cell and the fast layer with explicit BPTT."""

from keras_seq.layers.shared_rnn import SharedRNN
from keras_seq.layers.shared_rnn_cell import SharedRNNCell

__all__ = ["SharedRNN", "SharedRNNCell"]
