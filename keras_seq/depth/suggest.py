"""Which recurrent levels to remove: `suggest_depth` scores every level."""

import dataclasses
import itertools
import math

import keras
import numpy as np
import pandas as pd

from keras_seq import _validation as validation
from keras_seq.callbacks import GradientMonitor
from keras_seq.depth.reduce import _run, check_rows, reduce_depth, weights_fingerprint
from keras_seq.depth.search import CandidateLosses, Unsupported, angular_distance
from keras_seq.layers.shared_rnn import SharedRNN
from keras_seq.models import Model, Sequential
from keras_seq.models.levels import (
    check_model,
    directions,
    recurrent_core,
    recurrent_levels,
    sequence_input,
)

METHODS = ("auto", "ablation", "similarity", "gradient", "last")


@dataclasses.dataclass
class DepthPlan:
    """What `suggest_depth` proposes: pass it to `reduce_depth(model,
    drop=plan)`.

    Attributes:
        drop: level names to remove, in the order chosen (the first goes
            first).
        depth: the number of levels left after removing `drop`.
        method: the method that ordered the levels (`"auto"` says which
            inputs it had in `explanation`).
        scores: `pandas.DataFrame`, one row per level (see `suggest_depth`).
        explanation: plain text: why each level goes or stays.
        loss: measured loss of the model with `drop` removed (no
            retraining), or None without data.
        full_loss: measured loss of the full model, or None without data.
        candidates: `pandas.DataFrame` of every candidate set measured:
            `drop` (level names), `levels_dropped`, `loss` (held-out,
            bridged), `position_baseline` (the set is the `last` baseline).
        traces: how many times the candidate function was traced (None when
            candidates were measured by rebuilding).
        bridges: with data, the plan's bridges as `reduce_depth` applies
            them (`{level or Dense name: [(M, c)] per direction}`), fitted
            on the even rows of `(x, y)`: `reduce_depth(model, drop=plan)`
            without `x` uses them, so the reduced model is the one whose
            loss was measured, with no forward pass. None without data.
        fingerprint: a digest of `model`'s weights the bridges belong to
            (`reduce_depth` refuses them for other weights).
    """

    drop: list
    depth: int
    method: str
    scores: object
    explanation: str
    loss: object = None
    full_loss: object = None
    candidates: object = None
    traces: object = None
    bridges: object = dataclasses.field(default=None, repr=False)
    fingerprint: object = dataclasses.field(default=None, repr=False)

    def __str__(self):
        return self.explanation


