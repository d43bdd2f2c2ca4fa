"""Gradient norms per level -> verdicts through depth. Plain numpy.

A *level* is one recurrent sublayer of the stack (see `keras_seq.depth`),
ordered bottom (input side) to top. Each level's gradient norm is compared
with the top level's: a stack whose lower levels get a tiny fraction of the
top's gradient learns only at the top ("vanishing through depth"); the
reverse, "exploding through depth".
"""

import dataclasses

import numpy as np

VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2


@dataclasses.dataclass
class LevelDepth:
    """One level's place in the depth profile.

    Attributes:
        name: the level's name, `"<layer>/level_<i>"`.
        norm: the gradient norm reaching the level (see `DepthDiagnosis`).
        ratio_to_top: `norm` divided by the top level's norm.
        ratio_to_above: `norm` divided by the norm of the level above (NaN
            for the top level): the attenuation through that one level.
        verdict: `"ok"`, `"vanishing through depth"` or `"exploding through
            depth"`.
    """

    name: str
    norm: float
    ratio_to_top: float
    ratio_to_above: float
    verdict: str


@dataclasses.dataclass
class DepthDiagnosis:
    """Verdicts through depth for one recorded step.

    A level is *vanishing through depth* when its gradient norm is below
    `vanishing_ratio` (default 1e-2) times the top level's, *exploding
    through depth* when above `exploding_ratio` (default 1e2) times it. The
    top level is the reference and is always "ok".

    The norm of a level is ||dL/dh|| over all its outputs (every time step
    and sequence of the batch; both directions of a Bidirectional level)
    where the monitor has per-step data (`keras_seq.layers.SharedRNN`), and
    the norm of the gradient of the level's own weights otherwise (`source`
    says which).

    Attributes:
        levels: `{name: LevelDepth}`, bottom to top.
        source: `{name: "dL/dh" | "weights"}`.
        vanishing_ratio, exploding_ratio: the thresholds used.
    """

    levels: dict
    source: dict
    vanishing_ratio: float = VANISHING_RATIO
    exploding_ratio: float = EXPLODING_RATIO

    @property
    def vanishing(self):
        """Names of the levels vanishing through depth, bottom to top."""
        return [n for n, d in self.levels.items() if d.verdict.startswith("vanish")]

    @property
    def exploding(self):
        """Names of the levels exploding through depth, bottom to top."""
        return [n for n, d in self.levels.items() if d.verdict.startswith("explod")]

    def markdown_lines(self):
        lines = [
            "| level | gradient norm | vs top | vs level above | verdict |",
            "|---|---|---|---|---|",
        ]
        for d in self.levels.values():
            above = "" if np.isnan(d.ratio_to_above) else f"{d.ratio_to_above:.3g}"
            lines.append(
                f"| {d.name} | {d.norm:.3g} | {d.ratio_to_top:.3g} | {above} | "
                f"{d.verdict} |"
            )
        return lines


def depth_profile(
    norms,
    source=None,
    vanishing_ratio=VANISHING_RATIO,
    exploding_ratio=EXPLODING_RATIO,
):
    """The depth profile of per-level gradient norms.

    Args:
        norms: `{level name: gradient norm}`, bottom to top.
        source: optional `{level name: "dL/dh" | "weights"}`.
        vanishing_ratio, exploding_ratio: thresholds relative to the top.

    Returns:
        A `DepthDiagnosis`, or None with fewer than two levels or a top level
        whose norm is zero, or any norm not finite (nothing to compare).
    """
    names = list(norms)
    values = np.asarray([norms[n] for n in names], dtype=np.float64)
    # A step whose norms overflowed (or are NaN) has no depth profile.
    if len(names) < 2 or not np.all(np.isfinite(values)) or values[-1] <= 0:
        return None
    levels = {}
    for i, name in enumerate(names):
        ratio = values[i] / values[-1]
        above = values[i] / values[i + 1] if i + 1 < len(names) else np.nan
        verdict = "ok"
        if ratio < vanishing_ratio:
            verdict = "vanishing through depth"
        elif ratio > exploding_ratio:
            verdict = "exploding through depth"
        levels[name] = LevelDepth(name, float(values[i]), float(ratio), above, verdict)
    return DepthDiagnosis(
        levels=levels,
        source=dict(source or {}),
        vanishing_ratio=vanishing_ratio,
        exploding_ratio=exploding_ratio,
    )
