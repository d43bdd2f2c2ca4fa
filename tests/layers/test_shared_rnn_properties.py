"""Property-based tests of `SharedRNN`: over shapes, dtypes, masks, depth,
direction and output options it gives what an independent reference gives
(a plain numpy recurrence, the same recurrence as an eager TensorFlow loop
for gradients, or `keras.layers.SimpleRNN` with the same weights), and bad
arguments or inputs raise a ValueError/TypeError that names the problem.

Everything runs eagerly on tiny shapes (no tf.function is traced per
example); `derandomize=True` makes every run draw the same examples.
"""

import json
import re
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from keras_seq.layers import SharedRNN

PROFILE = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    # The explain phase re-runs a failing example ~100 times (20 s here)
    # only to annotate the report.
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow],
)

# The properties that compare values draw a few more examples, and each
# also runs the hardest combinations explicitly (see `full_case`): 15-20
# random draws over a dozen options can miss, say, go_backwards with
# return_sequences and a partly valid mask.
THOROUGH = settings(PROFILE, max_examples=20)


ACTIVATIONS = {
    "tanh": (np.tanh, tf.tanh),
    "relu": (lambda a: np.maximum(a, 0.0), tf.nn.relu),
    "sigmoid": (lambda a: 1.0 / (1.0 + np.exp(-a)), tf.sigmoid),
    "linear": (lambda a: a, tf.identity),
}

# The reference recurrence is written once over this small namespace, so the
# same code gives numpy forward values and, with TensorFlow ops in an eager
# Python loop (no while_loop, no custom gradient), reference gradients.
NP = types.SimpleNamespace(
    where=np.where,
    stack=np.stack,
    zeros_like=np.zeros_like,
    zeros=lambda shape: np.zeros(shape),
    act={name: fns[0] for name, fns in ACTIVATIONS.items()},
)
TF = types.SimpleNamespace(
    where=tf.where,
    stack=tf.stack,
    zeros_like=tf.zeros_like,
    zeros=lambda shape: tf.zeros(shape, tf.float64),
    act={name: fns[1] for name, fns in ACTIVATIONS.items()},
)


# ---------------------------------------------------------------- reference


def level_weights(weights, depth, share_depth, use_bias=True):
    """Split `get_weights()` into one (kernel, recurrent_kernel, bias) per
    sublayer; shared sublayers get the same arrays."""
    width = 3 if use_bias else 2
    sets = [list(weights[i : i + width]) for i in range(0, len(weights), width)]
    if not use_bias:
        sets = [s + [None] for s in sets]
    if share_depth:
        return [sets[0]] + [sets[1]] * (depth - 1)
    return sets


def reference(
    x,
    levels,
    mask=None,
    initial_state=None,
    go_backwards=False,
    return_sequences=False,
    return_state=False,
    zero_output_for_mask=False,
    activation="tanh",
    xp=NP,
):
    """Keras RNN semantics, one step at a time: masked steps carry the state;
    their output is zero, or the last shown output (zero before the first
    valid step); with go_backwards the sequence is returned reversed."""
    act = xp.act[activation]
    steps = x.shape[1]
    order = list(range(steps - 1, -1, -1)) if go_backwards else list(range(steps))
    seq = [x[:, t] for t in order]
    valid = None if mask is None else [mask[:, t : t + 1] for t in order]
    states = []
    for level, (kernel, recurrent_kernel, bias) in enumerate(levels):
        if initial_state is None:
            h = xp.zeros((x.shape[0], kernel.shape[1]))
        else:
            h = initial_state[level]
        outputs = []
        for k, x_t in enumerate(seq):
            a = x_t @ kernel + h @ recurrent_kernel
            if bias is not None:
                a = a + bias
            new = act(a)
            if valid is not None:
                new = xp.where(valid[k], new, h)
            outputs.append(new)
            h = new
        states.append(h)
        seq = outputs
    if valid is not None:
        seen = np.cumsum(np.stack(valid, axis=0), axis=0) > 0
        keep = valid if zero_output_for_mask else list(seen)
        seq = [xp.where(keep[k], o, xp.zeros_like(o)) for k, o in enumerate(seq)]
    output = xp.stack(seq, axis=1) if return_sequences else seq[-1]
    return [output] + states if return_state else [output]


