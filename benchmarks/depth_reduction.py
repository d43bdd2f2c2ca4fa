"""Which recurrent levels `keras_seq.depth` removes, and what that costs.

Parts 1 and 4 run on the adding problem (Hochreiter & Schmidhuber 1997):
the input is `(batch, T, 2)`, a uniform random value in [0, 1) per step and
a marker channel with exactly two 1s; the target is the sum of the two
marked values. Always predicting 1 gives an MSE of about 0.167 (1/6). T=30
unless noted; 4000 training and 500 validation samples (3000 and 500 with
`--quick`). Part 1 trains with Adam(1e-3, clipnorm=1) and batch 32. Part 2
runs six tasks (below). All methods run side by side in one process, on the
same trained models, for several seeds (`--seeds`, default 2: seeds 0, 1;
the seed draws the data and, through `keras.utils.set_random_seed`, the
initial weights and the batch order).

1. Planted redundancy. `Dense(32)` -> 4 separate `SharedRNN(32,
   return_sequences=True)` layers -> `Dense(1)` (the top recurrent layer
   returns its last output), trained briefly. Two exact pass-through levels
   (`SharedRNN(32, activation="linear")` with kernel = identity, recurrent
   kernel = 0, bias = 0: output == input bit for bit) are inserted at random
   positions (the top and the bottom included) into a new model holding the
   trained weights; its outputs are checked against the trained model's.
   Every method is asked for `suggest_depth(model, x, y, depth=4,
   method=m)` on the diagnosis sample; found = `set(plan.drop)` is exactly
   the two planted levels.
2. Remove, then heal, on six tasks (`TASKS`): the adding problem on
   `SharedRNN(32, depth=6)`; a two-signal regression (T=12; the mean of the
   last 5 steps of one channel minus the mean of the first 5 of the other)
   on 6 x GRU(16), 4 x LSTM(16) and 4 x Bidirectional(LSTM(8)); the yearly
   sunspot numbers (windows of 24 years -> the next, the last 20% validate)
   on 5 x SimpleRNN(16); next-word prediction on the built-in idioms
   (Embedding(mask_zero=True) -> 4 x GRU(32) -> softmax; every pair trains
   and validates: the task is recall of the corpus). Each model is
   trained, then about half of its levels are removed by each method:
   `last` (the position baseline: the levels just below the top go, the
   top level stays, as `reduce_depth(depth=...)`; no bridge), `last +
   bridge`, `similarity` and `auto` (suggest_depth's plans, bridged);
   validation loss before healing and after `heal_epochs` epochs of
   `reduce_depth(..., heal_epochs=...)` (`heal="all"`; and `auto, heal
   cut`: the layers next to the cuts first, for the same budget).
   suggest_depth calibrates on 512 training samples. Kendall tau-b: auto's
   level ranking against the bridged leave-one-out cost on the validation
   set, and the calibration losses of every candidate set of the plan's
   size against their validation losses. Time: suggest_depth +
   reduce_depth against the model's own training time, same process.
4. Rescue. `SharedRNN(32, depth=8, activation="sigmoid")` -> `Dense(1)` on
   the adding problem at T=10 (at T=30 no sigmoid stack learns it in 30
   epochs, not even depth 1, so T=30 could not show a rescue), Adam(1e-2),
   batch 64:
   `fit_reducing_depth(model, x, y, epochs=..., min_depth=2, patience=2,
   method="auto")` against the full model trained for the same wall time
   (from the same initial weights, stopped by a callback when the time is
   up). min_depth=2 keeps a bottom and a top level, so the bottom level's
   gradient relative to the top is still defined after the reduction. The
   bottom level's gradient norm relative to the top level's
   (`depth_ratio/<bottom level>` of `GradientMonitor.to_frame()`, median
   over the recorded steps of the last epoch before the first reduction and
   of the last epoch) and the time spent inside `suggest_depth` and
   `reduce_depth` (timed by wrapping `keras_seq.depth.fit.suggest_depth` and
   `keras_seq.depth.fit.reduce_depth` in this process) as a fraction of the
   whole `fit_reducing_depth` call.

Targets from the issue are printed as PASS/MISS; nothing is asserted.

How long it takes on 2 CPU cores (load average 2-3 from other work):
`--quick` (seed 0, three of the tasks, smaller sets) about 7 minutes, the
default run (2 seeds, parts 2 and 4) about 15 minutes; `--parts 1,2,4`
adds about a minute per seed. Other work on the machine slows both down (the
header prints the load average) and changes the wall-time budget of part 4.

How to run:

    .venv/bin/python benchmarks/depth_reduction.py [--quick] [--seeds 2]
        [--parts 1,2,4] [--json PATH]
"""

import argparse
import contextlib
import dataclasses
import gc
import os
import statistics
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_env import environment, finish, targets_table  # noqa: E402

import keras_seq  # noqa: E402
import keras_seq.depth.fit as depth_fit  # noqa: E402
from keras_seq.depth import reduce_depth, suggest_depth  # noqa: E402

try:  # not a dependency of keras_seq; tau-b below gives the same numbers
    from scipy.stats import kendalltau as scipy_kendalltau
except ImportError:
    scipy_kendalltau = None

