"""Per-time-step statistics against an independent eager computation."""

import keras
import numpy as np
import pytest
from reference import timestep_gradients

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN

T, B, F, U = 7, 4, 3, 5


def _data(seed=0, masked=False, sequences=False):
    rng = np.random.RandomState(seed)
    x = rng.randn(B, T, F).astype("float32")
    mask = None
    if masked:
        mask = np.ones((B, T), bool)
        mask[0, 5:] = False  # trailing padding
        mask[1, :2] = False  # leading padding
        x[~mask] = 0.0
    y = rng.randn(*((B, T, 2) if sequences else (B, 2))).astype("float32")
    return x, y, mask


def _fit_one_step(rnn, x, y, masked, optimizer=None, **compile_kwargs):
    layers = [keras.Input((T, F))]
    if masked:
        layers.append(keras.layers.Masking(0.0))
    model = keras_seq.Sequential(layers + [rnn, keras.layers.Dense(2)])
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1), loss="mse", **compile_kwargs
    )
    before = [w.copy() for w in model.get_weights()]
    monitor = GradientMonitor(every=1)
    model.fit(
        x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[monitor]
    )
    return model, monitor, before


def _reference(model, before, x, y, mask):
    # Rebuild the model's layers (without Masking) holding the weights the
    # step started from, for the eager reference.
    reference = keras_seq.Sequential(
        [keras.Input((T, F))]
        + [
            layer
            for layer in model.layers
            if not isinstance(layer, keras.layers.Masking)
        ]
    )
    after = model.get_weights()
    model.set_weights(before)
    try:
        return timestep_gradients(reference, x, y, mask)
    finally:
        model.set_weights(after)


CASES = {
    "depth1": dict(rnn=lambda: SharedRNN(U, name="rnn"), masked=False),
    "depth3-shared-sequences": dict(
        rnn=lambda: SharedRNN(
            U, depth=3, share_depth=True, return_sequences=True, name="rnn"
        ),
        masked=False,
    ),
    "depth2-go-backwards-masked": dict(
        rnn=lambda: SharedRNN(U, depth=2, go_backwards=True, name="rnn"), masked=True
    ),
    "bidirectional-masked": dict(
        rnn=lambda: keras.layers.Bidirectional(
            SharedRNN(U, depth=2, return_sequences=True, name="rnn")
        ),
        masked=True,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_timestep_norms_and_contributions_match_eager_reference(case):
    spec = CASES[case]
    rnn = spec["rnn"]()
    x, y, mask = _data(masked=spec["masked"], sequences=rnn.return_sequences)
    model, monitor, before = _fit_one_step(rnn, x, y, spec["masked"])
    norms, contributions, loss = _reference(model, before, x, y, mask)

    frame = monitor.timestep_frame()
    assert sorted(frame.layer.unique()) == sorted(norms)
    for name in norms:
        rows = frame[frame.layer == name].sort_values("timestep")
        np.testing.assert_allclose(rows.grad_norm, norms[name], rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(
            rows.contribution,
            contributions[name],
            rtol=1e-4,
            atol=1e-4 * np.abs(contributions[name]).max(),
        )
    assert monitor.to_frame().loss.iloc[0] == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize(
    "clip",
    [{}, {"clipnorm": 0.01}, {"global_clipnorm": 0.02}],
    ids=["no-clip", "clipnorm", "global-clipnorm"],
)
def test_contributions_sum_to_the_applied_gradient(clip):
    x, y, _ = _data(seed=1)
    lr = 1.0  # large steps keep float32 weight differences precise
    rnn = SharedRNN(U, depth=3, share_depth=True, name="rnn")
    model, monitor, before = _fit_one_step(
        rnn, x, y, False, optimizer=keras.optimizers.SGD(lr, **clip)
    )
    after = model.get_weights()
    # Weights order: kernel, recurrent_kernel, bias, then the shared set.
    applied = {
        ("rnn/level_0",): (before[1] - after[1]) / lr,
        ("rnn/level_1", "rnn/level_2"): (before[4] - after[4]) / lr,
    }
    frame = monitor.timestep_frame()
    for names, gradient in applied.items():
        total = frame[frame.layer.isin(names)].contribution.sum()
        np.testing.assert_allclose(total, np.linalg.norm(gradient), rtol=1e-5)
    row = monitor.to_frame().iloc[0]
    applied_all = np.sqrt(
        sum(np.sum(((b - a) / lr) ** 2) for b, a in zip(before, after))
    )
    np.testing.assert_allclose(row.applied_norm, applied_all, rtol=1e-5)
    if clip:
        assert row.global_norm > row.applied_norm
    else:
        np.testing.assert_allclose(row.global_norm, row.applied_norm, rtol=1e-6)
