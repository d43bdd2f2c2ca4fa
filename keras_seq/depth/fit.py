"""Train, and remove recurrent levels while the gradients say so."""

import keras
import numpy as np
import pandas as pd

from keras_seq import _validation as validation
from keras_seq.callbacks import GradientMonitor
from keras_seq.depth.reduce import reduce_depth
from keras_seq.depth.suggest import METHODS, suggest_depth
from keras_seq.models.levels import recurrent_levels

_STAGE_COLUMNS = [
    "stage",
    "depth",
    "parameters",
    "first_epoch",
    "epochs",
    "loss",
    "val_loss",
    "verdicts",
    "removed",
    "method",
    "explanation",
]


def fit_reducing_depth(
    model,
    x,
    y=None,
    *,
    epochs,
    min_depth=1,
    patience=2,
    method="auto",
    tolerance=0.05,
    monitor=None,
    log_dir=None,
    every=1,
    callbacks=None,
    diagnosis_samples=256,
    **fit_kwargs,
):
    """`model.fit` that removes recurrent levels while gradients vanish or
    explode.

    Trains one epoch at a time with a `keras_seq.callbacks.GradientMonitor`.
    When the monitor's diagnosis at the end of an epoch reports vanishing or
    exploding gradients (through time or through depth) or non-finite values
    for `patience` epochs in a row, it asks `suggest_depth` for a plan (on up
    to `diagnosis_samples` samples of `x`, with the monitor's gradients),
    removes the planned levels with `reduce_depth` (kept weights carry over,
    every cut is bridged on that sample), compiles the new
    model as the old one (a fresh optimizer of the same class and config)
    and trains on. Each reduction removes one level per flagged level (at
    least one) but never goes below `min_depth`. It stops reducing when the
    diagnosis is healthy or `min_depth` is reached; epochs keep counting
    across stages (`initial_epoch`), and so do the monitor's steps.

    The first stage trains `model` itself, in place, as `model.fit` does;
    each later stage trains a new, shallower model (`model` keeps its
    levels).

    With a `log_dir` (or a monitor that has one), TensorBoard shows the
    stages in the monitor's run: a `depth/levels` scalar at each epoch end
    and a `depth/stage` text entry per stage.

    Args:
        model: A compiled keras-seq or Keras model (Sequential or functional)
            with recurrent levels (see `keras_seq.depth.recurrent_levels`).
        x, y: Training data as for `model.fit`. The diagnosis measures losses
            on array data; with a dataset the plan uses the gradients only.
        epochs: Positive integer, total epochs over all stages.
        min_depth: Integer >= 1 (default 1), levels never to go below.
        patience: Integer >= 1 (default 2), unhealthy epochs in a row before
            a reduction.
        method: `suggest_depth` method (default `"auto"`).
        tolerance: `suggest_depth` tolerance (default 0.05).
        monitor: Optional `GradientMonitor` to use; default one is made with
            `log_dir` and `every`.
        log_dir: Optional TensorBoard directory for the default monitor.
        every: Default 1, the default monitor's recording interval.
        callbacks: Optional list of further callbacks, passed to every fit.
        diagnosis_samples: Default 256, samples of `x` the plan measures.
        **fit_kwargs: Passed to `model.fit` (`batch_size`,
            `validation_data`, `verbose`, `shuffle`, ...); not
            `epochs`/`initial_epoch`.

    Returns:
        `(model, stages)`: the final (possibly shallower) model and a
        `pandas.DataFrame` with one row per stage: `stage`, `depth`,
        `parameters`, `first_epoch`, `epochs` (trained in the stage), `loss`
        and `val_loss` (last epoch of the stage), `verdicts` (the diagnosis
        that ended the stage, or of its last epoch), `removed` (levels
        removed to start the stage), `method`, `explanation` (the plan's
        reasons, for stages after the first).

    Raises:
        ValueError: bad `epochs`, `min_depth`, `patience`, `method`,
            `diagnosis_samples`; `epochs`/`initial_epoch` in `fit_kwargs`; an
            uncompiled model; `min_depth` above the model's levels.
        TypeError: `monitor` is not a `GradientMonitor`.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> model = keras_seq.Sequential([
    ...     keras.Input((6, 2)),
    ...     keras_seq.layers.SharedRNN(4, depth=3, activation="sigmoid"),
    ...     keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> model, stages = keras_seq.depth.fit_reducing_depth(
    ...     model, np.ones((8, 6, 2)), np.ones((8, 1)), epochs=2, verbose=0)
    >>> list(stages.columns)[:3]
    ['stage', 'depth', 'parameters']
    """
    validation.check_positive_int("epochs", epochs)
    validation.check_positive_int("min_depth", min_depth)
    validation.check_positive_int("patience", patience)
    validation.check_positive_int("diagnosis_samples", diagnosis_samples)
    validation.check_choice("method", method, METHODS)
    for reserved in ("epochs", "initial_epoch"):
        if reserved in fit_kwargs:
            raise ValueError(
                f"Argument `{reserved}` is set by fit_reducing_depth (epochs "
                f"count across stages). Received: {reserved}="
                f"{fit_kwargs[reserved]!r}"
            )
    if monitor is None:
        monitor = GradientMonitor(log_dir=log_dir, every=every)
    elif not isinstance(monitor, GradientMonitor):
        raise TypeError(
            "Argument `monitor` must be a keras_seq.callbacks.GradientMonitor "
            f"or None. Received: monitor={monitor!r}"
        )
    if not model.compiled:
        raise ValueError(
            f"Model `{model.name}` is not compiled: call model.compile(...) "
            "first; reduced models are compiled the same way."
        )
    levels = len(recurrent_levels(model))
    if min_depth > levels:
        raise ValueError(
            f"Argument `min_depth` must be at most the model's {levels} "
            f"recurrent levels. Received: min_depth={min_depth}"
        )
    sample = _sample(x, y, diagnosis_samples)
    callbacks = [monitor] + list(callbacks or [])
    # The monitor follows each shallower model on purpose: no warning.
    moving, monitor._moving = monitor._moving, True

    stages = []
    stage = _stage(0, model, levels, 0, [], "")
    unhealthy = 0
    for epoch in range(epochs):
        if epoch == stage["first_epoch"]:
            _log_stage(monitor, stage)
        history = model.fit(
            x,
            y,
            epochs=epoch + 1,
            initial_epoch=epoch,
            callbacks=callbacks,
            **fit_kwargs,
        )
        stage["epochs"] += 1
        for key in ("loss", "val_loss"):
            values = history.history.get(key)
            if values:
                stage[key] = float(values[-1])
        diagnosis = monitor.diagnosis()
        stage["verdicts"] = _verdicts(diagnosis)
        # At the epoch's last step; a new stage writes its depth at the next.
        monitor.write_summary(monitor.steps - 1, scalars={"depth/levels": levels})
        unhealthy = 0 if diagnosis.healthy else unhealthy + 1
        if model.stop_training:
            break
        if unhealthy < patience or levels <= min_depth or epoch + 1 == epochs:
            continue
        flagged = len(diagnosis.vanishing_through_depth) + len(
            diagnosis.exploding_through_depth
        )
        target = max(min_depth, levels - max(1, flagged))
        plan = suggest_depth(
            model,
            *sample,
            monitor=monitor,
            depth=target,
            method=method,
            tolerance=tolerance,
            # One forward pass per candidate over the whole sample.
            batch_size=diagnosis_samples,
        )
        # With data the plan carries its bridges (fitted on the sample, as
        # measured): no forward pass to refit them.
        x_bridge = None if plan.bridges else sample[0]
        model = reduce_depth(model, drop=plan, x=x_bridge).model
        stages.append(stage)
        levels = len(recurrent_levels(model))
        stage = _stage(len(stages), model, levels, epoch + 1, plan.drop, method)
        stage["explanation"] = plan.explanation
        unhealthy = 0
    monitor._moving = moving
    stages.append(stage)
    frame = pd.DataFrame(stages)
    return model, frame[_STAGE_COLUMNS]


