"""The layer-depth reduction helper: the remedy after the diagnosis.

- `recurrent_levels(model)`: the recurrent levels of a model, bottom to top.
- `reduce_depth(model, depth=..., drop=..., x=...)`: a new model without
  some levels, kept weights bit for bit, every cut bridged by least squares
  on `x`; optionally healed (`y=`, `heal_epochs=`).
- `suggest_depth(model, x, y, ...)`: which levels to remove and why, by the
  measured (bridged) loss of candidate sets.
- `fit_reducing_depth(model, x, y, epochs=...)`: train, and remove levels
  while the gradients vanish or explode.
"""

from keras_seq.depth.fit import fit_reducing_depth
from keras_seq.depth.reduce import DepthReduction, reduce_depth
from keras_seq.depth.suggest import DepthPlan, suggest_depth
from keras_seq.models.levels import Level, recurrent_levels

__all__ = [
    "DepthPlan",
    "DepthReduction",
    "Level",
    "fit_reducing_depth",
    "recurrent_levels",
    "reduce_depth",
    "suggest_depth",
]
