"""Initializers for recurrent kernels."""

from keras_seq.initializers.identity import Identity

__all__ = ["Identity"]