def _stage(index, model, levels, first_epoch, removed, method):
    return {
        "stage": index,
        "depth": levels,
        "parameters": model.count_params(),
        "first_epoch": first_epoch,
        "epochs": 0,
        "loss": np.nan,
        "val_loss": np.nan,
        "verdicts": "",
        "removed": ", ".join(removed),
        "method": method,
        "explanation": "",
    }


def _verdicts(diagnosis):
    parts = []
    if diagnosis.vanishing:
        parts.append("vanishing through time: " + ", ".join(diagnosis.vanishing))
    if diagnosis.vanishing_through_depth:
        parts.append(
            "vanishing through depth: " + ", ".join(diagnosis.vanishing_through_depth)
        )
    if diagnosis.exploding_through_depth:
        parts.append(
            "exploding through depth: " + ", ".join(diagnosis.exploding_through_depth)
        )
    if diagnosis.exploding:
        parts.append("exploding")
    if diagnosis.nonfinite is not None:
        parts.append("non-finite")
    return "; ".join(parts) or "healthy"


def _log_stage(monitor, stage):
    lines = [
        f"**Stage {stage['stage']}**: {stage['depth']} recurrent levels, "
        f"{stage['parameters']} parameters, from epoch {stage['first_epoch']}."
    ]
    if stage["removed"]:
        lines.append(f"Removed ({stage['method']}): {stage['removed']}.")
        lines += ["", "```", stage.get("explanation", ""), "```"]
    monitor.write_summary(
        monitor.steps,
        scalars={"depth/levels": stage["depth"]},
        texts={"depth/stage": "\n".join(lines)},
    )


def _sample(x, y, samples):
    """Up to `samples` rows of array data for the plan's measurements, or
    (None, None) for datasets and generators (x with no y)."""
    if y is None:
        return None, None
    return keras.tree.map_structure(lambda a: np.asarray(a)[:samples], (x, y))
