"""Verdicts on padded batches describe the valid steps only."""

import keras
import numpy as np
import pytest
from reference import timestep_gradients

import keras_seq
from keras_seq.callbacks import GradientMonitor
from keras_seq.layers import SharedRNN

VOCAB, LENGTH, PADDED = 20, 9, 12


def _token_model(rnn):
    model = keras_seq.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 4, mask_zero=True),
            rnn,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _record(model, weights, x, y):
    model.set_weights(weights)
    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=len(x), shuffle=False, verbose=0, callbacks=[monitor])
    return monitor


def _twins(rnn):
    tokens = np.random.RandomState(0).randint(1, VOCAB, (4, LENGTH)).astype("int32")
    padded = np.zeros((4, PADDED), "int32")
    padded[:, :LENGTH] = tokens  # end padding, as pad_sequences(padding="post")
    y = np.random.RandomState(1).randn(4, 1).astype("float32")
    model = _token_model(rnn)
    weights = model.get_weights()
    np.testing.assert_allclose(
        model.predict_on_batch(tokens), model.predict_on_batch(padded), rtol=1e-6
    )
    return _record(model, weights, tokens, y), _record(model, weights, padded, y)


def _assert_same_verdicts(unpadded, padded):
    expected, actual = unpadded.diagnosis(), padded.diagnosis()
    assert list(actual.sublayers) == list(expected.sublayers)
    for name, want in expected.sublayers.items():
        got = actual.sublayers[name]
        assert got == want, name  # timesteps, horizon, decay, vanishing, ...
        np.testing.assert_allclose(got.norms, want.norms, rtol=1e-5)
    assert actual.vanishing == expected.vanishing
    for column in unpadded.to_frame().columns:
        if column.startswith(("horizon/", "decay/")):
            np.testing.assert_allclose(
                padded.to_frame()[column], unpadded.to_frame()[column], rtol=1e-6
            )


def test_padded_batch_gets_the_verdicts_of_its_unpadded_twin():
    rnn = SharedRNN(
        8,
        depth=2,
        recurrent_initializer=keras.initializers.Orthogonal(gain=0.5),
        name="rnn",
    )
    unpadded, padded = _twins(rnn)
    _assert_same_verdicts(unpadded, padded)
    level_0 = padded.diagnosis().sublayers["rnn/level_0"]
    # Spectral radius 0.5: ~0.5 per step, 1e-3 of the peak 9 steps back.
    assert (level_0.timesteps, level_0.horizon, level_0.verdict) == (
        LENGTH,
        9,
        "vanishing",
    )
    assert level_0.fall == pytest.approx(level_0.norms[0] / level_0.norms.max())
    # The frame says which steps were padding.
    frame = padded.timestep_frame()
    rows = frame[frame.layer == "rnn/level_0"].sort_values("timestep")
    np.testing.assert_array_equal(
        rows.valid_fraction, [1.0] * LENGTH + [0.0] * (PADDED - LENGTH)
    )
    assert (unpadded.timestep_frame().valid_fraction == 1.0).all()


def test_bidirectional_with_padding_gets_the_verdicts_of_its_unpadded_twin():
    unpadded, padded = _twins(
        keras.layers.Bidirectional(SharedRNN(6, depth=2, name="rnn"))
    )
    _assert_same_verdicts(unpadded, padded)
    forward = padded.diagnosis().sublayers["forward_rnn/level_0"]
    assert forward.horizon == LENGTH and forward.verdict == "ok"


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_end_aligned_norms_match_each_sequence_run_alone(go_backwards):
    # Mixed lengths, leading and trailing padding: each sequence's valid steps,
    # counted back from its own end, against an eager reference run on that
    # sequence alone (unpadded). The batch loss is the mean over B sequences,
    # so each sequence's gradient in the batch is 1/B of its gradient alone.
    steps, features, units = 8, 3, 5
    rng = np.random.RandomState(3)
    batch = 4
    x = rng.randn(batch, steps, features).astype("float32")
    valid = np.zeros((batch, steps), bool)
    valid[0, :] = True  # no padding
    valid[1, :7] = True  # trailing padding
    valid[2, 3:] = True  # leading padding
    valid[3, 2:6] = True  # both
    x[~valid] = 0.0
    y = rng.randn(batch, 1).astype("float32")
    rnn = SharedRNN(units, depth=2, go_backwards=go_backwards, name="rnn")
    model = keras_seq.Sequential(
        [keras.Input((steps, features)), keras.layers.Masking(0.0), rnn]
        + [keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    monitor = GradientMonitor(every=1)
    model.fit(x, y, batch_size=batch, verbose=0, callbacks=[monitor])

    reference = keras_seq.Sequential(
        [keras.Input((None, features)), rnn, model.layers[-1]]
    )
    squares = {}
    for b in range(batch):
        alone = x[b : b + 1, valid[b]]
        norms, _, _ = timestep_gradients(reference, alone, y[b : b + 1])
        for name, per_step in norms.items():
            processing = per_step[::-1] if go_backwards else per_step
            total = squares.setdefault(name, np.zeros(steps))
            total[steps - len(processing) :] += (processing / batch) ** 2
    longest = valid.sum(axis=1).max()
    for name, total in squares.items():
        got = monitor.diagnosis().sublayers[name]
        assert got.timesteps == longest
        np.testing.assert_allclose(got.norms, np.sqrt(total[-longest:]), rtol=1e-4)


def test_all_padding_batch_gives_no_verdict():
    model = _token_model(SharedRNN(4, depth=2, name="rnn"))
    monitor = GradientMonitor(every=1)
    x = np.zeros((4, 6), "int32")
    model.fit(x, np.ones((4, 1)), batch_size=4, verbose=0, callbacks=[monitor])
    diagnosis = monitor.diagnosis()
    assert diagnosis.vanishing == []
    for sublayer in diagnosis.sublayers.values():
        assert (sublayer.timesteps, sublayer.verdict) == (0, "no valid steps")
    assert "no valid steps" in monitor.report()
    assert (monitor.timestep_frame().valid_fraction == 0.0).all()


def test_sequence_of_length_one_is_not_enough_steps():
    model = keras_seq.Sequential(
        [keras.Input((1, 2)), SharedRNN(3, name="rnn"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = GradientMonitor(every=1)
    model.fit(np.ones((2, 1, 2)), np.ones((2, 1)), verbose=0, callbacks=[monitor])
    assert monitor.diagnosis().sublayers["rnn/level_0"].verdict == "not enough steps"
    assert "not enough steps" in monitor.report()
