"""The monitor's through-depth view against independent computations."""

import keras
import numpy as np
import tensorflow as tf
from reference import timestep_gradients
from tensorboard.backend.event_processing import event_accumulator

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN

T, F = 10, 2


def _data(batch=8):
    rng = np.random.RandomState(0)
    return rng.rand(batch, T, F).astype("float32"), rng.rand(batch, 1).astype("float32")


def test_depth_ratios_are_dh_norms_relative_to_the_top_level(tmp_path):
    x, y = _data()
    rnn = SharedRNN(6, depth=5, activation="sigmoid", name="rnn")
    model = keras_seq.Sequential([keras.Input((T, F)), rnn, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    monitor = GradientMonitor(every=1, log_dir=tmp_path)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[monitor])

    # The sigmoid reference: every level's ||dL/dh|| over all steps.
    reference = keras_seq.Sequential([keras.Input((T, F)), rnn, model.layers[-1]])
    norms, _, _ = timestep_gradients(reference, x, y, activation=tf.sigmoid)
    total = {name: np.sqrt(np.sum(v**2)) for name, v in norms.items()}
    top = total["rnn/level_4"]
    frame = monitor.to_frame()
    depth = monitor.diagnosis().depth
    for name, value in total.items():
        np.testing.assert_allclose(depth.levels[name].ratio_to_top, value / top, 1e-4)
        np.testing.assert_allclose(
            frame[f"depth_ratio/{name}"].iloc[0], value / top, 1e-4
        )
    assert depth.source["rnn/level_0"] == "dL/dh"
    # Sigmoid: ~4x less per level down, ~4e-3 at the bottom of five.
    expected = [name for name, value in total.items() if value / top < 1e-2]
    assert "rnn/level_0" in expected
    assert depth.vanishing == expected
    assert monitor.diagnosis().vanishing_through_depth == expected
    assert not monitor.diagnosis().healthy
    assert "vanishing through depth" in monitor.report()

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradients"), size_guidance={"tensors": 0}
    ).Reload()
    assert "gradients/depth_ratio/rnn/level_0" in accumulator.Tags()["tensors"]


def test_builtin_stack_compares_weight_gradient_norms():
    x, y = _data()
    model = keras_seq.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.LSTM(4, return_sequences=True, name="low"),
            keras.layers.GRU(4, name="high"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[monitor])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x)))
    low, high = (model.get_layer(n).trainable_variables for n in ("low", "high"))
    grads = tape.gradient(loss, low + high)
    low_norm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in grads[: len(low)]))
    high_norm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in grads[len(low) :]))
    depth = monitor.diagnosis().depth
    assert depth.source == {"low/level_0": "weights", "high/level_0": "weights"}
    np.testing.assert_allclose(
        depth.levels["low/level_0"].ratio_to_top, low_norm / high_norm, rtol=1e-4
    )


def test_healthy_tanh_stack_and_single_level_have_no_depth_verdict():
    x, y = _data()
    deep = keras_seq.Sequential(
        [keras.Input((T, F)), SharedRNN(6, depth=3, name="rnn"), keras.layers.Dense(1)]
    )
    deep.compile(optimizer="sgd", loss="mse")
    monitor = GradientMonitor(every=1)
    deep.fit(x, y, verbose=0, callbacks=[monitor])
    assert monitor.diagnosis().depth.vanishing == []
    assert monitor.diagnosis().healthy

    single = keras_seq.Sequential(
        [keras.Input((T, F)), SharedRNN(6, name="rnn"), keras.layers.Dense(1)]
    )
    single.compile(optimizer="sgd", loss="mse")
    alone = GradientMonitor(every=1)
    single.fit(x, y, verbose=0, callbacks=[alone])
    assert alone.diagnosis().depth is None
    assert not any(c.startswith("depth_ratio/") for c in alone.to_frame().columns)
