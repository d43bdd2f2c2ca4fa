"""`reduce_depth`: a copy of a recurrent model with fewer levels.

A shallower recurrent stack is a remedy for vanishing and exploding
gradients through depth. `reduce_depth` builds the shallower model from the
trained one: it removes whole levels (recurrent sublayers), keeps every other
weight bit for bit, and replaces only the weights whose shape no longer fits.
"""

import contextlib
import dataclasses
import hashlib
import numbers
import random

import keras
import numpy as np

from keras_seq import _validation as validation
from keras_seq.layers import probes
from keras_seq.layers.shared_rnn import SharedRNN
from keras_seq.models.levels import (
    check_model,
    directions,
    level_variables,
    recurrent_core,
    recurrent_levels,
    resolve,
    sequence_input,
    single_stack,
)
from keras_seq.models.model import Model
from keras_seq.models.sequential import Sequential
from keras_seq.models.walk import ordered_layers

REINITIALISED = "reinitialised"
LEAST_SQUARES = "least squares"
HEAL_MODES = ("cut", "all")
RIDGE = 1e-9  # on the Gram matrix of unit-norm columns


@dataclasses.dataclass(repr=False)
class DepthReduction:
    """What `reduce_depth` did, and the reduced model.

    `str(result)` (and `repr`) is a small plain-text table. The record is one
    object, not a tuple: take the model from `result.model`.

    Attributes:
        model: The new model: a `keras_seq.Sequential` or a functional
            `keras_seq.Model`, compiled like the input model (uncompiled if
            the input model was not compiled).
        removed: Names of the removed levels, bottom to top.
        replaced: `(weight path in the new model, how)` for every kept weight
            whose shape no longer fitted, with `how` either
            `"reinitialised"` or `"least squares"`.
        levels_before: Number of recurrent levels of the input model.
        levels_after: Number of recurrent levels of the new model.
        parameters_before: `count_params()` of the input model.
        parameters_after: `count_params()` of the new model.
        bridged: Paths (in the new model) of the input kernels and biases
            the bridge refitted by least squares: those of each kept level
            (or Dense layer) reading the output of a removed level.
        healed: `[(phase, epochs, last training loss)]` when `heal_epochs`
            was given (phase `"cut"`: only the layers next to the cuts
            trained; `"all"`: every layer), else `[]`.
        bridge_fits: `{target: [(M, c) per direction]}`, the bridge of each
            refitted level (its name in `model`) or Dense layer: `M`, `c`
            NumPy float64 arrays (`c` None without a bias).
        bridged_on: `"x"` (fitted on `x`), `"plan"` (the bridges a
            `suggest_depth` plan carries) or `""` (no bridge).
        heal_validation: When healing was guarded: `{"losses": {"before":
            loss, "epoch 1": loss, ...}, "kept": "before" or "epoch N"}`,
            the validation losses and the weights kept; else `{}`.
        note: Plain text for special cases (a plan removing nothing), or "".
    """

    model: object
    removed: list
    replaced: list
    levels_before: int
    levels_after: int
    parameters_before: int
    parameters_after: int
    bridged: list = dataclasses.field(default_factory=list)
    healed: list = dataclasses.field(default_factory=list)
    heal_validation: dict = dataclasses.field(default_factory=dict)
    note: str = ""
    bridge_fits: dict = dataclasses.field(default_factory=dict)
    bridged_on: str = ""

    def __str__(self):
        rows = [
            ("what", "before", "after"),
            ("levels", str(self.levels_before), str(self.levels_after)),
            ("parameters", str(self.parameters_before), str(self.parameters_after)),
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            f"{what:<{widths[0]}}  {before:>{widths[1]}}  {after:>{widths[2]}}"
            for what, before, after in rows
        ]
        lines.append("removed:  " + (", ".join(self.removed) or "none"))
        if not self.replaced:
            lines.append("replaced: none")
        for path, how in self.replaced:
            lines.append(f"replaced: {path} ({how})")
        if self.removed:
            where = {
                "x": " (fitted on x)",
                "plan": " (the plan's, fitted by suggest_depth)",
            }
            lines.append(
                "bridged:  "
                + (", ".join(self.bridged) or "none")
                + (where.get(self.bridged_on, "") if self.bridged else "")
            )
        for phase, epochs, loss in self.healed:
            lines.append(f"healed:   {phase}, {epochs} epoch(s), loss {loss:.4g}")
        if self.heal_validation:
            losses, kept = self.heal_validation["losses"], self.heal_validation["kept"]
            found = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
            what = "before healing" if kept == "before" else f"after {kept}"
            lines.append(f"kept:     the weights {what} (validation loss: {found})")
        if self.note:
            lines.append(f"note:     {self.note}")
        return "\n".join(lines)

    __repr__ = __str__

    def to_frame(self):
        """The before/after counts as a `pandas.DataFrame` indexed by
        `"levels"` and `"parameters"`, with columns `before` and `after`."""
        import pandas as pd

        return pd.DataFrame(
            {
                "before": [self.levels_before, self.parameters_before],
                "after": [self.levels_after, self.parameters_after],
            },
            index=pd.Index(["levels", "parameters"], name="what"),
        )


