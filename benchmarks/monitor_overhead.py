"""Training-time overhead of `keras_seq.callbacks.GradientMonitor`.

What it measures: the steady-state time of one `model.fit` training step of a
`keras_seq.Sequential` with `GradientMonitor(every=1)` (every step records
per-layer norms and the per-time-step norms and contributions), with
`GradientMonitor(every=100)` and with no monitor, and prints the ratios to "no
monitor" as Markdown tables. All variants of a workload live in one process,
start from identical weights (each has its own Adam) and are timed
interleaved: repeat r fits every variant once before repeat r+1 (the order
rotates by one variant per repeat); the reported time is the median over
repeats.

- Workloads: `SharedRNN(128, depth=1)` and `depth=3`, 32 features, last
  output -> Dense(1000, softmax), sparse categorical crossentropy, Adam,
  default `jit_compile="auto"` (no XLA on CPU); T=100 with batch 64 and
  N=200 batches per fit, T=1000 with batch 32 and N=20 batches per fit.
- At T=1000 the sparse variant is `every=10`, not `every=100`: a fit of 20
  batches would record at most once with every=100, so every=10 keeps two
  recorded steps per fit, as every=100 has at T=100.
- `every=1, contributions=False` leaves out the per-step contributions (one
  `(T*batch, units) x (units, units)` matmul per sublayer).
- Extra rows at depth 1, T=100: `every=100, on_nan="warn"` (no all-finite
  guard around the optimizer update, the only extra work of non-recording
  steps) and `every=1, log_dir=<temporary directory>` (TensorBoard writing,
  which happens on recorded steps only).

Each timed fit is `model.fit(x, y, epochs=1, batch_size=B, verbose=0,
shuffle=False, callbacks=[...])` on N batches, after one warm-up fit per
variant, with a new `GradientMonitor` for every fit. The monitor rebuilds the
model's training functions at the start of every fit, so the first batches of
a monitored fit trace them again; the steady-state time leaves that out: a
timing callback (last in the list) takes the clock at `on_train_batch_begin`
of batch 5 and at `on_train_end` and divides by the batches in between. The
tables also show the whole fit's wall time / N, tracing included.

Targets from the issue are printed next to the measured ratios as PASS/MISS;
nothing is asserted.

How long it takes on 2 idle CPU cores: `--quick` (T=100, depth 1 only, 3
repeats, N=50) about 1 minute; the full run, estimated from the quick run's
step times (it has not been run end to end yet), 15-20 minutes. Other work on
the machine makes both slower and the timings noisy: the header prints the
load average.

How to run:

    .venv/bin/python benchmarks/monitor_overhead.py [--quick]
        [--repeats 5] [--json PATH]
"""

import argparse
import dataclasses
import gc
import inspect
import os
import statistics
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import repeated_fits  # noqa: E402
from bench_env import environment, finish, targets_table  # noqa: E402

import keras_seq  # noqa: E402

UNITS = 128
CLASSES = 1000
FEATURES = 32
FIRST_TIMED_BATCH = 5  # batches before this one (tracing) are not timed

NONE = "no monitor"
DENSE = "every=1"
DENSE_NO_CONTRIBUTIONS = "every=1, contributions=False"
BUILT_IN_LAYERS = ("SimpleRNN", "GRU", "LSTM")  # keras.layers, probed by the monitor

# The targets (SharedRNN workloads), as printed in the PASS/MISS
# table: a variant's step / the no-monitor step.
TARGET_NO_CONTRIBUTIONS = 1.05  # every=1, contributions=False
TARGET_DENSE = 1.20  # every=1 (contributions on)
TARGET_DEFAULTS = 1.02  # GradientMonitor() with the constructor's defaults
TARGET_SPARSE = 1.01  # every=100 (an earlier issue's target, still printed)


def monitor_defaults():
    """The GradientMonitor constructor's defaults that decide the cost."""
    parameters = inspect.signature(keras_seq.callbacks.GradientMonitor).parameters
    return {
        name: parameters[name].default
        for name in ("every", "contributions", "on_nan", "log_dir", "histograms")
    }


