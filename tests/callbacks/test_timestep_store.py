import gc
import pathlib
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from keras_seq.callbacks import timestep_store
from keras_seq.callbacks.timestep_store import TimestepStore

COLUMNS = ("grad_norm", "contribution", "valid_fraction")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the conftest fixture of that name: the store never touches
    Keras, and `keras.utils.clear_session()` after each of these tests would
    take ~0.2 s apiece (10 s for this file)."""
    yield


def _records(count=12, seed=0):
    """(step, layer, values, fit) with varied lengths and a missing column."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        length = int(rng.integers(1, 9))
        values = {
            "grad_norm": rng.random(length) * 10.0 ** rng.integers(-8, 3),
            "valid_fraction": rng.random(length),
        }
        if i % 3:  # every third record leaves `contribution` out
            values["contribution"] = rng.standard_normal(length)
        records.append((i // 2, f"rnn/level_{i % 2}", values, i // 5))
    return records


def _fill(store, records):
    for step, layer, values, fit in records:
        store.append(step, layer, values, fit=fit)


def _reference(records):
    """The long frame, row by row from the appended arrays."""
    rows = {k: [] for k in ("step", "fit", "layer", "timestep", *COLUMNS)}
    for step, layer, values, fit in records:
        length = len(values["grad_norm"])
        for t in range(length):
            rows["step"].append(step)
            rows["fit"].append(fit)
            rows["layer"].append(layer)
            rows["timestep"].append(t)
            for column in COLUMNS:
                value = values[column][t] if column in values else np.nan
                # Stored as float32, returned as float64.
                rows[column].append(float(np.float32(value)))
    frame = pd.DataFrame(rows)
    return frame.astype({"step": "int64", "fit": "int64", "timestep": "int64"})


def _parts(directory):
    return sorted(p.name for p in pathlib.Path(directory).glob("part-*.parquet"))


# -- frame --------------------------------------------------------------------


def test_frame_matches_reference_without_spilling():
    records = _records()
    store = TimestepStore(COLUMNS)
    _fill(store, records)
    assert store.spilled_rows == 0 and store.directory is None
    expected = _reference(records)
    pd.testing.assert_frame_equal(store.frame(), expected)
    assert list(store.frame().dtypes[["step", "timestep"]]) == ["int64", "int64"]
    assert (store.frame()[list(COLUMNS)].dtypes == "float64").all()


@pytest.mark.parametrize("max_rows", [1, 7, 16])
def test_frame_identical_with_spilling(tmp_path, max_rows):
    records = _records(count=30)
    store = TimestepStore(COLUMNS, directory=tmp_path, max_rows=max_rows)
    _fill(store, records)
    assert len(_parts(tmp_path)) >= 3
    assert 0 < store.spilled_rows <= store.rows
    unspilled = TimestepStore(COLUMNS)
    _fill(unspilled, records)
    pd.testing.assert_frame_equal(store.frame(), _reference(records))
    pd.testing.assert_frame_equal(store.frame(), unspilled.frame())


def test_frame_of_empty_store():
    frame = TimestepStore(COLUMNS).frame()
    assert list(frame.columns) == ["step", "layer", "timestep", *COLUMNS]
    assert len(frame) == 0
    assert frame["step"].dtype == "int64" and frame["timestep"].dtype == "int64"
    assert (frame[list(COLUMNS)].dtypes == "float64").all()


def test_meta_columns_follow_step_in_first_append_order():
    store = TimestepStore(("grad_norm",))
    store.append(3, "a", {"grad_norm": [1.0, 2.0]}, fit=1, epoch=4)
    store.append(4, "a", {"grad_norm": [3.0]}, epoch=5, fit=1)
    frame = store.frame()
    assert list(frame.columns) == ["step", "fit", "epoch", "layer", "timestep"] + [
        "grad_norm"
    ]
    assert frame["epoch"].tolist() == [4, 4, 5]
    assert frame["timestep"].tolist() == [0, 1, 0]


def test_meta_type_changing_between_parts_is_promoted(tmp_path):
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=2)
    store.append(0, "a", {"grad_norm": [1.0, 2.0, 3.0]}, fit=0)  # spilled: int
    store.append(1, "a", {"grad_norm": [4.0]}, fit=0.5)  # in memory: float
    frame = store.frame()
    assert frame["fit"].dtype == "float64"
    assert frame["fit"].tolist() == [0.0, 0.0, 0.0, 0.5]
    path = store.save(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_values_are_stored_as_float32():
    store = TimestepStore(("grad_norm",))
    store.append(0, "a", {"grad_norm": [0.1, 1e-45, 1e39]})
    values = store.frame()["grad_norm"].to_numpy()
    assert values[0] == float(np.float32(0.1)) and values[0] != 0.1
    assert values[2] == np.inf


# -- spilling -----------------------------------------------------------------


def test_spill_happens_exactly_when_the_cap_is_passed(tmp_path):
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=10)
    counts = []
    for step in range(7):
        store.append(step, "a", {"grad_norm": np.ones(5)})
        counts.append((len(_parts(tmp_path)), store.spilled_rows))
    # 5, 10 (= cap, kept), 15 > 10 -> part 0; 5, 10, 15 -> part 1; 5.
    assert counts == [(0, 0), (0, 0), (1, 15), (1, 15), (1, 15), (2, 30), (2, 30)]
    assert _parts(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]
    assert pd.read_parquet(tmp_path / "part-00001.parquet")["step"].tolist() == (
        [3] * 5 + [4] * 5 + [5] * 5
    )


def test_rows_in_memory_stay_bounded(tmp_path):
    rng = np.random.default_rng(1)
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=50)
    for step in range(200):
        length = int(rng.integers(1, 30))
        store.append(step, "a", {"grad_norm": np.ones(length)})
        assert store.rows - store.spilled_rows <= store.max_rows
    assert len(_parts(tmp_path)) > 10
    assert len(store.frame()) == store.rows


