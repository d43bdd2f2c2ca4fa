"""Training speed and memory of `keras_seq.layers.SharedRNN` against its peers.

What it measures: the steady-state time of one training step (forward,
backward and Adam update, after warm-up) of `SharedRNN` against
`keras.layers.SimpleRNN`, `keras.layers.GRU` and, when torch is importable,
`torch.nn.RNN`, and prints the ratios as Markdown tables. All variants of a
workload live in one process and are timed interleaved: repeat r runs every
variant once before repeat r+1; the reported time is the median over repeats.

- Workload A: batch 64, T=100, 32 features, 128 units, depth 1 and 3, last
  output -> Dense(1000, softmax), sparse categorical crossentropy, Adam.
  Keras models use the default `jit_compile="auto"` (no XLA on CPU); extra
  rows show SharedRNN and SimpleRNN with `jit_compile=True`.
- Workload B (long sequences): Embedding(1000, 32) -> depth-2 recurrence ->
  last output -> Dense(1000, softmax), batch 32, T = 1000, 2000, 5000;
  `SharedRNN(128, depth=2)` against two stacked `SimpleRNN(128)` (and torch),
  and `SharedRNN(128, depth=2, recompute=k)` (keeps every k-th state and
  recomputes the rest in the backward pass; `--recompute`, default k=100)
  against the default SharedRNN.
  GRU is left out here: at 4-5x SimpleRNN's time per step it would add
  minutes at T=5000.
- Peak training memory for workload B: each (variant, T) runs in a fresh
  subprocess (this script with the hidden `--child` option); the printed
  notes say exactly what the numbers mean.

Targets from the issue are printed next to the measured values as PASS/MISS;
nothing is asserted.

How long it takes on 2 idle CPU cores: `--quick` (T=1000 only, no GRU, no
torch) about 1 minute; the full run about 4 minutes, mostly two-layer
SimpleRNN at T=5000 (~3 s per step). Other work on the machine makes both
slower and the timings noisy: the header prints the load average.

How to run:

    .venv/bin/python benchmarks/rnn_speed.py [--quick]
        [--lengths 1000,2000,5000] [--recompute 100[,70,...]] [--repeats 5]
        [--json PATH]

torch is optional (the `bench` extra): `pip install torch==2.13.0` installs a
CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
"""

import argparse
import functools
import gc
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
    max_rss_mb,
    run_fresh,
    targets_table,
)

import keras_seq  # noqa: E402

UNITS = 128
CLASSES = 1000
A_BATCH, A_STEPS, A_FEATURES, A_DEPTHS = 64, 100, 32, (1, 3)
B_BATCH, B_VOCAB, B_EMBED, B_DEPTH = 32, 1000, 32, 2
DEFAULT_LENGTHS = (1000, 2000, 5000)
QUICK_LENGTHS = (1000,)
MEMORY_STEPS = 3

SHARED, SIMPLE, GRU, TORCH = "SharedRNN", "SimpleRNN", "GRU", "torch.nn.RNN"
XLA = " (jit_compile=True)"
# Segment length of the recompute rows. At T=5000 k=100 (no padded last
# segment) met both targets: 0.22x the default's memory increase at 1.20x its
# step time; k=True (71) 0.26x at 1.27x; k=250 +172 MB (0.29x) at about the
# default's time, measured under load (see the README).
DEFAULT_RECOMPUTE = (100,)


def recompute_variant(k):
    return f"{SHARED} (recompute={k})"


def recompute_of(variant):
    """The `recompute` argument a variant name asks for (None: default)."""
    prefix = f"{SHARED} (recompute="
    if not variant.startswith(prefix):
        return None
    value = variant[len(prefix) : -1]
    return True if value == "True" else int(value)


# The targets, as printed in the PASS/MISS table.
TARGETS = {
    "a": "SharedRNN step <= 0.6x SimpleRNN at T=100",
    "b": "SharedRNN step <= 0.2x SimpleRNN at T=5000 (Embedding, depth 2)",
    "growth": "SharedRNN step time T=1000 -> T=5000 grows <= 5.5x",
    "memory": "SharedRNN peak training memory at T=5000 <= SimpleRNN's",
    "recompute memory": "SharedRNN(recompute) training-memory increase at "
    "T=5000 <= 1/3 of default SharedRNN's",
    "recompute time": "SharedRNN(recompute) step at T=5000 <= 1.3x default SharedRNN's",
}


# ---------------------------------------------------------------- models


def recurrent_layers(variant, depth):
    """The recurrent part of a Keras variant as a list of layers."""
    if variant.startswith(SHARED):
        recompute = recompute_of(variant)
        return [keras_seq.layers.SharedRNN(UNITS, depth=depth, recompute=recompute)]
    layer_class = {SIMPLE: keras.layers.SimpleRNN, GRU: keras.layers.GRU}[
        variant.removesuffix(XLA)
    ]
    return [
        layer_class(UNITS, return_sequences=level < depth - 1) for level in range(depth)
    ]


