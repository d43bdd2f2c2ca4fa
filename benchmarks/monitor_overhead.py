"""Training-time overhead of `keras_seq.callbacks.GradientMonitor`.

What it measures (issue 16): the cost of `GradientMonitor()` (the defaults,
every=50) and of `GradientMonitor(every=1)` against no monitor, in the
steady-state time of one `model.fit` training step, and the monitor's host
reads per unrecorded step (target 0). Markdown tables and PASS/MISS lines.

- Workloads: `keras_seq.layers.SharedRNN(128)` in a `keras_seq.Sequential`
  and `keras.layers.LSTM(128)` in a plain `keras.Sequential`, each on T=100
  with batch 64 and on T=1000 with batch 32; 32 features, last output ->
  Dense(1000, softmax), sparse categorical crossentropy, Adam, default
  `jit_compile="auto"` (no XLA on CPU).
- Variants of each workload: no monitor, `GradientMonitor()` and
  `GradientMonitor(every=1)`. They live in one process, start from identical
  weights (each model has its own Adam) and are timed interleaved: repeat r
  fits every variant once before repeat r+1 (the order rotates by one
  variant per repeat); the reported time is the median over repeats.
- One monitor per variant for all its fits (as in a real run: one monitor,
  many steps), so its training functions are traced once, in the warm-up fit,
  and never inside a timed fit. Its steps go on from fit to fit.
- Timing window: a callback takes the clock at `on_train_batch_begin` of
  batch 5 and at `on_train_end`; the fits of the no-monitor and default
  variants have 5 + 50 batches, so the window holds 50 consecutive steps,
  which always include exactly one multiple of 50: exactly one recorded step
  in 50, wherever the fit starts (a whole fit holds one or two). The
  window's rate is what matters: a window of 100 steps (two recorded) would
  double the run at T=1000 and add nothing but samples. Every step of
  every=1 records, so its window is 50 steps at T=100 and 10 at T=1000 (10
  at T=100 too with `--quick`).
- Host reads per unrecorded step: on the default variant's model, right after
  its warm-up fit (steps 0-1), fits of 2 and of 12 batches (steps 2-15, none
  recorded) with `tensorflow.python.framework.ops._EagerTensorBase._numpy`
  patched to count device-to-host conversions whose nearest caller in
  keras_seq or Keras is keras_seq's (as tests/monitoring/
  test_host_reads.py); (reads(12) - reads(2)) / 10.
- The repeated short fits of `benchmarks/repeated_fits.py` (one monitor for
  10 fits of 10 batches, SharedRNN at T=100) are printed too (about 20 s).

Targets, printed as PASS/MISS (nothing is asserted): on every workload,
`GradientMonitor()` step median <= 1.05x the no-monitor median (the issue's
"within 5% of no monitor", decided here as a ratio of the medians; the
min-max columns show how far the noise reaches), and host reads per
unrecorded step == 0.

How long it takes: the header prints an estimate from step times measured on
2 CPU cores under a load average of about 2 (other work running): the full
run (5 repeats) about 12 minutes there, less on idle cores (the LSTM at
T=1000 is about half of it); `--quick` (T=100 only, 3 repeats, no repeated
short fits) about 1.5 minutes. Other work on the machine makes both slower
and the timings noisy: the header prints the load average, and the min-max
columns show the spread. The fit wall column (and the repeated short fits,
timed by whole fits) also catch pauses after `on_train_end` that plain Keras
fits show on a loaded machine too; the steady-state window ends before them.

How to run:

    .venv/bin/python benchmarks/monitor_overhead.py [--quick]
        [--repeats 5] [--parts shared,lstm,repeated] [--json PATH]
"""

import argparse
import contextlib
import dataclasses
import gc
import inspect
import os
import statistics
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import repeated_fits  # noqa: E402
from bench_env import environment, finish, targets_table  # noqa: E402
from tensorflow.python.framework import ops  # noqa: E402 - where tensors reach the host

import keras_seq  # noqa: E402

UNITS = 128
CLASSES = 1000
FEATURES = 32
FIRST_TIMED_BATCH = 5  # batches before this one are not timed
WARM_UP_BATCHES = 2  # step 0 (recorded: traces that function) and step 1
READ_FITS = (2, 12)  # batches of the two counted fits (after the warm-up)