def reduce_depth(
    model,
    depth=None,
    drop=None,
    strict=False,
    x=None,
    batch_size=64,
    seed=None,
    *,
    bridge=None,
    y=None,
    heal_epochs=0,
    heal="all",
    heal_validation_split=0.1,
    heal_validation_data=None,
):
    """A new model with fewer recurrent levels; `model` is left unchanged.

    A level is one recurrent sublayer (see
    `keras_seq.depth.recurrent_levels`). Give either the number of
    levels to keep (`depth`) or the levels to remove (`drop`). Without a
    plan, `depth` keeps the top level and the bottom `depth - 1` levels, and
    drops the levels just below the top one: the layers above the stack were
    trained on the top level's outputs.

    The new model has the same layers, rebuilt from their configs under the
    same names, minus the removed levels: a `SharedRNN` keeps its remaining
    sublayers (with `share_depth=True` it stays shared while it has two or
    more, and the shared weights carry over; left with one, it becomes
    unshared and that level keeps its weights), and a layer whose every
    level is removed leaves the model (the layer above it takes its input).
    A kept recurrent layer takes the `return_sequences` of the topmost
    removed layer directly above it, so the output shape stays the same.
    Masks, `stateful`, `go_backwards`, dropout and `Bidirectional`
    `merge_mode` carry over; stateful layers start from zero states.

    Every kept weight is copied bit for bit, except those the bridge refits.
    **The bridge** (default on when `x` is given, or `drop` is a
    `suggest_depth` plan made with data): where levels i..j go, the
    kept layer reading their output (the level above, or a `Dense` head when
    the top level goes) now reads the output of level i-1. Its input kernel
    and bias are refitted so that its input projection stays what it was:
    with `[M; c] = argmin ||X_new M + c - X_old||^2` over the valid (unmasked)
    time steps of `x`, where `X_old` is what the layer read in `model` and
    `X_new` what it reads in the new model, the kernel becomes `M @ K` and
    the bias `c @ K + b` (the least-squares fit of the projection `X_old K +
    b` itself). One forward pass per cut; `result.bridged` lists the
    refitted weights. A level whose weights are shared with another kept
    level (`share_depth=True`) is not refitted. A weight whose shape no
    longer fits (the input kernel above a removed level whose width
    differs; a layer between, such as a `TimeDistributed(Dense)`) is
    replaced: fitted by the bridge when it is one, otherwise it keeps the
    value its initializer gave it.

    A `suggest_depth` plan made with data carries the bridges of its
    measured model (fitted on the even rows of its calibration data,
    `plan.bridges`): without `x`, `reduce_depth(model, drop=plan)` applies
    them with no forward pass, so the new model is exactly the one whose
    held-out loss the plan measured (`result.bridged_on == "plan"`). They
    are refused (`ValueError`) if `model`'s weights changed since; `x=`
    refits them on `x` instead.

    A plan that removes nothing (`drop=[]`, or a plan with an empty `drop`)
    returns `model` itself, unchanged, with a record saying so.

    With `heal_epochs`, the new model is then trained on `(x, y)`:
    `heal="all"` (default) trains every layer throughout; `heal="cut"`
    trains first (half of the epochs, at least one) only the layers next to
    the cuts (each bridged layer and the recurrent level below it), then
    every layer, as CLP and Lu et al. 2024 heal. For the same two epochs
    `"all"` healed better on 5 of 12 task-seeds in
    benchmarks/depth_reduction.py, `"cut"` on 3 (4 tied). Layer `trainable` flags are
    restored afterwards; `result.healed` records the phases.

    Healing never hands back a model worse on its held-out rows than it was
    before healing: the last `heal_validation_split` of the rows of `(x, y)`
    (default 0.1, the last rows, as Keras's `validation_split` takes them;
    whole batches for a model with a fixed batch size) or
    `heal_validation_data` are held out (and the bridge is then fitted on
    the other rows only), and the weights kept are those
    with the lowest validation loss among "before healing" and every epoch's
    end (as `keras.callbacks.EarlyStopping(restore_best_weights=True)` does,
    with the starting point as a candidate too). A fresh optimizer's first
    steps can push a model that the bridge left close to its old outputs
    away from them (in benchmarks/depth_reduction.py two epochs of healing
    made 3 of 12 reduced models worse). `result.heal_validation` records
    each candidate's validation loss and which was kept;
    `heal_validation_split=0` without data heals on every row, unguarded.

    The new model is compiled with `model`'s compile config (loss, metrics,
    `jit_compile`, `steps_per_execution`, a fresh optimizer of the same class
    and config); an uncompiled `model` gives an uncompiled new model.

    Args:
        model: A built Sequential or functional `keras.Model` (or keras-seq
            `Sequential`/`Model`) with at least two recurrent levels.
        depth: Integer, the number of levels to keep, from 1 to the current
            number of levels minus one. Needs a single stack (each level
            feeding the next). Default None.
        drop: List of level names to remove (`"rnn/level_1"`, or the layer
            name alone for a layer with one level), or an object whose
            `.drop` attribute holds such a list. Default None.
        strict: Boolean (default False). If True, raise instead of replacing
            a weight whose shape no longer fits.
        x: Optional input data, as for `model.predict` (an array, or a list
            or dict of arrays). When given, the bridge is fitted on it
            (even when `drop` is a plan carrying its own bridges).
        batch_size: Positive integer (default 64), batch size for running
            `x`; a model with a fixed batch size uses its own.
        seed: Optional integer; makes the re-initialised weights
            reproducible.
        bridge: Boolean or None (default): refit the layers above every cut
            (see above). None means True when `x` is given or the plan
            carries bridges. False fits only replaced input kernels (as the
            bottom level's), on `x`; without `x` they are re-initialised.
        y: Optional targets for `x`, needed by `heal_epochs`.
        heal_epochs: Integer >= 0 (default 0), epochs of healing.
        heal: `"all"` (default) or `"cut"`, see above.
        heal_validation_split: Float in [0, 1) (default 0.1): the fraction
            of `(x, y)`, its last rows, held out to choose the healed
            weights; ignored when `heal_validation_data` is given.
        heal_validation_data: Optional `(x_val, y_val)` to choose the
            healed weights on instead.

    Returns:
        A `keras_seq.depth.reduce.DepthReduction`: the new model is
        `result.model`; `result.removed` and `result.replaced` say what
        changed.

    Raises:
        TypeError: `model` is not a `keras.Model`, `depth` is not an integer,
            `drop` is not a list of names, or `x` is not array data.
        ValueError: `model` is subclassed or unbuilt or has no recurrent
            level; both or neither of `depth` and `drop` are given; `depth`
            is out of range; `drop` names unknown or duplicate levels or
            every level; `x` and `y` differ in samples (the message gives
            their shapes); `bridge=True` without `x` or a plan's bridges;
            a plan's bridges for other weights; `heal_epochs` without
            `y` or a compiled model; `depth` is given for parallel recurrent
            branches; a removed layer returns states or several tensors;
            `strict=True` and a weight must be replaced.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> from keras_seq.depth.reduce import reduce_depth
    >>> model = keras_seq.Sequential([
    ...     keras.Input((5, 3)),
    ...     keras_seq.layers.SharedRNN(4, depth=3, name="rnn"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> result = reduce_depth(model, depth=2)
    >>> result.removed
    ['rnn/level_1']
    >>> result.model.get_layer("rnn").depth
    2
    """
    check_model(model)
    validation.check_bool("strict", strict)
    validation.check_positive_int("batch_size", batch_size)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
    ):
        raise TypeError(
            f"Argument `seed` must be an integer or None. Received: seed={seed!r}"
        )
    if bridge is not None:
        validation.check_bool("bridge", bridge)
    if isinstance(heal_epochs, bool) or not (
        isinstance(heal_epochs, numbers.Integral) and heal_epochs >= 0
    ):
        raise ValueError(
            "Argument `heal_epochs` must be an integer >= 0. Received: "
            f"heal_epochs={heal_epochs!r}"
        )
    validation.check_choice("heal", heal, HEAL_MODES)
    validation.check_rate("heal_validation_split", heal_validation_split)
    if heal_validation_data is not None:
        if not isinstance(heal_validation_data, tuple) or (
            len(heal_validation_data) != 2
        ):
            shown = repr(heal_validation_data)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise TypeError(
                "Argument `heal_validation_data` must be a tuple `(x_val, "
                "y_val)` or None. Received: heal_validation_data="
                f"{shown} (of type {type(heal_validation_data).__name__})"
            )
        if not heal_epochs:
            raise ValueError(
                "Argument `heal_validation_data` is used only when healing: "
                f"pass heal_epochs >= 1. Received: heal_epochs={heal_epochs}"
            )
        check_rows(*heal_validation_data)
    levels = recurrent_levels(model)
    removed = _select(model, levels, depth, drop)
    if x is not None:
        batch_size = _check_data(model, x, batch_size)
    if y is not None:
        if x is None:
            raise ValueError(
                "Argument `y` needs `x`: pass the inputs the targets belong to."
            )
        check_rows(x, y)
    if heal_epochs and (y is None or not model.compiled):
        raise ValueError(
            "Argument `heal_epochs` needs data to train on and a compiled "
            f"model: pass x= and y=, and compile model `{model.name}`. "
            f"Received: heal_epochs={heal_epochs}, y={'None' if y is None else 'given'}"
            f", compiled={model.compiled}"
        )
    if not removed:
        return DepthReduction(
            model=model,
            removed=[],
            replaced=[],
            levels_before=len(levels),
            levels_after=len(levels),
            parameters_before=model.count_params(),
            parameters_after=model.count_params(),
            note="the plan removes no level: `model` is returned unchanged",
        )
    fixed_batch = model.inputs[0].shape[0]
    heal_data = None
    if heal_epochs:
        heal_data = _heal_split(
            x, y, heal_validation_split, heal_validation_data, fixed_batch
        )
    # Held-out rows stay out of the bridge's fit too: the guard compares the
    # bridged model with its healed epochs on rows neither has seen.
    held_out = heal_data is not None and heal_validation_data is None
    x_bridge = heal_data[0] if held_out else x
    plan_fits = None if x is not None else _plan_fits(drop, model, bridge)
    can_fit = x is not None or plan_fits is not None
    bridge = can_fit if bridge is None else bridge
    if bridge and not can_fit:
        raise ValueError(
            "Argument `bridge=True` needs `x=`: the bridge is fitted on the "
            "model's inputs. Pass x= (a few hundred samples do), or a plan "
            "from `suggest_depth` with data (it carries its fitted bridges)."
        )

    plans = _plan(model, levels, removed)
    with _python_seed(seed):
        new_model, new_layers = _rebuild(model, plans)
    pairs = _weight_pairs(plans, new_layers)
    misfits = _transfer(pairs, model, strict)
    targets = _bridge_targets(model, levels, removed, plans, new_layers)
    if not bridge:
        # Without the bridge only the kernels whose shape changed are fitted.
        replaced_kernels = {id(p.new) for p in misfits if p.input_kernel}
        targets = [
            t
            for t in targets
            if any(
                id(k) in replaced_kernels
                for k, _ in _input_weights(t.new_layer, t.new_index)
            )
        ]
    targets = [t for t in targets if not _shared(t.new_layer, t.new_index)]
    bridged, fits = [], {}
    if x is not None and targets:
        # Eager forward passes: per-op overhead dominates, so large chunks
        # (a model with a fixed batch size runs with its own).
        fitter = _Bridge(
            model,
            new_model,
            x_bridge,
            batch_size if fixed_batch is not None else max(batch_size, 1024),
        )
        try:
            for target in targets:
                assigned, fits[target.name] = fitter.fit(target)
                bridged += assigned
        finally:
            fitter.close()
    elif plan_fits is not None and targets:
        # The plan's own bridges: the model suggest_depth measured, with no
        # forward pass here.
        names = sorted(t.name for t in targets)
        if names != sorted(plan_fits):
            raise ValueError(
                f"The plan's bridges ({sorted(plan_fits)}) do not match the "
                f"layers this reduction refits ({names}). Pass x= to fit "
                "the bridges on data."
            )
        for target in targets:
            fits[target.name] = plan_fits[target.name]
            bridged += apply_bridge(target, fits[target.name])
    fitted = set(bridged)
    replaced = [
        (p.new.path, LEAST_SQUARES if p.new.path in fitted else REINITIALISED)
        for p in misfits
    ]

    compile_config = model.get_compile_config()
    if compile_config:
        new_model.compile_from_config(compile_config)
    result = DepthReduction(
        model=new_model,
        removed=[level.name for level in removed],
        replaced=replaced,
        levels_before=len(levels),
        levels_after=len(recurrent_levels(new_model)),
        parameters_before=model.count_params(),
        parameters_after=new_model.count_params(),
        bridged=bridged,
        bridge_fits=fits,
        bridged_on="x" if x is not None else ("plan" if fits else ""),
    )
    if heal_epochs:
        result.healed, result.heal_validation = _heal(
            result, targets, heal_data, heal_epochs, heal, batch_size
        )
    return result