def suggest_depth(
    model,
    x=None,
    y=None,
    *,
    monitor=None,
    depth=None,
    method="auto",
    tolerance=0.05,
    batch_size=64,
    gradient_steps=4,
    max_candidates=70,
    beam=8,
):
    """Score every recurrent level for removal and propose a plan.

    With data, every loss is *measured*: the model without the candidate
    levels, each cut bridged as `reduce_depth(..., x=...)` bridges it (the
    kept layer above a cut gets the least-squares refit of its input
    kernel and bias), no retraining. The bridges are fitted on the even
    rows of `(x, y)` and the losses measured on the odd rows (held out).
    For a single stack (levels feeding each other directly, or through
    dropout-like layers) one candidate costs one call of one traced
    function of a boolean keep-vector (traced once per `suggest_depth`
    call: `plan.traces`); other layouts rebuild each candidate.

    Every method that the given inputs allow scores every level, in one
    frame (one row per level, bottom to top):

    - `ablation` (needs `x`, `y`, a compiled model): the measured loss
      increase when that level alone is removed (bridged).
    - `similarity` (needs `x`): the angular distance between the level's
      input and output sequences, `arccos(cos(x_t, h_t)) / pi` averaged over
      the valid time steps (ShortGPT's Block Influence family; NaN where
      the input and output widths differ). Small: the level changes little.
    - `gradient` (a `GradientMonitor` that trained the model, or, for
      `method="gradient"`, `x`, `y` to run one for `gradient_steps` batches
      on a copy with a zero learning rate): each level's share of the
      gradient norm (`grad_share`), its horizon and decay through time, and
      its gradient norm relative to the top level (`depth_ratio`) and to
      the level above (`attenuation`); levels whose gradients vanish or
      explode through time or depth, or turn non-finite, are flagged. A
      diagnosis only: these scores ranked levels against the measured
      truth at Kendall tau -0.29 (benchmarks/depth_reduction.py), so no
      other method uses them to choose (`fit_reducing_depth` uses the flags
      to decide when and how many levels to remove).
    - `last`: the position baseline (Lu et al. 2024 drop the last layers):
      the levels just below the top go first, then downwards, the top level
      last, as `reduce_depth(model, depth=...)` does without a plan (the top
      level stays: the head was trained on its outputs).

    `method="auto"` with data searches *sets* of levels by their measured
    loss (single-level costs do not add up): for each number of levels to
    drop, every combination when there are at most `max_candidates`,
    otherwise a beam (the `beam` best sets one level smaller, each extended
    by one level); the position baseline of that size is always among the
    candidates, so the plan never measures worse than `last` on the
    held-out rows. Among the sets of the chosen size within `tolerance`
    (times the full loss) of the best and no worse than the baseline, one
    whose cuts keep every input width (no replaced kernel: the bottom level
    stays, neighbouring widths agree) is preferred: such removals healed
    better in benchmarks/depth_reduction.py. `plan.candidates` lists every
    set measured. Without data
    it orders by the monitor's flags and `depth_ratio`, or falls back to
    `last`, and says so.

    The target depth is `depth` when given; otherwise, with data, the
    smallest depth whose measured loss (the best set found of that size for
    `auto`; removing in the method's order for the others) stays within
    `tolerance` (relative) of the full model's loss; without data, one
    level less. A plan whose measured loss exceeds the full model's by more
    than `tolerance` says so plainly in its explanation.

    Args:
        model: A built, compiled Sequential or functional model with two or
            more recurrent levels (see `keras_seq.depth.recurrent_levels`).
        x, y: Optional data, as for `model.evaluate` (arrays).
        monitor: Optional `keras_seq.callbacks.GradientMonitor` that recorded
            this model's training.
        depth: Optional target number of levels, 1 to levels - 1.
        method: One of `"auto"` (default), `"ablation"`, `"similarity"`,
            `"gradient"`, `"last"`.
        tolerance: Float >= 0 (default 0.05): relative loss increase allowed.
        batch_size: Default 64, for the forward passes of rebuilt models.
        gradient_steps: Default 4, batches the gradient run records
            (`method="gradient"` without a monitor).
        max_candidates: Default 70 (C(8, 4)): evaluate every combination of
            a size when there are at most this many, else search a beam.
        beam: Default 8, sets kept per size in the beam search.

    Returns:
        A `DepthPlan`. Its `scores` columns: `level`, `position`, `kind`,
        `parameters`, `ablation_loss`, `ablation_cost`, `replaces_weights`
        (removing the level alone replaces a kept weight), `similarity`,
        `grad_share`, `horizon`, `decay`, `depth_ratio`, `attenuation`,
        `flags`, `rank` (0 = removed first by `method`; for `auto`, levels
        in the order they enter the best set of each size), `drop`.

    Raises:
        TypeError: `model` is not a keras model; `monitor` is not a
            `GradientMonitor`.
        ValueError: fewer than two levels, a bad `method`, `depth`,
            `tolerance`, `max_candidates` or `beam`, `y` without `x`, `x`
            and `y` with different numbers of samples (the message gives
            both shapes), a method whose inputs are missing, an uncompiled
            model with data, or a monitor without records.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> model = keras_seq.Sequential([
    ...     keras.Input((6, 2)),
    ...     keras_seq.layers.SharedRNN(4, depth=3, name="rnn"),
    ...     keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x, y = np.ones((8, 6, 2)), np.ones((8, 1))
    >>> plan = keras_seq.depth.suggest_depth(model, x, y, depth=2)
    >>> len(plan.drop)
    1
    """
    check_model(model)
    validation.check_choice("method", method, METHODS)
    validation.check_positive_int("batch_size", batch_size)
    validation.check_positive_int("gradient_steps", gradient_steps)
    validation.check_positive_int("max_candidates", max_candidates)
    validation.check_positive_int("beam", beam)
    if isinstance(tolerance, bool) or not (
        isinstance(tolerance, (int, float)) and tolerance >= 0
    ):
        raise ValueError(
            "Argument `tolerance` must be a number >= 0 (a relative loss "
            f"increase). Received: tolerance={tolerance!r}"
        )
    if monitor is not None and not isinstance(monitor, GradientMonitor):
        raise TypeError(
            "Argument `monitor` must be a keras_seq.callbacks.GradientMonitor "
            f"or None. Received: monitor={monitor!r}"
        )
    if monitor is not None and not monitor.records:
        raise ValueError(
            "Argument `monitor` has recorded no training step: pass the "
            "monitor that was in `model.fit(callbacks=[...])`, after fit."
        )
    if (x is None) != (y is None):
        raise ValueError(
            "Arguments `x` and `y` go together: give both (data to measure "
            "the loss on) or neither."
        )
    levels = recurrent_levels(model)
    if len(levels) < 2:
        raise ValueError(
            f"Model `{model.name}` has {len(levels)} recurrent level "
            f"({levels[0].name}): there is nothing to remove."
        )
    if depth is not None:
        validation.check_positive_int("depth", depth)
        if depth >= len(levels):
            raise ValueError(
                f"Argument `depth` must be below the model's {len(levels)} "
                f"recurrent levels. Received: depth={depth}"
            )
    has_data = x is not None
    if has_data and not model.compiled:
        raise ValueError(
            f"Model `{model.name}` is not compiled: suggest_depth measures "
            "its loss on (x, y). Call model.compile(loss=...) first."
        )
    needs = {
        "ablation": has_data,
        "similarity": has_data,
        "gradient": has_data or monitor is not None,
    }
    if method in needs and not needs[method]:
        raise ValueError(
            f'method="{method}" needs '
            + ("data (x, y)" if method != "gradient" else "x and y or a monitor")
            + ". Pass them, or use method='auto' or 'last'."
        )

    frame = pd.DataFrame(
        {
            "level": [lv.name for lv in levels],
            "position": [lv.position for lv in levels],
            "kind": [lv.kind for lv in levels],
            "parameters": [lv.parameters for lv in levels],
        }
    )
    n = len(levels)
    full_loss = None
    notes = []
    measure = None
    search = _Search(n)
    if has_data:
        check_rows(x, y)
        measure, full_loss, similarity, how, fit_bridges = _measurer(
            model, levels, x, y, batch_size, search
        )
        notes.append(how)
        single = measure([(i,) for i in range(n)])
        frame["ablation_loss"] = single
        frame["ablation_cost"] = frame["ablation_loss"] - full_loss
        frame["replaces_weights"] = [_width_changes(lv) for lv in levels]
        frame["similarity"] = similarity
    else:
        frame["ablation_loss"] = frame["ablation_cost"] = np.nan
        frame["replaces_weights"] = [_width_changes(lv) for lv in levels]
        frame["similarity"] = np.nan
    if monitor is None and method == "gradient":
        monitor = _gradient_run(model, x, y, batch_size, gradient_steps)
    gradient = _gradient_scores(levels, monitor) if monitor is not None else None
    for column in ("grad_share", "horizon", "decay", "depth_ratio", "attenuation"):
        frame[column] = np.nan if gradient is None else gradient[column]
    frame["flags"] = "" if gradient is None else gradient["flags"]

    if method == "auto" and has_data:
        count = None if depth is None else n - depth
        limit = full_loss + tolerance * abs(full_loss)
        chosen, loss, order, search_note = _combinations(
            n,
            count,
            limit,
            measure,
            frame,
            max_candidates,
            beam,
            tolerance * abs(full_loss),
            _width_checker(levels),
        )
        notes.append(search_note)
        notes.append(_GRADIENT_NOTE)
        drop_count = len(chosen)
        loss = full_loss if loss is None else loss
        if depth is None:
            target_note = (
                f"target: the smallest depth whose measured loss stays within "
                f"{tolerance:g} (relative) of the full model's {full_loss:.4g}: "
                f"depth {n - drop_count}"
            )
        else:
            target_note = f"target: depth={depth}, as given"
        notes.append(target_note)
        drop = [frame.level[i] for i in chosen]
    else:
        order, how = _order(frame, method)
        if how:
            notes.append(how)
        drop_count, loss, target_note = _target(
            frame, order, depth, full_loss, tolerance, measure
        )
        notes.append(target_note)
        drop = [frame.level[i] for i in order[:drop_count]]
    frame["rank"] = np.argsort(order)
    frame["drop"] = frame.level.isin(drop)
    if full_loss is not None and loss is not None:
        limit = full_loss + tolerance * abs(full_loss)
        if loss > limit:
            notes.append(
                f"WARNING: this plan harms the model: its measured loss "
                f"{loss:.4g} is {_relative(loss, full_loss)} the full model's "
                f"{full_loss:.4g}, beyond the tolerance of {tolerance:g}. Keep "
                "more levels, or heal after removing "
                "(reduce_depth(..., y=..., heal_epochs=...))."
            )
    explanation = _explain(frame, order, drop, method, notes, full_loss, loss)
    bridges, fingerprint = None, None
    if has_data and drop:
        names = frame.level.tolist()
        bridges = fit_bridges(sorted(names.index(name) for name in drop))
        fingerprint = None if bridges is None else weights_fingerprint(model)
    return DepthPlan(
        drop=drop,
        depth=n - len(drop),
        method=method,
        scores=frame,
        explanation=explanation,
        loss=loss,
        full_loss=full_loss,
        candidates=search.frame(frame.level.tolist()),
        traces=search.traces,
        bridges=bridges,
        fingerprint=fingerprint,
    )


