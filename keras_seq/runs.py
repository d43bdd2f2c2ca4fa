"""Training runs from the command line: what every recipe shares.

A recipe (`keras-seq list`; the scripts in `recipes/`, installed as
`keras_seq.recipes`) is a script with a `main(argv=None) -> int`. It parses
the common options, starts a run, trains with `model.fit` and a
`keras_seq.callbacks.GradientMonitor`, saves what it trained and ends by
printing what it found:

    import keras
    import keras_seq
    from keras_seq import runs

    def main(argv=None):
        parser = runs.argument_parser("my_recipe", __doc__, epochs=20)
        args = parser.parse_args(argv)
        run = runs.start("my_recipe", args)
        model = ...
        monitor = keras_seq.callbacks.GradientMonitor(log_dir=run.dir)
        model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                  callbacks=[runs.tensorboard(run.dir), monitor])
        run.save(model, monitor)
        run.finish({"accuracy": accuracy})
        return 0

A finished run directory, `runs/<recipe>/<YYYYmmdd-HHMMSS>/` under the
current directory unless `--log-dir` says otherwise, holds:

    train/, validation/          the epoch metrics (`runs.tensorboard`)
    gradients/                   the GradientMonitor's event files
    figures/, <name>.png         pictures saved with `run.save_figure`
    model.keras                  the trained model
    gradients.parquet            monitor.to_frame(), one row per recorded step
    gradients_timesteps.parquet  monitor.timestep_frame()
    report.txt                   monitor.report(), the gradient diagnosis
    summary.json                 the final figures, the diagnosis per
                                 sublayer, the options, the paths above

A recipe that compares several models logs and saves each under a label:
`log_dir=run.log_dir("lstm")` for its callbacks and `run.save(model,
monitor, label="lstm")` write the same files in the subdirectory `lstm/`
(TensorBoard shows `lstm/train`, `lstm/gradients`, ...). `run.progress()`
is a callback printing one line per epoch, for `fit(..., verbose=0)`.
`keras-seq report RUN_DIR` prints what `Run.finish` printed, from these
files; for the `log_dir` of a user's own `GradientMonitor` it prints
`describe_log_dir(log_dir)`.

Errors: the parser prints bad options as one line on stderr and exits with
code 2 (never a traceback); a recipe reports bad data the same way with
`parser.error(message)`.

This module itself imports neither Keras nor TensorFlow, so that `keras-seq
list` and `keras-seq report` run without them; `start`, `Run.progress` and
`Run.save` import Keras.
"""

import argparse
import datetime
import json
import math
import numbers
import os
import pathlib
import re
import shlex
import shutil
import sys
import time

from keras_seq import _atomic
from keras_seq._command import COMMAND as _COMMAND
from keras_seq._command import started_by_command as _started_by_command

__all__ = [
    "Run",
    "argument_parser",
    "describe",
    "describe_log_dir",
    "latest_run",
    "positive_int",
    "shell_command",
    "start",
    "tensorboard",
    "tensorboard_command",
]

_SUMMARY_FILE = "summary.json"
_VOCABULARY_FILE = "vocabulary.json"
_MODEL_FILE = "model.keras"
_GRADIENTS_FILE = "gradients.parquet"
_REPORT_FILE = "report.txt"
_DEFAULT_LABEL = "model"
# What a GradientMonitor writes under its log_dir (see its docstring).
_MONITOR_RUN = "gradients"
_DIAGNOSIS_TAG = "gradients/diagnosis"
_GLOBAL_NORM_TAG = "gradients/global_norm"
_LOSS_TAG = "gradients/loss"
_EVENT_FILE = "events.out.tfevents."


def positive_int(text):
    """An `argparse` type: an integer >= 1.

    Example:

    >>> parser.add_argument("--units", type=keras_seq.runs.positive_int)
    """
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1. Received: {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1. Received: {text}")
    return value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer. Received: {text!r}"
        ) from None


class _RecipeParser(argparse.ArgumentParser):
    """One-line errors (exit code 2) and the `--smoke` epochs."""

    def __init__(self, *args, smoke_epochs, default_epochs, **kwargs):
        super().__init__(*args, **kwargs)
        self._smoke_epochs = smoke_epochs
        self._default_epochs = default_epochs

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args, extras = super().parse_known_args(args, namespace)
        if getattr(args, "epochs", 0) is None:
            args.epochs = self._smoke_epochs if args.smoke else self._default_epochs
        return args, extras


