"""The kill storm at scale (issue 18): the README's crash recipe killed with
SIGKILL many times at random instants and restarted with the same command
until it finishes, against an uninterrupted run of the same command.

The worker and the harness are the test suite's (tests/callbacks/
storm_worker.py and storm.py, which the default suite runs with 3 kills): a
`keras_seq.Sequential`-free `keras.Sequential` with `SharedRNN(6, depth=2)`,
2 epochs of 8 batches (`shuffle=False`), one NaN batch per epoch skipped by
`GradientMonitor(log_dir, every=2, on_nan="skip")`, and
`keras_seq.callbacks.BackupAndRestore(save_freq=1)` (a backup every step, to
widen the window). Most kills land at a random instant of a random step
still to train (in the step, the journal write, the backup write, between);
one in five in the first second of training (the restore, the tracing).

Rows: kills that landed / tried, restarts that failed, steps lost without a
word, steps doubled, steps trained beyond the plan, and whether the final
weights, the monitor's records, its per-time-step rows and TensorBoard's
view equal the uninterrupted run's. `--plant` runs the same storm with a
planted bug (the journal commits each record after the backups of the
steps that follow it) and must show lost steps.

    python benchmarks/kill_storm.py [--kills 50] [--plant 10] [--seed 0]

Takes about 15 s per kill on the 2-core machine (TensorFlow's import and
the tracing dominate each restart).
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

_STORM = pathlib.Path(__file__).parents[1] / "tests" / "callbacks" / "storm.py"


def _load_storm():
    spec = importlib.util.spec_from_file_location("storm", _STORM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name, kills, counts, figures, seconds):
    return (
        f"| {name} | {counts['kills']} / {kills} | {counts['restarts_failed']} "
        f"| {figures['steps_lost']} | {figures['steps_doubled']} "
        f"| {figures['steps_beyond_plan']} | {_yes(figures['weights_equal'])} "
        f"| {_yes(figures['records_equal'])} "
        f"| {_yes(figures['timestep_rows_equal'])} "
        f"| {_yes(figures['tensorboard_equal'])} | {seconds:.0f} |"
    )


def _yes(value):
    return "equal" if value else "DIFFERENT"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--plant", type=int, default=10, help="kills, planted bug")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    storm = _load_storm()
    rng = np.random.default_rng(args.seed)
    rows, details = [], {}
    with tempfile.TemporaryDirectory(prefix="kill_storm_") as directory:
        directory = pathlib.Path(directory)
        reference = storm.uninterrupted(directory / "uninterrupted")
        for name, mode, kills in (
            ("keras_seq BackupAndRestore", "", args.kills),
            ("planted: journal after backup", "late_journal", args.plant),
        ):
            if kills <= 0:
                continue
            began = time.monotonic()
            workdir = directory / (mode or "storm")
            counts = storm.storm(workdir, kills, reference, rng, mode)
            figures = storm.compare(reference, storm.results(workdir))
            rows.append(_row(name, kills, counts, figures, time.monotonic() - began))
            details[name] = {"log": counts["log"], "failures": counts["failures"]}
    print(
        "| run | kills landed / tried | restarts failed | steps lost without "
        "a word | steps doubled | steps beyond plan | final weights | records "
        "| per-time-step rows | TensorBoard | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(json.dumps(details, indent=1)[:4000], file=sys.stderr)


if __name__ == "__main__":
    main()
