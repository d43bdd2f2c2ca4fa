"""SharedRNN under Keras's distribution API on JAX: `DataParallel` over two
CPU devices gives the weights one device gives (runs in the JAX process of
the README's test command; TensorFlow's strategies have their own tests)."""

import os
import subprocess
import sys

import keras
import pytest

# Not from conftest: tests/recipes/conftest.py takes that module name
# before the root-level modules are collected.
BACKEND = keras.backend.backend()

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX's distribution API")

SCRIPT = r"""
import numpy as np, keras, jax, keras_seq
assert len(jax.devices()) == 2, jax.devices()
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 9, 3)).astype("float32")
mask = np.ones((16, 9), bool)
mask[::3, 6:] = False
x[~mask] = 0.0
y = rng.standard_normal((16, 2)).astype("float32")

def model():
    keras.utils.set_random_seed(1)
    built = keras.Sequential([
        keras.Input((9, 3)),
        keras.layers.Masking(),
        keras_seq.layers.SharedRNN(5, depth=2, recompute=4),
        keras.layers.Dense(2),
    ])
    built.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return built

single = model()
single.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
keras.distribution.set_distribution(keras.distribution.DataParallel())
parallel = model()
parallel.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
layout = parallel.layers[1].weights[0].value.sharding
moved = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(single.get_weights(), model().get_weights())
)
error = max(
    float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
    for a, b in zip(parallel.get_weights(), single.get_weights())
)
print(f"RESULT {error} {moved} {len(layout.device_set)}")
"""


def test_data_parallel_on_two_devices_gives_one_devices_weights():
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    error, moved, devices = lines[-1].split()[1:]
    assert float(moved) > 1e-2  # training moved the weights
    assert int(devices) == 2  # the weights live on both devices
    assert float(error) <= 1e-5
