"""What the monitor tells the user beyond its numbers: warnings pointing at
their own `fit` line, and what it cannot see in their model."""

import os
import pathlib
import sys
import warnings

import keras

from keras_seq.callbacks.reset_states import stateful_layers
from keras_seq.monitoring import recurrent as keras_rnn

# Frames a warning skips: keras_seq's, Keras's and the backend's (the
# backend is imported by Keras before any of this runs).
_BACKENDS = [sys.modules.get(name) for name in ("tensorflow", "jax")]
_INTERNAL = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in [keras] + [m for m in _BACKENDS if m is not None]
) + (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)


def warn(message, category=UserWarning):
    """`warnings.warn` pointing at the user's line (their `model.fit` call):
    the first frame outside keras_seq, Keras and TensorFlow."""
    frame, level = sys._getframe(1), 2  # 2: the caller of warn
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def blind_spots(model):
    """A report line when `model` has no recurrent layer, or recurrent
    layers the monitor cannot see through time; None otherwise."""
    found = keras_rnn.recurrent_layers(model)
    blind = [layer.name for layer in found if not keras_rnn.has_timestep_data(layer)]
    if not found:
        return (
            "the model has no recurrent layer: per-layer gradient norms only, "
            "no per-time-step data and no verdicts through time"
        )
    if blind:
        return (
            "per-layer gradient norms only (no per-time-step data, no "
            f"verdicts through time) for {', '.join(blind)}: per-step data "
            "needs keras_seq.layers.SharedRNN or Keras's SimpleRNN, GRU or "
            "LSTM (alone, stacked or Bidirectional); other cells and "
            "StackedRNNCells are not probed"
        )
    return None


def unprobed(model, sublayers):
    """A report line naming the recurrent layers expected to give per-step
    data that are missing from a recorded step's `sublayers` (for example
    not called in the forward pass); None when none is missing."""
    seen = {name.split("/level_")[0].split("#")[0] for name in sublayers}
    missing = [
        layer.name
        for layer in keras_rnn.recurrent_layers(model)
        if keras_rnn.has_timestep_data(layer) and layer.name not in seen
    ]
    if not missing:
        return None
    return (
        "no per-time-step data from recurrent layers not called in the "
        f"recorded forward pass: {', '.join(missing)}"
    )


def stateful_note(model, latest):
    """The report's line on stateful layers (truncated BPTT), or None."""
    stateful = [layer.name for layer in stateful_layers(model)]
    if not stateful or not latest:
        return None
    lengths = sorted({d.timesteps for d in latest.values()})
    return (
        f"stateful layers ({', '.join(stateful)}): gradients flow within "
        f"each batch's {'/'.join(map(str, lengths))} steps only (truncated "
        "BPTT), so a horizon cannot exceed that chunk length; a horizon "
        "equal to it means the gradient still reached the chunk's start."
    )


def check_writable(log_dir):
    """Fail before the first update, not at the first write, when `log_dir`
    cannot take the monitor's files."""
    path = pathlib.Path(log_dir) / "gradients"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".keras_seq_write_check_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            "Argument `log_dir` must be a directory the monitor can write "
            f"to (it writes under {str(path)!r}). Received: log_dir="
            f"{str(log_dir)!r}, which failed with: {error}"
        ) from None
