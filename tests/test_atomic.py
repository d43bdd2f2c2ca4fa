"""keras_seq._atomic: files written whole or not at all, and the writers
that use it (run folders, the monitor's exports)."""

import os

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_seq import _atomic  # noqa: E402


def test_a_writer_that_dies_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with _atomic.replacing(path) as partial:
            partial.write_text("half of the ne")
            raise KeyboardInterrupt  # killed mid-write
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_the_new_file_replaces_the_old_in_one_step(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("old")
    replaced = []
    real_replace = os.replace

    def watching_replace(source, target):
        # Until the rename, readers still see the old content.
        assert pathlib_read(target) == "old"
        replaced.append((source, target))
        real_replace(source, target)

    os.replace = watching_replace
    try:
        _atomic.write_text(path, "new", durable=True)
    finally:
        os.replace = real_replace
    assert path.read_text() == "new" and len(replaced) == 1


def pathlib_read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_partials_keep_the_name_ending_writers_check(tmp_path):
    # Keras's `.keras` saver and matplotlib read the ending of the path.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with _atomic.replacing(tmp_path / "model.keras") as partial:
        model.save(partial)
    with _atomic.replacing(tmp_path / "m.weights.h5") as partial:
        model.save_weights(partial)
    figure = plt.figure()
    with _atomic.replacing(tmp_path / "f.png") as partial:
        figure.savefig(partial)
    plt.close(figure)
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "f.png",
        "m.weights.h5",
        "model.keras",
    ]


def test_remove_partials(tmp_path):
    (tmp_path / f"{_atomic.PARTIAL_PREFIX}12-unit.weights.h5").write_bytes(b"x")
    (tmp_path / "latest.json").write_text("{}")
    _atomic.remove_partials(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.json"]
    _atomic.remove_partials(tmp_path / "missing")  # nothing to do


def test_a_run_killed_while_saving_its_model_keeps_no_torn_file(tmp_path, monkeypatch):
    import keras_seq.runs as runs

    (tmp_path / "run").mkdir()
    run = runs.Run("t", tmp_path / "run", argparse_namespace())
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    def dying_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as torn:
            torn.write(b"PK\x03\x04")  # the start of a zip, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run.save(model)
    assert not any(run.dir.rglob("*.keras"))
    assert not any(run.dir.rglob(f"{_atomic.PARTIAL_PREFIX}*"))


def argparse_namespace():
    import argparse

    return argparse.Namespace(epochs=1)