def defaults_name():
    d = monitor_defaults()
    return f"GradientMonitor() (every={d['every']}, contributions={d['contributions']})"


@dataclasses.dataclass(frozen=True)
class Workload:
    depth: int
    timesteps: int
    batch: int
    batches: int  # N, batches per fit
    sparse_every: int | None  # the "every=100" variant's `every`; None: no row
    layer: str = "SharedRNN"  # or a keras.layers name from BUILT_IN_LAYERS

    @property
    def built_in(self):
        return self.layer != "SharedRNN"

    @property
    def label(self):
        if self.built_in:
            return f"keras {self.layer}, T={self.timesteps}"
        return f"T={self.timesteps}, depth {self.depth}"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    every: int | None  # None: no monitor
    options: tuple = ()  # extra GradientMonitor arguments, as (name, value)
    log_dir: bool = False  # write TensorBoard files to a temporary directory
    defaults: bool = False  # GradientMonitor() with no arguments at all


PARTS = ("shared", "builtin", "repeated")


def workloads(quick, parts=PARTS):
    found = []
    if "shared" in parts:
        if quick:
            found.append(Workload(1, 100, 64, 50, 100))
        else:
            found += [
                Workload(depth, timesteps, batch, batches, every)
                for timesteps, batch, batches, every in (
                    (100, 64, 200, 100),
                    (1000, 32, 20, 10),
                )
                for depth in (1, 3)
            ]
    if "builtin" in parts:
        # N=100, not 200: a recorded LSTM/GRU step is 2-4x a plain one.
        batches = 25 if quick else 100
        found += [
            Workload(1, 100, 64, batches, None, layer) for layer in BUILT_IN_LAYERS
        ]
    return found


def variants(workload):
    defaults = monitor_defaults()
    rows = [
        Variant(NONE, None),
        Variant(DENSE_NO_CONTRIBUTIONS, 1, (("contributions", False),)),
        Variant(DENSE, 1),
        Variant(defaults_name(), defaults["every"], defaults=True),
    ]
    if workload.built_in:
        return rows
    sparse = workload.sparse_every
    rows.append(Variant(f"every={sparse}", sparse))
    if workload.depth == 1 and workload.timesteps == 100:
        rows += [
            Variant(f'every={sparse}, on_nan="warn"', sparse, (("on_nan", "warn"),)),
            Variant("every=1, log_dir=<tmp>", 1, log_dir=True),
        ]
    return rows


# ---------------------------------------------------------------- models


