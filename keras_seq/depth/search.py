"""Measured losses of many level-removal candidates from one traced function.

`suggest_depth` compares candidate sets of levels to drop by the loss of the
model without them, each cut bridged (see `reduce_depth`). Rebuilding a model
per candidate cost ~0.1 s each; here every level of a single stack gets a
copy returning its sequence (and a `Bidirectional` level one returning its
last output), built once from its config with its weights, and one
compiled function of a boolean "keep" vector runs the stack on the calibration
inputs, feeding each level the output of the nearest kept level below,
mapped by the bridge (the same least squares as `reduce_depth`, fitted
in-graph in float64 on the fit rows), and returns the loss on the held-out
rows. The graph is flat (no branches: every level runs on every call, a
dropped one on a discarded input); one trace serves every candidate. It is
written in `keras.ops`; the compiled function is a `tf.function` on
TensorFlow and a `jax.jit` on JAX (where the float64 bridge runs with
64-bit types enabled for its own ops only).

Layouts outside what it reproduces (parallel branches, layers other than
dropout-like ones between levels, stateful or state-returning levels, a
`Bidirectional` of a multi-level `SharedRNN`, a head that also reads other
tensors, ...) raise `Unsupported`; `suggest_depth` then measures each
candidate by `reduce_depth` and a forward pass instead.
"""

import contextlib

import keras
import numpy as np

from keras_seq.depth.reduce import (
    _PASS_THROUGH,
    RIDGE,
    _producers,
    _without_build_config,
    bridge_coefficients,
)
from keras_seq.layers.shared_rnn import SharedRNN
from keras_seq.models.levels import (
    directions,
    recurrent_core,
    sequence_input,
    single_stack,
)
from keras_seq.models.walk import ordered_layers


class Unsupported(Exception):
    """The model's layout is outside what `CandidateLosses` reproduces."""


