"""Gradient statistics -> verdicts: horizon, decay, vanishing, exploding,
non-finite. Plain numpy, shared by `GradientMonitor`, the depth helper and
the command line.

Conventions: a per-step gradient-norm vector is in *processing order*
(index -1 is the step processed last, where the gradient from a final-step
loss enters; index 0 is the step farthest back). For a `go_backwards`
sublayer pass the vector reversed from input order (`SublayerDiagnosis`
does this with `reverse=True`).

What the verdicts mean (the README's "Reading the verdicts" says the same):

- **Vanishing through time** (Bengio, Simard & Frasconi 1994; Pascanu,
  Mikolov & Bengio 2013, section 2): backpropagation through time multiplies
  the gradient by one Jacobian per step back, so where those shrink it
  falls exponentially, and the update a step far back gets is swamped by
  the recent steps' share of the same summed gradient: the network cannot
  learn what happened there. The monitor judges what the decay plot shows,
  over the sequence's own valid steps: the total ||dL/dh_t|| at the step
  farthest back divided by its largest value over the sequence. Below
  `VANISHING_RATIO` (1e-2: the first step gets less than 1% of what the
  best-served step gets, two orders of magnitude) the sublayer is
  "vanishing", whatever T is: a rate per step (`decay_factor`) means
  nothing until it is raised to the sequence's own length, and that power
  is what this ratio measures. The horizon (steps back until 1e-3 of the
  peak) stays as a description.
- **Exploding through time** (Pascanu et al. 2013: a Jacobian spectral
  radius above 1): the gradient *grows* going back. Judged as the step
  farthest back over the last step: at or above `EXPLODING_RATIO` (1e2),
  and compounding (at least the square root of it over the first half of
  the sequence alone), which a loss at every step summed over a
  non-expanding recurrence cannot do (it grows at most linearly).
- **Exploding across training steps**: the global gradient norm stays at
  `EXPLODE_JUMP` (1e2) times its starting level (the median of the model's
  first `BASELINE_RECORDS` recorded steps) or more for `EXPLODE_WINDOW` (3)
  recorded steps in a row. A spike over a short history is not explosion:
  norms rise several-fold when a model starts to learn (the keras-io IMDB
  BiLSTM: ~25x, while its loss falls).
- **Non-finite**: NaN/Inf anywhere. Non-finite *gradients* behind a finite
  loss and finite forward states are an overflow of the backward pass, and
  count as exploding too; so does a non-finite step that the largest global
  norm since the previous record (tracked in the graph on every step)
  reached at `EXPLODE_JUMP` times the starting level first: a loss that
  diverges between two records. A NaN in the data comes without either.
"""

import dataclasses

import numpy as np

VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2
EXPLODE_JUMP = 1e2
EXPLODE_WINDOW = 3
BASELINE_RECORDS = 5
VERDICT_RECORDS = 5


def gradient_horizon(norms, fraction=1e-3):
    """How many steps back from the last step ||dL/dh_t|| stays above
    `fraction` of its maximum.

    Args:
        norms: 1-D array of per-step gradient norms, processing order.
        fraction: Float in (0, 1) (default 1e-3).

    Returns:
        Integer in [0, len(norms)]: the length of the final run of steps whose
        norm is >= `fraction * max(norms)`. 0 when every norm is 0 or the
        vector is empty or not finite.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.size == 0 or not np.all(np.isfinite(norms)):
        return 0
    peak = norms.max()
    if peak <= 0:
        return 0
    below = np.nonzero(norms < fraction * peak)[0]
    if below.size == 0:
        return int(norms.size)
    return int(norms.size - 1 - below[-1])


def decay_factor(norms):
    """Per-step factor by which ||dL/dh_t|| shrinks going back in time.

    Fits log ||dL/dh|| = a + k * log(decay) over k = steps back from the last
    step, by least squares over the steps with a positive, finite norm.
    Below 1: the gradient vanishes going back; above 1: it grows.

    Returns:
        Float, or NaN with fewer than two usable steps.
    """
    norms = np.asarray(norms, dtype=np.float64)
    steps_back = np.arange(norms.size)[::-1]
    usable = np.isfinite(norms) & (norms > 0)
    if usable.sum() < 2:
        return float("nan")
    slope = np.polyfit(steps_back[usable], np.log(norms[usable]), 1)[0]
    return float(np.exp(slope))


def through_time(norms):
    """How far ||dL/dh_t|| falls and grows across the steps of one sequence.

    Args:
        norms: 1-D per-step norms, processing order (index 0 farthest back).

    Returns:
        `(fall, growth)`: the norm at the step farthest back divided by the
        largest norm (in [0, 1]; 1 when the first step is the largest), and
        divided by the norm at the last step (> 1: it grows going back).
        `(nan, nan)` with no positive finite norm.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.size == 0 or not np.all(np.isfinite(norms)) or norms.max() <= 0:
        return float("nan"), float("nan")
    first, last = norms[0], norms[-1]
    growth = first / last if last > 0 else float("inf")
    return float(first / norms.max()), float(growth)


