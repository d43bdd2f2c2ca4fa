import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# The test modules that run on the JAX backend too (the README's test command
# runs them in a second pytest process with KERAS_BACKEND=jax, in a venv
# without TensorFlow); every other module needs TensorFlow.
BACKEND_NEUTRAL = {
    "callbacks/test_backup_and_restore.py",
    "callbacks/test_gradient_monitor_backends.py",
    "callbacks/test_gradient_monitor_resume.py",
    "constraints/test_spectral_norm.py",
    "data/test_idioms.py",
    "data/test_truncated_bptt.py",
    "depth/test_fit_reducing_depth.py",
    "depth/test_reduce_depth.py",
    "depth/test_suggest_depth.py",
    "diagnostics/test_depth.py",
    "diagnostics/test_verdicts.py",
    "distribute/test_jax_data_parallel.py",
    "layers/test_backends.py",
    "layers/test_probes_jax.py",
    "layers/test_shared_rnn_cell.py",
    "layers/test_shared_rnn_errors.py",
    "layers/test_shared_rnn_serialization.py",
    "recipes/test_every_recipe.py",
    "recipes/test_next_word.py",
    "recipes/test_timeseries.py",
    "test_backend_errors.py",
    "test_cli.py",
}


def pytest_ignore_collect(collection_path, config):
    if BACKEND == "tensorflow" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    relative = collection_path.relative_to(pathlib.Path(__file__).parent)
    return relative.as_posix() not in BACKEND_NEUTRAL


def assert_close(actual, expected, tol=1e-5):
    """max |actual - expected| <= tol * max |expected| (relative to scale)."""
    actual = np.asarray(keras.ops.convert_to_numpy(actual), dtype=np.float64)
    expected = np.asarray(keras.ops.convert_to_numpy(expected), dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected)), 1e-30)
    error = np.max(np.abs(actual - expected))
    assert error <= tol * scale, f"max error {error:.3g} > {tol:g} * {scale:.3g}"


_finished_tests = [0]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    # Python's full garbage collection only every 25th test: late in the
    # suite one took ~1.5 s (the process holds every traced graph), which
    # after every test was over half the suite's time; never collecting let
    # garbage pile up and made the automatic collections slower still.
    _finished_tests[0] += 1
    keras.utils.clear_session(free_memory=_finished_tests[0] % 25 == 0)


@pytest.fixture
def sequences():
    """A small float batch: (batch=3, timesteps=6, features=4)."""
    return np.random.RandomState(0).randn(3, 6, 4).astype("float32")


@pytest.fixture
def padded_mask():
    """Mask with trailing, leading and inner padding, one row fully valid."""
    return np.array(
        [
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=bool,
    )


@pytest.fixture
def tiny_model():
    """The shared tiny keras_seq model: SharedRNN(depth=2) -> Dense."""
    import keras_seq

    model = keras_seq.Sequential(
        [
            keras.Input((6, 4)),
            keras_seq.layers.SharedRNN(5, depth=2, name="rnn"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    return model
