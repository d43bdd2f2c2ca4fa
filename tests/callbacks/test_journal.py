"""The monitor's crash journal on its own: segments, purging and torn ends
(the real SIGKILL runs are in test_gradient_monitor_resume.py)."""

import numpy as np
import pytest

from keras_seq.callbacks import journal

COLUMNS = ("grad_norm", "contribution")


def _record(writer, step, fit=0, length=3):
    row = {"step": step, "fit": fit, "loss": float(step), "decay": float("nan")}
    values = {"grad_norm": np.arange(length) + step, "contribution": np.ones(length)}
    writer.record(row, ["rnn/kernel"], ["rnn"], [1.5], False, {"rnn/level_0": values})


def test_resume_step_maps_iterations_through_skipped_steps():
    history = journal.History()
    # Step 0 applied; steps 1 and 2 skipped (non-finite); then applied again.
    history.entries = [(0, 0), (3, 1)]
    assert history.resume_step(0) == 0
    # After one applied update the skipped steps are done too: next is 3.
    assert history.resume_step(1) == 3
    assert history.resume_step(4) == 6
    assert journal.History().resume_step(5) is None


def test_a_later_start_drops_what_earlier_segments_hold_from_its_step(tmp_path):
    first = journal.Journal(tmp_path, COLUMNS)
    first.start(0, 0, 0)
    for step in range(5):
        _record(first, step)
    first.nonfinite(3, 3, 1, skipped=1, location=("rnn/level_0", 2))
    first.offset(4, 3)
    first.close()
    second = journal.Journal(tmp_path, COLUMNS)
    second.start(2, 2, 1)
    _record(second, 2, fit=1)
    second.close()

    history = journal.load(tmp_path)
    assert [(r["row"]["step"], r["row"]["fit"]) for r in history.records] == [
        (0, 0),
        (1, 0),
        (2, 1),
    ]
    assert history.nonfinite == []
    assert history.entries == [(0, 0), (2, 2)]
    assert history.last_fit == 1
    assert sorted(history.timesteps) == [(0, 0), (1, 0), (2, 1)]
    table = history.timesteps[(2, 1)]
    np.testing.assert_array_equal(table["grad_norm"].to_numpy(), [2, 3, 4])
    np.testing.assert_array_equal(table["timestep"].to_numpy(), [0, 1, 2])
    assert np.isnan(history.records[0]["row"]["decay"])


@pytest.mark.parametrize("cut", [1, 25])
def test_a_torn_end_keeps_everything_committed_before_it(tmp_path, cut):
    writer = journal.Journal(tmp_path, COLUMNS)
    writer.start(0, 0, 0)
    _record(writer, 0)
    _record(writer, 1)
    writer._lines.flush()
    writer._rows.flush()
    lines = tmp_path / "segment-00000.jsonl"
    rows = tmp_path / "segment-00000.arrows"
    # A crash inside the write of step 1: half its line, part of its rows.
    text = lines.read_text()
    lines.write_text(text[: text.rindex('{"kind"') + cut])
    rows.write_bytes(rows.read_bytes()[:-cut])

    with pytest.warns(UserWarning) as caught:
        history = journal.load(tmp_path)
    assert [r["row"]["step"] for r in history.records] == [0]
    assert sorted(history.timesteps) == [(0, 0)]
    # Both tears are named, with their file: nothing is dropped silently.
    messages = [str(w.message) for w in caught]
    assert any("segment-00000.jsonl" in m and "torn last line" in m for m in messages)
    assert any(
        "segment-00000.arrows" in m and "torn Arrow batch" in m for m in messages
    )


def test_an_unreadable_journal_is_an_error_not_an_empty_history(tmp_path):
    writer = journal.Journal(tmp_path, COLUMNS)
    writer.start(0, 0, 0)
    _record(writer, 0)
    writer.close()
    rows = tmp_path / "segment-00000.arrows"
    rows.unlink()
    rows.mkdir()  # cannot be opened as a file (root reads any file)
    (rows / "x").write_text("x")
    with pytest.raises(OSError):
        journal.load(tmp_path)


def test_a_missing_directory_is_an_empty_history(tmp_path):
    history = journal.load(tmp_path / "nothing")
    assert history.records == [] and history.entries == []


def test_a_journal_spanning_several_models_is_not_resumed(tmp_path):
    # fit_reducing_depth moves one monitor across models, each optimizer
    # counting from 0: no iteration count maps to one step.
    writer = journal.Journal(tmp_path, COLUMNS)
    writer.start(0, 0, 0, model=0)
    writer.start(40, 0, 1, model=1)
    writer.close()
    assert journal.load(tmp_path).resume_step(0) is None
