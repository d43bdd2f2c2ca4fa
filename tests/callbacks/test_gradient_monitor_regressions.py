"""Behaviours a mutation trial showed untested: the idle clip factor, a
go_backwards horizon at the callback level, a single exploding spike, and
non-finite gradients behind a finite forward pass."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seq
from keras_seq import diagnostics
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN


def _model(rnn, steps, loss="mse", optimizer=None):
    model = keras_seq.Sequential(
        [keras.Input((steps, 2)), rnn, keras.layers.Dense(1, name="head")]
    )
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.01), loss=loss)
    return model


def test_global_clipnorm_that_does_not_fire_changes_nothing():
    rng = np.random.RandomState(0)
    x, y = rng.randn(4, 7, 2).astype("float32"), rng.randn(4, 1).astype("float32")
    lr = 1.0
    model = _model(
        SharedRNN(5, depth=2, share_depth=True, name="rnn"),
        7,
        optimizer=keras.optimizers.SGD(lr, global_clipnorm=1e6),
    )
    before = [w.copy() for w in model.get_weights()]
    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=4, verbose=0, callbacks=[monitor])
    after = model.get_weights()
    row = monitor.to_frame().iloc[0]
    applied = np.sqrt(sum(np.sum(((b - a) / lr) ** 2) for b, a in zip(before, after)))
    np.testing.assert_allclose(row.applied_norm, applied, rtol=1e-5)
    np.testing.assert_allclose(row.applied_norm, row.global_norm, rtol=1e-6)
    # Contributions add up to the (unclipped) recurrent-kernel gradients.
    frame = monitor.timestep_frame()
    for names, k in ((["rnn/level_0"], 1), (["rnn/level_1"], 4)):
        total = frame[frame.layer.isin(names)].contribution.sum()
        np.testing.assert_allclose(
            total, np.linalg.norm((before[k] - after[k]) / lr), rtol=1e-5
        )


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_horizon_and_decay_count_back_in_processing_order(go_backwards):
    steps = 60
    x = np.random.RandomState(0).randn(8, steps, 2).astype("float32")
    rnn = SharedRNN(
        6,
        go_backwards=go_backwards,
        recurrent_initializer=keras.initializers.Orthogonal(0.1),
        name="rnn",
    )
    model = _model(rnn, steps)
    monitor = GradientMonitor(every=1)
    model.fit(x, np.ones((8, 1)), batch_size=8, verbose=0, callbacks=[monitor])
    verdict = monitor.diagnosis().sublayers["rnn/level_0"]
    assert verdict.vanishing and 1 <= verdict.horizon < 6 and verdict.decay < 0.3
    norms = monitor.timestep_frame().sort_values("timestep").grad_norm.to_numpy()
    processing = norms[::-1] if go_backwards else norms
    assert verdict.horizon == diagnostics.gradient_horizon(processing)
    # The gradient enters at the last processed step: input step 0 backwards.
    assert np.argmax(norms) == (0 if go_backwards else steps - 1)
    row = monitor.to_frame().iloc[0]
    assert row["horizon/rnn/level_0"] == verdict.horizon
    assert row["decay/rnn/level_0"] == pytest.approx(verdict.decay)


def _fit_targets(y):
    x = np.random.RandomState(0).randn(len(y), 5, 2).astype("float32")
    # A zero learning rate: the targets alone set each step's norm.
    model = _model(SharedRNN(4, name="rnn"), 5, optimizer=keras.optimizers.SGD(0.0))
    monitor = GradientMonitor(every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=[monitor])
    exploding = [w for w in caught if "Exploding" in str(w.message)]
    return monitor, exploding


def test_a_spike_is_not_explosion_sustained_growth_is_once_per_episode():
    y = np.ones((48, 1), "float32")
    y[24:28] = 1e4  # batch 6 of 12 only: a 1e4x spike
    monitor, caught = _fit_targets(y)
    assert caught == [] and monitor.diagnosis().exploding_steps == []
    y[24:36] = 1e4  # batches 6, 7, 8: three records at >= 100x the start
    monitor, caught = _fit_targets(y)
    diagnosis = monitor.diagnosis()
    assert diagnosis.exploding_steps == [8]
    assert not diagnosis.exploding  # the latest step (11) is normal again
    # One warning, pointing at the user's fit line (this file), with evidence.
    (warning,) = caught
    assert warning.filename == __file__
    assert "Exploding gradients at step 8: global norm" in str(warning.message)
    assert "its starting level" in str(warning.message)
    assert "- exploding: at step 8 (1 step judged exploding), last at step 8 (" in (
        monitor.report()
    )
    assert monitor.report().rstrip().count("now: no") == 1
    y[24:] = 1e4  # from batch 6 to the end: exploding now, warned once
    monitor, caught = _fit_targets(y)
    assert len(caught) == 1 and monitor.diagnosis().exploding_steps == [8, 9, 10, 11]
    assert "- exploding: yes, at step 11 (global norm" in monitor.report()
    assert "exploding at steps 8-11 (4 steps judged exploding)" in monitor.report()


def _sqrt_loss(y_true, y_pred):
    # Finite (zero) forward value, NaN gradient: d sqrt(u)/du at 0 is inf.
    return tf.sqrt(tf.reduce_mean(tf.square(y_true - y_pred)) * 0.0)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_nonfinite_gradients_behind_a_finite_forward_pass(go_backwards):
    steps = 6
    x = np.random.RandomState(0).randn(4, steps, 2).astype("float32")
    rnn = SharedRNN(3, depth=2, go_backwards=go_backwards, name="rnn")
    model = _model(rnn, steps, loss=_sqrt_loss)
    monitor = GradientMonitor(every=1, on_nan="skip")
    model.fit(x, np.ones((4, 1)), batch_size=4, verbose=0, callbacks=[monitor])
    assert monitor.skipped_steps == 1
    nonfinite = monitor.diagnosis().nonfinite
    # The backward pass meets the NaN first in the top level, at the last
    # processed step: input step T-1 forwards, 0 backwards.
    assert nonfinite.layer == "rnn/level_1"
    assert nonfinite.timestep == (0 if go_backwards else steps - 1)
    top = monitor.diagnosis().sublayers["rnn/level_1"]
    assert top.nonfinite_timestep == nonfinite.timestep
    assert f"gradient non-finite from time step {nonfinite.timestep}" in (
        monitor.report()
    )
    assert (
        f"first at training step 0, in rnn/level_1 at time step "
        f"{nonfinite.timestep} (input order)" in monitor.report()
    )
    # Non-finite gradients behind a finite loss and forward pass: an overflow
    # of the backward pass, so exploding too.
    assert monitor.diagnosis().exploding_steps == [0]
    assert monitor.to_frame().loss.iloc[0] == 0.0


def test_moving_to_another_model_restarts_the_jump_baseline():
    # fit_reducing_depth moves one monitor to a shallower model whose norms
    # are far larger: that is no explosion.
    rng = np.random.RandomState(0)
    x = rng.randn(16, 5, 2).astype("float32")
    monitor = GradientMonitor(every=1, on_explode="stop", explode_threshold=1e12)
    small = _model(SharedRNN(4, name="rnn"), 5, optimizer=keras.optimizers.SGD(0.0))
    small.fit(x, np.zeros((16, 1)), batch_size=4, verbose=0, callbacks=[monitor])
    large = _model(SharedRNN(4, name="rnn"), 5, optimizer=keras.optimizers.SGD(0.0))
    large.fit(x, np.full((16, 1), 1e3), batch_size=4, verbose=0, callbacks=[monitor])
    norms = monitor.to_frame().global_norm.to_numpy()
    assert norms[4:].min() > 10 * np.median(norms[:4])  # a jump by the rule
    assert monitor.diagnosis().exploding_steps == []
    assert not large.stop_training
    assert monitor.to_frame().step.tolist() == list(range(8))


@pytest.mark.parametrize("every", [1, 2], ids=["recorded", "light"])
def test_skip_guards_adam_from_a_gradient_whose_square_overflows(every):
    # Linear recurrence, inputs ~1e21, mean absolute error: the loss and every
    # gradient element are finite (~1e20), but their squares are not, so
    # Adam's second moment would become Inf, then Inf - Inf = NaN.
    x = np.full((4, 3, 2), 1e21, "float32")
    y = np.zeros((4, 1), "float32")
    data = tf.data.Dataset.from_tensors((x, y)).concatenate(
        tf.data.Dataset.from_tensors((x * 0, y))  # then a harmless batch
    )

    def train(on_nan):
        keras.utils.set_random_seed(0)
        model = _model(
            SharedRNN(3, activation="linear", name="rnn"),
            3,
            loss="mae",
            optimizer=keras.optimizers.Adam(),
        )
        monitor = GradientMonitor(every=every, on_nan=on_nan)
        model.fit(data, verbose=0, callbacks=[monitor])
        return model, monitor

    model, monitor = train("skip")
    assert monitor.skipped_steps == 1
    assert monitor.diagnosis().nonfinite.step == 0
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(v.numpy()).all() for v in model.optimizer.variables)

    unguarded, monitor = train("warn")
    assert monitor.skipped_steps == 0
    assert not all(np.isfinite(w).all() for w in unguarded.get_weights())
