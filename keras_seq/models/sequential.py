import keras

from keras_seq import _multiworker


@keras.saving.register_keras_serializable(package="keras_seq")
class Sequential(_multiworker.MultiWorkerTraining, keras.Sequential):
    """`keras.Sequential` for keras-seq models.

    Builds, trains, saves and summarises exactly like `keras.Sequential`.
    `GradientMonitor` works on any Keras model; this class exists so that
    keras-seq models load under their own name, and so that they train under
    `tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3.15's own
    `fit` fails for every model (keras-team/keras#20585; see
    `keras_seq._multiworker`). Everywhere else it is `keras.Sequential`. Save with
    `model.save("m.keras")` and load with `keras.models.load_model("m.keras")`
    after `import keras_seq`.

    Args:
        layers: Optional list of layers, as for `keras.Sequential`.
        trainable: Default True.
        name: Optional model name.

    Example:

    >>> import keras, keras_seq
    >>> model = keras_seq.Sequential([
    ...     keras.Input((None, 8)),
    ...     keras_seq.layers.SharedRNN(16, depth=2),
    ...     keras.layers.Dense(3, activation="softmax"),
    ... ])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    """
