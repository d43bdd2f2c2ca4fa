"""Keras callbacks: gradient monitoring through time, and state resets for
truncated backpropagation through time."""

from keras_seq.callbacks.gradient_monitor import GradientMonitor
from keras_seq.callbacks.reset_states import ResetStates

__all__ = ["GradientMonitor", "ResetStates"]
