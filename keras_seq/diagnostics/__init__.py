"""Gradient statistics -> verdicts (horizon, decay, vanishing, exploding,
non-finite), shared by the callback, the depth helper and the command line."""

from keras_seq.diagnostics.depth import DepthDiagnosis, LevelDepth, depth_profile
from keras_seq.diagnostics.verdicts import (
    Diagnosis,
    NonFinite,
    SublayerDiagnosis,
    decay_factor,
    gradient_horizon,
    grows_through_time,
    is_exploding,
    locate_nonfinite,
    through_time,
)

__all__ = [
    "DepthDiagnosis",
    "Diagnosis",
    "LevelDepth",
    "NonFinite",
    "SublayerDiagnosis",
    "decay_factor",
    "depth_profile",
    "gradient_horizon",
    "grows_through_time",
    "is_exploding",
    "locate_nonfinite",
    "through_time",
]
