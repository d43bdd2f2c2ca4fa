"""Truncated BPTT: `keras_seq.data.TruncatedBPTT` + `callbacks.ResetStates`
against an independent reference (each chunk differentiated by the
backend's own autodiff, states carried by hand); on TensorFlow and JAX."""

import keras
import numpy as np
import pytest

import keras_seq
from tests.conftest import assert_close

BACKEND = keras.backend.backend()

BATCH, FEATURES, UNITS, DEPTH = 2, 3, 4, 2
LR = 0.5


def _data(sequences=4, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(sequences, steps, FEATURES)).astype("float32")
    y = np.tanh(np.cumsum(x[..., :2], axis=1) / 3).astype("float32")
    return x, y


def _model(stateful, batch=BATCH):
    inputs = keras.Input((None, FEATURES), batch_size=batch if stateful else None)
    rnn = keras_seq.layers.SharedRNN(
        UNITS, depth=DEPTH, return_sequences=True, stateful=stateful, name="rnn"
    )
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(rnn(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    return model


def _reference_weights(weights, batches, boundaries):
    """Plain SGD over the chunks in order: states carried from the previous
    chunk's forward pass as constants, zeroed where a group begins."""
    inputs = keras.Input((None, FEATURES))
    starts = [keras.Input((UNITS,)) for _ in range(DEPTH)]
    rnn = keras_seq.layers.SharedRNN(
        UNITS, depth=DEPTH, return_sequences=True, return_state=True
    )
    outputs, *ends = rnn(inputs, initial_state=starts)
    head = keras.layers.Dense(2)
    model = keras.Model([inputs, *starts], [head(outputs), *ends])
    model.set_weights(weights)
    states = None
    for index, (x, y, w) in enumerate(batches):
        if index in boundaries:
            states = [np.zeros((BATCH, UNITS), "float32")] * DEPTH
        grads, ends = _gradients(model, [x, *states], y, w)
        for variable, grad in zip(model.trainable_variables, grads):
            variable.assign(variable - LR * grad)
        states = [keras.ops.convert_to_numpy(e) for e in ends]
    return model.get_weights()


def _chunk_loss(prediction, y, w):
    per_step = keras.ops.mean(keras.ops.square(prediction - y), axis=-1)
    return keras.ops.sum(per_step * w) / np.prod(per_step.shape)


def _gradients(model, inputs, y, w):
    """d(chunk loss)/d(trainable weights) and the last states, by the
    backend's autodiff (a tape on TensorFlow, jax.grad on JAX)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            prediction, *ends = model(inputs)
            loss = _chunk_loss(prediction, y, w)
        return tape.gradient(loss, model.trainable_variables), ends
    import jax

    def loss_fn(trainable):
        (prediction, *ends), _ = model.stateless_call(
            trainable, [v.value for v in model.non_trainable_variables], inputs
        )
        return _chunk_loss(prediction, y, w), ends

    trainable = [v.value for v in model.trainable_variables]
    grads, ends = jax.grad(loss_fn, has_aux=True)(trainable)
    return grads, ends


class _StatesAtBegin(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.zero = []

    def on_train_batch_begin(self, batch, logs=None):
        states = self.model.get_layer("rnn").states
        self.zero.append(all(not np.any(keras.ops.convert_to_numpy(s)) for s in states))


def _fit_matches_the_reference(data, epochs, shuffle=False):
    """fit() over `epochs` equals the reference over each epoch's chunks in
    that epoch's order, and states are zero exactly where groups begin."""
    chunks = [chunk for epoch in range(epochs) for chunk in data.chunks(epoch)]
    batches = [data.batch(g, c) for g, c in chunks]
    boundaries = {i for i, (_, c) in enumerate(chunks) if c == 0}
    model = _model(stateful=True)
    start = model.get_weights()
    probe = _StatesAtBegin()
    model.fit(
        data.dataset,
        epochs=epochs,
        shuffle=shuffle,
        verbose=0,
        callbacks=[keras_seq.callbacks.ResetStates(data), probe],
    )
    assert probe.zero == [i in boundaries for i in range(len(chunks))]
    for actual, expected in zip(
        model.get_weights(), _reference_weights(start, batches, boundaries)
    ):
        assert_close(actual, expected, tol=1e-5)


@pytest.mark.parametrize("chunk, shuffle", [(5, False), (4, True)])
def test_chunks_train_as_an_unrolled_reference(chunk, shuffle):
    x, y = _data(steps=12)
    data = keras_seq.data.TruncatedBPTT(
        x, y, chunk_length=chunk, batch_size=BATCH, shuffle=shuffle, seed=3
    )
    assert len(data) == 2 * -(-12 // chunk)
    _fit_matches_the_reference(data, epochs=1)


def test_a_chunk_as_long_as_the_sequence_is_full_bptt():
    x, y = _data(steps=9)
    data = keras_seq.data.TruncatedBPTT(
        x, y, chunk_length=50, batch_size=BATCH, shuffle=False
    )
    assert len(data) == 2 and next(iter(data))[0].shape == (BATCH, 9, FEATURES)
    truncated, full = _model(stateful=True), _model(stateful=False)
    full.set_weights(truncated.get_weights())
    truncated.fit(
        data.dataset,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_seq.callbacks.ResetStates(data)],
    )
    full.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(truncated.get_weights(), full.get_weights()):
        assert_close(a, b, tol=1e-5)


def test_without_resets_states_leak_across_groups():
    # The reset is what makes the test above pass.
    x, y = _data(steps=9)
    data = keras_seq.data.TruncatedBPTT(x, y, 50, BATCH, shuffle=False)
    truncated, full = _model(stateful=True), _model(stateful=False)
    full.set_weights(truncated.get_weights())
    truncated.fit(data.dataset, epochs=1, shuffle=False, verbose=0)
    full.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    error = max(
        np.abs(a - b).max() for a, b in zip(truncated.get_weights(), full.get_weights())
    )
    assert error > 1e-4


def test_sequences_of_different_lengths():
    x, y = _data(sequences=5, steps=10)
    lengths = np.array([10, 4, 7, 10, 2])
    data = keras_seq.data.TruncatedBPTT(
        x, y, chunk_length=3, batch_size=BATCH, lengths=lengths, shuffle=False
    )
    # Groups by length: (10, 10) 4 chunks, (7, 4) 3 chunks, (2, filler) 1.
    assert len(data) == 8 and sorted(data.boundaries()) == [0, 4, 7]
    seen = np.zeros((5, 10))
    batches = list(data)
    for xb, _, wb in batches:
        assert xb.shape == (BATCH, 3, FEATURES) and wb.shape == (BATCH, 3)
    # Every valid step comes exactly once with weight 1, nothing else counts.
    rows = [(0, 3), (2, 1), (4, -1)]
    for group, (a, b) in enumerate(rows):
        first = sorted(data.boundaries())[group]
        chunks = ([4, 3, 1])[group]
        for c in range(chunks):
            xb, _, wb = batches[first + c]
            for slot, row in enumerate((a, b)):
                steps = slice(3 * c, min(3 * c + 3, 10))
                width = steps.stop - steps.start
                if row < 0:
                    assert not wb[slot].any()
                    continue
                np.testing.assert_array_equal(xb[slot, :width], x[row, steps])
                seen[row, steps] += wb[slot, :width]
                assert not wb[slot, width:].any()
    np.testing.assert_array_equal(seen, np.arange(10)[None] < lengths[:, None])

    # What lies past a sequence's end changes nothing.
    garbage = x.copy()
    garbage[np.arange(10)[None] >= lengths[:, None]] = 50.0
    results = []
    for inputs in (x, garbage):
        model = _model(stateful=True)
        model.set_weights(results[0][0] if results else model.get_weights())
        start = model.get_weights()
        d = keras_seq.data.TruncatedBPTT(
            inputs, y, 3, BATCH, lengths=lengths, shuffle=False
        )
        model.fit(
            d.dataset,
            shuffle=False,
            verbose=0,
            callbacks=[keras_seq.callbacks.ResetStates(d)],
        )
        results.append((start, model.get_weights()))
    for a, b in zip(results[0][1], results[1][1]):
        assert_close(a, b, tol=1e-6)


def test_validation_starts_from_zero_states_and_matches_full_sequences():
    x, y = _data(steps=12)
    xv, yv = _data(steps=12, seed=1)
    data = keras_seq.data.TruncatedBPTT(x, y, 4, BATCH, shuffle=False)
    val = keras_seq.data.TruncatedBPTT(xv, yv, 4, BATCH, shuffle=False)
    model = _model(stateful=True)
    history = model.fit(
        data.dataset,
        validation_data=val.dataset,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[keras_seq.callbacks.ResetStates(data, val)],
    )
    full = _model(stateful=False)
    full.set_weights(model.get_weights())
    expected = np.mean((full.predict_on_batch(xv) - yv) ** 2)
    np.testing.assert_allclose(history.history["val_loss"][0], expected, rtol=1e-5)


def test_monitor_sees_chunks_and_changes_nothing():
    x, y = _data(steps=12)
    results = []
    for monitored in (False, True):
        keras.utils.set_random_seed(7)
        model = _model(stateful=True)
        data = keras_seq.data.TruncatedBPTT(x, y, 4, BATCH, shuffle=False)
        callbacks = [keras_seq.callbacks.ResetStates(data)]
        if monitored:
            monitor = keras_seq.callbacks.GradientMonitor(every=1)
            callbacks.append(monitor)
        model.fit(data.dataset, shuffle=False, verbose=0, callbacks=callbacks)
        results.append(model.get_weights())
    for a, b in zip(*results):
        assert_close(a, b, tol=1e-6)
    frame = monitor.timestep_frame()
    assert set(frame["timestep"]) == {0, 1, 2, 3}
    assert frame["step"].nunique() == 6
    assert "truncated BPTT" in monitor.report()
    assert "cannot exceed that chunk length" in monitor.report()


def test_reset_states_needs_a_stateful_model():
    x, y = _data()
    data = keras_seq.data.TruncatedBPTT(x, y, 4, BATCH)
    model = _model(stateful=False)
    with pytest.raises(ValueError, match="stateful recurrent layer"):
        model.fit(
            data.dataset,
            shuffle=False,
            verbose=0,
            callbacks=[keras_seq.callbacks.ResetStates(data)],
        )
    with pytest.raises(
        TypeError, match="`data` must be a keras_seq.data.TruncatedBPTT"
    ):
        keras_seq.callbacks.ResetStates((x, y))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"chunk_length": 0}, ValueError, "chunk_length"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"lengths": [3, 4]}, ValueError, "lengths"),
        ({"lengths": [0, 4, 4, 4]}, ValueError, "lengths"),
        ({"sample_weight": np.ones((4, 2))}, ValueError, "sample_weight"),
        ({"y": np.ones((4, 1))}, ValueError, "target per time step"),
        ({"x": np.ones((4,))}, ValueError, "`x`"),
        ({"x": np.ones((0, 12, 3)), "y": np.ones((0, 12, 2))}, ValueError, "`x`"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    x, y = _data()
    arguments = {"x": x, "y": y, "chunk_length": 4, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        keras_seq.data.TruncatedBPTT(**arguments)


def test_shuffled_groups_follow_the_epoch_and_reset_where_they_begin():
    # The groups are shuffled per epoch here (fit(shuffle=False): Keras
    # keeps the batches in order), and resets follow: two epochs train as
    # the reference over both epochs' chunks in their order.
    x, y = _data(sequences=8, steps=9)
    # Groups by length: (9, 9) and (9, 6) 3 chunks, (6, 3) 2, (3, 2) 1.
    data = keras_seq.data.TruncatedBPTT(
        x, y, 3, BATCH, lengths=[9, 9, 3, 3, 6, 6, 2, 9], seed=1
    )
    assert data.boundaries(0) != data.boundaries(1)
    # Without a seed an epoch's order is still one order: the callback's
    # boundaries and the dataset's generator ask for it separately.
    unseeded = keras_seq.data.TruncatedBPTT(
        x, y, 3, BATCH, lengths=[9, 9, 3, 3, 6, 6, 2, 9]
    )
    assert unseeded.chunks(1) == unseeded.chunks(1)
    _fit_matches_the_reference(data, epochs=2)


def test_token_ids_for_an_embedding():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(4, 10))
    data = keras_seq.data.TruncatedBPTT(tokens[:, :-1], tokens[:, 1:], 4, BATCH)
    x, y, w = next(iter(data))
    assert x.shape == (BATCH, 4) and x.dtype == tokens.dtype and w.shape == (2, 4)
    model = keras.Sequential(
        [
            keras.Input((None,), batch_size=BATCH, dtype="int32"),
            keras.layers.Embedding(20, 5),
            keras_seq.layers.SharedRNN(6, return_sequences=True, stateful=True),
            keras.layers.Dense(20),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        data.dataset,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_seq.callbacks.ResetStates(data)],
    )
    assert np.isfinite(history.history["loss"]).all()


def test_keras_shuffling_the_batches_is_ignored_or_refused():
    # fit(shuffle=True), Keras's default: TensorFlow leaves a
    # tf.data.Dataset alone; on JAX, Keras would shuffle the PyDataset's
    # batches, and reading them out of order raises before a wrong batch
    # is trained on.
    x, y = _data(sequences=8, steps=12)
    data = keras_seq.data.TruncatedBPTT(x, y, 4, BATCH, seed=1)
    if BACKEND == "tensorflow":
        _fit_matches_the_reference(data, epochs=1, shuffle=True)
        return
    model = _model(stateful=True)
    with pytest.raises(
        ValueError, match=r"must be read in order: pass `shuffle=False` to `fit`"
    ):
        model.fit(
            data.dataset,
            epochs=2,
            verbose=0,
            callbacks=[keras_seq.callbacks.ResetStates(data)],
        )


@pytest.mark.skipif(BACKEND == "tensorflow", reason="a tf.data.Dataset there")
def test_on_jax_the_dataset_is_a_single_threaded_py_dataset_of_the_epoch():
    x, y = _data(sequences=8, steps=12)
    data = keras_seq.data.TruncatedBPTT(x, y, 5, BATCH, seed=2)
    dataset = data.dataset
    assert isinstance(dataset, keras.utils.PyDataset)
    assert dataset.workers == 1 and not dataset.use_multiprocessing
    assert len(dataset) == len(data) == 4 * 3
    for epoch in (0, 1):
        data.set_epoch(epoch)
        for index, (group, chunk) in enumerate(data.chunks()):
            for got, expected in zip(dataset[index], data.batch(group, chunk)):
                np.testing.assert_array_equal(got, expected)
    assert data.chunks(0) != data.chunks(1)
    with pytest.raises(IndexError, match="has 12 batches. Received: index=12"):
        dataset[12]


def _stateful_stack(kind, batch=BATCH):
    """A stateful model of `kind` and its recurrent layer (both directions
    of a Bidirectional)."""
    inputs = keras.Input((None, FEATURES), batch_size=batch)
    if kind == "shared":
        rnn = keras_seq.layers.SharedRNN(
            UNITS, depth=DEPTH, return_sequences=True, stateful=True, name="rnn"
        )
        outputs, forward = rnn(inputs), rnn
    elif kind == "bidirectional":
        rnn = keras.layers.Bidirectional(
            keras_seq.layers.SharedRNN(UNITS, return_sequences=True, stateful=True),
            name="rnn",
        )
        outputs, forward = rnn(inputs), (rnn.forward_layer, rnn.backward_layer)
    else:
        rnn = keras.layers.LSTM(UNITS, return_sequences=True, stateful=True)
        outputs, forward = rnn(inputs), rnn
    model = keras.Model(inputs, keras.layers.Dense(2)(outputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model, forward


@pytest.mark.parametrize("kind", ["shared", "bidirectional", "lstm"])
def test_fit_carries_states_to_the_end_of_the_last_group(kind):
    # With a zero learning rate, the states a stateful layer holds after
    # fit are the last group's end states: one call on its whole sequences
    # for a forward layer; for a backward one (it reads each chunk
    # backwards from the state the previous chunk left), its chunks in turn,
    # each from the states the previous one returned. A state not carried
    # from chunk to chunk (or a reset inside a group) gives other values.
    x, y = _data(sequences=4, steps=10)
    data = keras_seq.data.TruncatedBPTT(x, y, 3, BATCH, shuffle=False)
    model, layers = _stateful_stack(kind)
    callbacks = [keras_seq.callbacks.ResetStates(data)]
    if kind == "lstm" and BACKEND == "jax":
        with pytest.raises(ValueError, match=r"lstm.*\(LSTM\).*SharedRNN"):
            model.fit(data.dataset, shuffle=False, verbose=0, callbacks=callbacks)
        with pytest.raises(ValueError, match=r"lstm.*\(LSTM\).*SharedRNN"):
            model.evaluate(data.dataset, verbose=0, callbacks=callbacks)
        return
    model.fit(data.dataset, shuffle=False, verbose=0, callbacks=callbacks)
    # The last group's chunks, padded end included (the layer steps over it).
    group = data.chunks(0)[-1][0]
    chunks = [data.batch(g, c)[0] for g, c in data.chunks(0) if g == group]
    for layer in layers if isinstance(layers, tuple) else (layers,):
        config = {**layer.get_config(), "stateful": False, "return_state": True}
        fresh = type(layer).from_config(config)
        fresh.build((None, None, FEATURES))
        fresh.set_weights(layer.get_weights())
        if layer.go_backwards:
            expected = None
            for chunk in chunks:
                _, *expected = fresh(chunk, initial_state=expected)
        else:
            _, *expected = fresh(np.concatenate(chunks, axis=1))
        carried = layer.states
        assert len(carried) == len(expected)
        for actual, wanted in zip(carried, expected):
            assert_close(keras.ops.convert_to_numpy(actual), wanted, tol=1e-5)


def test_keras_rnn_states_are_outside_the_model_variables_upstream():
    # Keras 3.15's RNN creates a stateful layer's states untracked, which
    # is why SharedRNN lists them in `variables` and ResetStates refuses
    # Keras's own stateful RNNs on JAX. When this fails, Keras tracks them:
    # drop `SharedRNN.variables` and `reset_states._untracked_states`.
    inputs = keras.Input((None, FEATURES), batch_size=BATCH)
    rnn = keras.layers.SimpleRNN(UNITS, stateful=True)
    model = keras.Model(inputs, rnn(inputs))
    held = {id(v) for v in model.non_trainable_variables}
    assert rnn.states is not None
    assert not any(id(v) in held for v in rnn.states)
    shared = keras_seq.layers.SharedRNN(UNITS, stateful=True)
    model = keras.Model(inputs, shared(inputs))
    held = {id(v) for v in model.non_trainable_variables}
    assert all(id(v) in held for v in shared.states)
    # ... as variables, not weights: saved files and get_weights unchanged.
    assert len(model.get_weights()) == len(shared.cell.weights) == 3
    # One path per level's state, so the state tree keeps them apart.
    deep = keras_seq.layers.SharedRNN(UNITS, depth=3, stateful=True, name="deep")
    model = keras.Model(inputs, deep(inputs))
    model.compile(optimizer="sgd", loss="mse")
    tree = model.get_state_tree()["non_trainable_variables"]["deep"]
    assert {"rnn_state_0", "rnn_state_1", "rnn_state_2"} <= set(tree)
