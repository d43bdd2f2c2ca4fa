import random
import types

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq.depth.reduce import DepthReduction, reduce_depth

# The JAX run of `make test` stays short: these run there with `-m slow`.
slow_on_jax = (
    pytest.mark.slow if keras.backend.backend() == "jax" else pytest.mark.usefixtures()
)

SharedRNN = keras_seq.layers.SharedRNN


def _data(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype("float32")


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _snapshot(model):
    return [_numpy(v).copy() for v in model.weights]


def _assert_unchanged(model, weights, x, predictions):
    """The input model keeps its weights and its outputs."""
    assert len(model.weights) == len(weights)
    for variable, value in zip(model.weights, weights):
        assert np.array_equal(_numpy(variable), value), variable.path
    np.testing.assert_array_equal(model.predict(x, verbose=0), predictions)


def _assert_copied(new_variables, old_variables):
    new_variables, old_variables = list(new_variables), list(old_variables)
    assert len(new_variables) == len(old_variables)
    for new, old in zip(new_variables, old_variables):
        assert new is not old
        assert np.array_equal(_numpy(new), _numpy(old)), new.path


def _shared_stack(share_depth, depth=3):
    return keras_seq.Sequential(
        [
            keras.Input((5, 3)),
            SharedRNN(4, depth=depth, share_depth=share_depth, name="rnn"),
            keras.layers.Dense(2, name="head"),
        ]
    )


@pytest.mark.parametrize("share_depth", [False, True])
@pytest.mark.parametrize("dropped", [0, 1, 2])
def test_shared_rnn_sublevel_removed(share_depth, dropped):
    model = _shared_stack(share_depth)
    x = _data(4, 5, 3)
    weights, predictions = _snapshot(model), model.predict(x, verbose=0)

    result = reduce_depth(model, drop=[f"rnn/level_{dropped}"])

    new, old = result.model.get_layer("rnn"), model.get_layer("rnn")
    assert isinstance(result.model, keras_seq.Sequential)
    assert (new.depth, new.share_depth) == (2, share_depth)
    kept = [i for i in range(3) if i != dropped]
    for j, i in enumerate(kept):
        new_weights = new.cell.level_weights(j)
        old_weights = old.cell.level_weights(i)
        if j == 0 and i > 0:
            # The level now reads the 3 input features instead of 4 units.
            assert tuple(new_weights[0].shape) == (3, 4)
            new_weights, old_weights = new_weights[1:], old_weights[1:]
        _assert_copied(new_weights, old_weights)
    if share_depth:
        # A dropped level 0 is replaced by a copy of the shared set, which
        # stays shared by the levels above.
        assert new.cell.level_weights(0)[1] is not new.cell.level_weights(1)[1]
    _assert_copied(
        result.model.get_layer("head").weights, model.get_layer("head").weights
    )
    kernel = new.cell.level_weights(0)[0]
    assert result.replaced == ([(kernel.path, "reinitialised")] if dropped == 0 else [])
    assert result.removed == [f"rnn/level_{dropped}"]
    assert (result.levels_before, result.levels_after) == (3, 2)
    assert result.parameters_before == model.count_params()
    assert result.parameters_after == result.model.count_params()
    assert result.model.predict(x, verbose=0).shape == predictions.shape
    _assert_unchanged(model, weights, x, predictions)


def test_depth_keeps_the_top_and_bottom_levels():
    model = _shared_stack(share_depth=False, depth=4)
    result = reduce_depth(model, depth=2)
    assert result.removed == ["rnn/level_1", "rnn/level_2"]
    new, old = result.model.get_layer("rnn"), model.get_layer("rnn")
    _assert_copied(new.cell.level_weights(0), old.cell.level_weights(0))
    _assert_copied(new.cell.level_weights(1), old.cell.level_weights(3))


def test_shared_rnn_left_with_one_level_becomes_unshared():
    model = _shared_stack(share_depth=True)
    result = reduce_depth(model, depth=1)
    assert result.removed == ["rnn/level_0", "rnn/level_1"]
    new, old = result.model.get_layer("rnn"), model.get_layer("rnn")
    assert (new.depth, new.share_depth) == (1, False)
    # The top level keeps the shared recurrent kernel and bias as its own.
    _assert_copied(new.cell.level_weights(0)[1:], old.cell.level_weights(2)[1:])
    assert result.levels_after == 1
    # The shared set goes; the level keeps a (3, 4) input kernel.
    assert result.parameters_after == model.count_params() - (4 * 4 + 4 * 4 + 4)


def _builtin_stack():
    return keras_seq.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.SimpleRNN(4, return_sequences=True, name="simple"),
            keras.layers.GRU(5, return_sequences=True, name="gru"),
            keras.layers.LSTM(6, name="lstm"),
            keras.layers.Dense(2, name="head"),
        ]
    )


