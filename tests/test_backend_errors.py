"""Which backends keras-seq runs on, and the errors on the others (runs on
TensorFlow and on JAX)."""

import importlib
import subprocess
import sys

import keras
import pytest

import keras_seq
from keras_seq import _backend

# Not from conftest: tests/recipes/conftest.py takes that module name
# before the root-level modules are collected.
BACKEND = keras.backend.backend()


def test_an_unsupported_backend_is_named_with_the_supported_ones(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ImportError, match="'torch'") as error:
        _backend.check_supported()
    for named in ("KERAS_BACKEND=tensorflow", "KERAS_BACKEND=jax", "[jax]"):
        assert named in str(error.value)


@pytest.mark.parametrize(
    "part", ["callbacks", "data", "depth", "monitoring", "recipes", "runs"]
)
def test_every_part_loads_on_both_backends(part):
    module = importlib.import_module(f"keras_seq.{part}")
    assert part == "recipes" or module is getattr(keras_seq, part)
    assert not hasattr(_backend, "TENSORFLOW_ONLY")
    assert not hasattr(_backend, "require_tensorflow")


def test_truncated_bptt_and_the_depth_helper_load_on_both_backends():
    assert keras_seq.data.TruncatedBPTT.__name__ == "TruncatedBPTT"
    assert callable(keras_seq.depth.suggest_depth)
    assert callable(keras_seq.data.adding_problem)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX venv has no TensorFlow")
def test_jax_needs_no_tensorflow():
    """In a fresh process: keras_seq imports, builds and trains a SharedRNN
    model, and TensorFlow is neither installed nor imported."""
    code = (
        "import sys, numpy as np, keras, keras_seq\n"
        "m = keras_seq.Sequential([keras.Input((5, 3)),"
        " keras_seq.layers.SharedRNN(4, depth=2), keras.layers.Dense(1)])\n"
        "m.compile('adam', 'mse')\n"
        "monitor = keras_seq.callbacks.GradientMonitor(every=1)\n"
        "m.fit(np.ones((4, 5, 3)), np.ones((4, 1)), verbose=0,"
        " callbacks=[monitor])\n"
        "assert len(monitor.timestep_frame()) == 10\n"
        "keras_seq.depth.reduce_depth(m, depth=1)\n"
        "keras_seq.data.TruncatedBPTT(np.ones((2, 4, 3)), np.ones((2, 4, 1)), 2, 2)\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('tensorflow') is None\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX venv has no TensorFlow")
def test_a_backend_that_is_not_installed_names_the_extras():
    done = subprocess.run(
        [sys.executable, "-c", "import keras_seq"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"KERAS_BACKEND": "tensorflow", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: keras_seq: Keras is set to the 'tensorflow'")
    assert "keras-seq[tensorflow]" in last and "keras-seq[jax]" in last
