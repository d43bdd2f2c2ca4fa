"""Where `suggest_depth` + `reduce_depth` spend their time (issue 15).

A 6 x GRU(16) stack -> Dense(1) (or `--layer shared`: 6 x SharedRNN(32)),
Adam, MSE, on the two-signal regression of `benchmarks/depth_reduction.py`
(T=12, 512 samples), trained 3 epochs; then, twice (the second shows the
steady state): `suggest_depth(depth=3)`, then `reduce_depth(drop=plan)`
(the plan's own bridges, no forward pass) and, for comparison,
`reduce_depth(drop=plan, x=x)` (the bridges refitted by eager passes).
Beside them, one forward pass of the same stack over the 512 rows: eager in
one call, eager in batches of 64, `predict_on_batch` (first call: trace and
graph optimisation; second call) — the costs that bound the helpers, since
each runs a traced candidate function once and eager passes per bridge.
Times from `time.perf_counter`, one process; nothing asserted.

How to run (under a minute on 2 CPU cores):

    .venv/bin/python benchmarks/depth_overhead.py [--layer gru|shared]
"""

import argparse
import time

import keras
import numpy as np

import keras_seq
from keras_seq.depth import reduce_depth, suggest_depth

T, SAMPLES, LEVELS = 12, 512, 6


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, T, 2)).astype("float32")
    y = (x[:, -5:, 0].mean(1) - x[:, :5, 1].mean(1))[:, None].astype("float32")
    return x, y


def stack(kind):
    layers = [keras.Input((T, 2))]
    for i in range(LEVELS):
        sequences = i < LEVELS - 1
        if kind == "gru":
            layers.append(keras.layers.GRU(16, return_sequences=sequences))
        else:
            layers.append(keras_seq.layers.SharedRNN(32, return_sequences=sequences))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    return model


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=("gru", "shared"), default="gru")
    args = parser.parse_args()
    x, y = data()
    model = stack(args.layer)
    _, train = timed(lambda: model.fit(x, y, epochs=3, batch_size=32, verbose=0))
    print(f"backend {keras.backend.backend()}, {LEVELS} x {args.layer}, T={T}")
    print(f"fit, 3 epochs of {SAMPLES} samples: {train:.2f} s")
    for attempt in (1, 2):
        plan, suggest = timed(lambda: suggest_depth(model, x, y, depth=3))
        _, reduce = timed(lambda p=plan: reduce_depth(model, drop=p))
        _, refit = timed(lambda p=plan: reduce_depth(model, drop=p, x=x))
        print(
            f"call {attempt}: suggest_depth {suggest:.2f} s ({len(plan.candidates)} "
            f"candidate sets, {plan.traces} trace), reduce_depth with the plan's "
            f"bridges {reduce:.2f} s: {100 * (suggest + reduce) / train:.0f}% of "
            f"the fit; reduce_depth(x=x), bridges refitted: {refit:.2f} s"
        )
    features = keras.Sequential(model.layers[:-1])
    features(x[:2])
    _, eager = timed(lambda: features(x, training=False))
    _, batched = timed(
        lambda: [features(x[s : s + 64], training=False) for s in range(0, SAMPLES, 64)]
    )
    _, first = timed(lambda: features.predict_on_batch(x))
    _, second = timed(lambda: features.predict_on_batch(x))
    print(
        f"one forward pass of the stack over {SAMPLES} rows: eager {eager:.3f} s, "
        f"eager in batches of 64 {batched:.3f} s, predict_on_batch first "
        f"{first:.3f} s, then {second:.3f} s"
    )


if __name__ == "__main__":
    main()