class CandidateLosses:
    """Loss on held-out rows of `model` without a set of levels, bridged.

    Args:
        model: A compiled model; `levels` its recurrent levels.
        x, y: Calibration data (arrays).
        fit_rows, loss_rows: Boolean row selections: the bridges are fitted
            on `fit_rows`, the loss is measured on `loss_rows`.

    Attributes:
        traces: How many times the candidate function was traced.
        full_loss: The loss with every level kept.
        similarity: Per level, the mean angular distance between its input
            and output sequences over the valid steps (NaN where the widths
            differ).
    """

    def __init__(self, model, levels, x, y, fit_rows, loss_rows):
        self.model = model
        self.levels = levels
        self.n = len(levels)
        self.traces = 0
        self._check(model, levels)
        inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
        first = levels[0].layer
        sequence, mask = sequence_input(first)
        features = keras.Model(inputs, [sequence] if mask is None else [sequence, mask])
        found = keras.tree.flatten(features(x, training=False))
        self.stack_input = keras.ops.convert_to_tensor(found[0])
        self.mask = None if mask is None else keras.ops.convert_to_tensor(found[1])
        self.head = self._head(model, levels[-1].layer)
        self.returns_last = not levels[-1].layer.return_sequences
        if not self.returns_last and self.mask is not None:
            raise Unsupported("a masked top level returning sequences")
        self.seq_twins = [self._twin(level, True) for level in levels]
        # A Bidirectional level's last output is not a step of its merged
        # sequence: such a level also gets a copy returning the last output.
        self.final_twins = [
            self._twin(level, False)
            if self.returns_last and level.bidirectional
            else None
            for level in levels
        ]

        rows = np.asarray(fit_rows, bool)
        steps = self.stack_input.shape[1]
        step_rows = np.repeat(rows[:, None], steps, axis=1)
        if self.mask is not None:
            step_rows &= keras.ops.convert_to_numpy(self.mask).astype(bool)
        # float64 weights stay NumPy arrays until the bridge converts them
        # (JAX makes float64 tensors only with 64-bit types enabled).
        self.step_weights = step_rows.reshape(-1).astype(np.float64)
        self.row_weights = rows.astype(np.float64)
        self.loss_rows = np.flatnonzero(loss_rows).astype(np.int32)
        self.y = keras.tree.map_structure(
            lambda a: keras.ops.take(
                keras.ops.convert_to_tensor(a), self.loss_rows, axis=0
            ),
            y,
        )
        self.input_bias = [_has_input_bias(level) for level in levels]
        # Levels of a `share_depth` SharedRNN: reduce_depth does not refit
        # one whose weights other kept levels share, so neither does this.
        self.share_groups = [_share_group(level, levels) for level in levels]
        self.head_bias = self.head_bridge is not None and self.head_bridge.use_bias

        # What each level reads in the full model, and the head's input, are
        # arguments (the full model's own call, every level kept, returns
        # them): one trace for the recording and every candidate.
        self.widths = [_width(level) for level in levels]
        dtype = keras.backend.standardize_dtype(self.stack_input.dtype)
        spec = [([self.n], "bool")]
        spec += [
            ([None, steps, w], dtype)
            for w in [self.stack_input.shape[-1]] + self.widths[:-1]
        ]
        top_shape = keras.tree.flatten(levels[-1].layer.output)[0].shape
        spec.append(([None] + list(top_shape[1:]), dtype))
        self._function = _compiled(self._loss, spec)
        keep = np.ones([self.n], bool)
        rows_all = self.stack_input.shape[0]
        placeholders = [
            np.zeros([rows_all] + list(shape[1:]), dtype) for shape, _ in spec[1:]
        ]
        # The model's own outputs on a few rows, for the check below.
        few = keras.tree.map_structure(lambda a: np.asarray(a)[:4], x)
        expected = _predict(model, few)
        # Keras builds the compiled loss (and its metrics' variables) on its
        # first call: an eager one, not inside the traced function.
        self._build_compiled_loss(model, expected, y)
        loss, outputs, head_input, _ = self._function(keep, *placeholders)
        self.inputs_old = [self.stack_input] + list(outputs[:-1])
        self.final_old = head_input
        self.full_loss = float(loss)
        self.similarity = [
            angular_distance(a, b, self.mask) for a, b in zip(self.inputs_old, outputs)
        ]
        # The copies must reproduce the model (on a few rows).
        expected = keras.ops.convert_to_numpy(expected)
        got = keras.ops.convert_to_numpy(self.head(head_input[:4]))
        scale = max(float(np.max(np.abs(expected))), 1e-6)
        if got.shape != expected.shape or np.max(np.abs(got - expected)) > 1e-3 * scale:
            raise Unsupported("the level copies do not reproduce the model's outputs")

    # ------------------------------------------------------------- layout

    def _check(self, model, levels):
        if not single_stack(model, levels):
            raise Unsupported("parallel recurrent branches")
        producer = _producers(model)
        layers = []
        for level in levels:
            if not layers or layers[-1] is not level.layer:
                layers.append(level.layer)
        for lower, upper in zip(layers, layers[1:]):
            below = producer.get(id(upper))
            while below is not None and isinstance(below, _PASS_THROUGH):
                below = producer.get(id(below))
            if below is not lower:
                raise Unsupported(f"layers between `{lower.name}` and `{upper.name}`")
        for layer in layers:
            core = recurrent_core(layer)
            if any(rnn.stateful for rnn in directions(layer)):
                raise Unsupported(f"stateful layer `{layer.name}`")
            if len(keras.tree.flatten(layer.output)) != 1:
                raise Unsupported(f"layer `{layer.name}` returns several tensors")
            sequence, mask = sequence_input(layer)
            if any(
                t is not sequence and t is not mask
                for t in keras.tree.flatten(layer.input)
            ):
                raise Unsupported(f"layer `{layer.name}` takes extra inputs")
            if (
                isinstance(layer, keras.layers.Bidirectional)
                and isinstance(core, SharedRNN)
                and core.depth > 1
            ):
                raise Unsupported(f"Bidirectional multi-level SharedRNN `{layer.name}`")

    def _head(self, model, top):
        """The function from the top layer's output to the model's output,
        and the Dense layer a bridge refits when the top level goes."""
        self.head_bridge = None
        if isinstance(model, keras.Sequential):
            above = model.layers[model.layers.index(top) + 1 :]
            for layer in above:
                if not isinstance(layer, _PASS_THROUGH):
                    if isinstance(layer, keras.layers.Dense):
                        self.head_bridge = layer
                    break

            def head(h):
                for layer in above:
                    h = layer(h, training=False)
                return h

            return head
        try:
            sub = keras.Model(top.output, model.output)
        except Exception as error:  # noqa: BLE001 - any failure: not modelled
            raise Unsupported(f"the head above `{top.name}`: {error}") from None
        # The Dense layer reading the top level (through dropout-like
        # layers), as reduce_depth's bridge finds it.
        ops_above, current = ordered_layers(sub), top.output
        while True:
            consumers = [
                op
                for op in ops_above
                if any(t is current for t in keras.tree.flatten(op.input))
            ]
            if len(consumers) != 1 or not isinstance(consumers[0], _PASS_THROUGH):
                break
            current = consumers[0].output
        if len(consumers) == 1 and isinstance(consumers[0], keras.layers.Dense):
            self.head_bridge = consumers[0]
        return lambda h: sub(h, training=False)

    def _twin(self, level, return_sequences):
        """A one-level copy of `level` with its weights."""
        layer = level.layer

        def edit(config):
            config = dict(config)
            config.update(
                return_sequences=return_sequences,
                return_state=False,
                stateful=False,
                name=f"{config['name']}_level_{level.index}",
            )
            if "depth" in config:
                config.update(depth=1, share_depth=False)
            return config

        config = _without_build_config(layer.get_config())
        if isinstance(layer, keras.layers.Bidirectional):
            for key in ("layer", "backward_layer"):
                if config.get(key):
                    config[key]["config"] = edit(config[key]["config"])
            config["name"] = f"{config['name']}_twin"
        else:
            config = edit(config)
        twin = type(layer).from_config(config)
        core = recurrent_core(layer)
        if isinstance(core, SharedRNN) and core.depth > 1:
            weights = [w for w in core.cell.level_weights(level.index) if w is not None]
            values = [keras.ops.convert_to_numpy(w) for w in weights]
            width = core.units if level.index else core.cell.input_dim
        else:
            values = layer.get_weights()
            width = sequence_input(layer)[0].shape[-1]
        # Built, not called: an eager call of a recurrent layer costs
        # compilations on JAX (~0.4 s a level).
        twin.build((None, None, width))
        twin.set_weights(values)
        return twin

    # ------------------------------------------------------------- losses

    def losses(self, candidates):
        """Losses of `candidates` (iterables of level positions to drop)."""
        found = []
        for drop in candidates:
            keep = np.ones(self.n, bool)
            keep[list(drop)] = False
            if not keep.any():
                found.append(float("inf"))
                continue
            loss, _, _, _ = self._function(keep, *self.inputs_old, self.final_old)
            found.append(float(loss))
        return found

    def bridges(self, drop):
        """The bridges of the candidate without the levels `drop`, as
        `reduce_depth` applies them: `{level or Dense name: [(M, c)] per
        direction}`, each fitted on the fit rows (`bridge_coefficients`,
        the same least squares the traced function solves) from the
        candidate's own outputs (one more call)."""
        keep = np.ones(self.n, bool)
        keep[list(drop)] = False
        _, outputs, _, finals = self._function(keep, *self.inputs_old, self.final_old)
        numpy = keras.ops.convert_to_numpy
        rows = len(self.row_weights)
        steps = self.step_weights.reshape(rows, -1) > 0
        kept = np.flatnonzero(keep)
        fits = {}
        for k in kept:
            below = max((j for j in kept if j < k), default=-1)
            shared = shared_after(k, self.share_groups[k], keep)
            if below == k - 1 or bool(keras.ops.convert_to_numpy(shared)):
                continue
            source = self.stack_input if below < 0 else outputs[below]
            fit = bridge_coefficients(
                numpy(source),
                numpy(self.inputs_old[k]),
                steps,
                intercept=self.input_bias[k],
            )
            fits[self.levels[k].name] = [fit] * len(directions(self.levels[k].layer))
        top = kept[-1]
        if top != self.n - 1 and self.head_bridge is not None:
            source = numpy(finals[top])
            where = steps if source.ndim == 3 else self.row_weights > 0
            fit = bridge_coefficients(
                source, numpy(self.final_old), where, intercept=self.head_bias
            )
            fits[self.head_bridge.name] = [fit]
        return fits

    @staticmethod
    def _build_compiled_loss(model, y_pred, y):
        """Build the compiled loss eagerly from the model's outputs `y_pred`
        on the first rows of `y`."""
        if keras.backend.backend() != "jax":
            return  # a tf.function may build it while it traces
        rows = len(keras.tree.flatten(y_pred)[0])
        few_y = keras.tree.map_structure(lambda a: np.asarray(a)[:rows], y)
        model.compute_loss(y=few_y, y_pred=y_pred, training=False)

    def _loss(self, keep, *args):
        """(loss on the held-out rows, every level's output sequence, the
        head's input, every level's output as the head would read it)
        without the levels where `keep` is False."""
        # A flat graph, no conditionals: every level runs on every call
        # (dropped ones on a discarded input). Branches made the trace and
        # the first run (graph optimisation of nested functions) cost ~10 s
        # for 8 levels on TensorFlow; the whole stack's forward pass costs
        # less than that over a hundred candidates.
        self.traces += 1  # Python runs only while tracing
        with _stateless():
            return self._candidate_loss(keep, *args)

    def _candidate_loss(self, keep, *args):
        ops = keras.ops
        inputs_old, final_old = list(args[:-1]), args[-1]
        n = self.n
        index = ops.arange(n, dtype="int32")
        below = [
            ops.max(ops.where(ops.logical_and(keep, index < k), index, -1))
            for k in range(n)
        ]
        top = ops.max(ops.where(keep, index, -1))
        sources = [self.stack_input]  # source s + 1
        inputs = []  # what each level reads in this candidate
        for k in range(n):
            chosen = sources[k]  # the level below, unchanged: no bridge
            shared = shared_after(k, self.share_groups[k], keep)
            for members in _by_width(sources[:k]).values():
                picked = _pick(sources, members, below[k] + 1)
                bridged = self._bridge(
                    picked, inputs_old[k], self.step_weights, self.input_bias[k]
                )
                if picked.shape[-1] == inputs_old[k].shape[-1]:
                    bridged = ops.where(shared, picked, bridged)
                use = _is_member(below[k] + 1, members)
                chosen = ops.where(use, bridged, chosen)
            inputs.append(chosen)
            sources.append(self.seq_twins[k](chosen, mask=self.mask, training=False))
        outputs = sources[1:]
        finals = []
        for k in range(n):
            if self.final_twins[k] is not None:
                finals.append(
                    self.final_twins[k](inputs[k], mask=self.mask, training=False)
                )
            else:
                finals.append(outputs[k][:, -1] if self.returns_last else outputs[k])
        head_input = finals[-1]
        for group, members in _by_width(finals[:-1]).items():
            picked = _pick(finals, members, top)
            if self.head_bridge is not None:
                weights = (
                    self.step_weights if len(picked.shape) == 3 else self.row_weights
                )
                picked = self._bridge(picked, final_old, weights, self.head_bias)
            elif group != final_old.shape[-1]:
                picked = ops.full_like(final_old, np.nan)
            use = _is_member(top, members)
            head_input = ops.where(use, picked, head_input)
        y_pred = keras.tree.map_structure(
            lambda t: ops.take(t, self.loss_rows, axis=0), self.head(head_input)
        )
        loss = self.model.compute_loss(y=self.y, y_pred=y_pred, training=False)
        return loss, outputs, head_input, finals

    @staticmethod
    def _bridge(source, target, weights, intercept):
        """`source` mapped by the least-squares fit of `target` on it over
        the rows with weight 1 (`reduce.bridge_coefficients`, in-graph)."""
        ops = keras.ops
        width, target_width = source.shape[-1], target.shape[-1]
        with _float64():
            a = ops.reshape(ops.cast(source, "float64"), [-1, width])
            b = ops.reshape(ops.cast(target, "float64"), [-1, target_width])
            if intercept:
                a = ops.concatenate([a, ops.ones_like(a[:, :1])], axis=1)
            weighted = a * ops.convert_to_tensor(weights, "float64")[:, None]
            gram = ops.matmul(ops.transpose(weighted), a)
            scale = ops.sqrt(ops.diagonal(gram)) + 1e-30
            scaled = gram / (scale[:, None] * scale[None, :]) + RIDGE * ops.eye(
                a.shape[-1], dtype="float64"
            )
            rhs = ops.matmul(ops.transpose(weighted), b) / scale[:, None]
            coef = ops.solve(scaled, rhs) / scale[:, None]
            mapped = ops.matmul(a, coef)
            shape = [-1] + list(source.shape[1:-1]) + [target_width]
            return ops.cast(ops.reshape(mapped, shape), source.dtype)


