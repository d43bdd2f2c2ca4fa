import keras


@keras.saving.register_keras_serializable(package="keras_seq")
class Identity(keras.initializers.Identity):
    """`gain` times the identity matrix, with a gain that survives saving.

    `keras.initializers.Identity` (Keras 3.15) has no `get_config`, so its
    gain is lost in `get_config` and `.keras` files. keras-seq layers convert
    a Keras `Identity` into this class automatically. With `activation="relu"`
    on the recurrent kernel this is the IRNN of Le, Jaitly & Hinton (2015).

    Args:
        gain: Float (default 1.0), the multiplicative factor.

    Example:

    >>> import keras_seq
    >>> layer = keras_seq.layers.SharedRNN(
    ...     8, activation="relu",
    ...     recurrent_initializer=keras_seq.initializers.Identity(gain=0.5))
    """

    def get_config(self):
        return {"gain": self.gain}
