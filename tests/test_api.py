"""The public API: what each package exports, and the backend check."""

import inspect
import subprocess
import sys

import pytest

import keras_seq
import keras_seq.cli


@pytest.mark.parametrize(
    "module",
    [
        keras_seq,
        keras_seq.layers,
        keras_seq.models,
        keras_seq.constraints,
        keras_seq.initializers,
        keras_seq.data,
        keras_seq.callbacks,
        keras_seq.diagnostics,
        keras_seq.depth,
        keras_seq.monitoring,
        keras_seq.runs,
        keras_seq.cli,
    ],
    ids=lambda m: m.__name__,
)
def test_all_lists_exactly_the_public_names(module):
    # Every public non-module name is exported; submodules only when listed.
    public = {
        name
        for name in dir(module)
        if not name.startswith("_") and not inspect.ismodule(getattr(module, name))
    }
    listed_modules = {
        name for name in module.__all__ if inspect.ismodule(getattr(module, name))
    }
    dunders = {name for name in module.__all__ if name.startswith("__")}
    assert set(module.__all__) == public | listed_modules | dunders


def test_version():
    from keras_seq.version import __version__

    assert keras_seq.__version__ == __version__
    assert __version__.count(".") == 2


def test_refuses_other_backends():
    # Pretend Keras runs on torch (not installed here) and import keras_seq.
    code = "import keras; keras.backend.backend = lambda: 'torch'; import keras_seq"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "runs on the TensorFlow and JAX backends" in result.stderr
    assert "'torch'" in result.stderr
    assert "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax" in result.stderr