def bidirectional_reference(x, forward, backward, mask, options, xp=NP):
    """`Bidirectional(merge_mode="concat")`: Keras forces
    zero_output_for_mask=return_sequences on both directions and flips the
    backward sequence back."""
    common = dict(
        mask=mask,
        return_sequences=options["return_sequences"],
        return_state=options["return_state"],
        zero_output_for_mask=options["return_sequences"],
        activation=options["activation"],
        xp=xp,
    )
    fwd = reference(x, forward, go_backwards=False, **common)
    bwd = reference(x, backward, go_backwards=True, **common)
    y_rev = bwd[0][:, ::-1] if options["return_sequences"] else bwd[0]
    merged = np.concatenate([fwd[0], y_rev], axis=-1)
    return [merged] + fwd[1:] + bwd[1:]


# ---------------------------------------------------------------- strategies


MASK_KINDS = [
    "none",
    "random",
    "random",
    "one_row_all_masked",
    "all_masked",
    "all_valid",
    "leading_padding",
    "trailing_padding",
]


def make_mask(kind, batch, steps, rng):
    if kind == "none":
        return None
    if kind == "random":
        return rng.rand(batch, steps) < 0.6
    if kind == "all_masked":
        return np.zeros((batch, steps), bool)
    if kind == "all_valid":
        return np.ones((batch, steps), bool)
    lengths = rng.randint(0, steps + 1, size=batch)
    positions = np.arange(steps)[None]
    if kind == "leading_padding":
        mask = positions >= (steps - lengths[:, None])
    elif kind == "trailing_padding":
        mask = positions < lengths[:, None]
    else:  # one_row_all_masked
        mask = rng.rand(batch, steps) < 0.7
        mask[rng.randint(batch)] = False
    return mask


@st.composite
def cases(draw, max_depth=3, depth=None, activations=tuple(ACTIVATIONS)):
    """A layer configuration and the data to call it on."""
    case = {
        "batch": draw(st.integers(1, 4)),
        "steps": draw(st.integers(1, 6)),
        "features": draw(st.integers(1, 4)),
        "units": draw(st.integers(1, 5)),
        "depth": depth if depth is not None else draw(st.integers(1, max_depth)),
        "go_backwards": draw(st.booleans()),
        "return_sequences": draw(st.booleans()),
        "return_state": draw(st.booleans()),
        "activation": draw(st.sampled_from(activations)),
        "use_bias": draw(st.booleans()),
        "mask_kind": draw(st.sampled_from(MASK_KINDS)),
        "with_initial_state": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }
    case["share_depth"] = case["depth"] >= 2 and draw(st.booleans())
    case["zero_output_for_mask"] = draw(st.booleans())
    # Dropout only acts with training=True; every call here is inference.
    case["dropout"] = draw(st.sampled_from([0.0, 0.0, 0.4]))
    case["recurrent_dropout"] = draw(st.sampled_from([0.0, 0.0, 0.4]))
    return case


def full_case(**overrides):
    """Every option at once: several sublayers, backwards, all outputs, a
    mask with a fully masked row, initial states, a non-zero bias."""
    case = {
        "batch": 3,
        "steps": 5,
        "features": 2,
        "units": 4,
        "depth": 3,
        "share_depth": False,
        "go_backwards": True,
        "return_sequences": True,
        "return_state": True,
        "activation": "tanh",
        "use_bias": True,
        "mask_kind": "one_row_all_masked",
        "with_initial_state": True,
        "zero_output_for_mask": False,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "seed": 7,
    }
    return {**case, **overrides}


HARD_CASES = [
    full_case(),
    full_case(share_depth=True, mask_kind="leading_padding", seed=3),
    full_case(
        depth=2,
        go_backwards=False,
        return_sequences=False,
        zero_output_for_mask=True,
        mask_kind="trailing_padding",
        activation="relu",
        seed=11,
    ),
]


