"""Every bad argument and bad input gets a message naming what was wrong."""

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq.layers import SharedRNN, SharedRNNCell


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"units": 0},
            ValueError,
            r"`units` must be an integer >= 1. Received: units=0",
        ),
        ({"units": -3}, ValueError, r"units=-3"),
        ({"units": 2.5}, TypeError, r"`units` must be an integer >= 1.*units=2.5"),
        ({"units": 4, "depth": 0}, ValueError, r"`depth` must be .*depth=0"),
        ({"units": 4, "depth": "2"}, TypeError, r"`depth` must be .*depth='2'"),
        (
            {"units": 4, "share_depth": True},
            ValueError,
            r"`share_depth=True` .* needs `depth >= 2`. Received: depth=1",
        ),
        ({"units": 4, "depth": 2, "share_depth": 1}, TypeError, r"`share_depth`"),
        (
            {"units": 4, "activation": "tanhh"},
            ValueError,
            r"`activation` could not be interpreted.*activation='tanhh'",
        ),
        (
            {"units": 4, "recurrent_initializer": "orthogonl"},
            ValueError,
            r"`recurrent_initializer` could not be interpreted.*'orthogonl'",
        ),
        (
            {"units": 4, "kernel_regularizer": "l3"},
            ValueError,
            r"`kernel_regularizer` could not be interpreted",
        ),
        (
            {"units": 4, "recurrent_constraint": "spectral"},
            ValueError,
            r"`recurrent_constraint` could not be interpreted",
        ),
        (
            {"units": 4, "dropout": 1.0},
            ValueError,
            r"`dropout` must be a float in \[0, 1\)",
        ),
        (
            {"units": 4, "recurrent_dropout": -0.1},
            ValueError,
            r"recurrent_dropout=-0.1",
        ),
        ({"units": 4, "dropout": "0.1"}, TypeError, r"`dropout` must be a float"),
    ],
)
@pytest.mark.parametrize("cls", [SharedRNN, SharedRNNCell])
def test_bad_constructor_arguments(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


@pytest.mark.parametrize(
    "name", ["return_sequences", "return_state", "go_backwards", "stateful"]
)
def test_non_boolean_flags(name):
    with pytest.raises(TypeError, match=rf"`{name}` must be a boolean.*{name}='yes'"):
        SharedRNN(4, **{name: "yes"})


def test_wrong_rank(sequences):
    with pytest.raises(ValueError, match="expected ndim=3, found ndim=2"):
        SharedRNN(4)(sequences[:, 0])


def test_wrong_feature_size(sequences):
    layer = SharedRNN(4)
    layer(sequences)
    with pytest.raises(
        ValueError, match=r"expected axis -1 .* value 4.*shape \(3, 6, 5\)"
    ):
        layer(np.zeros((3, 6, 5), "float32"))


def test_integer_inputs():
    with pytest.raises(
        TypeError, match=r"floating-point `sequences`.*sequences.dtype=int32.*Embedding"
    ):
        SharedRNN(4)(np.zeros((2, 3, 4), "int32"))


def test_mask_of_wrong_shape(sequences):
    with pytest.raises(
        ValueError, match=r"`mask` of shape \(batch, timesteps\) = \(3, 6\)"
    ):
        SharedRNN(4)(sequences, mask=np.ones((3, 5), bool))


def test_initial_state_count_and_shape(sequences):
    with pytest.raises(ValueError, match=r"depth=2 .* list of 2 tensors.*Received 1"):
        SharedRNN(4, depth=2)(sequences, initial_state=[np.zeros((3, 4), "float32")])
    with pytest.raises(
        ValueError, match=r"shape \(batch, 4\). Received shape \(3, 5\)"
    ):
        SharedRNN(4)(sequences, initial_state=[np.zeros((3, 5), "float32")])


def test_from_simple_rnn_rejects_other_layers():
    with pytest.raises(TypeError, match=r"takes a keras.layers.SimpleRNN.*LSTM"):
        SharedRNN.from_simple_rnn(keras.layers.LSTM(3))


@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-1.0, ValueError), ("1", TypeError)]
)
def test_spectral_norm_arguments(value, error):
    with pytest.raises(error, match=r"`max_value` must be a positive float"):
        keras_seq.constraints.SpectralNorm(value)
