"""What a `GradientMonitor` with a `log_dir` keeps on disk to survive a crash.

Under `<log_dir>/gradients/state/`, each process that trains with the
monitor writes one *segment*, numbered in the order they started:

- `segment-NNNNN.jsonl`: one JSON line per event, appended and flushed to
  the operating system as it happens:
  - `start`, when a `fit` takes its first step: the training step and the
    optimizer's iteration count there, and the `fit` index;
  - `nonfinite`, after a batch with non-finite gradients: the steps, how
    many, and where the first was found;
  - `offset`, after a batch whose update was skipped (by the monitor's
    guard, or by a LossScaleOptimizer on an overflow): the next step and
    the optimizer's iteration count there;
  - `record`, after each recorded step: the `to_frame()` row, the variable
    norms and whether the global norm was exploding. This line *commits*
    the record: it is written last.
- `segment-NNNNN.arrows`: an Arrow IPC stream with the per-time-step rows
  of every recorded step (`timestep_frame()`), one batch per record,
  written before the record's line.

Reading (`load`) goes through the segments in order and treats a `start`
at step s as TensorBoard treats a `SessionLog.START`: whatever an earlier
segment holds at step >= s is dropped, since those steps were run again.
A torn last line or batch (a crash inside the monitor's own write) ends its
segment; rows of a record whose line is missing are dropped.

Training steps count every batch, including those skipped for non-finite
gradients, while the optimizer's `iterations` count applied updates only;
the two differ by a constant between skipped updates, so the `start` and
`offset` lines map a restored iteration count back to the training step it
stands for (`resume_step`).
"""

import json
import math
import os
import pathlib
import re
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.ipc

STATE_DIR = "state"
_SEGMENT = re.compile(r"segment-(\d{5})\.jsonl$")
_ROW_COLUMNS = (
    ("layer", pa.string()),
    ("step", pa.int64()),
    ("fit", pa.int64()),
    ("timestep", pa.int64()),
)


def _schema(columns):
    fields = [pa.field(n, t) for n, t in _ROW_COLUMNS]
    fields += [pa.field(c, pa.float64()) for c in columns]
    return pa.schema(fields)


def _plain(value):
    """JSON-safe scalar: numpy scalars to Python, NaN/Inf as strings."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def _unplain(value):
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    return value


class Journal:
    """Appends one process's segment under `directory`."""

    def __init__(self, directory, columns):
        self.directory = pathlib.Path(directory)
        self.columns = tuple(columns)
        self._lines = None
        self._rows = None
        self._rows_writer = None

    def _open(self):
        if self._lines is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        index = 1 + max(
            (int(m.group(1)) for m in map(_SEGMENT.search, self._names()) if m),
            default=-1,
        )
        stem = self.directory / f"segment-{index:05d}"
        self._lines = open(f"{stem}.jsonl", "a", encoding="utf-8")
        self._rows = open(f"{stem}.arrows", "wb")

    def _names(self):
        return [p.name for p in self.directory.iterdir()]

    def _write(self, line):
        self._open()
        self._lines.write(json.dumps(line) + "\n")
        self._lines.flush()

    def start(self, step, iterations, fit, model=0, shapes=(), purge=None):
        """A fit's first step; `model` counts the models this monitor moved
        to before (a journal spanning several cannot be resumed), `shapes`
        are the trainable variables' (which model wrote it). Readers drop
        what earlier segments hold from step `purge` on (default `step`;
        0 for a run that took nothing over)."""
        self._write(
            {
                "kind": "start",
                "step": step,
                "purge": step if purge is None else purge,
                "iterations": iterations,
                "fit": fit,
                "model": model,
                "shapes": [list(shape) for shape in shapes],
            }
        )

    def offset(self, step, iterations):
        """From `step` on, steps run ahead of the optimizer's `iterations`
        by a new amount (an update was skipped)."""
        self._write({"kind": "offset", "step": step, "iterations": iterations})

    def nonfinite(self, step, first, count, skipped, location):
        layer, timestep = location
        self._write(
            {
                "kind": "nonfinite",
                "step": step,
                "first": first,
                "count": count,
                "skipped": skipped,
                "layer": layer,
                "timestep": None if timestep is None else int(timestep),
            }
        )

    def lost(self, steps):
        """Recorded steps whose records a restored backup said were
        committed but the journal lacks (named in the report)."""
        self._write({"kind": "lost", "steps": [int(s) for s in steps]})

    def record(self, row, variables, layers, norms, exploding, timesteps):
        """`timesteps`: {sublayer: {column: 1-D array}} of this step."""
        self._open()
        batch = _timestep_batch(
            row["step"], row["fit"], timesteps, _schema(self.columns)
        )
        if batch is not None:
            if self._rows_writer is None:
                self._rows_writer = pa.ipc.new_stream(self._rows, batch.schema)
            self._rows_writer.write_batch(batch)
            self._rows.flush()
        self._write(
            {
                "kind": "record",
                "row": {k: _plain(v) for k, v in row.items()},
                "variables": list(variables),
                "layers": list(layers),
                "norms": [_plain(float(n)) for n in norms],
                "exploding": bool(exploding),
                "rows": 0 if batch is None else batch.num_rows,
            }
        )

    def sync(self):
        """Make everything written so far durable (`fsync`): called before a
        backup is written, which must not stand for an uncommitted step."""
        for handle in (self._rows, self._lines):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())

    def close(self):
        if self._rows_writer is not None:
            self._rows_writer.close()
            self._rows_writer = None
        for handle in (self._lines, self._rows):
            if handle is not None:
                handle.close()
        self._lines = self._rows = None


