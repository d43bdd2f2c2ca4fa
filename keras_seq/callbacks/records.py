"""What a `GradientMonitor` keeps of a run, in bounded memory.

`GradientRecords` turns one recorded step's statistics (see
`keras_seq.monitoring.train_step`) into a `to_frame()` row, per-time-step
rows and per-variable rows, keeps the verdicts of the latest records (see
`keras_seq.diagnostics`), and answers the monitor's frames and pictures.
It writes nothing and warns about nothing: the callback does.

Memory stays bounded over a run of any length:

- rows (`frame()`): the last `MAX_RECORDS` in memory, older ones in
  Parquet parts (`RowStore`);
- variable norms: the last `MAX_VARIABLE_ROWS` long-format rows in memory;
- per-time-step rows: `TimestepStore`, `MAX_TIMESTEP_ROWS` in memory;
- verdicts: the last `VERDICT_RECORDS` per sublayer; the global norms the
  explosion rule reads (its first and last few); the epoch's decay curve
  as a running mean; the evidence of the last `MAX_EVIDENCE` exploding
  steps. Only the exploding steps' numbers grow, one int each.
"""

import collections
import os
import pathlib
import typing

import numpy as np

import keras_seq.diagnostics as diagnostics
from keras_seq.callbacks import figures
from keras_seq.callbacks.row_store import RowStore
from keras_seq.callbacks.timestep_store import TimestepStore
from keras_seq.models.levels import recurrent_levels, single_stack

TIMESTEP_COLUMNS = ("grad_norm", "contribution", "valid_fraction", "cell_grad_norm")
# Per-time-step rows kept in memory; beyond them rows go to Parquet parts
# (under log_dir, else a temporary directory) and are read back on demand.
MAX_TIMESTEP_ROWS = 200_000
MAX_RECORDS = 2_000  # to_frame() rows in memory
MAX_VARIABLE_ROWS = 20_000  # variable_frame() rows in memory
MAX_EVIDENCE = 64  # exploding steps whose evidence is kept


class Thresholds(typing.NamedTuple):
    """The verdicts' settings (see `GradientMonitor`'s arguments)."""

    horizon_fraction: float
    vanishing_ratio: float
    exploding_ratio: float
    explode_jump: float
    explode_threshold: object
    depth_vanishing_ratio: float
    depth_exploding_ratio: float


class Recorded(typing.NamedTuple):
    """What one `GradientRecords.add` found."""

    row: dict
    evidence: object  # why the step explodes, or None
    location: tuple  # (sublayer, time step) where non-finite values start
    sublayers: tuple  # names of the sublayers with per-step data