_GRADIENT_NOTE = (
    "gradient scores (grad_share, horizon, decay, depth_ratio, flags) are a "
    "diagnosis column only and do not enter the choice: against the measured "
    "leave-one-out truth they ranked levels at Kendall tau -0.29 "
    "(benchmarks/depth_reduction.py); fit_reducing_depth uses the flags to "
    "decide when, and how many, levels to remove"
)


def _relative(loss, full):
    if full == 0:
        return "above"
    return f"{loss / full - 1:+.1%} relative to"


class _Search:
    """Every candidate measured, with its loss, and the traces it took."""

    def __init__(self, n):
        self.n = n
        self.measured = {}
        self.traces = None

    def frame(self, names):
        rows = [
            {
                "drop": tuple(names[i] for i in key),
                "levels_dropped": len(key),
                "loss": loss,
                "position_baseline": key == _baseline(self.n, len(key)),
            }
            for key, loss in self.measured.items()
        ]
        columns = ["drop", "levels_dropped", "loss", "position_baseline"]
        return pd.DataFrame(rows, columns=columns)


def _measurer(model, levels, x, y, batch_size, search):
    """`(measure, full loss, similarity, note)`: `measure(candidates)` gives
    the held-out loss of each candidate (tuples of level positions to drop),
    bridged; cached in `search.measured`."""
    samples = len(keras.tree.flatten(x)[0])
    index = np.arange(samples)
    fit_rows = index % 2 == 0 if samples > 1 else index >= 0
    loss_rows = index % 2 == 1 if samples > 1 else index >= 0
    take = lambda data, rows: keras.tree.map_structure(  # noqa: E731
        lambda a: np.asarray(a)[rows], data
    )
    split = (
        f"bridges fitted on the {fit_rows.sum()} even rows of (x, y), losses "
        f"measured on the {loss_rows.sum()} odd rows"
        if samples > 1
        else "one sample: bridges fitted and losses measured on it"
    )
    try:
        engine = CandidateLosses(model, levels, x, y, fit_rows, loss_rows)
    except Unsupported as reason:
        engine = None
        how = (
            f"each candidate rebuilt with reduce_depth and measured ({reason}: "
            "outside what the traced evaluator reproduces); " + split
        )
    else:
        how = (
            "each candidate measured by one call of one traced function "
            "(level-skip gates, bridges fitted in-graph); " + split
        )
    x_fit, x_loss, y_loss = take(x, fit_rows), take(x, loss_rows), take(y, loss_rows)

    def measure(candidates):
        keys = [tuple(sorted(c)) for c in candidates]
        new = list(dict.fromkeys(k for k in keys if k not in search.measured))
        if engine is not None:
            losses = engine.losses(new)
        else:
            names = [lv.name for lv in levels]
            losses = [
                _measure(
                    model, [names[i] for i in key], x_fit, x_loss, y_loss, batch_size
                )
                for key in new
            ]
        for key, loss in zip(new, losses):
            search.measured[key] = float(loss) if np.isfinite(loss) else float("inf")
        if engine is not None:
            search.traces = engine.traces
        return [search.measured[k] for k in keys]

    def fit_bridges(drop):
        """The bridges of the set `drop` (level positions), on the fit rows."""
        if engine is not None:
            return engine.bridges(drop)
        names = [levels[i].name for i in drop]
        try:
            result = reduce_depth(model, drop=names, x=x_fit, batch_size=batch_size)
        except ValueError:  # not buildable on the fit rows: no bridges to carry
            return None
        return result.bridge_fits

    if engine is not None:
        full_loss = engine.full_loss
        similarity = engine.similarity
        search.measured.pop((), None)
    else:
        full_loss = _evaluate(model, x_loss, y_loss, batch_size)
        similarity = _similarity(model, levels, x, batch_size)
    return measure, full_loss, similarity, how, fit_bridges