NONE = "no monitor"
DENSE = "GradientMonitor(every=1)"
TARGET_DEFAULTS = 1.05  # GradientMonitor() step / no-monitor step
TARGET_READS = 0  # host reads per unrecorded step

_PACKAGE = os.path.dirname(keras_seq.__file__) + os.sep
_KERAS = os.path.dirname(keras.__file__) + os.sep

# ms per step (no monitor, defaults, every=1) and seconds to build and warm
# up one model, measured on 2 CPU cores under a load average of about 1.8:
# only for the estimate in the header.
REFERENCE_MS = {
    ("SharedRNN", 100): (30, 30, 45),
    ("LSTM", 100): (120, 125, 230),
    ("SharedRNN", 1000): (150, 150, 200),
    ("LSTM", 1000): (390, 390, 810),
}
REFERENCE_SETUP_S = 5
REFERENCE_REPEATED_FIT_S = 2.5  # one round of the repeated short fits


def defaults_every():
    parameters = inspect.signature(keras_seq.callbacks.GradientMonitor).parameters
    return parameters["every"].default


def defaults_name():
    return f"GradientMonitor() (every={defaults_every()})"


@dataclasses.dataclass(frozen=True)
class Workload:
    layer: str  # "SharedRNN" or "LSTM"
    timesteps: int
    batch: int
    dense_window: int  # timed batches of every=1 fits

    @property
    def label(self):
        name = "SharedRNN(128)" if self.layer == "SharedRNN" else "keras LSTM(128)"
        return f"{name}, T={self.timesteps}"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    every: int | None  # None: no monitor
    defaults: bool = False  # GradientMonitor() with no arguments at all

    def batches(self, workload):
        """Batches per timed fit: the window after FIRST_TIMED_BATCH holds
        `every` steps of the default variant (one recorded step)."""
        window = workload.dense_window if self.every == 1 else defaults_every()
        return FIRST_TIMED_BATCH + window


PARTS = ("shared", "lstm", "repeated")


def workloads(quick, parts=PARTS):
    # (T, batch, timed batches of every=1): every step of every=1 records,
    # so a shorter window does there; at T=1000 it is most of the run time.
    sizes = [(100, 64, 10)] if quick else [(100, 64, 50), (1000, 32, 10)]
    layers = [
        name
        for part, name in (("shared", "SharedRNN"), ("lstm", "LSTM"))
        if part in parts
    ]
    return [
        Workload(layer, timesteps, batch, dense)
        for timesteps, batch, dense in sizes
        for layer in layers
    ]


def variants():
    return [
        Variant(NONE, None),
        Variant(defaults_name(), defaults_every(), defaults=True),
        Variant(DENSE, 1),
    ]


def estimate_minutes(workload_list, repeats, parts, repeated_rounds):
    seconds = 0.0
    for workload in workload_list:
        reference = REFERENCE_MS[(workload.layer, workload.timesteps)]
        for variant, ms in zip(variants(), reference, strict=True):
            steps = WARM_UP_BATCHES + repeats * variant.batches(workload)
            if variant.defaults:
                steps += sum(READ_FITS)
            seconds += steps * ms / 1000 + REFERENCE_SETUP_S
    if "repeated" in parts:
        seconds += repeated_rounds * REFERENCE_REPEATED_FIT_S + 10
    return seconds / 60


# ---------------------------------------------------------------- models


def build_model(workload, weights=None):
    """A compiled classifier, with `weights` if given: a keras_seq.Sequential
    with a SharedRNN, or a plain keras.Sequential with an LSTM."""
    if workload.layer == "SharedRNN":
        sequential = keras_seq.Sequential
        recurrent = keras_seq.layers.SharedRNN(UNITS)
    else:
        sequential = keras.Sequential
        recurrent = keras.layers.LSTM(UNITS)
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
    batches = max(v.batches(workload) for v in variants())
    batches = max(batches, *READ_FITS)
    samples = workload.batch * batches
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
    wall_ms: float  # whole model.fit call / N
    recorded: int  # recorded steps in the fit
    recorded_in_window: int  # of which in the timed window


def expected_records(start, batches, every):
    return sum(1 for step in range(start, start + batches) if step % every == 0)


