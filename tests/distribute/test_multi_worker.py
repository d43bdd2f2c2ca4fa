"""Two worker processes on 127.0.0.1 train under
`tf.distribute.MultiWorkerMirroredStrategy` (keras-seq works around
keras-team/keras#20585, see keras_seq/_multiworker.py) and match one process
on the same global batches; only the chief writes files.

One pair of processes (multi_worker_worker.py) runs every case; each has its
own directory standing for its machine's disk.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("multi_worker_worker.py")
TIMEOUT = 300  # seconds for the pair, start to exit (~30 s on an idle machine)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports, task):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": task}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("multi_worker")
    ports = _free_ports(2)
    processes, logs = [], []
    try:
        for task in range(2):
            env = dict(
                os.environ,
                TF_CONFIG=_tf_config(ports, task),
                KERAS_BACKEND="tensorflow",
                TF_CPP_MIN_LOG_LEVEL="3",
            )
            # Output to files: a full pipe would block one worker and hang
            # the other in a collective.
            log = open(directory / f"worker{task}.log", "w")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(directory)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        deadline = time.monotonic() + TIMEOUT
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {TIMEOUT} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    for task, process in enumerate(processes):
        output = (directory / f"worker{task}.log").read_text()
        assert process.returncode == 0, f"worker {task}:\n{output[-4000:]}"
    results = [
        json.loads((directory / f"result-{task}.json").read_text()) for task in (0, 1)
    ]
    return directory, results


@pytest.fixture(scope="module")
def results(run):
    return run[1]


@pytest.fixture(scope="module")
def reference(results):
    return results[1]["reference"]


def test_two_workers_ran_one_chief(results):
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["chief"] for r in results] == [True, False]


@pytest.mark.parametrize("task", [0, 1])
@pytest.mark.parametrize(
    "fit, key",
    [(0, "loss"), (0, "val_loss"), (1, "loss")],
    ids=["arrays-loss", "arrays-val_loss", "sharded_dataset-loss"],
)
def test_losses_equal_one_process(results, reference, task, fit, key):
    got = results[task]["distributed"]["history"][fit][key]
    np.testing.assert_allclose(got, reference["history"][fit][key], rtol=1e-5)


@pytest.mark.parametrize("task", [0, 1])
@pytest.mark.parametrize(
    "column", ["loss", "global_norm", "applied_norm", "norm/rnn", "norm/head"]
)
def test_monitor_statistics_equal_one_process(results, reference, task, column):
    got, want = results[task]["distributed"]["frame"], reference["frame"]
    # Four steps of arrays, then four of the sharded dataset.
    assert got["step"] == want["step"] == list(range(8))
    assert got["fit"] == want["fit"] == [0] * 4 + [1] * 4
    np.testing.assert_allclose(got[column], want[column], rtol=1e-5)


@pytest.mark.parametrize("task", [0, 1])
def test_per_step_gradient_norms_equal_one_process(results, reference, task):
    # On the chief these rows went beyond the in-memory cap and were read
    # back from its journal; on the other worker from temporary parts: the
    # frame is complete on both.
    got, want = results[task]["distributed"]["timesteps"], reference["timesteps"]
    for key in ("step", "fit", "layer", "timestep"):
        assert got[key] == want[key]
    assert len(got["step"]) == 8 * 2 * 7  # steps x sublayers x time steps
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)


def test_only_the_chief_writes(run):
    directory = run[0]
    chief = directory / "worker0" / "logs"
    assert list((chief / "gradients").glob("events.out.tfevents.*"))
    # Its per-time-step rows beyond the cap are in its journal (one copy).
    assert list((chief / "gradients" / "state").glob("segment-*.arrows"))
    assert list((chief / "train").glob("events.out.tfevents.*"))
    other = directory / "worker1"
    written = [p for p in other.rglob("*")] if other.exists() else []
    assert written == [], f"the non-chief worker wrote {written}"


def test_keras_alone_still_fails_there(results):
    error = results[0]["keras_alone"]
    assert error is not None, (
        "A plain keras.Sequential now trains under MultiWorkerMirroredStrategy: "
        "Keras fixed keras-team/keras#20585. Remove the workaround "
        "(keras_seq/_multiworker.py and its use in keras_seq/models), then this "
        "test."
    )
    assert "PerReplica" in error, (
        "Keras fails differently under MultiWorkerMirroredStrategy now "
        "(keras-team/keras#20585 changed?); review keras_seq/_multiworker.py. "
        f"Error: {error}"
    )
