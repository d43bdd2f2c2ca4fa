"""The monitored training step and its owner, which any Keras model can host.

`GradientMonitor` drives a `MonitoredTraining`; use them directly only to
build another callback on the same statistics.

The parts shared by both backends are written in `keras.ops` (`guard`,
`statistics`, `resumption`); the step itself is `train_step` on TensorFlow
and `train_step_jax` on JAX.
"""

import keras

from keras_seq.monitoring import guard, keras_rnn, resumption  # noqa: F401
from keras_seq.monitoring.monitored_training import (
    MonitoredTraining,
    MonitorSettings,
    check_model,
    device_variable,
    writes_summaries,
)

if keras.backend.backend() == "tensorflow":
    from keras_seq.monitoring import train_step  # noqa: F401
else:
    from keras_seq.monitoring import train_step_jax  # noqa: F401

__all__ = [
    "MonitorSettings",
    "MonitoredTraining",
    "check_model",
    "device_variable",
    "writes_summaries",
]