def with_hard_cases(**overrides):
    """Runs HARD_CASES (with `overrides`) before the drawn examples."""

    def decorate(test):
        for case in reversed(HARD_CASES):
            test = example({**case, **overrides})(test)
        return test

    return decorate


LAYER_OPTIONS = (
    "depth",
    "share_depth",
    "go_backwards",
    "return_sequences",
    "return_state",
    "activation",
    "use_bias",
    "zero_output_for_mask",
    "dropout",
    "recurrent_dropout",
)


def layer_options(case):
    return {name: case[name] for name in LAYER_OPTIONS if name in case}


REFERENCE_OPTIONS = (
    "go_backwards",
    "return_sequences",
    "return_state",
    "zero_output_for_mask",
    "activation",
)


def expected_for(case, x, weights, mask=None, h0=None, xp=NP):
    """The reference outputs of the layer `case` describes."""
    if xp is NP:
        x = np.asarray(x, np.float64)
        h0 = None if h0 is None else [np.asarray(s, np.float64) for s in h0]
    levels = level_weights(
        weights, case["depth"], case["share_depth"], case["use_bias"]
    )
    options = {name: case[name] for name in REFERENCE_OPTIONS}
    return reference(x, levels, mask=mask, initial_state=h0, xp=xp, **options)


def data(case, dtype="float32"):
    rng = np.random.RandomState(case["seed"])
    x = rng.randn(case["batch"], case["steps"], case["features"]).astype(dtype)
    mask = make_mask(case["mask_kind"], case["batch"], case["steps"], rng)
    h0 = None
    if case["with_initial_state"]:
        h0 = [
            (0.5 * rng.randn(case["batch"], case["units"])).astype(dtype)
            for _ in range(case.get("depth", 1))
        ]
    return x, mask, h0


def set_random_weights(layer, seed):
    """Weights of a scale that keeps tanh/sigmoid out of saturation but makes
    every term matter (the initializers' zero bias would hide bias bugs)."""
    rng = np.random.RandomState(seed + 1)
    weights = [
        (0.7 * rng.randn(*w.shape) / np.sqrt(max(w.shape[0], 1))).astype("float32")
        for w in layer.get_weights()
    ]
    layer.set_weights(weights)
    return [w.astype(np.float64) for w in weights]


def call(layer, x, mask=None, h0=None):
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = tf.constant(mask)
    if h0 is not None:
        kwargs["initial_state"] = [tf.constant(s) for s in h0]
    out = layer(tf.constant(x), **kwargs)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def expected_shapes(case, units=None):
    units = units or case["units"]
    if case["return_sequences"]:
        output = (case["batch"], case["steps"], units)
    else:
        output = (case["batch"], units)
    states = [(case["batch"], case["units"])] * case["depth"]
    return [output] + (states if case["return_state"] else [])


def loss_of(outputs, seed, xp_sum):
    """sum(c * out + 0.3 out^2) with fixed random c per output element, so
    every output element gets a different, non-symmetric weight."""
    rng = np.random.RandomState(seed + 2)
    total = 0.0
    for out in outputs:
        c = rng.randn(*out.shape)
        total = total + xp_sum(c * out + 0.3 * out * out)
    return total


# ---------------------------------------------------------------- properties


@THOROUGH
@with_hard_cases()
@given(cases())
def test_forward_matches_numpy_reference(case):
    layer = SharedRNN(case["units"], **layer_options(case))
    x, mask, h0 = data(case)
    layer.build(x.shape)
    weights = set_random_weights(layer, case["seed"])
    outputs = call(layer, x, mask, h0)
    expected = expected_for(case, x, weights, mask, h0)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(case)
    assert len(outputs) == len(expected)
    for actual, wanted in zip(outputs, expected):
        assert keras.backend.standardize_dtype(actual.dtype) == "float32"
        assert_close(actual, wanted, tol=1e-5)


