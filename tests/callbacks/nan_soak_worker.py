"""NaN/Inf soak of `GradientMonitor(on_nan="skip")`, shared by
`tests/callbacks/test_nan_soak.py` and `benchmarks/nan_soak.py`.

`soak(case, steps)` trains a small model (an exponential input projection,
`keras_seq.layers.SharedRNN` of depth 2, Keras's `SimpleRNN`, a float32
head; Adam) for `steps` batches of 8, a random 15% of them poisoned in one
sample each, the kinds taking turns:

- `input`: a NaN, +Inf or -Inf input element;
- `target`: a NaN, +Inf or -Inf target;
- `overflow`: finite data whose gradient is not: +-3e4 at two time steps of
  one input feature (exp(3e4 w) overflows float32 for any weight |w| > 3e-3
  of either sign, float16 above 4e-4), or a target of +-1e21 (its squared
  error overflows float32; the gradient elements stay finite, their squares
  do not).

After every step a callback records whether every weight and optimizer
variable is finite (on every replica), what changed, and what the monitor
reported: its `skipped_steps` count, step by step, and on recorded steps the
`skipped` column of `to_frame()`. `problems(result)` lists every way the
result breaks the contract (see its docstring for what "agree" means under
loss scaling).

Run as a script it is the child process of the `MirroredStrategy` cases (two
logical CPU devices must be configured before TensorFlow starts; one
MirroredStrategy per process) and prints one JSON line per case, the result
or `{"case", "error"}` if `fit` raised:

    python tests/callbacks/nan_soak_worker.py --steps 50 mirrored
"""

import argparse
import collections
import json
import sys
import time
import warnings

import tensorflow as tf

if __name__ == "__main__" and any(a.startswith("mirrored") for a in sys.argv):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_seq  # noqa: E402

# case -> (strategy, dtype policy, the monitor's `every`). float32 cases
# record every other step, so poisons meet both the recording and the light
# step; mixed precision records every step, to hold each against the
# LossScaleOptimizer.
CASES = {
    "float32": ("default", "float32", 2),
    "mirrored": ("mirrored", "float32", 2),
    "mixed_float16": ("default", "mixed_float16", 1),
    "mirrored_mixed_float16": ("mirrored", "mixed_float16", 1),
}
BATCH, TIMESTEPS, FEATURES = 8, 6, 3
FRACTION = 0.15
KINDS = ("input", "target", "overflow")
HUGE_INPUT = 3e4  # finite in float16 and float32; exp(3e4 * w) is not
HUGE_TARGET = 1e21  # finite; its squared error overflows float32
# The loss scale doubles after this many finite steps (Keras's default is
# 2000): it climbs back into float16 overflows on clean batches again and
# again, steps the LossScaleOptimizer skips by itself.
GROWTH_STEPS = 2


def build_model():
    """Exponential input projection -> SharedRNN (depth 2) -> SimpleRNN ->
    float32 head, Adam (in a LossScaleOptimizer under mixed_float16)."""
    model = keras_seq.Sequential(
        [
            keras.Input((TIMESTEPS, FEATURES)),
            keras.layers.Dense(4, activation="exponential", name="expand"),
            keras_seq.layers.SharedRNN(8, depth=2, return_sequences=True, name="rnn"),
            keras.layers.SimpleRNN(8, name="simple"),
            keras.layers.Dense(1, dtype="float32", name="head"),
        ]
    )
    optimizer = keras.optimizers.Adam(1e-3)
    if keras.config.dtype_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, dynamic_growth_steps=GROWTH_STEPS
        )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def poisoned_data(steps, seed=0, fraction=FRACTION):
    """`(x, y, poison)`: `steps` batches of clean data, `round(fraction *
    steps)` of them (at least one of each kind) poisoned in one sample;
    `poison` maps step -> `[kind, detail, row in the batch]`."""
    rng = np.random.RandomState(seed)
    x = (0.5 * rng.randn(steps * BATCH, TIMESTEPS, FEATURES)).astype("float32")
    y = rng.randn(steps * BATCH, 1).astype("float32")
    count = max(len(KINDS), int(round(fraction * steps)))
    chosen = sorted(rng.choice(steps, size=count, replace=False).tolist())
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    poison = {}
    for step, kind in zip(chosen, kinds):
        row = step * BATCH + rng.randint(BATCH)
        t, f = rng.randint(TIMESTEPS), rng.randint(FEATURES)
        if kind in ("input", "target"):
            detail = str(rng.choice(["nan", "inf", "-inf"]))
            if kind == "input":
                x[row, t, f] = float(detail)
            else:
                y[row, 0] = float(detail)
        elif rng.rand() < 0.5:
            # Both signs: whatever the sign of a unit's weight, one of the two
            # steps overflows its exp.
            detail = f"exp(+-{HUGE_INPUT:g})"
            t2 = (t + 1 + rng.randint(TIMESTEPS - 1)) % TIMESTEPS
            x[row, t, f], x[row, t2, f] = HUGE_INPUT, -HUGE_INPUT
        else:
            detail = f"loss(y={HUGE_TARGET:g})"
            y[row, 0] = HUGE_TARGET * rng.choice([-1.0, 1.0])
        poison[step] = [kind, detail, int(row % BATCH)]
    return x, y, poison