@slow_on_jax
def test_builtin_stack_bottom_and_middle_removed():
    model = _builtin_stack()
    x = _data(4, 6, 3)
    weights, predictions = _snapshot(model), model.predict(x, verbose=0)

    bottom = reduce_depth(model, drop=["simple"])
    gru, old_gru = bottom.model.get_layer("gru"), model.get_layer("gru")
    assert tuple(gru.cell.kernel.shape) == (3, 15)
    assert bottom.replaced == [(gru.cell.kernel.path, "reinitialised")]
    _assert_copied(
        [gru.cell.recurrent_kernel, gru.cell.bias],
        [old_gru.cell.recurrent_kernel, old_gru.cell.bias],
    )
    for name in ("lstm", "head"):
        _assert_copied(
            bottom.model.get_layer(name).weights, model.get_layer(name).weights
        )
    assert [layer.name for layer in bottom.model.layers] == ["gru", "lstm", "head"]

    middle = reduce_depth(model, depth=2)
    assert middle.removed == ["gru/level_0"]
    lstm = middle.model.get_layer("lstm")
    assert middle.replaced == [(lstm.cell.kernel.path, "reinitialised")]
    _assert_copied(
        middle.model.get_layer("simple").weights, model.get_layer("simple").weights
    )
    assert middle.model.predict(x, verbose=0).shape == predictions.shape
    _assert_unchanged(model, weights, x, predictions)


def test_bidirectional_stack_keeps_merge_mode():
    def bi(name, return_sequences=True):
        return keras.layers.Bidirectional(
            keras.layers.LSTM(4, return_sequences=return_sequences),
            merge_mode="sum",
            name=name,
        )

    model = keras_seq.Sequential(
        [
            keras.Input((5, 3)),
            bi("bi_1"),
            bi("bi_2"),
            bi("bi_3", return_sequences=False),
            keras.layers.Dense(2, name="head"),
        ]
    )
    x = _data(4, 5, 3)
    weights, predictions = _snapshot(model), model.predict(x, verbose=0)

    middle = reduce_depth(model, depth=2)
    assert middle.removed == ["bi_2/level_0"]
    assert middle.replaced == []  # summed directions: 4 features, as before
    for name in ("bi_1", "bi_3", "head"):
        _assert_copied(
            middle.model.get_layer(name).weights, model.get_layer(name).weights
        )
    top = middle.model.get_layer("bi_3")
    assert top.merge_mode == "sum"
    assert top.backward_layer.go_backwards and not top.forward_layer.go_backwards

    bottom = reduce_depth(model, drop=["bi_1"], x=x)
    first = bottom.model.get_layer("bi_2")
    assert bottom.replaced == [
        (first.forward_layer.cell.kernel.path, "least squares"),
        (first.backward_layer.cell.kernel.path, "least squares"),
    ]
    assert bottom.model.predict(x, verbose=0).shape == predictions.shape
    _assert_unchanged(model, weights, x, predictions)


def _masked_functional():
    inputs = keras.Input((None,), dtype="int32", name="tokens")
    embedding = keras.layers.Embedding(9, 3, mask_zero=True, name="embedding")
    embedding.trainable = False
    h = embedding(inputs)
    h = keras.layers.LSTM(4, return_sequences=True, name="low")(h)
    h = keras.layers.LSTM(5, name="high")(h)
    outputs = keras.layers.Dense(2, name="head")(h)
    return keras.Model(inputs, outputs, name="tagger")


def test_functional_masked_model(tmp_path):
    model = _masked_functional()
    tokens = np.array([[3, 1, 4, 1, 5, 0], [2, 7, 0, 0, 0, 0], [8, 6, 5, 4, 3, 2]])
    weights, predictions = _snapshot(model), model.predict(tokens, verbose=0)

    result = reduce_depth(model, drop=["low"])

    new = result.model
    assert isinstance(new, keras_seq.Model) and new.name == "tagger"
    assert [layer.name for layer in new.layers] == [
        "tokens",
        "embedding",
        "high",
        "head",
    ]
    for name in ("embedding", "head"):
        _assert_copied(new.get_layer(name).weights, model.get_layer(name).weights)
    assert not new.get_layer("embedding").trainable
    assert new.get_layer("high").trainable
    # The mask still reaches the LSTM: padding changes nothing.
    np.testing.assert_allclose(
        new.predict(tokens[1:2, :2], verbose=0),
        new.predict(tokens[1:2], verbose=0),
        atol=1e-6,
    )
    assert new.predict(tokens, verbose=0).shape == predictions.shape
    new.save(tmp_path / "functional.keras")
    loaded = keras.models.load_model(tmp_path / "functional.keras")
    assert isinstance(loaded, keras_seq.Model)
    np.testing.assert_array_equal(
        loaded.predict(tokens, verbose=0), new.predict(tokens, verbose=0)
    )
    _assert_unchanged(model, weights, tokens, predictions)