@THOROUGH
@with_hard_cases()
@given(cases())
def test_gradients_match_unrolled_reference(case):
    """dL/d(inputs, initial states, every weight) against TensorFlow's
    autodiff of the reference recurrence run as an eager Python loop in
    float64."""
    layer = SharedRNN(case["units"], **layer_options(case))
    x, mask, h0 = data(case)
    layer.build(x.shape)
    weights = set_random_weights(layer, case["seed"])

    x_t = tf.constant(x)
    h0_t = None if h0 is None else [tf.constant(s) for s in h0]
    kwargs = {"mask": tf.constant(mask)} if mask is not None else {}
    if h0_t is not None:
        kwargs["initial_state"] = h0_t
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        if h0_t is not None:
            tape.watch(h0_t)
        out = layer(x_t, **kwargs)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = loss_of(out, case["seed"], tf.reduce_sum)
    sources = [x_t] + (h0_t or []) + list(layer.trainable_weights)
    grads = tape.gradient(loss, sources)

    ref_x = tf.constant(x, tf.float64)
    ref_h0 = None if h0 is None else [tf.constant(s, tf.float64) for s in h0]
    ref_weights = [tf.constant(w) for w in weights]
    with tf.GradientTape() as tape:
        tape.watch([ref_x] + (ref_h0 or []) + ref_weights)
        ref_out = expected_for(case, ref_x, ref_weights, mask, ref_h0, xp=TF)
        ref_loss = loss_of(ref_out, case["seed"], tf.reduce_sum)
    expected = tape.gradient(ref_loss, [ref_x] + (ref_h0 or []) + ref_weights)

    assert len(grads) == len(expected)
    for actual, wanted in zip(grads, expected):
        assert actual is not None and wanted is not None
        assert_close(actual, wanted, tol=1e-4)


@THOROUGH
@with_hard_cases(depth=1, share_depth=False)
@given(cases(depth=1))
def test_depth_one_matches_simple_rnn_outputs_and_gradients(case):
    options = layer_options(case)
    del options["depth"], options["share_depth"]
    simple = keras.layers.SimpleRNN(case["units"], **options)
    layer = SharedRNN(case["units"], **options)
    x, mask, h0 = data(case)
    simple.build(x.shape)
    layer.build(x.shape)
    set_random_weights(simple, case["seed"])
    layer.set_weights(simple.get_weights())

    def outputs_and_grads(rnn):
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            out = call(rnn, x_t, mask, h0)
            loss = loss_of(out, case["seed"], tf.reduce_sum)
        return out, tape.gradient(loss, [x_t] + list(rnn.trainable_weights))

    (out_a, grads_a), (out_b, grads_b) = (
        outputs_and_grads(layer),
        outputs_and_grads(simple),
    )
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        assert tuple(a.shape) == tuple(b.shape)
        assert_close(a, b, tol=1e-5)
    for a, b in zip(grads_a, grads_b):
        assert_close(a, b, tol=1e-5)


@THOROUGH
@with_hard_cases(with_initial_state=False)
@given(cases(activations=("tanh", "sigmoid")))
def test_bidirectional_matches_reference(case):
    options = layer_options(case)
    del options["go_backwards"]
    options.pop("zero_output_for_mask")
    layer = keras.layers.Bidirectional(SharedRNN(case["units"], **options))
    x, mask, _ = data(case)
    layer.build(x.shape)
    weights = set_random_weights(layer, case["seed"])
    half = len(weights) // 2
    split = (case["depth"], case["share_depth"], case["use_bias"])
    outputs = call(layer, x, mask)
    expected = bidirectional_reference(
        x.astype(np.float64),
        level_weights(weights[:half], *split),
        level_weights(weights[half:], *split),
        mask,
        case,
    )
    shapes = expected_shapes(case, units=2 * case["units"])
    if case["return_state"]:
        shapes += shapes[1:]
    assert [tuple(o.shape) for o in outputs] == shapes
    for actual, wanted in zip(outputs, expected):
        assert_close(actual, wanted, tol=1e-5)


