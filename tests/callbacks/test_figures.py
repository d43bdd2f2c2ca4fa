import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

from keras_seq.callbacks import figures, summaries
from keras_seq.callbacks.timestep_store import TimestepStore

GREY = 153  # "0.6" in 8-bit RGB
# TensorBoard 2.21's Time Series dashboard shows an image in a box 215 px
# high and (window 1280 px wide) 327 px wide, scaled with `image-rendering:
# pixelated`; the Images dashboard shows it 350 px wide; the issue measured
# cards of about 280 px.
CARD_BOX = (327, 215)
SMALLEST_CARD = 280


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # Overrides the conftest fixture for this module: these figures never touch
    # Keras, and clear_session's garbage collection costs 0.2 s a test.
    yield


@pytest.fixture
def norms():
    """(5 training steps, 6 time steps), decaying to the left, with holes."""
    values = np.exp(np.arange(6.0))[None, :] * np.arange(1.0, 6.0)[:, None] * 1e-3
    values[0, 1] = np.nan
    values[1, 2] = 0.0
    values[2, 3] = -1.0
    values[3, 4] = np.inf
    return values


def _expected_logs(values):
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) & (values > 0)
    logs = np.full(values.shape, np.nan)
    logs[ok] = np.log10(values[ok])
    return logs, ~ok


def _tick_texts(labels):
    return [label.get_text() for label in labels]


# heatmap_figure


def test_heatmap_axes_labels_and_title(norms):
    figure = figures.heatmap_figure(norms, name="lstm/level_0", horizon=12)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "time step (input order)"
    assert ax.get_ylabel() == "training step"
    assert ax.get_title() == "lstm/level_0: horizon 12"


@pytest.mark.parametrize(
    "name, horizon, title",
    [("gru", None, "gru"), ("", 3, "horizon 3"), ("", None, "")],
)
def test_heatmap_title_without_horizon_or_name(norms, name, horizon, title):
    figure = figures.heatmap_figure(norms, name=name, horizon=horizon)
    assert figure.axes[0].get_title() == title


def test_heatmap_has_a_labelled_colour_bar(norms):
    figure = figures.heatmap_figure(norms)
    ax = figure.axes[0]
    colorbar = ax.images[0].colorbar
    assert colorbar is not None
    assert len(figure.axes) == 2
    assert colorbar.ax is figure.axes[1]
    assert colorbar.ax.get_ylabel() == "log10 ||dL/dh_t||"


def test_heatmap_image_is_log10_with_missing_cells_masked(norms):
    image = figures.heatmap_figure(norms).axes[0].images[0]
    data = image.get_array()
    expected, missing = _expected_logs(norms)
    assert data.shape == norms.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(data), missing)
    np.testing.assert_allclose(data.data[~missing], expected[~missing], rtol=1e-12)
    # Colours span exactly the finite range.
    assert image.get_clim() == pytest.approx((np.nanmin(expected), np.nanmax(expected)))
    assert image.get_cmap().name.startswith("viridis")
    np.testing.assert_allclose(image.get_cmap().get_bad(), (0.6, 0.6, 0.6, 1.0))
    assert image.get_interpolation() == "nearest"
    assert image.axes.get_aspect() == "auto"


def test_heatmap_training_step_goes_down_time_step_across(norms):
    ax = figures.heatmap_figure(norms).axes[0]
    bottom, top = ax.get_ylim()
    assert bottom > top  # row 0 (oldest training step) at the top
    left, right = ax.get_xlim()
    assert (left, right) == pytest.approx((-0.5, norms.shape[1] - 0.5))


def test_heatmap_y_ticks_show_the_given_training_steps(norms):
    steps = [100, 200, 350, 400, 999]
    ax = figures.heatmap_figure(norms, steps=steps).axes[0]
    positions = ax.get_yticks()
    np.testing.assert_array_equal(positions, np.arange(5))
    assert _tick_texts(ax.get_yticklabels()) == [str(s) for s in steps]


def test_heatmap_y_ticks_default_to_row_numbers(norms):
    ax = figures.heatmap_figure(norms).axes[0]
    assert _tick_texts(ax.get_yticklabels()) == ["0", "1", "2", "3", "4"]


def test_heatmap_many_rows_get_at_most_8_ticks_on_the_right_rows():
    rows = 50
    steps = np.arange(rows) * 10 + 7
    figure = figures.heatmap_figure(np.ones((rows, 3)), steps=steps)
    ax = figure.axes[0]
    positions = ax.get_yticks()
    labels = _tick_texts(ax.get_yticklabels())
    assert 2 <= len(positions) <= 8
    assert positions[0] == 0 and positions[-1] == rows - 1
    assert positions == pytest.approx(np.round(positions))
    assert labels == [str(steps[int(p)]) for p in positions]


