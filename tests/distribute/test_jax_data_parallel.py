"""SharedRNN and the GradientMonitor under Keras's distribution API on JAX:
a monitored `fit` with `DataParallel` over two CPU devices gives the
weights and the statistics one device gives (runs in the JAX process of
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
y[9] = np.nan  # one batch the monitor skips

def model():
    keras.utils.set_random_seed(1)
    built = keras.Sequential([
        keras.Input((9, 3)),
        keras.layers.Masking(),
        keras_seq.layers.SharedRNN(5, depth=2, recompute=4, return_sequences=True),
        keras.layers.LSTM(3),
        keras.layers.Dense(2),
    ])
    built.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return built

def fit(built):
    monitor = keras_seq.callbacks.GradientMonitor(every=2, on_nan="skip")
    built.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
              callbacks=[monitor])
    return monitor

def frames(monitor):
    rows = monitor.to_frame().select_dtypes("number").to_numpy(float)
    steps = monitor.timestep_frame()
    return rows, steps[["grad_norm", "cell_grad_norm", "contribution"]].to_numpy(float)

single = model()
alone = fit(single)
keras.distribution.set_distribution(keras.distribution.DataParallel())
parallel = model()
together = fit(parallel)
layout = parallel.layers[1].weights[0].value.sharding
stats = 0.0
for a, b in zip(frames(together), frames(alone)):
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b))
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    # Per column, relative to the column's scale.
    scale = np.maximum(np.abs(b).max(axis=0), 1e-30)
    stats = max(stats, float(np.max(np.abs(a - b).max(axis=0) / scale)))
assert alone.skipped_steps == together.skipped_steps == 3, alone.skipped_steps
moved = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(single.get_weights(), model().get_weights())
)
error = max(
    float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
    for a, b in zip(parallel.get_weights(), single.get_weights())
)
print(f"RESULT {error} {moved} {len(layout.device_set)} {stats}")
"""


def test_monitored_data_parallel_on_two_devices_gives_one_devices_numbers():
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
    error, moved, devices, statistics = lines[-1].split()[1:]
    assert float(moved) > 1e-2  # training moved the weights
    assert int(devices) == 2  # the weights live on both devices
    assert float(error) <= 1e-5
    assert float(statistics) <= 1e-5
