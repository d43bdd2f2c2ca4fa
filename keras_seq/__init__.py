"""keras-seq: parameter-shared recurrent layers with explicit BPTT, and
gradient-through-time monitoring, for Keras 3 on TensorFlow and JAX."""

import importlib as _importlib
import sys as _sys

from keras_seq._command import started_by_command as _started_by_command
from keras_seq.version import __version__

# Subpackages in import order.
_MODULES = (
    "callbacks",
    "constraints",
    "data",
    "depth",
    "diagnostics",
    "initializers",
    "layers",
    "models",
    "monitoring",
    "runs",
)

# Modules that import neither Keras nor TensorFlow.
_WITHOUT_KERAS = ("runs",)

__all__ = ["Model", "Sequential", "__version__", *_MODULES]

_loading = False


def _load():
    """Imports Keras (checking its backend) and every subpackage, which
    registers keras-seq's classes for `keras.models.load_model`."""
    global _loading
    from keras_seq import _backend

    _backend.check_supported()
    _loading = True
    try:
        for name in _MODULES:
            globals()[name] = _importlib.import_module(f"keras_seq.{name}")
    finally:
        _loading = False
    from keras_seq.models import Model, Sequential

    globals().update(Model=Model, Sequential=Sequential)


if _started_by_command() and "keras" not in _sys.modules:

    def __getattr__(name):
        # While `_load` runs, a subpackage's `from keras_seq import x` must
        # fall through to the ordinary submodule import.
        if name not in __all__ or _loading:
            raise AttributeError(f"module 'keras_seq' has no attribute {name!r}")
        if name in _WITHOUT_KERAS:
            return _importlib.import_module(f"keras_seq.{name}")
        _load()
        return globals()[name]

    def __dir__():
        return sorted(set(globals()) | set(__all__))

else:
    _load()
