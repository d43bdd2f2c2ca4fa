"""Rows of a long run in bounded memory, spilling to Parquet."""

import collections.abc
import os
import pathlib
import shutil
import tempfile
import weakref

import pandas as pd

_PART = "part-{:05d}.parquet"


class RowStore(collections.abc.Sequence):
    """A list of row dicts whose memory stays bounded.

    At most `max_rows` rows stay in memory: when an append brings more, the
    older half is written to one Parquet part in `directory` (written to
    `<part>.tmp` and renamed when complete) and dropped from memory. The
    store reads as a sequence of every row appended (`len`, indexing,
    slicing, iteration; spilled rows come back from their parts, their
    numbers as numpy scalars) and as one DataFrame (`frame()`).

    Args:
        directory: Optional path for the parts, created on the first spill;
            None: a private temporary directory, removed when the store is
            garbage-collected.
        max_rows: Integer >= 2, rows kept in memory.
    """

    def __init__(self, directory=None, max_rows=1000):
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
            raise ValueError(
                "Argument `max_rows` must be an integer >= 2. "
                f"Received: max_rows={max_rows!r}"
            )
        self.max_rows = max_rows
        self._directory = None if directory is None else pathlib.Path(directory)
        self._memory = []
        self._parts = []  # (path, rows)
        self._spilled = 0
        self._cleanup = None

    def append(self, row):
        self._memory.append(row)
        if len(self._memory) > self.max_rows:
            self._spill(len(self._memory) // 2)

    def _spill(self, count):
        if self._directory is None:
            self._directory = pathlib.Path(tempfile.mkdtemp(prefix="keras_seq_rows_"))
            self._cleanup = weakref.finalize(
                self, shutil.rmtree, str(self._directory), True
            )
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / _PART.format(len(self._parts))
        rows, self._memory = self._memory[:count], self._memory[count:]
        temporary = path.with_name(path.name + ".tmp")
        pd.DataFrame.from_records(rows).to_parquet(temporary, index=False)
        os.replace(temporary, path)
        self._parts.append((path, len(rows)))
        self._spilled += len(rows)

    @property
    def spilled_rows(self):
        return self._spilled

    def __len__(self):
        return self._spilled + len(self._memory)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("RowStore index out of range")
        if index >= self._spilled:
            return self._memory[index - self._spilled]
        for path, rows in self._parts:
            if index < rows:
                return pd.read_parquet(path).iloc[index].to_dict()
            index -= rows
        raise IndexError(index)  # unreachable: the parts hold _spilled rows

    def __iter__(self):
        for path, _ in self._parts:
            yield from pd.read_parquet(path).to_dict("records")
        yield from list(self._memory)

    def __bool__(self):
        return len(self) > 0

    def frame(self):
        """Every row, in append order, as one DataFrame."""
        frames = [pd.read_parquet(path) for path, _ in self._parts]
        if self._memory:
            frames.append(pd.DataFrame.from_records(self._memory))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def __repr__(self):
        return (
            f"<RowStore {len(self)} rows, {len(self._memory)} in memory, "
            f"{self._spilled} in {len(self._parts)} parts>"
        )