def _timestep_batch(step, fit, timesteps, schema):
    parts = []
    for layer, values in timesteps.items():
        length = len(next(iter(values.values())))
        part = {
            "layer": [layer] * length,
            "step": np.full(length, step, np.int64),
            "fit": np.full(length, fit, np.int64),
            "timestep": np.arange(length, dtype=np.int64),
        }
        for column in schema.names[len(_ROW_COLUMNS) :]:
            part[column] = np.asarray(
                values.get(column, np.full(length, np.nan)), np.float64
            )
        parts.append(pa.RecordBatch.from_pydict(part, schema=schema))
    if not parts:
        return None
    return pa.Table.from_batches(parts, schema).combine_chunks().to_batches()[0]


class History:
    """Everything the segments under a directory hold, purged of re-run
    steps: `records` (list of line dicts, in order), `nonfinite` lines,
    `entries` ((step, iterations) pairs mapping iterations to steps), the
    last `fit` index, and per-record time-step tables."""

    def __init__(self):
        self.records = []
        self.nonfinite = []
        self.entries = []
        self.last_fit = -1
        self.moved = False  # the monitor moved to another model meanwhile
        self.shapes = None  # trainable variable shapes of the last start
        self.timesteps = {}  # (step, fit) -> pyarrow.Table
        self.lost = []  # recorded steps named lost at an earlier resume

    def purge_from(self, step):
        self.lost = [s for s in self.lost if s < step]
        self.records = [r for r in self.records if r["row"]["step"] < step]
        self.nonfinite = [n for n in self.nonfinite if n["step"] < step]
        self.entries = [e for e in self.entries if e[0] < step]
        self.timesteps = {k: v for k, v in self.timesteps.items() if k[0] < step}

    def nonfinite_totals(self):
        """`(count, skipped, first)` over the `nonfinite` lines: non-finite
        steps, updates skipped for them, and the first one's `(step, layer,
        time step)` (layer and time step None when it was not recorded), or
        None without any."""
        count = sum(line["count"] for line in self.nonfinite)
        skipped = sum(line["skipped"] for line in self.nonfinite)
        first = None
        if self.nonfinite:
            line = self.nonfinite[0]
            here = line["first"] == line["step"]
            first = (
                line["first"],
                line["layer"] if here else None,
                line["timestep"] if here else None,
            )
        return count, skipped, first

    def resume_step(self, iterations):
        """The training step that follows `iterations` applied updates:
        from the last mapping entry at or below it (the offset between the
        two changes only where an update was skipped). None without
        entries, or when the journal spans several models (each with its
        own optimizer count)."""
        if self.moved:
            return None
        best = None
        for step, seen in self.entries:
            if seen <= iterations:
                best = (step, seen)
        if best is None:
            return None
        return best[0] + (iterations - best[1])


