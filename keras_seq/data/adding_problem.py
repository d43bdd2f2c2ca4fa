"""The adding problem: a synthetic task that needs memory over many steps."""

import numpy as np

from keras_seq import _validation


def adding_problem(samples, timesteps, seed=None):
    """Returns the adding problem of Hochreiter & Schmidhuber (1997).

    Each input is `timesteps` steps of two features: a value drawn uniformly
    from [0, 1) and a marker. Exactly two steps are marked, one in each half
    of the sequence, and the target is the sum of the two marked values. As
    used by Le, Jaitly & Hinton (2015): always answering 1 gives a mean
    squared error of 1/6 ~ 0.167 (the variance of the sum), so a model beats
    that only by carrying the first marked value across about
    `timesteps / 2` steps.

    Args:
        samples: Integer >= 1, how many sequences.
        timesteps: Integer >= 2, the sequence length.
        seed: Optional seed for `numpy.random.default_rng` (an integer or
            a sequence of integers). Defaults to `None` (fresh randomness).

    Returns:
        `(x, y)`: `x` float32 of shape `(samples, timesteps, 2)` (value,
        marker), `y` float32 of shape `(samples, 1)`.

    Raises:
        TypeError, ValueError: for arguments out of range, naming them.

    Example:

    >>> x, y = keras_seq.data.adding_problem(1000, 50, seed=0)
    >>> x.shape, y.shape
    ((1000, 50, 2), (1000, 1))
    """
    _validation.check_positive_int("samples", samples)
    _validation.check_positive_int("timesteps", timesteps)
    if timesteps < 2:
        raise ValueError(
            "Argument `timesteps` must be an integer >= 2 (one marker in each "
            f"half). Received: timesteps={timesteps}"
        )
    rng = np.random.default_rng(seed)
    half = timesteps // 2
    values = rng.uniform(size=(samples, timesteps)).astype("float32")
    markers = np.zeros((samples, timesteps), dtype="float32")
    rows = np.arange(samples)
    markers[rows, rng.integers(0, half, size=samples)] = 1.0
    markers[rows, rng.integers(half, timesteps, size=samples)] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=1, keepdims=True, dtype="float32")
    return x, y
