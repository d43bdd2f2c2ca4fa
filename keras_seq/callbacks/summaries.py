"""The monitor's TensorBoard run, `<log_dir>/gradients`: one writer, the
tag scheme (see `GradientMonitor`'s docstring), the custom-scalars layout
and the `SessionLog.START` event that lets a resumed run replace the steps
it trains again.

Written with TensorBoard's own event writer and summary protos, with or
without TensorFlow installed (the same files on every backend)."""

import io
import pathlib
import socket
import time

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from keras_seq.callbacks import figures

# The tag group: every tag is `<GROUP>/<name>`. TensorBoard's Time Series
# dashboard sorts groups by name (digits and capitals before lower case) and
# opens the first two on a first visit.
GROUP = "gradients"
# Row columns written as scalars, by prefix (the rest: named in `scalars`).
SCALAR_PREFIXES = ("norm/", "horizon/", "decay/", "depth_ratio/")


class GradientSummaries:
    """Writes the monitor's summaries under `<log_dir>/gradients`.

    The file writer is created lazily (after the START event) and flushed
    every few seconds, at epoch ends, on non-finite steps and at `close`, so
    a crashed fit loses at most the last seconds of summaries.

    Args:
        log_dir: the monitor's log directory.
    """

    def __init__(self, log_dir):
        self.directory = pathlib.Path(log_dir) / "gradients"
        self._writer = None
        self._session_started = False
        self.layout_written = False

    def start_session(self, step):
        """Once per monitor, before the writer opens its file: a
        `SessionLog.START` at `step`. TensorBoard's readers take a run's
        first START as its beginning and every later one as a restart at
        its step (dropping what earlier files hold from there on)."""
        if not self._session_started:
            self._session_started = True
            write_session_start(self.directory, step)

    def writer(self, step=0):
        if self._writer is None:
            self.start_session(step)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(str(self.directory), flush_secs=5)
        return self._writer

    def _write(self, step, values):
        """One event at `step` holding `values` (`summary_pb2.Summary`s)."""
        self.writer(int(step)).add_event(event(step, values))

    def scalars(self, row, counts, histograms=None):
        """Write a record's scalars: `global_norm`, `applied_norm`, `loss`,
        the counts given (`{name: value}`), and every `SCALAR_PREFIXES`
        column; `histograms`: optional `{variable path: gradient}`."""
        row = dict(row, **counts)
        keys = (
            ("global_norm", "applied_norm", "loss")
            + tuple(counts)
            + tuple(k for k in row if k.startswith(SCALAR_PREFIXES))
        )
        if not self.layout_written:
            self._write(0, [layout_summary()])
            self.layout_written = True
        values = [
            scalar_summary.scalar_pb(f"{GROUP}/{key}", np.float32(row[key]))
            for key in keys
        ]
        values += [
            histogram_summary.histogram_pb(
                f"{GROUP}/values/{path}", np.asarray(gradient), buckets=30
            )
            for path, gradient in (histograms or {}).items()
        ]
        self._write(row["step"], values)
        self.flush()

    def epoch(self, step, diagnosis, pictures):
        """The diagnosis Markdown and the pictures (`{name: Figure}`)."""
        values = [text_summary.text_pb(f"{GROUP}/diagnosis", diagnosis)]
        values += [
            image_summary(f"{GROUP}/{name}", figures.to_image(figure))
            for name, figure in pictures.items()
        ]
        self._write(step, values)
        self.flush()

    def extra(self, step, scalars=None, texts=None):
        values = [
            scalar_summary.scalar_pb(tag, float(value))
            for tag, value in (scalars or {}).items()
        ]
        values += [
            text_summary.text_pb(tag, text) for tag, text in (texts or {}).items()
        ]
        self._write(step, values)
        self.flush()

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def event(step, values):
    """An `Event` at `step` holding the values of the `summary_pb2.Summary`s
    `values`, for TensorBoard's `EventFileWriter.add_event`."""
    summary = summary_pb2.Summary()
    for value in values:
        summary.value.extend(value.value)
    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)


def image_summary(tag, pixels):
    """A `Summary` holding one RGB image (`(height, width, 3)` uint8) as
    `tf.summary.image` writes it: a string tensor `[width, height, PNG]`
    for TensorBoard's images plugin."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    height, width = pixels.shape[:2]
    tensor = tensor_util.make_tensor_proto(
        np.array([str(width).encode(), str(height).encode(), buffer.getvalue()]),
        dtype="string",
    )
    metadata = image_metadata.create_summary_metadata(
        display_name=tag, description="", converted_to_tensor=True
    )
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata, tensor=tensor)
    return summary


def write_session_start(directory, step):
    """An event file holding `SessionLog(status=START)` at `step`. Readers
    with `purge_orphaned_data` (TensorBoard's default) take a run's first
    START as its beginning and drop, at each later one, the events at or
    after its step that earlier files hold: the steps a resumed run trains
    again. Named to sort after every earlier file and before the file this
    process's summary writer opens next (in the same second `.0-` sorts
    before a process id)."""
    now = time.time()
    events = [
        event_pb2.Event(wall_time=now, file_version="brain.Event:2"),
        event_pb2.Event(
            wall_time=now,
            step=int(step),
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
        ),
    ]
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.0-session-start"
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    with open(pathlib.Path(directory) / name, "wb") as file:
        writer = RecordWriter(file)
        for event in events:
            writer.write(event.SerializeToString())
        writer.flush()


def layout():
    """The custom-scalars layout, one chart per question, a
    `tensorboard.plugins.custom_scalar.layout_pb2.Layout`.

    TensorBoard 2.21 draws a chart's series in one colour per run and tells
    them apart by marker only, naming them in the collapsed "Matches" list
    under the chart (and in the tooltip). So the two norms of a step are
    one margin chart whose title names its parts, and each multi-line
    chart's title says what its lines are and where their names are. The
    margin chart has a category of its own because TensorBoard draws a
    category's margin charts after its multi-line charts.
    """
    from tensorboard.plugins.custom_scalar import layout_pb2

    def lines(title, name):
        return layout_pb2.Chart(
            title=f"{title} (lines named under Matches)",
            multiline=layout_pb2.MultilineChartContent(tag=[rf"{GROUP}/{name}/.*"]),
        )

    applied, total = f"{GROUP}/applied_norm", f"{GROUP}/global_norm"
    norm = layout_pb2.Chart(
        title="gradient norm applied (line); shaded up to the norm before clipping",
        margin=layout_pb2.MarginChartContent(
            series=[
                layout_pb2.MarginChartContent.Series(
                    value=applied, lower=applied, upper=total
                )
            ]
        ),
    )
    by_layer = [
        lines("gradient norm per layer", "norm"),
        lines("gradient horizon per recurrent sublayer, in time steps", "horizon"),
        lines("gradient norm per level / the top level's", "depth_ratio"),
    ]
    return layout_pb2.Layout(
        category=[
            layout_pb2.Category(title="keras-seq gradients: whole model", chart=[norm]),
            layout_pb2.Category(title="keras-seq gradients: by layer", chart=by_layer),
        ]
    )


def layout_summary():
    """`layout()` as the `Summary` TensorBoard's custom-scalars plugin reads
    (what `tensorboard.plugins.custom_scalar.summary.pb` builds, without
    the TensorFlow import that function makes)."""
    from tensorboard.plugins.custom_scalar import metadata

    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.CONFIG_SUMMARY_TAG,
        metadata=metadata.create_summary_metadata(),
        tensor=tensor_util.make_tensor_proto(
            np.array(layout().SerializeToString(), dtype=object), dtype="string"
        ),
    )
    return summary
