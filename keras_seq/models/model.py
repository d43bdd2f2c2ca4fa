import keras

from keras_seq.models.monitored_train_step import MonitoredTrainStep


@keras.saving.register_keras_serializable(package="keras_seq")
class Model(MonitoredTrainStep, keras.Model):
    """`keras.Model` for keras-seq models (functional or subclassed).

    `keras_seq.Model(inputs, outputs)` builds a functional model and
    subclassing works as with `keras.Model`; fit, evaluate, predict, summary
    and `.keras` saving behave as in Keras.

    Example:

    >>> import keras, keras_seq
    >>> inputs = keras.Input((None, 8))
    >>> h = keras_seq.layers.SharedRNN(16, return_sequences=True)(inputs)
    >>> outputs = keras.layers.Dense(1)(h)
    >>> model = keras_seq.Model(inputs, outputs)
    """
