"""MirroredStrategy over two logical CPU devices gives the statistics of one
device (run in a fresh process: devices are fixed when TensorFlow starts)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("mirrored_worker.py")


def _run_worker(flag):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(WORKER), flag],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def result():
    return _run_worker("--nan")


@pytest.fixture(scope="module")
def clipped():
    return _run_worker("--clip")


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_clipping_across_replicas_reports_what_was_applied(clipped, clip):
    # Keras clips each replica's gradient before summing them; the monitor
    # must describe that sum (read here off the SGD update, lr=1).
    values = clipped[clip]
    assert values["monitor"] < values["unclipped"]  # clipping was active
    np.testing.assert_allclose(values["monitor"], values["actual"], rtol=1e-4)
    np.testing.assert_allclose(
        values["contributions"], values["recurrent_kernel"], rtol=1e-4
    )


def test_two_replicas_ran(result):
    assert result["replicas"] == 2


@pytest.mark.parametrize(
    "column",
    [
        "loss",
        "global_norm",
        "applied_norm",
        "norm/rnn",
        "norm/simple",
        "norm/head",
        "horizon/rnn/level_1",
    ],
)
def test_step_statistics_equal_one_device(result, column):
    one, two = result["one"]["frame"], result["two"]["frame"]
    assert one["step"] == two["step"] == [0, 1, 2]
    np.testing.assert_allclose(two[column], one[column], rtol=1e-5)


@pytest.mark.parametrize("column", ["grad_norm", "contribution"])
def test_timestep_statistics_equal_one_device(result, column):
    one, two = result["one"]["timesteps"], result["two"]["timesteps"]
    assert one["layer"] == two["layer"] and one["timestep"] == two["timestep"]
    a, b = np.array(two[column], float), np.array(one[column], float)
    finite = np.isfinite(b)
    # Two finite steps x three sublayers (SharedRNN depth 2, Keras's
    # SimpleRNN) x T.
    assert set(one["layer"]) == {"rnn/level_0", "rnn/level_1", "simple/level_0"}
    assert finite.sum() == 2 * 3 * 7
    np.testing.assert_allclose(
        a[finite], b[finite], rtol=1e-5, atol=1e-6 * np.abs(b[finite]).max()
    )


def test_nan_skip_works_across_replicas(result):
    for name in ("one", "two"):
        assert result[name]["skipped"] == 1
        assert result[name]["nonfinite"] == {
            "step": 1,
            "layer": "rnn/level_0",
            "timestep": 2,
            "count": 1,
        }
        assert result[name]["frame"]["finite"] == [True, False, True]
    for a, b in zip(result["one"]["weights"], result["two"]["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(np.array(a)))
