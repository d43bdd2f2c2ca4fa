"""Truncated BPTT over long sequences: peak training memory and time per
1,000 time steps against the total sequence length.

What it measures: a stateful `SharedRNN(64, depth=2, return_sequences=True)`
-> `Dense(1)` (batch 16, 8 features, MSE, Adam) trained with
`keras_seq.data.TruncatedBPTT(chunk_length=100)` and
`keras_seq.callbacks.ResetStates` for one epoch over one group of 16
sequences of total length 1,000 / 10,000 / 100,000; and, as the peer, the
same model (not stateful) with full BPTT over the whole sequence at 1,000
and 10,000 steps (100,000 would need ~3 GB per batch).

- time per 1,000 steps: the median over the epoch's batches after the first
  5 (warm-up: tracing), times 1,000 / steps per batch; full BPTT: the median
  of 5 steps after 2 warm-up steps, scaled the same way.
- memory: each case runs in a fresh process (started through a launcher,
  since Linux carries a parent's high-water mark into a child); training
  memory = `ru_maxrss` after training minus the resident set once the data
  and the model exist, with the high-water mark reset to it there
  (`/proc/self/clear_refs`): the data, which grow with the length, and the
  temporaries that made them are not counted.

Targets from the issue (printed, not asserted): memory flat across lengths
(largest/smallest <= 1.2x) and time per 1,000 steps flat (time linear in the
length, within 1.2x).

How long: about 3 minutes on 2 idle CPU cores (100,000 steps = 1,000
batches). Run:

    .venv/bin/python benchmarks/truncated_bptt.py [--lengths 1000,10000,100000]
        [--json PATH]
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_env import (  # noqa: E402
    environment,
    finish,
    load_average,
    max_rss_mb,
    run_fresh,
    targets_table,
)

import keras_seq  # noqa: E402

BATCH, FEATURES, UNITS, DEPTH, CHUNK = 16, 8, 64, 2, 100
WARMUP_BATCHES = 5
FULL_MAX = 10_000


def model_for(stateful):
    inputs = keras.Input((None, FEATURES), batch_size=BATCH if stateful else None)
    hidden = keras_seq.layers.SharedRNN(
        UNITS, depth=DEPTH, return_sequences=True, stateful=stateful
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mse")
    return model


class BatchTimes(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def on_train_begin(self, logs=None):
        self.times = []


def _status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def baseline_mb():
    """The resident set now, with the high-water mark reset to it (Linux
    >= 4.0): building a long sequence's arrays leaves a higher mark than
    training on chunks of it, which would hide the training peak."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return max_rss_mb()


def child(variant, length):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, length, FEATURES)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(length)).astype("float32")
    if variant == "truncated":
        data = keras_seq.data.TruncatedBPTT(x, y, CHUNK, BATCH)
        model = model_for(stateful=True)
        baseline = baseline_mb()
        timer = BatchTimes()
        model.fit(
            data.dataset,
            shuffle=False,
            verbose=0,
            callbacks=[keras_seq.callbacks.ResetStates(data), timer],
        )
        per_step = statistics.median(timer.times[WARMUP_BATCHES:]) / CHUNK
    else:
        model = model_for(stateful=False)
        baseline = baseline_mb()
        for _ in range(2):
            model.train_on_batch(x, y)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        per_step = statistics.median(times) / length
    peak = max_rss_mb()
    print(
        json.dumps(
            {
                "baseline_mb": baseline,
                "training_mb": peak - baseline,
                "ms_per_1000": per_step * 1000 * 1000,
            }
        )
    )


def run_case(variant, length, errors):
    print(f"... {variant}, length {length}", file=sys.stderr, flush=True)
    measured = run_fresh(
        os.path.abspath(__file__),
        ["--child", variant, str(length)],
        f"{variant}, length {length}",
        errors,
    )
    return measured and {"variant": variant, "length": length, **measured}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1000,10000,100000")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    lengths = [int(v) for v in args.lengths.split(",")]
    started = time.time()
    print("# Truncated BPTT (k=100) against the sequence length\n")
    for key, value in environment(chunk_length=CHUNK).items():
        print(f"- {key}: {value}")
    errors, rows = [], []
    for length in lengths:
        for variant in ("truncated", "full"):
            if variant == "full" and length > FULL_MAX:
                continue
            row = run_case(variant, length, errors)
            if row:
                rows.append(row)
    print(
        "\n| total length | truncated BPTT (k=100): training memory | "
        "time per 1,000 steps | full BPTT: training memory | time per 1,000 "
        "steps |"
    )
    print("|---:|---:|---:|---:|---:|")
    by = {(r["variant"], r["length"]): r for r in rows}
    for length in lengths:
        cells = []
        for variant in ("truncated", "full"):
            r = by.get((variant, length))
            cells += (
                [f"+{r['training_mb']:.0f} MB", f"{r['ms_per_1000']:.1f} ms"]
                if r
                else ["-", "-"]
            )
        print(f"| {length:,} | " + " | ".join(cells) + " |")
    truncated = [r for r in rows if r["variant"] == "truncated"]
    targets = []
    if len(truncated) >= 2:
        memory = [max(r["training_mb"], 1.0) for r in truncated]
        times = [r["ms_per_1000"] for r in truncated]
        memory_ratio = max(memory) / min(memory)
        time_ratio = max(times) / min(times)
        targets = [
            (
                "truncated BPTT memory flat across lengths (max/min <= 1.2x)",
                f"{memory_ratio:.2f}x",
                "PASS" if memory_ratio <= 1.2 else "MISS",
            ),
            (
                "time linear: time per 1,000 steps flat (max/min <= 1.2x)",
                f"{time_ratio:.2f}x",
                "PASS" if time_ratio <= 1.2 else "MISS",
            ),
        ]
    print(f"\nload average at end: {load_average()}")
    finish(
        targets_table(targets),
        errors,
        (time.time() - started) / 60,
        args.json,
        {"rows": rows},
    )


if __name__ == "__main__":
    main()
