"""Weight constraints for recurrent kernels."""

from keras_seq.constraints.spectral_norm import SpectralNorm

__all__ = ["SpectralNorm"]