def argument_parser(name, description, *, epochs, batch_size=32, smoke_epochs=1):
    """Returns an `argparse.ArgumentParser` with the options every recipe has.

    `--epochs N`, `--batch-size N`, `--log-dir DIR` (default
    `runs/<name>/<timestamp>`), `--seed N` (default 0) and `--smoke` (tiny
    sizes, a few seconds: the recipe reads `args.smoke`; `--epochs` then
    defaults to `smoke_epochs`). Add the recipe's own options with
    `add_argument`. Errors (an unknown option, a bad value, or
    `parser.error(message)` for bad data) print one line on stderr,
    `<prog>: error: <message> (see --help)`, and exit with code 2.

    Args:
        name: The recipe's name, as in `keras-seq run <name>`.
        description: Shown by `--help`, usually the recipe's `__doc__`.
        epochs: Integer >= 1, the default of `--epochs`.
        batch_size: Integer >= 1 (default 32), the default of `--batch-size`.
        smoke_epochs: Integer >= 1 (default 1), `--epochs` with `--smoke`.

    Returns:
        The parser. `parse_args` gives `epochs`, `batch_size`, `log_dir`
        (a `pathlib.Path` or None), `seed` and `smoke`.
    """
    prog = f"{_COMMAND} run {name}" if _started_by_command() else f"{name}.py"
    parser = _RecipeParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        smoke_epochs=smoke_epochs,
        default_epochs=epochs,
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"training epochs (default: {epochs}; with --smoke: {smoke_epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        metavar="N",
        help="samples per training step (default: %(default)s)",
    )
    parser.add_argument(
        "--log-dir",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help=f"where the run writes (default: runs/{name}/<YYYYmmdd-HHMMSS>)",
    )
    parser.add_argument(
        "--seed",
        type=_int,
        default=0,
        metavar="N",
        help="random seed; a seed gives the same run on one machine "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks that everything runs",
    )
    return parser