def grows_through_time(norms, ratio=EXPLODING_RATIO):
    """Whether ||dL/dh_t|| grows going back by `ratio` or more over the
    sequence and by `sqrt(ratio)` or more over its first half (compounding
    growth: a non-expanding recurrence with a loss at every step grows at
    most linearly)."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.size < 2 or not np.all(np.isfinite(norms)):
        return False
    first, middle, last = norms[0], norms[norms.size // 2], norms[-1]
    if first <= 0:
        return False
    return bool(first >= ratio * last and first >= np.sqrt(ratio) * middle)


def is_exploding(
    global_norms,
    jump=EXPLODE_JUMP,
    window=EXPLODE_WINDOW,
    threshold=None,
    baseline=BASELINE_RECORDS,
):
    """Whether the global gradient norm explodes at the last record.

    Exploding: each of the last `window` finite records is at least `jump`
    times the starting level (the median of the first `baseline` finite
    records before them), or the last one is above `threshold` (None: no
    absolute limit). A spike over a short history is not explosion.

    Args:
        global_norms: the model's recorded global norms, in order.

    Returns:
        bool; `explosion_evidence` says why.
    """
    return (
        explosion_evidence(global_norms, jump, window, threshold, baseline) is not None
    )


def explosion_evidence(
    global_norms,
    jump=EXPLODE_JUMP,
    window=EXPLODE_WINDOW,
    threshold=None,
    baseline=BASELINE_RECORDS,
):
    """Why `is_exploding` is true, in words (e.g. `"global norm 3e+04,
    1.2e+03x its starting level 25 for 3 records"`), or None."""
    norms = np.asarray(global_norms, dtype=np.float64)
    if norms.size == 0 or not np.isfinite(norms[-1]):
        return None  # non-finite is its own verdict
    last = norms[-1]
    if threshold is not None and last > threshold:
        return f"global norm {last:.3g} > explode_threshold={threshold:g}"
    finite = norms[np.isfinite(norms)]
    if finite.size < window + 1:
        return None
    start = np.median(finite[:-window][:baseline])
    if start > 0 and np.all(finite[-window:] >= jump * start):
        return (
            f"global norm {last:.3g}, {last / start:.3g}x its starting level "
            f"{start:.3g}, at or above {jump:g}x for {window} records"
        )
    return None


def _ratio(value):
    """A ratio for people: 0.35, 12, 3e-12, 8e+4."""
    if 0.01 <= value < 100:
        return f"{value:.2g}"
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e+")


@dataclasses.dataclass
class SublayerDiagnosis:
    """Verdict for one recurrent sublayer at one recorded step.

    On padded batches (a mask) the verdict describes the valid steps only,
    counted back from each sequence's own last valid step: the monitor packs
    every sequence's valid steps against the end before summing over the
    batch (`norms`), so a padded batch gets the verdict of its unpadded twin.

    Attributes:
        name: `"<layer>/level_<i>"`.
        timesteps: valid steps of the longest sequence in the recorded batch
            (T without padding; 0 for an all-padding batch).
        horizon: see `gradient_horizon`, over the valid steps.
        decay: see `decay_factor`, over the valid steps.
        fall: ||dL/dh|| at the step farthest back over its largest value
            (see `through_time`): the number behind "vanishing". One batch
            is noisy (a recipe's SimpleRNN read 0.067 at its last record,
            0.002 as the median of its last tenth), so the monitor's table
            gives the median over the sublayer's last `records` recorded
            steps (see `over_records`).
        growth: ||dL/dh|| at the step farthest back over the last step's:
            the number behind "exploding".
        vanishing: `fall < vanishing_ratio` (default 1e-2).
        exploding: `grows_through_time(norms, exploding_ratio)` (over
            several records: in most of them).
        records: how many recorded steps `fall` and `growth` summarise.
        nonfinite_timestep: first input time step whose forward state is
            non-finite, else the time step where the backward pass first
            became non-finite (processing order), else None.
        nonfinite_in: `"forward states"`, `"gradient"` or None.
        norms: the per-step norms the verdict read: processing order,
            end-aligned, valid steps only (index -1 = each sequence's last
            valid step).
    """

    name: str
    timesteps: int
    horizon: int
    decay: float
    vanishing: bool
    nonfinite_timestep: object = None
    norms: object = dataclasses.field(default=None, repr=False, compare=False)
    fall: float = float("nan")
    growth: float = float("nan")
    exploding: bool = False
    nonfinite_in: object = None
    records: int = dataclasses.field(default=1, compare=False)

    @property
    def verdict(self):
        """`"non-finite"`, `"no valid steps"`, `"not enough steps"`, `"no
        gradient"`, `"exploding"`, `"vanishing"` or `"ok"`; `summary` adds
        the measured evidence."""
        if self.nonfinite_timestep is not None:
            return "non-finite"
        if self.timesteps == 0:
            return "no valid steps"
        if self.timesteps < 2:
            return "not enough steps"
        if not self.fall >= 0:  # NaN: no positive norm
            return "no gradient"
        if self.exploding:
            return "exploding"
        return "vanishing" if self.vanishing else "ok"

    @property
    def evidence(self):
        """What the verdict read, in words that can be checked against the
        decay plot: e.g. `"falls to 1e-12 of its peak over 50 steps"`."""
        verdict = self.verdict
        if verdict == "non-finite":
            return (
                f"{self.nonfinite_in} non-finite from time step "
                f"{self.nonfinite_timestep}"
            )
        if verdict in ("no valid steps", "not enough steps", "no gradient"):
            return ""
        steps = f"over {self.timesteps} steps"
        over = f", median of {self.records} records" if self.records > 1 else ""
        if self.growth > 1 and self.fall >= 1:
            return f"grows {_ratio(self.growth)}x going back {steps}{over}"
        if self.fall == 0:
            return f"falls to 0 (below float range) {steps}{over}"
        return f"falls to {_ratio(self.fall)} of its peak {steps}{over}"

    @property
    def summary(self):
        """`"<verdict> (<evidence>)"`, as the report's table shows it."""
        evidence = self.evidence
        return f"{self.verdict} ({evidence})" if evidence else self.verdict

    @classmethod
    def from_norms(
        cls,
        name,
        grad_norm,
        forward_finite=None,
        grad_finite=None,
        reverse=False,
        fraction=1e-3,
        vanishing_ratio=VANISHING_RATIO,
        exploding_ratio=EXPLODING_RATIO,
        aligned_norm=None,
        aligned_count=None,
    ):
        """Diagnose from per-step vectors.

        Args:
            grad_norm, forward_finite, grad_finite: per step, *input* order.
            reverse: True for a `go_backwards` sublayer.
            fraction: see `gradient_horizon`.
            vanishing_ratio, exploding_ratio: see the module docstring.
            aligned_norm, aligned_count: optional, processing order,
                end-aligned over the valid steps (from the monitored step):
                the norms and how many sequences reach each position. When
                given, the verdict reads the positions some sequence
                reaches; otherwise every step of `grad_norm` counts.
        """
        grad_norm = np.asarray(grad_norm, dtype=np.float64)
        order = slice(None, None, -1) if reverse else slice(None)
        processing = grad_norm[order]
        if aligned_norm is not None:
            reached = np.asarray(aligned_count) > 0  # a suffix, by construction
            processing = np.asarray(aligned_norm, dtype=np.float64)[reached]
        timesteps = int(processing.size)
        horizon = gradient_horizon(processing, fraction)
        # The forward pass meets input step 0 first (T-1 when reversed); the
        # backward pass meets the last processed step first.
        nonfinite, where = _first_bad(forward_finite, last=reverse), "forward states"
        if nonfinite is None:
            nonfinite, where = _first_bad(grad_finite, last=not reverse), "gradient"
        fall, growth = through_time(processing)
        judged = nonfinite is None and timesteps >= 2
        return cls(
            name=name,
            timesteps=timesteps,
            horizon=horizon,
            decay=decay_factor(processing),
            vanishing=bool(judged and fall < vanishing_ratio),
            nonfinite_timestep=nonfinite,
            norms=processing,
            fall=fall,
            growth=growth,
            exploding=bool(judged and grows_through_time(processing, exploding_ratio)),
            nonfinite_in=None if nonfinite is None else where,
        )


