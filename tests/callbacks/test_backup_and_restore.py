"""keras_seq.callbacks.BackupAndRestore: a backup that loads after a kill at
any instant, resumes at the batch, and agrees with the monitor's journal.

The kill storm (storm.py) runs the README's crash recipe in subprocesses
and SIGKILLs them at random instants: about a minute and a half, on
TensorFlow (its bit-for-bit check uses TensorFlow's op determinism). The other
tests interrupt `fit` in this process (an exception at a batch end leaves
the backup as a kill there would) and start it again with a fresh model and
fresh callbacks, as the same command would.
"""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq.callbacks import backup_and_restore

_SPEC = importlib.util.spec_from_file_location(
    "storm", pathlib.Path(__file__).with_name("storm.py")
)
storm = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(storm)


# -- the kill storm ----------------------------------------------------------

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the storm's workers use TensorFlow's op determinism",
)


@pytest.fixture(scope="module")
def stormed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("storm")
    reference = storm.uninterrupted(workdir / "uninterrupted")
    counts = storm.storm(workdir / "killed", 3, reference, np.random.default_rng(0))
    return counts, storm.compare(reference, storm.results(workdir / "killed"))


@tensorflow_only
def test_storm_every_restart_succeeds(stormed):
    counts, _ = stormed
    assert counts["restarts_failed"] == 0, counts["failures"]
    assert counts["kills"] == 3, counts["log"]


@tensorflow_only
def test_storm_loses_doubles_and_adds_no_step(stormed):
    _, figures = stormed
    assert figures["steps_lost"] == 0
    assert figures["steps_lost_without_a_word"] == 0
    assert figures["steps_doubled"] == 0
    assert figures["steps_beyond_plan"] == 0


@tensorflow_only
def test_storm_ends_as_the_uninterrupted_run(stormed):
    # Bit for bit: weights, the monitor's records, the per-time-step rows
    # and TensorBoard's view of the run.
    _, figures = stormed
    assert figures == {
        **figures,
        "weights_equal": True,
        "records_equal": True,
        "timestep_rows_equal": True,
        "tensorboard_equal": True,
    }


# -- in one process ----------------------------------------------------------