@contextlib.contextmanager
def counting_host_reads():
    """Count device-to-host conversions of eager tensors (and variables,
    whose `numpy()` reads a tensor) made by keras_seq: the nearest caller in
    keras_seq or Keras is keras_seq's. Keras's own reads (the logs, the
    iterator) are not counted. Yields a one-item list holding the count."""
    count = [0]
    original = ops._EagerTensorBase._numpy

    def counted(tensor):
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith((_PACKAGE, _KERAS)):
                count[0] += name.startswith(_PACKAGE)
                break
            frame = frame.f_back
        return original(tensor)

    ops._EagerTensorBase._numpy = counted
    try:
        yield count
    finally:
        ops._EagerTensorBase._numpy = original


class VariantRunner:
    """One model of one variant, its one monitor, and a way to fit it."""

    def __init__(self, workload, variant, weights, data, errors):
        self.workload = workload
        self.variant = variant
        self.data = data
        self.errors = errors
        self.model = build_model(workload, weights)
        self.monitor = None
        if variant.defaults:
            self.monitor = keras_seq.callbacks.GradientMonitor()
        elif variant.every is not None:
            self.monitor = keras_seq.callbacks.GradientMonitor(every=variant.every)

    def step(self):
        return int(self.model.optimizer.iterations.numpy())

    def records_between(self, first, stop):
        if self.monitor is None:
            return 0
        return sum(1 for row in self.monitor.records if first <= row["step"] < stop)

    def run(self, batches, timer=None):
        """Fit `batches` batches; return the wall seconds."""
        x, y = self.data
        samples = batches * self.workload.batch
        callbacks = [] if self.monitor is None else [self.monitor]
        callbacks += [] if timer is None else [timer]
        gc.collect()
        begin = time.perf_counter()
        self.model.fit(
            x[:samples],
            y[:samples],
            epochs=1,
            batch_size=self.workload.batch,
            verbose=0,
            shuffle=False,
            callbacks=callbacks,
        )
        return time.perf_counter() - begin

    def warm_up(self):
        self.run(WARM_UP_BATCHES)

    def count_reads(self):
        """Host reads of keras_seq in fits of READ_FITS batches, none of
        whose steps is recorded; right after the warm-up."""
        first = self.step()
        reads = []
        for batches in READ_FITS:
            with counting_host_reads() as count:
                self.run(batches)
            reads.append(count[0])
        recorded = self.records_between(first, self.step())
        short, long = READ_FITS
        if recorded or self.step() - first != short + long:
            self.errors.append(
                f"{self.workload.label}: host-read fits (steps {first}-"
                f"{self.step() - 1}) recorded {recorded} steps; expected none"
            )
        return {
            "label": self.workload.label,
            "layer": self.workload.layer,
            "timesteps": self.workload.timesteps,
            "variant": self.variant.name,
            "short_batches": short,
            "long_batches": long,
            "reads_short": reads[0],
            "reads_long": reads[1],
            "recorded_steps": recorded,
            "per_unrecorded_step": (reads[1] - reads[0]) / (long - short),
        }

    def fit(self):
        batches = self.variant.batches(self.workload)
        timer = SteadyStateTimer(FIRST_TIMED_BATCH)
        start = self.step()
        wall = self.run(batches, timer)
        if timer.seconds is None or not timer.batches:
            raise RuntimeError(
                f"fit stopped before batch {FIRST_TIMED_BATCH} "
                f"({self.step() - start} of {batches} steps ran)"
            )
        recorded = self.records_between(start, start + batches)
        in_window = self.records_between(start + FIRST_TIMED_BATCH, start + batches)
        if self.monitor is not None:
            expected = expected_records(start, batches, self.variant.every)
            if recorded != expected or self.monitor.skipped_steps:
                self.errors.append(
                    f"{self.workload.label} / {self.variant.name}: steps "
                    f"{start}-{start + batches - 1} recorded {recorded} steps "
                    f"(expected {expected}), skipped "
                    f"{self.monitor.skipped_steps} updates"
                )
        return Fit(
            steady_ms=1000.0 * timer.seconds / timer.batches,
            wall_ms=1000.0 * wall / batches,
            recorded=recorded,
            recorded_in_window=in_window,
        )