def _same(a, b):
    # A NaN weight that stays NaN has not changed.
    return np.array_equal(a, b, equal_nan=np.issubdtype(a.dtype, np.floating))


class StepChecker(keras.callbacks.Callback):
    """After every batch: are all weights and optimizer variables finite (on
    every replica), which changed, and what did the monitor report. Listed
    after the monitor in `callbacks`, so the monitor has seen the batch."""

    def __init__(self, monitor, strategy):
        super().__init__()
        self.monitor = monitor
        self.strategy = strategy
        self.steps = []

    def _values(self, variables):
        local = self.strategy.experimental_local_results
        return [(v.path, [r.numpy() for r in local(v)]) for v in variables]

    def _snapshot(self):
        model, optimizer = self.model, self.model.optimizer
        loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        # The LossScaleOptimizer's own step counter and scale change on the
        # steps it skips, by design: they are held apart.
        own = {id(v) for v in optimizer._variables} if loss_scaling else set()
        trainable = {id(v) for v in model.trainable_weights}
        return {
            "weights": self._values(model.weights),
            "is_trainable": [id(v) in trainable for v in model.weights],
            "slots": self._values(v for v in optimizer.variables if id(v) not in own),
            "own": self._values(v for v in optimizer.variables if id(v) in own),
            "iterations": int(optimizer.iterations.numpy()),
            "scale": float(optimizer.dynamic_scale.numpy()) if loss_scaling else None,
        }

    def on_train_begin(self, logs=None):
        self._before = self._snapshot()
        self._skipped = _guarded(self.monitor)
        self._all_skipped = self.monitor.skipped_steps

    def on_train_batch_end(self, batch, logs=None):
        after, before = self._snapshot(), self._before
        nonfinite, mismatch = [], 0
        for path, replicas in after["weights"] + after["slots"] + after["own"]:
            if not all(np.all(np.isfinite(r)) for r in replicas):
                nonfinite.append(path)
            mismatch += any(not _same(replicas[0], r) for r in replicas)
        changed = [
            not _same(a[0], b[0])
            for (_, a), (_, b) in zip(after["weights"], before["weights"])
        ]
        trainable_changed = [c for c, t in zip(changed, after["is_trainable"]) if t]
        self.steps.append(
            {
                "step": len(self.steps),
                "monitor_step": self.monitor.steps - 1,
                "time": time.perf_counter(),
                "counted": _guarded(self.monitor) - self._skipped,
                "all_counted": self.monitor.skipped_steps - self._all_skipped,
                "nonfinite": nonfinite,
                "replica_mismatch": mismatch,
                "weights_changed": sum(changed),
                "trainable_changed": sum(trainable_changed),
                "trainable": len(trainable_changed),
                "slots_changed": sum(
                    not _same(a[0], b[0])
                    for (_, a), (_, b) in zip(after["slots"], before["slots"])
                ),
                "iterations": after["iterations"] - before["iterations"],
                "scale_down": None
                if after["scale"] is None
                else after["scale"] < before["scale"],
            }
        )
        self._before, self._skipped = after, _guarded(self.monitor)
        self._all_skipped = self.monitor.skipped_steps


