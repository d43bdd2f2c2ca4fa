"""SharedRNN against Keras's SimpleRNN on each backend: training step time
and peak memory, with a backend column.

What it measures: the steady-state time of one training step (forward,
backward and Adam update, `model.train_on_batch` after warm-up) of
`Input -> recurrence(128) -> last output -> Dense(10, softmax)`, sparse
categorical crossentropy, with `keras_seq.layers.SharedRNN` and with
`keras.layers.SimpleRNN` holding the same configuration:

- T=100: batch 64, 32 features, depth 1;
- T=1000 and T=5000: batch 32, 32 features, depth 1 (the long-sequence
  case, where the explicit BPTT pass matters);
- peak memory at T=5000: the rise of the process's high-water mark over one
  training step, each (backend, layer) in a fresh process;
- the GradientMonitor's cost: `model.fit` over one epoch of
  `MONITOR_BATCHES` batches (T=100, batch 64, SharedRNN), without a
  monitor, with `GradientMonitor()` (default `every=50`: 2 recorded steps
  per epoch) and with `GradientMonitor(every=1)` (every step recorded);
  time per step, after a warm-up epoch, interleaved, median over repeats.

The backend is fixed when Keras is imported, so each backend runs in its
own child process (this script with `--child BACKEND`), started with that
backend's venv: `.venv` (TensorFlow) and `.venv-jax` (JAX, no TensorFlow),
the two that `make test` builds. Within a child the two layers are timed
interleaved (repeat r runs every variant once before repeat r+1; the median
over repeats is reported), so the SharedRNN / SimpleRNN ratio on a backend
comes from one process; the backends ran one after the other. Keras models
use `jit_compile="auto"`: XLA on JAX, none on TensorFlow's CPU.

How to run (about 8 minutes on 2 idle cores; `--quick`: T=100 and 1000,
about 2 minutes):

    .venv/bin/python benchmarks/backend_speed.py [--quick] [--repeats 5]
        [--backends tensorflow,jax] [--json PATH]

Targets (issue 19), printed as PASS/MISS, not asserted: on JAX, SharedRNN
<= 0.6x SimpleRNN at T=5000 and no slower at T=100; SharedRNN's step time
from T=1000 to T=5000 <= 5.5x on JAX; the monitor at its default `every`
<= 1.02x a fit without it (each backend).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = {
    "tensorflow": os.path.join(ROOT, ".venv", "bin", "python"),
    "jax": os.path.join(ROOT, ".venv-jax", "bin", "python"),
}
SHARED, SIMPLE = "SharedRNN", "SimpleRNN"
UNITS, FEATURES, CLASSES = 128, 32, 10
# (timesteps, batch)
SHAPES = {100: 64, 1000: 32, 5000: 32}
QUICK_SHAPES = {100: 64, 1000: 32}
MEMORY_STEPS = 5000
MONITOR_BATCHES = 100
NONE, DEFAULT, EVERY_STEP = "no monitor", "every=50", "every=1"


# ------------------------------------------------------------ child side


def build(variant, timesteps):
    import keras

    import keras_seq

    layer = (
        keras_seq.layers.SharedRNN(UNITS)
        if variant == SHARED
        else keras.layers.SimpleRNN(UNITS)
    )
    model = keras.Sequential(
        [
            keras.Input((timesteps, FEATURES)),
            layer,
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def data(timesteps, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, timesteps, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=(batch,))
    return x, y


def step(model, x, y):
    import keras

    loss = model.train_on_batch(x, y)
    # Wait for the device: the loss is read on the host.
    return float(keras.ops.convert_to_numpy(loss))


def time_shapes(shapes, repeats, warmup=2, steps=3):
    """{timesteps: {variant: median seconds per step}}."""
    results = {}
    for timesteps, batch in shapes.items():
        x, y = data(timesteps, batch)
        models = {v: build(v, timesteps) for v in (SHARED, SIMPLE)}
        for model in models.values():
            for _ in range(warmup):
                step(model, x, y)
        samples = {v: [] for v in models}
        for _ in range(repeats):
            for variant, model in models.items():
                start = time.perf_counter()
                for _ in range(steps):
                    step(model, x, y)
                samples[variant].append((time.perf_counter() - start) / steps)
        results[timesteps] = {v: statistics.median(s) for v, s in samples.items()}
        print(f"# {timesteps}: {results[timesteps]}", file=sys.stderr, flush=True)
    return results


def time_monitor(repeats):
    """{variant: median seconds per step of a `fit` epoch}."""
    import keras

    import keras_seq

    batch, timesteps = SHAPES[100], 100
    x, y = data(timesteps, batch * MONITOR_BATCHES)
    monitors = {
        NONE: lambda: [],
        DEFAULT: lambda: [keras_seq.callbacks.GradientMonitor()],
        EVERY_STEP: lambda: [keras_seq.callbacks.GradientMonitor(every=1)],
    }
    models = {v: build(SHARED, timesteps) for v in monitors}
    callbacks = {v: make() for v, make in monitors.items()}

    def epoch(variant):
        models[variant].fit(
            x,
            y,
            batch_size=batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=callbacks[variant],
        )
        # `fit` ends with the state on the host (JAX) / in the variables.
        keras.ops.convert_to_numpy(models[variant].trainable_variables[0])

    for variant in monitors:
        epoch(variant)  # traces the training functions
    samples = {v: [] for v in monitors}
    for _ in range(repeats):
        for variant in monitors:
            start = time.perf_counter()
            epoch(variant)
            samples[variant].append((time.perf_counter() - start) / MONITOR_BATCHES)
    result = {v: statistics.median(t) for v, t in samples.items()}
    print(f"# monitor: {result}", file=sys.stderr, flush=True)
    return result


def memory(variant):
    """MB the high-water mark rose over one training step at T=5000."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_env import max_rss_mb

    x, y = data(MEMORY_STEPS, SHAPES[MEMORY_STEPS])
    model = build(variant, MEMORY_STEPS)
    model.predict(x[:1], verbose=0)  # weights and the inference function
    before = max_rss_mb()
    step(model, x, y)
    return max_rss_mb() - before