def weights_fingerprint(model):
    """A digest of every weight of `model` (values, shapes, dtypes)."""
    digest = hashlib.blake2b(digest_size=16)
    for value in model.get_weights():
        value = np.ascontiguousarray(value)
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _plan_fits(drop, model, bridge):
    """The bridges a `suggest_depth` plan carries (`{target name: [(M, c)]
    per direction}`), fitted on its calibration rows, or None. They are used
    only on the weights they were fitted on."""
    fits = getattr(drop, "bridges", None)
    if not fits or bridge is False:
        return None
    if getattr(drop, "fingerprint", None) != weights_fingerprint(model):
        raise ValueError(
            "The plan's bridges were fitted on other weights than `model`'s "
            "(the model was trained or changed after `suggest_depth`, or it "
            "is another model). Pass x= to fit the bridges on data, "
            "bridge=False, or suggest again."
        )
    return fits


def check_rows(x, y):
    """Raise unless every array of `x` and `y` has the same number of rows."""
    leaves = keras.tree.flatten(x) + keras.tree.flatten(y)
    rows = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(rows) != 1:

        def shapes(data):
            return ", ".join(str(tuple(np.shape(a))) for a in keras.tree.flatten(data))

        raise ValueError(
            "Arguments `x` and `y` must hold the same number of samples (their "
            f"first dimension). Received: x with shape {shapes(x)} and y with "
            f"shape {shapes(y)}"
        )


