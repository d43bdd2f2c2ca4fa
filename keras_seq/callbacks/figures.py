"""The pictures `GradientMonitor` writes to TensorBoard (as images) and returns
from `GradientMonitor.plot()`: a heatmap of log10 ||dL/dh_t|| with the
training step down and the time step across, and the textbook vanishing
gradient picture, the gradient norm against the number of steps back from the
last step on a log scale. Plain numpy and matplotlib: every figure is a
`matplotlib.figure.Figure` on an Agg canvas, never pyplot, so drawing touches
no global state and opens no window.

The figures are made for TensorBoard's image cards. TensorBoard 2.21's
Time Series dashboard shows an image in a box 215 pixels high and, in a
window 1280 pixels wide, 327 wide, scaled with `image-rendering: pixelated`:
an image scaled down loses strokes of its letters. So a figure is 320 x 210
pixels at `to_image`'s 100 dpi (`FIGSIZE`), shown pixel for pixel there and
a little enlarged on the Images dashboard (350 pixels wide), with few labels
of 11 to 12.5 pixels.
"""

import numbers
import warnings

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

_COLORBAR_LABEL = "log10 ||dL/dh_t||"
_SHARED_SCALE = "same in all sublayers"
_MAX_STEP_TICKS = 6
_NO_DATA = "no finite gradient norms"
FIGSIZE = (3.2, 2.1)  # inches: 320 x 210 pixels at 100 dpi
# Font sizes in points (a point is 100 / 72 pixels at 100 dpi).
_TITLE_SIZE = 9
_LABEL_SIZE = 8.5
_TICK_SIZE = 8
_LEGEND_ROW = 0.17  # inches, a row of a legend of _TICK_SIZE text


def heatmap_figure(
    norms, steps=None, name="", horizon=None, figsize=FIGSIZE, limits=None
):
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
            `FIGSIZE`, `(3.2, 2.1)`: TensorBoard's card size at 100 dpi.
        limits: optional `(low, high)`, the log10 norms at the two ends of
            the colour bar, shared by the heatmaps of several sublayers so
            that one colour is one norm in all of them (see
            `monitor_figures`); the colour bar label then says so
            (`"same in all sublayers"`), and cells beyond the limits take
            the end colours (the bar gets pointed ends). Defaults to `None`:
            the range of this heatmap's own cells.

    Returns:
        A `matplotlib.figure.Figure` (on an Agg canvas) with the heatmap
        axes and a colour bar axes labelled `"log10 ||dL/dh_t||"`. When no
        cell has a finite positive norm the heatmap is all grey, the colour
        bar has no ticks (unless `limits` are given) and the axes say
        `"no finite gradient norms"`.

    Raises:
        ValueError: if `norms` is not a non-empty 2-D array of numbers, if
            `steps` is not 1-D with one entry per row of `norms`, or if
            `limits` is not two finite numbers with `low < high`.
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
    if limits is not None:
        limits = _check_limits(limits)

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        logs = np.where(norms > 0, np.log10(norms), np.nan)
    image = np.ma.masked_invalid(logs)
    if limits is not None:
        low, high = limits
    elif image.count():
        low, high = _widen(float(image.min()), float(image.max()))
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
    colorbar = figure.colorbar(mappable, ax=ax, extend=_extend(image, low, high))
    if limits is None:
        colorbar.set_label(_COLORBAR_LABEL, fontsize=_LABEL_SIZE)
    else:
        colorbar.set_label(f"{_COLORBAR_LABEL}\n{_SHARED_SCALE}", fontsize=_LABEL_SIZE)
    colorbar.ax.tick_params(labelsize=_TICK_SIZE)
    # Ticks on whole or half decades, comparable between figures.
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(_decade_label))

    ax.set_xlabel("time step (input order)", fontsize=_LABEL_SIZE)
    ax.set_ylabel("training step", fontsize=_LABEL_SIZE)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    positions = np.unique(
        np.round(np.linspace(0, rows - 1, min(rows, _MAX_STEP_TICKS))).astype(int)
    )
    ax.set_yticks(positions, labels=[str(int(steps[i])) for i in positions])
    ax.tick_params(labelsize=_TICK_SIZE)
    _fit_title(ax, _heatmap_title(name, horizon))
    if not image.count():
        if limits is None:
            colorbar.set_ticks([])  # the range is a placeholder, not data
        ax.text(
            0.5,
            0.5,
            _NO_DATA,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=_LABEL_SIZE,
        )
    return figure