def build_model(workload, weights=None):
    """A compiled classifier, with `weights` if given: a keras_seq.Sequential
    with a SharedRNN, or a plain keras.Sequential with a built-in layer."""
    if workload.built_in:
        sequential = keras.Sequential
        recurrent = getattr(keras.layers, workload.layer)(UNITS)
    else:
        sequential = keras_seq.Sequential
        recurrent = keras_seq.layers.SharedRNN(UNITS, depth=workload.depth)
    model = sequential(
        [
            keras.Input((workload.timesteps, FEATURES)),
            recurrent,
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy"
    )
    if weights is not None:
        model.set_weights(weights)
    return model


def workload_data(workload, seed=0):
    rng = np.random.default_rng(seed)
    samples = workload.batch * workload.batches
    x = rng.standard_normal((samples, workload.timesteps, FEATURES), dtype="float32")
    y = rng.integers(0, CLASSES, size=(samples,), dtype="int32")
    return x, y


# ---------------------------------------------------------------- timing


class SteadyStateTimer(keras.callbacks.Callback):
    """Clock from `on_train_batch_begin(first_batch)` to `on_train_end`.

    Only a batch-begin hook: overriding `on_train_batch_end` would make Keras
    wait for every batch and slow the no-monitor baseline down.
    """

    def __init__(self, first_batch):
        super().__init__()
        self.first_batch = first_batch
        self.start = None
        self.batches = 0
        self.seconds = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.first_batch:
            self.start = time.perf_counter()
        if self.start is not None:
            self.batches += 1

    def on_train_end(self, logs=None):
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


@dataclasses.dataclass
class Fit:
    steady_ms: float  # per timed batch, from FIRST_TIMED_BATCH to on_train_end
    wall_ms: float  # whole model.fit call / N, tracing included
    recorded: int  # recorded steps in the fit
    recorded_in_window: int  # of which in the timed window


def expected_records(start, batches, every):
    return sum(1 for step in range(start, start + batches) if step % every == 0)


class VariantRunner:
    """One model of one variant and a way to time one fit of it."""

    def __init__(self, workload, variant, weights, data, errors):
        self.workload = workload
        self.variant = variant
        self.data = data
        self.errors = errors
        self.model = build_model(workload, weights)
        self.log_dir = None
        if variant.log_dir:
            self.log_dir = tempfile.TemporaryDirectory(prefix="monitor_overhead_")

    def monitor(self):
        if self.variant.every is None:
            return None
        if self.variant.defaults:
            return keras_seq.callbacks.GradientMonitor()
        options = dict(self.variant.options)
        if self.log_dir is not None:
            options["log_dir"] = self.log_dir.name
        return keras_seq.callbacks.GradientMonitor(every=self.variant.every, **options)

    def fit(self):
        x, y = self.data
        batches = self.workload.batches
        monitor = self.monitor()  # a new one for every fit
        timer = SteadyStateTimer(FIRST_TIMED_BATCH)
        callbacks = ([] if monitor is None else [monitor]) + [timer]
        start_step = int(self.model.optimizer.iterations.numpy())
        gc.collect()
        begin = time.perf_counter()
        self.model.fit(
            x,
            y,
            epochs=1,
            batch_size=self.workload.batch,
            verbose=0,
            shuffle=False,
            callbacks=callbacks,
        )
        wall = time.perf_counter() - begin
        if timer.seconds is None or not timer.batches:
            raise RuntimeError(
                f"fit stopped before batch {FIRST_TIMED_BATCH} "
                f"({int(self.model.optimizer.iterations.numpy()) - start_step} "
                f"of {batches} steps ran)"
            )
        recorded = in_window = 0
        if monitor is not None:
            recorded = len(monitor.records)
            in_window = sum(
                1
                for row in monitor.records
                if row["step"] >= start_step + FIRST_TIMED_BATCH
            )
            expected = expected_records(start_step, batches, self.variant.every)
            if recorded != expected or monitor.skipped_steps:
                self.errors.append(
                    f"{self.workload.label} / {self.variant.name}: steps "
                    f"{start_step}-{start_step + batches - 1} recorded {recorded} "
                    f"steps (expected {expected}), skipped "
                    f"{monitor.skipped_steps} updates"
                )
        return Fit(
            steady_ms=1000.0 * timer.seconds / timer.batches,
            wall_ms=1000.0 * wall / batches,
            recorded=recorded,
            recorded_in_window=in_window,
        )

    def close(self):
        if self.log_dir is not None:
            self.log_dir.cleanup()


def time_workload(workload, repeats, errors):
    """Rows for one workload: every variant, `repeats` interleaved fits each.

    A variant that fails to build or warm up is reported in `errors` and left
    out, so one broken variant does not hide the others' numbers.
    """
    progress(f"{workload.label}: building models, warm-up fits ...")
    keras.utils.set_random_seed(0)
    weights = build_model(workload).get_weights()
    data = workload_data(workload)
    runners = {}
    for variant in variants(workload):
        try:
            runner = VariantRunner(workload, variant, weights, data, errors)
            runner.fit()  # warm-up
        except Exception as error:  # noqa: BLE001 - report, keep benchmarking
            errors.append(
                f"{workload.label} / {variant.name}: {type(error).__name__}: {error}"
            )
            continue
        runners[variant.name] = runner
    fits = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(repeats):
        progress(f"{workload.label}: repeat {repeat + 1}/{repeats} ...")
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                fits[name].append(runners[name].fit())
            except Exception as error:  # noqa: BLE001
                errors.append(
                    f"{workload.label} / {name}, repeat {repeat + 1}: "
                    f"{type(error).__name__}: {error}"
                )
    for runner in runners.values():
        runner.close()
    release_models()
    return [
        {
            "label": workload.label,
            "layer": workload.layer,
            "depth": workload.depth,
            "timesteps": workload.timesteps,
            "batch": workload.batch,
            "batches": workload.batches,
            "timed_batches": workload.batches - FIRST_TIMED_BATCH,
            "variant": name,
            "every": runners[name].variant.every,
            "median_ms": statistics.median(f.steady_ms for f in samples),
            "samples_ms": [f.steady_ms for f in samples],
            "wall_median_ms": statistics.median(f.wall_ms for f in samples),
            "wall_samples_ms": [f.wall_ms for f in samples],
            "recorded_per_fit": statistics.mean(f.recorded for f in samples),
            "recorded_in_window_per_fit": statistics.mean(
                f.recorded_in_window for f in samples
            ),
        }
        for name, samples in fits.items()
        if samples
    ]


def release_models():
    keras.backend.clear_session()
    gc.collect()


# ---------------------------------------------------------------- report


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value, digits=2, suffix=""):
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def find(rows, label, variant, key="median_ms"):
    for row in rows:
        if row["label"] == label and row["variant"] == variant:
            return row[key]
    return None


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def nominal_rate_ms(rows, row):
    """Estimated steady-state ms/step if 1 in `every` timed steps recorded.

    The timed window holds fewer recorded steps than 1/every of its batches
    (the recorded batch 0 carries the tracing and is left out). Taking the
    every=1 row's median as the time of a recorded step, solve the window's
    mean for the time of a non-recording step and mix the two at 1/every.
    """
    every = row["every"]
    if every is None or every == 1:
        return None
    recorded = find(rows, row["label"], DENSE)
    if recorded is None:
        return None
    window = row["timed_batches"]
    in_window = row["recorded_in_window_per_fit"]
    light = (row["median_ms"] * window - in_window * recorded) / (window - in_window)
    return light + (recorded - light) / every