def _predict(model, x):
    """`model`'s outputs on `x` (a few rows): an eager call on TensorFlow; a
    compiled `predict_on_batch` on JAX, where an eager call of a recurrent
    layer compiles each of its operations (~2 s for six GRU levels)."""
    if keras.backend.backend() == "jax":
        return keras.tree.map_structure(
            keras.ops.convert_to_tensor, model.predict_on_batch(x)
        )
    return model(x, training=False)


def _compiled(function, signature):
    """`function` compiled once for arguments of `signature` (`[(shape,
    dtype)]`, None for the rows): a `tf.function` on TensorFlow, a
    `jax.jit` on JAX (which traces again only for new shapes)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = [tf.TensorSpec(shape, dtype) for shape, dtype in signature]
        return tf.function(function, input_signature=spec, autograph=False)
    import jax

    return jax.jit(function)


def _float64():
    """Where the bridge computes in float64: JAX needs 64-bit types enabled
    (here for the bridge's own ops only; everywhere else they stay off)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _stateless():
    """On JAX, the traced function must not write Keras variables (the
    compiled loss's per-output metrics): their updates stay in a throwaway
    scope. TensorFlow's graph updates them as its eager calls would."""
    if keras.backend.backend() == "jax":
        return keras.StatelessScope()
    return contextlib.nullcontext()


def _is_member(index, members):
    """Whether the scalar tensor `index` is one of the integers `members`."""
    return keras.ops.any(
        keras.ops.equal(keras.ops.convert_to_tensor(members, "int32"), index)
    )


def _by_width(tensors):
    """`{width: [indices]}` of `tensors`."""
    groups = {}
    for i, tensor in enumerate(tensors):
        groups.setdefault(tensor.shape[-1], []).append(i)
    return groups


def _pick(tensors, members, index):
    """`tensors[index]` when `index` is in `members` (all of one shape),
    else one of them (the caller discards it)."""
    if len(members) == 1:
        return tensors[members[0]]
    ops = keras.ops
    stacked = ops.stack([tensors[i] for i in members])
    found = ops.equal(ops.convert_to_tensor(members, "int32"), index)
    position = ops.argmax(ops.cast(found, "int32"))
    return ops.take(stacked, position, axis=0)


def _width(level):
    """The width of a level's output sequence."""
    core = recurrent_core(level.layer)
    if isinstance(core, SharedRNN) and level.index < core.depth - 1:
        return core.units
    width = core.units
    if level.bidirectional and level.layer.merge_mode == "concat":
        width *= 2
    return width


def _has_input_bias(level):
    """Whether the level's input projection has a bias (in every direction:
    one bridge serves both)."""
    found = set()
    for core in directions(level.layer):
        if isinstance(core, SharedRNN):
            found.add(core.cell.level_weights(level.index)[2] is not None)
        else:
            found.add(getattr(core.cell, "bias", None) is not None)
    if len(found) > 1:
        raise Unsupported(f"directions of `{level.layer.name}` differ in input bias")
    return found.pop()


def _share_group(level, levels):
    """Positions of the levels of `level`'s SharedRNN when it shares its
    weights across depth (`share_depth=True`, depth > 2), else None."""
    core = recurrent_core(level.layer)
    if not (isinstance(core, SharedRNN) and core.share_depth and core.depth > 2):
        return None
    return [i for i, other in enumerate(levels) if other.layer is level.layer]


def shared_after(k, group, keep):
    """Whether level `k` keeps weights other kept levels share once the
    levels where `keep` is False go: its SharedRNN keeps more than two
    levels and one below it (`reduce._shared` in the new model). A boolean
    tensor (`keep`: a boolean vector, tensor or NumPy)."""
    ops = keras.ops
    if group is None:
        return ops.convert_to_tensor(False)
    kept = ops.cast(ops.take(keep, group), "int32")
    below = ops.sum(kept * ops.convert_to_tensor([int(g < k) for g in group], "int32"))
    return ops.logical_and(below >= 1, ops.sum(kept) > 2)


def angular_distance(inputs, outputs, mask):
    """Mean angular distance (in [0, 1]) between a level's input and output
    vectors over the unmasked steps (ShortGPT's family); a level that returns
    its last output only is compared with each sequence's last valid input.
    NaN when the widths differ or no vector is usable."""
    inputs = keras.ops.convert_to_numpy(inputs)
    outputs = keras.ops.convert_to_numpy(outputs)
    if mask is not None:
        mask = keras.ops.convert_to_numpy(mask)
    if inputs.shape[-1] != outputs.shape[-1]:
        return np.nan
    if outputs.shape[1] != inputs.shape[1]:  # last output only: compare the
        inputs = _last_valid(inputs, mask)[:, None]  # last valid input
        mask = None
    a = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
    b = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
    if mask is not None:
        rows = mask.reshape(-1).astype(bool)
        a, b = a[rows], b[rows]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    usable = norms > 0
    if not usable.any():
        return np.nan
    cosine = np.sum(a * b, axis=1)[usable] / norms[usable]
    return float(np.mean(np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi))


def _last_valid(sequences, mask):
    if mask is None:
        return sequences[:, -1]
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return sequences[np.arange(len(sequences)), last]
