"""fit_reducing_depth: stages, TensorBoard and errors."""

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_seq
from keras_seq.depth import fit_reducing_depth, recurrent_levels
from keras_seq.layers import SharedRNN

# The JAX run of `make test` stays short: these run there with `-m slow`.
slow_on_jax = (
    pytest.mark.slow if keras.backend.backend() == "jax" else pytest.mark.usefixtures()
)

T, F = 8, 2


def _data(samples=64):
    rng = np.random.RandomState(0)
    x = rng.rand(samples, T, F).astype("float32")
    return x, x[:, :, :1].sum(axis=1) / T


def _model(depth=5, activation="sigmoid"):
    model = keras_seq.Sequential(
        [
            keras.Input((T, F)),
            SharedRNN(6, depth=depth, activation=activation, name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


@slow_on_jax
def test_vanishing_stack_is_reduced_and_stages_are_recorded(tmp_path):
    x, y = _data()
    model = _model()
    before = model.get_layer("rnn").get_weights()
    final, stages = fit_reducing_depth(
        model,
        x,
        y,
        epochs=3,
        patience=1,
        log_dir=tmp_path,
        batch_size=32,
        verbose=0,
        validation_data=(x[:16], y[:16]),
    )
    # Epoch 0 of the 5-level sigmoid stack vanishes through depth: a reduction.
    assert len(stages) >= 2
    first, second = stages.iloc[0], stages.iloc[1]
    assert (first.depth, first.first_epoch, first.epochs) == (5, 0, 1)
    assert "vanishing through depth" in first.verdicts
    assert second.first_epoch == 1 and second.depth < 5
    removed = second.removed.split(", ")
    assert second.depth == 5 - len(removed)
    assert stages.epochs.sum() == 3
    assert np.isfinite(stages.loss).all() and np.isfinite(stages.val_loss).all()
    assert stages.depth.iloc[-1] == len(recurrent_levels(final))
    assert stages.parameters.iloc[-1] == final.count_params()
    assert stages.method.iloc[1] == "auto"
    # Stage 0 trains the input model in place, as model.fit; later stages
    # train new keras_seq models.
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before, model.get_layer("rnn").get_weights())
    )
    assert final is not model and len(recurrent_levels(model)) == 5
    assert isinstance(final, keras_seq.Sequential) and final.compiled

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gradients"), size_guidance={"tensors": 0}
    ).Reload()
    depth = accumulator.Tensors("depth/levels")
    values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in depth]
    assert values[0] == 5 and values[-1] == stages.depth.iloc[-1]
    steps = [e.step for e in depth]
    assert len(set(steps)) == len(steps)  # one depth per step: the drop shows
    change = steps[values.index(second.depth)]
    assert values[steps.index(change - 1)] == 5
    assert len(accumulator.Tensors("depth/stage")) == len(stages)
    # Training steps keep counting across stages.
    steps = [e.step for e in accumulator.Tensors("gradients/global_norm")]
    assert steps == sorted(set(steps)) and steps[-1] == 3 * 2 - 1


def test_healthy_stack_is_not_reduced():
    x, y = _data(32)
    model = _model(depth=2, activation="tanh")
    final, stages = fit_reducing_depth(model, x, y, epochs=2, patience=1, verbose=0)
    assert len(stages) == 1 and stages.verdicts.iloc[0] == "healthy"
    assert final is model


@slow_on_jax
def test_min_depth_is_never_crossed():
    x, y = _data(32)
    final, stages = fit_reducing_depth(
        _model(depth=5), x, y, epochs=4, patience=1, min_depth=4, verbose=0
    )
    assert stages.depth.min() == 4 and len(recurrent_levels(final)) == 4


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(epochs=0), ValueError, "epochs"),
        (dict(epochs=1, min_depth=6), ValueError, "at most the model's 5"),
        (dict(epochs=1, patience=0), ValueError, "patience"),
        (dict(epochs=1, method="best"), ValueError, "method"),
        (dict(epochs=1, initial_epoch=2), ValueError, "initial_epoch"),
        (dict(epochs=1, monitor=object()), TypeError, "GradientMonitor"),
    ],
)
def test_errors(kwargs, error, match):
    x, y = _data(8)
    with pytest.raises(error, match=match):
        fit_reducing_depth(_model(), x, y, **kwargs)


def test_uncompiled_model_is_refused():
    x, y = _data(8)
    model = keras_seq.Sequential([keras.Input((T, F)), SharedRNN(3, depth=2)])
    with pytest.raises(ValueError, match="not compiled"):
        fit_reducing_depth(model, x, y, epochs=1)


@slow_on_jax
def test_moving_the_monitor_to_each_shallower_model_does_not_warn(tmp_path):
    import warnings

    import keras

    import keras_seq

    x, y = keras_seq.data.adding_problem(64, timesteps=8, seed=0)
    model = keras.Sequential(
        [
            keras.Input((8, 2)),
            keras_seq.layers.SharedRNN(4, depth=3, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    monitor = keras_seq.callbacks.GradientMonitor(every=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reduced, stages = keras_seq.depth.fit_reducing_depth(
            model, x, y, epochs=3, patience=1, monitor=monitor, verbose=0
        )
    assert len(stages) >= 2  # it did move to another model
    assert not [w for w in caught if "recorded another model" in str(w.message)]
    assert monitor._moving is False  # restored for the user's own fits
