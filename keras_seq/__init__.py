"""keras-seq: parameter-shared recurrent layers with explicit BPTT, and
gradient-through-time monitoring, for Keras 3 on TensorFlow."""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_seq needs the TensorFlow backend of Keras 3, but Keras is "
        f"running on {_keras.backend.backend()!r}. Set the environment "
        "variable KERAS_BACKEND=tensorflow before importing keras (or set "
        '"backend": "tensorflow" in ~/.keras/keras.json).'
    )

from keras_seq import (  # noqa: E402
    callbacks,
    constraints,
    data,
    depth,
    diagnostics,
    initializers,
    layers,
    models,
    monitoring,
)
from keras_seq.models import Model, Sequential  # noqa: E402
from keras_seq.version import __version__  # noqa: E402

__all__ = [
    "Model",
    "Sequential",
    "__version__",
    "callbacks",
    "constraints",
    "data",
    "depth",
    "diagnostics",
    "initializers",
    "layers",
    "models",
    "monitoring",
]