def _width_changes(level):
    """Whether removing the level alone changes the input width of what
    reads its output (so a kept weight must be replaced)."""
    core = recurrent_core(level.layer)
    last = core.depth - 1 if isinstance(core, SharedRNN) else 0
    if level.index == 0:
        width_in = sequence_input(level.layer)[0].shape[-1]
    else:
        width_in = core.units
    if level.index == last:
        width_out = keras.tree.flatten(level.layer.output)[0].shape[-1]
    else:
        width_out = core.units
    return bool(width_in != width_out)


def _width_checker(levels):
    """`f(drop)`: whether removing the levels `drop` (positions) makes a kept
    layer read a different width (so a kernel must be replaced)."""
    widths_in, widths_out = [], []
    for level in levels:
        core = recurrent_core(level.layer)
        last = core.depth - 1 if isinstance(core, SharedRNN) else 0
        widths_in.append(
            sequence_input(level.layer)[0].shape[-1] if level.index == 0 else core.units
        )
        widths_out.append(
            keras.tree.flatten(level.layer.output)[0].shape[-1]
            if level.index == last
            else core.units
        )

    def changes(drop):
        runs, start = [], None
        for i in range(len(levels) + 1):
            if i < len(levels) and i in drop:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i - 1))
                start = None
        return any(widths_in[i] != widths_out[j] for i, j in runs)

    return changes


