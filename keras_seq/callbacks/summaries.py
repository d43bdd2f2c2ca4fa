"""The monitor's TensorBoard run, `<log_dir>/gradients`: one writer, the
tag scheme (see `GradientMonitor`'s docstring), the custom-scalars layout
and the `SessionLog.START` event that lets a resumed run replace the steps
it trains again."""

import pathlib
import socket
import time

import numpy as np
import tensorflow as tf

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
        self._scalar_writers = {}  # column keys -> tf.function writing them

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
            self._writer = tf.summary.create_file_writer(
                str(self.directory), flush_millis=5000
            )
        return self._writer

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
        with self.writer().as_default(step=row["step"]):
            if not self.layout_written:
                write_layout()
                self.layout_written = True
            # One graph call per record instead of one eager op per scalar.
            write = self._scalar_writers.get(keys)
            if write is None:
                write = self._scalar_writers[keys] = _scalar_writer(keys)
            write(np.array([row[k] for k in keys], np.float32), np.int64(row["step"]))
            for path, gradient in (histograms or {}).items():
                tf.summary.histogram(f"{GROUP}/values/{path}", gradient)
        self.flush()

    def epoch(self, step, diagnosis, pictures):
        """The diagnosis Markdown and the pictures (`{name: Figure}`)."""
        with self.writer().as_default(step=step):
            tf.summary.text(f"{GROUP}/diagnosis", diagnosis)
            for name, figure in pictures.items():
                tf.summary.image(f"{GROUP}/{name}", figures.to_image(figure)[None])
        self.flush()

    def extra(self, step, scalars=None, texts=None):
        with self.writer(int(step)).as_default(step=int(step)):
            for tag, value in (scalars or {}).items():
                tf.summary.scalar(tag, float(value))
            for tag, text in (texts or {}).items():
                tf.summary.text(tag, text)
        self.flush()

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._scalar_writers.clear()  # they hold the closed writer


def write_session_start(directory, step):
    """An event file holding `SessionLog(status=START)` at `step`. Readers
    with `purge_orphaned_data` (TensorBoard's default) take a run's first
    START as its beginning and drop, at each later one, the events at or
    after its step that earlier files hold: the steps a resumed run trains
    again. Named to sort after every earlier file and before the file this
    process's summary writer opens next (in the same second `.0-` sorts
    before a process id)."""
    from tensorboard.compat.proto import event_pb2

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
    with tf.io.TFRecordWriter(str(pathlib.Path(directory) / name)) as writer:
        for event in events:
            writer.write(event.SerializeToString())


def _scalar_writer(keys):
    tags = [f"{GROUP}/{key}" for key in keys]

    @tf.function(reduce_retracing=True)
    def write(values, step):
        for i, tag in enumerate(tags):
            tf.summary.scalar(tag, values[i], step=step)

    return write


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


def write_layout():
    """Write `layout()` into the default summary writer, at step 0."""
    from tensorboard.plugins.custom_scalar import summary as custom_scalar

    tf.summary.experimental.write_raw_pb(
        custom_scalar.pb(layout()).SerializeToString(), step=0
    )
