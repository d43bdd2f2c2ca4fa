"""GradientMonitor on plain Keras models: Sequential, functional and
subclassed, as they are; Keras's own training function back after fit; the
traced functions reused by a second fit."""

import keras
import numpy as np
import pytest
from reference import timestep_gradients

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN
from keras_seq.monitoring import train_step

T, B, F = 6, 4, 3


def _data():
    rng = np.random.RandomState(0)
    return rng.randn(B, T, F).astype("float32"), rng.randn(B, 2).astype("float32")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.rnn = SharedRNN(5, depth=2, name="rnn")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.rnn(x))


def _plain(kind):
    keras.utils.set_random_seed(1)
    rnn, head = SharedRNN(5, depth=2, name="rnn"), keras.layers.Dense(2, name="head")
    if kind == "sequential":
        model = keras.Sequential([keras.Input((T, F)), rnn, head])
    elif kind == "functional":
        inputs = keras.Input((T, F))
        model = keras.Model(inputs, head(rnn(inputs)))
    else:
        model = Subclassed()
        model(np.zeros((1, T, F), "float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_plain_keras_models_record_exact_timestep_norms(kind):
    model = _plain(kind)
    x, y = _data()
    before = model.get_weights()
    reference = keras_seq.Sequential(
        [keras.Input((T, F)), SharedRNN(5, depth=2), keras.layers.Dense(2)]
    )
    reference.set_weights(before)
    norms, contributions, loss = timestep_gradients(reference, x, y)

    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=B, shuffle=False, verbose=0, callbacks=[monitor])
    assert type(model) is not keras_seq.Sequential  # not rebuilt
    frame = monitor.timestep_frame()
    assert sorted(frame.layer.unique()) == ["rnn/level_0", "rnn/level_1"]
    for i, name in enumerate(["rnn/level_0", "rnn/level_1"]):
        rows = frame[frame.layer == name].sort_values("timestep")
        reference_norms = list(norms.values())[i]
        np.testing.assert_allclose(rows.grad_norm, reference_norms, rtol=1e-4)
        np.testing.assert_allclose(
            rows.contribution, list(contributions.values())[i], rtol=1e-4, atol=1e-7
        )
    assert monitor.to_frame().loss.iloc[0] == pytest.approx(loss, rel=1e-5)
    assert "horizon/rnn/level_0" in monitor.to_frame()
    # Training was Keras's: the weights moved by SGD on the same gradient.
    assert not np.allclose(model.get_weights()[0], before[0])


def test_keras_gets_its_own_training_function_back_after_fit():
    model = _plain("sequential")
    x, y = _data()
    model.fit(x, y, verbose=0)
    keras_function = model.train_function
    monitor = GradientMonitor(every=1, on_nan="skip")
    model.fit(x, y, verbose=0, callbacks=[monitor])
    assert model.train_function is keras_function
    # Without the monitor a NaN batch goes through Keras's step (no guard).
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    model.fit(bad, y, batch_size=B, verbose=0)
    assert np.isnan(model.get_weights()[0]).any()


class OwnStep(keras.Sequential):
    def train_step(self, data):  # a user's custom step
        return super().train_step(data)


def test_model_with_its_own_train_step_is_refused():
    model = OwnStep([keras.Input((T, F)), keras.layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, _ = _data()
    message = r"OwnStep overrides `train_step`.*compute_loss"
    with pytest.raises(TypeError, match=message):
        model.fit(x, np.ones((B, 2)), verbose=0, callbacks=[GradientMonitor(every=1)])


def test_something_that_is_not_a_model_is_refused():
    with pytest.raises(TypeError, match=r"keras.Model.*Received: Dense"):
        GradientMonitor(every=1).set_model(keras.layers.Dense(2))


def test_second_fit_with_the_same_monitor_does_not_retrace(monkeypatch):
    traces = []
    step = train_step.monitored_step

    def counting_step(training, data, record):
        traces.append(record)  # Python runs only while tracing
        return step(training, data, record)

    monkeypatch.setattr(train_step, "monitored_step", counting_step)
    model = _plain("functional")
    x, y = _data()
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    monitor = GradientMonitor(every=2)

    def fit(callbacks):
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=callbacks)

    fit([monitor])
    first = len(traces)
    assert sorted(set(traces)) == [False, True]
    fit([monitor])
    assert len(traces) == first  # reused
    assert [r["step"] for r in monitor.records] == [0, 2]
    assert [r["fit"] for r in monitor.records] == [0, 1]
    # Without the monitor Keras trains with its own step; a recompile retraces.
    fit([])
    assert len(traces) == first
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    fit([monitor])
    assert len(traces) > first


def test_recompiling_with_the_same_optimizer_and_new_metrics_rebuilds():
    model = _plain("sequential")
    x, y = _data()
    monitor = GradientMonitor(every=1)
    model.fit(x, y, verbose=0, callbacks=[monitor])
    model.compile(optimizer=model.optimizer, loss="mse", metrics=["mae"])
    history = model.fit(x, y, verbose=0, callbacks=[monitor])
    assert "mae" in history.history and np.isfinite(history.history["mae"][0])