def _baseline(n, count):
    """The position baseline: the `count` levels just below the top."""
    return tuple(range(n - 1 - count, n - 1))


def _combinations(
    n, count, limit, measure, frame, max_candidates, beam, tolerance_gap, widths_change
):
    """`auto` with data: `(levels to drop, loss, removal order, note)`.

    Sizes are searched upwards; at each size every combination when there
    are at most `max_candidates`, otherwise the `beam` best sets of the size
    below each extended by one level; the position baseline of each size is
    always among the candidates, so the chosen set never measures worse than
    it. `count` None: the largest size whose best set stays within `limit`.
    """
    single = frame.ablation_loss.to_numpy()
    direct = count is not None and math.comb(n, count) <= max_candidates
    sizes = [count] if direct else range(1, (n - 1 if count is None else count) + 1)
    best = {0: ((), None)}
    frontier, total, exhaustive = [()], 0, []
    search_sizes = {}
    for k in sizes:
        if math.comb(n, k) <= max_candidates:
            candidates = set(itertools.combinations(range(n), k))
            exhaustive.append(k)
        else:
            candidates = {
                tuple(sorted(set(b) | {i}))
                for b in frontier
                for i in range(n)
                if i not in b
            }
        candidates.add(_baseline(n, k))
        candidates = sorted(candidates)
        losses = measure(candidates)
        total += len(candidates)
        ranked = sorted(
            zip(losses, candidates),
            key=lambda p: (_finite(p[0]), p[1] != _baseline(n, k), p[1]),
        )
        if count is None and ranked[0][0] > limit:
            break
        best[k] = (ranked[0][1], ranked[0][0])
        search_sizes[k] = [(c, v) for v, c in ranked]
        frontier = [c for _, c in ranked[:beam]]
    size = max(best)
    chosen, loss = best[size]
    if size:
        # Among the sets within `tolerance` of the best (and no worse than
        # the baseline), prefer one whose cuts keep every input width: a
        # replaced kernel (the bottom level going, widths that differ)
        # healed worse in benchmarks/depth_reduction.py.
        baseline_loss = measure([_baseline(n, size)])[0]
        slack = min(loss + tolerance_gap, baseline_loss)
        near = [c for c, v in search_sizes[size] if v <= slack]
        chosen, loss = min(
            ((c, v) for c, v in search_sizes[size] if c in near),
            key=lambda p: (widths_change(p[0]), p[1]),
        )
    order = []
    for k in sorted(best):
        new = [i for i in best[k][0] if i not in order]
        order += sorted(new, key=lambda i: _finite(single[i]))
    order += sorted(
        (i for i in range(n) if i not in order), key=lambda i: _finite(single[i])
    )
    how = (
        "every combination"
        if len(exhaustive) == len(list(sizes))
        else f"every combination where at most {max_candidates}, else a beam of {beam}"
    )
    baseline = measure([_baseline(n, size)])[0] if size else None
    note = (
        f"auto: {total} candidate sets of levels to drop measured ({how}, "
        "sizes upwards), each with every cut bridged; the position baseline "
        "(the levels just below the top) is always among them; among the "
        "sets within the tolerance of the best (and not worse than the "
        "baseline), one whose cuts keep every input width is preferred"
    )
    if baseline is not None:
        note += (
            f": chosen {loss:.4g} against {baseline:.4g} for the baseline of "
            f"{size} level(s)"
        )
    return list(chosen), loss, order, note