class Run:
    """One training run of a recipe: its directory, saving and the summary.

    Made by `keras_seq.runs.start`. `save` writes a trained model and its
    monitor's frames and report; `finish` writes `summary.json` and prints
    the final figures, the gradient reports and the TensorBoard command.

    Attributes:
        name: The recipe's name.
        dir: `pathlib.Path` of the run directory (it exists).
        args: The parsed options (`argparse.Namespace`).
        started: `time.time()` at `start`.

    Example:

    >>> import keras_seq
    >>> parser = keras_seq.runs.argument_parser("demo", "A demo.", epochs=1)
    >>> run = keras_seq.runs.start("demo", parser.parse_args(["--log-dir", "d"]))
    demo: writing to d
    >>> summary = run.finish({"accuracy": 0.5})  # writes d/summary.json
    <BLANKLINE>
    demo: d, started ...
    """

    def __init__(self, name, directory, args):
        self.name = name
        self.dir = pathlib.Path(directory)
        self.args = args
        self.started = time.time()
        self._models = {}
        self._figures = {}

    def __repr__(self):
        return f"<keras_seq.runs.Run {self.name!r} in {str(self.dir)!r}>"

    def log_dir(self, label=None):
        """The directory of the model saved under `label`: the run directory
        itself for None, else its subdirectory `label` (created)."""
        if label is None:
            return self.dir
        _check_label(label)
        directory = self.dir / label
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def progress(self, every=1, label=None):
        """A Keras callback printing one line per `every` epochs (and the
        last, also when training stops early): the epoch, the logged
        metrics and the seconds since the fit began. Use it with
        `fit(..., verbose=0)` where Keras's progress bar would print two
        lines per short epoch.

        Args:
            every: Integer >= 1 (default 1).
            label: Optional prefix, e.g. the model's name.

        Returns:
            A `keras.callbacks.LambdaCallback`.
        """
        import keras

        started = []
        unprinted = []  # the last epoch's line, until printed
        prefix = f"{label}: " if label else ""

        def on_epoch_end(epoch, logs=None):
            total = callback.params.get("epochs")
            shown = "  ".join(f"{key} {value:.4g}" for key, value in logs.items())
            seconds = time.perf_counter() - started[-1]
            unprinted[:] = [
                f"{prefix}epoch {epoch + 1}/{total}  {shown}  ({seconds:.0f} s)"
            ]
            if (epoch + 1) % every == 0 or epoch + 1 == total:
                print(unprinted.pop())

        def on_train_end(logs=None):
            # A fit that stopped early (EarlyStopping, on_nan="stop") still
            # shows its last epoch.
            if unprinted:
                print(unprinted.pop())

        callback = keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs=None: started.append(time.perf_counter()),
            on_epoch_end=on_epoch_end,
            on_train_end=on_train_end,
        )
        return callback

    def save(self, model, monitor=None, label=None, vocabulary=None):
        """Saves a trained model and what its `GradientMonitor` recorded.

        Writes `model.keras`; with a vocabulary also `vocabulary.json`; with
        a monitor also `gradients.parquet`,
        `gradients_timesteps.parquet` (`monitor.save`) and `report.txt`
        (`monitor.report()`), in `log_dir(label)`, and keeps the diagnosis
        per sublayer for `summary.json`.

        Args:
            model: The trained `keras.Model`.
            monitor: Optional `keras_seq.callbacks.GradientMonitor` that
                watched its training.
            label: Optional name (letters, digits, `_`, `-`, `.`) for a run
                that trains several models; each label gets a subdirectory.
            vocabulary: Optional list of strings, the word of each token id
                the model reads, as `keras_seq.data.next_word_dataset`
                returns it (`""`, `"[UNK]"`, then the words): `keras-seq
                complete` reads a model of ids with it.

        Returns:
            `{"model": path, "gradients": path, ...}` of the files written.
        """
        if vocabulary is not None:
            from keras_seq.data import idioms  # imports Keras: only here

            idioms._check_vocabulary(vocabulary)
        directory = self.log_dir(label)
        files = {"model": directory / _MODEL_FILE}
        # Each file whole or not at all (keras_seq._atomic): a run killed
        # while saving leaves nothing torn for `keras-seq report` to read.
        with _atomic.replacing(files["model"]) as partial:
            model.save(partial)
        if vocabulary is not None:
            files["vocabulary"] = directory / _VOCABULARY_FILE
            _atomic.write_text(files["vocabulary"], json.dumps(list(vocabulary)) + "\n")
        entry = {}
        if monitor is not None:
            files["gradients"], files["timesteps"] = monitor.save(
                directory / _GRADIENTS_FILE
            )
            files["report"] = directory / _REPORT_FILE
            _atomic.write_text(files["report"], monitor.report() + "\n")
            entry.update(_diagnosis_entry(monitor.diagnosis()))
        entry["files"] = {
            kind: path.relative_to(self.dir).as_posix() for kind, path in files.items()
        }
        self._models[label or _DEFAULT_LABEL] = entry
        return files

    def save_figure(self, figure, name, step=0):
        """Saves a matplotlib figure as `<name>.png` in the run directory
        and as the image `figures/<name>` of the TensorBoard run
        `<run dir>/figures` (Images tab), at training step `step`.

        Args:
            figure: A `matplotlib.figure.Figure`.
            name: Its file and tag name (letters, digits, `_`, `-`, `.`).
            step: Integer, the step TensorBoard shows it at (default 0).

        Returns:
            The `pathlib.Path` of the PNG file.
        """
        import numpy as np

        from keras_seq.callbacks.summaries import image_summary

        _check_label(name)
        path = self.dir / f"{name}.png"
        with _atomic.replacing(path) as partial:
            figure.savefig(partial, dpi=100, bbox_inches="tight")
        figure.canvas.draw()
        pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
        # TensorBoard's own writer: the image `tf.summary.image` would write,
        # with or without TensorFlow.
        _write_summaries(
            self.dir / "figures", int(step), [image_summary(f"figures/{name}", pixels)]
        )
        self._figures[name] = path.name
        return path

    def finish(self, figures, tables=None, notes=(), commands=()):
        """Writes `summary.json` and prints the run's description.

        Args:
            figures: `{name: number or string}`, the final figures.
            tables: Optional `{title: pandas.DataFrame or list of dicts}`,
                comparison tables (printed with their titles).
            notes: Sentences printed after the figures, to say what the
                numbers mean (for example that a run was too short).
            commands: Optional shell commands to go on with, each a string
                or a `(command, comment)` pair (see `shell_command`),
                printed last under "Go on with:" in place of the
                TensorBoard line (which `keras-seq report` keeps). Include
                `tensorboard_command(run.dir)` where it belongs; it is
                added last otherwise. Not saved: they name paths from the
                current directory.

        Returns:
            The summary, as written to `summary.json`.
        """
        summary = {
            "recipe": self.name,
            "started": datetime.datetime.fromtimestamp(self.started).isoformat(
                timespec="seconds"
            ),
            "seconds": round(time.time() - self.started, 1),
            "keras_seq_version": _version(),
            "arguments": {
                key: _plain(value)
                for key, value in sorted(vars(self.args).items())
                if not key.startswith("_")
            },
            "figures": {str(key): _plain(value) for key, value in figures.items()},
            "tables": {
                str(title): _records(table) for title, table in (tables or {}).items()
            },
            "notes": [str(note) for note in notes],
            "models": self._models,
            "pictures": dict(self._figures),
        }
        text = json.dumps(summary, indent=2, allow_nan=True) + "\n"
        _atomic.write_text(self.dir / _SUMMARY_FILE, text)
        print()
        print(describe(self.dir, commands=commands))
        return summary


