"""Argument checks shared by keras_seq's public classes.

Every message names the argument, what is allowed and what was received,
in Keras's own wording: ``Argument `units` must be ... Received: units=0``.
"""

import numbers

import keras


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer >= 1. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if value < 1:
        raise ValueError(
            f"Argument `{name}` must be an integer >= 1. Received: {name}={value}"
        )


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a float in [0, 1). "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{name}` must be a float in [0, 1). Received: {name}={value}"
        )


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be a boolean (True or False). "
            f"Received: {name}={value!r}"
        )


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"Argument `{name}` must be one of {sorted(allowed)}. "
            f"Received: {name}={value!r}"
        )


def _lookup(kind, getter, name, value):
    try:
        return getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Argument `{name}` could not be interpreted as a Keras {kind}: "
            f"pass a name such as {_EXAMPLES[kind]}, a `keras.{kind}s` object, "
            f"a config dict or None. Received: {name}={value!r}"
        ) from error


_EXAMPLES = {
    "activation": '"tanh", "relu" or "linear"',
    "initializer": '"orthogonal", "identity" or "glorot_uniform"',
    "regularizer": '"l2"',
    "constraint": '"max_norm" or keras_seq.constraints.SpectralNorm()',
}


def get_activation(name, value):
    fn = _lookup("activation", keras.activations.get, name, value)
    if not callable(fn):
        raise ValueError(
            f"Argument `{name}` must be callable. Received: {name}={value!r}"
        )
    return fn


def get_initializer(name, value):
    initializer = _lookup("initializer", keras.initializers.get, name, value)
    if type(initializer) is keras.initializers.Identity:
        # Keras's Identity drops its gain in get_config; ours keeps it.
        from keras_seq.initializers import Identity

        initializer = Identity(gain=initializer.gain)
    return initializer


def get_regularizer(name, value):
    return _lookup("regularizer", keras.regularizers.get, name, value)


def get_constraint(name, value):
    return _lookup("constraint", keras.constraints.get, name, value)
