"""suggest_depth: scores against independent measurements, the planted
redundancy, plans and errors."""

import itertools

import keras
import numpy as np
import pandas as pd
import pytest

import keras_seq
from keras_seq.depth import reduce_depth, suggest_depth
from keras_seq.layers import SharedRNN

# The JAX run of `make test` stays short: these run there with `-m slow`.
slow_on_jax = (
    pytest.mark.slow if keras.backend.backend() == "jax" else pytest.mark.usefixtures()
)

T, F, U = 8, 3, 6


def _data(samples=32, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(samples, T, F).astype("float32")
    return x, x[:, :, :1].sum(axis=1) / T


def _stack(levels=3, activation="tanh"):
    layers = [keras.Input((T, F)), keras.layers.Dense(U, name="project")]
    layers += [
        SharedRNN(
            U, activation=activation, return_sequences=i < levels - 1, name=f"r{i}"
        )
        for i in range(levels)
    ]
    model = keras_seq.Sequential(layers + [keras.layers.Dense(1, name="head")])
    model.compile(optimizer="adam", loss="mse")
    return model


def _planted(trained, at):
    """`trained` with an exact pass-through level inserted above level `at`."""
    layers = [keras.Input((T, F))]
    for layer in trained.layers:
        layers.append(type(layer).from_config(layer.get_config()))
        if layer.name == f"r{at}":
            layers.append(
                SharedRNN(
                    U,
                    activation="linear",
                    kernel_initializer="identity",
                    recurrent_initializer="zeros",
                    return_sequences=True,
                    name="planted",
                )
            )
    model = keras_seq.Sequential(layers)
    for layer in trained.layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    model.compile(optimizer="adam", loss="mse")
    return model


def _held_out_loss(model, drop, x, y):
    """Loss of `model` without `drop`, bridged on the even rows, measured on
    the odd rows (suggest_depth's split), by a real rebuild."""
    reduced = reduce_depth(model, drop=list(drop), x=x[::2]).model if drop else model
    # The compiled loss by an eager call (evaluate would trace per model).
    y_pred = reduced(x[1::2], training=False)
    return float(reduced.compute_loss(y=y[1::2], y_pred=y_pred, training=False))


@slow_on_jax
def test_planted_pass_through_level_is_found_and_scored_zero():
    x, y = _data(64)
    trained = _stack(3)
    trained.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    trained.fit(x, y, epochs=40, batch_size=64, verbose=0)
    model = _planted(trained, at=0)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-5
    )
    plan = suggest_depth(model, x, y, depth=3, method="similarity")
    assert plan.drop == ["planted/level_0"]
    scores = plan.scores.set_index("level")
    # ablation takes the cheapest level: the planted one costs nothing, a
    # bridged trained level may even measure a little below the full model.
    ablation = suggest_depth(model, x, y, depth=3, method="ablation")
    assert scores.ablation_cost[ablation.drop[0]] <= 1e-9
    assert scores.loc["planted/level_0", "similarity"] == pytest.approx(0.0, abs=1e-3)
    assert scores.loc["planted/level_0", "ablation_cost"] == pytest.approx(
        0.0, abs=1e-6
    )
    # auto takes the lowest measured loss: never above the planted level's.
    auto = suggest_depth(model, x, y, depth=3)
    assert auto.loss <= scores.loc["planted/level_0", "ablation_loss"] + 1e-9
    reduced = reduce_depth(model, drop=plan).model
    np.testing.assert_allclose(
        reduced.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-5
    )


def _teacher(model, samples=64):
    """Data whose targets are `model`'s own outputs plus a little noise:
    removing any level costs loss."""
    x, _ = _data(samples)
    y = model.predict(x, verbose=0)
    return x, y + 0.05 * np.random.RandomState(5).randn(*y.shape).astype("float32")