def test_stateful_stack_and_go_backwards_carry_over():
    model = keras_seq.Sequential(
        [
            keras.Input((5, 3), batch_size=2),
            keras.layers.SimpleRNN(
                4, return_sequences=True, stateful=True, go_backwards=True, name="a"
            ),
            keras.layers.SimpleRNN(4, return_sequences=True, stateful=True, name="b"),
            keras.layers.SimpleRNN(4, stateful=True, name="c"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    x = _data(4, 5, 3)
    model.predict(x, batch_size=2, verbose=0)  # states are now non-zero
    states = [_numpy(v).copy() for name in "abc" for v in model.get_layer(name).states]
    weights = _snapshot(model)

    result = reduce_depth(model, drop=["a"], x=x)

    new = result.model
    assert new.inputs[0].shape == (2, 5, 3)
    assert all(new.get_layer(name).stateful for name in "bc")
    assert result.replaced == [(new.get_layer("b").cell.kernel.path, "least squares")]
    kept = reduce_depth(model, drop=["b"])
    assert kept.model.get_layer("a").go_backwards
    assert not kept.model.get_layer("c").go_backwards
    # Running the old model for the fit left its states as they were.
    after = [_numpy(v) for name in "abc" for v in model.get_layer(name).states]
    assert all(np.array_equal(a, b) for a, b in zip(after, states))
    assert all(np.array_equal(_numpy(v), w) for v, w in zip(model.weights, weights))
    with pytest.raises(ValueError, match=r"fixed batch size of 2.*Received: 3 samples"):
        reduce_depth(model, drop=["a"], x=x[:3])


def test_return_sequences_repaired_when_the_top_is_removed():
    model = keras_seq.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, return_sequences=True, name="low"),
            keras.layers.LSTM(5, name="top"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    x = _data(3, 5, 3)
    result = reduce_depth(model, drop=["top"])
    low = result.model.get_layer("low")
    assert not low.return_sequences
    assert result.model.predict(x, verbose=0).shape == (3, 2)
    _assert_copied(low.weights, model.get_layer("low").weights)
    head = result.model.get_layer("head")
    assert result.replaced == [(head.kernel.path, "reinitialised")]
    _assert_copied([head.bias], [model.get_layer("head").bias])


@slow_on_jax
def test_compile_config_carries_over():
    model = _shared_stack(share_depth=False)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01, clipnorm=0.5),
        loss="mse",
        metrics=["mae"],
        steps_per_execution=2,
        jit_compile=False,
    )
    x, y = _data(4, 5, 3), _data(4, 2, seed=1)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert int(model.optimizer.iterations) == 1

    new = reduce_depth(model, depth=2).model

    assert new.optimizer is not model.optimizer
    assert type(new.optimizer) is keras.optimizers.Adam
    assert new.optimizer.get_config() == model.optimizer.get_config()
    assert new.optimizer.clipnorm == 0.5
    assert int(new.optimizer.iterations) == 0
    config = new.get_compile_config()
    assert (config["loss"], config["metrics"]) == ("mse", ["mae"])
    assert new.steps_per_execution == 2
    assert new.jit_compile is False

    uncompiled = reduce_depth(_shared_stack(share_depth=False), depth=2).model
    assert not uncompiled.compiled


def test_reduced_model_trains_and_saves(tmp_path):
    model = _shared_stack(share_depth=True)
    model.compile(optimizer="adam", loss="mse")
    x, y = _data(4, 5, 3), _data(4, 2, seed=1)
    weights, predictions = _snapshot(model), model.predict(x, verbose=0)

    new = reduce_depth(model, drop=["rnn/level_0"], x=x).model
    before = _snapshot(new)
    new.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert not all(np.array_equal(_numpy(v), b) for v, b in zip(new.weights, before))
    _assert_unchanged(model, weights, x, predictions)  # no weight is shared

    path = tmp_path / "reduced.keras"
    new.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_seq.Sequential)
    assert loaded.get_layer("rnn").depth == 2
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), new.predict(x, verbose=0)
    )


