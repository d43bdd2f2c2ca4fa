"""Repeated short `fit` calls with and without a GradientMonitor.

Tuners, loops and `keras_seq.depth.fit_reducing_depth` call `fit` many times
on one model. Each call after the first should reuse the traced training
functions: a monitored short fit should cost about what an unmonitored one
does (the issue's target: within 1.3x). Workload: SharedRNN(128) on T=100,
32 features, batch 64, 10 batches per fit, Dense(10) head, Adam; one model
per variant, each monitored variant keeps ONE `GradientMonitor` object for
all its fits; the fits of all variants interleaved in one process (the
order rotates by one variant per round); the first fit of each variant
(tracing) reported apart; median wall time of the rest.
`benchmarks/monitor_overhead.py` prints the same row (it imports
`time_repeated_fits`).

How long: about 20 s on 2 idle CPU cores.

    .venv/bin/python benchmarks/repeated_fits.py [--fits 10] [--json PATH]
"""

import argparse
import time

import keras
import numpy as np
from bench_env import environment, finish, targets_table

import keras_seq

BATCH, STEPS, FEATURES, UNITS, BATCHES = 64, 100, 32, 128, 10
FITS = 10
TARGET = 1.3  # later monitored fit / later unmonitored fit
NONE = "no monitor"
# name -> GradientMonitor arguments (None: no monitor). every=1 records every
# step (the worst case); GradientMonitor() is the library's defaults.
VARIANTS = {
    NONE: None,
    "GradientMonitor(every=1)": {"every": 1},
    "GradientMonitor(every=5)": {"every": 5},
    "GradientMonitor() (defaults)": {},
}


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


def time_repeated_fits(fits=FITS, progress=None):
    """Rows `{variant, first_s, later_ms, samples_ms, ratio}`, one per variant.

    `later_ms` is the median wall time of fits 2..`fits`; `ratio` is that
    over the no-monitor variant's.
    """
    if fits < 2:
        raise ValueError(f"Argument `fits` must be >= 2. Received: fits={fits}")
    rng = np.random.RandomState(0)
    x = rng.randn(BATCH * BATCHES, STEPS, FEATURES).astype("float32")
    y = rng.randn(BATCH * BATCHES, 10).astype("float32")
    keras.utils.set_random_seed(0)
    weights = build().get_weights()
    models, monitors = {}, {}
    for name, options in VARIANTS.items():
        models[name] = build()
        models[name].set_weights(weights)
        if options is not None:
            # One monitor for all fits of the variant: that is the case the
            # reuse of the traced functions is for.
            monitors[name] = keras_seq.callbacks.GradientMonitor(**options)
    times = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for round_ in range(fits):
        if progress is not None:
            progress(f"repeated short fits: round {round_ + 1}/{fits} ...")
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            callbacks = [monitors[name]] if name in monitors else []
            began = time.perf_counter()
            models[name].fit(
                x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks
            )
            times[name].append(time.perf_counter() - began)
    baseline = float(np.median(times[NONE][1:]))
    return [
        {
            "variant": name,
            "fits": fits,
            "batches_per_fit": BATCHES,
            "first_s": values[0],
            "later_ms": 1e3 * float(np.median(values[1:])),
            "samples_ms": [1e3 * v for v in values],
            "ratio": float(np.median(values[1:])) / baseline,
        }
        for name, values in times.items()
    ]


def repeated_table(rows):
    lines = [
        "| variant | first fit (s) | later fits, median (ms) | min-max (ms) "
        "| vs no monitor |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        later = row["samples_ms"][1:]
        lines.append(
            f"| {row['variant']} | {row['first_s']:.2f} | {row['later_ms']:.0f} | "
            f"{min(later):.0f}-{max(later):.0f} | {row['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def repeated_target(rows):
    """`(target, measured, status)` for `targets_table`: the worst monitor."""
    worst = max(row["ratio"] for row in rows if row["variant"] != NONE)
    return (
        f"repeated {BATCHES}-batch fits with one monitor <= {TARGET}x without "
        "(worst monitored variant)",
        f"{worst:.2f}x",
        "PASS" if worst <= TARGET else "MISS",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=FITS, help="fits per variant")
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args()
    if args.fits < 2:
        parser.error(f"--fits must be >= 2, got {args.fits}")
    start = time.time()
    print("# Repeated short fits\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    rows = time_repeated_fits(args.fits)
    print()
    print(repeated_table(rows))
    targets = targets_table([repeated_target(rows)])
    finish(targets, [], (time.time() - start) / 60, args.json, {"rows": rows})


if __name__ == "__main__":
    main()
