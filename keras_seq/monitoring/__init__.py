"""The monitored training step and its owner, which any Keras model can host.

`GradientMonitor` drives a `MonitoredTraining`; use them directly only to
build another callback on the same statistics.
"""

from keras_seq import _backend

_backend.require_tensorflow("keras_seq.monitoring")

from keras_seq.monitoring import keras_rnn, resumption, train_step  # noqa: F401
from keras_seq.monitoring.monitored_training import (
    MonitoredTraining,
    MonitorSettings,
    check_model,
)

__all__ = ["MonitorSettings", "MonitoredTraining", "check_model"]