def _heal_split(x, y, split, data, fixed=None):
    """`(x_fit, y_fit, validation or None)`: `data`, or the last `split` of
    the rows held out (Keras's `validation_split` takes the last rows). With
    a fixed batch size (`fixed`), both parts are whole batches."""
    if data is not None:
        rows = np.shape(keras.tree.flatten(data[0])[0])[0]
        if fixed and rows % fixed:
            raise ValueError(
                f"Argument `heal_validation_data` must hold whole batches of "
                f"the model's fixed batch size {fixed}. Received: {rows} rows."
            )
        return x, y, tuple(data)
    if not split:
        return x, y, None
    rows = np.shape(keras.tree.flatten(x)[0])[0]
    at = int(rows * (1.0 - split))
    if fixed:
        at = at // fixed * fixed
    if at < 1 or at >= rows:
        raise ValueError(
            "Argument `heal_validation_split` must leave rows on both sides: "
            f"{rows} rows of `x` give {rows - at} held out and {at} to train. "
            "Received: "
            f"heal_validation_split={split}. Pass more rows, "
            "heal_validation_data=, or heal_validation_split=0 (unguarded)."
        )

    def part(data, rows):
        return keras.tree.map_structure(lambda a: np.asarray(a)[rows], data)

    head, tail = slice(None, at), slice(at, None)
    return part(x, head), part(y, head), (part(x, tail), part(y, tail))


class _KeepBest(keras.callbacks.Callback):
    """Holds the weights with the lowest `val_loss` seen, starting from the
    model's own before any epoch (`start`), across several `fit` calls."""

    def __init__(self, start, weights):
        super().__init__()
        self.record = [("before", start)]
        self.best = (start, "before", weights)

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("val_loss", np.nan))
        label = f"epoch {len(self.record)}"
        self.record.append((label, loss))
        if np.isfinite(loss) and not loss >= self.best[0]:
            self.best = (loss, label, self.model.get_weights())