def over_records(
    diagnoses, vanishing_ratio=VANISHING_RATIO, exploding_ratio=EXPLODING_RATIO
):
    """The verdict of a sublayer over its last few recorded steps.

    Args:
        diagnoses: `SublayerDiagnosis` of one sublayer, oldest first (the
            monitor passes the last `VERDICT_RECORDS`, 5).

    Returns:
        The latest diagnosis (its norms, horizon, decay, non-finite steps)
        with `fall` and `growth` the medians over `diagnoses`' judged
        records, `vanishing` read from that median, `exploding` true when
        most of them grew through time, and `records` their number.
    """
    latest = diagnoses[-1]
    judged = [
        d
        for d in diagnoses
        if d.nonfinite_timestep is None and d.timesteps >= 2 and d.fall >= 0
    ]
    if latest not in judged or len(judged) < 2:
        return latest
    fall = float(np.median([d.fall for d in judged]))
    growth = float(np.median([d.growth for d in judged]))
    return dataclasses.replace(
        latest,
        fall=fall,
        growth=growth,
        vanishing=bool(fall < vanishing_ratio),
        exploding=2 * sum(d.exploding for d in judged) > len(judged),
        records=len(judged),
    )


def _first_bad(finite, last):
    if finite is None:
        return None
    bad = np.nonzero(~np.asarray(finite, dtype=bool))[0]
    if bad.size == 0:
        return None
    return int(bad[-1] if last else bad[0])