def _finite(value):
    return value if np.isfinite(value) else float("inf")


def _measure(model, names, x_fit, x, y, batch_size):
    """The loss on (x, y) of `model` without the named levels, bridged on
    `x_fit` (one rebuild per candidate: the fallback path)."""
    try:
        result = reduce_depth(model, drop=list(names), x=x_fit, batch_size=batch_size)
    except ValueError:  # a layer that cannot go (see reduce_depth): no candidate
        return float("inf")
    return _evaluate(result.model, x, y, batch_size)


def _evaluate(model, x, y, batch_size):
    """The compiled loss on (x, y), as `model.evaluate` reports it, by direct
    forward passes: every candidate is a new model, and `evaluate` would
    trace a test function for each (~0.4 s apiece here)."""
    samples = len(keras.tree.flatten(x)[0])
    total = 0.0
    for start in range(0, samples, batch_size):
        xb, yb = keras.tree.map_structure(
            lambda a, s=start: a[s : s + batch_size], (x, y)
        )
        y_pred = model(xb, training=False)
        loss = model.compute_loss(x=xb, y=yb, y_pred=y_pred, training=False)
        total += float(loss) * len(keras.tree.flatten(xb)[0])
    return total / samples


def _similarity(model, levels, x, batch_size):
    """Mean angular distance between each level's input and output
    sequences over the valid steps; NaN where the widths differ."""
    by_layer = {}
    for level in levels:
        by_layer.setdefault(id(level.layer), []).append(level)
    scores = {}
    for group in by_layer.values():
        layer = group[0].layer
        inputs, mask = _run(model, x, batch_size, layer)
        if group[0].kind == "SharedRNN":  # every sublevel's sequence, per direction
            outputs, _ = _run(model, x, batch_size, layer, record=True)
            rnns = directions(layer)
        else:  # one level: the layer's own output (merged for Bidirectional)
            outputs = {(id(layer), 0): _layer_outputs(model, x, batch_size, layer)}
            rnns = [layer]
        for level in group:
            distances = []
            for rnn in rnns:
                out = outputs[(id(rnn), level.index)]
                seen = (
                    inputs if level.index == 0 else outputs[(id(rnn), level.index - 1)]
                )
                distances.append(angular_distance(seen, out, mask))
            scores[level.name] = float(np.mean(distances))
    return [scores[level.name] for level in levels]


