"""Which Keras backends keras-seq runs on: TensorFlow and JAX, each with
all of keras-seq (the layers, callbacks, monitoring, depth helper, data
utilities, recipes and the `keras-seq` command); JAX without TensorFlow
installed. Importing keras-seq on another backend, or on one that is not
installed, raises an ImportError naming what to do.
"""

import os

SUPPORTED = ("tensorflow", "jax")
_INSTALL = "`pip install keras-seq[tensorflow]` or `pip install keras-seq[jax]`"

try:
    import keras
except ModuleNotFoundError as error:  # Keras's backend is not installed
    if error.name not in SUPPORTED:
        raise
    _setting = os.environ.get("KERAS_BACKEND")
    raise ImportError(
        f"keras_seq: Keras is set to the {error.name!r} backend "
        + (
            f"(KERAS_BACKEND={_setting!r})"
            if _setting
            else "(its default: KERAS_BACKEND is unset; or ~/.keras/keras.json)"
        )
        + f", which is not installed. Install one with {_INSTALL} and set "
        "KERAS_BACKEND to match (e.g. KERAS_BACKEND=jax)."
    ) from error


def check_supported():
    """Raises ImportError unless Keras runs on a backend keras-seq supports."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED:
        raise ImportError(
            "keras_seq runs on the TensorFlow and JAX backends of Keras 3, but "
            f"Keras is running on {backend!r}. Set the environment variable "
            "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before importing "
            f'keras (or "backend" in ~/.keras/keras.json), with {_INSTALL}.'
        )