def child(args):
    os.environ["KERAS_BACKEND"] = args.child
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.memory:
        print(json.dumps({"memory_mb": memory(args.memory)}))
        return
    from bench_env import environment

    shapes = QUICK_SHAPES if args.quick else SHAPES
    print(
        json.dumps(
            {
                "environment": environment(),
                "times": time_shapes(shapes, args.repeats),
                "monitor": time_monitor(args.repeats),
            }
        )
    )


# ----------------------------------------------------------- parent side


def run_child(backend, extra):
    python = PYTHONS[backend]
    if not os.path.exists(python):
        raise RuntimeError(f"{python} is missing: run `make test` first")
    # Through a launcher, so the child's high-water mark is its own.
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    command = [python, "-c", launcher, python, __file__, "--child", backend, *extra]
    env = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{backend} {extra}: exit {done.returncode}: {tail}")
    return json.loads(lines[-1])


def fmt(seconds):
    return f"{seconds * 1000:.1f}"


def report(results, memory_rows, backends):
    print("\n## Training step (ms, median; ratio against SimpleRNN, same process)\n")
    print("| backend | T | batch | SharedRNN | SimpleRNN | SharedRNN / SimpleRNN |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for backend in backends:
        for timesteps, times in results[backend]["times"].items():
            shared, simple = times[SHARED], times[SIMPLE]
            print(
                f"| {backend} | {timesteps} | {SHAPES[int(timesteps)]} | "
                f"{fmt(shared)} | {fmt(simple)} | {shared / simple:.2f}x |"
            )
    if memory_rows:
        print(f"\n## Peak memory rise over one training step, T={MEMORY_STEPS} (MB)\n")
        print("| backend | SharedRNN | SimpleRNN |")
        print("| --- | ---: | ---: |")
        for backend in backends:
            row = memory_rows.get(backend, {})
            cells = [f"{row[v]:.0f}" if v in row else "-" for v in (SHARED, SIMPLE)]
            print(f"| {backend} | {cells[0]} | {cells[1]} |")
    print(
        f"\n## GradientMonitor cost (ms per step of a {MONITOR_BATCHES}-batch "
        "fit epoch, T=100, batch 64, SharedRNN; ratio against no monitor)\n"
    )
    print(f"| backend | {NONE} | {DEFAULT} (default) | {EVERY_STEP} |")
    print("| --- | ---: | ---: | ---: |")
    targets = []
    for backend in backends:
        times = results[backend]["monitor"]
        base = times[NONE]
        cells = [fmt(base)] + [
            f"{fmt(times[v])} ({times[v] / base:.3f}x)" for v in (DEFAULT, EVERY_STEP)
        ]
        print(f"| {backend} | " + " | ".join(cells) + " |")
        r = times[DEFAULT] / base
        targets.append((f"{backend}: monitor at default every <= 1.02x", r, r <= 1.02))
    if "jax" in results:
        times = {int(t): v for t, v in results["jax"]["times"].items()}
        if 5000 in times:
            r = times[5000][SHARED] / times[5000][SIMPLE]
            targets.append(("JAX, T=5000: SharedRNN <= 0.6x SimpleRNN", r, r <= 0.6))
        r = times[100][SHARED] / times[100][SIMPLE]
        targets.append(("JAX, T=100: SharedRNN <= 1.0x SimpleRNN", r, r <= 1.0))
        if 5000 in times and 1000 in times:
            r = times[5000][SHARED] / times[1000][SHARED]
            targets.append(("JAX, SharedRNN T=1000 -> 5000 <= 5.5x", r, r <= 5.5))
    print("\n## Targets (issue 19; reported, not asserted)\n")
    print("| target | measured | status |\n| --- | ---: | --- |")
    for name, value, ok in targets:
        print(f"| {name} | {value:.2f}x | {'PASS' if ok else 'MISS'} |")
    for backend in backends:
        env = results[backend]["environment"]
        print(f"\n{backend}: " + "; ".join(f"{k}: {v}" for k, v in env.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in PYTHONS:
            parser.error(
                f"--backends: {backend!r} is not one of {sorted(PYTHONS)}; "
                f"received {args.backends!r}"
            )
    start = time.perf_counter()
    extra = ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    results = {b: run_child(b, extra) for b in backends}
    memory_rows = {}
    if not args.quick:
        for backend in backends:
            memory_rows[backend] = {
                v: run_child(backend, ["--memory", v])["memory_mb"]
                for v in (SHARED, SIMPLE)
            }
    report(results, memory_rows, backends)
    print(f"\nTotal time: {(time.perf_counter() - start) / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"results": results, "memory": memory_rows}, file, indent=2)


if __name__ == "__main__":
    main()
