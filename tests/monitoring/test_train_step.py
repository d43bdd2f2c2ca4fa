"""The monitored training step trains exactly as Keras's own step, under the
options Keras offers (clipping, loss scaling, steps_per_execution, XLA)."""

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN


def _data():
    rng = np.random.RandomState(0)
    return rng.randn(16, 6, 3).astype("float32"), rng.randn(16, 2).astype("float32")


def _train(monitor, optimizer="adam", dropout=0.2, **compile_kwargs):
    keras.utils.set_random_seed(3)
    model = keras_seq.Sequential(
        [
            keras.Input((6, 3)),
            SharedRNN(
                4, depth=2, dropout=dropout, recurrent_dropout=dropout, name="rnn"
            ),
            keras.layers.Dense(2, name="head", dtype="float32"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.get(optimizer), loss="mse", **compile_kwargs
    )
    x, y = _data()
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[monitor] if monitor else [],
    )
    return model, history


@pytest.mark.parametrize(
    "optimizer",
    [
        "adam",
        {"class_name": "sgd", "config": {"learning_rate": 0.1, "clipnorm": 0.05}},
        {"class_name": "rmsprop", "config": {"global_clipnorm": 0.1}},
    ],
    ids=["adam", "sgd-clipnorm", "rmsprop-global-clipnorm"],
)
def test_same_updates_as_keras(optimizer):
    plain, plain_history = _train(None, optimizer)
    monitored, history = _train(GradientMonitor(every=2), optimizer)
    for a, b in zip(monitored.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        history.history["loss"], plain_history.history["loss"], rtol=1e-5
    )
    # No per-step statistics in History: the epoch summary only.
    assert list(history.history) == ["loss", "grad_norm", "grad_horizon"]


def test_steps_per_execution_records_the_last_step_of_each_execution():
    plain, _ = _train(None, steps_per_execution=2)
    monitor = GradientMonitor(every=1)
    monitored, _ = _train(monitor, steps_per_execution=2)
    assert monitor.to_frame().step.tolist() == [1, 3, 5, 7]
    for a, b in zip(monitored.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # every=4 with executions of 2 steps records executions holding a multiple of 4
    sparse = GradientMonitor(every=4)
    _train(sparse, steps_per_execution=2)
    assert sparse.to_frame().step.tolist() == [1, 5]


def test_jit_compile_gives_the_same_statistics():
    graph = GradientMonitor(every=1)
    xla = GradientMonitor(every=1)
    # No dropout: XLA draws other random numbers.
    _train(graph, dropout=0.0, jit_compile=False)
    _train(xla, dropout=0.0, jit_compile=True)
    for column in ["global_norm", "norm/rnn", "horizon/rnn/level_0"]:
        np.testing.assert_allclose(
            xla.to_frame()[column], graph.to_frame()[column], rtol=1e-4
        )
    np.testing.assert_allclose(
        xla.timestep_frame().grad_norm, graph.timestep_frame().grad_norm, rtol=1e-4
    )


def test_mixed_precision_undoes_loss_scaling():
    reference = GradientMonitor(every=1)
    _train(reference, dropout=0.0)
    keras.config.set_dtype_policy("mixed_float16")
    monitor = GradientMonitor(every=1)
    mixed, _ = _train(monitor, dropout=0.0)
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    frame, expected = monitor.to_frame(), reference.to_frame()
    # Same first step (same weights and data), float16 precision.
    np.testing.assert_allclose(
        frame.global_norm.iloc[0], expected.global_norm.iloc[0], rtol=2e-2
    )
    first = monitor.timestep_frame().query("step == 0").grad_norm.to_numpy()
    first_ref = reference.timestep_frame().query("step == 0").grad_norm.to_numpy()
    np.testing.assert_allclose(first, first_ref, rtol=5e-2, atol=1e-3 * first_ref.max())
    assert frame.finite.all()


def _keras_semantics_model(optimizer, frozen=False, model_class=None):
    keras.utils.set_random_seed(5)
    layers = [
        keras.Input((6, 3)),
        SharedRNN(4, return_sequences=True, name="rnn"),
        keras.layers.LSTM(3, name="lstm"),
        keras.layers.Dense(2, name="head"),
    ]
    model = (model_class or keras.Sequential)(layers)
    if frozen:
        model.trainable = False
    model.compile(optimizer=keras.optimizers.get(optimizer), loss="mse")
    return model


def _fit_both(every, optimizer, **kwargs):
    """Weights after the same fit without and with the monitor."""
    x, y = _data()
    weights = []
    for monitor in (None, GradientMonitor(every=every)):
        model = _keras_semantics_model(optimizer, **kwargs)
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[monitor] if monitor else [],
        )
        weights.append(model.get_weights() + [model.optimizer.iterations.numpy()])
    return weights, monitor


# Keras's step semantics through the optimizer's own path, bit for bit
# (Keras is deterministic here: no dropout).
@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize(
    "optimizer",
    [
        {"class_name": "adam", "config": {"clipvalue": 1e-3}},
        {"class_name": "adam", "config": {"clipnorm": 1e-2}},
        {"class_name": "sgd", "config": {"global_clipnorm": 1e-2}},
        {"class_name": "adam", "config": {"gradient_accumulation_steps": 3}},
        {
            "class_name": "sgd",
            "config": {"gradient_accumulation_steps": 2, "clipnorm": 1e-2},
        },
    ],
    ids=["clipvalue", "clipnorm", "global_clipnorm", "accumulate", "accumulate-clip"],
)
def test_bit_equal_to_keras_step(optimizer, every):
    (plain, monitored), monitor = _fit_both(every, optimizer)
    for a, b in zip(monitored, plain):
        np.testing.assert_array_equal(a, b)
    assert len(monitor.records) == len(range(0, 8, every))


def test_clipvalue_applied_norm_is_the_clipped_gradient():
    # One SGD step of rate 1: the weights move by exactly the applied
    # (value-clipped) gradient, an independent measure of applied_norm.
    x, y = _data()
    model = _keras_semantics_model(
        {"class_name": "sgd", "config": {"learning_rate": 1.0, "clipvalue": 1e-3}}
    )
    before = model.get_weights()
    monitor = GradientMonitor(every=1)
    model.fit(x[:4], y[:4], batch_size=4, verbose=0, callbacks=[monitor])
    moved = np.sqrt(
        sum(np.sum((b - a) ** 2) for b, a in zip(before, model.get_weights()))
    )
    row = monitor.to_frame().iloc[0]
    np.testing.assert_allclose(row.applied_norm, moved, rtol=1e-4)
    assert row.global_norm > 2 * row.applied_norm  # the clip bit


def test_compute_loss_without_training_argument():
    # A compute_loss override written before Keras 3.4 takes no `training`:
    # Keras's step calls it without; so does the monitored step.
    class OldLoss(keras.Sequential):
        calls = 0

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
            OldLoss.calls += 1
            return keras.ops.mean(keras.ops.abs(y - y_pred))  # MAE, not mse

    (plain, monitored), monitor = _fit_both(2, "adam", model_class=OldLoss)
    for a, b in zip(monitored, plain):
        np.testing.assert_array_equal(a, b)
    assert OldLoss.calls > 0
    x, y = _data()
    model = _keras_semantics_model("adam", model_class=OldLoss)
    expected = np.mean(np.abs(y[:4] - model.predict_on_batch(x[:4])))
    model.fit(x[:4], y[:4], batch_size=4, verbose=0, callbacks=[GradientMonitor()])
    np.testing.assert_allclose(monitor.to_frame().loss.iloc[0] > 0, True)
    assert model.history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_model_without_trainable_weights():
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        (plain, monitored), monitor = _fit_both(1, "adam", frozen=True)
    for a, b in zip(monitored, plain):
        np.testing.assert_array_equal(a, b)
    assert monitored[-1] == 0  # no update, as Keras
    frame = monitor.to_frame()
    assert len(frame) == 8 and frame.global_norm.eq(0).all()
    assert not frame.skipped.any()
    # The gradient through time is still there (dL/dh_t of frozen layers).
    steps = monitor.timestep_frame()
    assert set(steps.layer) == {"rnn/level_0", "lstm/level_0"}
    assert (steps.grad_norm > 0).all()