METHODS = ("auto", "ablation", "similarity", "gradient", "last")
BASELINE_MSE = 1.0 / 6.0  # always predicting 1 (the expected sum)

# The targets, as printed in the PASS/MISS table.
TARGET_GAIN = 10.0  # bottom/top gradient ratio after reduction / before
TARGET_OVERHEAD = 0.05  # suggest_depth + reduce_depth time / training time


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: tuple
    train: int  # training samples (parts 1-4)
    val: int  # held-out validation samples
    planted_epochs: int  # part 1: training before planting
    heal_epochs: int  # part 2: healing epochs after a removal
    rescue_epochs: int  # part 4: fit_reducing_depth epochs
    timesteps: int = 30
    units: int = 32
    batch: int = 32
    diagnosis: int = 256  # samples suggest_depth measures on (parts 1-3)
    learning_rate: float = 1e-3  # Adam, with clipnorm (parts 1-3)
    clipnorm: float = 1.0
    planted_trained: int = 4  # trained levels before the two planted ones
    rescue_timesteps: int = 10
    rescue_levels: int = 8
    rescue_min_depth: int = 2
    rescue_patience: int = 2
    rescue_learning_rate: float = 1e-2  # Adam, no clipping
    rescue_batch: int = 64
    task_train: int = 1000  # part 2: training samples of the synthetic tasks
    task_diagnosis: int = 512  # part 2: calibration samples for suggest_depth
    tasks: tuple = ()  # part 2: indices into TASKS


def config(quick, seeds):
    if quick:
        return Config(
            seeds=tuple(range(seeds or 1)),
            train=3000,
            val=500,
            planted_epochs=4,
            heal_epochs=2,
            rescue_epochs=10,
            task_train=600,
            tasks=(1, 4, 5),
        )
    return Config(
        seeds=tuple(range(seeds or 2)),
        train=4000,
        val=500,
        planted_epochs=6,
        heal_epochs=2,
        rescue_epochs=16,
        tasks=tuple(range(len(TASKS))),
    )


# ---------------------------------------------------------------- data


def adding_problem(samples, timesteps, rng):
    """`(x, y)`: x (samples, timesteps, 2) float32, y (samples, 1)."""
    x = np.zeros((samples, timesteps, 2), dtype="float32")
    x[:, :, 0] = rng.uniform(size=(samples, timesteps))
    marked = np.argsort(rng.uniform(size=(samples, timesteps)), axis=1)[:, :2]
    np.put_along_axis(x[:, :, 1], marked, 1.0, axis=1)
    y = np.sum(x[:, :, 0] * x[:, :, 1], axis=1, keepdims=True, dtype="float32")
    return x, y


@dataclasses.dataclass
class Data:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def train(self):
        return self.x, self.y

    @property
    def validation(self):
        return self.x_val, self.y_val

    def diagnosis(self, samples):
        # The first training samples, as fit_reducing_depth takes them.
        return self.x[:samples], self.y[:samples]


def make_data(cfg, seed, timesteps):
    rng = np.random.default_rng([seed, timesteps])
    x, y = adding_problem(cfg.train, timesteps, rng)
    x_val, y_val = adding_problem(cfg.val, timesteps, rng)
    return Data(x, y, x_val, y_val)


# ---------------------------------------------------------------- models


def compiled(model, learning_rate, clipnorm=None):
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=clipnorm)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def planted_stack(cfg, levels, linear=()):
    """Dense(units) -> `levels` SharedRNN layers `rnn_<i>` -> Dense(1); the
    levels at the positions in `linear` use activation="linear"."""
    layers = [
        keras.Input((cfg.timesteps, 2)),
        keras.layers.Dense(cfg.units, name="proj"),
    ]
    for i in range(levels):
        layers.append(
            keras_seq.layers.SharedRNN(
                cfg.units,
                activation="linear" if i in linear else "tanh",
                return_sequences=i < levels - 1,
                name=f"rnn_{i}",
            )
        )
    layers.append(keras.layers.Dense(1, name="head"))
    return compiled(keras_seq.Sequential(layers), cfg.learning_rate, cfg.clipnorm)


def deep_stack(cfg, timesteps, levels, activation, learning_rate, clipnorm=None):
    return compiled(
        keras_seq.Sequential(
            [
                keras.Input((timesteps, 2)),
                keras_seq.layers.SharedRNN(
                    cfg.units, depth=levels, activation=activation, name="rnn"
                ),
                keras.layers.Dense(1, name="head"),
            ]
        ),
        learning_rate,
        clipnorm,
    )


def fit(model, data, epochs, batch, **kwargs):
    return model.fit(*data.train, epochs=epochs, batch_size=batch, verbose=0, **kwargs)


def mse(model, data, batch):
    return float(model.evaluate(*data.validation, batch_size=batch, verbose=0))


def release_models():
    keras.backend.clear_session()
    gc.collect()


# ---------------------------------------------------------------- part 1


