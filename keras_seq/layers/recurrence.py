"""What the Elman recurrence needs on every backend, and the backend's own
implementation of it.

`SharedRNN` runs one module of kernels: `keras_seq.layers.bptt` on
TensorFlow (`tf.while_loop` and `tf.custom_gradient`) and
`keras_seq.layers.bptt_jax` on JAX (`jax.lax.scan` and `jax.custom_vjp`).
Both take the same arguments and give the same outputs and gradients; this
module holds what they share: which activations the explicit BPTT pass
covers, their derivatives read off the output, and the segment length of
`recompute`.
"""

import importlib
import math

import keras

# Activations whose derivative is cheap to read off the output h = f(a).
DERIVATIVE_FROM_OUTPUT = {
    "tanh": lambda h: 1.0 - h * h,
    "sigmoid": lambda h: h * (1.0 - h),
    "relu": lambda h: keras.ops.cast(h > 0, h.dtype),
    "linear": lambda h: keras.ops.ones_like(h),
}

# Element-wise activations: their derivative is the gradient of sum(f(a)).
ELEMENTWISE_ACTIVATIONS = frozenset(
    list(DERIVATIVE_FROM_OUTPUT)
    + [
        "celu",
        "elu",
        "exponential",
        "gelu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "hard_tanh",
        "leaky_relu",
        "log_sigmoid",
        "mish",
        "relu6",
        "selu",
        "silu",
        "softplus",
        "softsign",
        "sparse_plus",
        "squareplus",
        "swish",
        "tanh_shrink",
    ]
)

# The backends keras-seq runs on, and the module of kernels for each.
KERNELS = {
    "tensorflow": "keras_seq.layers.bptt",
    "jax": "keras_seq.layers.bptt_jax",
}


def kernels():
    """The module of recurrence kernels for Keras's backend."""
    return importlib.import_module(KERNELS[keras.backend.backend()])


def activation_name(activation):
    """The registered name of a Keras activation, or None for a custom one."""
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # noqa: BLE001 - any custom callable
        return None
    return name if isinstance(name, str) else None


def supports_explicit_bptt(activation):
    return activation_name(activation) in ELEMENTWISE_ACTIVATIONS


def static_segment_length(recompute, steps):
    """Steps per segment for `recompute` and a sequence of `steps` (a Python
    int) steps: at most k (or ceil(sqrt(steps)) for True), evened out over
    the segments, ceil(steps / ceil(steps / k)), so the last segment is
    never mostly padding."""
    limit = math.ceil(math.sqrt(steps)) if recompute is True else recompute
    limit = max(1, min(int(limit), steps))
    segments = -(-steps // limit)
    return -(-steps // segments)
