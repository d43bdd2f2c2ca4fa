"""The recurrent levels of a model: what `reduce_depth` can remove.

A *level* is one recurrent sublayer: each of the `depth` sublayers of a
`keras_seq.layers.SharedRNN`, each `keras.layers.SimpleRNN`, `GRU` and `LSTM`,
and each of these wrapped in `keras.layers.Bidirectional` (both directions
form one level). Levels are listed bottom (input side) to top.

The model's structure only (no training, no callbacks): `keras_seq.depth`
removes levels, `keras_seq.callbacks.GradientMonitor` reads the stack it
monitors. `keras_seq.depth` exports `Level` and `recurrent_levels`.
"""

import dataclasses
import math

import keras

from keras_seq.layers.shared_rnn import SharedRNN
from keras_seq.models.walk import ordered_layers

# Keras's own recurrent layers with one recurrent sublayer each.
_BUILT_IN = (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM)


@dataclasses.dataclass(frozen=True)
class Level:
    """One recurrent sublayer of a model.

    Two levels are equal when their `name` and `position` are.

    Attributes:
        name: `"<layer name>/level_<i>"` (`"<layer name>/level_0"` for
            Keras's SimpleRNN, GRU and LSTM).
        layer: The top-level layer of the model holding the level: a
            `SharedRNN`, `SimpleRNN`, `GRU`, `LSTM` or `Bidirectional`.
        index: The sublayer inside `layer` (0 for Keras's built-in layers).
        position: 0 for the bottom recurrent level of the model, counting up
            in topological order.
        kind: Class name of the recurrent layer (of the wrapped layer for a
            `Bidirectional`): `"SharedRNN"`, `"SimpleRNN"`, `"GRU"`, `"LSTM"`.
        bidirectional: Whether `layer` is a `keras.layers.Bidirectional`.
        monitor_names: The names `keras_seq.callbacks.GradientMonitor` gives
            this level's sublayers: `("<layer>/level_<i>",)` for a
            `SharedRNN`, the forward and the backward layer's names for a
            `Bidirectional(SharedRNN)`, `()` for Keras's built-in layers.
        variables: The variables the level computes with, whether or not the
            layer is trainable: `(kernel, recurrent_kernel, bias)` (no bias
            with `use_bias=False`); for a `share_depth=True` level >= 1 the
            shared set; for a `Bidirectional`, both directions' variables.
        parameters: Number of scalars in `variables`.
    """

    name: str
    layer: object = dataclasses.field(compare=False, repr=False)
    index: int
    position: int
    kind: str
    bidirectional: bool
    monitor_names: tuple
    variables: tuple = dataclasses.field(compare=False, repr=False)
    parameters: int


def recurrent_levels(model):
    """The recurrent levels of a model, bottom (input side) to top.

    Looks at the top-level layers of a Sequential or functional model
    (`keras.Sequential`, `keras.Model(inputs, outputs)` and their keras-seq
    subclasses): `SharedRNN` (one level per sublayer), `SimpleRNN`, `GRU`,
    `LSTM` and `Bidirectional` of any of these. Recurrent layers nested in
    other wrappers or sub-models are not listed. Sequential models are read in
    `model.layers` order, functional ones in topological order.

    Args:
        model: A built Sequential or functional `keras.Model`.

    Returns:
        A list of `keras_seq.depth.Level`, bottom to top.

    Raises:
        TypeError: `model` is not a `keras.Model`.
        ValueError: `model` is subclassed or not built, or has no recurrent
            level (the message lists its layers' classes).

    Example:

    >>> import keras, keras_seq
    >>> from keras_seq.models.levels import recurrent_levels
    >>> model = keras_seq.Sequential([
    ...     keras.Input((None, 4)),
    ...     keras_seq.layers.SharedRNN(8, depth=2, return_sequences=True),
    ...     keras.layers.LSTM(8),
    ... ])
    >>> [level.name for level in recurrent_levels(model)]
    ['shared_rnn/level_0', 'shared_rnn/level_1', 'lstm/level_0']
    """
    check_model(model)
    layers = ordered_layers(model)
    levels = []
    for layer in layers:
        levels.extend(_layer_levels(layer, len(levels)))
    if not levels:
        classes = ", ".join(type(layer).__name__ for layer in layers) or "none"
        raise ValueError(
            f"Model `{model.name}` has no recurrent level: expected a "
            "keras_seq.layers.SharedRNN, keras.layers.SimpleRNN, GRU or LSTM, "
            "or a keras.layers.Bidirectional of one of them, among its "
            f"top-level layers. Received layers: {classes}"
        )
    return levels


