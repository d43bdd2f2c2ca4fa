"""Keras callbacks: gradient monitoring through time, state resets for
truncated backpropagation through time, and backups that resume at the
batch."""

from keras_seq.callbacks.backup_and_restore import BackupAndRestore
from keras_seq.callbacks.gradient_monitor import GradientMonitor
from keras_seq.callbacks.reset_states import ResetStates

__all__ = ["BackupAndRestore", "GradientMonitor", "ResetStates"]
