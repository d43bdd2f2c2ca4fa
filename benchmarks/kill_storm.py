"""The kill storm at scale (issue 18): the README's crash recipe killed with
SIGKILL many times at random instants and restarted with the same command
until it finishes, against an uninterrupted run of the same command.

The worker and the harness are the test suite's (tests/callbacks/
storm_worker.py and storm.py, which the default suite runs with 3 kills): a
`keras.Sequential` with `SharedRNN(6, depth=2)`,
2 epochs of 8 batches (`shuffle=False`), one NaN batch per epoch skipped by
`GradientMonitor(log_dir, every=2, on_nan="skip")`, and
`keras_seq.callbacks.BackupAndRestore(save_freq=1)` (a backup every step, to
widen the window); here 4 epochs of 20 batches (80 steps) instead of the
suite's 2 of 8. Most kills land at a random instant of a random step
still to train (in the step, the journal write, the backup write, between);
one in five in the first second of training (the restore, the tracing).

Also the cost of one backup, keras_seq's against Keras's `BackupAndRestore`
on the same model in the same process (median of 15, interleaved).

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
import os
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


def backup_cost(repeats=15):
    """Seconds per backup (median), keras_seq's against Keras's
    `BackupAndRestore`, on the storm's model (with its optimizer state), in
    this process, interleaved: each repeat backs up once with each."""
    import keras

    import keras_seq

    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            keras_seq.layers.SharedRNN(6, depth=2),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 12, 3)), np.zeros((8, 1)), verbose=0)
    times = {"keras_seq": [], "keras": []}
    with tempfile.TemporaryDirectory(prefix="backup_cost_") as directory:
        callbacks = {
            "keras_seq": keras_seq.callbacks.BackupAndRestore(
                pathlib.Path(directory) / "ours", save_freq=1
            ),
            "keras": keras.callbacks.BackupAndRestore(
                pathlib.Path(directory) / "keras", save_freq=1
            ),
        }
        for callback in callbacks.values():
            callback.set_model(model)
            callback.set_params({"epochs": 1, "steps": 10_000, "verbose": 0})
            callback.on_train_begin()
            callback.on_epoch_begin(0)
        for batch in range(repeats + 2):
            for name, callback in callbacks.items():
                began = time.perf_counter()
                callback.on_train_batch_end(batch)
                if batch >= 2:  # warm-up
                    times[name].append(time.perf_counter() - began)
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--plant", type=int, default=10, help="kills, planted bug")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # 4 epochs of 20 batches: 80 steps (the trial size).
    os.environ["STORM_EPOCHS"], os.environ["STORM_SAMPLES"] = "4", "160"
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
    cost = backup_cost()
    print()
    print("| backup (save_freq=1, storm model) | median ms per backup |")
    print("|---|---|")
    for name, seconds in cost.items():
        print(f"| {name} BackupAndRestore | {seconds * 1000:.0f} |")
    print(f"| ratio keras_seq / keras | {cost['keras_seq'] / cost['keras']:.2f}x |")
    print(json.dumps(details, indent=1)[:4000], file=sys.stderr)


if __name__ == "__main__":
    main()