def planted_redundancy(cfg, seed, data):
    """One row: where the pass-through levels went and who found them."""
    trained_levels = cfg.planted_trained
    levels = trained_levels + 2
    keras.utils.set_random_seed(seed)
    trained = planted_stack(cfg, trained_levels)
    fit(trained, data, cfg.planted_epochs, cfg.batch)
    trained_mse = mse(trained, data, cfg.batch)

    rng = np.random.default_rng([seed, 1])
    positions = sorted(int(p) for p in rng.choice(levels, 2, replace=False))
    model = planted_stack(cfg, levels, linear=positions)
    model.get_layer("proj").set_weights(trained.get_layer("proj").get_weights())
    model.get_layer("head").set_weights(trained.get_layer("head").get_weights())
    old = iter(range(trained_levels))
    for i in range(levels):
        layer = model.get_layer(f"rnn_{i}")
        if i in positions:
            layer.set_weights(
                [
                    np.eye(cfg.units, dtype="float32"),
                    np.zeros((cfg.units, cfg.units), "float32"),
                    np.zeros((cfg.units,), "float32"),
                ]
            )
        else:
            layer.set_weights(trained.get_layer(f"rnn_{next(old)}").get_weights())
    before = trained.predict(data.x_val, batch_size=cfg.batch, verbose=0)
    after = model.predict(data.x_val, batch_size=cfg.batch, verbose=0)
    planted = [f"rnn_{i}/level_0" for i in positions]

    x, y = data.diagnosis(cfg.diagnosis)
    plans = {}
    for method in METHODS:
        progress(f"part 1, seed {seed}: suggest_depth(method={method!r}) ...")
        start = time.perf_counter()
        plan = suggest_depth(
            model, x, y, depth=trained_levels, method=method, batch_size=cfg.batch
        )
        plans[method] = {
            "drop": list(plan.drop),
            "found": set(plan.drop) == set(planted),
            "loss_after": plan.loss,
            "seconds": time.perf_counter() - start,
        }
        if method == "ablation":
            costs = dict(zip(plan.scores.level, plan.scores.ablation_cost))
            scores = {
                column: plan.scores[column].tolist()
                for column in (
                    "level",
                    "ablation_cost",
                    "similarity",
                    "depth_ratio",
                    "grad_share",
                    "flags",
                )
            }
    release_models()
    return {
        "seed": seed,
        "trained_val_mse": trained_mse,
        "planted_positions": positions,
        "planted": planted,
        "max_abs_output_change": float(np.max(np.abs(after - before))),
        "outputs_identical": bool(np.array_equal(after, before)),
        "planted_ablation_cost": [float(costs[name]) for name in planted],
        "smallest_trained_ablation_cost": float(
            min(c for name, c in costs.items() if name not in planted)
        ),
        "plans": plans,
        "scores": scores,
    }


# ---------------------------------------------------------------- parts 2, 3

TASK_METHODS = ("last", "last + bridge", "similarity", "auto")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    levels: int
    remove: int
    epochs: int
    build: object  # (cfg) -> compiled model
    data: object  # (cfg, seed) -> Data


def _rnn_stack(inputs, layers, head, loss="mse", learning_rate=3e-3):
    model = keras_seq.Sequential([inputs, *layers, *head])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0), loss=loss
    )
    return model


def two_signal(samples, timesteps, rng):
    """x (samples, T, 2) uniform; y: mean of the last 5 steps of channel 0
    minus the mean of the first 5 of channel 1 (needs memory)."""
    x = rng.uniform(size=(samples, timesteps, 2)).astype("float32")
    y = x[:, -5:, 0].mean(axis=1) - x[:, :5, 1].mean(axis=1)
    return x, y[:, None].astype("float32")


def two_signal_data(cfg, seed, timesteps=12):
    rng = np.random.default_rng([seed, 7])
    x, y = two_signal(cfg.task_train, timesteps, rng)
    x_val, y_val = two_signal(cfg.val, timesteps, rng)
    return Data(x, y, x_val, y_val)


def adding_data(cfg, seed):
    rng = np.random.default_rng([seed, cfg.timesteps])
    x, y = adding_problem(cfg.task_train, cfg.timesteps, rng)
    x_val, y_val = adding_problem(cfg.val, cfg.timesteps, rng)
    return Data(x, y, x_val, y_val)


def sunspot_data(cfg, seed, window=24):
    """Windows of `window` normalised yearly numbers -> the next year; the
    first 80% of the windows train, the rest validate (seed-independent)."""
    series = keras_seq.data.load_sunspots().SUNACTIVITY.to_numpy("float32")
    series = (series - series.mean()) / series.std()
    x = np.stack([series[i : i + window] for i in range(len(series) - window)])
    y = series[window:][:, None]
    cut = int(0.8 * len(x))
    return Data(x[:cut, :, None], y[:cut], x[cut:, :, None], y[cut:])


def idiom_data(cfg, seed):
    """Every next-word pair of the built-in idioms, for training and for
    validation alike (the task is recall of the corpus: a held-out prefix
    often ends in a word never seen there); suggest_depth calibrates on a
    seeded sample of them."""
    pairs = keras_seq.data.next_word_dataset()
    order = np.random.default_rng([seed, 11]).permutation(len(pairs.x))
    return Data(pairs.x[order], pairs.y[order], pairs.x, pairs.y)