def tensorboard(log_dir):
    """A Keras callback writing the epoch metrics for TensorBoard under
    `log_dir` (`train/`, `validation/`: tags `epoch_loss`, ...).

    On TensorFlow it is `keras.callbacks.TensorBoard(log_dir)`. On other
    backends, whose Keras `TensorBoard` callback needs TensorFlow, it writes
    the same epoch scalars with TensorBoard's own event writer (no graph,
    histograms or batch-level summaries).

    Args:
        log_dir: The directory, e.g. `run.dir` or `run.log_dir(label)`.

    Returns:
        A `keras.callbacks.Callback`.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return keras.callbacks.TensorBoard(log_dir=log_dir)
    return _epoch_scalars_callback(keras)(log_dir)


def _epoch_scalars_callback(keras):
    class EpochScalars(keras.callbacks.Callback):
        """Keras's TensorBoard epoch scalars without TensorFlow."""

        def __init__(self, log_dir):
            super().__init__()
            self.log_dir = pathlib.Path(log_dir)
            self._writers = {}

        def on_epoch_end(self, epoch, logs=None):
            from tensorboard.plugins.scalar import summary_v2 as scalar_summary
            from tensorboard.summary.writer.event_file_writer import (
                EventFileWriter,
            )

            from keras_seq.callbacks.summaries import event

            runs = {}
            for key, value in (logs or {}).items():
                validation = key.startswith("val_")
                run = "validation" if validation else "train"
                name = key[4:] if validation else key
                runs.setdefault(run, []).append(
                    scalar_summary.scalar_pb(f"epoch_{name}", float(value))
                )
            for run, values in runs.items():
                if run not in self._writers:
                    directory = self.log_dir / run
                    directory.mkdir(parents=True, exist_ok=True)
                    self._writers[run] = EventFileWriter(str(directory))
                self._writers[run].add_event(event(epoch, values))
                self._writers[run].flush()

        def on_train_end(self, logs=None):
            for writer in self._writers.values():
                writer.close()
            self._writers = {}

    return EpochScalars


