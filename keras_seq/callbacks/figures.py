"""The pictures `GradientMonitor` writes to TensorBoard (as images) and returns
from `GradientMonitor.plot()`: a heatmap of log10 ||dL/dh_t|| with the
training step down and the time step across, and the textbook vanishing
gradient picture, the gradient norm against the number of steps back from the
last step on a log scale. Plain numpy and matplotlib: every figure is a
`matplotlib.figure.Figure` on an Agg canvas, never pyplot, so drawing touches
no global state and opens no window.
"""

import numbers
import warnings

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_COLORBAR_LABEL = "log10 ||dL/dh_t||"
_MAX_STEP_TICKS = 8
_NO_DATA = "no finite gradient norms"


def heatmap_figure(norms, steps=None, name="", horizon=None, figsize=(7, 4)):
    """Heatmap of log10 gradient norms, training step down, time step across.

    Cells that are NaN, infinite or <= 0 are missing (padding, steps not
    recorded) and drawn grey. Colours are viridis over log10 of the norm,
    with a colour bar.

    Args:
        norms: 2-D array-like of gradient norms ||dL/dh_t||. Rows are the
            recorded training steps, oldest first (drawn top to bottom);
            columns are the time steps in input order.
        steps: 1-D sequence of integers, the training-step number of each
            row, used as the y tick labels (at most about 8 of them).
            Defaults to `None`: rows are numbered 0, 1, 2, ...
        name: str, the title, e.g. the layer's name. Defaults to `""`.
        horizon: optional, appended to the title as `": horizon {horizon}"`
            when not `None` (the title is `"horizon {horizon}"` alone when
            `name` is empty). Defaults to `None`.
        figsize: `(width, height)` of the figure in inches. Defaults to
            `(7, 4)`.

    Returns:
        A `matplotlib.figure.Figure` (on an Agg canvas) with the heatmap
        axes and a colour bar axes labelled `"log10 ||dL/dh_t||"`. When no
        cell has a finite positive norm the heatmap is all grey, the colour
        bar has no ticks and the axes say `"no finite gradient norms"`.

    Raises:
        ValueError: if `norms` is not a non-empty 2-D array of numbers, or
            if `steps` is not 1-D with one entry per row of `norms`.
        TypeError: if `steps` does not hold integers.
    """
    norms = _as_float_array("norms", norms)
    if norms.ndim != 2 or norms.size == 0:
        raise ValueError(
            "Argument `norms` must be a non-empty 2-D array (training step x "
            f"time step). Received: norms with shape {norms.shape}"
        )
    rows = norms.shape[0]
    steps = _check_steps(steps, rows)

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        logs = np.where(norms > 0, np.log10(norms), np.nan)
    image = np.ma.masked_invalid(logs)
    if image.count():
        low, high = float(image.min()), float(image.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
    else:
        low, high = 0.0, 1.0  # nothing to colour: any range will do

    # A copy with grey for masked cells (set_bad on a copy is deprecated).
    cmap = colormaps["viridis"].with_extremes(bad="0.6")

    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    mappable = ax.imshow(
        image,
        cmap=cmap,
        vmin=low,
        vmax=high,
        aspect="auto",
        interpolation="nearest",
    )
    colorbar = figure.colorbar(mappable, ax=ax)
    colorbar.set_label(_COLORBAR_LABEL)

    ax.set_xlabel("time step (input order)")
    ax.set_ylabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    positions = np.unique(
        np.round(np.linspace(0, rows - 1, min(rows, _MAX_STEP_TICKS))).astype(int)
    )
    ax.set_yticks(positions, labels=[str(int(steps[i])) for i in positions])
    ax.set_title(_heatmap_title(name, horizon))
    if not image.count():
        colorbar.set_ticks([])  # the range is a placeholder, not data
        ax.text(
            0.5,
            0.5,
            _NO_DATA,
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    return figure


def decay_figure(curves, title="||dL/dh_t|| against steps back", figsize=(7, 4)):
    """Gradient norm against steps back from the last step, on a log scale.

    The textbook vanishing (or exploding) gradient picture: a straight
    falling line on the log scale is exponential decay. Values that are
    NaN, infinite or <= 0 are not drawn; a curve with no value left is
    left out of the plot and the legend.

    Args:
        curves: dict `{label: 1-D array}`, one line per entry, in dict
            order. Element `k` of an array is the gradient norm `k` steps
            back from the last (valid) time step, `k = 0, 1, 2, ...`.
        title: str, the axes title. Defaults to
            `"||dL/dh_t|| against steps back"`.
        figsize: `(width, height)` of the figure in inches. Defaults to
            `(7, 4)`.

    Returns:
        A `matplotlib.figure.Figure` (on an Agg canvas) with one axes: a
        log-scale y axis and a legend, or, when no curve has a finite
        positive value, the text `"no finite gradient norms"` on a linear
        axis.

    Raises:
        ValueError: if `curves` is not a non-empty dict, or one of its
            values is not a 1-D array of numbers.
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError(
            "Argument `curves` must be a non-empty dict {label: 1-D array of "
            f"gradient norms}}. Received: curves={_short_repr(curves)}"
        )
    prepared = {}
    for label, values in curves.items():
        values = _as_float_array("curves", values, label=label)
        if values.ndim != 1:
            raise ValueError(
                "Argument `curves` must map each label to a 1-D array of "
                f"gradient norms. Received: curves[{label!r}] with shape "
                f"{values.shape}"
            )
        values = values.copy()
        with np.errstate(invalid="ignore"):
            values[~(np.isfinite(values) & (values > 0))] = np.nan
        prepared[label] = values

    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for label, values in prepared.items():
        if np.isnan(values).all():
            continue
        ax.plot(
            np.arange(len(values)), values, marker="o", markersize=3, label=str(label)
        )
    if ax.lines:
        ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(
            0.5,
            0.5,
            _NO_DATA,
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("steps back from the last step")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.4)
    return figure


def monitor_figures(store, horizons, curves, epoch):
    """The monitor's pictures (see `GradientMonitor.plot`).

    Args:
        store: the monitor's `TimestepStore` (None before any record).
        horizons: `{sublayer: latest horizon}`.
        curves: `{sublayer: mean ||dL/dh_t|| by steps back}` of the epoch.
        epoch: the epoch the curves belong to.
    """
    result = {}
    if store is None:
        return result
    for name in store.layers:
        steps, matrix = store.recent(name)
        result[f"heatmap/{name}"] = heatmap_figure(
            matrix, steps=steps, name=name, horizon=horizons.get(name)
        )
    curves = {name: c for name, c in curves.items() if len(c)}
    if curves:
        title = f"||dL/dh_t|| against steps back (epoch {epoch})"
        result["decay"] = decay_figure(curves, title=title)
    return result


def to_image(figure, dpi=100):
    """Render a figure to an RGB array, e.g. for `tf.summary.image`.

    The figure is drawn on a temporary Agg canvas at `dpi`; its own canvas
    and dpi are restored afterwards.

    Args:
        figure: a `matplotlib.figure.Figure`.
        dpi: positive number, pixels per inch. Defaults to `100`.

    Returns:
        `(height, width, 3)` uint8 numpy array, the RGB pixels of the
        figure (a `(7, 4)` inch figure at dpi 100 is 400 x 700).

    Raises:
        TypeError: if `figure` is not a `matplotlib.figure.Figure`.
        ValueError: if `dpi` is not a positive number.
    """
    if not isinstance(figure, Figure):
        raise TypeError(
            "Argument `figure` must be a matplotlib.figure.Figure. "
            f"Received: figure={_short_repr(figure)} "
            f"(of type {type(figure).__name__})"
        )
    if (
        isinstance(dpi, bool)
        or not isinstance(dpi, numbers.Real)
        or not np.isfinite(dpi)
        or dpi <= 0
    ):
        raise ValueError(
            f"Argument `dpi` must be a positive number. Received: dpi={dpi!r}"
        )
    original_canvas, original_dpi = figure.canvas, figure.dpi
    try:
        figure.set_dpi(dpi)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        figure.set_dpi(original_dpi)
        figure.set_canvas(original_canvas)
    return pixels


def _as_float_array(name, value, label=None):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        where = name if label is None else f"{name}[{label!r}]"
        raise ValueError(
            f"Argument `{name}` must hold arrays of numbers. "
            f"Received: {where}={_short_repr(value)}"
        ) from error


def _check_steps(steps, rows):
    if steps is None:
        return np.arange(rows)
    array = np.asarray(steps)
    if array.ndim != 1 or len(array) != rows:
        raise ValueError(
            "Argument `steps` must be a 1-D sequence with one training step "
            f"per row of `norms` ({rows} rows). Received: steps with shape "
            f"{array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            "Argument `steps` must hold integers (training-step numbers). "
            f"Received: steps={_short_repr(steps)} (dtype {array.dtype})"
        )
    return array


def _heatmap_title(name, horizon):
    if horizon is None:
        return str(name)
    if name:
        return f"{name}: horizon {horizon}"
    return f"horizon {horizon}"


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