def soak(case, steps, seed=0):
    """Train `steps` batches of `case` (a key of `CASES`) on
    `poisoned_data(steps, seed)` with `GradientMonitor(on_nan="skip")`;
    return what every step showed (JSON-able)."""
    strategy_name, policy, every = CASES[case]
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(policy)
    try:
        if strategy_name == "mirrored":
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        else:
            strategy = tf.distribute.get_strategy()
        with strategy.scope():
            model = build_model()
        x, y, poison = poisoned_data(steps, seed)
        monitor = keras_seq.callbacks.GradientMonitor(every=every, on_nan="skip")
        checker = StepChecker(monitor, strategy)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            began = time.perf_counter()
            model.fit(
                x,
                y,
                batch_size=BATCH,
                shuffle=False,
                verbose=0,
                callbacks=[monitor, checker],
            )
            seconds = time.perf_counter() - began
    finally:
        keras.config.set_dtype_policy("float32")
    frame = monitor.to_frame()
    nonfinite = monitor.diagnosis().nonfinite
    return {
        "case": case,
        "steps": steps,
        "seed": seed,
        "every": every,
        "replicas": strategy.num_replicas_in_sync,
        "loss_scaling": isinstance(
            model.optimizer, keras.optimizers.LossScaleOptimizer
        ),
        "seconds": seconds,
        "poison": {str(k): v for k, v in poison.items()},
        "monitor_steps": monitor.steps,
        "skipped_steps": _guarded(monitor),
        "first_nonfinite": None if nonfinite is None else nonfinite.step,
        "recorded": frame.step.tolist(),
        "frame_skipped": frame.step[frame.skipped].tolist(),
        "frame_loss_nonfinite": frame.step[~np.isfinite(frame.loss)].tolist(),
        # {"Category: message": times}
        "warnings": dict(
            collections.Counter(f"{w.category.__name__}: {w.message}" for w in caught)
        ),
        "per_step": checker.steps,
    }


def summary(result):
    """The step sets and counts `problems` compares, from a `soak` result."""
    per_step = result["per_step"]
    poisoned = sorted(int(k) for k in result["poison"])
    lso = [s["step"] for s in per_step if s["scale_down"]]
    return {
        "poisoned": poisoned,
        "kinds": {
            kind: sum(v[0] == kind for v in result["poison"].values()) for kind in KINDS
        },
        "counted": [s["step"] for s in per_step for _ in range(s["counted"])],
        "all_counted": [s["step"] for s in per_step for _ in range(s["all_counted"])],
        "untouched": [s["step"] for s in per_step if s["weights_changed"] == 0],
        "lso_skipped": lso,
        "clean_lso_skips": sorted(set(lso) - set(poisoned)),
        "nonfinite": sum(len(s["nonfinite"]) for s in per_step),
        "replica_mismatch": sum(s["replica_mismatch"] for s in per_step),
    }


def at_reads(result, steps):
    """`steps` as the monitor can count them: each mapped to the first step
    at or after it where the monitor reads its counters (the recorded steps
    and the last step: it reads nothing from the device in between)."""
    reads = sorted(set(result["recorded"]) | {len(result["per_step"]) - 1})
    return sorted(next(r for r in reads if r >= s) for s in steps)


def _guarded(monitor):
    """Updates the monitor skipped for non-finite values (its `on_nan`
    guard, or a non-finite loss under loss scaling): `skipped_steps` less
    the LossScaleOptimizer's own overflow skips."""
    return monitor.skipped_steps - monitor.loss_scale_skips


