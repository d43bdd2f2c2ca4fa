import numpy as np
import pytest

from keras_seq import diagnostics


def test_horizon_counts_the_final_run_above_the_fraction():
    norms = 0.5 ** np.arange(20)[::-1]  # processing order: largest last
    # 0.5**k >= 1e-3 for k <= 9: the last 10 steps.
    assert diagnostics.gradient_horizon(norms, fraction=1e-3) == 10
    assert diagnostics.gradient_horizon(np.ones(7)) == 7
    assert diagnostics.gradient_horizon(np.zeros(7)) == 0
    assert diagnostics.gradient_horizon([1.0, np.nan, 1.0]) == 0


def test_decay_is_the_fitted_factor_per_step_back():
    norms = 3.0 * 0.7 ** np.arange(30)[::-1]
    assert diagnostics.decay_factor(norms) == pytest.approx(0.7, rel=1e-9)
    assert diagnostics.decay_factor(1.2 ** np.arange(10)[::-1]) == pytest.approx(1.2)
    assert np.isnan(diagnostics.decay_factor([0.0, 0.0, 1.0]))


def test_exploding_by_threshold_or_jump_over_the_median():
    assert diagnostics.is_exploding([1.0, 2e3], threshold=1e3)
    assert not diagnostics.is_exploding([1.0, 1.1, 0.9, 5.0], jump=10.0)
    assert diagnostics.is_exploding([1.0, 1.1, 0.9, 12.0], jump=10.0)
    assert not diagnostics.is_exploding([1.0, 12.0], jump=10.0)  # too few records
    assert not diagnostics.is_exploding([1.0, 1.0, 1.0, np.nan])


def test_sublayer_vanishing_needs_a_shrinking_norm():
    shrinking = diagnostics.SublayerDiagnosis.from_norms(
        "a", 0.1 ** np.arange(50)[::-1]
    )
    assert shrinking.vanishing and shrinking.horizon == 4  # 1, .1, .01, .001
    growing = diagnostics.SublayerDiagnosis.from_norms("b", 2.0 ** np.arange(50)[::-1])
    assert growing.horizon == 0 and not growing.vanishing
    backwards = diagnostics.SublayerDiagnosis.from_norms(
        "c", 0.1 ** np.arange(50), reverse=True
    )
    assert backwards.vanishing and backwards.horizon == 4


def test_locate_nonfinite_prefers_forward_then_loss_then_backward():
    ok = np.ones(5, bool)
    forward_bad = ok.copy()
    forward_bad[2:] = False
    grad_bad = ok.copy()
    grad_bad[:4] = False
    layers = {"rnn": 1.0, "head": np.nan}
    sublayers = [
        ("rnn/level_0", ok, grad_bad, False),
        ("rnn/level_1", forward_bad, grad_bad, False),
    ]
    assert diagnostics.locate_nonfinite(1.0, sublayers, layers) == ("rnn/level_1", 2)
    backward_only = [(n, ok, g, r) for n, _, g, r in sublayers]
    assert diagnostics.locate_nonfinite(np.nan, backward_only, layers) == ("loss", None)
    # The backward pass meets the top sublayer first, at its last bad step.
    assert diagnostics.locate_nonfinite(1.0, backward_only, layers) == (
        "rnn/level_1",
        3,
    )
    clean = [(n, ok, ok, r) for n, *_, r in sublayers]
    assert diagnostics.locate_nonfinite(1.0, clean, layers) == ("head", None)
    assert diagnostics.locate_nonfinite(1.0, clean, {"rnn": 1.0}) == (None, None)


def test_aligned_norms_read_only_the_positions_some_sequence_reaches():
    # Three unreached positions (all padding) in front of a vanishing profile.
    norms = np.array([0.0, 0.0, 0.0] + [1e-6] * 28 + [1.0, 1.0])
    count = np.array([0, 0, 0] + [2] * 30)
    d = diagnostics.SublayerDiagnosis.from_norms(
        "rnn/level_0",
        np.ones(33),  # the unaligned per-step norms are not what is judged
        aligned_norm=norms,
        aligned_count=count,
    )
    assert (d.timesteps, d.horizon, d.vanishing, d.verdict) == (
        30,
        2,
        True,
        "vanishing",
    )
    np.testing.assert_array_equal(d.norms, norms[3:])


@pytest.mark.parametrize(
    "count, verdict", [([0, 0, 0], "no valid steps"), ([0, 0, 3], "not enough steps")]
)
def test_too_few_valid_steps_give_no_vanishing_verdict(count, verdict):
    d = diagnostics.SublayerDiagnosis.from_norms(
        "rnn/level_0", np.zeros(3), aligned_norm=np.zeros(3), aligned_count=count
    )
    assert d.verdict == verdict and not d.vanishing