def test_heatmap_x_ticks_are_integer_time_steps():
    figure = figures.heatmap_figure(np.ones((2, 37)))
    figures.to_image(figure)  # ticks are chosen at draw time
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2
    np.testing.assert_array_equal(ticks, np.round(ticks))


def test_heatmap_draws_missing_cells_grey(norms):
    pixels = figures.to_image(figures.heatmap_figure(norms))
    assert np.all(pixels == GREY, axis=-1).sum() > 20


def test_heatmap_all_missing_renders_without_warnings():
    values = np.array([[np.nan, 0.0, -1.0], [np.inf, -np.inf, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = figures.heatmap_figure(values, name="empty")
        pixels = figures.to_image(figure)
    ax = figure.axes[0]
    assert np.ma.getmaskarray(ax.images[0].get_array()).all()
    assert ax.images[0].colorbar.ax.get_ylabel() == "log10 ||dL/dh_t||"
    assert [t.get_text() for t in ax.texts] == ["no finite gradient norms"]
    assert np.all(pixels == GREY, axis=-1).sum() > 1000


def test_heatmap_constant_and_large_matrices_render():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constant = figures.heatmap_figure(np.full((1, 1), 0.5))
        low, high = constant.axes[0].images[0].get_clim()
        assert low < np.log10(0.5) < high
        figures.to_image(constant)
        large = np.random.default_rng(0).lognormal(size=(400, 300))
        figures.to_image(figures.heatmap_figure(large))


@pytest.mark.parametrize(
    "bad",
    [np.ones(4), np.ones((2, 3, 4)), np.ones((0, 5)), np.ones((3, 0)), 1.0],
)
def test_heatmap_rejects_non_2d_or_empty_norms(bad):
    shape = np.shape(bad)
    with pytest.raises(
        ValueError,
        match=rf"Argument `norms` must be a non-empty 2-D array.*"
        rf"Received: norms with shape {re.escape(str(shape))}",
    ):
        figures.heatmap_figure(bad)


def test_heatmap_rejects_non_numeric_norms():
    with pytest.raises(ValueError, match=r"Argument `norms` must hold arrays of"):
        figures.heatmap_figure([[1.0, 2.0], [3.0]])


@pytest.mark.parametrize("steps", [[1, 2, 3], list(range(6)), [[1, 2, 3, 4, 5]]])
def test_heatmap_rejects_steps_of_the_wrong_length(norms, steps):
    with pytest.raises(
        ValueError,
        match=r"Argument `steps` must be a 1-D sequence with one training step "
        r"per row of `norms` \(5 rows\)\. Received: steps with shape",
    ):
        figures.heatmap_figure(norms, steps=steps)


def test_heatmap_rejects_non_integer_steps(norms):
    with pytest.raises(TypeError, match=r"Argument `steps` must hold integers"):
        figures.heatmap_figure(norms, steps=[0.5, 1, 2, 3, 4])


# decay_figure


def test_decay_lines_hold_the_curves_with_missing_values_dropped():
    curves = {
        "level 0": np.exp(-np.arange(8.0)),
        "level 1": [1.0, 0.0, 0.1, -2.0, np.inf, np.nan, 1e-6],
    }
    figure = figures.decay_figure(curves)
    ax = figure.axes[0]
    assert len(ax.lines) == 2
    for line, values in zip(ax.lines, curves.values()):
        expected = np.array(values, dtype=np.float64)
        expected[_expected_logs(values)[1]] = np.nan
        np.testing.assert_array_equal(line.get_xdata(), np.arange(len(values)))
        np.testing.assert_array_equal(line.get_ydata(), expected)
    # The input is not modified.
    assert curves["level 1"][1] == 0.0


def test_decay_axes_scale_legend_and_title():
    curves = {"b": [1.0, 0.5], "a": [2.0, 0.1, 0.01], 3: [1.0]}
    ax = figures.decay_figure(curves, title="my run").axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "steps back from the last step"
    assert ax.get_ylabel() == "||dL/dh_t||"
    assert ax.get_title() == "my run"
    assert _tick_texts(ax.get_figure().legends[0].get_texts()) == ["b", "a", "3"]
    assert ax.xaxis.get_gridlines()[0].get_visible()


def test_decay_default_title():
    ax = figures.decay_figure({"x": [1.0]}).axes[0]
    assert ax.get_title() == "||dL/dh_t|| against steps back"


def test_decay_skips_all_missing_curves():
    curves = {"gone": [0.0, np.nan], "kept": [1.0, 0.5], "empty": []}
    ax = figures.decay_figure(curves).axes[0]
    assert [line.get_label() for line in ax.lines] == ["kept"]
    assert _tick_texts(ax.get_figure().legends[0].get_texts()) == ["kept"]


def test_decay_all_missing_says_so_without_log_scale_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = figures.decay_figure({"a": [0.0, -1.0], "b": [np.nan]})
        figures.to_image(figure)
    ax = figure.axes[0]
    assert len(ax.lines) == 0
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.texts] == ["no finite gradient norms"]


@pytest.mark.parametrize("curves", [None, [1.0, 0.5], np.ones(3), {}])
def test_decay_rejects_non_dict_or_empty_curves(curves):
    with pytest.raises(
        ValueError, match=r"Argument `curves` must be a non-empty dict.*Received:"
    ):
        figures.decay_figure(curves)


@pytest.mark.parametrize("values", [np.ones((2, 3)), 1.0])
def test_decay_rejects_curves_that_are_not_1d(values):
    with pytest.raises(
        ValueError,
        match=r"Argument `curves` must map each label to a 1-D array.*"
        r"Received: curves\['bad'\] with shape",
    ):
        figures.decay_figure({"ok": [1.0], "bad": values})


# to_image


def test_to_image_shape_dtype_and_dpi(norms):
    figure = figures.heatmap_figure(norms, figsize=(7, 4))
    pixels = figures.to_image(figure)
    assert pixels.shape == (400, 700, 3)
    assert pixels.dtype == np.uint8
    small = figures.to_image(figure, dpi=50)
    assert small.shape == (200, 350, 3)
    # to_image leaves the figure as it found it.
    assert figure.dpi == pytest.approx(100)


def test_to_image_restores_the_figure_canvas():
    figure = Figure()
    canvas = figure.canvas
    figures.to_image(figure)
    assert figure.canvas is canvas


def test_to_image_differs_between_figures(norms):
    first = figures.to_image(figures.heatmap_figure(norms, name="a"))
    second = figures.to_image(figures.decay_figure({"a": [1.0, 0.1]}))
    third = figures.to_image(figures.heatmap_figure(norms, name="b"))
    assert first.shape == second.shape
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, third)
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 10  # not blank


@pytest.mark.parametrize("figure", [None, np.zeros((4, 4, 3)), "figure"])
def test_to_image_rejects_non_figures(figure):
    with pytest.raises(
        TypeError,
        match=r"Argument `figure` must be a matplotlib\.figure\.Figure\. Received:",
    ):
        figures.to_image(figure)


@pytest.mark.parametrize("dpi", [0, -10, float("nan"), "100", True])
def test_to_image_rejects_bad_dpi(dpi):
    with pytest.raises(
        ValueError, match=r"Argument `dpi` must be a positive number\. Received: dpi="
    ):
        figures.to_image(Figure(), dpi=dpi)


def test_module_needs_neither_tensorflow_nor_pyplot():
    path = Path(figures.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.to_image(module.heatmap_figure([[1.0, 2.0]]))\n"
        "module.to_image(module.decay_figure({'a': [1.0, 0.1]}))\n"
        "bad = [m for m in ('tensorflow', 'keras', 'matplotlib.pyplot')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# Pictures for people: readable at TensorBoard's card size, one colour scale.


def _store(matrices):
    """A TimestepStore holding `{sublayer: (records x T) norms}`."""
    store = TimestepStore(("grad_norm",))
    for name, matrix in matrices.items():
        for step, row in enumerate(matrix):
            store.append(step * 10, name, {"grad_norm": row})
    return store


def _texts(figure):
    """Every text a reader sees: titles, axis and tick labels, legend
    entries and notes, after a draw (ticks are chosen at draw time)."""
    figure.draw_without_rendering()
    texts = [text for legend in figure.legends for text in legend.get_texts()]
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += ax.get_xticklabels() + ax.get_yticklabels()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _sublayers():
    t = np.arange(30.0)
    rng = np.random.default_rng(0)
    decay = np.exp(0.2 * (t - 29))[None, :] * rng.lognormal(0, 0.2, (8, 30))
    return {
        "rnn/level_0": 1e-4 * decay,  # vanished: far below the others
        "rnn/level_1": 0.3 * decay,
        "bidirectional/forward_lstm/level_0": 5.0 * decay,
    }


def _monitor_pictures(matrices):
    store = _store(matrices)
    curves = {name: m.mean(axis=0)[::-1] for name, m in matrices.items()}
    horizons = {name: 30 for name in matrices}
    return figures.monitor_figures(store, horizons, curves, epoch=3)


def test_monitor_heatmaps_share_one_stated_colour_scale():
    matrices = _sublayers()
    pictures = _monitor_pictures(matrices)
    heatmaps = [pictures[f"heatmap/{name}"] for name in matrices]
    limits = {fig.axes[0].images[0].get_clim() for fig in heatmaps}
    assert len(limits) == 1  # one scale, not one per sublayer
    (low, high) = limits.pop()
    logs = np.log10(np.concatenate([m.ravel() for m in matrices.values()]))
    assert low <= logs.min() < logs.max() <= high
    assert (low, high) == figures.shared_limits(matrices.values())
    for figure in heatmaps:
        colorbar = figure.axes[0].images[0].colorbar
        assert colorbar.ax.get_ylim() == pytest.approx((low, high))
        assert colorbar.ax.get_ylabel() == "log10 ||dL/dh_t||\nsame in all sublayers"
    # The vanished sublayer is dark in its heatmap, not stretched to yellow.
    vanished = figures.to_image(heatmaps[0])
    loud = figures.to_image(heatmaps[2])
    assert vanished[..., 1].mean() < loud[..., 1].mean()


def test_shared_limits_take_whole_half_decades_of_finite_positive_norms():
    assert figures.shared_limits([[1e-3, 0.2], [[np.nan, 0.0], [-1.0, 5.0]]]) == (
        -3.0,
        1.0,
    )
    assert figures.shared_limits([[0.04]]) == (-1.5, -1.0)
    assert figures.shared_limits([[1.0]]) == (-0.5, 0.5)  # a single value
    assert figures.shared_limits([[np.nan, 0.0], [np.inf, -2.0]]) is None
    assert figures.shared_limits([]) is None


def test_monitor_heatmaps_without_any_finite_norm_keep_their_own_placeholder():
    pictures = _monitor_pictures({"rnn/level_0": np.full((2, 3), np.nan)})
    ax = pictures["heatmap/rnn/level_0"].axes[0]
    assert [t.get_text() for t in ax.texts] == ["no finite gradient norms"]
    assert ax.images[0].colorbar.ax.get_ylabel() == "log10 ||dL/dh_t||"


@pytest.mark.parametrize(
    "limits, extend", [((-2.0, -1.0), "both"), ((-4, 1), "neither"), ((-2, 1), "min")]
)
def test_heatmap_limits_set_the_colours_and_point_the_bar_past_them(
    norms, limits, extend
):
    image = figures.heatmap_figure(norms, limits=limits).axes[0].images[0]
    assert image.get_clim() == pytest.approx(limits)
    assert image.colorbar.extend == extend


@pytest.mark.parametrize(
    "limits", [(1, 1), (2, 1), (np.nan, 1), (0, np.inf), (0,), (0, 1, 2), "ab", 3]
)
def test_heatmap_rejects_bad_limits(norms, limits):
    with pytest.raises(
        ValueError,
        match=r"Argument `limits` must be two finite numbers `\(low, high\)` with "
        r"low < high\. Received: limits=",
    ):
        figures.heatmap_figure(norms, limits=limits)


@pytest.mark.parametrize(
    "matrices",
    [
        _sublayers(),
        {"rnn/level_0": np.full((2, 3), np.nan)},  # the "no data" note
        {"a/level_0": np.ones((400, 200)), "b/level_0": np.ones((1, 1))},
    ],
    ids=["three sublayers", "no data", "many steps"],
)
def test_pictures_are_readable_at_tensorboard_card_size(matrices):
    pictures = _monitor_pictures(matrices)
    for name, figure in pictures.items():
        height, width, _ = figures.to_image(figure).shape
        # Shown pixel for pixel in a Time Series card, not scaled down
        # (TensorBoard scales pixelated, dropping strokes of the letters);
        # the decay plot grows taller for a legend of more than two rows.
        assert width <= CARD_BOX[0], name
        assert height <= CARD_BOX[1] or name == "decay", name
        # Every text at least 11 px as rendered, and at least 8 px on a
        # card 280 px wide: a point is dpi / 72 px of a figure `width_in`
        # inches wide, shown SMALLEST_CARD / (dpi * width_in) times smaller.
        width_in = figure.get_figwidth()
        for text in _texts(figure):
            size = text.get_fontsize()
            assert size * 100 / 72 >= 11, (name, text.get_text(), size)
            assert size * SMALLEST_CARD / (72 * width_in) >= 8, (name, text, size)
        # Nothing drawn outside the picture.
        renderer = figure.canvas.get_renderer()
        boxes = [ax.get_tightbbox(renderer) for ax in figure.axes]
        boxes += [legend.get_window_extent(renderer) for legend in figure.legends]
        for box in boxes:
            assert box.x0 >= -1 and box.y0 >= -1, (name, box)
            assert box.x1 <= width + 1 and box.y1 <= height + 1, (name, box)


def test_a_long_sublayer_name_breaks_the_title_after_its_colon(norms):
    name = "bidirectional/forward_lstm/level_0"
    figure = figures.heatmap_figure(norms, name=name, horizon=30)
    ax = figure.axes[0]
    assert ax.get_title() == f"{name}:\nhorizon 30"
    figure.draw_without_rendering()
    box = ax.title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width
    short = figures.heatmap_figure(norms, name="rnn/level_0", horizon=30)
    assert short.axes[0].get_title() == "rnn/level_0: horizon 30"


def test_decay_legend_sits_below_the_axes_in_columns_that_fit():
    curves = {f"rnn/level_{i}": np.exp(-np.arange(5.0) * i) for i in range(4)}
    figure = figures.decay_figure(curves)
    figure.draw_without_rendering()
    (legend,) = figure.legends
    renderer = figure.canvas.get_renderer()
    box, axes_box = legend.get_window_extent(renderer), figure.axes[0].bbox
    assert box.y1 <= axes_box.y0  # below: it hides no line
    assert _legend_rows(figure) == 2  # short names share a row
    assert figure.get_size_inches() == pytest.approx(figures.FIGSIZE)
    long = {f"bidirectional/forward_lstm/level_{i}": [1.0, 0.1] for i in range(4)}
    tall = figures.decay_figure(long)
    assert _legend_rows(tall) == 4
    assert tall.get_figheight() == pytest.approx(figures.FIGSIZE[1] + 2 * 0.17)


def _legend_rows(figure):
    figure.draw_without_rendering()
    texts = figure.legends[0].get_texts()
    return len({round(t.get_window_extent().y0) for t in texts})


# The custom-scalars layout (written by summaries.write_layout).


def test_layout_names_every_series_one_chart_per_question():
    layout = summaries.layout()
    charts = [chart for category in layout.category for chart in category.chart]
    titles = [chart.title for chart in charts]
    assert len(set(titles)) == len(titles) and all(titles)
    # TensorBoard draws a category's margin charts after its multi-line
    # ones: the step's norm chart (the first question) has its own, first.
    first = layout.category[0]
    assert [c.WhichOneof("content") for c in first.chart] == ["margin"]
    (series,) = first.chart[0].margin.series
    assert (series.value, series.lower, series.upper) == (
        "gradients/applied_norm",
        "gradients/applied_norm",
        "gradients/global_norm",
    )
    assert "applied (line)" in first.chart[0].title
    assert "before clipping" in first.chart[0].title
    # Each multi-line chart names its lines (TensorBoard lists them, with
    # their markers, under "Matches") and matches the tags the monitor writes.
    written = {
        "gradient norm per layer": "gradients/norm/rnn",
        "gradient horizon per recurrent sublayer": "gradients/horizon/rnn/level_1",
        "gradient norm per level": "gradients/depth_ratio/rnn/level_0",
    }
    for category in layout.category[1:]:
        for chart in category.chart:
            assert chart.WhichOneof("content") == "multiline"
            assert chart.title.endswith("(lines named under Matches)")
            (prefix,) = [p for p in written if chart.title.startswith(p)]
            (regex,) = chart.multiline.tag
            assert re.fullmatch(regex, written.pop(prefix))
            assert not re.fullmatch(regex, "gradients/global_norm")
    assert not written


def test_layout_summary_holds_the_layout_tensorboard_reads(tmp_path):
    writer = summaries.GradientSummaries(tmp_path)
    writer._write(0, [summaries.layout_summary()])
    writer.close()
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "gradients"))
    accumulator.Reload()
    (event,) = accumulator.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)
    written = layout_pb2.Layout.FromString(tf.make_ndarray(event.tensor_proto).item())
    assert written == summaries.layout()