def _idiom_model(cfg):
    pairs = keras_seq.data.next_word_dataset()
    vocabulary = len(pairs.vocabulary)
    return _rnn_stack(
        keras.Input((pairs.x.shape[1],), dtype="int32"),
        [keras.layers.Embedding(vocabulary, 32, mask_zero=True)]
        + [keras.layers.GRU(32, return_sequences=i < 3) for i in range(4)],
        [keras.layers.Dense(vocabulary, activation="softmax")],
        loss="sparse_categorical_crossentropy",
        learning_rate=1e-2,
    )


TASKS = (
    Task(
        "adding, SharedRNN(32, depth=6)",
        6,
        2,
        8,
        lambda cfg: _rnn_stack(
            keras.Input((cfg.timesteps, 2)),
            [keras_seq.layers.SharedRNN(32, depth=6, name="rnn")],
            [keras.layers.Dense(1)],
            learning_rate=1e-3,
        ),
        adding_data,
    ),
    Task(
        "two signals, 6 x GRU(16)",
        6,
        3,
        6,
        lambda cfg: _rnn_stack(
            keras.Input((12, 2)),
            [keras.layers.GRU(16, return_sequences=i < 5) for i in range(6)],
            [keras.layers.Dense(1)],
        ),
        two_signal_data,
    ),
    Task(
        "two signals, 4 x LSTM(16)",
        4,
        2,
        6,
        lambda cfg: _rnn_stack(
            keras.Input((12, 2)),
            [keras.layers.LSTM(16, return_sequences=i < 3) for i in range(4)],
            [keras.layers.Dense(1)],
        ),
        two_signal_data,
    ),
    Task(
        "two signals, 4 x Bidirectional(LSTM(8))",
        4,
        2,
        6,
        lambda cfg: _rnn_stack(
            keras.Input((12, 2)),
            [
                keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=i < 3))
                for i in range(4)
            ],
            [keras.layers.Dense(1)],
        ),
        two_signal_data,
    ),
    Task(
        "sunspots, 5 x SimpleRNN(16)",
        5,
        2,
        40,
        lambda cfg: _rnn_stack(
            keras.Input((24, 1)),
            [keras.layers.SimpleRNN(16, return_sequences=i < 4) for i in range(5)],
            [keras.layers.Dense(1)],
        ),
        sunspot_data,
    ),
    Task("next word (idioms), 4 x GRU(32)", 4, 2, 25, _idiom_model, idiom_data),
)


def kendall_tau_b(a, b):
    """Kendall's tau-b of two sequences (ties allowed); NaN pairs dropped."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return float("nan")
    if scipy_kendalltau is not None:
        return float(scipy_kendalltau(a, b).statistic)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    pairs = len(i)
    tied_a, tied_b = np.sum(da == 0), np.sum(db == 0)
    denominator = np.sqrt(float(pairs - tied_a) * float(pairs - tied_b))
    return float(np.sum(da * db) / denominator) if denominator else float("nan")


def val_loss(model, data, batch):
    return float(model.evaluate(*data.validation, batch_size=batch, verbose=0))


def task_parts(cfg, task, seed):
    """One row: every method's removal, before and after healing."""
    data = task.data(cfg, seed)
    keras.utils.set_random_seed(seed)
    model = task.build(cfg)
    start = time.perf_counter()
    model.fit(*data.train, epochs=task.epochs, batch_size=cfg.batch, verbose=0)
    train_seconds = time.perf_counter() - start
    full = val_loss(model, data, cfg.batch)
    n, k = task.levels, task.remove
    depth = n - k
    x, y = data.diagnosis(cfg.task_diagnosis)
    progress(f"part 2, {task.name}, seed {seed}: trained ({train_seconds:.0f} s)")

    start = time.perf_counter()
    auto = suggest_depth(model, x, y, depth=depth)
    suggest_seconds = time.perf_counter() - start
    start = time.perf_counter()
    # The plan's own bridges (fitted on the calibration rows suggest_depth
    # measured on): no forward pass.
    auto_model = reduce_depth(model, drop=auto).model
    reduce_seconds = time.perf_counter() - start
    similarity = suggest_depth(model, x, y, depth=depth, method="similarity")
    # The truth, on the validation set: every level alone (bridged), and
    # every set of k levels (all combinations when at most 70).
    truth = suggest_depth(
        model, *data.validation, depth=depth, max_candidates=70, beam=16
    )
    single_truth = truth.scores.ablation_cost.to_numpy()
    merged = auto.candidates.merge(
        truth.candidates, on="drop", suffixes=("_calibration", "_validation")
    )
    merged = merged[merged.levels_dropped_calibration == k]
    row = {
        "task": task.name,
        "seed": seed,
        "levels": n,
        "remove": k,
        "full_val": full,
        "train_seconds": train_seconds,
        "suggest_seconds": suggest_seconds,
        "reduce_seconds": reduce_seconds,
        "overhead": (suggest_seconds + reduce_seconds) / train_seconds,
        "candidates": len(auto.candidates),
        "traces": auto.traces,
        "tau_single": kendall_tau_b(auto.scores["rank"], single_truth),
        "tau_similarity": kendall_tau_b(similarity.scores["rank"], single_truth),
        "tau_combinations": kendall_tau_b(
            merged.loss_calibration, merged.loss_validation
        ),
        "combinations_compared": len(merged),
        "methods": {},
    }
    plans = {
        "last": ("depth", False),
        "last + bridge": ("depth", True),
        "similarity": (similarity, True),
        "auto": (auto, True),
        "auto, heal cut": (auto, True),
    }
    for method, (plan, bridge) in plans.items():
        progress(f"part 2, {task.name}, seed {seed}: {method} ...")
        if method == "auto":
            reduced = auto_model
            drop = list(auto.drop)
        else:
            kwargs = dict(depth=depth) if plan == "depth" else dict(drop=plan)
            result = reduce_depth(model, x=x, bridge=bridge, **kwargs)
            reduced, drop = result.model, result.removed
        removed = val_loss(reduced, data, cfg.batch)
        heal = "cut" if method == "auto, heal cut" else "all"
        if method == "similarity":  # before healing only (time)
            row["methods"][method] = {
                "drop": drop,
                "val_removed": removed,
                "val_healed": float("nan"),
                "heal": "",
            }
            continue
        keras.utils.set_random_seed(seed)  # the same batch order for all
        healed_model = reduce_depth(
            model,
            drop=drop,
            x=data.x,
            y=data.y,
            bridge=bridge,
            heal_epochs=cfg.heal_epochs,
            heal=heal,
            batch_size=cfg.batch,
        ).model
        row["methods"][method] = {
            "drop": drop,
            "val_removed": removed,
            "val_healed": val_loss(healed_model, data, cfg.batch),
            "heal": heal,
        }
        del reduced, healed_model
    release_models()
    return row


