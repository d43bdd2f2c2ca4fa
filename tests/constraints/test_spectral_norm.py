import keras
import numpy as np

import keras_seq


def test_rescales_to_max_singular_value():
    w = np.random.RandomState(0).randn(6, 6).astype("float32") * 3
    out = keras.ops.convert_to_numpy(keras_seq.constraints.SpectralNorm(0.9)(w))
    assert np.isclose(np.linalg.svd(out, compute_uv=False)[0], 0.9, rtol=1e-5)
    # Only a rescaling: direction unchanged.
    np.testing.assert_allclose(out / out[0, 0], w / w[0, 0], rtol=1e-5)


def test_leaves_small_matrices_alone():
    w = np.eye(4, dtype="float32") * 0.5
    out = keras.ops.convert_to_numpy(keras_seq.constraints.SpectralNorm(1.0)(w))
    np.testing.assert_allclose(out, w, rtol=1e-6)


def test_applied_by_the_optimizer_during_fit():
    model = keras_seq.Sequential(
        [
            keras.Input((5, 3)),
            keras_seq.layers.SharedRNN(
                4,
                recurrent_initializer=keras.initializers.Orthogonal(gain=3.0),
                recurrent_constraint=keras_seq.constraints.SpectralNorm(1.0),
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.RandomState(0).randn(8, 5, 3).astype("float32")
    model.fit(x, np.ones((8, 1)), epochs=1, verbose=0)
    u = model.layers[0].cell.recurrent_kernel.numpy()
    assert np.linalg.svd(u, compute_uv=False)[0] <= 1.0 + 1e-5
