"""The kill storm: train with storm_worker.py, SIGKILL it at random
instants, start it again with the same command until it finishes, and
compare what it ends with against an uninterrupted run of the same command.

Used by test_backup_and_restore.py (3 kills) and benchmarks/kill_storm.py
(50 kills).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

WORKER = pathlib.Path(__file__).with_name("storm_worker.py")
TAG = "gradients/global_norm"
_RESTART_LIMIT = 10  # failed starts in a row before the storm gives up


def _command(workdir, mode):
    return [sys.executable, str(WORKER), str(workdir), mode]


def _environment():
    return dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND="tensorflow",
        PYTHONWARNINGS="ignore",
    )


def _started(workdir, pid):
    return (workdir / f"training.{pid}").exists()


def uninterrupted(workdir, mode=""):
    """Run the worker once to the end; its results."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.run(
        _command(workdir, mode),
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    if process.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{process.stderr[-3000:]}")
    return results(workdir)


def storm(workdir, kills, reference, rng, mode=""):
    """Kill the worker `kills` times, restarting it with the same command
    each time and once more to let it finish. Most kills land at a random
    instant of a random step still to train (the harness watches the
    backup's pointer reach an update count drawn from those left, then
    waits a random part of a step: in the step, the monitor's journal
    write, the backup's write or between); one in five lands in the first
    second of training (the restore, the tracing). Returns the kills that
    landed (the process was still running), the restarts that failed, their
    errors, and a log of (update count aimed at, return code at the kill)."""
    workdir.mkdir(parents=True, exist_ok=True)
    landed = failed = in_a_row = 0
    failures = []
    log = []
    while not (workdir / "out.json").exists():
        process = subprocess.Popen(
            _command(workdir, mode),
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if landed < kills:
            while process.poll() is None and not _started(workdir, process.pid):
                time.sleep(0.005)
            if rng.random() < 0.2:
                target = None
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                # Spread what is left over the kills still to come.
                done = _updates(workdir)
                span = 2 * (reference["iterations"] - done) // (kills - landed)
                target = done + int(rng.integers(0, max(1, span)))
                while process.poll() is None and _updates(workdir) < target:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, reference["seconds_per_step"]))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                landed += 1
            log.append((target, process.poll()))
        _, stderr = process.communicate(timeout=600)
        if process.returncode not in (0, -signal.SIGKILL):
            failed += 1
            in_a_row += 1
            failures.append(stderr[-3000:])
            print(
                f"restart failed ({process.returncode}):",
                stderr[-3000:],
                file=sys.stderr,
            )
            if in_a_row >= _RESTART_LIMIT:
                break
        else:
            in_a_row = 0
    return {
        "kills": landed,
        "restarts_failed": failed,
        "failures": failures,
        "log": log,
    }


def _updates(workdir):
    """Updates the backup on disk holds (0 before the first)."""
    try:
        text = (workdir / "backup" / "latest.json").read_text()
    except FileNotFoundError:
        return 0
    return json.loads(text)["iterations"]


def results(workdir):
    """What a finished worker wrote, and TensorBoard's view of its run."""
    out = json.loads((workdir / "out.json").read_text())
    with np.load(workdir / "weights.npz") as weights:
        out["weights"] = [weights[k] for k in sorted(weights, key=_index)]
    # TensorBoard's own reader, purging orphaned data (its default).
    accumulator = plugin_event_accumulator.EventAccumulator(
        str(workdir / "logs" / "gradients"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    points = accumulator.Tensors(TAG)
    out["tensorboard_steps"] = [p.step for p in points]
    out["tensorboard_values"] = [
        float(tensor_util.make_ndarray(p.tensor_proto)) for p in points
    ]
    return out


def _index(name):
    return int(name.split("_")[-1])


def compare(reference, stormed):
    """The storm's figures against the uninterrupted run's."""
    expected = set(reference["steps"])
    got = stormed["steps"]
    lost = expected - set(got)
    return {
        "steps_lost": len(lost),
        "steps_lost_without_a_word": len(lost - set(stormed["lost_steps"])),
        "steps_doubled": len(got) - len(set(got)),
        "steps_beyond_plan": stormed["iterations"]
        + stormed["skipped_steps"]
        - stormed["planned"],
        "weights_equal": all(
            np.array_equal(a, b)
            for a, b in zip(reference["weights"], stormed["weights"])
        ),
        "records_equal": reference["steps"] == got
        and np.array_equal(
            np.asarray(reference["global_norm"]),
            np.asarray(stormed["global_norm"]),
            equal_nan=True,
        ),
        "timestep_rows_equal": reference["timestep_keys"] == stormed["timestep_keys"]
        and np.array_equal(
            np.asarray(reference["grad_norm"]),
            np.asarray(stormed["grad_norm"]),
            equal_nan=True,
        ),
        "tensorboard_equal": reference["tensorboard_steps"]
        == stormed["tensorboard_steps"]
        and reference["tensorboard_values"] == stormed["tensorboard_values"],
    }
