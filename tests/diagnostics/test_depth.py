import numpy as np
import pytest

from keras_seq import diagnostics


def test_depth_profile_ratios_and_verdicts():
    norms = {"a/level_0": 1e-4, "a/level_1": 0.5, "b/level_0": 300.0, "c/level_0": 2.0}
    profile = diagnostics.depth_profile(norms)
    ratios = [d.ratio_to_top for d in profile.levels.values()]
    np.testing.assert_allclose(ratios, [5e-5, 0.25, 150.0, 1.0])
    above = [d.ratio_to_above for d in profile.levels.values()]
    np.testing.assert_allclose(above[:3], [2e-4, 0.5 / 300.0, 150.0])
    assert np.isnan(above[3])
    assert profile.vanishing == ["a/level_0"]
    assert profile.exploding == ["b/level_0"]
    assert profile.levels["c/level_0"].verdict == "ok"


def test_depth_profile_thresholds_are_strict_and_configurable():
    norms = {"low": 0.01, "top": 1.0}
    assert diagnostics.depth_profile(norms).vanishing == []  # not below 1e-2
    assert diagnostics.depth_profile(norms, vanishing_ratio=0.02).vanishing == ["low"]


@pytest.mark.parametrize(
    "norms", [{"only": 1.0}, {"a": 1.0, "top": 0.0}, {"a": 1.0, "top": np.nan}]
)
def test_depth_profile_needs_two_levels_and_a_top_norm(norms):
    assert diagnostics.depth_profile(norms) is None


def test_diagnosis_is_unhealthy_when_vanishing_through_depth():
    profile = diagnostics.depth_profile({"low": 1e-5, "top": 1.0})
    diagnosis = diagnostics.Diagnosis(
        step=3,
        sublayers={},
        exploding=False,
        exploding_steps=[],
        nonfinite=None,
        skipped_steps=0,
        depth=profile,
    )
    assert not diagnosis.healthy
    assert diagnosis.vanishing_through_depth == ["low"]
    assert "vanishing through depth" in diagnosis.report()
    diagnosis.depth = diagnostics.depth_profile({"low": 0.5, "top": 1.0})
    assert diagnosis.healthy
