"""suggest_depth: scores against independent measurements, the planted
redundancy, plans and errors."""

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq.depth import reduce_depth, suggest_depth
from keras_seq.layers import SharedRNN

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


def test_planted_pass_through_level_is_found_and_scored_zero():
    x, y = _data(64)
    trained = _stack(3)
    trained.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    trained.fit(x, y, epochs=40, batch_size=64, verbose=0)
    model = _planted(trained, at=0)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-5
    )
    for method in ("auto", "ablation", "similarity"):
        plan = suggest_depth(model, x, y, depth=3, method=method)
        assert plan.drop == ["planted/level_0"], method
    scores = plan.scores.set_index("level")
    assert scores.loc["planted/level_0", "similarity"] == pytest.approx(0.0, abs=1e-3)
    assert scores.loc["planted/level_0", "ablation_cost"] == pytest.approx(
        0.0, abs=1e-6
    )
    reduced = reduce_depth(model, drop=plan).model
    np.testing.assert_allclose(
        reduced.predict(x, verbose=0), trained.predict(x, verbose=0), rtol=1e-5
    )


def test_ablation_scores_are_measured_losses_without_each_level():
    x, y = _data()
    model = _stack(3)
    plan = suggest_depth(model, x, y, depth=2, method="ablation")
    full = model.evaluate(x, y, verbose=0)
    assert plan.full_loss == pytest.approx(full, rel=1e-6)
    for row in plan.scores.itertuples():
        alone = reduce_depth(model, drop=[row.level], x=x).model
        expected = alone.evaluate(x, y, verbose=0)
        assert row.ablation_loss == pytest.approx(expected, rel=1e-5)
        assert row.ablation_cost == pytest.approx(expected - full, rel=1e-4, abs=1e-7)
    cheapest = plan.scores.sort_values("ablation_cost").level.iloc[0]
    assert plan.drop == [cheapest]
    # The plan's measured loss is that of the planned model.
    planned = reduce_depth(model, drop=plan, x=x).model
    assert plan.loss == pytest.approx(planned.evaluate(x, y, verbose=0), rel=1e-5)


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


def test_auto_prefers_levels_vanishing_through_depth():
    x, y = _data(64)
    model = keras_seq.Sequential(
        [
            keras.Input((T, F)),
            SharedRNN(U, depth=5, activation="sigmoid", name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    plan = suggest_depth(model, x, y, depth=4)
    scores = plan.scores.set_index("level")
    assert "vanishing through depth" in scores.loc["rnn/level_0", "flags"]
    assert scores.loc["rnn/level_4", "depth_ratio"] == pytest.approx(1.0)
    assert scores.loc["rnn/level_0", "depth_ratio"] < 1e-2
    flagged = scores[scores["flags"].str.contains("vanishing")].index
    assert plan.drop[0] in flagged
    assert "vanishing through depth" in plan.explanation


@pytest.mark.parametrize("method", ["auto", "ablation"])  # greedy / prefix search
def test_target_depth_is_the_smallest_within_tolerance(method):
    x, y = _data(64)
    model = _stack(3)  # trained: removing levels costs loss
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=40, batch_size=64, verbose=0)
    plan = suggest_depth(model, x, y, tolerance=0.5, method=method)
    full = plan.full_loss
    names = plan.scores.sort_values("rank").level.tolist()
    expected = 0
    for k in range(1, 3):
        loss = reduce_depth(model, drop=names[:k], x=x).model.evaluate(x, y, verbose=0)
        if loss > full * 1.5:
            break
        expected = k
    assert len(plan.drop) == expected and plan.depth == 3 - expected


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


def test_auto_picks_each_next_level_by_the_measured_combination():
    x, y = _data(64)
    model = _stack(4)  # every level has width U: no weight is ever replaced
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    plan = suggest_depth(model, x, y, depth=2, tolerance=0.0)
    assert not plan.scores.replaces_weights.any()
    first, second = plan.drop
    full = model.evaluate(x, y, verbose=0)
    flagged = set(plan.scores.level[plan.scores["flags"].str.len() > 0])
    pair = {}
    for name in plan.scores.level:
        if name != first:
            reduced = reduce_depth(model, drop=[first, name], x=x).model
            pair[name] = reduced.evaluate(x, y, verbose=0)
    # Flagged levels first only when their cost is small (tolerance 0: <= 0).
    key = {n: (not (n in flagged and loss <= full), loss) for n, loss in pair.items()}
    assert second == min(key, key=key.get)
    assert plan.loss == pytest.approx(pair[second], rel=1e-5)


def test_tolerance_boundary_is_the_measured_relative_loss_increase():
    x, y = _data(64)
    model = _stack(3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=40, batch_size=64, verbose=0)
    first = suggest_depth(model, x, y, depth=2, method="ablation")
    increase = first.loss / first.full_loss - 1  # relative cost of that level
    assert increase > 0
    above = suggest_depth(model, x, y, tolerance=increase * 1.01, method="ablation")
    below = suggest_depth(model, x, y, tolerance=increase * 0.99, method="ablation")
    assert above.drop[:1] == first.drop and below.drop == []
    assert below.depth == 3 and below.loss == pytest.approx(below.full_loss)