def test_a_record_longer_than_the_cap_is_spilled_at_once(tmp_path):
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=3)
    store.append(0, "a", {"grad_norm": np.arange(5.0)})
    assert store.spilled_rows == 5 and _parts(tmp_path) == ["part-00000.parquet"]
    assert store.frame()["grad_norm"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_counts_and_layers():
    records = _records(count=9)
    store = TimestepStore(COLUMNS, max_rows=5)
    _fill(store, records)
    assert len(store) == 9
    assert store.rows == sum(len(v["grad_norm"]) for _, _, v, _ in records)
    assert store.layers == ["rnn/level_0", "rnn/level_1"]
    store.close()


# -- directories --------------------------------------------------------------


def test_temporary_directory_removed_on_close():
    store = TimestepStore(("grad_norm",), max_rows=2)
    store.append(0, "a", {"grad_norm": [1.0]})
    assert store.directory is None  # created lazily
    store.append(1, "a", {"grad_norm": [1.0, 2.0]})
    directory = store.directory
    assert directory.name.startswith("keras_seq_timesteps_")
    assert _parts(directory) == ["part-00000.parquet"]
    store.close()
    assert not directory.exists() and store.directory is None
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="TimestepStore is closed"):
        store.append(2, "a", {"grad_norm": [1.0]})
    with pytest.raises(RuntimeError, match="TimestepStore is closed"):
        store.frame()
    assert store.latest("a")["grad_norm"].tolist() == [1.0, 2.0]


def test_temporary_directory_removed_on_garbage_collection():
    store = TimestepStore(("grad_norm",), max_rows=1)
    store.append(0, "a", {"grad_norm": [1.0, 2.0]})
    directory = store.directory
    assert directory.is_dir()
    del store
    gc.collect()
    assert not directory.exists()