def timestep_tables(directory):
    """The committed per-time-step tables under `directory`, in order (one
    per record, re-run steps purged): the time-step store's on-disk rows
    when the monitor keeps a journal."""
    return list(load(directory).timesteps.values())


def load(directory, timesteps=True):
    """Read every segment under `directory` (a missing one is empty);
    `timesteps=False` leaves the per-time-step rows on disk (each record
    line's `rows` says how many it has)."""
    directory = pathlib.Path(directory)
    history = History()
    if not directory.is_dir():
        return history
    segments = sorted(
        (int(m.group(1)), directory / m.group(0))
        for m in map(_SEGMENT.search, (p.name for p in directory.iterdir()))
        if m
    )
    for _, path in segments:
        batches = _read_batches(path.with_suffix(".arrows")) if timesteps else []
        committed = set()
        for line in _read_lines(path):
            kind = line.get("kind")
            if kind == "start":
                history.purge_from(line.get("purge", line["step"]))
                history.entries.append((line["step"], line["iterations"]))
                history.last_fit = max(history.last_fit, line["fit"])
                history.moved |= line.get("model", 0) > 0
                history.shapes = line.get("shapes")
            elif kind == "offset":
                history.entries.append((line["step"], line["iterations"]))
            elif kind == "nonfinite":
                history.nonfinite.append(line)
            elif kind == "lost":
                history.lost.extend(line["steps"])
            elif kind == "record":
                line["row"] = {k: _unplain(v) for k, v in line["row"].items()}
                line["norms"] = [_unplain(n) for n in line["norms"]]
                history.records.append(line)
                committed.add((line["row"]["step"], line["row"]["fit"]))
        for batch in batches:
            key = (int(batch.column("step")[0].as_py()), int(batch["fit"][0].as_py()))
            if key in committed:
                history.timesteps[key] = pa.Table.from_batches([batch])
    return history


def _read_lines(path):
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            problem = None
            if not text.endswith("\n"):
                problem = "a torn last line"
            else:
                try:
                    line = json.loads(text)
                except json.JSONDecodeError as error:
                    problem = f"line {number} unreadable ({error})"
            if problem is not None:
                _torn(path, f"{problem}; the {number - 1} lines before it are kept")
                return
            yield line


def _read_batches(path):
    """The record batches of an Arrow stream; a stream torn at its end (a
    crash inside the write) keeps the batches before the tear, and says
    so. A missing or empty file has none; other errors are raised."""
    batches = []
    if not path.exists() or path.stat().st_size == 0:
        return batches
    with pa.OSFile(str(path), "rb") as source:
        try:
            reader = pa.ipc.open_stream(source)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                if batch.num_rows:
                    batches.append(batch)
        except (pa.ArrowInvalid, OSError, EOFError) as error:
            # The file opened (an unreadable one raised above): a short or
            # garbled read is its end, torn.
            _torn(
                path,
                f"a torn Arrow batch ({error}); the {len(batches)} batches "
                "before it are kept",
            )
    return batches


def _torn(path, what):
    """Name what a crash cut off: the record being written then is lost."""
    warnings.warn(
        f"GradientMonitor journal {str(path)!r} ends in {what}. A process "
        "stopped inside a write: the record it was writing is dropped.",
        stacklevel=3,
    )
