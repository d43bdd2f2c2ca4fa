import keras


@keras.saving.register_keras_serializable(package="keras_seq")
class SpectralNorm(keras.constraints.Constraint):
    """Bounds the spectral norm (largest singular value) of a weight matrix.

    After each optimizer update the matrix is rescaled by
    `min(1, max_value / sigma_max)`. On a recurrent kernel this bounds how
    much one step can amplify dL/dh_t on its way back through time
    (`max_value=1` rules out exploding gradients from the linear part).

    Args:
        max_value: Positive float (default 1.0), the largest allowed
            singular value.

    Example:

    >>> import keras_seq
    >>> layer = keras_seq.layers.SharedRNN(
    ...     8, recurrent_constraint=keras_seq.constraints.SpectralNorm(1.0))
    """

    def __init__(self, max_value=1.0):
        if isinstance(max_value, bool) or not isinstance(max_value, (int, float)):
            raise TypeError(
                "Argument `max_value` must be a positive float. "
                f"Received: max_value={max_value!r}"
            )
        if max_value <= 0:
            raise ValueError(
                "Argument `max_value` must be a positive float. "
                f"Received: max_value={max_value}"
            )
        self.max_value = float(max_value)

    def __call__(self, w):
        w = keras.ops.convert_to_tensor(w)
        sigma = keras.ops.norm(w, ord=2)
        scale = keras.ops.minimum(1.0, self.max_value / (sigma + 1e-12))
        return w * keras.ops.cast(scale, w.dtype)

    def get_config(self):
        return {"max_value": self.max_value}