@slow_on_jax
def test_ablation_scores_are_measured_losses_without_each_level():
    x, y = _data()
    model = _stack(3)
    plan = suggest_depth(model, x, y, depth=2, method="ablation")
    full = _held_out_loss(model, [], x, y)
    assert plan.full_loss == pytest.approx(full, rel=1e-5)
    for row in plan.scores.itertuples():
        expected = _held_out_loss(model, [row.level], x, y)
        assert row.ablation_loss == pytest.approx(expected, rel=1e-4)
        assert row.ablation_cost == pytest.approx(expected - full, rel=1e-3, abs=1e-6)
    cheapest = plan.scores.sort_values("ablation_cost").level.iloc[0]
    assert plan.drop == [cheapest]
    assert plan.loss == pytest.approx(_held_out_loss(model, plan.drop, x, y), rel=1e-4)


def test_similarity_is_the_angular_distance_of_input_and_output():
    x, y = _data(8)
    model = _stack(2)
    plan = suggest_depth(model, x, y, depth=1, method="similarity")
    extractor = keras.Model(
        model.inputs, [model.get_layer("project").output, model.get_layer("r0").output]
    )
    inputs, outputs = (a.reshape(-1, U) for a in extractor.predict(x, verbose=0))
    cosine = np.sum(inputs * outputs, 1) / (
        np.linalg.norm(inputs, axis=1) * np.linalg.norm(outputs, axis=1)
    )
    expected = np.mean(np.arccos(np.clip(cosine, -1, 1)) / np.pi)
    got = plan.scores.set_index("level").loc["r0/level_0", "similarity"]
    assert got == pytest.approx(expected, rel=1e-4)


def test_last_drops_the_levels_below_the_top_first_and_needs_no_data():
    model = _stack(4)
    plan = suggest_depth(model, method="last", depth=2)
    assert plan.drop == ["r2/level_0", "r1/level_0"]
    assert plan.loss is None and plan.depth == 2
    auto = suggest_depth(model)
    assert auto.drop == ["r2/level_0"]  # falls back to 'last', one level
    assert "no data and no monitor" in auto.explanation


