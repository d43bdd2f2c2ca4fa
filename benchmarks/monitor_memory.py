"""Host memory of a long `model.fit` under `GradientMonitor(every=1)`.

What it measures: the growth of the resident set (VmRSS from
/proc/self/status) of a real `model.fit` that records every step for 10,000
steps, against the same fit without a monitor. Model:
`keras_seq.Sequential([Input((100, 8)), SharedRNN(16, depth=2), Dense(1)])`,
MSE, Adam, batch 8 (tiny, so 10,000 steps take about a minute); the data
are 64 batches repeated through `tf.data` (10 epochs of 1,000 steps), so
the input takes no memory worth counting. A callback with only a
batch-begin hook (no batch-end hook: that would make Keras wait for every
batch in the no-monitor case) reads VmRSS after 1, 1,000, 2,000, ... steps
and at the end of `fit`.

Cases, each in a fresh process that prints its own numbers as one JSON
line (the parent's view of a child's RSS would be the wrong process):

- `none`: no monitor;
- `capped`: `GradientMonitor(every=1)` with its default in-memory caps
  (`keras_seq.callbacks.records`: 200,000 per-time-step rows, 2,000
  `to_frame()` rows, 20,000 variable rows; older rows spilled to Parquet in
  temporary directories);
- `log_dir`: the same with a `log_dir` (a temporary directory): the
  per-time-step rows beyond the cap are read back from the crash journal,
  one copy on disk;
- `uncapped`: the caps raised above the run's rows (patched in the child),
  i.e. every row kept in memory: what the caps save.

After `fit`, the monitored cases also time `monitor.timestep_frame()` and
check that it has 10,000 x 2 sublayers x 100 time steps = 2,000,000 rows.

The growth reported is VmRSS at the end of `fit` minus VmRSS after step
1,000 (tracing, the first allocations and TensorFlow's own warm-up are
before it). What grows under the monitor besides the per-time-step rows:
nothing else: the verdicts keep a bounded window, the epoch's decay curve
is a running mean.

How to run (about 4 minutes on 2 idle CPU cores: three children, each a
10,000-step fit; `--steps 2000` for a 1-minute smoke run):

    .venv/bin/python benchmarks/monitor_memory.py [--steps 10000]
        [--cases none,capped,uncapped] [--json PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TIMESTEPS, FEATURES, UNITS, DEPTH, BATCH = 100, 8, 16, 2, 8
POOL_BATCHES = 64  # distinct batches, repeated
SAMPLE_EVERY = 1_000  # steps between RSS samples (and steps per epoch)
CASES = {
    "none": "no monitor",
    "capped": "GradientMonitor(every=1), default caps (spills to Parquet)",
    "log_dir": "GradientMonitor(every=1, log_dir=...), default caps (journal)",
    "uncapped": "GradientMonitor(every=1), caps lifted (all rows in memory)",
}


def rss_mb(field="VmRSS"):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(field)


def child(case, steps):
    """Run one case in this process; print one JSON line."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_seq
    from keras_seq.callbacks import records

    class RSSSampler(keras.callbacks.Callback):
        """VmRSS after 1 step, every SAMPLE_EVERY steps and at train end."""

        def __init__(self):
            super().__init__()
            self.steps = 0
            self.samples = {}
            self.times = {}
            self.start = None

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            # At the beginning of a batch, `self.steps` steps have been run
            # (dispatched; the no-monitor case may be one step behind).
            if self.steps == 1 or (self.steps and self.steps % SAMPLE_EVERY == 0):
                self._sample()
            self.steps += 1

        def on_train_end(self, logs=None):
            self._sample()
            self.end = time.perf_counter()

        def _sample(self):
            self.samples[self.steps] = rss_mb()
            self.times[self.steps] = time.perf_counter() - self.start

    if case == "uncapped":
        records.MAX_TIMESTEP_ROWS = 10 * steps * DEPTH * TIMESTEPS
        records.MAX_RECORDS = 10 * steps
        records.MAX_VARIABLE_ROWS = 100 * steps
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((POOL_BATCHES * BATCH, TIMESTEPS, FEATURES), "float32")
    y = rng.standard_normal((POOL_BATCHES * BATCH, 1), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    model = keras_seq.Sequential(
        [
            keras.Input((TIMESTEPS, FEATURES)),
            keras_seq.layers.SharedRNN(UNITS, depth=DEPTH),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    sampler = RSSSampler()
    callbacks = [sampler]
    monitor = None
    if case != "none":
        log_dir = None
        if case == "log_dir":
            import tempfile

            log_dir = tempfile.mkdtemp(prefix="keras_seq_memory_")
        monitor = keras_seq.callbacks.GradientMonitor(every=1, log_dir=log_dir)
        callbacks.insert(0, monitor)
    rss_before_fit = rss_mb()
    began = time.perf_counter()
    model.fit(
        data,
        epochs=steps // SAMPLE_EVERY,
        steps_per_epoch=SAMPLE_EVERY,
        verbose=0,
        callbacks=callbacks,
    )
    returned = time.perf_counter()
    result = {
        "case": case,
        "steps": sampler.steps,
        "fit_seconds": returned - began,
        # Seen once: `fit` returning 30 s after the callbacks' on_train_end.
        "seconds_after_train_end": returned - sampler.end,
        "rss_before_fit_mb": rss_before_fit,
        "rss_mb": {str(k): v for k, v in sorted(sampler.samples.items())},
        "seconds_at": {str(k): v for k, v in sorted(sampler.times.items())},
        "peak_rss_mb": rss_mb("VmHWM"),
        "max_timestep_rows": records.MAX_TIMESTEP_ROWS,
    }
    if monitor is not None:
        store = monitor._records.store  # private: only for the report
        result["spilled_rows"] = None if store is None else store.spilled_rows
        result["records"] = len(monitor.records)
        began = time.perf_counter()
        frame = monitor.timestep_frame()
        result["frame_seconds"] = time.perf_counter() - began
        result["frame_rows"] = len(frame)
        result["frame_mb"] = frame.memory_usage(deep=True).sum() / 2**20
        result["rss_after_frame_mb"] = rss_mb()
        del frame
    print(json.dumps(result))


def run_child(case, steps):
    command = [sys.executable, os.path.abspath(__file__), "--child", case]
    command += ["--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth(result, start, end):
    samples = result["rss_mb"]
    if str(start) not in samples or str(end) not in samples:
        return None
    return samples[str(end)] - samples[str(start)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=10_000,
        help=f"training steps, a multiple of {SAMPLE_EVERY} (default 10000)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)}",
    )
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args()
    if args.steps < 2 * SAMPLE_EVERY or args.steps % SAMPLE_EVERY:
        parser.error(
            f"--steps must be a multiple of {SAMPLE_EVERY} and >= "
            f"{2 * SAMPLE_EVERY}, got {args.steps}"
        )
    if args.child:
        child(args.child, args.steps)
        return
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        parser.error(f"--cases takes a subset of {','.join(CASES)}, got {unknown}")

    from bench_env import environment, load_average

    began = time.perf_counter()
    rows = args.steps * DEPTH * TIMESTEPS
    print("# Host memory of a long monitored fit\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    print(
        f"\nSequential([Input(({TIMESTEPS}, {FEATURES})), SharedRNN({UNITS}, "
        f"depth={DEPTH}), Dense(1)]), batch {BATCH}, {args.steps:,} steps "
        f"({args.steps // SAMPLE_EVERY} epochs of {SAMPLE_EVERY:,}); a monitor "
        f"records every step: {rows:,} per-time-step rows. One fresh process "
        "per case; RSS read by the process itself (MiB).\n"
    )
    results = {}
    for case in cases:
        print(f"[{time.strftime('%H:%M:%S')}] {case} ...", file=sys.stderr, flush=True)
        results[case] = run_child(case, args.steps)

    first, last = SAMPLE_EVERY, args.steps
    print(
        f"| case | RSS at step 1 | at {first:,} | at {last:,} | growth "
        f"{first:,} -> {last:,} | per 1,000 steps | peak (VmHWM) | fit (s) "
        "| of which after on_train_end (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case, result in results.items():
        grown = growth(result, first, last)
        per = grown / ((last - first) / 1000)
        print(
            f"| {CASES[case]} | {result['rss_mb']['1']:.0f} "
            f"| {result['rss_mb'][str(first)]:.0f} "
            f"| {result['rss_mb'][str(last)]:.0f} | {grown:+.1f} | {per:+.2f} "
            f"| {result['peak_rss_mb']:.0f} | {result['fit_seconds']:.0f} "
            f"| {result['seconds_after_train_end']:.1f} |"
        )
    monitored = {c: r for c, r in results.items() if c != "none"}
    if monitored:
        print(
            "\n| case | records | timestep_frame() rows | expected | frame "
            "build (s) | frame size (MiB) | RSS after frame | rows spilled to "
            "Parquet |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for case, result in monitored.items():
            ok = "ok" if result["frame_rows"] == rows else "MISMATCH"
            spilled = result["spilled_rows"]
            print(
                f"| {CASES[case]} | {result['records']:,} "
                f"| {result['frame_rows']:,} ({ok}) | {rows:,} "
                f"| {result['frame_seconds']:.2f} | {result['frame_mb']:.0f} "
                f"| {result['rss_after_frame_mb']:.0f} "
                f"| {'—' if spilled is None else f'{spilled:,}'} |"
            )
    print("\nRSS (MiB) at every sample:\n")
    samples = sorted({int(k) for r in results.values() for k in r["rss_mb"]})
    print("| step | " + " | ".join(CASES[c] for c in results) + " |")
    print("| ---: |" + " ---: |" * len(results))
    for step in samples:
        values = [r["rss_mb"].get(str(step)) for r in results.values()]
        print(
            f"| {step:,} | "
            + " | ".join("—" if v is None else f"{v:.0f}" for v in values)
            + " |"
        )
    minutes = (time.perf_counter() - began) / 60
    print(f"\nTotal time: {minutes:.1f} min; load average at end: {load_average()}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