def _heal(result, targets, data, epochs, heal, batch_size):
    """Train the reduced model for `epochs`: with heal="cut", first (half of
    the epochs, at least one) only the layers next to the cuts, then all.
    With validation data, keep the best weights (before healing included)."""
    x, y, validation = data
    model = result.model
    near = {id(t.new_layer) for t in targets}
    new_layers = ordered_layers(model)
    for i, layer in enumerate(new_layers):
        if id(layer) in near:
            # The layer below the cut too: it now feeds the bridged one.
            below = [
                other for other in new_layers[:i] if recurrent_core(other) is not None
            ]
            if below:
                near.add(id(below[-1]))
    phases = [("all", epochs)]
    if heal == "cut" and near and epochs > 1:
        first = max(1, epochs // 2)
        phases = [("cut", first), ("all", epochs - first)]
    elif heal == "cut" and near:
        phases = [("cut", epochs)]
    config = model.get_compile_config()
    record = []
    flags = {id(v): v.trainable for v in model.weights}
    keep = None
    if validation is not None:
        start = model.evaluate(
            *validation, batch_size=batch_size, verbose=0, return_dict=True
        )["loss"]
        keep = _KeepBest(float(start), model.get_weights())
    try:
        for what, count in phases:
            if what == "cut":
                for layer in new_layers:
                    if id(layer) not in near:
                        for variable in layer.weights:
                            variable.trainable = False
            else:
                for variable in model.weights:
                    variable.trainable = flags[id(variable)]
            # The train function collects the trainable variables when it is
            # made: compile again (a fresh optimizer, as reduce_depth gives).
            model.compile_from_config(config)
            history = model.fit(
                x,
                y,
                epochs=count,
                batch_size=batch_size,
                verbose=0,
                shuffle=True,
                validation_data=validation,
                callbacks=[keep] if keep is not None else None,
            )
            record.append((what, count, float(history.history["loss"][-1])))
    finally:
        for variable in model.weights:
            variable.trainable = flags[id(variable)]
    model.compile_from_config(config)
    if keep is None:
        return record, {}
    loss, label, weights = keep.best
    model.set_weights(weights)
    return record, {"losses": dict(keep.record), "kept": label}


def _select(model, levels, depth, drop):
    """The levels to remove, bottom to top."""
    if (depth is None) == (drop is None):
        raise ValueError(
            "Pass exactly one of `depth` (the number of levels to keep) or "
            "`drop` (a list of level names to remove). Received: "
            f"depth={depth!r}, drop={drop!r}"
        )
    count = len(levels)
    names = ", ".join(repr(level.name) for level in levels)
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise TypeError(
                "Argument `depth` must be an integer, the number of levels to "
                f"keep. Received: depth={depth!r} (of type {type(depth).__name__})"
            )
        if not 1 <= depth < count:
            raise ValueError(
                "Argument `depth` must be an integer >= 1 and below the current "
                f"number of levels of model `{model.name}`, which is {count} "
                f"({names}). Received: depth={depth}"
            )
        if not single_stack(model, levels):
            raise ValueError(
                f"Model `{model.name}` has parallel recurrent branches, so "
                "`depth` does not say which levels to remove: pass `drop=` with "
                f"level names instead. Levels: {names}. Received: depth={depth}"
            )
        return levels[depth - 1 : count - 1]
    names_given = getattr(drop, "drop", drop)
    chosen = resolve(levels, names_given, argument="drop")
    if len(chosen) == count:
        raise ValueError(
            f"Argument `drop` would remove every level of model `{model.name}`"
            f" ({count}); keep at least one. Received: drop={list(names_given)!r}"
        )
    return chosen


def _check_data(model, x, batch_size):
    """The batch size to run `x` with; raise for data that cannot be sliced."""
    leaves = keras.tree.flatten(x)
    if not leaves or not all(
        hasattr(leaf, "shape") and hasattr(leaf, "__getitem__") for leaf in leaves
    ):
        raise TypeError(
            "Argument `x` must be array data as for `model.predict`: a NumPy "
            "array or tensor, or a list or dict of them. Received: "
            f"x of type {type(x).__name__}"
        )
    samples = leaves[0].shape[0]
    fixed = model.inputs[0].shape[0]
    if fixed is not None:
        if samples % fixed:
            raise ValueError(
                f"Model `{model.name}` has a fixed batch size of {fixed}, so "
                f"the number of samples in `x` must be a multiple of {fixed}. "
                f"Received: {samples} samples"
            )
        return fixed
    return batch_size


@dataclasses.dataclass
class _LayerPlan:
    old: object
    kept: list = None  # sublevel indices kept; None for a non-recurrent layer
    return_sequences: object = None  # new value, or None to keep it

    @property
    def removed(self):
        return self.kept == []


def _plan(model, levels, removed):
    removed_names = {level.name for level in removed}
    plans = {}
    for layer in ordered_layers(model):
        plan = _LayerPlan(layer)
        if recurrent_core(layer) is not None:
            plan.kept = [
                level.index
                for level in levels
                if level.layer is layer and level.name not in removed_names
            ]
        plans[id(layer)] = plan

    producer = _producers(model)
    for layer in ordered_layers(model):
        plan = plans[id(layer)]
        if not plan.removed:
            continue
        _check_removable(layer)
        below = producer.get(id(layer))
        while below is not None and plans.get(id(below), _LayerPlan(None)).removed:
            below = producer.get(id(below))
        below_plan = plans.get(id(below)) if below is not None else None
        if below_plan is not None and below_plan.kept:
            below_plan.return_sequences = layer.return_sequences
        elif not layer.return_sequences:
            what = f"layer `{below.name}`" if below is not None else "the model input"
            raise ValueError(
                f"Cannot remove layer `{layer.name}`: it returns only its last "
                f"output, and what sits below it ({what}) is not a recurrent "
                "layer that could do so instead, so the layers above would "
                "receive sequences. Keep at least one of its levels."
            )
    return plans


def _check_removable(layer):
    outputs = keras.tree.flatten(layer.output)
    if len(outputs) != 1:
        raise ValueError(
            f"Cannot remove layer `{layer.name}`: it returns {len(outputs)} "
            "tensors (return_state=True, or Bidirectional merge_mode=None), "
            "which the layers above it use. Keep at least one of its levels."
        )
    sequence, mask = sequence_input(layer)
    extra = [
        t
        for t in keras.tree.flatten(layer.input)
        if t is not sequence and t is not mask
    ]
    if extra:
        raise ValueError(
            f"Cannot remove layer `{layer.name}`: it is called with "
            f"{len(extra)} input tensor(s) besides its sequence and mask "
            "(e.g. `initial_state`). Keep at least one of its levels."
        )


def _producers(model):
    """`{id(layer): the op producing its sequence input, or None}`."""
    layers = ordered_layers(model)
    if isinstance(model, keras.Sequential):
        return {id(b): a for a, b in zip([None] + layers[:-1], layers)}
    made_by = {}
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(op.output):
            made_by[id(tensor)] = op
    return {id(layer): made_by.get(id(sequence_input(layer)[0])) for layer in layers}


def _new_config(plan):
    layer = plan.old
    # A nested layer's build_config (TimeDistributed, Bidirectional, ...)
    # would build it for its old input width: the new model builds it.
    config = _without_build_config(layer.get_config())
    if plan.kept is None:
        return config
    if isinstance(layer, keras.layers.Bidirectional):
        for key in ("layer", "backward_layer"):
            if config.get(key):
                config[key]["config"] = _recurrent_config(config[key]["config"], plan)
        return config
    return _recurrent_config(config, plan)


def _without_build_config(config):
    if isinstance(config, dict):
        return {
            key: _without_build_config(value)
            for key, value in config.items()
            if key != "build_config"
        }
    if isinstance(config, list):
        return [_without_build_config(value) for value in config]
    return config


def _recurrent_config(config, plan):
    config = dict(config)
    if "depth" in config:
        config["depth"] = len(plan.kept)
        config["share_depth"] = bool(config.get("share_depth")) and len(plan.kept) > 1
    if plan.return_sequences is not None:
        config["return_sequences"] = plan.return_sequences
    return config


@contextlib.contextmanager
def _python_seed(seed):
    # Unseeded Keras initializers draw their seed from Python's `random`
    # when they are created: seeding it while the new layers are created
    # makes their initial values reproducible. The caller's state comes back.
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _rebuild(model, plans):
    """The new (uncompiled) model and `{id(old layer): new layer}`."""
    new_layers = {
        key: type(plan.old).from_config(_new_config(plan))
        for key, plan in plans.items()
        if not plan.removed
    }
    if isinstance(model, keras.Sequential):
        return _rebuild_sequential(model, plans, new_layers), new_layers
    removed = {key for key, plan in plans.items() if plan.removed}

    def clone_function(op):
        if id(op) in removed:
            return op  # never called: call_function passes its input on
        if id(op) in new_layers:
            return new_layers[id(op)]
        return type(op).from_config(op.get_config())

    def call_function(layer, *args, **kwargs):
        if id(layer) in removed:
            # The layer's sequence input goes on; its mask reaches the layer
            # above through that layer's own call arguments.
            return args[0]
        return layer(*args, **kwargs)

    input_names = {
        id(op.output): op.name
        for op in model.operations
        if isinstance(op, keras.layers.InputLayer)
    }
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(
            batch_shape=t.shape,
            dtype=t.dtype,
            sparse=t.sparse,
            name=input_names.get(id(t)),
        ),
        model.input,
    )
    clone = keras.models.clone_model(
        model,
        input_tensors=inputs,
        clone_function=clone_function,
        call_function=call_function,
    )
    # The constructor, unlike the `trainable` setter, leaves the layers'
    # own flags (from their configs) alone.
    new_model = Model(
        clone.input, clone.output, name=model.name, trainable=model.trainable
    )
    return new_model, new_layers