def test_context_manager_closes():
    with TimestepStore(("grad_norm",), max_rows=1) as store:
        store.append(0, "a", {"grad_norm": [1.0, 2.0]})
        directory = store.directory
    assert not directory.exists()


def test_user_directory_created_and_kept(tmp_path):
    directory = tmp_path / "deep" / "timesteps"
    store = TimestepStore(("grad_norm",), directory=directory, max_rows=1)
    assert store.directory == directory and not directory.exists()
    store.append(0, "a", {"grad_norm": [1.0, 2.0]})
    store.close()
    del store
    gc.collect()
    assert _parts(directory) == ["part-00000.parquet"]
    assert pd.read_parquet(directory / "part-00000.parquet")["step"].tolist() == [0, 0]


def test_user_directory_already_holding_parts_is_refused(tmp_path):
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=1)
    store.append(0, "a", {"grad_norm": [1.0, 2.0]})
    with pytest.raises(ValueError, match="`directory` must not already hold"):
        TimestepStore(("grad_norm",), directory=tmp_path)


def test_leftover_tmp_file_is_ignored(tmp_path):
    records = _records(count=10)
    store = TimestepStore(COLUMNS, directory=tmp_path, max_rows=8)
    _fill(store, records[:5])
    parts = len(_parts(tmp_path))
    assert parts >= 1
    # What a process killed while writing the next part leaves behind.
    (tmp_path / f"part-{parts:05d}.parquet.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / "part-00000.parquet.tmp").write_bytes(b"junk")
    pd.testing.assert_frame_equal(store.frame(), _reference(records[:5]))
    _fill(store, records[5:])  # the next part overwrites the half file
    pd.testing.assert_frame_equal(store.frame(), _reference(records))


def test_failed_write_keeps_the_rows_in_memory(tmp_path, monkeypatch):
    store = TimestepStore(("grad_norm",), directory=tmp_path, max_rows=2)
    store.append(0, "a", {"grad_norm": [1.0, 2.0]})

    def half_write(table, where, **options):
        pathlib.Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(timestep_store.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        store.append(1, "a", {"grad_norm": [3.0]})
    assert list(tmp_path.iterdir()) == []
    assert store.spilled_rows == 0 and store.rows == 3
    assert store.frame()["grad_norm"].tolist() == [1.0, 2.0, 3.0]
    monkeypatch.undo()
    store.append(2, "a", {"grad_norm": [4.0]})
    assert store.spilled_rows == 4 and _parts(tmp_path) == ["part-00000.parquet"]
    assert store.frame()["step"].tolist() == [0, 0, 1, 2]


# -- recent and latest ----------------------------------------------------------


def test_recent_window_and_nan_padding(tmp_path):
    store = TimestepStore(COLUMNS, directory=tmp_path, max_rows=4, recent=3)
    lengths = [2, 5, 3, 1, 4]
    for step, length in enumerate(lengths):
        grad = np.arange(length, dtype=np.float64) + 10 * step
        store.append(step, "a", {"grad_norm": grad, "contribution": -grad})
        store.append(step, "b", {"grad_norm": np.full(6, 7.0)})
    assert store.spilled_rows > 0  # the window does not depend on spilling
    steps, matrix = store.recent("a")
    assert steps.dtype == np.int64 and steps.tolist() == [2, 3, 4]
    assert matrix.dtype == np.float64
    expected = np.array(
        [
            [20.0, 21.0, 22.0, np.nan],
            [30.0, np.nan, np.nan, np.nan],
            [40.0, 41.0, 42.0, 43.0],
        ]
    )
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(store.recent("a", "contribution")[1], -expected)
    assert np.isnan(store.recent("a", "valid_fraction")[1]).all()
    np.testing.assert_array_equal(store.recent("b")[1], np.full((3, 6), 7.0))


def test_recent_of_unknown_layer_is_empty():
    store = TimestepStore(COLUMNS)
    store.append(0, "a", {"grad_norm": [1.0]})
    steps, matrix = store.recent("missing")
    assert steps.shape == (0,) and steps.dtype == np.int64
    assert matrix.shape == (0, 0) and matrix.dtype == np.float64


def test_recent_zero_keeps_no_window_but_latest():
    store = TimestepStore(COLUMNS, recent=0)
    store.append(0, "a", {"grad_norm": [1.0, 2.0]})
    assert store.recent("a")[1].shape == (0, 0)
    assert store.latest("a")["grad_norm"].tolist() == [1.0, 2.0]


def test_latest():
    store = TimestepStore(COLUMNS, max_rows=1)
    assert store.latest("a") is None
    store.append(0, "a", {"grad_norm": [1.0, 2.0], "contribution": [3.0, 4.0]})
    store.append(1, "b", {"grad_norm": [9.0]})
    store.append(2, "a", {"grad_norm": [5.0, 6.0, 0.5], "valid_fraction": [1] * 3})
    latest = store.latest("a")
    assert list(latest) == list(COLUMNS)
    assert latest["grad_norm"].dtype == np.float64
    assert latest["grad_norm"].tolist() == [5.0, 6.0, 0.5]
    assert np.isnan(latest["contribution"]).all() and latest["contribution"].size == 3
    assert latest["valid_fraction"].tolist() == [1.0, 1.0, 1.0]
    assert store.latest("b")["grad_norm"].tolist() == [9.0]
    assert store.latest("c") is None
    store.close()


# -- save -----------------------------------------------------------------------


@pytest.mark.parametrize("max_rows", [5, 10_000])
def test_save_round_trips(tmp_path, max_rows):
    records = _records(count=20)
    store = TimestepStore(COLUMNS, directory=tmp_path / "parts", max_rows=max_rows)
    _fill(store, records)
    expected = _reference(records)
    path = store.save(str(tmp_path / "timesteps.parquet"))
    assert path == tmp_path / "timesteps.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected)
    csv = store.save(tmp_path / "timesteps.csv")
    pd.testing.assert_frame_equal(pd.read_csv(csv), expected)
    assert csv.read_text() == expected.to_csv(index=False)
    assert not list(tmp_path.glob("*.tmp"))


def test_save_empty_store(tmp_path):
    store = TimestepStore(COLUMNS)
    store.save(tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().strip() == (
        "step,layer,timestep,grad_norm,contribution,valid_fraction"
    )
    frame = pd.read_parquet(store.save(tmp_path / "empty.parquet"))
    assert list(frame.columns) == ["step", "layer", "timestep", *COLUMNS]
    assert len(frame) == 0


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"columns": "grad_norm"}, TypeError, r"`columns` must be a tuple or list"),
        ({"columns": ("a", 1)}, TypeError, r"`columns` must be a tuple or list"),
        ({"columns": ()}, ValueError, r"`columns` must name at least one"),
        ({"columns": ("a", "a")}, ValueError, r"`columns` must hold distinct"),
        ({"columns": ("step",)}, ValueError, r"`columns` must hold distinct"),
        ({"directory": 3}, TypeError, r"`directory` must be a path"),
        ({"max_rows": 0}, ValueError, r"`max_rows` must be an integer >= 1\. "),
        ({"max_rows": 1.5}, TypeError, r"Received: max_rows=1\.5 \(of type float"),
        ({"max_rows": True}, TypeError, r"`max_rows` must be an integer >= 1"),
        ({"recent": -1}, ValueError, r"`recent` must be an integer >= 0\. .*=-1"),
        ({"recent": "8"}, TypeError, r"`recent` must be an integer >= 0"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    kwargs = {"columns": COLUMNS, **kwargs}
    with pytest.raises(error, match=match):
        TimestepStore(**kwargs)


@pytest.mark.parametrize(
    "args, meta, error, match",
    [
        (("1", "a", {"grad_norm": [1.0]}), {}, TypeError, r"`step` must be an int"),
        ((True, "a", {"grad_norm": [1.0]}), {}, TypeError, r"`step` must be an int"),
        ((1, 0, {"grad_norm": [1.0]}), {}, TypeError, r"`layer` must be a str"),
        ((1, "a", [1.0]), {}, TypeError, r"`values` must be a dict"),
        (
            (1, "a", {"grad_norm": [1.0], "norm": [1.0], "x": [2.0]}),
            {},
            ValueError,
            r"unknown columns \['norm', 'x'\]",
        ),
        ((1, "a", {}), {}, ValueError, r"`values` must hold at least one of"),
        (
            (1, "a", {"grad_norm": [1.0, 2.0], "contribution": [1.0]}),
            {},
            ValueError,
            r"equal length .*'grad_norm': 2, 'contribution': 1",
        ),
        ((1, "a", {"grad_norm": [[1.0]]}), {}, ValueError, r"1-D array.*\(1, 1\)"),
        ((1, "a", {"grad_norm": 2.0}), {}, ValueError, r"1-D array"),
        ((1, "a", {"grad_norm": []}), {}, ValueError, r"at least one time step"),
        ((1, "a", {"grad_norm": [1.0]}), {"tag": [1]}, TypeError, r"`tag` must be"),
        (
            (1, "a", {"grad_norm": [1.0]}),
            {"timestep": 1},
            ValueError,
            r"Meta keys \['timestep'\] clash",
        ),
    ],
)
def test_append_errors(args, meta, error, match):
    store = TimestepStore(COLUMNS)
    with pytest.raises(error, match=match):
        store.append(*args, **meta)
    assert len(store) == 0 and store.rows == 0 and store.layers == []


def test_meta_keys_must_not_change():
    store = TimestepStore(COLUMNS)
    store.append(0, "a", {"grad_norm": [1.0]}, fit=0)
    with pytest.raises(ValueError, match=r"same meta keys .*\['fit'\]. .*\['epoch'\]"):
        store.append(1, "a", {"grad_norm": [1.0]}, epoch=0)
    with pytest.raises(ValueError, match=r"Received: meta keys \[\]"):
        store.append(1, "a", {"grad_norm": [1.0]})
    assert len(store) == 1


def test_recent_rejects_unknown_column():
    store = TimestepStore(("norm",))
    with pytest.raises(ValueError, match=r"`column` must be one of \['norm'\]"):
        store.recent("a")


def test_save_rejects_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"`path` must end in \.csv or \.parquet"):
        TimestepStore(COLUMNS).save(tmp_path / "frame.json")


# -- memory -----------------------------------------------------------------------


def test_memory_stays_bounded_on_a_long_run(tmp_path):
    # 10,000 recorded steps x 2 sublayers x T=100 = 2 million rows (24 MB of
    # float32 values alone). Measured peak of traced memory: about 11 MB
    # (the in-memory rows, about 2.4 MB of values, plus the columns built
    # while writing a part); a list of the arrays would hold over 30 MB.
    # tracemalloc sees numpy buffers and Python objects, not Arrow's pool.
    rng = np.random.default_rng(0)
    ones = np.ones(100, np.float32)
    store = TimestepStore(COLUMNS, directory=tmp_path, max_rows=200_000)
    tracemalloc.start()
    try:
        for step in range(10_000):
            for layer in ("rnn/level_0", "rnn/level_1"):
                values = {
                    "grad_norm": rng.random(100, dtype=np.float32),
                    "contribution": rng.random(100, dtype=np.float32),
                    "valid_fraction": ones,
                }
                store.append(step, layer, values, fit=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.rows == 2_000_000 and len(store) == 20_000
    assert store.rows - store.spilled_rows <= 200_000
    assert len(_parts(tmp_path)) == 9  # a part holds 2001 records
    assert peak < 25e6, f"peak traced memory {peak / 1e6:.1f} MB"