@PROFILE
@given(cases(), st.sampled_from(["float16", "float32", "float64"]))
def test_input_dtype_is_cast_to_the_layer_dtype(case, input_dtype):
    layer = SharedRNN(case["units"], **layer_options(case))
    x, mask, h0 = data(case, dtype=input_dtype)
    layer.build(x.shape)
    weights = set_random_weights(layer, case["seed"])
    outputs = call(layer, x, mask, h0)
    # The layer computes in float32 whatever the input's dtype.
    x32 = x.astype(np.float32)
    h0_32 = None if h0 is None else [s.astype(np.float32) for s in h0]
    expected = expected_for(case, x32, weights, mask, h0_32)
    for actual, wanted in zip(outputs, expected):
        assert keras.backend.standardize_dtype(actual.dtype) == "float32"
        assert_close(actual, wanted, tol=1e-5)


@THOROUGH
@with_hard_cases()
@given(cases())
def test_float64_layer_is_exact(case):
    layer = SharedRNN(case["units"], dtype="float64", **layer_options(case))
    x, mask, h0 = data(case, dtype="float64")
    layer.build(x.shape)
    rng = np.random.RandomState(case["seed"] + 1)
    weights = [0.5 * rng.randn(*w.shape) for w in layer.get_weights()]
    layer.set_weights(weights)
    outputs = call(layer, x, mask, h0)
    expected = expected_for(case, x, weights, mask, h0)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(case)
    for actual, wanted in zip(outputs, expected):
        assert keras.backend.standardize_dtype(actual.dtype) == "float64"
        assert_close(actual, wanted, tol=1e-12)


@THOROUGH
@with_hard_cases()
@given(cases(activations=("tanh", "sigmoid")))
def test_mixed_float16_policy(case):
    """Float16 compute with float32 weights: float16 outputs and states that
    agree with the float64 reference to float16 precision, and finite float32
    weight gradients."""
    layer = SharedRNN(case["units"], dtype="mixed_float16", **layer_options(case))
    x, mask, h0 = data(case)
    layer.build(x.shape)
    assert all(w.dtype == "float32" for w in layer.weights)
    weights = set_random_weights(layer, case["seed"])
    with tf.GradientTape() as tape:
        outputs = call(layer, x, mask, h0)
        loss = loss_of(
            outputs, case["seed"], lambda v: tf.reduce_sum(tf.cast(v, "float32"))
        )
    grads = tape.gradient(loss, layer.trainable_weights)
    expected = expected_for(case, x, weights, mask, h0)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(case)
    for actual, wanted in zip(outputs, expected):
        assert keras.backend.standardize_dtype(actual.dtype) == "float16"
        assert_close(actual, wanted, tol=2e-2)
    for g, w in zip(grads, layer.trainable_weights):
        assert g.dtype == w.dtype == "float32"
        assert np.all(np.isfinite(g.numpy()))


@THOROUGH
@with_hard_cases()
@given(cases())
def test_symbolic_output_shapes_match_eager(case):
    """The shapes Keras promises when building a model are the shapes the
    layer returns."""
    layer = SharedRNN(case["units"], **layer_options(case))
    x, _, _ = data(case)
    symbolic = layer(keras.Input(batch_shape=x.shape))
    symbolic = list(symbolic) if isinstance(symbolic, (list, tuple)) else [symbolic]
    eager = call(layer, x)
    assert [tuple(s.shape) for s in symbolic] == [tuple(e.shape) for e in eager]
    assert [tuple(e.shape) for e in eager] == expected_shapes(case)


@PROFILE
@given(cases(), st.integers(2, 3))
def test_masked_steps_are_skipped(case, repeats):
    """Padding a sequence with masked steps anywhere changes neither the
    final state nor the last output."""
    case = {
        **case,
        "return_sequences": False,
        "return_state": True,
        "zero_output_for_mask": False,
    }
    layer = SharedRNN(case["units"], **layer_options(case))
    x, _, h0 = data(case)
    rng = np.random.RandomState(case["seed"])
    insert_at = rng.randint(0, case["steps"] + 1)
    padding = 100.0 * rng.randn(case["batch"], repeats, case["features"])
    padded = np.concatenate(
        [x[:, :insert_at], padding.astype("float32"), x[:, insert_at:]], axis=1
    )
    mask = np.ones(padded.shape[:2], bool)
    mask[:, insert_at : insert_at + repeats] = False
    plain = call(layer, x, None, h0)
    masked = call(layer, padded, mask, h0)
    for a, b in zip(masked, plain):
        assert_close(a, b, tol=1e-5)


