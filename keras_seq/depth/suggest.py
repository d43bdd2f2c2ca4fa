"""Which recurrent levels to remove: `suggest_depth` scores every level."""

import dataclasses

import keras
import numpy as np
import pandas as pd

from keras_seq import _validation as validation
from keras_seq.depth.levels import check_model, directions, recurrent_levels
from keras_seq.depth.reduce import _run, reduce_depth

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
    """

    drop: list
    depth: int
    method: str
    scores: object
    explanation: str
    loss: object = None
    full_loss: object = None

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
):
    """Score every recurrent level for removal and propose a plan.

    Every method that the given inputs allow scores every level, in one
    frame (one row per level, bottom to top):

    - `ablation` (needs `x`, `y`, a compiled model): the measured loss
      increase on `(x, y)` when that level alone is removed (one
      `evaluate` per level; a replaced input kernel is fitted by least
      squares on `x`). The ground truth.
    - `similarity` (needs `x`): the angular distance between the level's
      input and output sequences, `arccos(cos(x_t, h_t)) / pi` averaged over
      the valid time steps (ShortGPT's Block Influence family; NaN where
      the input and output widths differ). Small: the level changes little.
    - `gradient` (a `GradientMonitor` that trained the model, or `x`, `y` to
      run one for `gradient_steps` batches on a copy with a zero learning
      rate): each level's share of the gradient norm (`grad_share`), its
      horizon and decay through time (keras-seq levels), and its gradient
      norm relative to the top level (`depth_ratio`) and to the level above
      (`attenuation`). Levels whose gradients vanish or explode through
      time or depth, or turn non-finite, are flagged.
    - `last`: the position baseline (Lu et al. 2024 drop the last layers):
      the levels just below the top go first, then downwards, the top level
      last, as `reduce_depth(model, depth=...)` does without a plan.

    `method="auto"` with data removes levels one at a time, each time the
    one whose removal *together with those already chosen* measures best
    (single-level costs do not add up): first flagged levels whose loss cost
    is small (at most `tolerance` times the full model's loss), then other
    small-cost levels, then the rest by cost; among equals, removals that
    keep every trained weight come before those that need a replaced input
    kernel (measured here: healing after such a removal was worse on every
    seed, see the README). Without data it orders by the gradient flags and
    `depth_ratio` (with a monitor) or falls back to `last`, and says so.

    The target depth is `depth` when given; otherwise, with data, the
    smallest depth whose measured loss, removing levels in the chosen order
    without retraining, stays within `tolerance` (relative) of the full
    model's loss; without data, one level less. The final combination is
    evaluated once more and its loss is part of the plan.

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
        batch_size: Default 64, for `evaluate` and the forward passes.
        gradient_steps: Default 4, batches the gradient run records when no
            monitor is given.

    Returns:
        A `DepthPlan`. Its `scores` columns: `level`, `position`, `kind`,
        `parameters`, `ablation_loss`, `ablation_cost`, `replaces_weights`
        (removing the level alone replaces a kept weight), `similarity`,
        `grad_share`, `horizon`, `decay`, `depth_ratio`, `attenuation`,
        `flags`, `rank` (0 = removed first by `method`), `drop`.

    Raises:
        TypeError: `model` is not a keras model; `monitor` is not a
            `GradientMonitor`.
        ValueError: fewer than two levels, a bad `method`, `depth` or
            `tolerance`, `y` without `x`, a method whose inputs are missing,
            an uncompiled model with data, or a monitor without records.

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
    from keras_seq.callbacks import GradientMonitor

    check_model(model)
    validation.check_choice("method", method, METHODS)
    validation.check_positive_int("batch_size", batch_size)
    validation.check_positive_int("gradient_steps", gradient_steps)
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
    full_loss = None
    notes = []
    if has_data:
        full_loss = _evaluate(model, x, y, batch_size)
        measured = [_measure(model, [lv.name], x, y, batch_size) for lv in levels]
        frame["ablation_loss"] = [loss for loss, _ in measured]
        frame["ablation_cost"] = frame["ablation_loss"] - full_loss
        frame["replaces_weights"] = [replaces for _, replaces in measured]
        frame["similarity"] = _similarity(model, levels, x, batch_size)
    else:
        frame["ablation_loss"] = frame["ablation_cost"] = np.nan
        frame["replaces_weights"] = None  # known from a removal with data
        frame["similarity"] = np.nan
    if monitor is None and has_data:
        monitor = _gradient_run(model, x, y, batch_size, gradient_steps)
    gradient = _gradient_scores(levels, monitor) if monitor is not None else None
    for column in ("grad_share", "horizon", "decay", "depth_ratio", "attenuation"):
        frame[column] = np.nan if gradient is None else gradient[column]
    frame["flags"] = "" if gradient is None else gradient["flags"]

    prefix_losses = {}
    if method == "auto" and has_data:
        order, prefix_losses = _greedy(
            model, frame, full_loss, tolerance, depth, x, y, batch_size
        )
        notes.append(
            "auto: levels removed one at a time, each time the one whose "
            "removal together with those already chosen measures best: first "
            "levels flagged (vanishing/exploding/non-finite gradients) whose "
            f"loss cost is small (<= {tolerance:g} x the full loss), then other "
            "small-cost levels, then the rest by cost; at equal standing, "
            "removals that keep every trained weight before those that need "
            "a replaced input kernel"
        )
    else:
        order, how = _order(frame, method)
        if how:
            notes.append(how)
    frame["rank"] = np.argsort(order)
    drop_count, loss, target_note = _target(
        model,
        frame,
        order,
        depth,
        full_loss,
        tolerance,
        x,
        y,
        batch_size,
        prefix_losses,
    )
    notes.append(target_note)
    drop = [frame.level[i] for i in order[:drop_count]]
    frame["drop"] = frame.level.isin(drop)
    explanation = _explain(frame, order, drop, method, notes, full_loss, loss)
    return DepthPlan(
        drop=drop,
        depth=len(levels) - drop_count,
        method=method,
        scores=frame,
        explanation=explanation,
        loss=loss,
        full_loss=full_loss,
    )


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


def _measure(model, names, x, y, batch_size):
    """(loss without the named levels, whether a weight had to be replaced)."""
    result = reduce_depth(model, drop=list(names), x=x, batch_size=batch_size)
    return _evaluate(result.model, x, y, batch_size), bool(result.replaced)


def _auto_key(cost, flagged, replaces, small_cost):
    small = cost <= small_cost
    if flagged and small:
        group = 0
    elif small:
        group = 1
    else:
        group = 2
    return (group, bool(replaces), cost)


def _greedy(model, frame, full_loss, tolerance, depth, x, y, batch_size):
    """`auto` with data: the removal order, chosen one level at a time by
    the measured loss of the combination, and `{k: loss without the first
    k}` for the prefixes measured."""
    names = frame.level.tolist()
    n = len(names)
    flagged = frame["flags"].str.len().to_numpy() > 0
    small_cost = tolerance * abs(full_loss)
    limit = full_loss + small_cost
    wanted = n - 1 if depth is None else n - depth
    current = {i: (frame.ablation_loss[i], frame.replaces_weights[i]) for i in range(n)}
    chosen, losses = [], {0: full_loss}

    def key(i):
        loss, replaces = current[i]
        return _auto_key(loss - full_loss, flagged[i], replaces, small_cost)

    while len(chosen) < wanted:
        best = min(current, key=key)
        if depth is None and current[best][0] > limit:
            break
        chosen.append(best)
        losses[len(chosen)] = float(current[best][0])
        del current[best]
        if len(chosen) < wanted:
            current = {
                i: _measure(model, [names[j] for j in chosen + [i]], x, y, batch_size)
                for i in current
            }
    rest = sorted(
        (i for i in range(n) if i not in chosen),
        key=lambda i: _auto_key(
            frame.ablation_cost[i], flagged[i], frame.replaces_weights[i], small_cost
        ),
    )
    return chosen + rest, losses


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
                distances.append(_angular_distance(seen, out, mask))
            scores[level.name] = float(np.mean(distances))
    return [scores[level.name] for level in levels]


def _layer_outputs(model, x, batch_size, layer):
    """The output a built-in recurrent layer gives on `x`, as a sequence."""
    inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    output = keras.tree.flatten(layer.output)[0]
    values = keras.Model(inputs, output).predict(x, batch_size=batch_size, verbose=0)
    return values if values.ndim == 3 else values[:, None]


def _angular_distance(inputs, outputs, mask):
    if inputs.shape[-1] != outputs.shape[-1]:
        return np.nan
    if outputs.shape[1] != inputs.shape[1]:  # last output only: compare the
        inputs = _last_valid(inputs, mask)[:, None]  # last valid input
        mask = None
    a = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
    b = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
    if mask is not None:
        rows = mask.reshape(-1).astype(bool)
        a, b = a[rows], b[rows]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    usable = norms > 0
    if not usable.any():
        return np.nan
    cosine = np.sum(a * b, axis=1)[usable] / norms[usable]
    return float(np.mean(np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi))


def _last_valid(sequences, mask):
    if mask is None:
        return sequences[:, -1]
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return sequences[np.arange(len(sequences)), last]


def _gradient_run(model, x, y, batch_size, steps):
    """A GradientMonitor run for `steps` batches on a copy of the model that
    does not move (zero learning rate)."""
    from keras_seq.callbacks import GradientMonitor
    from keras_seq.models import Model, Sequential

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
    # auto without data (with data, suggest_depth uses _greedy)
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


def _target(
    model, frame, order, depth, full_loss, tolerance, x, y, batch_size, measured
):
    """How many levels to remove, the measured loss, and a note. `measured`:
    `{k: loss without the first k levels of order}` already known."""
    n = len(order)
    names = frame.level.tolist()
    if depth is not None:
        count = n - depth
        loss = measured.get(count)
        if loss is None and x is not None:
            loss = _measure(model, [names[i] for i in order[:count]], x, y, batch_size)[
                0
            ]
        return count, loss, f"target: depth={depth}, as given"
    if x is None:
        note = (
            "target: one level less (no data to measure the loss: pass x and y "
            "to choose the depth by measured loss)"
        )
        return 1, None, note
    if measured:  # the greedy search stopped at the tolerance
        count = max(measured)
        loss = measured[count]
    else:
        limit = full_loss + tolerance * abs(full_loss)
        count, loss = 0, full_loss
        for k in range(1, n):
            trial = _measure(model, [names[i] for i in order[:k]], x, y, batch_size)[0]
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
    lines += notes
    if full_loss is not None and loss is not None:
        lines.append(
            f"measured loss: full model {full_loss:.4g}, after removal {loss:.4g}"
        )
    rank = {i: r for r, i in enumerate(order)}
    for i, row in frame.iterrows():
        verb = "drop" if row["drop"] else "keep"
        facts = [f"rank {rank[i] + 1}"]
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
