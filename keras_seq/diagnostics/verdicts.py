"""Gradient statistics -> verdicts: horizon, decay, vanishing, exploding,
non-finite. Plain numpy, shared by `GradientMonitor`, the depth helper and
the command line.

Conventions: a per-step gradient-norm vector is in *processing order*
(index -1 is the step processed last, where the gradient from a final-step
loss enters). For a `go_backwards` sublayer pass the vector reversed from
input order (`SublayerDiagnosis` does this with `reverse=True`).
"""

import dataclasses

import numpy as np


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


def is_exploding(global_norms, threshold=1e3, jump=10.0, window=20):
    """Whether the last recorded global norm explodes.

    Exploding: above `threshold`, or more than `jump` times the median of the
    previous `window` finite records (needs at least 3 of them).
    """
    norms = np.asarray(global_norms, dtype=np.float64)
    if norms.size == 0:
        return False
    last = norms[-1]
    if not np.isfinite(last):
        return False  # non-finite is its own verdict
    if last > threshold:
        return True
    previous = norms[:-1][-window:]
    previous = previous[np.isfinite(previous)]
    if previous.size < 3:
        return False
    median = np.median(previous)
    return bool(median > 0 and last > jump * median)


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
        vanishing: horizon < `vanishing_fraction` * timesteps while the norm
            shrinks going back (decay <= 1); never with fewer than 2 steps.
        nonfinite_timestep: first input time step whose forward state is
            non-finite, else the time step where the backward pass first
            became non-finite (processing order), else None.
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

    @property
    def verdict(self):
        """`"non-finite from t=<t>"`, `"no valid steps"`, `"not enough
        steps"`, `"vanishing"` or `"ok"`."""
        if self.nonfinite_timestep is not None:
            return f"non-finite from t={self.nonfinite_timestep}"
        if self.timesteps == 0:
            return "no valid steps"
        if self.timesteps < 2:
            return "not enough steps"
        return "vanishing" if self.vanishing else "ok"

    @classmethod
    def from_norms(
        cls,
        name,
        grad_norm,
        forward_finite=None,
        grad_finite=None,
        reverse=False,
        fraction=1e-3,
        vanishing_fraction=0.1,
        aligned_norm=None,
        aligned_count=None,
    ):
        """Diagnose from per-step vectors.

        Args:
            grad_norm, forward_finite, grad_finite: per step, *input* order.
            reverse: True for a `go_backwards` sublayer.
            aligned_norm, aligned_count: optional, processing order,
                end-aligned over the valid steps (from the monitored step):
                the norms and how many sequences reach each position. When
                given, horizon and decay read the positions some sequence
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
        nonfinite = _first_bad(forward_finite, last=reverse)
        if nonfinite is None:
            nonfinite = _first_bad(grad_finite, last=not reverse)
        decay = decay_factor(processing)
        # A short horizon only means vanishing when the norm shrinks going
        # back; when it grows (decay > 1) the early steps dominate instead.
        vanishing = (
            nonfinite is None
            and timesteps >= 2
            and horizon < vanishing_fraction * timesteps
            and not decay > 1.0
        )
        return cls(
            name=name,
            timesteps=timesteps,
            horizon=horizon,
            decay=decay,
            vanishing=bool(vanishing),
            nonfinite_timestep=nonfinite,
            norms=processing,
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
    """Where non-finite gradients were first seen.

    Attributes:
        step: training step (0-based) of the first non-finite record.
        layer: the first recurrent sublayer (in forward order) whose states or
            gradients were non-finite, or the first model layer with a
            non-finite gradient norm when no sublayer was.
        timestep: time step within `layer` (input order), or None.
    """

    step: int
    layer: object
    timestep: object


@dataclasses.dataclass
class Diagnosis:
    """The monitor's verdict on the latest recorded step.

    Attributes:
        step: training step the sublayer verdicts describe, or None.
        sublayers: `{name: SublayerDiagnosis}` in forward order.
        vanishing: names of vanishing sublayers.
        exploding: whether the latest global norm explodes (`is_exploding`).
        exploding_steps: every recorded step judged exploding.
        nonfinite: `NonFinite` for the first non-finite record, or None.
        skipped_steps: number of updates not applied because of NaN/Inf.
        notes: extra lines for the report (e.g. the truncated horizon of
            stateful layers).
        depth: `keras_seq.diagnostics.DepthDiagnosis` of the latest record
            (a model with two or more recurrent levels in one stack), or None.
    """

    step: object
    sublayers: dict
    exploding: bool
    exploding_steps: list
    nonfinite: object
    skipped_steps: int
    depth: object = None
    notes: tuple = ()

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
    def healthy(self):
        """No vanishing or exploding gradients (through time or depth) and
        no non-finite values."""
        return not (
            self.vanishing
            or self.exploding
            or self.nonfinite
            or self.vanishing_through_depth
            or self.exploding_through_depth
        )

    def markdown(self):
        """The per-sublayer table and the verdicts, as Markdown."""
        if self.step is None:
            return (
                "**Gradient diagnosis: no training step recorded yet.** "
                "Attach the monitor to `model.fit(..., callbacks=[monitor])`; "
                "it records every `every`-th step."
            )
        lines = [
            f"**Gradient diagnosis at step {self.step}**",
            "",
            "| sublayer | T | horizon | decay/step | verdict |",
            "|---|---|---|---|---|",
        ]
        for d in self.sublayers.values():
            lines.append(
                f"| {d.name} | {d.timesteps} | {d.horizon} | {d.decay:.3g} | "
                f"{d.verdict} |"
            )
        lines.append("")
        lines.append(
            f"- exploding: {'yes' if self.exploding else 'no'}"
            + (f" (steps {self.exploding_steps[:10]})" if self.exploding_steps else "")
        )
        if self.nonfinite is not None:
            where = self.nonfinite.layer
            if self.nonfinite.timestep is not None:
                where = f"{where} at time step {self.nonfinite.timestep}"
            lines.append(
                f"- non-finite gradients first at training step "
                f"{self.nonfinite.step}, in {where}"
            )
        else:
            lines.append("- non-finite gradients: none")
        lines.append(f"- skipped updates: {self.skipped_steps}")
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

    def report(self):
        """Plain text: the Markdown table without the emphasis."""
        return self.markdown().replace("**", "")