def _rebuild_sequential(model, plans, new_layers):
    first = model.get_config()["layers"][0]
    if first.get("class_name") == "InputLayer":
        config = first["config"]
        inputs = keras.Input(
            batch_shape=config["batch_shape"],
            dtype=config.get("dtype"),
            sparse=config.get("sparse"),
            name=config.get("name"),
        )
    else:
        tensor = model.inputs[0]
        inputs = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype)
    layers = [
        new_layers[id(layer)] for layer in model.layers if id(layer) in new_layers
    ]
    return Sequential([inputs, *layers], name=model.name, trainable=model.trainable)


@dataclasses.dataclass
class _Pair:
    """A weight of the new model and the old weight it takes over."""

    new: object
    old: object
    old_layer: object  # top-level layers
    new_layer: object
    level: str = None  # old level name, for a recurrent weight
    rnn: object = None  # the old recurrent layer (one direction) it is from
    index: int = 0  # the old sublevel it is from
    input_kernel: bool = False


def _weight_pairs(plans, new_layers):
    pairs = []
    for key, plan in plans.items():
        if plan.removed:
            continue
        old, new = plan.old, new_layers[key]
        if plan.kept is None:
            pairs += [_Pair(n, o, old, new) for n, o in zip(new.weights, old.weights)]
            pairs += [_Pair(n, None, old, new) for n in new.weights[len(old.weights) :]]
            continue
        seen = set()
        for old_rnn, new_rnn in zip(directions(old), directions(new)):
            for j, i in enumerate(plan.kept):
                for k, (n, o) in enumerate(
                    zip(level_variables(new_rnn, j), level_variables(old_rnn, i))
                ):
                    if id(n) in seen:  # shared sublayers: one set, mapped once
                        continue
                    seen.add(id(n))
                    pairs.append(
                        _Pair(
                            n,
                            o,
                            old,
                            new,
                            level=f"{old.name}/level_{i}",
                            rnn=old_rnn,
                            index=i,
                            input_kernel=(j == 0 and k == 0),
                        )
                    )
    return pairs