# ---------------------------------------------------------------- part 4


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the first batch end after `seconds` since the start
    of `fit` (the clock starts at `on_train_begin`)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.start = None
        self.steps = 0
        self.epochs = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


@contextlib.contextmanager
def timed_depth_helpers():
    """Time every `suggest_depth` and `reduce_depth` call fit_reducing_depth
    makes, and keep the monitor's diagnosis at each `suggest_depth` call."""
    calls = {"suggest_depth": 0.0, "reduce_depth": 0.0, "diagnoses": []}
    originals = depth_fit.suggest_depth, depth_fit.reduce_depth

    def suggest(*args, **kwargs):
        monitor = kwargs.get("monitor")
        if monitor is not None:
            calls["diagnoses"].append(monitor.diagnosis())
        start = time.perf_counter()
        try:
            return originals[0](*args, **kwargs)
        finally:
            calls["suggest_depth"] += time.perf_counter() - start

    def reduce(*args, **kwargs):
        start = time.perf_counter()
        try:
            return originals[1](*args, **kwargs)
        finally:
            calls["reduce_depth"] += time.perf_counter() - start

    depth_fit.suggest_depth, depth_fit.reduce_depth = suggest, reduce
    try:
        yield calls
    finally:
        depth_fit.suggest_depth, depth_fit.reduce_depth = originals


def epoch_median(frame, column, epoch):
    values = frame.loc[frame.epoch == epoch, column].dropna()
    return float(values.median()) if len(values) else None


def rescue(cfg, seed, data):
    bottom = "rnn/level_0"
    keras.utils.set_random_seed(seed)
    model = deep_stack(
        cfg,
        cfg.rescue_timesteps,
        cfg.rescue_levels,
        "sigmoid",
        cfg.rescue_learning_rate,
    )
    initial = model.get_weights()
    monitor = keras_seq.callbacks.GradientMonitor()
    with timed_depth_helpers() as calls:
        start = time.perf_counter()
        reduced, stages = keras_seq.depth.fit_reducing_depth(
            model,
            *data.train,
            epochs=cfg.rescue_epochs,
            min_depth=cfg.rescue_min_depth,
            patience=cfg.rescue_patience,
            method="auto",
            monitor=monitor,
            batch_size=cfg.rescue_batch,
            validation_data=data.validation,
            verbose=0,
        )
        wall = time.perf_counter() - start
    reduced_mse = mse(reduced, data, cfg.rescue_batch)
    frame = monitor.to_frame()
    column = f"depth_ratio/{bottom}"
    first_reduction = int(stages.first_epoch.iloc[1]) if len(stages) > 1 else None
    last_epoch = int(frame.epoch.max())
    before = after = None
    if column in frame:
        if first_reduction is not None:
            before = epoch_median(frame, column, first_reduction - 1)
            after = epoch_median(frame, column, last_epoch)
    at_call = None
    if calls["diagnoses"] and calls["diagnoses"][0].depth is not None:
        at_call = calls["diagnoses"][0].depth.levels[bottom].ratio_to_top
    final = monitor.diagnosis().depth
    at_end = None if final is None else final.levels[bottom].ratio_to_top

    progress(f"part 4, seed {seed}: full model for {wall:.1f} s ...")
    keras.utils.set_random_seed(seed)
    full = deep_stack(
        cfg,
        cfg.rescue_timesteps,
        cfg.rescue_levels,
        "sigmoid",
        cfg.rescue_learning_rate,
    )
    full.set_weights(initial)
    budget = TimeBudget(wall)
    full_start = time.perf_counter()
    fit(
        full,
        data,
        100_000,
        cfg.rescue_batch,
        validation_data=data.validation,
        callbacks=[budget],
    )
    full_wall = time.perf_counter() - full_start
    full_mse = mse(full, data, cfg.rescue_batch)
    release_models()
    helpers = calls["suggest_depth"] + calls["reduce_depth"]
    return {
        "seed": seed,
        "stages": stages.drop(columns=["verdicts"]).to_dict("records"),
        "verdicts": stages.verdicts.tolist(),
        "depths": stages.depth.tolist(),
        "epochs": cfg.rescue_epochs,
        "steps": int(monitor.steps),
        "wall_seconds": wall,
        "val_mse": reduced_mse,
        "full_val_mse": full_mse,
        "full_epochs": budget.epochs,
        "full_steps": budget.steps,
        "full_wall_seconds": full_wall,
        "bottom_ratio_before": before,
        "bottom_ratio_after": after,
        "bottom_ratio_at_reduction": at_call,
        "bottom_ratio_at_end": at_end,
        "gain": None if not (before and after) else after / before,
        "suggest_depth_seconds": calls["suggest_depth"],
        "reduce_depth_seconds": calls["reduce_depth"],
        "helper_fraction": helpers / wall,
    }


