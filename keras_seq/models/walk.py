"""Walking a model's layers: every nested layer, or the top-level ones in order.

`nested_layers` is the one walk over a model's structure that monitoring
(`keras_seq.monitoring.keras_rnn.recurrent_layers`), state resets
(`keras_seq.callbacks.reset_states.stateful_layers`) and the depth helper
share; `ordered_layers` lists a Sequential or functional model's own layers
in the order data flows through them.
"""

import keras


def nested_layers(layer, stop=None):
    """Every layer reachable from `layer`, each once, depth first.

    Yields `layer` itself first, then the layers inside it, each followed by
    its own: a model's `layers`, the `layer` of a `keras.layers.Wrapper`
    (such as `TimeDistributed`), the forward and backward layers of a
    `keras.layers.Bidirectional` (which compute it; not the layer it was
    built from), and the layers a subclassed layer or model keeps as
    attributes, alone or in lists and tuples.

    Args:
        layer: A `keras.layers.Layer` (a model is one).
        stop: Optional callable (default None), `stop(layer) -> bool`: when
            true, that layer is yielded but its insides are not walked.

    Yields:
        `keras.layers.Layer` instances, outermost first.

    Example:

    >>> import keras
    >>> from keras_seq.models.walk import nested_layers
    >>> model = keras.Sequential([
    ...     keras.Input((None, 2)),
    ...     keras.layers.Bidirectional(keras.layers.LSTM(3, name="lstm"), name="bi"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> [l.name for l in nested_layers(model) if isinstance(l, keras.layers.RNN)]
    ['forward_lstm', 'backward_lstm']
    >>> [l.name for l in nested_layers(model, stop=lambda l: l.name == "bi")
    ...  if isinstance(l, keras.layers.RNN)]
    []
    """
    seen = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        yield layer
        if stop is not None and stop(layer):
            return
        for child in _children(layer):
            yield from visit(child)

    yield from visit(layer)


def _children(layer):
    """The layers directly inside `layer`, in the order they are walked."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    children = list(getattr(layer, "layers", None) or ())
    if isinstance(layer, keras.layers.Wrapper):
        children.append(layer.layer)
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else (value,)
        children += [v for v in values if isinstance(v, keras.layers.Layer)]
    return children


def ordered_layers(model):
    """The top-level layers of a Sequential or functional model, in
    topological order (`model.layers` order for a Sequential), without its
    inputs and bare operations."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    return [
        op
        for op in model.operations
        if isinstance(op, keras.layers.Layer)
        and not isinstance(op, keras.layers.InputLayer)
    ]