def keras_model(variant, depth, timesteps, features=None):
    """A compiled classifier; token ids through an Embedding if no features."""
    if features is None:
        head = [
            keras.Input((timesteps,), dtype="int32"),
            keras.layers.Embedding(B_VOCAB, B_EMBED),
        ]
    else:
        head = [keras.Input((timesteps, features))]
    model = keras.Sequential(
        head
        + recurrent_layers(variant, depth)
        + [keras.layers.Dense(CLASSES, activation="softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss="sparse_categorical_crossentropy",
        jit_compile=True if variant.endswith(XLA) else "auto",
    )
    return model


def workload_data(batch, timesteps, features=None, seed=0):
    rng = np.random.default_rng(seed)
    if features is None:
        x = rng.integers(0, B_VOCAB, size=(batch, timesteps), dtype="int32")
    else:
        x = rng.standard_normal((batch, timesteps, features), dtype="float32")
    y = rng.integers(0, CLASSES, size=(batch,), dtype="int32")
    return x, y


def keras_step(variant, depth, x, y, features=None):
    """A callable running one blocking training step of a new Keras model.

    `train_on_batch` returns the loss as numpy, so the step has finished when
    the call returns.
    """
    model = keras_model(variant, depth, x.shape[1], features)
    return lambda: model.train_on_batch(x, y)


def torch_step(depth, x, y, features=None):
    """A callable running one training step of the same classifier in torch.

    nn.RNN (tanh, `depth` layers), last output, Linear, cross-entropy on the
    logits (as softmax + sparse categorical crossentropy), Adam.
    """
    import torch

    torch.manual_seed(0)
    embedding = None
    if features is None:
        embedding = torch.nn.Embedding(B_VOCAB, B_EMBED)
        features = B_EMBED
    rnn = torch.nn.RNN(features, UNITS, num_layers=depth, batch_first=True)
    dense = torch.nn.Linear(UNITS, CLASSES)
    modules = torch.nn.ModuleList([m for m in (embedding, rnn, dense) if m is not None])
    optimizer = torch.optim.Adam(modules.parameters())
    inputs = torch.from_numpy(x.astype("float32" if embedding is None else "int64"))
    targets = torch.from_numpy(y.astype("int64"))

    def step():
        optimizer.zero_grad()
        sequences = inputs if embedding is None else embedding(inputs)
        outputs, _ = rnn(sequences)
        loss = torch.nn.functional.cross_entropy(dense(outputs[:, -1]), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_status(quick):
    """(importable, note for the header)."""
    if quick:
        return False, "skipped (--quick)"
    try:
        import torch
    except ImportError:
        return False, "not installed (pip install torch==2.13.0), skipped"
    return True, f"{torch.__version__} ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------- timing


def time_interleaved(builders, warmup, repeats, steps_per_repeat, errors, label):
    """ms per step for every variant, `repeats` samples each, interleaved.

    `builders` maps a variant name to a function returning its step callable.
    A variant that fails to build or warm up is reported in `errors` and left
    out, so one broken layer does not hide the others' numbers.
    """
    steps = {}
    for name, build in builders.items():
        try:
            step = build()
            for _ in range(warmup):
                step()
        except Exception as error:  # noqa: BLE001 - report, keep benchmarking
            errors.append(f"{label} / {name}: {type(error).__name__}: {error}")
            continue
        steps[name] = step
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_repeat):
                step()
            elapsed = time.perf_counter() - start
            samples[name].append(1000.0 * elapsed / steps_per_repeat)
    return samples


def release_models():
    keras.backend.clear_session()
    gc.collect()


def time_workload(label, variants, depth, data, features, args, errors, **timing):
    """Speed rows for one workload: every Keras variant, plus torch if enabled."""
    progress(f"{label} ...")
    x, y = data
    builders = {
        variant: functools.partial(keras_step, variant, depth, x, y, features)
        for variant in variants
    }
    if args.torch:
        builders[TORCH] = functools.partial(torch_step, depth, x, y, features)
    samples = time_interleaved(
        builders, repeats=args.repeats, errors=errors, label=label, **timing
    )
    release_models()
    return [
        {
            "label": label,
            "depth": depth,
            "timesteps": x.shape[1],
            "variant": name,
            "median_ms": statistics.median(values),
            "samples_ms": values,
        }
        for name, values in samples.items()
    ]


def run_workload_a(args, errors):
    variants = [SHARED, SIMPLE, SHARED + XLA, SIMPLE + XLA]
    if not args.quick:
        variants.insert(2, GRU)
    data = workload_data(A_BATCH, A_STEPS, A_FEATURES)
    rows = []
    for depth in A_DEPTHS:
        rows += time_workload(
            f"A: T={A_STEPS}, depth {depth}",
            variants,
            depth,
            data,
            A_FEATURES,
            args,
            errors,
            warmup=3,
            steps_per_repeat=5,
        )
    return rows


def b_variants(args):
    return [SHARED] + [recompute_variant(k) for k in args.recompute] + [SIMPLE]


def run_workload_b(args, errors):
    rows = []
    for timesteps in args.lengths:
        rows += time_workload(
            f"B: T={timesteps}, Embedding, depth {B_DEPTH}",
            b_variants(args),
            B_DEPTH,
            workload_data(B_BATCH, timesteps),
            None,
            args,
            errors,
            warmup=2,
            steps_per_repeat=1,
        )
    return rows


# ---------------------------------------------------------------- memory


def run_memory_child(variant, timesteps):
    """Hidden `--child` mode: one fresh process, prints one JSON line."""
    x, y = workload_data(B_BATCH, timesteps)
    model = keras_model(variant, B_DEPTH, timesteps)
    baseline = max_rss_mb()
    for _ in range(MEMORY_STEPS):
        model.train_on_batch(x, y)
    peak = max_rss_mb()
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))


