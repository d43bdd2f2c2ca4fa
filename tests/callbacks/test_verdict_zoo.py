"""The verdicts against real short training runs, labelled by what the user
sees (see `verdict_zoo`). Each case is one small fit."""

import pytest
import verdict_zoo

from keras_seq import diagnostics

CASES = {case.name: case for case in verdict_zoo.CASES}


def _run(name):
    return verdict_zoo.run(CASES[name], scale="test")


@pytest.mark.parametrize(
    "name",
    ["simple_rnn_adding", "sigmoid_stack", "readme_example", "linear_radius_0.5"],
)
def test_vanishing_where_the_model_cannot_learn(name):
    result = _run(name)
    # What the user sees: the loss does not get below the baseline of
    # predicting the mean.
    assert result.loss_last > 0.9 * result.baseline, result
    assert result.labels == {"vanishing"}, result.verdicts
    for sublayer in result.judged:
        assert result.monitor.diagnosis().sublayers[sublayer].fall < 1e-2
        assert "vanishing (falls to" in result.verdicts[sublayer]
    line = next(
        line
        for line in result.report.splitlines()
        if line.startswith("- vanishing through time: ")
    )
    assert all(name in line for name in result.judged), line
    assert result.exploding_warnings == 0


@pytest.mark.parametrize(
    "name", ["lstm_adding", "irnn_adding", "gru_mask_zero", "stateful_chunks"]
)
def test_ok_where_the_model_learns(name):
    result = _run(name)
    assert result.loss_last < 0.6 * result.baseline, result  # it learns
    assert result.labels == {"ok"}, result.verdicts
    assert result.exploding_warnings == 0 and result.exploding_steps == []
    assert "- vanishing through time: no" in result.report
    assert "- exploding: no" in result.report


def test_imdb_shaped_bidirectional_lstm_raises_no_alarm():
    # keras-io's IMDB model unchanged (no mask, pre-padded ids, Adam, no
    # clipping). The lower level, read at every step by the level above, is
    # ok; the top level's verdict is whatever its decay plot shows (with a
    # final-step loss over 200 steps it falls many orders of magnitude).
    result = _run("imdb_bilstm")
    assert result.exploding_warnings == 0 and result.exploding_steps == []
    lower = list(result.verdicts)[:2]  # forward order: the lower level first
    assert [name.split("_")[0] for name in lower] == ["forward", "backward"]
    for name in lower:
        assert result.verdicts[name].startswith("ok"), result.verdicts
    assert "- exploding: no" in result.report


@pytest.mark.parametrize("name", ["linear_radius_1.2", "sgd_diverging"])
def test_exploding_where_the_gradient_or_the_loss_blows_up(name):
    result = _run(name)
    diverged = not result.loss_last < 10 * result.baseline  # NaN counts
    assert diverged, result
    assert "exploding" in result.labels, result.verdicts
    # Once per episode (a run of exploding records), not once per record.
    episodes = diagnostics.verdicts._runs(result.exploding_steps)
    assert (
        1 <= result.exploding_warnings <= len(episodes) < len(result.exploding_steps)
        or result.exploding_warnings == len(result.exploding_steps) == 1
    )
    first = result.exploding_steps[0]
    line = next(
        line for line in result.report.splitlines() if line.startswith("- exploding")
    )
    assert f"steps {first}" in line and line != "- exploding: no"


def test_a_loss_that_diverges_between_records_is_exploding():
    # every=50: the run goes from a normal step 0 to NaN at step 14 unseen;
    # the peak global norm tracked in the graph since the last record says
    # it blew up first (a NaN in the data, below, does not).
    result = verdict_zoo.run(CASES["sgd_diverging"], scale="test", every=50)
    nonfinite = result.monitor.diagnosis().nonfinite
    assert result.exploding_steps == [nonfinite.step]
    assert result.exploding_warnings == 1
    assert "non-finite after the global norm reached" in result.report


def test_nonfinite_located_by_step_layer_and_time_step():
    result = _run("nonfinite_input")
    nonfinite = result.monitor.diagnosis().nonfinite
    assert (nonfinite.step, nonfinite.layer, nonfinite.timestep) == (
        2,
        "rnn/level_0",
        7,
    )
    assert result.monitor.skipped_steps == nonfinite.count == 1
    assert (
        "- non-finite values: first at training step 2, in rnn/level_0 at time "
        "step 7 (input order)" in result.report
    )
    assert "skipped updates: 1: 1 for non-finite gradients (on_nan)" in result.report
    # A NaN input is not an explosion.
    assert result.exploding_steps == []
