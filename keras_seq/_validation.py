"""Argument checks shared by keras_seq's public classes.

Every message names the argument, what is allowed and what was received,
in Keras's own wording: ``Argument `units` must be ... Received: units=0``.
"""

import numbers
import os

import keras


def check_positive_int(name, value):
    """`value` as a Python int (numpy integers included), else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer >= 1. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if value < 1:
        raise ValueError(
            f"Argument `{name}` must be an integer >= 1. Received: {name}={value}"
        )
    # A numpy integer would reach get_config (not JSON) and Keras's RNN,
    # which rejects a numpy `state_size`.
    return int(value)


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


def check_fraction(name, value):
    """A number in the open interval (0, 1)."""
    check_rate(name, value)
    if value == 0:
        raise ValueError(
            f"Argument `{name}` must be a float in (0, 1). Received: {name}={value}"
        )


def check_factor(name, value):
    """A number > 1 (a growth factor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 1:
        raise ValueError(
            f"Argument `{name}` must be a number > 1. Received: {name}={value!r}"
        )


def check_positive_or_none(name, value):
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive number or None. "
            f"Received: {name}={value!r}"
        )


def check_path_or_none(name, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"Argument `{name}` must be a path (str or os.PathLike) or None. "
            f"Received: {name}={value!r}"
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


def _static_shape(tensor):
    return tuple(tensor.shape)


def _as_tensor(value):
    # Tensors, KerasTensors and numpy arrays keep their type; nested lists
    # become tensors so their shape and dtype can be checked.
    return value if hasattr(value, "shape") else keras.ops.convert_to_tensor(value)


def _dtype_name(tensor):
    try:
        return keras.backend.standardize_dtype(tensor.dtype)
    except ValueError:  # numpy strings and objects
        return str(tensor.dtype)


def _conflict(actual, expected):
    return any(
        a is not None and e is not None and a != e for a, e in zip(actual, expected)
    )


def check_rnn_call(layer, sequences, initial_state, mask, depth, units):
    """Checks the inputs of a recurrent layer's `call`.

    Args:
        layer: the layer's name, for the messages.
        sequences: `(batch, timesteps, features)` floating-point tensor.
        initial_state: None, a tensor (`depth == 1`) or a list of `depth`
            tensors of shape `(batch, units)`.
        mask: None or a `(batch, timesteps)` boolean, integer or float
            tensor (nested lists are converted).

    Returns:
        `(initial_state, mask)`, with nested lists converted to tensors.

    Raises:
        TypeError: non-floating `sequences`, a mask of another dtype, or an
            initial state that is not a tensor.
        ValueError: shapes that do not fit together.
    """
    dtype = _dtype_name(sequences)
    if "float" not in dtype:
        raise TypeError(
            f"`{layer}` expects floating-point `sequences` of shape "
            "(batch, timesteps, features). Received: "
            f"sequences.dtype={dtype}. For token ids put a "
            "`keras.layers.Embedding` first."
        )
    shape = _static_shape(sequences)
    if len(shape) == 3 and shape[1] == 0:
        raise ValueError(
            f"`{layer}` needs at least one time step: `sequences` must have "
            "shape (batch, timesteps, features) with timesteps >= 1. "
            f"Received: sequences.shape={shape}"
        )
    expected = shape[:2]
    if mask is not None:
        mask = _as_tensor(mask)
        mask_dtype = _dtype_name(mask)
        if (
            mask_dtype != "bool"
            and "int" not in mask_dtype
            and "float" not in mask_dtype
        ):
            raise TypeError(
                f"`{layer}` expects a boolean `mask` (or 0/1 integers or "
                "floats), True where a time step is valid. Received: "
                f"mask.dtype={mask_dtype}"
            )
        mask_shape = _static_shape(mask)
        if len(mask_shape) != 2 or _conflict(mask_shape, expected):
            raise ValueError(
                f"`{layer}` expects a `mask` of shape (batch, timesteps)"
                f" = {expected}. Received: mask.shape={mask_shape}"
            )
    if initial_state is not None:
        single = not isinstance(initial_state, (list, tuple))
        states = [initial_state] if single else list(initial_state)
        if len(states) != depth:
            raise ValueError(
                f"`{layer}` has depth={depth} and expects "
                f"`initial_state` as a list of {depth} tensors of shape "
                f"(batch, {units}). Received {len(states)} tensor(s)."
            )
        for i, state in enumerate(states):
            if state is None:
                raise TypeError(
                    f"`{layer}` expects each `initial_state` entry to be a "
                    f"tensor of shape (batch, {units}); pass initial_state=None "
                    "for zero states. Received: "
                    f"initial_state[{i}]=None"
                )
            states[i] = state = _as_tensor(state)
            state_shape = _static_shape(state)
            if (
                len(state_shape) != 2
                or state_shape[-1] != units
                or _conflict(state_shape[:1], expected[:1])
            ):
                raise ValueError(
                    f"`{layer}` expects each `initial_state` tensor to "
                    f"have shape (batch, {units}). Received shape {state_shape} "
                    f"for initial_state[{i}]; `sequences` has batch size "
                    f"{expected[0]}."
                )
        initial_state = states[0] if single else states
    return initial_state, mask