@slow_on_jax
def test_gradient_flags_levels_vanishing_through_depth_and_auto_says_why():
    x, y = _data(64)
    model = keras_seq.Sequential(
        [
            keras.Input((T, F)),
            SharedRNN(U, depth=5, activation="sigmoid", name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    plan = suggest_depth(model, x, y, depth=4, method="gradient")
    scores = plan.scores.set_index("level")
    assert "vanishing through depth" in scores.loc["rnn/level_0", "flags"]
    assert scores.loc["rnn/level_4", "depth_ratio"] == pytest.approx(1.0)
    assert scores.loc["rnn/level_0", "depth_ratio"] < 1e-2
    flagged = scores[scores["flags"].str.contains("vanishing")].index
    assert plan.drop[0] in flagged
    assert "vanishing through depth" in plan.explanation
    auto = suggest_depth(model, x, y, depth=4)
    assert "diagnosis column only and do not enter the choice" in auto.explanation


@slow_on_jax
def test_target_depth_is_the_smallest_within_tolerance():
    model = _stack(3)
    x, y = _teacher(model)
    plan = suggest_depth(model, x, y, tolerance=0.5, method="ablation")
    full = plan.full_loss
    names = plan.scores.sort_values("rank").level.tolist()
    expected = 0
    for k in range(1, 3):
        if _held_out_loss(model, names[:k], x, y) > full * 1.5:
            break
        expected = k
    assert len(plan.drop) == expected and plan.depth == 3 - expected
    # auto: the best measured set of each size, while within the tolerance.
    auto = suggest_depth(model, x, y, tolerance=0.5)
    best = auto.candidates.groupby("levels_dropped").loss.min()
    within = [k for k in best.index if best[k] <= full * 1.5]
    expected = 0
    while expected + 1 in within:
        expected += 1
    assert len(auto.drop) == expected


def test_monitor_given_gives_gradient_scores_without_data():
    x, y = _data()
    model = _stack(3, activation="sigmoid")
    monitor = keras_seq.callbacks.GradientMonitor(every=1)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    plan = suggest_depth(model, monitor=monitor, method="gradient")
    ratios = plan.scores.depth_ratio.to_numpy()
    frame = monitor.to_frame()
    expected = [np.median(frame[f"depth_ratio/r{i}/level_0"]) for i in range(3)]
    np.testing.assert_allclose(ratios, expected)
    assert np.isnan(plan.scores.ablation_cost).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="best"), ValueError, "method"),
        (dict(depth=3), ValueError, "below the model's 3 recurrent levels"),
        (dict(depth=0), ValueError, "depth"),
        (dict(tolerance=-1), ValueError, "tolerance"),
        (dict(monitor="m"), TypeError, "GradientMonitor"),
        (dict(method="ablation"), ValueError, "needs data"),
        (dict(method="gradient"), ValueError, "monitor"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        suggest_depth(_stack(3), **kwargs)


def test_errors_about_data_and_models():
    x, y = _data()
    with pytest.raises(ValueError, match="`x` and `y` go together"):
        suggest_depth(_stack(3), x)
    with pytest.raises(ValueError, match="recorded no training step"):
        suggest_depth(_stack(3), monitor=keras_seq.callbacks.GradientMonitor(every=1))
    single = _stack(1)
    with pytest.raises(ValueError, match="nothing to remove"):
        suggest_depth(single, x, y)
    uncompiled = keras_seq.Sequential([keras.Input((T, F)), SharedRNN(U, depth=2)])
    with pytest.raises(ValueError, match="not compiled"):
        suggest_depth(uncompiled, x, y[:, :, None] if y.ndim == 3 else y)


@slow_on_jax
def test_auto_takes_the_best_combination_measured_by_real_rebuilds():
    x, y = _data(64)
    model = keras_seq.Sequential(
        [keras.Input((T, F))]
        + [keras.layers.GRU(U, return_sequences=i < 3, name=f"g{i}") for i in range(4)]
        + [keras.layers.Dense(1, name="head")]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    plan = suggest_depth(model, x, y, depth=2)
    assert plan.traces == 1  # one trace for all 6 pairs and 4 singles
    assert len(plan.candidates) == 10
    names = plan.scores.level.tolist()
    real = {
        pair: _held_out_loss(model, pair, x, y)
        for pair in itertools.combinations(names, 2)
    }
    for row in plan.candidates.itertuples():
        if len(row.drop) == 2:  # the traced loss is the rebuilt model's
            assert row.loss == pytest.approx(real[row.drop], rel=1e-4, abs=1e-7)
    # The documented choice: among the pairs within the tolerance (5% of the
    # full model's loss) of the best and no worse than the baseline, one
    # whose cuts keep every input width (g0 reads F features, the rest U),
    # the lowest loss first.
    baseline = real[("g1/level_0", "g2/level_0")]  # just below the top
    slack = min(min(real.values()) + 0.05 * _held_out_loss(model, (), x, y), baseline)
    near = [pair for pair, loss in real.items() if loss <= slack]
    best = min(near, key=lambda pair: ("g0/level_0" in pair, real[pair]))
    assert tuple(plan.drop) == best
    assert plan.loss == pytest.approx(real[best], rel=1e-4)
    assert plan.loss <= baseline + 1e-7


def test_the_position_baseline_is_always_a_candidate():
    x, y = _data(32)
    model = _stack(4)
    # A beam of one from a single candidate per size: the baseline (the
    # levels just below the top) must still be measured at every size.
    plan = suggest_depth(model, x, y, depth=1, max_candidates=1, beam=1)
    frame = plan.candidates
    for k, expected in ((1, ("r2/level_0",)), (2, ("r1/level_0", "r2/level_0"))):
        rows = frame[frame.levels_dropped == k]
        assert expected in set(rows["drop"]), k
        assert rows.position_baseline.sum() == 1
    at_target = frame[frame.levels_dropped == 3]
    baseline = at_target[at_target.position_baseline].loss.iloc[0]
    assert plan.loss <= baseline
    assert "beam of 1" in plan.explanation


@pytest.mark.parametrize(
    "losses, gap, changing, chosen",
    [
        # (1, 3) keeps every width and is within the gap of the best and
        # no worse than the baseline (1, 2): preferred to the lower (0, 1).
        ({(1, 3): 1.03}, 0.05, {0}, (1, 3)),
        # Worse than the baseline: excluded; the baseline keeps widths.
        ({(1, 3): 1.045}, 0.05, {0}, (1, 2)),
        # ... also when the baseline changes widths too: the best measured.
        ({(1, 3): 1.045}, 0.05, {0, 2}, (0, 1)),
        # Every width-keeping set beyond the gap: the best measured.
        ({(1, 3): 1.03}, 0.01, {0}, (0, 1)),
        # A width-keeping set that measures best is taken as it is.
        ({(1, 3): 0.99}, 0.05, {0}, (1, 3)),
    ],
)
def test_width_keeping_sets_are_preferred_within_the_tolerance(
    losses, gap, changing, chosen
):
    # The rule alone, on planted losses: removing a level of `changing`
    # changes the width the level above reads (its kernel is replaced).
    from keras_seq.depth import suggest as module

    measured = {(0, 1): 1.00, (0, 2): 1.01, (0, 3): 1.02, (1, 2): 1.04}
    measured.update({(2, 3): 1.5, (1, 3): 1.5, **losses})
    single = {(0,): 0.9, (1,): 0.95, (2,): 0.97, (3,): 1.4}
    frame = pd.DataFrame({"ablation_loss": [single[(i,)] for i in range(4)]})
    asked = []

    def measure(candidates):
        asked.extend(candidates)
        return [{**measured, **single}[tuple(sorted(c))] for c in candidates]

    drop, loss, _, note = module._combinations(
        4, 2, 2.0, measure, frame, 70, 8, gap, lambda d: bool(changing & set(d))
    )
    assert tuple(drop) == chosen and loss == measured[chosen]
    assert (1, 2) in asked  # the position baseline, measured
    assert f"against {measured[(1, 2)]:.4g} for the baseline" in note


def test_harmful_plans_say_so_and_fallback_layouts_are_measured():
    model = _stack(3)
    x, y = _teacher(model, 32)
    plan = suggest_depth(model, x, y, depth=1, tolerance=0.0)
    assert plan.loss > plan.full_loss
    assert "WARNING: this plan harms the model" in plan.explanation
    # A Dense between levels: measured by rebuilding each candidate.
    layers = [keras.Input((T, F)), SharedRNN(U, return_sequences=True, name="a")]
    layers += [keras.layers.Dense(U, name="between"), SharedRNN(U, name="b")]
    between = keras_seq.Sequential(layers + [keras.layers.Dense(1)])
    between.compile(optimizer="adam", loss="mse")
    plan = suggest_depth(between, x, y, depth=1)
    assert plan.traces is None and "rebuilt with reduce_depth" in plan.explanation
    expected = _held_out_loss(between, plan.drop, x, y)
    assert plan.loss == pytest.approx(expected, rel=1e-4)


def test_rows_of_x_and_y_must_match():
    x, y = _data(32)
    with pytest.raises(
        ValueError, match=r"same number of samples.*\(32, 8, 3\).*\(31, 1\)"
    ):
        suggest_depth(_stack(2), x, y[:31])
    with pytest.raises(ValueError, match=r"`max_candidates` must be"):
        suggest_depth(_stack(2), x, y, max_candidates=0)


def test_tolerance_boundary_is_the_measured_relative_loss_increase():
    model = _stack(3)
    x, y = _teacher(model)
    first = suggest_depth(model, x, y, depth=2, method="ablation")
    increase = first.loss / first.full_loss - 1  # relative cost of that level
    assert increase > 0
    above = suggest_depth(model, x, y, tolerance=increase * 1.01, method="ablation")
    below = suggest_depth(model, x, y, tolerance=increase * 0.99, method="ablation")
    assert above.drop[:1] == first.drop and below.drop == []
    assert below.depth == 3 and below.loss == pytest.approx(below.full_loss)


def _masked_bidirectional():
    inputs = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(9, F, mask_zero=True)(inputs)
    for i in range(3):
        h = keras.layers.Bidirectional(
            keras.layers.LSTM(4, return_sequences=i < 2), name=f"bi{i}"
        )(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.RandomState(3)
    tokens = rng.randint(1, 9, size=(24, T))
    tokens[np.arange(T)[None] >= rng.randint(2, T + 1, size=(24, 1))] = 0
    return model, tokens, rng.rand(24, 1).astype("float32")


@slow_on_jax
def test_traced_losses_equal_rebuilt_models_for_a_masked_bidirectional_stack():
    model, x, y = _masked_bidirectional()
    plan = suggest_depth(model, x, y, depth=1)
    assert plan.traces == 1 and len(plan.candidates) == 6
    for row in plan.candidates.itertuples():
        expected = _held_out_loss(model, row.drop, x, y)
        assert row.loss == pytest.approx(expected, rel=1e-4, abs=1e-7), row.drop
    assert plan.full_loss == pytest.approx(_held_out_loss(model, [], x, y), rel=1e-5)


def _engine(model, x, y):
    from keras_seq.depth import recurrent_levels
    from keras_seq.depth.search import CandidateLosses

    rows = np.arange(len(x))
    levels = recurrent_levels(model)
    return levels, CandidateLosses(model, levels, x, y, rows % 2 == 0, rows % 2 == 1)


def _other_stack(kind):
    """Layouts the engine must agree with reduce_depth on: a `share_depth`
    SharedRNN (its shared levels are not refitted), GRUs with and without
    biases (reset_after's two bias rows), a functional Dropout -> Dense
    head."""
    inputs = keras.Input((T, F))
    if kind == "shared_depth":
        h = SharedRNN(U, depth=5, share_depth=True, name="rnn")(inputs)
    elif kind == "gru":
        h = inputs
        for i in range(4):
            h = keras.layers.GRU(
                U, use_bias=i != 2, return_sequences=i < 3, name=f"g{i}"
            )(h)
    else:
        h = inputs
        for i in range(4):
            h = SharedRNN(U, return_sequences=i < 3, name=f"r{i}")(h)
        h = keras.layers.Dropout(0.5)(h)
    model = keras_seq.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="adam", loss="mse")
    x, y = _teacher(model, 32)
    return model, x, y


@slow_on_jax
@pytest.mark.parametrize(
    "kind", ["stack", "masked_bidirectional", "shared_depth", "gru", "dropout_head"]
)
def test_engine_bridges_equal_reduce_depths_fits_for_every_cut(kind):
    """The bridges the traced engine hands a plan equal those reduce_depth
    fits by its eager forward passes on the same (even) rows, for every set
    of levels: bottom, middle, top (the Dense head refitted), several cuts;
    and each set's measured loss is that of the model reduce_depth builds
    with them."""
    if kind == "stack":
        model = _stack(4)
        x, y = _teacher(model, 32)
    elif kind == "masked_bidirectional":
        model, x, y = _masked_bidirectional()
    else:
        model, x, y = _other_stack(kind)
    levels, engine = _engine(model, x, y)
    names = [level.name for level in levels]
    n = len(levels)
    seen_head = False
    every = [c for k in range(1, n) for c in itertools.combinations(range(n), k)]
    # Every set for two layouts; for the others (time) the bottom, a middle
    # level, the top, two adjacent, top and bottom, all but the two ends.
    some = [(0,), (1,), (n - 1,), (1, 2), (0, n - 1), tuple(range(1, n - 1))]
    for drop in every if kind in ("stack", "masked_bidirectional") else some:
        fits = engine.bridges(drop)
        expected = reduce_depth(
            model, drop=[names[i] for i in drop], x=x[::2]
        ).bridge_fits
        assert sorted(fits) == sorted(expected), drop
        seen_head |= "head" in fits
        measured = engine.losses([drop])[0]
        rebuilt = _held_out_loss(model, [names[i] for i in drop], x, y)
        assert measured == pytest.approx(rebuilt, rel=1e-4, abs=1e-7), drop
        for name in expected:
            for (m, c), (m_ref, c_ref) in zip(fits[name], expected[name]):
                np.testing.assert_allclose(m, m_ref, rtol=2e-3, atol=2e-4)
                assert (c is None) == (c_ref is None), name
                if c is not None:
                    np.testing.assert_allclose(c, c_ref, rtol=2e-3, atol=2e-4)
    assert seen_head


@slow_on_jax
@pytest.mark.parametrize("kind", ["stack", "masked_bidirectional", "between"])
def test_reduce_with_the_plan_is_the_measured_model_without_a_forward_pass(
    kind, monkeypatch
):
    if kind == "stack":
        model = _stack(4)
        x, y = _teacher(model, 32)
    elif kind == "masked_bidirectional":
        model, x, y = _masked_bidirectional()
    else:  # a layout the engine does not model: the plan comes from rebuilds
        layers = [keras.Input((T, F)), SharedRNN(U, return_sequences=True, name="a")]
        layers += [keras.layers.Dense(U, name="between")]
        layers += [SharedRNN(U, return_sequences=True, name="b"), SharedRNN(U)]
        model = keras_seq.Sequential(layers + [keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        x, y = _teacher(model, 32)
    plan = suggest_depth(model, x, y, depth=1)
    assert plan.bridges and (plan.traces is None) == (kind == "between")
    by_x = reduce_depth(model, drop=plan, x=x[::2])
    import keras_seq.depth.reduce as reduce_module

    def no_pass(*args, **kwargs):
        raise AssertionError("reduce_depth ran a forward pass")

    monkeypatch.setattr(reduce_module, "_run", no_pass)
    result = reduce_depth(model, drop=plan)
    assert result.bridged_on == "plan" and result.bridged == by_x.bridged
    assert "(the plan's, fitted by suggest_depth)" in str(result)
    y_pred = result.model(x[1::2], training=False)
    loss = float(result.model.compute_loss(y=y[1::2], y_pred=y_pred, training=False))
    assert loss == pytest.approx(plan.loss, rel=1e-5, abs=1e-8)
    for a, b in zip(result.model.weights, by_x.model.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            rtol=2e-3,
            atol=2e-4,
            err_msg=a.path,
        )


def test_the_plans_bridges_refuse_other_weights():
    model = _stack(3)
    x, y = _teacher(model, 32)
    plan = suggest_depth(model, x, y, depth=2)
    reduce_depth(model, drop=plan)  # the weights it measured: accepted
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 2.0)
    with pytest.raises(ValueError, match=r"fitted on other weights.*Pass x="):
        reduce_depth(model, drop=plan)
    assert reduce_depth(model, drop=plan, x=x).bridged_on == "x"
    unbridged = reduce_depth(model, drop=plan, bridge=False)
    assert unbridged.bridged == [] and unbridged.bridged_on == ""
    no_data = suggest_depth(model, depth=2, method="last")
    assert no_data.bridges is None
    with pytest.raises(ValueError, match=r"`bridge=True` needs `x=`"):
        reduce_depth(model, drop=no_data, bridge=True)