# ---------------------------------------------------------------- report


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value, digits=3, suffix=""):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}{suffix}"


def gain_text(value):
    return "—" if value is None else f"{value:.3g}x"


def sci(value):
    return "—" if value is None else f"{value:.2g}"


def short(name):
    return name.removesuffix("/level_0")


def planted_table(rows):
    lines = [
        "| seed | planted (position) | max abs output change | ablation cost of "
        "planted | smallest trained cost | " + " | ".join(METHODS) + " |",
        "| ---: | --- | ---: | --- | ---: | "
        + " | ".join("---" for _ in METHODS)
        + " |",
    ]
    for row in rows:
        cells = []
        for method in METHODS:
            plan = row["plans"][method]
            dropped = ", ".join(short(n) for n in plan["drop"])
            cells.append("yes" if plan["found"] else f"no ({dropped})")
        lines.append(
            f"| {row['seed']} | {', '.join(short(n) for n in row['planted'])} | "
            f"{row['max_abs_output_change']:.3g} | "
            f"{', '.join(f'{c:.3g}' for c in row['planted_ablation_cost'])} | "
            f"{row['smallest_trained_ablation_cost']:.3g} | " + " | ".join(cells) + " |"
        )
    found = [
        f"{sum(r['plans'][m]['found'] for r in rows)}/{len(rows)}" for m in METHODS
    ]
    lines.append("| found | | | | | " + " | ".join(found) + " |")
    return "\n".join(lines)


def short_number(value):
    return "—" if not np.isfinite(value) else f"{value:.4g}"


def task_table(rows):
    methods = list(rows[0]["methods"]) if rows else []
    lines = [
        "| task | seed | full | "
        + " | ".join(f"{m}: removed / healed" for m in methods)
        + " | auto drops |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in methods) + " | --- |",
    ]
    for row in rows:
        cells = [
            f"{short_number(row['methods'][m]['val_removed'])} / "
            f"{short_number(row['methods'][m]['val_healed'])}"
            for m in methods
        ]
        drops = ", ".join(
            d.split("/")[0] + ("/" + d.split("_")[-1] if "rnn/" in d else "")
            for d in row["methods"]["auto"]["drop"]
        )
        lines.append(
            f"| {row['task']} | {row['seed']} | {row['full_val']:.4g} | "
            + " | ".join(cells)
            + f" | {drops} |"
        )
    return "\n".join(lines)


def task_speed_table(rows):
    lines = [
        "| task | seed | training s | suggest_depth s (candidates, traces) | "
        "reduce_depth s | share of training | tau: auto rank vs leave-one-out "
        "| tau: similarity | tau: combinations, calibration vs validation |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['seed']} | {row['train_seconds']:.1f} | "
            f"{row['suggest_seconds']:.1f} ({row['candidates']}, {row['traces']}) | "
            f"{row['reduce_seconds']:.1f} | {100 * row['overhead']:.1f}% | "
            f"{fmt(row['tau_single'], 2)} | {fmt(row['tau_similarity'], 2)} | "
            f"{fmt(row['tau_combinations'], 2)} (n={row['combinations_compared']}) |"
        )
    return "\n".join(lines)


def rescue_table(rows):
    lines = [
        "| seed | depths (stages) | fit_reducing_depth s | val MSE | full model: "
        "epochs in the same time | full val MSE | bottom/top before | after | "
        "after/before | at reduction / at end (single step) | suggest + reduce s "
        "| share of training time |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: "
        "| ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {' -> '.join(str(d) for d in row['depths'])} | "
            f"{row['wall_seconds']:.1f} | {row['val_mse']:.4f} | "
            f"{row['full_epochs']} ({row['full_wall_seconds']:.1f} s) | "
            f"{row['full_val_mse']:.4f} | {sci(row['bottom_ratio_before'])} | "
            f"{sci(row['bottom_ratio_after'])} | "
            f"{gain_text(row['gain'])} | "
            f"{sci(row['bottom_ratio_at_reduction'])} / "
            f"{sci(row['bottom_ratio_at_end'])} | "
            f"{row['suggest_depth_seconds']:.2f} + {row['reduce_depth_seconds']:.2f} | "
            f"{100 * row['helper_fraction']:.1f}% |"
        )
    return "\n".join(lines)