def _layer_outputs(model, x, batch_size, layer):
    """The output a built-in recurrent layer gives on `x`, as a sequence."""
    inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    output = keras.tree.flatten(layer.output)[0]
    values = keras.Model(inputs, output).predict(x, batch_size=batch_size, verbose=0)
    return values if values.ndim == 3 else values[:, None]


def _gradient_run(model, x, y, batch_size, steps):
    """A GradientMonitor run for `steps` batches on a copy of the model that
    does not move (zero learning rate)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if isinstance(model, keras.Sequential):
        spec = model.inputs[0]
        start = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
        copy = Sequential([start] + copy.layers, name=model.name)
    elif not isinstance(copy, Model):
        copy = Model(copy.inputs, copy.outputs, name=model.name)
    config = model.get_compile_config()
    copy.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=config.get("loss"),
        loss_weights=config.get("loss_weights"),
    )
    monitor = GradientMonitor(every=1, on_nan="warn", on_explode="warn")
    samples = min(len(keras.tree.flatten(x)[0]), steps * batch_size)
    subset = keras.tree.map_structure(lambda a: a[:samples], (x, y))
    copy.fit(
        *subset,
        batch_size=batch_size,
        epochs=1,
        verbose=0,
        callbacks=[monitor],
        shuffle=False,
    )
    return monitor


def _gradient_scores(levels, monitor):
    """Per level, medians over the monitor's records."""
    frame = monitor.to_frame()
    variables = monitor.variable_frame()
    diagnosis = monitor.diagnosis()
    global_norm = frame.set_index("step").global_norm
    norm_by_path = variables.pivot_table(
        index="step", columns="variable", values="grad_norm"
    )
    paths = set(norm_by_path.columns)
    result = {k: [] for k in ("grad_share", "horizon", "decay", "depth_ratio", "flags")}
    for level in levels:
        level_paths = [v.path for v in level.variables if v.path in paths]
        if level_paths:
            level_norm = np.sqrt((norm_by_path[level_paths] ** 2).sum(axis=1))
            share = float(np.median(level_norm / global_norm.loc[level_norm.index]))
        else:
            share = np.nan
        result["grad_share"].append(share)
        for key in ("horizon", "decay"):
            columns = [
                f"{key}/{n}" for n in level.monitor_names if f"{key}/{n}" in frame
            ]
            result[key].append(
                float(np.median(frame[columns].min(axis=1))) if columns else np.nan
            )
        column = f"depth_ratio/{level.name}"
        result["depth_ratio"].append(
            float(np.median(frame[column])) if column in frame else np.nan
        )
        flags = []
        depth = diagnosis.depth
        ratio = result["depth_ratio"][-1]
        if depth is not None and np.isfinite(ratio):
            if ratio < depth.vanishing_ratio:
                flags.append("vanishing through depth")
            elif ratio > depth.exploding_ratio:
                flags.append("exploding through depth")
        for name in level.monitor_names:
            sub = diagnosis.sublayers.get(name)
            if (
                sub is not None
                and sub.vanishing
                and "vanishing through time" not in flags
            ):
                flags.append("vanishing through time")
            if sub is not None and sub.nonfinite_timestep is not None:
                flags.append("non-finite")
        if (
            diagnosis.nonfinite is not None
            and diagnosis.nonfinite.layer in level.monitor_names
        ):
            flags.append("non-finite")
        result["flags"].append("; ".join(dict.fromkeys(flags)))
    ratios = np.asarray(result["depth_ratio"], dtype=np.float64)
    above = np.append(ratios[:-1] / ratios[1:], np.nan)
    result["attenuation"] = above
    return result