class GradientRecords:
    """The rows, stores and verdicts of one monitor (see the module
    docstring).

    Args:
        thresholds: a `Thresholds`.
        directory: optional callable returning the path under which
            spilled rows go (`<directory>/<kind>/<process>-<monitor>/`, kind
            `rows`, `variables` or `timesteps`: a store refuses a directory
            with parts), or None for temporary directories; called when a
            store is first used (the chief's `log_dir` is known by then).
    """

    def __init__(self, thresholds, directory=None):
        self.thresholds = thresholds
        self._directory = directory
        self._rows = None
        self._variable_rows = None
        self.store = None  # TimestepStore, created at the first sublayer
        # Set by the monitor when its journal holds every per-time-step
        # row: a callable returning the journal's tables (one copy on disk).
        self.timestep_backing = None
        self.latest = {}  # sublayer -> SublayerDiagnosis of its last records
        self._recent = {}  # sublayer -> deque of its last records' diagnoses
        self.latest_depth = None  # DepthDiagnosis of the last record
        self._levels = None  # the model's recurrent levels, one stack, or []
        self._norms = _ModelNorms()  # the global norms the explosion rule reads
        self.exploding_steps = []
        self.exploding_evidence = collections.OrderedDict()
        self.new_epoch(0)

    def _spill_dir(self, kind):
        directory = None if self._directory is None else self._directory()
        if directory is None:
            return None
        return pathlib.Path(directory) / kind / f"{os.getpid()}-{id(self):x}"

    @property
    def rows(self):
        """The `to_frame()` rows, a `RowStore`."""
        if self._rows is None:
            self._rows = RowStore(self._spill_dir("rows"), max_rows=MAX_RECORDS)
        return self._rows

    @property
    def _variables(self):
        if self._variable_rows is None:
            self._variable_rows = RowStore(
                self._spill_dir("variables"), max_rows=MAX_VARIABLE_ROWS
            )
        return self._variable_rows

    # -- per model, per epoch ----------------------------------------------

    def new_model(self):
        """Verdicts start over: another model's norms are no baseline."""
        self.latest, self._recent, self.latest_depth = {}, {}, None
        self._levels = None  # found at the first record, once built
        self._norms = _ModelNorms()

    def new_epoch(self, epoch):
        self.epoch = epoch
        self.epoch_decay = {}
        self._epoch_norms = [0.0, 0]  # sum and count of finite global norms
        self._top = None  # the last sublayer recorded this epoch

    def epoch_summary(self):
        """`{"grad_norm": mean finite global norm of the epoch's records,
        "grad_horizon": the top sublayer's latest horizon}`, the keys with a
        value only."""
        summary = {}
        total, count = self._epoch_norms
        if count:
            summary["grad_norm"] = total / count
        if self._top is not None and self._top in self.latest:
            summary["grad_horizon"] = float(self.latest[self._top].horizon)
        return summary

    # -- recording ----------------------------------------------------------

    def add(self, step, fit, statistics, context):
        """Append one recorded step.

        Args:
            step: the training step.
            fit: the index of the `fit` call.
            statistics: the step's statistics (numpy-convertible).
            context: a `RecordContext`.

        Returns:
            A `Recorded`.
        """
        stats = {
            k: np.asarray(v)
            for k, v in statistics.items()
            if k not in ("sublayers", "gradients")
        }
        finite = bool(stats["finite"])
        held = bool(stats.get("held", 0))
        row = {
            "step": step,
            "fit": fit,
            "epoch": self.epoch,
            "loss": float(stats["loss"]),
            "global_norm": float(stats["global_norm"]),
            "applied_norm": float(stats["applied_norm"]),
            "finite": finite,
            # A LossScaleOptimizer skips non-finite steps itself.
            "skipped": held
            or ((not finite) and (context.on_nan != "warn" or context.loss_scaling)),
            "skipped_by": "",
        }
        if row["skipped"]:
            by_scaler = context.loss_scaling and not held
            row["skipped_by"] = "loss_scale" if by_scaler else "on_nan"
        norms = stats["variable_norms"]
        for layer, norm in _layer_norms(context.layer_names, norms).items():
            row[f"norm/{layer}"] = norm
        t = self.thresholds
        reverse = {s.name: s.reverse for s in context.sublayers}
        finiteness = []
        for name, values in statistics["sublayers"].items():
            values = {k: np.asarray(v) for k, v in values.items()}
            verdict = diagnostics.SublayerDiagnosis.from_norms(
                name,
                values["grad_norm"],
                forward_finite=values["forward_finite"] > 0,
                grad_finite=values["grad_finite"] > 0,
                reverse=reverse[name],
                fraction=t.horizon_fraction,
                vanishing_ratio=t.vanishing_ratio,
                exploding_ratio=t.exploding_ratio,
                aligned_norm=values["aligned_norm"],
                aligned_count=values["aligned_count"],
            )
            recent = self._recent.setdefault(
                name, collections.deque(maxlen=diagnostics.verdicts.VERDICT_RECORDS)
            )
            recent.append(verdict)
            verdict = diagnostics.verdicts.over_records(
                list(recent), t.vanishing_ratio, t.exploding_ratio
            )
            self.latest[name] = verdict
            row[f"horizon/{name}"] = verdict.horizon
            row[f"decay/{name}"] = verdict.decay
            self._timestep_store().append(
                step,
                name,
                {column: values[column] for column in TIMESTEP_COLUMNS},
                fit=fit,
            )
            self.epoch_decay.setdefault(name, _RaggedMean()).add(verdict.norms[::-1])
            finiteness.append(
                (
                    name,
                    values["forward_finite"] > 0,
                    values["grad_finite"] > 0,
                    reverse[name],
                )
            )
        self.latest_depth = self._depth_profile(context.model, norms)
        if self.latest_depth is not None:
            for name, level in self.latest_depth.levels.items():
                row[f"depth_ratio/{name}"] = level.ratio_to_top
        for name, layer, norm in zip(
            context.variable_names, context.layer_names, norms
        ):
            self._variables.append(
                {
                    "step": step,
                    "fit": fit,
                    "variable": name,
                    "layer": layer,
                    "grad_norm": float(norm),
                }
            )
        self.rows.append(row)
        self._norms.add(row["global_norm"])
        if np.isfinite(row["global_norm"]):
            self._epoch_norms[0] += row["global_norm"]
            self._epoch_norms[1] += 1
        if statistics["sublayers"]:
            # Probes are made in forward order: the last is nearest the loss.
            self._top = list(statistics["sublayers"])[-1]
        evidence = self._explosion(row, finiteness, context)
        if evidence is not None:
            self.mark_exploding(step, evidence)
        location = (None, None)
        if not finite:
            layer_norms = {
                k[len("norm/") :]: v for k, v in row.items() if k.startswith("norm/")
            }
            location = diagnostics.locate_nonfinite(
                row["loss"], finiteness, layer_norms
            )
        return Recorded(row, evidence, location, tuple(statistics["sublayers"]))

    def mark_exploding(self, step, evidence):
        self.exploding_steps.append(step)
        self.exploding_evidence[step] = evidence
        while len(self.exploding_evidence) > MAX_EVIDENCE:
            self.exploding_evidence.popitem(last=False)

    def _explosion(self, row, finiteness, context):
        """Why this record explodes (see `keras_seq.diagnostics.verdicts`),
        or None: the global norm's sustained growth across this model's
        records, a sublayer's growth through time, or non-finite gradients
        behind a finite loss and finite forward states (an overflow)."""
        if not row["finite"]:
            if context.loss_scaling:
                return None  # a float16 overflow, the LossScaleOptimizer's job
            forward_bad = any(not np.all(f) for _, f, _, _ in finiteness)
            if np.isfinite(row["loss"]) and not forward_bad:
                return "non-finite gradients behind a finite loss: an overflow"
            return self.blown_up(context.peak())
        evidence = diagnostics.verdicts.explosion_evidence(
            self._norms.view(),
            jump=self.thresholds.explode_jump,
            threshold=self.thresholds.explode_threshold,
        )
        if evidence is not None:
            return evidence
        growing = [
            d
            for name, d in self.latest.items()
            if f"horizon/{name}" in row and d.exploding
        ]
        if growing:
            return "; ".join(f"{d.name} {d.evidence}" for d in growing)
        return None

    def blown_up(self, peak):
        """Why a non-finite step is the end of an explosion (or None): the
        global norm since the previous record (`peak`) reached
        `explode_jump` times the model's starting level before it. A NaN in
        the data comes without that."""
        start = self._norms.start()
        jump = self.thresholds.explode_jump
        if start is not None and start > 0 and peak >= jump * start:
            return (
                f"non-finite after the global norm reached {peak:.3g}, "
                f"{peak / start:.3g}x its starting level {start:.3g}"
            )
        return None

    def _depth_profile(self, model, variable_norms):
        """Each level's gradient norm against the top level's: ||dL/dh||
        over its valid steps when every level has per-step data, else the
        norm of the level's own weight gradients."""
        if self._levels is None:
            self._levels = _stack_levels(model)
        if len(self._levels) < 2:
            return None
        sublayers = self.latest
        if all(
            level.monitor_names and all(n in sublayers for n in level.monitor_names)
            for level in self._levels
        ):
            source = "dL/dh"
            norms = {
                level.name: np.sqrt(
                    sum(np.sum(sublayers[n].norms ** 2) for n in level.monitor_names)
                )
                for level in self._levels
            }
        else:
            source = "weights"
            index = {id(v): i for i, v in enumerate(model.trainable_variables)}
            norms = {
                level.name: np.sqrt(
                    sum(
                        float(variable_norms[index[id(v)]]) ** 2
                        for v in level.variables
                        if id(v) in index
                    )
                )
                for level in self._levels
            }
        return diagnostics.depth_profile(
            norms,
            source={name: source for name in norms},
            vanishing_ratio=self.thresholds.depth_vanishing_ratio,
            exploding_ratio=self.thresholds.depth_exploding_ratio,
        )

    # -- restoring an earlier process's records ------------------------------

    def restore(self, line, timesteps):
        """Take over one journal record line (see `keras_seq.callbacks.
        journal`) and its per-time-step table (or None)."""
        row = line["row"]
        self.rows.append(row)
        for name, layer, norm in zip(line["variables"], line["layers"], line["norms"]):
            self._variables.append(
                {
                    "step": row["step"],
                    "fit": row["fit"],
                    "variable": name,
                    "layer": layer,
                    "grad_norm": float(norm),
                }
            )
        if line["exploding"]:
            self.exploding_steps.append(row["step"])
        if self.timestep_backing is not None:
            # The rows stay in the journal, the store's on-disk form.
            rows = line.get("rows")
            if rows is None:
                rows = 0 if timesteps is None else timesteps.num_rows
            self._timestep_store().add_backed(rows, meta_keys=("fit",))
        elif timesteps is not None:
            import pyarrow.compute as pa_compute

            for layer in dict.fromkeys(timesteps.column("layer").to_pylist()):
                part = timesteps.filter(pa_compute.equal(timesteps["layer"], layer))
                self._timestep_store().append(
                    row["step"],
                    layer,
                    {c: part[c].to_numpy() for c in TIMESTEP_COLUMNS},
                    fit=row["fit"],
                )

    # -- results -------------------------------------------------------------

    def _timestep_store(self):
        if self.store is None:
            self.store = TimestepStore(
                TIMESTEP_COLUMNS,
                directory=self._spill_dir("timesteps"),
                max_rows=MAX_TIMESTEP_ROWS,
                backing=self.timestep_backing,
            )
        return self.store

    def frame(self):
        return self.rows.frame()

    def timestep_frame(self):
        if self.store is None:
            return _empty_timestep_frame()
        return self.store.frame()

    def variable_frame(self):
        frame = self._variables.frame()
        if frame.empty:
            return _empty_variable_frame()
        return frame

    def save_timesteps(self, path, writer):
        if self.store is None:
            getattr(self.timestep_frame(), writer)(path, index=False)
        else:  # part by part when rows were spilled
            self.store.save(path)

    def figures(self):
        horizons = {name: d.horizon for name, d in self.latest.items()}
        curves = {name: mean.value() for name, mean in self.epoch_decay.items()}
        return figures.monitor_figures(self.store, horizons, curves, self.epoch)


