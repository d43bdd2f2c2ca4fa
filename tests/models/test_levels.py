import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seq
from keras_seq.layers import probes
from keras_seq.models.levels import (
    Level,
    recurrent_levels,
    resolve_levels,
    single_stack,
)


def _stack():
    """SharedRNN(depth=3, shared) -> Bidirectional(SharedRNN(depth=2)) -> LSTM."""
    return keras_seq.Sequential(
        [
            keras.Input((5, 3)),
            keras_seq.layers.SharedRNN(
                4, depth=3, share_depth=True, return_sequences=True, name="rnn"
            ),
            keras.layers.Bidirectional(
                keras_seq.layers.SharedRNN(2, depth=2, return_sequences=True),
                name="bi",
            ),
            keras.layers.LSTM(3, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def test_levels_of_every_kind_bottom_to_top():
    model = _stack()
    levels = recurrent_levels(model)
    assert [level.name for level in levels] == [
        "rnn/level_0",
        "rnn/level_1",
        "rnn/level_2",
        "bi/level_0",
        "bi/level_1",
        "lstm/level_0",
    ]
    assert [level.position for level in levels] == list(range(6))
    assert [level.index for level in levels] == [0, 1, 2, 0, 1, 0]
    assert [level.kind for level in levels] == ["SharedRNN"] * 5 + ["LSTM"]
    assert [level.bidirectional for level in levels] == [False] * 3 + [True] * 2 + [
        False
    ]
    rnn, bi, lstm = (model.get_layer(name) for name in ("rnn", "bi", "lstm"))
    assert [level.layer for level in levels] == [rnn] * 3 + [bi] * 2 + [lstm]
    assert levels[0].monitor_names == ("rnn/level_0",)
    assert levels[4].monitor_names == (
        f"{bi.forward_layer.name}/level_1",
        f"{bi.backward_layer.name}/level_1",
    )
    assert levels[5].monitor_names == ()


def test_level_variables_and_parameters():
    model = _stack()
    levels = recurrent_levels(model)
    rnn, bi, lstm = (model.get_layer(name) for name in ("rnn", "bi", "lstm"))
    # share_depth: level 0 owns its weights, levels 1 and 2 use the shared set.
    assert levels[0].variables == tuple(rnn.cell.level_weights(0))
    assert all(a is b for a, b in zip(levels[1].variables, levels[2].variables))
    assert all(a is b for a, b in zip(levels[1].variables, rnn.cell.level_weights(2)))
    assert levels[0].parameters == 3 * 4 + 4 * 4 + 4
    assert levels[1].parameters == 4 * 4 + 4 * 4 + 4
    # Bidirectional: both directions' variables.
    expected = [
        *bi.forward_layer.cell.level_weights(1),
        *bi.backward_layer.cell.level_weights(1),
    ]
    assert len(levels[4].variables) == 6
    assert all(a is b for a, b in zip(levels[4].variables, expected))
    assert levels[3].parameters == 2 * (2 * 4 + 2 * 2 + 2)
    assert {id(v) for v in levels[5].variables} == {
        id(v) for v in lstm.trainable_variables
    }
    assert levels[5].parameters == lstm.count_params() == 4 * (4 * 3 + 3 * 3 + 3)
    assert levels[5].parameters == sum(math.prod(v.shape) for v in lstm.weights)


def test_monitor_names_are_the_recorded_sublayer_names():
    model = _stack()
    x = np.zeros((2, 5, 3), "float32")
    with tf.GradientTape() as tape, probes.recording(tape) as recorder:
        model(x)
    recorded = {probe.name for probe in recorder.probes}
    named = {name for level in recurrent_levels(model) for name in level.monitor_names}
    assert named == recorded


def test_functional_order_and_single_stack():
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(9, 3, mask_zero=True)(inputs)
    h = keras.layers.LSTM(4, return_sequences=True, name="low")(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(3))(h)
    h = keras.layers.GRU(4, name="high")(h)
    model = keras_seq.Model(inputs, keras.layers.Dense(1)(h))
    levels = recurrent_levels(model)
    assert [level.name for level in levels] == ["low/level_0", "high/level_0"]
    assert single_stack(model, levels)


def test_parallel_branches_are_not_a_single_stack():
    inputs = keras.Input((6, 3))
    a = keras_seq.layers.SharedRNN(4, depth=2, name="a")(inputs)
    b = keras.layers.GRU(4, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([a, b]))
    levels = recurrent_levels(model)
    assert sorted(level.name for level in levels) == [
        "a/level_0",
        "a/level_1",
        "b/level_0",
    ]
    assert not single_stack(model, levels)
    assert single_stack(_stack(), recurrent_levels(_stack()))


def test_resolve_levels_names_and_bare_layer_names():
    levels = recurrent_levels(_stack())
    found = resolve_levels(levels, ["lstm", "bi/level_1", "rnn/level_0"])
    assert [level.name for level in found] == [
        "rnn/level_0",
        "bi/level_1",
        "lstm/level_0",
    ]
    assert all(isinstance(level, Level) for level in found)
    assert resolve_levels(levels, ()) == []


def test_resolve_levels_errors():
    levels = recurrent_levels(_stack())
    with pytest.raises(
        ValueError, match=r"unknown level 'nope'.*Valid names: 'rnn/level_0'"
    ):
        resolve_levels(levels, ["nope"])
    with pytest.raises(
        ValueError, match=r"layer 'rnn', which has 3 levels.*'rnn/level_2'"
    ):
        resolve_levels(levels, ["rnn"])
    with pytest.raises(ValueError, match=r"names level 'lstm/level_0' more than once"):
        resolve_levels(levels, ["lstm", "lstm/level_0"])
    with pytest.raises(
        TypeError, match=r"`names` must be a list.*Use names=\['lstm'\]"
    ):
        resolve_levels(levels, "lstm")
    with pytest.raises(TypeError, match=r"element 3 of type int"):
        resolve_levels(levels, [3])


def test_recurrent_levels_errors():
    with pytest.raises(
        TypeError, match=r"`model` must be a keras.Model.*Received: model="
    ):
        recurrent_levels(keras.layers.LSTM(2))
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="mlp")
    with pytest.raises(ValueError, match=r"Model `mlp` has no recurrent level.*Dense"):
        recurrent_levels(dense)
    unbuilt = keras.Sequential([keras.layers.LSTM(2)], name="lazy")
    with pytest.raises(ValueError, match=r"Model `lazy` is not built"):
        recurrent_levels(unbuilt)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.rnn = keras.layers.LSTM(2)

        def call(self, x):
            return self.rnn(x)

    sub = Subclassed()
    sub(np.zeros((1, 2, 3), "float32"))
    with pytest.raises(
        ValueError, match=r"`sub` is a subclassed model \(class Subclassed\)"
    ):
        recurrent_levels(sub)
