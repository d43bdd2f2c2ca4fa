"""Config and `.keras` round trips, and weight sharing surviving them."""

import keras
import numpy as np
import pytest
from conftest import assert_close

import keras_seq
from keras_seq.layers import SharedRNN, SharedRNNCell


def test_config_round_trip_keeps_every_argument():
    layer = SharedRNN(
        7,
        depth=3,
        share_depth=True,
        activation="relu",
        recurrent_initializer=keras.initializers.Identity(gain=0.5),
        kernel_regularizer="l2",
        recurrent_constraint=keras_seq.constraints.SpectralNorm(0.9),
        dropout=0.1,
        recurrent_dropout=0.2,
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        seed=5,
        name="deep",
    )
    config = layer.get_config()
    clone = SharedRNN.from_config(config)
    assert clone.get_config() == config
    assert (clone.depth, clone.share_depth, clone.units) == (3, True, 7)
    assert clone.recurrent_initializer.gain == 0.5
    assert clone.recurrent_constraint.max_value == 0.9
    assert (clone.dropout, clone.recurrent_dropout, clone.seed) == (0.1, 0.2, 5)
    assert clone.go_backwards and clone.return_state and clone.return_sequences


def test_cell_config_round_trip():
    cell = SharedRNNCell(4, depth=2, share_depth=True, activation="sigmoid")
    clone = SharedRNNCell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()


def _model(rnn):
    return keras_seq.Sequential([keras.Input((6, 4)), rnn, keras.layers.Dense(3)])


@pytest.mark.parametrize(
    "make_rnn",
    [
        lambda: SharedRNN(5, depth=3, share_depth=True),
        lambda: keras.layers.Bidirectional(SharedRNN(5, depth=3, share_depth=True)),
        lambda: keras.layers.RNN(SharedRNNCell(5, depth=3, share_depth=True)),
    ],
    ids=["SharedRNN", "Bidirectional", "keras.layers.RNN"],
)
def test_keras_file_round_trip_keeps_sharing(tmp_path, sequences, make_rnn):
    model = _model(make_rnn())
    # Train a little so the weights differ from any fresh initialization.
    model.compile(optimizer="adam", loss="mse")
    model.fit(sequences, np.ones((3, 3)), epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert type(loaded) is keras_seq.Sequential
    assert loaded.count_params() == model.count_params()
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_close(
        loaded.predict(sequences, verbose=0), model.predict(sequences, verbose=0)
    )

    # Sharing is real after loading: every level >= 1 uses the same variables.
    for layer in loaded.layers[0]._flatten_layers():
        if isinstance(layer, SharedRNNCell):
            shared = layer.level_weights(1)
            assert all(layer.level_weights(i) == shared for i in range(2, 3))
            assert len(layer.trainable_weights) == 6


def test_simple_rnn_weights_load_into_shared_rnn(tmp_path, sequences):
    reference = _model(keras.layers.SimpleRNN(5, name="rnn"))
    shared = _model(SharedRNN(5, name="rnn"))
    shared.set_weights(reference.get_weights())
    assert_close(shared(sequences), reference(sequences))


def test_from_simple_rnn_converts_a_trained_layer(sequences):
    simple = keras.layers.SimpleRNN(
        5, activation="relu", return_sequences=True, go_backwards=True, name="rnn"
    )
    simple(sequences)
    converted = SharedRNN.from_simple_rnn(simple)
    assert converted.name == "rnn" and converted.go_backwards
    assert converted.activation is simple.activation
    assert_close(converted(sequences), simple(sequences))
    with pytest.raises(TypeError, match="keras.layers.SimpleRNN"):
        SharedRNN.from_simple_rnn(keras.layers.GRU(3))


def test_functional_model_round_trip(tmp_path, sequences):
    inputs = keras.Input((None, 4))
    h = SharedRNN(5, depth=2, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(2)(h)
    model = keras_seq.Model(inputs, outputs)
    path = tmp_path / "functional.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_seq.Model)
    assert_close(loaded(sequences), model(sequences))