def locate_nonfinite(loss, sublayers, layer_norms):
    """Where non-finite values start in one recorded step.

    Args:
        loss: the step's loss.
        sublayers: `(name, forward_finite, grad_finite, reverse)` per
            recurrent sublayer in forward order; vectors in input order.
        layer_norms: `{layer: gradient norm}` in forward order.

    Returns:
        `(layer, timestep)`: the first sublayer whose state went non-finite
        (forward order, first step it meets); else `("loss", None)` for a
        non-finite loss; else the sublayer the backward pass meets first
        (reverse forward order, first step it meets); else the first layer
        with a non-finite gradient norm and None; else `(None, None)`.
    """
    for name, forward_finite, _, reverse in sublayers:
        step = _first_bad(forward_finite, last=reverse)
        if step is not None:
            return name, step
    if not np.isfinite(loss):
        return "loss", None
    for name, _, grad_finite, reverse in reversed(list(sublayers)):
        step = _first_bad(grad_finite, last=not reverse)
        if step is not None:
            return name, step
    for layer, norm in layer_norms.items():
        if not np.isfinite(norm):
            return layer, None
    return None, None


@dataclasses.dataclass
class NonFinite:
    """Where non-finite values were first seen.

    Attributes:
        step: training step (0-based) of the first non-finite record.
        layer: the first recurrent sublayer (in forward order) whose states or
            gradients were non-finite, `"loss"`, or the first model layer with
            a non-finite gradient norm when no sublayer was; None when that
            step was not recorded.
        timestep: time step within `layer` (input order), or None.
        count: non-finite steps counted so far (recorded or not).
    """

    step: int
    layer: object
    timestep: object
    count: int = 1