def _transfer(pairs, model, strict):
    """Copy the weights that fit; returns the pairs whose weight must be
    replaced (shape changed), after `strict` has had its say."""
    misfits = []
    for pair in pairs:
        if pair.old is not None and tuple(pair.old.shape) == tuple(pair.new.shape):
            pair.new.assign(keras.ops.convert_to_numpy(pair.old))
            continue
        if strict:
            owner = (
                f"level `{pair.level}`"
                if pair.level
                else f"layer `{pair.old_layer.name}`"
            )
            old_shape = None if pair.old is None else tuple(pair.old.shape)
            raise ValueError(
                f"Argument `strict=True` forbids replacing weights, but {owner} "
                f"must replace its weight `{pair.new.path}`: shape {old_shape} "
                f"in model `{model.name}`, {tuple(pair.new.shape)} in the "
                "reduced model (its input width changed). Pass strict=False "
                "to re-initialise it, with `x=` to fit it by least squares."
            )
        misfits.append(pair)
    return misfits


@dataclasses.dataclass
class _Target:
    """A kept layer above a cut whose input kernel (and bias) the bridge
    refits: one recurrent level (both directions) or a Dense layer."""

    old_layer: object
    new_layer: object
    old_index: int = 0  # sublevel, for a recurrent level
    new_index: int = 0
    name: str = ""  # the old level's or layer's name


def _bridge_targets(model, levels, removed, plans, new_layers):
    """The kept levels (and Dense layers) that read the output of a removed
    level directly, bottom to top."""
    removed_names = {level.name for level in removed}
    producer = _producers(model)
    depth_of = {}
    for level in levels:
        depth_of[id(level.layer)] = level.index + 1
    targets = []
    for layer in ordered_layers(model):
        plan = plans[id(layer)]
        if plan.removed:
            continue
        below = producer.get(id(layer))
        while below is not None and isinstance(below, _PASS_THROUGH):
            below = producer.get(id(below))
        below_top = None
        if below is not None and id(below) in depth_of:
            below_top = f"{below.name}/level_{depth_of[id(below)] - 1}"
        if plan.kept is None:
            if isinstance(layer, keras.layers.Dense) and below_top in removed_names:
                targets.append(_Target(layer, new_layers[id(layer)], name=layer.name))
            continue
        for j, i in enumerate(plan.kept):
            under = f"{layer.name}/level_{i - 1}" if i > 0 else below_top
            if under in removed_names:
                targets.append(
                    _Target(
                        layer, new_layers[id(layer)], i, j, f"{layer.name}/level_{i}"
                    )
                )
    return targets


# Layers that pass their input on unchanged at inference: a bridge looks
# through them for the level below.
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)


def _input_weights(layer, index):
    """`[(kernel, bias or None)]` of sublevel `index` of a recurrent layer
    (one per direction), or of a Dense layer: the weights computing the
    input projection `x @ kernel + bias`."""
    if isinstance(layer, keras.layers.Dense):
        return [(layer.kernel, layer.bias)]
    found = []
    for rnn in directions(layer):
        if isinstance(rnn, SharedRNN):
            kernel, _, bias = rnn.cell.level_weights(index)
        else:
            kernel, bias = rnn.cell.kernel, getattr(rnn.cell, "bias", None)
        found.append((kernel, bias))
    return found


def _shared(layer, index):
    """Whether sublevel `index` of `layer` shares its weights with another."""
    core = recurrent_core(layer)
    return (
        isinstance(core, SharedRNN)
        and core.share_depth
        and index >= 1
        and core.depth > 2
    )


def bridge_coefficients(x_new, x_old, mask=None, intercept=True):
    """`(M, c)` minimising `||x_new M + c - x_old||^2` over the valid rows.

    The bridge of a cut: a level that read `x_old` in the full model and
    reads `x_new` now gets the input kernel `M @ K` and bias `c @ K + b`,
    so that its input projection `x K + b` matches the old one in the least
    squares sense (fitting the projection itself gives the same `M`, since
    the projection is linear in `x_old`). A ridge of `RIDGE` on the
    normalised Gram matrix keeps a collinear `x_new` solvable. `c` is None
    without `intercept`.
    """
    a = np.asarray(x_new, np.float64).reshape(-1, x_new.shape[-1])
    b = np.asarray(x_old, np.float64).reshape(-1, x_old.shape[-1])
    if mask is not None and np.ndim(mask) == np.ndim(x_new) - 1:
        rows = np.asarray(mask).reshape(-1).astype(bool)
        a, b = a[rows], b[rows]
    if intercept:
        a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    gram = a.T @ a
    # Columns scaled to unit norm, then a tiny ridge: solvable when x_new is
    # collinear, whatever the columns' scales (a ridge relative to the
    # trace biased the fit where the ones column dominated).
    scale = np.sqrt(np.diag(gram)) + 1e-30
    scaled = gram / np.outer(scale, scale) + RIDGE * np.eye(len(gram))
    coef = np.linalg.solve(scaled, (a.T @ b) / scale[:, None]) / scale[:, None]
    if intercept:
        return coef[:-1], coef[-1]
    return coef, None