def single_stack(model, levels):
    """Whether the levels form one chain, each feeding the next.

    True when every level feeds (directly or through other layers) the level
    above it, so that the levels form one stack without parallel branches.
    Always True for a Sequential model.

    Args:
        model: The model `levels` come from.
        levels: Its levels, as returned by `recurrent_levels(model)`.

    Returns:
        A boolean.

    Example:

    >>> import keras
    >>> from keras_seq.models.levels import recurrent_levels, single_stack
    >>> inputs = keras.Input((None, 4))
    >>> a = keras.layers.LSTM(4)(inputs)
    >>> b = keras.layers.GRU(4)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Concatenate()([a, b]))
    >>> single_stack(model, recurrent_levels(model))
    False
    """
    if isinstance(model, keras.Sequential):
        return True
    ancestors = layer_ancestors(model)
    for lower, upper in zip(levels, levels[1:]):
        if lower.layer is upper.layer:
            continue
        if id(lower.layer) not in ancestors.get(id(upper.layer), set()):
            return False
    return True


def resolve_levels(levels, names):
    """The levels called `names`, bottom to top.

    Args:
        levels: Levels, as returned by `recurrent_levels(model)`.
        names: A list of level names (`"lstm/level_0"`, `"rnn/level_2"`);
            a layer holding a single level may also be named by its layer
            name alone (`"lstm"`).

    Returns:
        A list of `keras_seq.depth.Level`, bottom to top.

    Raises:
        TypeError: `names` is a string or not a list of strings.
        ValueError: a name matches no level, a bare layer name is given for a
            layer with several levels, or a level is named twice. The message
            lists the valid names.

    Example:

    >>> import keras
    >>> from keras_seq.models.levels import recurrent_levels, resolve_levels
    >>> model = keras.Sequential([
    ...     keras.Input((None, 4)),
    ...     keras.layers.LSTM(4, return_sequences=True, name="low"),
    ...     keras.layers.LSTM(4, name="top"),
    ... ])
    >>> [level.position for level in resolve_levels(
    ...     recurrent_levels(model), ["top", "low/level_0"])]
    [0, 1]
    """
    return resolve(levels, names, argument="names")


def resolve(levels, names, argument):
    """`resolve_levels`, naming the caller's argument in its messages."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        hint = f" Use {argument}=[{names!r}]." if isinstance(names, str) else ""
        raise TypeError(
            f"Argument `{argument}` must be a list of level names. "
            f"Received: {argument}={names!r} (of type {type(names).__name__})."
            f"{hint}"
        )
    by_name = {level.name: level for level in levels}
    per_layer = {}
    for level in levels:
        per_layer.setdefault(level.layer.name, []).append(level)
    valid = ", ".join(repr(level.name) for level in levels)
    found = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"Argument `{argument}` must be a list of level names "
                f"(strings). Received an element {name!r} of type "
                f"{type(name).__name__}. Valid names: {valid}"
            )
        if name in by_name:
            found.append(by_name[name])
        elif name in per_layer and len(per_layer[name]) == 1:
            found.append(per_layer[name][0])
        elif name in per_layer:
            several = ", ".join(repr(level.name) for level in per_layer[name])
            raise ValueError(
                f"Argument `{argument}` names layer {name!r}, which has "
                f"{len(per_layer[name])} levels: name them one by one "
                f"({several}). Received: {argument}={list(names)!r}"
            )
        else:
            raise ValueError(
                f"Argument `{argument}` names an unknown level {name!r}. "
                f"Valid names: {valid}. Received: {argument}={list(names)!r}"
            )
    seen = set()
    for level in found:
        if level.name in seen:
            raise ValueError(
                f"Argument `{argument}` names level {level.name!r} more than "
                f"once. Received: {argument}={list(names)!r}"
            )
        seen.add(level.name)
    return sorted(found, key=lambda level: level.position)


def check_model(model):
    """Raise unless `model` is a built Sequential or functional model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Sequential or "
            f"functional). Received: model={model!r} (of type "
            f"{type(model).__name__})"
        )
    if not (isinstance(model, keras.Sequential) or is_functional(model)):
        raise ValueError(
            f"Model `{model.name}` is a subclassed model (class "
            f"{type(model).__name__}): its layers' order and connections are "
            "not known. Build it as a keras_seq.Sequential or a functional "
            "keras_seq.Model(inputs, outputs)."
        )
    if not model.built:
        raise ValueError(
            f"Model `{model.name}` is not built: start it with "
            "keras.Input(shape) or call it on data first."
        )