def run_memory(args, errors):
    rows = []
    for timesteps in args.lengths:
        for variant in b_variants(args):
            progress(f"memory: {variant}, T={timesteps} ...")
            measured = run_fresh(
                os.path.abspath(__file__),
                ["--child", variant, str(timesteps)],
                f"memory / {variant}, T={timesteps}",
                errors,
            )
            if measured is None:
                continue
            rows.append(
                {
                    "timesteps": timesteps,
                    "variant": variant,
                    **measured,
                    "increase_mb": measured["peak_mb"] - measured["baseline_mb"],
                }
            )
    return rows


MEMORY_NOTE = f"""\
Memory, workload B, one fresh process per row (batch {B_BATCH}, depth {B_DEPTH}):
- baseline = ru_maxrss (high-water mark of the whole process's resident set:
  Python, TensorFlow runtime, data) after building and compiling the model,
  before the first training step;
- peak = ru_maxrss of the same process after {MEMORY_STEPS} training steps
  (train_on_batch; the first step also traces the training function);
- increase = peak - baseline: how far training pushed the high-water mark
  (activations kept for the backward pass, gradients, optimizer state, graph
  tracing)."""


# ---------------------------------------------------------------- report


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value, digits=2, suffix=""):
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def find(rows, label, variant):
    for row in rows:
        if row["label"] == label and row["variant"] == variant:
            return row["median_ms"]
    return None


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def speed_table(rows):
    lines = [
        "| workload | variant | ms/step (median) | min-max | vs SimpleRNN "
        "| vs GRU | vs torch | vs SharedRNN |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ms = row["median_ms"]
        peers = [
            ratio(ms, find(rows, row["label"], p)) for p in (SIMPLE, GRU, TORCH, SHARED)
        ]
        spread = f"{min(row['samples_ms']):.1f}-{max(row['samples_ms']):.1f}"
        lines.append(
            f"| {row['label']} | {row['variant']} | {ms:.1f} | {spread} | "
            + " | ".join(fmt(p, suffix="x") for p in peers)
            + " |"
        )
    return "\n".join(lines)


def memory_table(rows):
    lines = [
        "| T | variant | baseline MB | peak MB | increase MB | increase vs "
        "SimpleRNN | increase vs SharedRNN |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def increase(timesteps, variant):
        return next(
            (
                r["increase_mb"]
                for r in rows
                if r["timesteps"] == timesteps and r["variant"] == variant
            ),
            None,
        )

    for row in rows:
        peers = [
            ratio(row["increase_mb"], increase(row["timesteps"], peer))
            for peer in (SIMPLE, SHARED)
        ]
        lines.append(
            f"| {row['timesteps']} | {row['variant']} | {row['baseline_mb']:.0f} | "
            f"{row['peak_mb']:.0f} | {row['increase_mb']:.0f} | "
            + " | ".join(fmt(p, suffix="x") for p in peers)
            + " |"
        )
    return "\n".join(lines)


def evaluate_targets(speed, memory, recompute=()):
    """[(target, measured text, status)]; status is PASS, MISS or not run."""

    def verdict(value, limit):
        return "not run" if value is None else ("PASS" if value <= limit else "MISS")

    results = []
    for depth in A_DEPTHS:
        label = f"A: T={A_STEPS}, depth {depth}"
        value = ratio(find(speed, label, SHARED), find(speed, label, SIMPLE))
        results.append(
            (
                f"{TARGETS['a']}, depth {depth}",
                fmt(value, suffix="x"),
                verdict(value, 0.6),
            )
        )

    long_label = f"B: T=5000, Embedding, depth {B_DEPTH}"
    value = ratio(find(speed, long_label, SHARED), find(speed, long_label, SIMPLE))
    results.append((TARGETS["b"], fmt(value, suffix="x"), verdict(value, 0.2)))

    short_label = f"B: T=1000, Embedding, depth {B_DEPTH}"
    value = ratio(find(speed, long_label, SHARED), find(speed, short_label, SHARED))
    results.append((TARGETS["growth"], fmt(value, suffix="x"), verdict(value, 5.5)))

    at_5000 = {r["variant"]: r for r in memory if r["timesteps"] == 5000}
    if SHARED in at_5000 and SIMPLE in at_5000:
        shared, simple = at_5000[SHARED], at_5000[SIMPLE]
        measured = (
            f"increase {shared['increase_mb']:.0f} vs {simple['increase_mb']:.0f} MB; "
            f"peak {shared['peak_mb']:.0f} vs {simple['peak_mb']:.0f} MB"
        )
        passed = shared["increase_mb"] <= simple["increase_mb"]
        results.append((TARGETS["memory"], measured, "PASS" if passed else "MISS"))
    else:
        results.append((TARGETS["memory"], "—", "not run"))

    for k in recompute:
        variant = recompute_variant(k)
        value = ratio(find(speed, long_label, variant), find(speed, long_label, SHARED))
        results.append(
            (
                f"{TARGETS['recompute time']}, k={k}",
                fmt(value, suffix="x"),
                verdict(value, 1.3),
            )
        )
        value, measured = None, "—"
        if SHARED in at_5000 and variant in at_5000:
            recomputing, shared = at_5000[variant], at_5000[SHARED]
            value = ratio(recomputing["increase_mb"], shared["increase_mb"])
            measured = (
                f"increase {recomputing['increase_mb']:.0f} vs "
                f"{shared['increase_mb']:.0f} MB ({fmt(value)} of it)"
            )
        results.append(
            (
                f"{TARGETS['recompute memory']}, k={k}",
                measured,
                verdict(value, 1 / 3),
            )
        )
    return results


# ---------------------------------------------------------------- main


def parse_lengths(text):
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        )
    return lengths


def parse_recompute(text):
    values = []
    for part in text.split(","):
        if part == "True":
            values.append(True)
            continue
        try:
            values.append(int(part))
        except ValueError:
            values = []
            break
    if not values or any(v is not True and v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 1 (or True), got {text!r}"
        )
    return tuple(values)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Time training steps of keras_seq.layers.SharedRNN against "
        "SimpleRNN, GRU and torch.nn.RNN; print Markdown tables."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="workload B at T=1000 only (unless --lengths), no GRU, no torch",
    )
    parser.add_argument(
        "--lengths",
        type=parse_lengths,
        default=None,
        help="comma-separated sequence lengths for workload B "
        f"(default {','.join(map(str, DEFAULT_LENGTHS))})",
    )
    parser.add_argument(
        "--recompute",
        type=parse_recompute,
        default=DEFAULT_RECOMPUTE,
        help="segment lengths k of the SharedRNN(recompute=k) rows of workload "
        f"B (default {','.join(map(str, DEFAULT_RECOMPUTE))})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed repeats per variant; the median is reported (default 5)",
    )
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    if args.lengths is None:
        args.lengths = QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        variant, timesteps = args.child
        run_memory_child(variant, int(timesteps))
        return

    keras.utils.set_random_seed(0)
    args.torch, torch_note = torch_status(args.quick)
    env = environment(torch=torch_note)
    for key, value in env.items():
        print(f"{key}: {value}")
    print()

    started = time.perf_counter()
    errors = []
    speed = run_workload_a(args, errors) + run_workload_b(args, errors)
    memory = run_memory(args, errors)
    targets = evaluate_targets(speed, memory, args.recompute)
    minutes = (time.perf_counter() - started) / 60

    print(
        "## Training step time\n\n"
        f"Steady state, median of {args.repeats} interleaved repeats; workload A "
        "times 5 steps per repeat after 3 warm-up steps, workload B 1 step per "
        "repeat after 2. Ratios divide this row's median by the peer's median in "
        "the same workload (below 1 = faster). Keras rows use train_on_batch with "
        'the default jit_compile="auto" (no XLA on CPU) unless marked.\n'
    )
    print(speed_table(speed))
    print("\n## Peak training memory\n")
    print(MEMORY_NOTE + "\n")
    print(memory_table(memory))
    finish(
        targets_table(targets),
        errors,
        minutes,
        args.json,
        {
            "environment": env,
            "repeats": args.repeats,
            "recompute": list(args.recompute),
            "speed": speed,
            "memory": memory,
            "targets": [
                {"target": t, "measured": m, "status": s} for t, m, s in targets
            ],
        },
    )


if __name__ == "__main__":
    main()