class _Bridge:
    """Refits the input kernels (and biases) of the layers above each cut,
    bottom to top, on the inputs `x`."""

    def __init__(self, model, new_model, x, batch_size):
        self.model = model
        self.new_model = new_model
        self.x = x
        self.batch_size = batch_size
        self.old_inputs = {}
        # Running the old model moves its stateful layers' states: keep them
        # to put back, and run from zero states as the new model does.
        self.saved_states = [(v, keras.ops.convert_to_numpy(v)) for v in _states(model)]
        for variable, _ in self.saved_states:
            variable.assign(np.zeros(variable.shape, variable.dtype))

    def close(self):
        for variable, value in self.saved_states:
            variable.assign(value)
        for variable in _states(self.new_model):
            variable.assign(np.zeros(variable.shape, variable.dtype))

    def _inputs(self, model, layer, index, cache=None):
        """Per direction, the sequence sublevel `index` of `layer` reads in
        `model`, and the mask."""
        key = (id(layer), index == 0)
        if cache is not None and key in cache:
            found = cache[key]
        else:
            found = _run(model, self.x, self.batch_size, layer, record=index > 0)
            if cache is not None:
                cache[key] = found
        sequences, mask = found
        if index == 0 or isinstance(layer, keras.layers.Dense):
            return [sequences] * len(_input_weights(layer, 0)), mask
        return [sequences[(id(rnn), index - 1)] for rnn in directions(layer)], mask

    def fit(self, target):
        """Refit one target: `(assigned weight paths, [(M, c)] per
        direction)`."""
        # The new model's input, with every weight below already final
        # (targets come bottom to top): not cached.
        new_x, new_mask = self._inputs(
            self.new_model, target.new_layer, target.new_index
        )
        old_x, old_mask = self._inputs(
            self.model, target.old_layer, target.old_index, self.old_inputs
        )
        mask = old_mask if new_mask is None else new_mask
        new_weights = _input_weights(target.new_layer, target.new_index)
        fits = [
            bridge_coefficients(a, b, mask, intercept=new_bias is not None)
            for a, b, (_, new_bias) in zip(new_x, old_x, new_weights)
        ]
        return apply_bridge(target, fits), fits


def apply_bridge(target, fits):
    """Give `target`'s new input kernel `M @ K` and bias `c @ K + b` from
    its old ones, `fits` holding `(M, c)` per direction; returns the paths
    of the weights assigned."""
    assigned = []
    old_weights = _input_weights(target.old_layer, target.old_index)
    new_weights = _input_weights(target.new_layer, target.new_index)
    for (m, c), (kernel, bias), (new_kernel, new_bias) in zip(
        fits, old_weights, new_weights
    ):
        k = keras.ops.convert_to_numpy(kernel).astype(np.float64)
        if m.shape != (tuple(new_kernel.shape)[0], k.shape[0]):
            raise ValueError(
                f"The bridge of `{target.name}` maps width {m.shape[0]} to "
                f"{m.shape[1]}, but its new kernel reads width "
                f"{new_kernel.shape[0]} and its old one width {k.shape[0]}."
            )
        dtype = keras.backend.standardize_dtype(new_kernel.dtype)
        new_kernel.assign((m @ k).astype(dtype))
        assigned.append(new_kernel.path)
        if new_bias is not None:
            value = keras.ops.convert_to_numpy(bias).astype(np.float64)
            shift = 0.0 if c is None else c @ k
            if value.ndim == 2:  # GRU reset_after: row 0 is the input bias
                value[0] += shift
            else:
                value = value + shift
            new_bias.assign(value.astype(dtype))
            assigned.append(new_bias.path)
    return assigned


def _states(model):
    """The state variables of the model's stateful recurrent layers."""
    found = []
    for layer in ordered_layers(model):
        if recurrent_core(layer) is None:
            continue
        for rnn in directions(layer):
            if rnn.stateful and rnn.states is not None:
                found += list(rnn.states)
    return found


def _run(model, x, batch_size, layer, record=False):
    """`(sequence, mask)` that `layer` receives on `x`, as NumPy arrays.

    With `record`, `sequence` is instead `{(id(rnn), sublevel): outputs}`:
    the output sequence of every `SharedRNN` sublevel of `layer`, in input
    order, read from the probes the layer exposes while recorded.
    """
    sequence, mask = sequence_input(layer)
    outputs = [sequence] if mask is None else [sequence, mask]
    if record:
        outputs.append(keras.tree.flatten(layer.output)[0])
    # A Sequential model has one input and no `input` until it is called.
    inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    features = keras.Model(inputs, outputs)
    rnns = {id(rnn): rnn for rnn in directions(layer)}
    samples = keras.tree.flatten(x)[0].shape[0]
    chunks, levels = [], {}
    for start in range(0, samples, batch_size):
        rows = slice(start, start + batch_size)
        batch = keras.tree.map_structure(lambda a, rows=rows: a[rows], x)
        if record:
            # Nothing is differentiated: the probes (zeros) only expose each
            # sublevel's outputs, so no tape watches them.
            with probes.recording() as recorder:
                values = features(batch, training=False)
            for probe in recorder.probes:
                if id(probe.layer) not in rnns:
                    continue
                out = np.transpose(keras.ops.convert_to_numpy(probe.outputs), (1, 0, 2))
                if probe.layer.go_backwards:  # processing order -> input order
                    out = out[:, ::-1]
                levels.setdefault((id(probe.layer), probe.level), []).append(out)
        else:
            values = features(batch, training=False)
        chunks.append(
            [keras.ops.convert_to_numpy(v) for v in keras.tree.flatten(values)]
        )
    sequences = np.concatenate([c[0] for c in chunks])
    masks = np.concatenate([c[1] for c in chunks]) if mask is not None else None
    if record:
        return {k: np.concatenate(v) for k, v in levels.items()}, masks
    return sequences, masks