# ---------------------------------------------------------------- bad input


def small_layer(case):
    return SharedRNN(case["units"], depth=case["depth"])


@PROFILE
@given(cases(), st.sampled_from([1, 2, 4, 5]))
def test_wrong_rank_is_rejected(case, rank):
    shape = (case["batch"], case["steps"], case["features"], 2, 2)[:rank]
    with pytest.raises(ValueError, match=rf"expected ndim=3, found ndim={rank}"):
        small_layer(case)(np.zeros(shape, "float32"))


@PROFILE
@given(cases(), st.integers(1, 6))
def test_features_mismatch_with_built_layer_is_rejected(case, other):
    layer = small_layer(case)
    x, _, _ = data(case)
    layer(x)
    features = case["features"]
    wrong = other if other != features else features + 1
    with pytest.raises(
        ValueError,
        match=rf"expected axis -1 of input shape to have value {features}\b.*"
        rf"\({case['batch']}, {case['steps']}, {wrong}\)",
    ):
        layer(np.zeros((case["batch"], case["steps"], wrong), "float32"))


@PROFILE
@given(
    cases(),
    st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "bool", "complex64"]),
)
def test_non_float_inputs_are_rejected(case, dtype):
    x, _, _ = data(case)
    with pytest.raises(
        TypeError, match=rf"floating-point `sequences`.*sequences.dtype={dtype}\b"
    ):
        small_layer(case)(x.astype(dtype))


@st.composite
def wrong_mask_shapes(draw, batch, steps):
    shape = draw(
        st.lists(st.integers(1, 7), min_size=1, max_size=3).filter(
            lambda s: tuple(s) != (batch, steps)
        )
    )
    return tuple(shape)


@PROFILE
@given(cases(), st.data())
def test_mask_of_wrong_shape_is_rejected(case, drawn):
    x, _, _ = data(case)
    shape = drawn.draw(wrong_mask_shapes(case["batch"], case["steps"]))
    with pytest.raises(
        ValueError,
        match=rf"`mask` of shape \(batch, timesteps\) = "
        rf"\({case['batch']}, {case['steps']}\).*"
        rf"Received: mask.shape={re.escape(str(shape))}",
    ):
        small_layer(case)(x, mask=np.ones(shape, bool))


@PROFILE
@given(cases(), st.sampled_from(["str", "bytes"]))
def test_mask_of_wrong_dtype_is_rejected(case, dtype):
    x, _, _ = data(case)
    mask = np.ones((case["batch"], case["steps"]), bool).astype(dtype)
    with pytest.raises(TypeError, match=r"boolean `mask`.*Received: mask.dtype="):
        small_layer(case)(x, mask=mask)


def same_outputs(layer, x, mask, other_mask):
    expected = call(layer, x, mask)
    out = layer(x, mask=other_mask)
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    assert len(out) == len(expected)
    for a, b in zip(out, expected):
        assert_close(a, b, tol=0)


@PROFILE
@given(cases(), st.sampled_from(["int32", "float32"]))
def test_integer_and_float_masks_mean_the_boolean_mask(case, dtype):
    """Keras casts masks to bool: 0/1 integer or float masks mean the same."""
    case = {**case, "mask_kind": "random"}
    layer = SharedRNN(case["units"], **layer_options(case))
    x, mask, _ = data(case)
    same_outputs(layer, x, mask, mask.astype(dtype))


@PROFILE
@given(cases())
def test_mask_as_nested_list_means_the_array(case):
    case = {**case, "mask_kind": "random"}
    layer = SharedRNN(case["units"], **layer_options(case))
    x, mask, _ = data(case)
    same_outputs(layer, x, mask, mask.tolist())


