"""Gradient statistics -> verdicts (horizon, decay, vanishing, exploding,
non-finite), shared by the callback, the depth helper and the command line."""

from keras_seq.diagnostics.verdicts import (
    Diagnosis,
    NonFinite,
    SublayerDiagnosis,
    decay_factor,
    gradient_horizon,
    is_exploding,
    locate_nonfinite,
)

__all__ = [
    "Diagnosis",
    "NonFinite",
    "SublayerDiagnosis",
    "decay_factor",
    "gradient_horizon",
    "is_exploding",
    "locate_nonfinite",
]
