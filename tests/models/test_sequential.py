import keras
import numpy as np

import keras_seq


def _recall_task(n=256, steps=6, seed=0):
    """Target: the first step's first feature, which only memory can recall."""
    x = np.random.RandomState(seed).randn(n, steps, 4).astype("float32")
    return x, x[:, :1, 0]


def test_fit_reduces_loss_on_a_memory_task(tiny_model):
    x, y = _recall_task()
    tiny_model.add(keras.layers.Dense(1))
    tiny_model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    before = tiny_model.evaluate(x, y, verbose=0)
    history = tiny_model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    after = tiny_model.evaluate(x, y, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The target has variance ~1: well below it means the layer remembers.
    assert after < 0.25 * before and after < 0.2


def test_behaves_as_keras_sequential(tiny_model, sequences):
    assert isinstance(tiny_model, keras.Sequential)
    lines = []
    tiny_model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    params = (4 * 5 + 5 * 5 + 5) + (5 * 5 + 5 * 5 + 5) + (5 * 2 + 2)
    assert "rnn (SharedRNN)" in text
    assert f"Total params: {params} " in text
    tiny_model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    results = tiny_model.evaluate(sequences, np.zeros((3, 2)), verbose=0)
    assert len(results) == 2 and all(np.isfinite(results))
    predictions = tiny_model.predict(sequences, verbose=0)
    np.testing.assert_allclose(predictions, tiny_model(sequences), rtol=1e-5, atol=1e-6)


def test_functional_model_fits(sequences):
    inputs = keras.Input((6, 4))
    outputs = keras.layers.Dense(1)(keras_seq.layers.SharedRNN(3)(inputs))
    model = keras_seq.Model(inputs, outputs)
    assert isinstance(model, keras.Model)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(sequences, np.ones((3, 1)), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