def problems(result):
    """Every way `result` breaks the contract of `on_nan="skip"`, as text;
    empty when it holds:

    - no weight or optimizer variable is ever non-finite, and all replicas
      hold the same values;
    - a step is either untouched (no weight, optimizer slot or iteration
      count changed; a LossScaleOptimizer's own scale and counter aside) or
      a full update (every trainable weight changed, one iteration);
    - without loss scaling: the steps the monitor counts in `skipped_steps`
      (read at recorded steps and the end, so compared `at_reads`), the
      untouched steps and the poisoned steps are the same set; so are the
      recorded steps with `skipped` True and the poisoned recorded steps;
      the diagnosis names the first poisoned step;
    - with a LossScaleOptimizer, "agree" means: the steps on which it
      lowered its scale (its skips), the untouched steps and the steps
      whose `to_frame()` row says `skipped` are the same set (every step is
      recorded); every poisoned step is in it, and so may be clean batches
      whose scaled float16 gradient overflowed. `skipped_steps` counts every
      one of them; less `loss_scale_skips` (the overflows, the
      LossScaleOptimizer's routine, not NaN events) it counts exactly the
      rows whose `loss` is not finite, the first of them named by the
      diagnosis.
    """
    if "error" in result:
        return [f"fit failed: {result['error'][:500]}"]
    found = []
    s = summary(result)
    steps = list(range(result["steps"]))
    per_step = result["per_step"]
    poisoned = set(s["poisoned"])

    def differ(name, got, expected):
        got, expected = sorted(got), sorted(expected)
        if got != expected:
            extra = sorted(set(got) - set(expected))
            missing = sorted(set(expected) - set(got))
            found.append(
                f"{name}: {len(got)} steps, expected {len(expected)}; "
                f"extra {extra[:10]}, missing {missing[:10]}"
            )

    if [p["step"] for p in per_step] != steps:
        found.append(f"{len(per_step)} steps ran, expected {len(steps)}")
    if [p["monitor_step"] for p in per_step] != steps[: len(per_step)]:
        found.append("the monitor's step index is not the batch index")
    if result["recorded"] != steps[:: result["every"]]:
        found.append(f"recorded steps {result['recorded'][:10]}...")
    for p in per_step:
        if p["nonfinite"]:
            found.append(f"step {p['step']}: non-finite {p['nonfinite'][:3]}")
        if p["replica_mismatch"]:
            found.append(f"step {p['step']}: replicas hold different values")
        if p["weights_changed"] == 0:
            if p["slots_changed"] or p["iterations"]:
                found.append(f"step {p['step']}: skipped but the optimizer moved")
        elif (
            p["trainable_changed"] != p["trainable"]
            or p["iterations"] != 1
            or p["slots_changed"] == 0
        ):
            found.append(
                f"step {p['step']}: partial update ({p['trainable_changed']}/"
                f"{p['trainable']} weights, {p['iterations']} iterations)"
            )
    if not result["loss_scaling"]:
        differ(
            "counted by the monitor vs poisoned",
            s["counted"],
            at_reads(result, poisoned),
        )
        differ("untouched vs poisoned", s["untouched"], poisoned)
        recorded = set(result["recorded"])
        differ(
            "frame skipped vs poisoned", result["frame_skipped"], poisoned & recorded
        )
        first = min(poisoned) if poisoned else None
    else:
        differ("LSO skipped vs untouched", s["lso_skipped"], s["untouched"])
        differ("frame skipped vs untouched", result["frame_skipped"], s["untouched"])
        if not poisoned <= set(s["untouched"]):
            updated = sorted(poisoned - set(s["untouched"]))
            found.append(f"poisoned steps updated: {updated[:10]}")
        loss = result["frame_loss_nonfinite"]
        differ("counted by the monitor vs non-finite loss", s["counted"], loss)
        # One truth: every update the LSO skipped is in `skipped_steps`.
        differ("skipped_steps vs untouched", s["all_counted"], s["untouched"])
        first = min(loss) if loss else None
    if result["first_nonfinite"] != first:
        found.append(
            f"diagnosis names step {result['first_nonfinite']}, expected {first}"
        )
    if result["skipped_steps"] != len(s["counted"]):
        found.append("skipped_steps is not the sum of its step-by-step increments")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if sum(case.startswith("mirrored") for case in args.cases) > 1:
        # Two MirroredStrategy objects in one process share collective
        # instance keys: the second fit aborts ("Shape mismatch in the
        # collective instance").
        parser.error("at most one mirrored case per process")
    for case in args.cases:
        try:
            result = soak(case, args.steps, args.seed)
        except Exception as error:  # reported as the case's problem
            result = {"case": case, "error": f"{type(error).__name__}: {error}"}
        # One line per case, as soon as it is done: a later case that hangs
        # or crashes the process leaves the earlier results.
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
