"""Which Keras backends keras-seq runs on, and what runs on each.

On TensorFlow everything does. On JAX (issue 19, in progress) the layers
(`SharedRNN`, `SharedRNNCell`), their constraints and initializers, the
built-in datasets, the diagnostics and `keras_seq.Model`/`Sequential` do;
the rest says so on import, naming what to do, instead of failing on a
missing TensorFlow.
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

# Parts that need TensorFlow for now: the import of each calls
# `require_tensorflow` with its name.
TENSORFLOW_ONLY = (
    "keras_seq.depth",
    "keras_seq.data.TruncatedBPTT",
)


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


def require_tensorflow(part):
    """Raises ImportError naming `part` when Keras is not on TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"`{part}` runs on the TensorFlow backend of Keras only in this "
            f"version of keras-seq; Keras is running on {backend!r}. On JAX, "
            "keras-seq has the layers (SharedRNN, SharedRNNCell), "
            "keras_seq.callbacks (GradientMonitor, BackupAndRestore, "
            "ResetStates), keras_seq.monitoring, keras_seq.constraints, "
            "keras_seq.initializers, keras_seq.data's datasets, "
            "keras_seq.diagnostics and keras_seq.Model/Sequential. "
            "For the rest, install `keras-seq[tensorflow]` and set "
            "KERAS_BACKEND=tensorflow."
        )