def stages_table(rows):
    lines = [
        "| seed | stage | depth | epochs | loss | val_loss | verdict at the end "
        "of the stage | removed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        for stage, verdict in zip(row["stages"], row["verdicts"]):
            removed = ", ".join(
                n.strip().removeprefix("rnn/") for n in stage["removed"].split(",")
            )
            lines.append(
                f"| {row['seed']} | {stage['stage']} | {stage['depth']} | "
                f"{stage['epochs']} | {stage['loss']:.4f} | {stage['val_loss']:.4f} | "
                f"{verdict} | {removed or '—'} |"
            )
    return "\n".join(lines)


def evaluate_targets(results):
    """[(target, measured, status)]."""

    def status(ok):
        return "PASS" if ok else "MISS"

    targets = []
    planted = results.get("planted", [])
    if planted:
        for method in ("auto", "ablation"):
            found = sum(r["plans"][method]["found"] for r in planted)
            targets.append(
                (
                    f"part 1: `{method}` finds both planted levels on every seed",
                    f"{found}/{len(planted)} seeds",
                    status(found == len(planted)),
                )
            )
    tasks = results.get("tasks", [])
    if tasks:
        for key, label in (
            ("val_removed", "before healing: `auto` + bridge < `last` (no bridge)"),
            ("val_healed", "after healing: `auto` <= `last`"),
        ):
            pairs = [
                (r["methods"]["auto"][key], r["methods"]["last"][key]) for r in tasks
            ]
            strict = key == "val_removed"
            ok = [a < b if strict else a <= b * (1 + 1e-6) for a, b in pairs]
            misses = [
                f"{r['task']} seed {r['seed']}: {a:.4g} vs {b:.4g}"
                for r, (a, b), good in zip(tasks, pairs, ok)
                if not good
            ]
            measured = f"{sum(ok)}/{len(ok)} task-seeds" + (
                "; missed: " + "; ".join(misses) if misses else ""
            )
            targets.append((f"part 2, {label}", measured, status(all(ok))))
        overhead = [r["overhead"] for r in tasks]
        targets.append(
            (
                f"part 2: suggest_depth + reduce_depth < {100 * TARGET_OVERHEAD:g}% "
                "of the model's training time",
                f"median {100 * statistics.median(overhead):.1f}%, max "
                f"{100 * max(overhead):.1f}%",
                status(all(f < TARGET_OVERHEAD for f in overhead)),
            )
        )
    rescued = results.get("rescue", [])
    if rescued:
        gains = [r["gain"] for r in rescued]
        targets.append(
            (
                f"part 4: bottom-level gradient / top >= {TARGET_GAIN:g}x higher "
                "after reduction, every seed",
                "; ".join("—" if g is None else f"{g:.3g}x" for g in gains),
                status(all(g is not None and g >= TARGET_GAIN for g in gains)),
            )
        )
        fractions = [r["helper_fraction"] for r in rescued]
        targets.append(
            (
                f"part 4: suggest_depth + reduce_depth < {100 * TARGET_OVERHEAD:g}% "
                "of training time, every seed",
                "; ".join(f"{100 * f:.1f}%" for f in fractions),
                status(all(f < TARGET_OVERHEAD for f in fractions)),
            )
        )
    return targets


def wrap(text):
    return textwrap.fill(text, width=79, break_on_hyphens=False)


def print_report(cfg, results):
    if results.get("planted"):
        print("## 1. Planted redundancy: are two pass-through levels found?\n")
        print(
            wrap(
                f"{cfg.planted_trained} trained SharedRNN({cfg.units}) levels "
                f"({cfg.planted_epochs} epochs, Adam({cfg.learning_rate:g}, "
                f"clipnorm={cfg.clipnorm:g}), batch {cfg.batch}, "
                f"{cfg.train} samples) plus 2 exact pass-through levels at random "
                f"positions: {cfg.planted_trained + 2} levels `rnn_0`..`rnn_"
                f"{cfg.planted_trained + 1}`. suggest_depth(depth="
                f"{cfg.planted_trained}) on {cfg.diagnosis} training samples. "
                "'yes': plan.drop is exactly the planted pair; otherwise what it "
                "dropped. Output change: max |prediction difference| on the "
                "validation set, trained model vs model with the planted levels."
            )
            + "\n"
        )
        print(planted_table(results["planted"]) + "\n")
    if results.get("tasks"):
        print("## 2. Remove levels, then heal, on several tasks\n")
        print(
            wrap(
                "Each model trained, then reduced by each method to the same "
                "depth; validation loss right after the removal and after "
                f"{cfg.heal_epochs} healing epochs on the training set "
                "(same batch order). `last`: the position baseline (the levels "
                "just below the top go; the top level stays), no bridge. "
                "`last + bridge`: the same levels, every cut bridged. "
                "`similarity`, `auto`: suggest_depth's plan, bridged. Every "
                "method heals the whole model (heal='all'); `auto, heal "
                "cut` heals the layers next to the cuts first (heal='cut', one "
                "epoch) then all, for the same epochs. "
                f"suggest_depth measures on {cfg.task_diagnosis} training "
                "samples (bridges on the even rows, losses on the odd)."
            )
            + "\n"
        )
        print(task_table(results["tasks"]) + "\n")
        print(
            wrap(
                "Time (same process, training = the model's own fit) and "
                "Kendall tau-b. Truth = validation set: each level's bridged "
                "leave-one-out cost for the single-level columns; the "
                "validation loss of each candidate set of the plan's size for "
                "the combination column (calibration loss vs validation loss "
                "over the same sets)."
            )
            + "\n"
        )
        print(task_speed_table(results["tasks"]) + "\n")
    if results.get("rescue"):
        print("## 4. Rescue: fit_reducing_depth vs the full model, same wall time\n")
        print(
            wrap(
                f"SharedRNN({cfg.units}, depth={cfg.rescue_levels}, "
                f'activation="sigmoid"), T={cfg.rescue_timesteps}, '
                f"Adam({cfg.rescue_learning_rate:g}), {cfg.train} samples, batch "
                f"{cfg.rescue_batch}. fit_reducing_depth(epochs={cfg.rescue_epochs}, "
                f"min_depth={cfg.rescue_min_depth}, patience="
                f"{cfg.rescue_patience}, method='auto'); the full model trains "
                "from the same initial weights until the same wall time is up. "
                "bottom/top: depth_ratio/rnn/level_0 (median over the last epoch "
                "before the first reduction, and over the last epoch); also "
                "the single recorded step diagnosis() held when suggest_depth "
                "was called and at the end."
            )
            + "\n"
        )
        print(rescue_table(results["rescue"]) + "\n")
        print("Stages of fit_reducing_depth\n")
        print(stages_table(results["rescue"]) + "\n")


# ---------------------------------------------------------------- main


def parse_parts(text):
    try:
        parts = {int(p) for p in text.split(",") if p.strip()}
    except ValueError:
        parts = set()
    if not parts or not parts <= {1, 2, 4}:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of 1,2,4, got {text!r}"
        )
    return parts


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Planted redundancy, agreement with the measured ablation "
        "cost, remove-then-heal and the fit_reducing_depth rescue for every "
        "keras_seq.depth.suggest_depth method on the adding problem; print "
        "Markdown tables."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seed 0 only, 2000 training samples, fewer epochs",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="number of seeds, 0..n-1 (default 2, 1 with --quick)",
    )
    parser.add_argument(
        "--parts",
        type=parse_parts,
        default={2, 4},
        help="comma-separated parts to run (default 2,4; 1 adds ~1 min a seed)",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="part 2: comma-separated indices into TASKS (default: all; "
        "--quick: 1,4,5)",
    )
    parser.add_argument("--json", metavar="PATH", help="also save results as JSON")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def run_part(errors, label, function, *args):
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - report, keep benchmarking
        errors.append(f"{label}: {type(error).__name__}: {error}")
        release_models()
        return None