@dataclasses.dataclass
class Diagnosis:
    """The monitor's verdicts: the sublayer table of the latest recorded
    step, and what happened over the whole run.

    Attributes:
        step: training step the sublayer verdicts describe, or None.
        sublayers: `{name: SublayerDiagnosis}` in forward order.
        exploding: whether the latest record explodes (across steps, through
            time or by non-finite gradients behind a finite loss).
        exploding_steps: every step judged exploding: recorded steps, and
            non-finite steps between records reached after the global norm
            blew up.
        nonfinite: `NonFinite` for the first non-finite step, or None.
        skipped_steps: updates not applied, for any reason.
        depth: `keras_seq.diagnostics.DepthDiagnosis` of the latest record
            (a model with two or more recurrent levels in one stack), or None.
        notes: extra lines for the report (e.g. the truncated horizon of
            stateful layers, layers the monitor cannot see through).
        exploding_evidence: `{step: text}`, why each exploding step was.
        loss_scale_skips: updates a `LossScaleOptimizer` skipped because
            its scaled gradients overflowed (part of `skipped_steps`).
        vanishing_ratio: the threshold the sublayer verdicts used.
        held_steps: updates withheld after a non-finite step under
            `on_nan="stop"` until the fit ended (part of `skipped_steps`).
    """

    step: object
    sublayers: dict
    exploding: bool
    exploding_steps: list
    nonfinite: object
    skipped_steps: int
    depth: object = None
    notes: tuple = ()
    exploding_evidence: dict = dataclasses.field(default_factory=dict)
    loss_scale_skips: int = 0
    held_steps: int = 0
    vanishing_ratio: float = VANISHING_RATIO

    @property
    def vanishing(self):
        """Sublayers vanishing through time."""
        return [name for name, d in self.sublayers.items() if d.vanishing]

    @property
    def vanishing_through_depth(self):
        return [] if self.depth is None else self.depth.vanishing

    @property
    def exploding_through_depth(self):
        return [] if self.depth is None else self.depth.exploding

    @property
    def exploding_through_time(self):
        """Sublayers whose gradient grows going back (latest record)."""
        return [name for name, d in self.sublayers.items() if d.exploding]

    @property
    def healthy(self):
        """No vanishing or exploding gradients (through time or depth) and
        no non-finite values."""
        return not (
            self.vanishing
            or self.exploding
            or self.exploding_through_time
            or self.nonfinite
            or self.vanishing_through_depth
            or self.exploding_through_depth
        )

    def markdown(self):
        """The per-sublayer table and the verdicts, as Markdown."""
        if self.step is None:
            lines = [
                "**Gradient diagnosis: no training step recorded yet.** "
                "Attach the monitor to `model.fit(..., callbacks=[monitor])`; "
                "it records every `every`-th step."
            ]
            if self.notes:
                lines += [""] + [f"- {note}" for note in self.notes]
            return "\n".join(lines)
        lines = [f"**Gradient diagnosis at step {self.step}**", ""]
        if self.sublayers:
            lines += [
                f"Through time, at step {self.step} (||dL/dh_t|| over each "
                "sequence's valid steps):",
                "",
                "| sublayer | T | horizon | decay/step | verdict |",
                "|---|---|---|---|---|",
            ]
            for d in self.sublayers.values():
                lines.append(
                    f"| {d.name} | {d.timesteps} | {d.horizon} | {d.decay:.3g} | "
                    f"{d.summary} |"
                )
            lines.append("")
            vanishing = self.vanishing
            lines.append(
                "- vanishing through time: "
                + (
                    f"{', '.join(vanishing)} (the step farthest back gets less "
                    f"than {self.vanishing_ratio:g} of the largest ||dL/dh_t||: "
                    "the start of each sequence barely moves the weights; "
                    "harmless if the task needs only recent steps and the loss "
                    "falls, the cause if it needs the early ones and the loss "
                    "is stuck)"
                    if vanishing
                    else "no"
                )
            )
        lines.append(f"- exploding: {self._exploding_line()}")
        lines.append(f"- non-finite values: {self._nonfinite_line()}")
        lines.append(f"- skipped updates: {self._skipped_line()}")
        if self.depth is not None:
            lines += ["", "**Through depth** (gradient norm of each level)", ""]
            lines += self.depth.markdown_lines()
            lines.append("")
            for kind, names in (
                ("vanishing", self.depth.vanishing),
                ("exploding", self.depth.exploding),
            ):
                threshold = (
                    f"< {self.depth.vanishing_ratio:g}"
                    if kind == "vanishing"
                    else f"> {self.depth.exploding_ratio:g}"
                )
                lines.append(
                    f"- {kind} through depth (norm {threshold} x the top "
                    f"level's): {', '.join(names) if names else 'no'}"
                )
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def _exploding_line(self):
        steps = list(self.exploding_steps)
        if not steps:
            return "no"
        runs = _runs(steps)
        last = steps[-1]
        where = " and ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:4])
        if len(runs) > 4:
            where += f" and {len(runs) - 4} more"
        count = f"{len(steps)} step{'s' if len(steps) > 1 else ''} judged exploding"
        where = ("steps " if len(steps) > 1 else "step ") + where
        evidence = self.exploding_evidence.get(last)
        evidence = f" ({evidence})" if evidence else ""
        if self.exploding:
            return f"yes, at step {last}{evidence}; exploding at {where} ({count})"
        return f"at {where} ({count}), last at step {last}{evidence}; now: no"

    def _nonfinite_line(self):
        first = self.nonfinite
        if first is None:
            if self.loss_scale_skips:
                return (
                    "none, apart from the LossScaleOptimizer's float16 overflows "
                    "(see skipped updates)"
                )
            return "none"
        if first.layer is None:
            where = " (not a recorded step: no location)"
        elif first.layer == "loss":
            where = ", in the loss"
        else:
            where = f", in {first.layer}"
            if first.timestep is not None:
                where += f" at time step {first.timestep} (input order)"
        total = f"; {first.count} non-finite steps in all" if first.count > 1 else ""
        table = ""
        if any(d.nonfinite_timestep is not None for d in self.sublayers.values()):
            table = f"; the table shows step {self.step}, not the first"
            if first.step == self.step:
                table = ""
        return f"first at training step {first.step}{where}{total}{table}"

    def _skipped_line(self):
        if not self.skipped_steps:
            return "0"
        parts = []
        if self.loss_scale_skips:
            parts.append(
                f"{self.loss_scale_skips} by the LossScaleOptimizer (scaled "
                "gradients overflowed; it lowers its loss scale, routine under "
                "mixed precision)"
            )
        guarded = self.skipped_steps - self.loss_scale_skips - self.held_steps
        if guarded:
            parts.append(f"{guarded} for non-finite gradients (on_nan)")
        if self.held_steps:
            parts.append(
                f"{self.held_steps} withheld after a non-finite step until "
                "on_nan='stop' ended the fit at its next read"
            )
        return f"{self.skipped_steps}: " + "; ".join(parts)

    def report(self):
        """Plain text: the Markdown table without the emphasis."""
        return self.markdown().replace("**", "")


def _runs(steps):
    """Consecutive recorded steps grouped: `[(first, last), ...]` where a
    gap larger than the smallest step between two exploding records starts
    a new run."""
    steps = sorted(steps)
    if len(steps) < 2:
        return [(steps[0], steps[0])] if steps else []
    gap = min(b - a for a, b in zip(steps, steps[1:]))
    runs = [[steps[0], steps[0]]]
    for step in steps[1:]:
        if step - runs[-1][1] <= gap:
            runs[-1][1] = step
        else:
            runs.append([step, step])
    return [tuple(r) for r in runs]