def _write_summaries(directory, step, values):
    """One event file in `directory` holding one event at `step` with the
    `summary_pb2.Summary`s `values` (TensorBoard's writer, no TensorFlow)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from keras_seq.callbacks.summaries import event

    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory))
    writer.add_event(event(step, values))
    writer.close()


def start(name, args):
    """Starts a run: seeds every generator and creates the run directory.

    Calls `keras.utils.set_random_seed(args.seed)` (Python, NumPy and
    TensorFlow), creates `args.log_dir`, or else
    `runs/<name>/<YYYYmmdd-HHMMSS>` in the current directory, and prints
    where the run writes. A directory that cannot be created is one line on
    stderr and exit code 2.

    Args:
        name: The recipe's name.
        args: The options parsed by `argument_parser(name, ...)`.

    Returns:
        A `keras_seq.runs.Run`.
    """
    import keras

    _check_label(name)
    if args.log_dir is not None:
        directory = pathlib.Path(args.log_dir)
    else:
        directory = pathlib.Path("runs", name, time.strftime("%Y%m%d-%H%M%S"))
        base, n = directory, 1
        while directory.exists():  # two runs in one second
            n += 1
            directory = base.with_name(f"{base.name}-{n}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        prog = f"{_COMMAND} run {name}" if _started_by_command() else f"{name}.py"
        reason = error.strerror or str(error)
        print(
            f"{prog}: error: cannot write the run directory {str(directory)!r}: "
            f"{reason} (choose another with --log-dir)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    keras.utils.set_random_seed(args.seed)
    print(f"{name}: writing to {_shown(directory)}")
    return Run(name, directory, args)


def latest_run(directory):
    """The most recently finished run in `directory`, or None.

    Args:
        directory: A recipe's directory of runs, such as `runs/next_word`,
            or a run directory itself.

    Returns:
        The `pathlib.Path` of `directory` if it holds a `summary.json`,
        else of its subdirectory whose `summary.json` was written last, or
        None when there is none.
    """
    directory = pathlib.Path(directory)
    if (directory / _SUMMARY_FILE).is_file():
        return directory
    if not directory.is_dir():
        return None
    finished = [
        child
        for child in directory.iterdir()
        if child.is_dir() and (child / _SUMMARY_FILE).is_file()
    ]
    if not finished:
        return None
    return max(finished, key=lambda child: (child / _SUMMARY_FILE).stat().st_mtime)


def describe(run_dir, *, commands=()):
    """The description of a finished run, read from its files.

    What `Run.finish` printed at the end of the run: the recipe and its
    options, the final figures, the tables and notes, each model's gradient
    report, and the command that opens the run in TensorBoard.

    Args:
        run_dir: A run directory, holding `summary.json`.
        commands: Optional commands to go on with (strings or `(command,
            comment)` pairs), shown last under "Go on with:" instead of
            the TensorBoard line; the TensorBoard command is added last
            when none of them is it.

    Returns:
        A string.

    Raises:
        FileNotFoundError: if `run_dir` has no `summary.json`.
        ValueError: if `summary.json` is not a run summary.
    """
    run_dir = pathlib.Path(run_dir)
    summary_path = run_dir / _SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{_shown(run_dir)} is not a finished run: it has no {_SUMMARY_FILE} "
            "(a run writes it when it ends)"
        )
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        recipe = summary["recipe"]
        figures = summary["figures"]
        models = summary["models"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{_shown(summary_path)} is not a keras-seq run summary "
            f"({type(error).__name__}: {error})"
        ) from None

    lines = [
        f"{recipe}: {_shown(run_dir)}, started {summary.get('started', '?')}, "
        f"{summary.get('seconds', '?')} s",
    ]
    arguments = summary.get("arguments") or {}
    if arguments:
        shown = ", ".join(f"{key}={value}" for key, value in arguments.items())
        lines.append(f"options: {shown}")
    lines += ["", "Final figures:"]
    width = max((len(key) for key in figures), default=0)
    for key, value in figures.items():
        lines.append(f"  {key:<{width}}  {_format_value(value)}")
    for title, rows in (summary.get("tables") or {}).items():
        lines += ["", f"{title}:", _format_table(rows)]
    notes = summary.get("notes") or []
    if notes:
        lines.append("")
        lines += [f"Note: {note}" for note in notes]
    for label, entry in models.items():
        report = (entry.get("files") or {}).get("report")
        if report is None:
            continue
        heading = "Gradients" if len(models) == 1 else f"Gradients of {label}"
        try:
            text = (run_dir / report).read_text(encoding="utf-8").rstrip()
        except OSError:
            text = f"(missing: {report})"
        lines += ["", f"{heading} ({report}):", text]
    pictures = summary.get("pictures") or {}
    if pictures:
        lines.append("")
        lines += [
            f"Picture {name}: {_shown(run_dir / file)}"
            for name, file in pictures.items()
        ]
    tensorboard = tensorboard_command(run_dir)
    if not commands:
        lines += ["", f"TensorBoard: {tensorboard}"]
        return "\n".join(lines)
    pairs = [(c, "") if isinstance(c, str) else tuple(c) for c in commands]
    if tensorboard not in (command for command, _ in pairs):
        pairs.append((tensorboard, ""))
    width = max((len(command) for command, comment in pairs if comment), default=0)
    lines += ["", "Go on with:"]
    lines += [
        f"  {command:<{width}}  # {comment}" if comment else f"  {command}"
        for command, comment in pairs
    ]
    return "\n".join(lines)


def _monitor_events(log_dir):
    """The TensorBoard event files a `GradientMonitor` wrote under
    `log_dir` (its run `<log_dir>/gradients`, or `log_dir` itself when it
    is that run), in the order TensorBoard reads them; [] when none."""
    log_dir = pathlib.Path(log_dir)
    for directory in (log_dir / _MONITOR_RUN, log_dir):
        if directory.name == _MONITOR_RUN and directory.is_dir():
            files = sorted(
                path
                for path in directory.iterdir()
                if path.name.startswith(_EVENT_FILE) and path.is_file()
            )
            if files:
                return files
    return []


def describe_log_dir(log_dir):
    """What a `GradientMonitor(log_dir=...)` wrote, read back from its
    TensorBoard event files (no TensorFlow needed).

    The recorded steps, the range of the global gradient norm, the last
    loss it saw, the latest `gradients/diagnosis` text (written at each
    epoch end) and the command that opens `log_dir` in TensorBoard. A
    restart's `SessionLog.START` at step s drops what earlier files hold
    from step s on, as TensorBoard does.

    Args:
        log_dir: The monitor's `log_dir`, or its `gradients` directory.

    Returns:
        A string.

    Raises:
        FileNotFoundError: if `log_dir` holds no monitor event files.
    """
    log_dir = pathlib.Path(log_dir)
    files = _monitor_events(log_dir)
    if not files:
        raise FileNotFoundError(
            f"{_shown(log_dir)} holds no GradientMonitor log: expected "
            f"TensorBoard event files under {_shown(log_dir / _MONITOR_RUN)}/ "
            "(what GradientMonitor(log_dir=...) writes)"
        )
    if log_dir.name == _MONITOR_RUN and not (log_dir / _MONITOR_RUN).is_dir():
        log_dir = log_dir.parent  # the user named the monitor's own run
    points = _read_monitor_events(files)
    norms = [(step, value) for tag, step, value in points if tag == _GLOBAL_NORM_TAG]
    losses = [value for tag, _, value in points if tag == _LOSS_TAG]
    diagnoses = [(step, value) for tag, step, value in points if tag == _DIAGNOSIS_TAG]

    lines = [f"GradientMonitor log: {_shown(log_dir)}"]
    if norms:
        steps = [step for step, _ in norms]
        finite = [value for _, value in norms if math.isfinite(value)]
        shown_range = (
            f"{min(finite):.4g} to {max(finite):.4g}" if finite else "never finite"
        )
        if len(finite) < len(norms):
            shown_range += f" ({len(norms) - len(finite)} non-finite)"
        lines += [
            f"  recorded steps  {len(norms)} (first {steps[0]}, last {steps[-1]})",
            f"  global norm     {shown_range} (last {norms[-1][1]:.4g})",
        ]
        if losses:
            lines.append(f"  loss            {losses[-1]:.4g} (last recorded step)")
    else:
        lines.append("  nothing recorded yet")
    lines.append("")
    if diagnoses:
        step, text = diagnoses[-1]
        lines += [
            f"Latest diagnosis (step {step}, {_DIAGNOSIS_TAG}):",
            re.sub(r"\*\*(.+?)\*\*", r"\1", text).rstrip(),
        ]
    else:
        lines.append(
            f"No diagnosis yet: the monitor writes {_DIAGNOSIS_TAG} at each epoch end."
        )
    lines += ["", f"TensorBoard: {tensorboard_command(log_dir)}"]
    return "\n".join(lines)


def _read_monitor_events(files):
    """(tag, step, value) of the monitor's scalars and texts, in order,
    without the steps a later `SessionLog.START` ran again. A torn last
    record (a killed process) ends its file."""
    # TensorBoard's own reader and protos, without TensorFlow (its
    # `tensorboard.compat.tf` would import TensorFlow when installed).
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    from tensorboard.util import tensor_util

    tags = (_GLOBAL_NORM_TAG, _LOSS_TAG, _DIAGNOSIS_TAG)
    points = []
    for path in files:
        reader = pywrap_tensorflow.PyRecordReader_New(str(path), 0, None, None)
        while True:
            try:
                reader.GetNext()
            except (errors.OutOfRangeError, errors.DataLossError):
                break
            event = event_pb2.Event.FromString(reader.record())
            if (
                event.HasField("session_log")
                and event.session_log.status == event_pb2.SessionLog.START
            ):
                points = [point for point in points if point[1] < event.step]
            for value in event.summary.value:
                if value.tag not in tags or not value.HasField("tensor"):
                    continue
                array = tensor_util.make_ndarray(value.tensor)
                item = array.reshape(-1)[0]
                if value.tag != _DIAGNOSIS_TAG:
                    item = float(item)
                elif isinstance(item, bytes):
                    item = item.decode("utf-8", "replace")
                points.append((value.tag, int(event.step), item))
    return points


def tensorboard_command(log_dir):
    """The shell command that opens `log_dir` in TensorBoard (see
    `shell_command`)."""
    return shell_command("tensorboard", "--logdir", _shown(log_dir))


def shell_command(program, *args):
    """A command line that runs `program` of this Python environment.

    `program` itself when the one on PATH is this environment's, else its
    path (relative when inside the current directory), e.g.
    `.venv/bin/keras-seq` in a virtual environment that is not activated.

    Example:

    >>> keras_seq.runs.shell_command("keras-seq", "complete", "break the")
    "keras-seq complete 'break the'"
    """
    executable = program
    beside = pathlib.Path(sys.executable).parent / program
    on_path = shutil.which(program)
    if beside.exists() and (
        on_path is None or pathlib.Path(on_path).resolve() != beside.resolve()
    ):
        executable = _shown(beside)
    return shlex.join([executable, *map(str, args)])


def _shown(path):
    """A path as the user would type it: relative to the current directory
    when it is inside it."""
    path = pathlib.Path(path)
    try:
        return str(path.absolute().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def _check_label(label):
    if (
        not isinstance(label, str)
        or not label
        or label.startswith(".")
        or not all(c.isalnum() or c in "_-." for c in label)
    ):
        raise ValueError(
            "Argument `label` must be a non-empty string of letters, digits, "
            f"'_', '-' or '.' (not starting with '.'). Received: label={label!r}"
        )


def _diagnosis_entry(diagnosis):
    return {
        "step": diagnosis.step,
        "healthy": bool(diagnosis.healthy),
        "diagnosis": {
            name: {
                "timesteps": int(d.timesteps),
                "horizon": int(d.horizon),
                "decay": _plain(d.decay),
                "fall": _plain(d.fall),
                "growth": _plain(d.growth),
                "verdict": d.verdict,
                "evidence": d.evidence,
            }
            for name, d in diagnosis.sublayers.items()
        },
    }


def _plain(value):
    """A JSON-friendly copy: numbers, strings, lists, dicts; paths as str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _plain(value.item())  # numpy scalars that are not numbers.*
    return str(value)


def _records(table):
    if hasattr(table, "to_dict"):  # a pandas DataFrame
        table = table.to_dict(orient="records")
    return [{str(k): _plain(v) for k, v in row.items()} for row in table]


def _format_value(value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _format_table(rows):
    """Aligned columns: numbers to the right, everything else to the left."""
    if not rows:
        return "  (empty)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    numeric = [
        all(
            isinstance(row.get(c), numbers.Real) and not isinstance(row.get(c), bool)
            for row in rows
        )
        for c in columns
    ]
    cells = [[_format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [
        max(len(column), *(len(r[i]) for r in cells))
        for i, column in enumerate(columns)
    ]

    def line(values):
        return (
            "  "
            + "  ".join(
                v.rjust(w) if right else v.ljust(w)
                for v, w, right in zip(values, widths, numeric)
            ).rstrip()
        )

    return "\n".join([line(columns)] + [line(r) for r in cells])


def _version():
    from keras_seq.version import __version__

    return __version__
