import keras

from keras_seq import _multiworker


@keras.saving.register_keras_serializable(package="keras_seq")
class Model(_multiworker.MultiWorkerTraining, keras.Model):
    """`keras.Model` for keras-seq models (functional or subclassed).

    `keras_seq.Model(inputs, outputs)` builds a functional model and
    subclassing works as with `keras.Model`; fit, evaluate, predict, summary
    and `.keras` saving behave as in Keras. `GradientMonitor` works on any
    Keras model; this class exists so that keras-seq models load under
    their own name, and so that they train under
    `tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3.15's own
    `fit` fails for every model (keras-team/keras#20585; see
    `keras_seq._multiworker`). Everywhere else it is `keras.Model`.

    Example:

    >>> import keras, keras_seq
    >>> inputs = keras.Input((None, 8))
    >>> h = keras_seq.layers.SharedRNN(16, return_sequences=True)(inputs)
    >>> outputs = keras.layers.Dense(1)(h)
    >>> model = keras_seq.Model(inputs, outputs)
    """