def test_least_squares_beats_reinitialisation():
    model = keras_seq.Sequential(
        [
            keras.Input((8, 3)),
            keras.layers.GRU(6, return_sequences=True, name="low"),
            keras.layers.GRU(6, return_sequences=True, name="mid"),
            keras.layers.GRU(4, name="top"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    train, held_out = _data(64, 8, 3, seed=1), _data(64, 8, 3, seed=2)
    target = model.predict(held_out, verbose=0)

    errors = {}
    for how, x in (("reinitialised", None), ("least squares", train)):
        result = reduce_depth(model, drop=["low"], x=x, seed=0)
        assert result.replaced[0][1] == how
        predictions = result.model.predict(held_out, verbose=0)
        errors[how] = np.sqrt(np.mean((predictions - target) ** 2))
    assert errors["least squares"] < 0.5 * errors["reinitialised"], errors


def _linear_level(layer, kernel):
    """Make `layer` (or its level 0) compute h_t = x_t @ kernel."""
    zero = np.zeros((kernel.shape[1], kernel.shape[1]), "float32")
    layer.set_weights(
        [kernel, zero, np.zeros(kernel.shape[1], "float32")] + layer.get_weights()[3:]
    )


def _identity_like_sequential():
    model = keras_seq.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.SimpleRNN(
                5, activation=None, return_sequences=True, name="lin"
            ),
            keras.layers.SimpleRNN(4, name="top"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    _linear_level(model.get_layer("lin"), _data(3, 5, seed=3))
    return model, ["lin"], _data(32, 6, 3, seed=1), _data(8, 6, 3, seed=2)


def _identity_like_bidirectional_shared():
    layer = keras.layers.Bidirectional(
        SharedRNN(5, depth=2, activation=None, return_sequences=True), name="bi"
    )
    model = keras_seq.Sequential(
        [keras.Input((6, 3)), layer, keras.layers.GRU(3), keras.layers.Dense(2)]
    )
    for direction, seed in ((layer.forward_layer, 3), (layer.backward_layer, 4)):
        _linear_level(direction, _data(3, 5, seed=seed))
    return model, ["bi/level_0"], _data(32, 6, 3, seed=1), _data(8, 6, 3, seed=2)


def _identity_like_masked_functional():
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(9, 3, mask_zero=True)(inputs)
    lin = keras.layers.SimpleRNN(5, activation=None, return_sequences=True, name="lin")
    h = keras.layers.LSTM(4)(lin(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    _linear_level(lin, _data(3, 5, seed=3))
    rng = np.random.RandomState(1)

    def tokens(n):
        # Trailing padding: at masked steps the removed layer repeats its
        # last output, which is no linear function of the padding token.
        t = rng.randint(1, 9, size=(n, 6))
        t[np.arange(6)[None] >= rng.randint(2, 7, size=(n, 1))] = 0
        return t

    return model, ["lin"], tokens(32), tokens(8)


@pytest.mark.parametrize(
    "build",
    [
        _identity_like_sequential,
        _identity_like_bidirectional_shared,
        _identity_like_masked_functional,
    ],
)
def test_least_squares_is_exact_for_an_identity_like_linear_level(build):
    model, drop, train, held_out = build()
    target = model.predict(held_out, verbose=0)

    fitted = reduce_depth(model, drop=drop, x=train)
    assert {how for _, how in fitted.replaced} == {"least squares"}
    np.testing.assert_allclose(
        fitted.model.predict(held_out, verbose=0), target, rtol=1e-3, atol=1e-4
    )
    # Without data the kernel is re-initialised, and the outputs move.
    guessed = reduce_depth(model, drop=drop, seed=0).model.predict(held_out, verbose=0)
    assert np.max(np.abs(guessed - target)) > 1e-2


def test_seed_makes_reinitialisation_reproducible():
    model = _builtin_stack()
    state = random.getstate()
    kernels = [
        _numpy(
            reduce_depth(model, drop=["simple"], seed=seed)
            .model.get_layer("gru")
            .cell.kernel
        )
        for seed in (7, 7, 8)
    ]
    assert random.getstate() == state
    assert np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[0], kernels[2])


def test_strict_raises_instead_of_replacing():
    model = _shared_stack(share_depth=False)
    with pytest.raises(
        ValueError,
        match=r"strict=True.*level `rnn/level_1` must replace its weight "
        r"`.*rnn/shared_rnn_cell/kernel`: shape \(4, 4\).*\(3, 4\)",
    ):
        reduce_depth(model, drop=["rnn/level_0"], strict=True)
    assert reduce_depth(model, depth=2, strict=True).replaced == []


def test_plan_object_and_record():
    model = _shared_stack(share_depth=False)
    plan = types.SimpleNamespace(drop=["rnn/level_1"])
    result = reduce_depth(model, drop=plan)
    assert isinstance(result, DepthReduction)
    assert result.removed == ["rnn/level_1"]
    lines = str(result).splitlines()
    assert lines[0].split() == ["what", "before", "after"]
    assert lines[1].split() == ["levels", "3", "2"]
    assert lines[2].split() == [
        "parameters",
        str(model.count_params()),
        str(result.model.count_params()),
    ]
    # Right-aligned columns: every row's "before" count ends at one column.
    ends = {line.index(line.split()[1]) + len(line.split()[1]) for line in lines[:3]}
    assert len(ends) == 1
    assert "removed:  rnn/level_1" in lines and "replaced: none" in lines
    assert repr(result) == str(result)
    with pytest.raises(TypeError):
        _, _ = result
    frame = result.to_frame()
    assert frame.loc["levels"].tolist() == [3, 2]
    assert frame.loc["parameters", "after"] == result.model.count_params()


def test_parallel_branches_take_drop():
    inputs = keras.Input((5, 3))
    a = SharedRNN(4, depth=2, name="a")(inputs)
    b = keras.layers.GRU(4, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([a, b]), name="two")
    with pytest.raises(
        ValueError, match=r"`two` has parallel recurrent branches.*pass `drop=`"
    ):
        reduce_depth(model, depth=2)
    result = reduce_depth(model, drop=["a/level_1"])
    assert result.model.get_layer("a").depth == 1
    _assert_copied(result.model.get_layer("b").weights, model.get_layer("b").weights)


def test_argument_errors():
    model = _shared_stack(share_depth=False)
    levels = r"'rnn/level_0', 'rnn/level_1', 'rnn/level_2'"
    with pytest.raises(
        TypeError, match=r"`model` must be a keras.Model.*Received: model="
    ):
        reduce_depth("model", depth=1)
    mlp = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="mlp")
    with pytest.raises(ValueError, match=r"`mlp` has no recurrent level.*Dense"):
        reduce_depth(mlp, depth=1)
    with pytest.raises(
        ValueError, match=r"exactly one of `depth`.*depth=None, drop=None"
    ):
        reduce_depth(model)
    with pytest.raises(
        ValueError, match=r"exactly one of `depth`.*depth=1, drop=\['rnn'\]"
    ):
        reduce_depth(model, depth=1, drop=["rnn"])
    with pytest.raises(
        TypeError, match=r"`depth` must be an integer.*depth='2' \(of type str\)"
    ):
        reduce_depth(model, depth="2")
    with pytest.raises(TypeError, match=r"`depth` must be an integer.*depth=True"):
        reduce_depth(model, depth=True)
    with pytest.raises(
        ValueError, match=r"`depth` must be an integer >= 1.*which is 3.*depth=0"
    ):
        reduce_depth(model, depth=0)
    with pytest.raises(ValueError, match=rf"which is 3 \({levels}\).*depth=3"):
        reduce_depth(model, depth=3)
    with pytest.raises(ValueError, match=rf"unknown level 'rnn/level_5'.*{levels}"):
        reduce_depth(model, drop=["rnn/level_5"])
    with pytest.raises(ValueError, match=r"more than once"):
        reduce_depth(model, drop=["rnn/level_1", "rnn/level_1"])
    with pytest.raises(ValueError, match=r"remove every level of model .* \(3\)"):
        reduce_depth(model, drop=["rnn/level_0", "rnn/level_1", "rnn/level_2"])
    with pytest.raises(
        TypeError, match=r"`drop` must be a list of level names.*Use drop="
    ):
        reduce_depth(model, drop="rnn/level_1")
    with pytest.raises(TypeError, match=r"`strict` must be a boolean"):
        reduce_depth(model, depth=2, strict="yes")
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1"):
        reduce_depth(model, depth=2, batch_size=0)
    with pytest.raises(TypeError, match=r"`seed` must be an integer or None"):
        reduce_depth(model, depth=2, seed=1.5)
    with pytest.raises(TypeError, match=r"`x` must be array data.*of type str"):
        reduce_depth(model, depth=2, x="data")


def test_layers_that_cannot_be_removed():
    inputs = keras.Input((5, 3))
    low = keras.layers.LSTM(4, return_sequences=True, name="low")(inputs)
    h = keras.layers.TimeDistributed(keras.layers.Dense(3), name="td")(low)
    top = keras.layers.LSTM(4, name="top")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(top))
    with pytest.raises(
        ValueError, match=r"remove layer `top`.*below it \(layer `td`\)"
    ):
        reduce_depth(model, drop=["top"])
    # The TimeDistributed Dense in between takes a re-initialised kernel.
    result = reduce_depth(model, drop=["low"])
    td = result.model.get_layer("td")
    assert result.replaced == [(td.weights[0].path, "reinitialised")]
    _assert_copied(
        result.model.get_layer("top").weights, model.get_layer("top").weights
    )

    inputs = keras.Input((5, 3))
    sequence, state_h, state_c = keras.layers.LSTM(
        4, return_sequences=True, return_state=True, name="with_state"
    )(inputs)
    h = keras.layers.LSTM(4, name="top")(sequence)
    stated = keras.Model(inputs, [h, state_h])
    with pytest.raises(
        ValueError, match=r"remove layer `with_state`: it returns 3 tensors"
    ):
        reduce_depth(stated, drop=["with_state"])

    subclassed = keras.Sequential([keras.layers.LSTM(2)], name="lazy")
    with pytest.raises(ValueError, match=r"`lazy` is not built"):
        reduce_depth(subclassed, depth=1)


def test_a_plan_removing_nothing_returns_the_model_unchanged():
    model = _shared_stack(share_depth=False)
    plan = types.SimpleNamespace(drop=[])
    for drop in ([], plan):
        result = reduce_depth(model, drop=drop, x=_data(4, 5, 3))
        assert result.model is model
        assert result.removed == [] and result.replaced == [] and result.bridged == []
        assert result.levels_after == result.levels_before == 3
        assert "removes no level" in str(result)


def _linear_segment_stack(bias=True):
    """tanh SimpleRNN -> two linear memoryless levels -> GRU -> Dense: the
    two middle levels compute an affine map of the bottom level's output."""
    model = keras_seq.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.SimpleRNN(5, return_sequences=True, name="low"),
            keras.layers.SimpleRNN(
                5, activation=None, return_sequences=True, name="lin_1"
            ),
            keras.layers.SimpleRNN(
                5, activation=None, return_sequences=True, name="lin_2"
            ),
            keras.layers.GRU(4, name="top"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    for name, seed in (("lin_1", 3), ("lin_2", 4)):
        model.get_layer(name).set_weights(
            [
                _data(5, 5, seed=seed),
                np.zeros((5, 5), "float32"),
                _data(5, seed=seed + 10) if bias else np.zeros(5, "float32"),
            ]
        )
    return model


def _lstsq(a, b, mask=None):
    """`[M; c]` of `a M + c = b` by numpy's lstsq over the valid rows."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    if mask is not None:
        a, b = a[mask.reshape(-1)], b[mask.reshape(-1)]
    a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    return np.linalg.lstsq(a, b, rcond=None)[0]


def test_bridge_recovers_a_removed_linear_segment_and_changes_nothing_else():
    model = _linear_segment_stack()
    train, held_out = _data(32, 6, 3, seed=1), _data(8, 6, 3, seed=2)
    target = model.predict(held_out, verbose=0)

    result = reduce_depth(model, drop=["lin_1", "lin_2"], x=train)

    top, old_top = result.model.get_layer("top"), model.get_layer("top")
    assert result.bridged == [top.cell.kernel.path, top.cell.bias.path]
    assert result.replaced == []  # same widths: nothing had to be replaced
    np.testing.assert_allclose(
        result.model.predict(held_out, verbose=0), target, rtol=1e-4, atol=1e-5
    )
    # Against numpy: the kept level's input projection is refitted from the
    # bottom level's outputs to what the top level read before.
    seen = keras.Model(
        model.inputs, [model.get_layer("low").output, model.get_layer("lin_2").output]
    ).predict(train, verbose=0)
    coef = _lstsq(*seen)
    kernel, bias = _numpy(old_top.cell.kernel), _numpy(old_top.cell.bias)
    np.testing.assert_allclose(
        _numpy(top.cell.kernel), coef[:-1] @ kernel, rtol=1e-3, atol=3e-4
    )
    expected_bias = bias.copy()
    expected_bias[0] += coef[-1] @ kernel  # reset_after: row 0 is the input bias
    np.testing.assert_allclose(_numpy(top.cell.bias), expected_bias, atol=1e-4)
    # Every other weight is copied bit for bit.
    bridged = set(result.bridged)
    for layer in result.model.layers:
        for new, old in zip(layer.weights, model.get_layer(layer.name).weights):
            if new.path not in bridged:
                assert np.array_equal(_numpy(new), _numpy(old)), new.path
    assert len(bridged) == 2
    # Without the bridge the outputs move.
    plain = reduce_depth(model, drop=["lin_1", "lin_2"], x=train, bridge=False)
    assert plain.bridged == []
    moved = plain.model.predict(held_out, verbose=0)
    assert np.max(np.abs(moved - target)) > 1e-2


def test_bridge_fits_the_head_when_the_top_goes_and_respects_masks():
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(9, 3, mask_zero=True, name="embed")(inputs)
    h = keras.layers.LSTM(4, return_sequences=True, name="low")(h)
    h = keras.layers.SimpleRNN(5, activation=None, name="lin")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    model.get_layer("lin").set_weights(
        [_data(4, 5, seed=3), np.zeros((5, 5), "float32"), _data(5, seed=4)]
    )
    rng = np.random.RandomState(1)
    tokens = rng.randint(1, 9, size=(32, 6))
    tokens[np.arange(6)[None] >= rng.randint(2, 7, size=(32, 1))] = 0

    result = reduce_depth(model, drop=["lin"], x=tokens)

    head = result.model.get_layer("head")
    assert result.bridged == [head.kernel.path, head.bias.path]
    assert not result.model.get_layer("low").return_sequences
    # The head reads the last LSTM output now: an affine map of it gives
    # the linear level's last output exactly (memoryless, masked steps
    # repeat the last valid output).
    np.testing.assert_allclose(
        result.model.predict(tokens, verbose=0),
        model.predict(tokens, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )
    low_last = keras.Model(model.inputs, model.get_layer("low").output).predict(
        tokens, verbose=0
    )
    lengths = (tokens > 0).sum(axis=1)
    last = low_last[np.arange(32), lengths - 1]
    lin = keras.Model(model.inputs, model.get_layer("lin").output).predict(
        tokens, verbose=0
    )
    coef = _lstsq(last, lin)
    old = model.get_layer("head")
    np.testing.assert_allclose(
        _numpy(head.kernel), coef[:-1] @ _numpy(old.kernel), rtol=1e-3, atol=1e-5
    )


def test_bridge_inside_a_shared_rnn_respects_the_mask():
    """A middle sublevel goes: the sublevel above is refitted over the valid
    steps only (at padded steps the inputs are not an affine map)."""
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(9, 3, mask_zero=True)(inputs)
    rnn = SharedRNN(4, depth=3, return_sequences=True, name="rnn")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GRU(3)(rnn(h))))
    rng = np.random.RandomState(2)
    tokens = rng.randint(1, 9, size=(24, 6))
    tokens[np.arange(6)[None] >= rng.randint(2, 7, size=(24, 1))] = 0
    valid = tokens > 0

    result = reduce_depth(model, drop=["rnn/level_1"], x=tokens)

    new = result.model.get_layer("rnn")
    kernel, _, bias = new.cell.level_weights(1)
    assert result.bridged == [kernel.path, bias.path]
    # Sublevel outputs of the old layer, from unmasked copies of the levels.
    embedded = keras.Model(inputs, h).predict(tokens, verbose=0)
    old = model.get_layer("rnn").cell
    outs, x = [], embedded
    for level in range(3):
        k, u, b = (_numpy(w) for w in old.level_weights(level))
        state, seq = np.zeros((24, 4)), []
        for t in range(6):
            new_state = np.tanh(x[:, t] @ k + state @ u + b)
            state = np.where(valid[:, t : t + 1], new_state, state)
            seq.append(state)
        x = np.stack(seq, axis=1)
        outs.append(x)
    coef = _lstsq(outs[0], outs[1], mask=valid)
    k2, _, b2 = (_numpy(w) for w in old.level_weights(2))
    np.testing.assert_allclose(_numpy(kernel), coef[:-1] @ k2, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(_numpy(bias), coef[-1] @ k2 + b2, rtol=2e-3, atol=1e-4)


@slow_on_jax
def test_heal_cut_trains_only_the_layers_next_to_the_cut_first():
    model = _linear_segment_stack()
    model.compile(optimizer="adam", loss="mse")
    x, y = _data(16, 6, 3, seed=1), _data(16, 2, seed=2)
    bridged = reduce_depth(model, drop=["lin_1"], x=x)
    cut = reduce_depth(
        model,
        drop=["lin_1"],
        x=x,
        y=y,
        heal_epochs=1,
        heal="cut",
        batch_size=8,
        heal_validation_split=0,  # unguarded: the trained weights come back
    )
    assert cut.heal_validation == {}
    assert [phase for phase, _, _ in cut.healed] == ["cut"]
    moved = {
        layer.name
        for layer in cut.model.layers
        if not all(
            np.array_equal(_numpy(a), _numpy(b))
            for a, b in zip(layer.weights, bridged.model.get_layer(layer.name).weights)
        )
    }
    # lin_2 reads low's output now (bridged); low feeds it: both train.
    assert moved == {"low", "lin_2"}
    assert all(v.trainable for v in cut.model.weights)  # flags restored
    both = reduce_depth(
        model,
        drop=["lin_1"],
        x=x,
        y=y,
        heal_epochs=2,
        batch_size=8,
        heal_validation_split=0,
    )
    assert [phase for phase, _, _ in both.healed] == ["all"]
    assert "healed:   all, 2 epoch(s)" in str(both)
    with pytest.raises(ValueError, match=r"`heal_epochs` needs data.*y=None"):
        reduce_depth(model, drop=["lin_1"], x=x, heal_epochs=1)
    message = r"same number of samples.*\(16, 6, 3\).*\(15, 2\)"
    with pytest.raises(ValueError, match=message):
        reduce_depth(model, drop=["lin_1"], x=x, y=y[:15])


def _kept_weights_match(result, reference):
    return all(
        np.array_equal(_numpy(a), _numpy(b))
        for a, b in zip(result.model.weights, reference.model.weights)
    )


@slow_on_jax
@pytest.mark.parametrize("learning_rate", [1e-3, 30.0])
def test_healing_keeps_the_weights_best_on_held_out_rows(learning_rate):
    """Guarded healing: the kept weights are the lowest validation loss of
    "before healing" and every epoch; a harmful heal (a huge learning rate)
    hands back the bridged model bit for bit."""
    model = _linear_segment_stack()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    x, y = _data(40, 6, 3, seed=1), _data(40, 2, seed=2)
    # The bridge is fitted on the rows that train, not on the held-out ones.
    bridged = reduce_depth(model, drop=["lin_1"], x=x[:36])
    keras.utils.set_random_seed(0)
    result = reduce_depth(model, drop=["lin_1"], x=x, y=y, heal_epochs=3, batch_size=8)
    record = result.heal_validation
    assert list(record["losses"]) == ["before", "epoch 1", "epoch 2", "epoch 3"]
    # The last 10% of the rows (4 of 40) are held out, as Keras takes them.
    held_x, held_y = x[36:], y[36:]
    before = bridged.model.evaluate(held_x, held_y, verbose=0)
    np.testing.assert_allclose(record["losses"]["before"], before, rtol=1e-5)
    finite = {k: v for k, v in record["losses"].items() if np.isfinite(v)}
    assert record["kept"] == min(finite, key=finite.get)
    kept = result.model.evaluate(held_x, held_y, verbose=0)
    np.testing.assert_allclose(kept, min(finite.values()), rtol=1e-5)
    assert kept <= before
    if learning_rate > 1:  # the heal diverges: nothing beats the start
        assert record["kept"] == "before"
        assert _kept_weights_match(result, bridged)
        assert "kept:     the weights before healing" in str(result)
    else:  # a gentle heal improves the held-out loss
        assert record["kept"] != "before"
        assert not _kept_weights_match(result, bridged)
        assert f"after {record['kept']}" in str(result)


@slow_on_jax
def test_healing_validation_data_and_bad_arguments():
    model = _linear_segment_stack()
    model.compile(optimizer=keras.optimizers.SGD(30.0), loss="mse")
    x, y = _data(20, 6, 3, seed=1), _data(20, 2, seed=2)
    x_val, y_val = _data(7, 6, 3, seed=3), _data(7, 2, seed=4)
    bridged = reduce_depth(model, drop=["lin_1"], x=x)
    result = reduce_depth(
        model,
        drop=["lin_1"],
        x=x,
        y=y,
        heal_epochs=1,
        batch_size=8,
        heal_validation_data=(x_val, y_val),
    )
    expected = bridged.model.evaluate(x_val, y_val, verbose=0)
    np.testing.assert_allclose(
        result.heal_validation["losses"]["before"], expected, rtol=1e-5
    )
    kwargs = dict(drop=["lin_1"], x=x, y=y, heal_epochs=1)
    with pytest.raises(
        ValueError, match=r"heal_validation_split.*Received: heal_validation_split=1.0"
    ):
        reduce_depth(model, heal_validation_split=1.0, **kwargs)
    with pytest.raises(TypeError, match=r"heal_validation_split.*'0.1'"):
        reduce_depth(model, heal_validation_split="0.1", **kwargs)
    with pytest.raises(
        ValueError, match=r"20 rows of `x` give 20 held out and 0 to train"
    ):
        reduce_depth(model, heal_validation_split=0.99, **kwargs)
    with pytest.raises(TypeError, match=r"heal_validation_data.*tuple"):
        reduce_depth(model, heal_validation_data=x_val, **kwargs)
    with pytest.raises(ValueError, match=r"\(7, 6, 3\).*\(6, 2\)"):
        reduce_depth(model, heal_validation_data=(x_val, y_val[:6]), **kwargs)


@slow_on_jax
def test_guarded_heal_cut_and_a_fixed_batch_size():
    """Labels run on across heal="cut"'s two phases; with a fixed batch
    size both parts of the split are whole batches (a stateful stack)."""
    model = _linear_segment_stack()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    x, y = _data(40, 6, 3, seed=1), _data(40, 2, seed=2)
    cut = reduce_depth(
        model, drop=["lin_1"], x=x, y=y, heal_epochs=3, heal="cut", batch_size=8
    )
    assert [(p, n) for p, n, _ in cut.healed] == [("cut", 1), ("all", 2)]
    losses = cut.heal_validation["losses"]
    assert list(losses) == ["before", "epoch 1", "epoch 2", "epoch 3"]
    assert cut.heal_validation["kept"] == min(losses, key=losses.get)

    stateful = keras_seq.Sequential(
        [
            keras.Input(batch_shape=(8, 6, 3)),
            SharedRNN(4, depth=3, stateful=True, name="rnn"),
            keras.layers.Dense(2),
        ]
    )
    stateful.compile(optimizer="adam", loss="mse")
    x, y = _data(64, 6, 3, seed=3), _data(64, 2, seed=4)
    result = reduce_depth(stateful, drop=["rnn/level_1"], x=x, y=y, heal_epochs=1)
    # 10% of 64 rows is 6.4: 8 rows (one batch) held out, 56 train (a
    # ragged split would fail against the (8, units) states).
    losses = result.heal_validation["losses"]
    assert list(losses) == ["before", "epoch 1"]
    assert all(np.isfinite(v) for v in losses.values())
    assert result.heal_validation["kept"] == min(losses, key=losses.get)
    with pytest.raises(ValueError, match=r"whole batches.*size 8.*7 rows"):
        reduce_depth(
            stateful,
            drop=["rnn/level_1"],
            x=x,
            y=y,
            heal_epochs=1,
            heal_validation_data=(x[:7], y[:7]),
        )
    with pytest.raises(ValueError, match=r"used only when healing.*heal_epochs=0"):
        reduce_depth(stateful, drop=["rnn/level_1"], x=x, heal_validation_data=(x, y))