def decay_figure(curves, title="||dL/dh_t|| against steps back", figsize=None):
    """Gradient norm against steps back from the last step, on a log scale.

    The textbook vanishing (or exploding) gradient picture: a straight
    falling line on the log scale is exponential decay. Values that are
    NaN, infinite or <= 0 are not drawn; a curve with no value left is
    left out of the plot and the legend. The legend sits below the axes,
    where it hides no line, in as many columns as fit the figure's width.

    Args:
        curves: dict `{label: 1-D array}`, one line per entry, in dict
            order. Element `k` of an array is the gradient norm `k` steps
            back from the last (valid) time step, `k = 0, 1, 2, ...`.
        title: str, the axes title. Defaults to
            `"||dL/dh_t|| against steps back"`.
        figsize: `(width, height)` of the figure in inches. Defaults to
            `None`: `FIGSIZE`, `(3.2, 2.1)` (TensorBoard's card size at 100
            dpi), 0.17 inches higher for each row of the legend after two.

    Returns:
        A `matplotlib.figure.Figure` (on an Agg canvas) with one axes, a
        log-scale y axis, and a figure legend below it, or, when no curve
        has a finite positive value, the text `"no finite gradient norms"`
        on a linear axis and no legend.

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

    figure = Figure(figsize=figsize or FIGSIZE, layout="constrained")
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
        rows = _legend_below(figure, len(ax.lines))
        if figsize is None and rows > 2:
            figure.set_size_inches(FIGSIZE[0], FIGSIZE[1] + _LEGEND_ROW * (rows - 2))
    else:
        ax.text(
            0.5,
            0.5,
            _NO_DATA,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=_LABEL_SIZE,
        )
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("steps back from the last step", fontsize=_LABEL_SIZE)
    ax.set_ylabel("||dL/dh_t||", fontsize=_LABEL_SIZE)
    ax.tick_params(which="both", labelsize=_TICK_SIZE)
    ax.set_title(title, fontsize=_TITLE_SIZE)
    ax.grid(True, which="major", alpha=0.4)
    return figure


def monitor_figures(store, horizons, curves, epoch):
    """The monitor's pictures (see `GradientMonitor.plot`).

    The heatmaps share one colour scale, `shared_limits` of all sublayers'
    recent matrices, so a colour is the same norm in every sublayer and, up
    to half a decade, in every epoch and run with gradients of that size.

    Args:
        store: the monitor's `TimestepStore` (None before any record).
        horizons: `{sublayer: latest horizon}`.
        curves: `{sublayer: mean ||dL/dh_t|| by steps back}` of the epoch.
        epoch: the epoch the curves belong to.
    """
    result = {}
    if store is None:
        return result
    recent = {name: store.recent(name) for name in store.layers}
    limits = shared_limits([matrix for _, matrix in recent.values()])
    for name, (steps, matrix) in recent.items():
        result[f"heatmap/{name}"] = heatmap_figure(
            matrix,
            steps=steps,
            name=name,
            horizon=horizons.get(name),
            limits=limits,
        )
    curves = {name: c for name, c in curves.items() if len(c)}
    if curves:
        title = f"||dL/dh_t|| against steps back (epoch {epoch})"
        result["decay"] = decay_figure(curves, title=title)
    return result


def shared_limits(matrices):
    """One colour range for several heatmaps of gradient norms.

    Args:
        matrices: iterable of array-likes of gradient norms; NaN, infinite
            and <= 0 entries are ignored.

    Returns:
        `(low, high)`, the log10 range of every finite positive norm, widened
        outwards to whole half decades (so that epochs and runs with
        gradients of one size get the same scale), or `None` when there is
        no such norm.
    """
    low, high = np.inf, -np.inf
    for matrix in matrices:
        values = np.asarray(matrix, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            low = min(low, float(np.log10(values.min())))
            high = max(high, float(np.log10(values.max())))
    if low > high:
        return None
    return _widen(np.floor(low * 2) / 2, np.ceil(high * 2) / 2)


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


def _check_limits(limits):
    try:
        low, high = (float(value) for value in limits)
    except (TypeError, ValueError):
        low = high = np.nan
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            "Argument `limits` must be two finite numbers `(low, high)` with "
            f"low < high. Received: limits={_short_repr(limits)}"
        )
    return low, high


def _widen(low, high):
    """A range for colours: a single value gets half a decade either side."""
    low, high = float(low), float(high)
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _extend(image, low, high):
    """Which ends of the colour bar are pointed: cells beyond the limits."""
    if not image.count():
        return "neither"
    below, above = bool(image.min() < low), bool(image.max() > high)
    return {
        (False, False): "neither",
        (True, False): "min",
        (False, True): "max",
        (True, True): "both",
    }[(below, above)]


def _fit_title(ax, text):
    """The title on one line if it fits in the figure, else broken after its
    first colon (a long sublayer name, then the horizon)."""
    title = ax.set_title(text, fontsize=_TITLE_SIZE)
    if ": " not in text:
        return
    figure = ax.get_figure()
    figure.draw_without_rendering()  # lays out the axes under the title
    extent = title.get_window_extent()
    if extent.x0 < 0 or extent.x1 > figure.bbox.width:
        title.set_text(text.replace(": ", ":\n", 1))


def _legend_below(figure, entries):
    """A legend under the axes (inside, it would hide lines at this size) in
    the most columns that fit the figure's width; returns its rows."""
    renderer = figure.canvas.get_renderer()
    for columns in range(entries, 0, -1):
        legend = figure.legend(
            loc="outside lower center",
            ncols=columns,
            fontsize=_TICK_SIZE,
            frameon=False,
            handlelength=1.5,
            columnspacing=1.0,
        )
        if (
            columns == 1
            or legend.get_window_extent(renderer).width <= figure.bbox.width
        ):
            return -(-entries // columns)
        legend.remove()


def _decade_label(value, position=None):
    return f"{value + 0.0:g}"  # + 0.0: "0", not "-0"


def _heatmap_title(name, horizon):
    if horizon is None:
        return str(name)
    if name:
        return f"{name}: horizon {horizon}"
    return f"horizon {horizon}"


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