def is_functional(model):
    # Functional models are `keras.ops.Function`s: they list `operations`;
    # subclassed models do not.
    return not isinstance(model, keras.Sequential) and hasattr(model, "operations")


def recurrent_core(layer):
    """The recurrent layer inside `layer` (itself, or the forward layer of a
    `Bidirectional`), or None when `layer` holds no level."""
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    if isinstance(layer, (SharedRNN, *_BUILT_IN)):
        return layer
    return None


def directions(layer):
    """The recurrent layers computing `layer`: one, or two for Bidirectional."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def level_variables(rnn, index):
    """The variables of sublayer `index` of one recurrent layer."""
    if isinstance(rnn, SharedRNN):
        weights = rnn.cell.level_weights(index)
    else:
        cell = rnn.cell
        weights = (cell.kernel, cell.recurrent_kernel, getattr(cell, "bias", None))
    return tuple(w for w in weights if w is not None)


def _layer_levels(layer, first_position):
    core = recurrent_core(layer)
    if core is None:
        return []
    bidirectional = isinstance(layer, keras.layers.Bidirectional)
    shared = isinstance(core, SharedRNN)
    levels = []
    for index in range(core.depth if shared else 1):
        variables = tuple(
            v for rnn in directions(layer) for v in level_variables(rnn, index)
        )
        if shared:
            monitor_names = tuple(
                f"{rnn.name}/level_{index}" for rnn in directions(layer)
            )
        else:
            monitor_names = ()
        levels.append(
            Level(
                name=f"{layer.name}/level_{index}",
                layer=layer,
                index=index,
                position=first_position + index,
                kind=type(core).__name__,
                bidirectional=bidirectional,
                monitor_names=monitor_names,
                variables=variables,
                parameters=sum(math.prod(v.shape) for v in variables),
            )
        )
    return levels


def sequence_input(layer):
    """`(sequence, mask)`: the symbolic tensors `layer` was first called on.

    Keras passes the mask of a masked input as an explicit argument, so it
    is among `layer.input`; `mask` is None when there is none.
    """
    flat = keras.tree.flatten(layer.input)
    mask = None
    for tensor in flat[1:]:
        if tensor.dtype == "bool" and len(tensor.shape) == 2:
            mask = tensor
            break
    return flat[0], mask


def layer_parents(model):
    """`{id(op): [ops whose outputs it takes]}` for a functional model.

    Walks the public symbolic tensors (`op.input`, `op.output`) of
    `model.operations`. A layer called several times is seen through its
    first call.
    """
    producer = {}
    for op in model.operations:
        for tensor in keras.tree.flatten(op.output):
            producer[id(tensor)] = op
    parents = {}
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            parents[id(op)] = []
            continue
        parents[id(op)] = [
            producer[id(t)] for t in keras.tree.flatten(op.input) if id(t) in producer
        ]
    return parents


def layer_ancestors(model):
    """`{id(op): set of ids of every op it depends on}`, functional model."""
    parents = layer_parents(model)
    ancestors = {}
    for op in model.operations:  # topological: parents come first
        found = set()
        for parent in parents[id(op)]:
            found.add(id(parent))
            found |= ancestors.get(id(parent), set())
        ancestors[id(op)] = found
    return ancestors