def _order(frame, method):
    """Level indices in removal order, and how `auto` chose."""
    n = len(frame)
    positions = list(range(n))
    last = list(range(n - 2, -1, -1)) + [n - 1]
    flagged = frame["flags"].str.len().to_numpy() > 0
    if method == "last":
        return last, ""
    if method == "ablation":
        return _sorted(positions, frame.ablation_cost), ""
    if method == "similarity":
        return _sorted(positions, frame.similarity), ""
    if method == "gradient":
        return _by_gradient(frame, flagged), ""
    # auto without data (with data, suggest_depth searches combinations)
    if np.isfinite(frame.depth_ratio).any():
        return _by_gradient(frame, flagged), (
            "auto: no data to measure losses: by the monitor's gradient flags "
            "and depth ratio"
        )
    return last, "auto: no data and no monitor: by position (method 'last')"


def _sorted(indices, values):
    values = np.asarray(values, dtype=np.float64)
    return sorted(indices, key=lambda i: (np.isnan(values[i]), values[i]))


def _by_gradient(frame, flagged):
    ratio = frame.depth_ratio.to_numpy()
    share = frame.grad_share.to_numpy()
    key = np.where(np.isfinite(ratio), ratio, share)
    return sorted(
        range(len(frame)),
        key=lambda i: (not flagged[i], np.nan_to_num(key[i], nan=np.inf)),
    )


def _target(frame, order, depth, full_loss, tolerance, measure):
    """How many levels of `order` to remove, the measured loss, a note."""
    n = len(order)
    if depth is not None:
        count = n - depth
        loss = measure([order[:count]])[0] if measure is not None else None
        return count, loss, f"target: depth={depth}, as given"
    if measure is None:
        note = (
            "target: one level less (no data to measure the loss: pass x and y "
            "to choose the depth by measured loss)"
        )
        return 1, None, note
    limit = full_loss + tolerance * abs(full_loss)
    count, loss = 0, full_loss
    for k in range(1, n):
        trial = measure([order[:k]])[0]
        if trial > limit:
            break
        count, loss = k, trial
    note = (
        f"target: the smallest depth whose loss stays within {tolerance:g} "
        f"(relative) of the full model's {full_loss:.4g}: depth {n - count}"
    )
    return count, loss, note


def _explain(frame, order, drop, method, notes, full_loss, loss):
    lines = [f"Depth plan ({method}): remove {len(drop)} of {len(frame)} levels."]
    lines.append("(rank: the scores' `rank` column, 0 = removed first)")
    lines += notes
    if full_loss is not None and loss is not None:
        lines.append(
            f"measured loss (held-out rows, bridged, no retraining): full model "
            f"{full_loss:.4g}, after removal {loss:.4g}"
        )
    rank = {i: r for r, i in enumerate(order)}
    for i, row in frame.iterrows():
        verb = "drop" if row["drop"] else "keep"
        facts = [f"rank {rank[i]}"]
        if np.isfinite(row.ablation_cost):
            facts.append(f"ablation cost {row.ablation_cost:+.3g}")
        if np.isfinite(row.similarity):
            facts.append(f"angular distance {row.similarity:.3g}")
        if np.isfinite(row.depth_ratio):
            facts.append(f"gradient {row.depth_ratio:.2g}x the top level's")
        if row["flags"]:
            facts.append(row["flags"])
        lines.append(f"- {row.level}: {verb} ({', '.join(facts)})")
    return "\n".join(lines)