def speed_table(rows):
    lines = [
        "| workload | variant | ms/step (median) | min-max | vs no monitor "
        "| recorded/fit (in window) | est. vs no monitor at 1/every "
        "| fit wall ms/step | wall vs no monitor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        base = find(rows, row["label"], NONE)
        wall_base = find(rows, row["label"], NONE, "wall_median_ms")
        spread = f"{min(row['samples_ms']):.1f}-{max(row['samples_ms']):.1f}"
        recorded = "—"
        if row["every"] is not None:
            recorded = (
                f"{row['recorded_per_fit']:.3g} "
                f"({row['recorded_in_window_per_fit']:.3g})"
            )
        lines.append(
            f"| {row['label']} | {row['variant']} | {row['median_ms']:.1f} | "
            f"{spread} | {fmt(ratio(row['median_ms'], base), 3, 'x')} | "
            f"{recorded} | "
            f"{fmt(ratio(nominal_rate_ms(rows, row), base), 3, 'x')} | "
            f"{row['wall_median_ms']:.1f} | "
            f"{fmt(ratio(row['wall_median_ms'], wall_base), 2, 'x')} |"
        )
    return "\n".join(lines)


def evaluate_targets(rows, workload_list):
    """[(target, workload, measured, estimated, status)] for the SharedRNN
    workloads (the issue sets no target for the built-in layers)."""

    def verdict(values, limit):
        values = [v for v in values if v is not None]
        if not values:
            return "not run"
        return "PASS" if max(values) <= limit else "MISS"

    results = []
    for workload in workload_list:
        if workload.built_in:
            continue
        label = workload.label
        base = find(rows, label, NONE)
        for name, limit in (
            (DENSE_NO_CONTRIBUTIONS, TARGET_NO_CONTRIBUTIONS),
            (DENSE, TARGET_DENSE),
            (defaults_name(), TARGET_DEFAULTS),
        ):
            row = next(
                (r for r in rows if r["label"] == label and r["variant"] == name),
                None,
            )
            measured = estimated = None
            if row is not None:
                measured = ratio(row["median_ms"], base)
                # The defaults may record 1 in `every` steps: judge them as
                # the sparse rows, by the larger of measured and estimated.
                estimated = ratio(nominal_rate_ms(rows, row), base)
            results.append(
                (
                    f"{name} step <= {limit:.2f}x no monitor",
                    label,
                    fmt(measured, 3, "x"),
                    fmt(estimated, 3, "x") if estimated is not None else "—",
                    verdict([measured, estimated], limit),
                )
            )
        name = f"every={workload.sparse_every}"
        row = next(
            (r for r in rows if r["label"] == label and r["variant"] == name), None
        )
        sparse = estimated = None
        if row is not None:
            sparse = ratio(row["median_ms"], base)
            estimated = ratio(nominal_rate_ms(rows, row), base)
        stand_in = "" if workload.sparse_every == 100 else f" ({name} stands in)"
        results.append(
            (
                f"every=100 step <= {TARGET_SPARSE:.2f}x no monitor (earlier "
                f"issue){stand_in}",
                label,
                fmt(sparse, 3, "x"),
                fmt(estimated, 3, "x"),
                verdict([sparse, estimated], TARGET_SPARSE),
            )
        )
    return results


def method_note(workload_list, repeats):
    sizes = []
    shared = {w.timesteps: w for w in workload_list if not w.built_in}
    sizes += [
        f"SharedRNN, T={w.timesteps}: batch {w.batch}, N={w.batches} batches "
        f"per fit, sparse variant every={w.sparse_every}"
        for w in shared.values()
    ]
    built_in = [w for w in workload_list if w.built_in]
    if built_in:
        w = built_in[0]
        sizes.append(
            f"keras.Sequential with {', '.join(x.layer for x in built_in)}"
            f"({UNITS}), T={w.timesteps}: batch {w.batch}, N={w.batches}"
        )
    defaults = ", ".join(f"{k}={v!r}" for k, v in monitor_defaults().items())
    k0 = FIRST_TIMED_BATCH
    paragraphs = [
        f"Method: {'; '.join(sizes)}. Per variant one model with the weights "
        f"of the others and its own Adam, one warm-up fit, then {repeats} timed "
        "fits, interleaved (the order rotates each repeat), each `model.fit(x, "
        "y, epochs=1, batch_size=B, verbose=0, shuffle=False)` with a new "
        'GradientMonitor (on_nan="stop" unless shown). The defaults row is '
        f"`GradientMonitor()` with no arguments: {defaults}.",
        f"- ms/step: steady state, from `on_train_batch_begin` of batch {k0} to "
        f"`on_train_end`, divided by the N-{k0} batches in between. A new "
        "monitor builds its training functions at the start of its fit (one "
        "monitor reused across fits does not: see the repeated-fit table), so "
        "its first batches trace them; they are outside this window. The "
        "window includes the epoch-end work (History; heatmaps and the "
        "diagnosis text with log_dir) and the monitor's on_train_end (closing "
        f"the summary writer). Median and min-max over the {repeats} fits.",
        "- recorded/fit (in window): steps the monitor recorded per fit (mean "
        "over the timed fits) and how many of them fall in the timed window. "
        "Recording happens when the optimizer's step count is a multiple of "
        "`every`; every fit continues the step count of the last, so with N "
        "a multiple of `every` a fit records at batch 0 (which also traces "
        "the recording function, outside the window) and the window holds one "
        "recorded step fewer than N/every; with `every` > N some fits record "
        "once, the others not at all.",
        "- est. at 1/every: the sparse rows' (and sparse defaults') ratio if "
        "exactly 1 in `every` timed steps recorded, taking the every=1 row's "
        "median as the time of a recorded step (see `nominal_rate_ms`); the "
        "target verdict uses the larger of the measured and the estimated "
        "ratio.",
        "- fit wall ms/step: the whole `model.fit` call / N, tracing included "
        "(the no-monitor model traces once, in its warm-up fit; a monitored "
        "model traces its functions again in every fit, with a new monitor).",
    ]
    return "\n".join(
        textwrap.fill(
            p,
            width=79,
            subsequent_indent="  " if p[0] == "-" else "",
            break_on_hyphens=False,
        )
        for p in paragraphs
    )


# ---------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Time model.fit steps of keras_seq SharedRNN models and "
        "keras SimpleRNN/GRU/LSTM models with and without a GradientMonitor, "
        "and repeated short fits with one monitor; print Markdown tables."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="SharedRNN at T=100, depth 1 only (N=50), the built-in layers "
        "with N=25, 3 repeats, 5 repeated fits",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed fits per variant; the median is reported "
        "(default 5, 3 with --quick)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated subset of: shared (SharedRNN workloads), "
        "builtin (keras SimpleRNN/GRU/LSTM), repeated (repeated short fits); "
        "default all",
    )
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args(argv)
    minimum = 3 if args.quick else 5
    if args.repeats is None:
        args.repeats = minimum
    if args.repeats < minimum:
        parser.error(f"--repeats must be >= {minimum}, got {args.repeats}")
    args.parts = tuple(part.strip() for part in args.parts.split(",") if part)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown or not args.parts:
        parser.error(f"--parts takes a subset of {','.join(PARTS)}, got {unknown}")
    return args


