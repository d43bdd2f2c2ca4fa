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


def test_exploding_needs_sustained_growth_over_the_starting_level():
    assert diagnostics.is_exploding([1.0, 2e3], threshold=1e3)
    assert not diagnostics.is_exploding([1.0, 2e3])  # no threshold by default
    # A spike, even 1000x, is not explosion; neither is a 25x rise (learning).
    assert not diagnostics.is_exploding([1.0, 1.1, 0.9, 1e3])
    assert not diagnostics.is_exploding([1.0, 1.1, 0.9] + [25.0] * 10)
    # Three records at >= 100x the median of the first five: exploding.
    start = [1.0, 3.0, 2.0, 2.0, 30.0]  # median 2
    assert diagnostics.is_exploding(start + [200.0, 400.0, 800.0])
    assert not diagnostics.is_exploding(start + [200.0, 199.0, 800.0])
    assert not diagnostics.is_exploding(start + [200.0, 400.0])  # only two
    # The starting level is the first five records, not the recent ones.
    assert diagnostics.is_exploding(start + [5.0] * 20 + [300.0] * 3)
    assert not diagnostics.is_exploding([1.0, 1.0, 1.0, np.nan])
    evidence = diagnostics.verdicts.explosion_evidence(start + [200.0, 400.0, 800.0])
    assert evidence.startswith("global norm 800, 400x its starting level 2")


def test_through_time_measures_the_fall_to_the_peak_and_the_growth():
    fall, growth = diagnostics.through_time([1e-6, 1e-3, 1.0, 0.5])
    assert fall == pytest.approx(1e-6) and growth == pytest.approx(2e-6)
    # Linear growth of a summed loss at every step is not compounding growth.
    ramp = np.arange(200, 0, -1.0)  # 200x going back, 2x over the first half
    assert not diagnostics.grows_through_time(ramp)
    assert diagnostics.grows_through_time(1.2 ** np.arange(30)[::-1])
    assert not diagnostics.grows_through_time(1.1 ** np.arange(30)[::-1])  # 17x


def test_sublayer_vanishing_needs_a_shrinking_norm():
    shrinking = diagnostics.SublayerDiagnosis.from_norms(
        "a", 0.1 ** np.arange(50)[::-1]
    )
    assert shrinking.vanishing and shrinking.horizon == 4  # 1, .1, .01, .001
    assert shrinking.summary == "vanishing (falls to 1e-49 of its peak over 50 steps)"
    growing = diagnostics.SublayerDiagnosis.from_norms("b", 2.0 ** np.arange(50)[::-1])
    assert growing.horizon == 0 and not growing.vanishing
    assert growing.exploding and growing.verdict == "exploding"
    assert growing.summary == "exploding (grows 6e+14x going back over 50 steps)"
    assert diagnostics.verdicts._ratio(0.35) == "0.35"
    # The verdict follows the ratio, not the horizon: a gradient that keeps
    # 2% at the start is ok, 0.5% vanishing, at any T.
    for keep, verdict in ((0.02, "ok"), (0.005, "vanishing")):
        for steps in (10, 200):
            norms = keep ** (np.arange(steps)[::-1] / (steps - 1))
            d = diagnostics.SublayerDiagnosis.from_norms("c", norms)
            assert d.verdict == verdict and d.fall == pytest.approx(keep)
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


def test_over_records_reads_the_median_of_the_recent_records():
    def record(keep):  # a profile falling to `keep` of its peak over 20 steps
        norms = keep ** (np.arange(20)[::-1] / 19)
        return diagnostics.SublayerDiagnosis.from_norms("rnn/level_0", norms)

    # One noisy batch at the end (0.07) does not hide four vanishing ones.
    recent = [record(k) for k in (1e-3, 2e-3, 5e-4, 1e-3, 0.07)]
    d = diagnostics.verdicts.over_records(recent)
    assert d.fall == pytest.approx(1e-3) and d.vanishing and d.records == 5
    assert d.norms is recent[-1].norms  # the curve stays the latest one
    assert d.summary.endswith("over 20 steps, median of 5 records)")
    assert not diagnostics.verdicts.over_records(
        [record(1e-3)] + [record(0.5)] * 2
    ).vanishing
    # A non-finite latest record is reported as it is.
    bad = diagnostics.SublayerDiagnosis.from_norms(
        "rnn/level_0", np.ones(20), grad_finite=np.arange(20) < 10
    )
    assert diagnostics.verdicts.over_records(recent + [bad]).verdict == "non-finite"
