"""Model classes: `Sequential` and `Model`."""

from keras_seq.models.model import Model
from keras_seq.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