def main(argv=None):
    args = parse_args(argv)
    env = environment()
    for key, value in env.items():
        print(f"{key}: {value}")
    print()

    started = time.perf_counter()
    errors = []
    workload_list = workloads(args.quick, args.parts)
    rows = []
    for workload in workload_list:
        rows += time_workload(workload, args.repeats, errors)
    repeated_rows = []
    if "repeated" in args.parts:
        fits = 5 if args.quick else repeated_fits.FITS
        try:
            repeated_rows = repeated_fits.time_repeated_fits(fits, progress)
        except Exception as error:  # noqa: BLE001 - report, keep the tables
            errors.append(f"repeated short fits: {type(error).__name__}: {error}")
    targets = [
        (
            f"{target} ({workload})",
            measured + ("" if est == "—" else f" (est. {est})"),
            status,
        )
        for target, workload, measured, est, status in evaluate_targets(
            rows, workload_list
        )
    ]
    if repeated_rows:
        targets.append(repeated_fits.repeated_target(repeated_rows))
    minutes = (time.perf_counter() - started) / 60

    print("## Training step time with and without GradientMonitor\n")
    print(method_note(workload_list, args.repeats) + "\n")
    shared_rows = [r for r in rows if r["layer"] == "SharedRNN"]
    built_in_rows = [r for r in rows if r["layer"] != "SharedRNN"]
    if shared_rows:
        print("### keras_seq SharedRNN\n")
        print(speed_table(shared_rows) + "\n")
    if built_in_rows:
        print("### Keras's own SimpleRNN, GRU, LSTM (a plain keras.Sequential)\n")
        print(speed_table(built_in_rows) + "\n")
    if repeated_rows:
        first = repeated_rows[0]
        print(
            f"### Repeated short fits ({first['fits']} fits of "
            f"{first['batches_per_fit']} batches, one monitor per variant)\n"
        )
        print(
            textwrap.fill(
                "From `benchmarks/repeated_fits.py`: SharedRNN(128), T=100, "
                "batch 64, Dense(10), MSE; wall time of the whole `fit` call; "
                "the first fit (tracing) apart, median of the others.",
                width=79,
            )
            + "\n"
        )
        print(repeated_fits.repeated_table(repeated_rows))
    finish(
        targets_table(targets, "measured (est. at 1/every)"),
        errors,
        minutes,
        args.json,
        {
            "environment": env,
            "repeats": args.repeats,
            "first_timed_batch": FIRST_TIMED_BATCH,
            "monitor_defaults": {k: repr(v) for k, v in monitor_defaults().items()},
            "speed": rows,
            "repeated_fits": repeated_rows,
            "targets": [
                {"target": t, "measured": m, "status": st} for t, m, st in targets
            ],
        },
    )


if __name__ == "__main__":
    main()