class Interrupt(keras.callbacks.Callback):
    """Raises at the `at`-th batch end: the backup is left as a kill there
    would leave it."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def _data(nan=True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 3)).astype("float32")
    y = rng.normal(size=(40, 1)).astype("float32")
    if nan:
        x[13, 2, 1] = np.nan  # batch 1 of every epoch: skipped by the monitor
    return x, y


def _model(steps_per_execution=1, gru=True):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 3)),
            keras_seq.layers.SharedRNN(5, return_sequences=gru, name="rnn"),
            *([keras.layers.GRU(4, name="gru")] if gru else []),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.01), "mse", steps_per_execution=steps_per_execution
    )
    return model


def _train(
    directory, interrupts, order="backup first", save_freq=2, spe=1, gru=True, **kw
):
    """Fit 2 epochs of 5 batches, interrupted at each batch count in
    `interrupts` (then started again, as the same command would)."""
    x, y = _data()
    for at in [*interrupts, None]:
        model = _model(spe, gru)
        monitor = keras_seq.callbacks.GradientMonitor(
            log_dir=directory / "logs", every=3, on_nan="skip"
        )
        backup = keras_seq.callbacks.BackupAndRestore(
            directory / "backup", save_freq=save_freq, **kw
        )
        callbacks = [backup, monitor] if order == "backup first" else [monitor, backup]
        if at is not None:
            callbacks.append(Interrupt(at))
        try:
            history = model.fit(
                x,
                y,
                batch_size=8,
                epochs=2,
                shuffle=False,
                verbose=0,
                callbacks=callbacks,
            )
        except KeyboardInterrupt:
            continue
    return model, monitor, history


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plain"), [])


def _assert_same_run(expected, got):
    (model_a, monitor_a, _), (model_b, monitor_b, _) = expected, got
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(model_a.optimizer.iterations) == int(model_b.optimizer.iterations)
    assert monitor_a.skipped_steps == monitor_b.skipped_steps
    frame_a, frame_b = monitor_a.to_frame(), monitor_b.to_frame()
    assert frame_a["step"].tolist() == frame_b["step"].tolist()
    np.testing.assert_array_equal(
        frame_a["global_norm"].to_numpy(), frame_b["global_norm"].to_numpy()
    )
    rows_a, rows_b = monitor_a.timestep_frame(), monitor_b.timestep_frame()
    assert rows_a[["step", "layer", "timestep"]].equals(
        rows_b[["step", "layer", "timestep"]]
    )
    np.testing.assert_array_equal(rows_a["grad_norm"], rows_b["grad_norm"])


@pytest.mark.parametrize("order", ["backup first", "monitor first"])
def test_resumes_at_the_batch_in_any_callback_order(tmp_path, uninterrupted, order):
    # Interrupted mid-epoch twice (after the backups at batch 2 of epoch 0
    # and batch 0 of epoch 1), in both callback orders: the run ends as one
    # that was never interrupted, with every step recorded once.
    got = _train(tmp_path, [3, 4], order=order)
    _assert_same_run(uninterrupted, got)
    assert got[1].skipped_steps == 2  # one NaN batch per epoch


class Counting(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.updates = []

    def on_train_batch_end(self, batch, logs=None):
        self.updates.append(int(self.model.optimizer.iterations))


def test_steps_per_execution(tmp_path, tmp_path_factory):
    # Executions of 2 batches (the last of each epoch a short one).
    reference = _train(tmp_path_factory.mktemp("spe"), [], spe=2, gru=False)
    _assert_same_run(reference, _train(tmp_path, [2, 3], spe=2, gru=False))


def test_passes_over_what_the_backup_holds_and_trains_the_rest(tmp_path):
    # Interrupted after batch 3 with backups every 2: the resumed fit
    # passes over batches 0 and 1 (no update), trains batch 2 again, then
    # the rest of the epoch and the next one; no backup while passing over.
    x, y = _data(nan=False)
    backup = keras_seq.callbacks.BackupAndRestore(tmp_path, save_freq=2)
    with pytest.raises(KeyboardInterrupt):
        _model(gru=False).fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[backup, Interrupt(3)],
        )
    counting = Counting()
    history = _model(gru=False).fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path, 2), counting],
    )
    assert counting.updates == [2, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert history.epoch == [0, 1]


def test_a_kill_inside_the_weights_write_keeps_the_last_unit(tmp_path, monkeypatch):
    x, y = _data(nan=False)
    model = _model(gru=False)
    backup = keras_seq.callbacks.BackupAndRestore(tmp_path, save_freq=1)
    saves = []
    original = keras.Model.save_weights

    def dying_save(self, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 3:
            with open(filepath, "wb") as torn:
                torn.write(b"\x89HDF\r\n")  # half a file, then the process dies
            raise KeyboardInterrupt
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", dying_save)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[backup]
        )
    monkeypatch.undo()
    pointer = json.loads((tmp_path / backup_and_restore.POINTER).read_text())
    assert (pointer["epoch"], pointer["batch"]) == (0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        backup_and_restore.POINTER,
        pointer["weights"],
    ]
    model = _model(gru=False)
    counting = Counting()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path), counting],
    )
    assert counting.updates == [2, 2, 3, 4, 5]  # batches 2, 3, 4 of 5 trained


def test_double_checkpoint_falls_back_on_an_unreadable_unit(tmp_path):
    x, y = _data(nan=False)
    backup = keras_seq.callbacks.BackupAndRestore(
        tmp_path, save_freq=1, double_checkpoint=True
    )
    with pytest.raises(KeyboardInterrupt):
        _model(gru=False).fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[backup, Interrupt(3)],
        )
    pointer = json.loads((tmp_path / backup_and_restore.POINTER).read_text())
    assert pointer["previous"]["batch"] == 2
    (tmp_path / pointer["weights"]).write_bytes(b"not a weights file")
    counting = Counting()
    with pytest.warns(UserWarning, match="restoring the previous one"):
        _model(gru=False).fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path), counting],
        )
    assert counting.updates == [2, 2, 3, 4, 5]  # from batch 2, not 3


def test_a_finished_fit_deletes_the_backup_or_keeps_it(tmp_path):
    x, y = _data()
    model = _model(gru=False)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path / "a", 1)],
    )
    assert not (tmp_path / "a").exists()
    kept = keras_seq.callbacks.BackupAndRestore(
        tmp_path / "b", 1, delete_checkpoint=False
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kept])
    # The same command again: resumes at the end, trains nothing, and the
    # monitor's frames still show the run.
    model = _model(gru=False)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kept])
    assert history.history == {}
    # And a later fit without the backup starts at epoch 0, as asked.
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1


def test_restores_the_epoch_through_kerass_model_attribute(tmp_path):
    # keras_seq sets the model's `_initial_epoch`, as Keras's own callback
    # does (there is no public way): this fails if Keras renames it.
    x, y = _data()
    backup = keras_seq.callbacks.BackupAndRestore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _model(gru=False).fit(
            x, y, batch_size=8, epochs=3, verbose=0, callbacks=[backup, Interrupt(12)]
        )
    history = _model(gru=False).fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path)],
    )
    assert history.epoch == [2]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"backup_dir": ""}, ValueError, "backup_dir.*Received: backup_dir=''"),
        ({"backup_dir": None}, ValueError, "backup_dir.*Received: backup_dir=None"),
        ({"backup_dir": "b", "save_freq": 0}, ValueError, "save_freq=0"),
        ({"backup_dir": "b", "save_freq": "batch"}, ValueError, "save_freq='batch'"),
        ({"backup_dir": "b", "save_freq": True}, ValueError, "save_freq=True"),
        ({"backup_dir": "b", "double_checkpoint": 1}, TypeError, "double_checkpoint=1"),
        ({"backup_dir": "b", "delete_checkpoint": "no"}, TypeError, "delete_che"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_seq.callbacks.BackupAndRestore(**kwargs)


def test_a_pointer_it_did_not_write_is_named(tmp_path):
    (tmp_path / backup_and_restore.POINTER).write_text("{'epoch': 1")
    x, y = _data()
    with pytest.raises(ValueError, match="latest.json.*backup_dir"):
        _model(gru=False).fit(
            x, y, verbose=0, callbacks=[keras_seq.callbacks.BackupAndRestore(tmp_path)]
        )


def test_records_missing_from_the_journal_are_named(tmp_path):
    # A journal damaged after the backup (its last records removed): the
    # resumed monitor names the steps the backup stood for but the journal
    # lacks, in `lost_steps`, the report, TensorBoard and the next restart.
    x, y = _data(nan=False)

    def fit(interrupt=None):
        monitor = keras_seq.callbacks.GradientMonitor(
            log_dir=tmp_path / "logs", every=2
        )
        callbacks = [keras_seq.callbacks.BackupAndRestore(tmp_path / "b", 1), monitor]
        with pytest.raises(KeyboardInterrupt) if interrupt else _nothing():
            _model(gru=False).fit(
                x,
                y,
                batch_size=8,
                epochs=2,
                shuffle=False,
                verbose=0,
                callbacks=callbacks + ([Interrupt(interrupt)] if interrupt else []),
            )
        return monitor

    fit(interrupt=6)  # steps 0..5 trained, records 0, 2, 4; backup at 6
    segment = sorted((tmp_path / "logs" / "gradients" / "state").glob("*.jsonl"))[0]
    lines = segment.read_text().splitlines(keepends=True)
    kept = [t for t in lines if not ('"kind": "record"' in t and '"step": 4,' in t)]
    assert len(kept) == len(lines) - 1
    segment.write_text("".join(kept))
    with pytest.warns(UserWarning, match=r"step\(s\) 4 are lost"):
        monitor = fit(interrupt=3)
    assert monitor.lost_steps == [4]
    assert "Records lost: step(s) 4" in monitor.report()
    monitor = fit()  # the next restart still names it
    assert monitor.lost_steps == [4]
    assert monitor.to_frame()["step"].tolist() == [0, 2, 6, 8]
    events = storm.plugin_event_accumulator.EventAccumulator(
        str(tmp_path / "logs" / "gradients"), size_guidance={"tensors": 0}
    )
    events.Reload()
    assert "gradients/lost_steps" in events.Tags()["tensors"]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_the_same_command_after_a_finished_run_keeps_the_frames(tmp_path):
    x, y = _data(nan=False)

    def command():
        model = _model(gru=False)
        monitor = keras_seq.callbacks.GradientMonitor(
            log_dir=tmp_path / "logs", every=3
        )
        backup = keras_seq.callbacks.BackupAndRestore(
            tmp_path / "b", 2, delete_checkpoint=False
        )
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[backup, monitor],
        )
        return model, monitor, None

    first = command()
    again = command()  # nothing left to train
    assert int(again[0].optimizer.iterations) == 10
    _assert_same_run(first, again)