@PROFILE
@given(cases(), st.integers(0, 5))
def test_initial_state_of_wrong_count_is_rejected(case, count):
    if count == case["depth"]:
        count += 1
    states = [np.zeros((case["batch"], case["units"]), "float32")] * count
    x, _, _ = data(case)
    with pytest.raises(
        ValueError,
        match=rf"depth={case['depth']} and expects `initial_state` as a list of "
        rf"{case['depth']} tensors.*Received {count} tensor",
    ):
        small_layer(case)(x, initial_state=states)


def states_with_last(case, shape):
    states = [np.zeros((case["batch"], case["units"]), "float32")] * case["depth"]
    return states[:-1] + [np.zeros(shape, "float32")]


@PROFILE
@given(cases(), st.sampled_from(["units", "rank"]), st.integers(1, 3))
def test_initial_state_of_wrong_shape_is_rejected(case, wrong, delta):
    if wrong == "units":
        shape = (case["batch"], case["units"] + delta)
    else:
        shape = (case["batch"], case["units"], delta)
    x, _, _ = data(case)
    with pytest.raises(
        ValueError,
        match=rf"`initial_state` tensor to have shape \(batch, {case['units']}\)\. "
        rf"Received shape {re.escape(str(shape))}",
    ):
        small_layer(case)(x, initial_state=states_with_last(case, shape))


@PROFILE
@given(cases(), st.integers(1, 3))
def test_initial_state_of_wrong_batch_size_is_rejected(case, delta):
    shape = (case["batch"] + delta, case["units"])
    x, _, _ = data(case)
    with pytest.raises(
        ValueError,
        match=rf"`initial_state` tensor to have shape \(batch, {case['units']}\)\. "
        rf"Received shape {re.escape(str(shape))}.*"
        rf"`sequences` has batch size {case['batch']}",
    ):
        small_layer(case)(x, initial_state=states_with_last(case, shape))


@PROFILE
@given(cases())
def test_initial_state_with_none_entries_is_rejected(case):
    x, _, _ = data(case)
    with pytest.raises(
        TypeError, match=r"`initial_state` entry .*initial_state\[0\]=None"
    ):
        small_layer(case)(x, initial_state=[None] * case["depth"])


@PROFILE
@given(cases())
def test_empty_time_dimension_is_rejected(case):
    x, _, _ = data(case)
    with pytest.raises(
        ValueError,
        match=r"at least one time step.*"
        rf"sequences.shape=\({case['batch']}, 0, {case['features']}\)",
    ):
        small_layer(case)(x[:, :0])


@PROFILE
@given(
    st.sampled_from(["units", "depth"]),
    st.one_of(st.integers(-5, 0), st.floats(-2, 5), st.text(max_size=2), st.none()),
)
def test_bad_units_and_depth_are_rejected(name, value):
    kwargs = {"units": 3, "depth": 2, name: value}
    error = ValueError if isinstance(value, int) else TypeError
    shown = str(value) if error is ValueError else repr(value)
    with pytest.raises(
        error,
        match=rf"Argument `{name}` must be an integer >= 1. "
        rf"Received: {name}={re.escape(shown)}",
    ):
        SharedRNN(**kwargs)


@PROFILE
@given(
    st.sampled_from(["units", "depth"]),
    st.sampled_from([np.int8, np.int32, np.int64, np.uint16]),
    st.integers(1, 3),
)
def test_numpy_integer_units_and_depth_work_and_serialize(name, np_type, value):
    """numpy integers are integers: the layer runs and its config is JSON."""
    kwargs = {"units": 3, "depth": 2, name: np_type(value)}
    layer = SharedRNN(**kwargs)
    out = layer(np.zeros((2, 3, 4), "float32"))
    assert tuple(out.shape) == (2, kwargs["units"])
    config = json.loads(json.dumps(layer.get_config()))
    assert config[name] == value and type(config[name]) is int
