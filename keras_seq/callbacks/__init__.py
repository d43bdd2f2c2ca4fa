"""Keras callbacks: gradient monitoring through time."""

from keras_seq.callbacks.gradient_monitor import GradientMonitor

__all__ = ["GradientMonitor"]
