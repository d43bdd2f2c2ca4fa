import keras
import numpy as np
import pytest
from conftest import assert_close

from keras_seq.layers import SharedRNN, SharedRNNCell


def test_weights_match_simple_rnn_cell_order_and_shapes(sequences):
    cell = SharedRNNCell(5)
    reference = keras.layers.SimpleRNNCell(5)
    cell.build((None, 4))
    reference.build((None, 4))
    assert [w.name for w in cell.weights] == [w.name for w in reference.weights]
    assert [w.shape for w in cell.weights] == [w.shape for w in reference.weights]


@pytest.mark.xfail(
    keras.backend.backend() == "jax",
    strict=True,
    reason="Keras's JAX rnn() (keras/src/backend/jax/rnn.py, Keras 3.15.1) "
    "shows a masked step's output as the cell's *first* state; a "
    "SharedRNNCell's output is its last (top) state. SharedRNN itself is "
    "exact; this notices when Keras fixes it.",
)
@pytest.mark.parametrize("share_depth", [False, True])
def test_in_keras_rnn_equals_shared_rnn(sequences, padded_mask, share_depth):
    layer = SharedRNN(5, depth=3, share_depth=share_depth, return_sequences=True)
    layer(sequences)
    rnn = keras.layers.RNN(
        SharedRNNCell(5, depth=3, share_depth=share_depth), return_sequences=True
    )
    rnn(sequences)
    rnn.set_weights(layer.get_weights())
    assert_close(rnn(sequences, mask=padded_mask), layer(sequences, mask=padded_mask))


def test_step_matches_simple_rnn_cell():
    x = np.random.RandomState(0).randn(3, 4).astype("float32")
    h = np.random.RandomState(1).randn(3, 5).astype("float32")
    cell, reference = SharedRNNCell(5), keras.layers.SimpleRNNCell(5)
    cell.build((None, 4))
    reference.build((None, 4))
    cell.set_weights(reference.get_weights())
    out, state = cell(x, [h])
    ref_out, ref_state = reference(x, [h])
    assert_close(out, ref_out)
    assert_close(state[0], ref_state[0])


def test_identity_initializer_gives_irnn(sequences):
    layer = SharedRNN(
        5,
        activation="relu",
        recurrent_initializer=keras.initializers.Identity(gain=0.5),
    )
    layer(sequences)
    np.testing.assert_array_equal(
        layer.cell.recurrent_kernel.numpy(), 0.5 * np.eye(5, dtype="float32")
    )
    # The gain survives the config (Keras's own Identity loses it).
    clone = SharedRNN.from_config(layer.get_config())
    clone(sequences)
    np.testing.assert_array_equal(
        clone.cell.recurrent_kernel.numpy(), 0.5 * np.eye(5, dtype="float32")
    )


def test_orthogonal_gain():
    layer = SharedRNN(6, recurrent_initializer=keras.initializers.Orthogonal(gain=2.0))
    layer.build((None, None, 3))
    u = layer.cell.recurrent_kernel.numpy()
    assert_close(u.T @ u, 4.0 * np.eye(6))


def test_unshared_levels_start_from_different_weights():
    # One unseeded Keras initializer instance returns the same values on
    # every call: each level must get its own draw.
    cell = SharedRNNCell(4, depth=3)
    cell.build((None, 4))
    kernels = [cell.level_weights(i)[0].numpy() for i in range(3)]
    recurrent = [cell.level_weights(i)[1].numpy() for i in range(3)]
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not np.array_equal(kernels[a], kernels[b])
        assert not np.array_equal(recurrent[a], recurrent[b])
