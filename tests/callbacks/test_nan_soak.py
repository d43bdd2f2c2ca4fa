"""NaN/Inf soak of `GradientMonitor(on_nan="skip")`: 48 steps per case, 15%
of the batches poisoned (NaN/Inf inputs, NaN/Inf targets, finite data that
overflows an exponential activation or the loss; see nan_soak_worker.py),
every weight and optimizer variable checked after every step. On one device
in float32 and mixed_float16 in this process; under MirroredStrategy (two
logical CPUs) in child processes started with the module, so they run
alongside. The 1,000-step soak is benchmarks/nan_soak.py."""

import json
import os
import pathlib
import subprocess
import sys
import warnings

import nan_soak_worker as worker
import numpy as np
import pytest

from keras_seq import diagnostics

WORKER = pathlib.Path(__file__).with_name("nan_soak_worker.py")
STEPS = 48
CHILD_CASES = ("mirrored", "mirrored_mixed_float16")


@pytest.fixture(scope="module", autouse=True)
def child():
    """The MirroredStrategy cases, each in a fresh process (devices are fixed
    when TensorFlow starts; two strategies in one process share collective
    instance keys) started with the module, so they run alongside."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    processes = {
        case: subprocess.Popen(
            [sys.executable, str(WORKER), "--steps", str(STEPS), case],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for case in CHILD_CASES
    }
    results = {}

    def result(case):
        if case not in results:
            process = processes[case]
            try:
                out, err = process.communicate(timeout=300)
            except subprocess.TimeoutExpired:  # a hung collective, say
                process.kill()
                out, err = process.communicate()
            results[case] = json.loads(out) if out.strip() else {"error": err}
        assert "error" not in results[case], results[case]["error"][-3000:]
        return results[case]

    yield result
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def soak(child):
    """`soak(case)`: the worker's result for `case`, run once per module."""
    in_process = {}

    def result(case):
        if case in CHILD_CASES:
            return child(case)
        if case not in in_process:
            in_process[case] = worker.soak(case, STEPS)
        return in_process[case]

    return result


CASES = ["float32", "mixed_float16", "mirrored"]


def test_the_poisons_cover_every_kind_both_steps_and_both_replicas():
    _, _, poison = worker.poisoned_data(STEPS)
    assert 0.1 * STEPS <= len(poison) <= 0.2 * STEPS
    assert {kind for kind, _, _ in poison.values()} == set(worker.KINDS)
    # every=2 in float32: recorded (even) and light (odd) steps both poisoned;
    # under MirroredStrategy each replica takes half of the batch.
    assert {step % 2 for step in poison} == {0, 1}
    assert {row * 2 // worker.BATCH for _, _, row in poison.values()} == {0, 1}


@pytest.mark.parametrize("case", CASES)
def test_no_weight_or_optimizer_variable_is_ever_nonfinite(soak, case):
    result = soak(case)
    assert len(result["per_step"]) == STEPS
    bad = [(s["step"], s["nonfinite"]) for s in result["per_step"] if s["nonfinite"]]
    assert bad == []
    assert sum(s["replica_mismatch"] for s in result["per_step"]) == 0


@pytest.mark.parametrize("case", ["float32", "mirrored"])
def test_skipped_steps_are_exactly_the_poisoned_ones(soak, case):
    result = soak(case)
    summary = worker.summary(result)
    # skipped_steps, as read at recorded steps and the end
    assert summary["counted"] == worker.at_reads(result, summary["poisoned"])
    assert summary["untouched"] == summary["poisoned"]
    recorded = set(result["recorded"])
    assert result["frame_skipped"] == sorted(set(summary["poisoned"]) & recorded)
    assert result["skipped_steps"] == len(summary["poisoned"])
    assert result["first_nonfinite"] == summary["poisoned"][0]


@pytest.mark.parametrize("case", CASES)
def test_a_step_is_untouched_or_a_whole_update(soak, case):
    for step in soak(case)["per_step"]:
        if step["weights_changed"] == 0:
            assert (step["slots_changed"], step["iterations"]) == (0, 0), step
        else:
            assert step["trainable_changed"] == step["trainable"], step
            assert step["iterations"] == 1 and step["slots_changed"] > 0, step


def test_loss_scale_optimizer_and_monitor_agree(soak):
    # Agree: the steps where the LossScaleOptimizer lowered its scale, the
    # untouched steps and the rows marked `skipped` are one set; it holds
    # every poisoned step and some clean float16 overflows (the loss scale
    # doubles every 2 finite steps). skipped_steps counts the non-finite
    # losses only (overflows are no NaN event).
    result = soak("mixed_float16")
    summary = worker.summary(result)
    assert result["loss_scaling"] and result["every"] == 1
    assert summary["lso_skipped"] == summary["untouched"] == result["frame_skipped"]
    assert set(summary["poisoned"]) <= set(summary["lso_skipped"])
    assert summary["clean_lso_skips"]  # the definition is exercised
    assert summary["counted"] == result["frame_loss_nonfinite"]
    assert set(summary["counted"]) <= set(summary["poisoned"])


@pytest.mark.parametrize("case", CASES)
def test_no_other_problem(soak, case):
    assert worker.problems(soak(case)) == []


# Keras's LossScaleOptimizer decides from each replica's own gradient: a
# NaN in one replica's share of the batch would be summed into the update
# the other replica, finite locally, applies (train_step's
# _nonfinite_everywhere makes every replica see it).
def test_mirrored_mixed_precision_skips_a_poison_in_one_replica(soak):
    result = soak("mirrored_mixed_float16")
    assert worker.problems(result) == []


# An overflowed float16 step once made depth_profile divide inf by inf.
def test_depth_profile_of_an_overflowed_step_is_quiet():
    # What GradientMonitor._depth_profile passed on clean mixed_float16 steps
    # of this soak whose scaled gradient overflowed below the top level.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile = diagnostics.depth_profile(
            {"rnn/level_0": np.inf, "rnn/level_1": np.inf, "simple/level_0": 0.95},
            source=dict.fromkeys(
                ["rnn/level_0", "rnn/level_1", "simple/level_0"], "weights"
            ),
        )
    assert profile is None or not profile.exploding
