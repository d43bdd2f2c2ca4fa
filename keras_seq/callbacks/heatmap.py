"""Render a (training step x time step) matrix of gradient norms as an RGB
image for TensorBoard: log10 of the norm, viridis colours, grey for missing
or non-finite cells."""

import warnings

import numpy as np

# Viridis at 9 evenly spaced points (from matplotlib's table); interpolated.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
_MISSING = np.array([128, 128, 128], dtype=np.uint8)


def log_norm_heatmap(norms, max_width=1024, max_height=256, size=256):
    """RGB image of log10(norms).

    Args:
        norms: 2-D array, rows = recorded training steps (oldest first),
            columns = time steps (input order); NaN where missing.
        max_width, max_height: at most this many columns and rows of cells;
            more are averaged (in log space) into one.
        size: cells are enlarged (up to 32 px wide, 8 px high) until the
            image is about this many pixels wide and high.

    Returns:
        `(height, width, 3)` uint8 array; row 0 is the oldest training step.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or norms.size == 0:
        raise ValueError(
            f"`norms` must be a non-empty 2-D array. Received shape {norms.shape}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(norms > 0, np.log10(norms), np.nan)
    logs[~np.isfinite(logs)] = np.nan
    logs = _shrink(logs, max_height, axis=0)
    logs = _shrink(logs, max_width, axis=1)

    finite = np.isfinite(logs)
    image = np.empty(logs.shape + (3,), dtype=np.uint8)
    image[:] = _MISSING
    if finite.any():
        low, high = np.min(logs[finite]), np.max(logs[finite])
        scaled = (logs[finite] - low) / (high - low) if high > low else 0.5
        position = np.clip(scaled, 0, 1) * (len(_VIRIDIS) - 1)
        left = np.floor(position).astype(int).clip(0, len(_VIRIDIS) - 2)
        weight = (position - left)[..., None]
        colours = _VIRIDIS[left] * (1 - weight) + _VIRIDIS[left + 1] * weight
        image[finite] = np.round(colours).astype(np.uint8)

    rows = max(1, min(8, size // image.shape[0]))
    cols = max(1, min(32, size // image.shape[1]))
    return np.repeat(np.repeat(image, rows, axis=0), cols, axis=1)


def _shrink(values, limit, axis):
    size = values.shape[axis]
    if size <= limit:
        return values
    edges = np.linspace(0, size, limit + 1).astype(int)
    chunks = [
        np.take(values, range(a, max(b, a + 1)), axis=axis)
        for a, b in zip(edges[:-1], edges[1:])
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN chunks
        return np.stack([np.nanmean(c, axis=axis) for c in chunks], axis=axis)
