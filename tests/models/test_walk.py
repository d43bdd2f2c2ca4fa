"""The one walk over a model's layers, and its users: `recurrent_layers`
(monitoring) and `stateful_layers` (state resets)."""

import keras
import numpy as np

import keras_seq
from keras_seq.callbacks.reset_states import stateful_layers
from keras_seq.models.walk import nested_layers, ordered_layers
from keras_seq.monitoring.keras_rnn import recurrent_layers


class Block(keras.layers.Layer):
    """A subclassed layer keeping layers as an attribute and in a list."""

    def __init__(self, stateful=False, **kwargs):
        super().__init__(**kwargs)
        self.rnn = keras.layers.LSTM(
            4, return_sequences=True, stateful=stateful, name=f"{self.name}_lstm"
        )
        self.steps = [
            keras.layers.Dense(4, name=f"{self.name}_dense"),
            keras.layers.GRU(
                4, return_sequences=True, stateful=stateful, name=f"{self.name}_gru"
            ),
        ]

    def build(self, input_shape):
        for layer in (self.rnn, *self.steps):
            layer.build(input_shape)
            input_shape = layer.compute_output_shape(input_shape)

    def call(self, x):
        return self.steps[1](self.steps[0](self.rnn(x)))


class Subclassed(keras.Model):
    def __init__(self, stateful=False):
        super().__init__(name="subclassed")
        self.block = Block(stateful, name="block")
        self.bi = keras.layers.Bidirectional(
            keras.layers.SimpleRNN(3, stateful=stateful, name="srnn"), name="bi"
        )

    def call(self, x):
        return self.bi(self.block(x))


def nested_model(stateful=False):
    """Sequential > [TimeDistributed(Dense), functional(GRU) sub-model,
    Block, Bidirectional(LSTM), Dense], with batch size 2."""
    inner_input = keras.Input((5, 3), batch_size=2)
    inner = keras.Model(
        inner_input,
        keras.layers.GRU(3, return_sequences=True, stateful=stateful, name="gru")(
            inner_input
        ),
        name="inner",
    )
    return keras_seq.Sequential(
        [
            keras.Input((5, 3), batch_size=2),
            keras.layers.TimeDistributed(
                keras.layers.Dense(3, name="td_dense"), name="td"
            ),
            inner,
            Block(stateful, name="block"),
            keras.layers.Bidirectional(
                keras.layers.LSTM(2, stateful=stateful, name="lstm"), name="bi"
            ),
            keras.layers.Dense(1, name="head"),
        ],
        name="outer",
    )


def names(layers):
    return [layer.name for layer in layers]


def test_walks_depth_first_outermost_first_each_layer_once():
    model = nested_model()
    walked = list(nested_layers(model))
    assert walked[0] is model
    assert len({id(layer) for layer in walked}) == len(walked)
    # The layers built here (Keras's own input layers and cells are walked
    # too): each container right before what it holds, a subclassed layer's
    # attribute and list entries in the order it set them, and the two
    # directions of the Bidirectional, not the layer it was built from.
    ours = [
        "outer",
        "td",
        "td_dense",
        "inner",
        "gru",
        "block",
        "block_lstm",
        "block_dense",
        "block_gru",
        "bi",
        "forward_lstm",
        "backward_lstm",
        "head",
    ]
    assert [name for name in names(walked) if name in {*ours, "lstm"}] == ours


def test_stop_yields_the_layer_but_not_its_insides():
    model = nested_model()
    walked = names(
        nested_layers(model, stop=lambda layer: layer.name in ("bi", "block"))
    )
    assert "bi" in walked and "block" in walked
    assert not {"forward_lstm", "backward_lstm", "block_lstm", "block_gru"} & set(
        walked
    )
    assert "gru" in walked  # other branches are still walked


def test_a_layer_used_twice_is_walked_once():
    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, shared(shared(inputs)))
    assert names(nested_layers(model)).count("shared") == 1


def test_recurrent_layers_of_a_nested_model():
    assert names(recurrent_layers(nested_model())) == [
        "gru",
        "block_lstm",
        "block_gru",
        "forward_lstm",
        "backward_lstm",
    ]


def test_recurrent_layers_of_a_subclassed_model_include_its_attributes():
    model = Subclassed()
    model(np.zeros((2, 5, 3), "float32"))
    assert names(recurrent_layers(model)) == [
        "block_lstm",
        "block_gru",
        "forward_srnn",
        "backward_srnn",
    ]


def test_stateful_layers_list_a_stateful_bidirectional_once_as_itself():
    model = nested_model(stateful=True)
    assert names(stateful_layers(model)) == ["gru", "block_lstm", "block_gru", "bi"]
    assert stateful_layers(nested_model(stateful=False)) == []


def test_stateful_layers_of_a_subclassed_model():
    model = Subclassed(stateful=True)
    model(np.zeros((2, 5, 3), "float32"))
    assert names(stateful_layers(model)) == ["block_lstm", "block_gru", "bi"]


def test_ordered_layers_are_the_top_level_layers_in_topological_order():
    top = keras.layers.Dense(1, name="top")  # made first, called last
    bottom = keras.layers.Dense(2, name="bottom")
    inputs = keras.Input((4,))
    hidden = bottom(inputs)
    joined = keras.ops.add(hidden, hidden)  # a bare operation, not a layer
    model = keras.Model(inputs, top(joined))
    assert names(ordered_layers(model)) == ["bottom", "top"]
    sequential = nested_model()
    assert ordered_layers(sequential) == sequential.layers
