"""Repeated short `fit` calls with and without a GradientMonitor.

Tuners, loops and `keras_seq.depth.fit_reducing_depth` call `fit` many times
on one model. Each call after the first should reuse the traced training
functions: a monitored short fit should cost about what an unmonitored one
does. Workload: SharedRNN(128) on T=100, 32 features, batch 64, 10 batches
per fit, Dense(10) head, Adam; the fits of all variants interleaved in one
process; the first fit of each variant (tracing) reported apart; median of
the rest.

    .venv/bin/python benchmarks/repeated_fits.py [--fits 8] [--json PATH]
"""

import argparse
import time

import keras
import numpy as np
from bench_env import environment, finish, targets_table

import keras_seq

BATCH, STEPS, FEATURES, UNITS, BATCHES = 64, 100, 32, 128, 10


def build():
    model = keras_seq.Sequential(
        [
            keras.Input((STEPS, FEATURES)),
            keras_seq.layers.SharedRNN(UNITS),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=8, help="fits per variant")
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args()
    start = time.time()
    print("# Repeated short fits\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    rng = np.random.RandomState(0)
    x = rng.randn(BATCH * BATCHES, STEPS, FEATURES).astype("float32")
    y = rng.randn(BATCH * BATCHES, 10).astype("float32")
    variants = {
        "no monitor": (build(), None),
        "GradientMonitor(every=1)": (build(), None),
        "GradientMonitor(every=5)": (build(), None),
    }
    monitors = {
        "GradientMonitor(every=1)": keras_seq.callbacks.GradientMonitor(every=1),
        "GradientMonitor(every=5)": keras_seq.callbacks.GradientMonitor(every=5),
    }
    times = {name: [] for name in variants}
    for _ in range(args.fits):
        for name, (model, _) in variants.items():
            callbacks = [monitors[name]] if name in monitors else []
            began = time.perf_counter()
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append(time.perf_counter() - began)
    baseline = np.median(times["no monitor"][1:])
    print("\n| variant | first fit (s) | later fits, median (ms) | vs no monitor |")
    print("| --- | ---: | ---: | ---: |")
    rows = []
    for name, values in times.items():
        later = float(np.median(values[1:]))
        rows.append({"variant": name, "first_s": values[0], "later_ms": 1e3 * later})
        print(
            f"| {name} | {values[0]:.2f} | {1e3 * later:.0f} | "
            f"{later / baseline:.2f}x |"
        )
    worst = max(r["later_ms"] for r in rows[1:]) / (1e3 * baseline)
    targets = targets_table(
        [
            (
                "repeated 10-batch fits with a monitor <= 1.3x without",
                f"{worst:.2f}x",
                "met" if worst <= 1.3 else "missed",
            )
        ]
    )
    finish(targets, [], (time.time() - start) / 60, args.json, {"rows": rows})


if __name__ == "__main__":
    main()