class RecordContext(typing.NamedTuple):
    """What `GradientRecords.add` needs from the monitor and the model."""

    model: object
    sublayers: tuple  # SublayerInfo of the recording step
    variable_names: tuple
    layer_names: tuple
    on_nan: str
    loss_scaling: bool
    peak: object  # callable: the largest finite global norm since the last read


def _empty_timestep_frame():
    import pandas as pd

    return pd.DataFrame(columns=["step", "fit", "layer", "timestep"])


def _empty_variable_frame():
    import pandas as pd

    return pd.DataFrame(columns=["step", "fit", "variable", "layer", "grad_norm"])


def _layer_norms(layer_names, variable_norms):
    squares = {}
    for layer, norm in zip(layer_names, variable_norms):
        squares[layer] = squares.get(layer, 0.0) + float(norm) ** 2
    return {layer: np.sqrt(total) for layer, total in squares.items()}


def _stack_levels(model):
    """The model's recurrent levels when they form one stack, else []."""
    try:
        found = recurrent_levels(model)
    except ValueError:  # no recurrent levels
        return []
    return found if single_stack(model, found) else []


class _ModelNorms:
    """The global norms of one model's records that the explosion rule
    reads, in bounded memory: `view()` gives `explosion_evidence` the same
    answer as the whole list would."""

    _BASELINE = diagnostics.verdicts.BASELINE_RECORDS
    _WINDOW = diagnostics.verdicts.EXPLODE_WINDOW

    def __init__(self):
        self._keep = self._BASELINE + 2 * self._WINDOW
        self._head = []  # the first finite norms
        self._tail = collections.deque(maxlen=self._WINDOW)  # the last ones
        self._finite = 0
        self._last = None

    def add(self, norm):
        self._last = norm
        if np.isfinite(norm):
            self._finite += 1
            if len(self._head) < self._keep:
                self._head.append(norm)
            self._tail.append(norm)

    def view(self):
        if self._last is None:
            return []
        if self._finite <= len(self._head):
            finite = list(self._head)
        else:  # more than the baseline and two windows: the middle is unread
            finite = self._head[: self._BASELINE] + list(self._tail)
        return finite + ([] if np.isfinite(self._last) else [self._last])

    def start(self):
        """The starting level: the median of the first finite norms."""
        if not self._head:
            return None
        return float(np.median(self._head[: self._BASELINE]))


class _RaggedMean:
    """The element-wise mean of 1-D arrays of any lengths (NaN ignored), in
    bounded memory: one running sum and count per position."""

    def __init__(self):
        self._sum = np.zeros(0)
        self._count = np.zeros(0)

    def add(self, values):
        values = np.asarray(values, np.float64)
        if len(values) > len(self._sum):
            grow = len(values) - len(self._sum)
            self._sum = np.concatenate([self._sum, np.zeros(grow)])
            self._count = np.concatenate([self._count, np.zeros(grow)])
        finite = ~np.isnan(values)
        self._sum[: len(values)][finite] += values[finite]
        self._count[: len(values)][finite] += 1

    def value(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._count > 0, self._sum / self._count, np.nan)
