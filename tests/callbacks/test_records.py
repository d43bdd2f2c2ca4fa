"""The monitor's records keep bounded memory and lose nothing."""

import gc

import keras
import numpy as np
import pandas as pd
import pytest

import keras_seq
from keras_seq import diagnostics
from keras_seq.callbacks import GradientMonitor, records
from keras_seq.callbacks.row_store import RowStore


def test_row_store_spills_and_reads_back_every_row(tmp_path):
    rows = [{"step": i, "loss": 0.5 * i, "name": f"r{i}"} for i in range(25)]
    store = RowStore(tmp_path / "rows", max_rows=4)
    for row in rows:
        store.append(row)
        assert len(store._memory) <= 4
    assert len(store) == 25 and store.spilled_rows >= 21
    assert sorted(p.name for p in (tmp_path / "rows").iterdir())[0] == (
        "part-00000.parquet"
    )
    assert [dict(r) for r in store] == rows
    assert store[3] == rows[3] and store[-1] == rows[-1] and store[-25] == rows[0]
    assert [r["step"] for r in store[5:8]] == [5, 6, 7]
    pd.testing.assert_frame_equal(store.frame(), pd.DataFrame(rows))
    with pytest.raises(IndexError):
        store[25]


def test_row_store_temporary_parts_go_with_the_store():
    store = RowStore(max_rows=2)
    for i in range(5):
        store.append({"step": i})
    directory = store._directory
    assert directory.is_dir()
    del store
    gc.collect()
    assert not directory.exists()


def test_row_store_rejects_a_bad_cap():
    with pytest.raises(ValueError, match=r"`max_rows` must be an integer >= 2"):
        RowStore(max_rows=1)


@pytest.mark.parametrize("seed", range(6))
def test_model_norms_give_the_explosion_rule_what_all_norms_give(seed):
    rng = np.random.default_rng(seed)
    norms = list(np.exp(rng.normal(size=60)))
    # Episodes of explosion, NaN steps and a late blow-up.
    norms[20:26] = [1e3] * 6
    norms[rng.integers(0, 60)] = np.nan
    norms[-4:] = [1e4, 2e4, 3e4, np.inf if seed % 2 else 5e4]
    kept = records._ModelNorms()
    for i, norm in enumerate(norms):
        kept.add(norm)
        expected = diagnostics.verdicts.explosion_evidence(norms[: i + 1])
        assert diagnostics.verdicts.explosion_evidence(kept.view()) == expected, i
        finite = [n for n in norms[: i + 1] if np.isfinite(n)]
        if finite:
            assert kept.start() == np.median(finite[:5])
    assert len(kept.view()) <= 12  # bounded, whatever the run's length


def _fit(every=1, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras_seq.Sequential(
        [
            keras.Input((5, 2)),
            keras_seq.layers.SharedRNN(3, depth=2, name="rnn"),
            keras.layers.Dense(1, name="head"),
        ],
        name="model",
    )
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(28, 5, 2)).astype("float32")
    y = rng.normal(size=(28, 1)).astype("float32")
    monitor = GradientMonitor(every=every)
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=[monitor])
    return monitor


def test_capped_records_are_the_uncapped_ones(monkeypatch):
    full = _fit()
    monkeypatch.setattr(records, "MAX_RECORDS", 4)
    monkeypatch.setattr(records, "MAX_VARIABLE_ROWS", 8)
    monkeypatch.setattr(records, "MAX_TIMESTEP_ROWS", 12)
    capped = _fit()
    assert len(capped.records) == 21 and len(capped.records._memory) <= 4
    assert capped._records._variables.spilled_rows > 0
    pd.testing.assert_frame_equal(capped.to_frame(), full.to_frame())
    pd.testing.assert_frame_equal(capped.variable_frame(), full.variable_frame())
    pd.testing.assert_frame_equal(capped.timestep_frame(), full.timestep_frame())
    assert [r["step"] for r in capped.records] == list(range(21))
    assert capped.report() == full.report()