def time_workload(workload, repeats, errors):
    """(speed rows, host-read row or None) for one workload.

    A variant that fails to build or warm up is reported in `errors` and left
    out, so one broken variant does not hide the others' numbers.
    """
    progress(f"{workload.label}: building models, warm-up fits ...")
    keras.utils.set_random_seed(0)
    weights = build_model(workload).get_weights()
    data = workload_data(workload)
    runners = {}
    reads = None
    for variant in variants():
        try:
            runner = VariantRunner(workload, variant, weights, data, errors)
            runner.warm_up()
            if variant.defaults:
                progress(f"{workload.label}: counting host reads ...")
                reads = runner.count_reads()
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
    rows = [
        {
            "label": workload.label,
            "layer": workload.layer,
            "timesteps": workload.timesteps,
            "batch": workload.batch,
            "batches": runners[name].variant.batches(workload),
            "timed_batches": runners[name].variant.batches(workload)
            - FIRST_TIMED_BATCH,
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
    runners.clear()
    release_models()
    return rows, reads


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


def speed_table(rows):
    lines = [
        "| workload | variant | N (timed) | ms/step (median) | min-max "
        "| vs no monitor | min-max vs no-monitor median "
        "| recorded/fit (in window) | fit wall ms/step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        base = find(rows, row["label"], NONE)
        low, high = min(row["samples_ms"]), max(row["samples_ms"])
        spread = "—"
        if row["variant"] != NONE and base:
            spread = f"{low / base:.3f}-{high / base:.3f}"
        recorded = "—"
        if row["every"] is not None:
            recorded = (
                f"{row['recorded_per_fit']:.3g} "
                f"({row['recorded_in_window_per_fit']:.3g})"
            )
        lines.append(
            f"| {row['label']} | {row['variant']} | {row['batches']} "
            f"({row['timed_batches']}) | {row['median_ms']:.1f} | "
            f"{low:.1f}-{high:.1f} | "
            f"{fmt(ratio(row['median_ms'], base), 3, 'x')} | {spread} | "
            f"{recorded} | {row['wall_median_ms']:.1f} |"
        )
    return "\n".join(lines)


def reads_table(read_rows):
    short, long = READ_FITS
    lines = [
        f"| workload | reads, fit of {short} batches | reads, fit of {long} "
        f"batches | recorded steps in both | reads per unrecorded step |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['label']} | {r['reads_short']} | {r['reads_long']} | "
        f"{r['recorded_steps']} | {r['per_unrecorded_step']:.2f} |"
        for r in read_rows
    ]
    return "\n".join(lines)


def evaluate_targets(rows, read_rows, workload_list):
    """[(target, measured, status)] for every workload."""
    results = []
    for workload in workload_list:
        label = workload.label
        measured = ratio(find(rows, label, defaults_name()), find(rows, label, NONE))
        status = "not run"
        if measured is not None:
            status = "PASS" if measured <= TARGET_DEFAULTS else "MISS"
        results.append(
            (
                f"{defaults_name()} step <= {TARGET_DEFAULTS:.2f}x no monitor "
                f"({label})",
                fmt(measured, 3, "x"),
                status,
            )
        )
        read = next((r for r in read_rows if r["label"] == label), None)
        per_step = None if read is None else read["per_unrecorded_step"]
        status = "not run"
        if per_step is not None:
            status = "PASS" if per_step == TARGET_READS else "MISS"
        results.append(
            (
                f"host reads per unrecorded step == {TARGET_READS} ({label})",
                fmt(per_step, 2),
                status,
            )
        )
    return results


def method_note(workload_list, repeats):
    sizes = sorted({(w.timesteps, w.batch, w.dense_window) for w in workload_list})
    every = defaults_every()
    k0 = FIRST_TIMED_BATCH
    short, long = READ_FITS
    paragraphs = [
        "Method: "
        + "; ".join(
            f"T={t}: batch {b}, N={k0 + every} batches per fit without a monitor "
            f"and with the defaults, N={k0 + dense} with every=1"
            for t, b, dense in sizes
        )
        + ". Per variant one model with the weights of the others and its own "
        f"Adam, and one monitor for all its fits; a warm-up fit of "
        f"{WARM_UP_BATCHES} batches (steps 0-1: traces the training "
        f"functions), then {repeats} timed fits, interleaved (the order "
        "rotates each repeat), each `model.fit(x, y, epochs=1, batch_size=B, "
        "verbose=0, shuffle=False)`.",
        f"- ms/step: steady state, from `on_train_batch_begin` of batch {k0} to "
        f"`on_train_end`, divided by the N-{k0} batches in between (epoch-end "
        "and train-end work of the monitor included). Median and min-max over "
        f"the {repeats} fits; 'min-max vs no-monitor median' divides them by the "
        "no-monitor median.",
        f"- recorded/fit (in window): steps recorded per fit and in its timed "
        f"window. The window of the defaults is {every} consecutive steps, so it "
        f"holds exactly one multiple of {every}: the rate of the defaults.",
        "- fit wall ms/step: the whole `model.fit` call / N. It includes what "
        "Keras does after `on_train_end`; on a loaded 2-core machine fits "
        "without keras_seq also paused there for up to seconds (returning at "
        "about 1.3 s x 2^k), so the ratios use the steady-state column only.",
        f"- host reads: on the defaults' model, after its warm-up, fits of "
        f"{short} and {long} batches (steps {WARM_UP_BATCHES}-"
        f"{WARM_UP_BATCHES + short + long - 1}, none recorded); keras_seq's "
        "device-to-host conversions in each; per unrecorded step: "
        f"(reads({long}) - reads({short})) / {long - short}.",
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
        description="Time model.fit steps of keras_seq SharedRNN and keras LSTM "
        "models with no monitor, GradientMonitor() and GradientMonitor(every=1), "
        "count the monitor's host reads per unrecorded step; print Markdown "
        "tables."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="T=100 only, every=1 timed over 10 batches, 3 repeats; parts "
        "shared,lstm unless --parts says otherwise",
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
        default=None,
        help="comma-separated subset of: shared (SharedRNN workloads), lstm "
        "(keras LSTM workloads), repeated (repeated short fits, 10 fits, 3 "
        "with --quick); default all, shared,lstm with --quick",
    )
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 3:
        parser.error(f"--repeats must be >= 3, got {args.repeats}")
    if args.parts is None:
        args.parts = "shared,lstm" if args.quick else ",".join(PARTS)
    args.parts = tuple(part.strip() for part in args.parts.split(",") if part)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown or not args.parts:
        parser.error(f"--parts takes a subset of {','.join(PARTS)}, got {unknown}")
    return args


def main(argv=None):
    args = parse_args(argv)
    workload_list = workloads(args.quick, args.parts)
    repeated_rounds = 3 if args.quick else repeated_fits.FITS
    estimate = estimate_minutes(
        workload_list, args.repeats, args.parts, repeated_rounds
    )
    env = environment(
        **{
            "estimated time": f"{estimate:.1f} min (step times measured on 2 "
            "CPU cores under a load average of about 2)"
        }
    )
    for key, value in env.items():
        print(f"{key}: {value}")
    print(flush=True)

    started = time.perf_counter()
    errors = []
    rows, read_rows = [], []
    for workload in workload_list:
        speed, reads = time_workload(workload, args.repeats, errors)
        rows += speed
        if reads is not None:
            read_rows.append(reads)
    repeated_rows = []
    if "repeated" in args.parts:
        try:
            repeated_rows = repeated_fits.time_repeated_fits(repeated_rounds, progress)
        except Exception as error:  # noqa: BLE001 - report, keep the tables
            errors.append(f"repeated short fits: {type(error).__name__}: {error}")
    targets = evaluate_targets(rows, read_rows, workload_list)
    if repeated_rows:
        targets.append(repeated_fits.repeated_target(repeated_rows))
    minutes = (time.perf_counter() - started) / 60

    print("## Training step time with and without GradientMonitor\n")
    print(method_note(workload_list, args.repeats) + "\n")
    if rows:
        print(speed_table(rows) + "\n")
    if read_rows:
        print("## Host reads per unrecorded step (GradientMonitor())\n")
        print(reads_table(read_rows) + "\n")
    if repeated_rows:
        first = repeated_rows[0]
        print(
            f"## Repeated short fits ({first['fits']} fits of "
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
        targets_table(targets),
        errors,
        minutes,
        args.json,
        {
            "environment": env,
            "repeats": args.repeats,
            "first_timed_batch": FIRST_TIMED_BATCH,
            "warm_up_batches": WARM_UP_BATCHES,
            "defaults_every": defaults_every(),
            "speed": rows,
            "host_reads": read_rows,
            "repeated_fits": repeated_rows,
            "targets": [
                {"target": t, "measured": m, "status": st} for t, m, st in targets
            ],
        },
    )


if __name__ == "__main__":
    main()