def main(argv=None):
    args = parse_args(argv)
    cfg = config(args.quick, args.seeds)
    if args.tasks:
        cfg = dataclasses.replace(
            cfg, tasks=tuple(int(t) for t in args.tasks.split(","))
        )
    env = environment()
    for key, value in env.items():
        print(f"{key}: {value}")
    print()

    started = time.perf_counter()
    errors = []
    results = {"planted": [], "tasks": [], "rescue": []}
    part_seconds = {}
    for seed in cfg.seeds:
        data = make_data(cfg, seed, cfg.timesteps)
        if 1 in args.parts:
            progress(f"part 1, seed {seed} ...")
            start = time.perf_counter()
            row = run_part(
                errors, f"part 1, seed {seed}", planted_redundancy, cfg, seed, data
            )
            part_seconds.setdefault("1", []).append(time.perf_counter() - start)
            if row is not None:
                results["planted"].append(row)
        if 2 in args.parts:
            start = time.perf_counter()
            for index in cfg.tasks:
                task = TASKS[index]
                row = run_part(
                    errors,
                    f"part 2, {task.name}, seed {seed}",
                    task_parts,
                    cfg,
                    task,
                    seed,
                )
                if row is not None:
                    results["tasks"].append(row)
            part_seconds.setdefault("2", []).append(time.perf_counter() - start)
        if 4 in args.parts:
            progress(f"part 4, seed {seed} ...")
            start = time.perf_counter()
            rescue_data = make_data(cfg, seed, cfg.rescue_timesteps)
            row = run_part(
                errors, f"part 4, seed {seed}", rescue, cfg, seed, rescue_data
            )
            part_seconds.setdefault("4", []).append(time.perf_counter() - start)
            if row is not None:
                results["rescue"].append(row)
    targets = evaluate_targets(results)
    minutes = (time.perf_counter() - started) / 60

    print_report(cfg, results)
    print(
        "Time per seed: "
        + "; ".join(
            f"part {part} " + ", ".join(f"{s:.0f} s" for s in seconds)
            for part, seconds in part_seconds.items()
        )
    )
    finish(
        targets_table(targets, "measured (per seed)"),
        errors,
        minutes,
        args.json,
        {
            "environment": env,
            "config": dataclasses.asdict(cfg),
            "parts": sorted(args.parts),
            "part_seconds": part_seconds,
            **results,
            "targets": [
                {"target": t, "measured": m, "status": s} for t, m, s in targets
            ],
        },
    )


if __name__ == "__main__":
    main()
