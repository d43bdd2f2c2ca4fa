"""The `keras-seq` command: run the recipes, complete idioms, read runs.

    keras-seq list                                  the recipes
    keras-seq run NAME [options]                    run a recipe
    keras-seq complete "feeling under the" [-k 5]   next words from a model
    keras-seq report RUN_DIR                        a finished run's findings,
                                                    or a GradientMonitor's log_dir

Exit codes: 0 success, 1 failure, 2 bad usage; errors are one line on
stderr. `list`, `report` and `--help` do not import TensorFlow; `run` and
`complete` import it with its C++ start-up logging (CUDA probing, oneDNN
notices) kept off the terminal.
"""

import argparse
import ast
import importlib
import importlib.util
import json
import os
import pathlib
import pkgutil
import re
import sys
import tempfile
import warnings

from keras_seq import _command, runs
from keras_seq.runs import _shown

__all__ = ["main"]

_PROG = _command.COMMAND
_NEXT_WORD = "next_word"
# A word as the next_word recipe's vocabulary has it: lowercase letters and
# digits with inner apostrophes ("can't"); anything else separates words.
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
# absl's log line prefix, as TensorFlow's C++ code writes it:
# "I0000 00:00:1795586082.218975   29596 port.cc:153] ..."
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


class _Failure(Exception):
    """An error of a subcommand, printed as one line with its exit code."""

    def __init__(self, subcommand, message, code=1):
        super().__init__(message)
        self.subcommand = subcommand
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    """Runs the `keras-seq` command with `argv` (default: `sys.argv[1:]`)
    and returns its exit code: 0 success, 1 failure, 2 bad usage."""
    parser = _build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.subcommand is None:
            parser.print_help()
            return 2
        return args.handler(args)
    except SystemExit as exit_:  # argparse, --help, a recipe's parser
        return exit_.code if isinstance(exit_.code, int) else 1
    except _Failure as failure:
        print(f"{_PROG} {failure.subcommand}: error: {failure}", file=sys.stderr)
        return failure.code
    except BrokenPipeError:  # `keras-seq report ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, unless --traceback asks for more
        if args is not None and args.traceback:
            raise
        message = " ".join(str(error).split()) or "(no message)"
        if len(message) > 300:
            message = message[:297] + "..."
        print(
            f"{_PROG}: error: {type(error).__name__}: {message} "
            f"(`{_PROG} --traceback ...` shows where)",
            file=sys.stderr,
        )
        return 1


def _build_parser():
    parser = _Parser(
        prog=_PROG,
        description="Recipes, completions and run reports of keras-seq "
        "(recurrent models and their gradients through time, Keras 3).",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage. "
        f"`{_PROG} COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error, show the full traceback",
    )
    commands = parser.add_subparsers(
        dest="subcommand", metavar="COMMAND", parser_class=_Parser
    )

    listing = commands.add_parser(
        "list",
        help="the recipes, one line each with typical CPU runtime",
        description="The recipes, one line each: name, typical runtime on "
        "2 CPU cores, title. Run one with `keras-seq run NAME`.",
    )
    listing.set_defaults(handler=_list)

    run = commands.add_parser(
        "run",
        help="run a recipe",
        description="Runs a recipe: `keras-seq run NAME [options]`, the same "
        "options as the script (`keras-seq run NAME --help`). Common to all: "
        "--epochs, --batch-size, --log-dir, --seed, --smoke.",
        epilog=f"Recipes: {', '.join(_recipe_names()) or '(none found)'}.",
    )
    run.add_argument("name", metavar="NAME", help="the recipe (see `keras-seq list`)")
    run.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="the recipe's options",
    )
    run.set_defaults(handler=_run)

    complete = commands.add_parser(
        "complete",
        help="next-word completions from a trained next_word model",
        description="Completes a prompt with the most probable next words "
        "and their probabilities, from a model saved by `keras-seq run "
        "next_word` (default: the latest run under ./runs/next_word/).",
    )
    complete.add_argument("prompt", help='words to complete, e.g. "feeling under the"')
    complete.add_argument(
        "--model",
        type=pathlib.Path,
        metavar="PATH",
        help="a .keras file saved by next_word, or its run directory",
    )
    complete.add_argument(
        "-k",
        type=runs.positive_int,
        default=5,
        help="how many words to show, best first (default: %(default)s; "
        "1 prints only the best)",
    )
    complete.set_defaults(handler=_complete)

    report = commands.add_parser(
        "report",
        help="the gradient diagnosis and final figures of a finished run, "
        "or what a GradientMonitor wrote to its log_dir",
        description="Prints the final figures, the gradient diagnosis and the "
        "TensorBoard command of a finished run, from its files (no "
        "TensorFlow). RUN_DIR may also be a recipe's directory, e.g. "
        "runs/next_word: its latest run; or the log_dir of your own "
        "GradientMonitor(log_dir=...): the steps it recorded, the global "
        "gradient norm's range and its latest diagnosis.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", type=pathlib.Path)
    report.set_defaults(handler=_report)
    return parser


# -- list ---------------------------------------------------------------------


def _recipe_names():
    import keras_seq.recipes

    return sorted(
        info.name
        for info in pkgutil.iter_modules(keras_seq.recipes.__path__)
        if not info.name.startswith("_")
    )


def _recipe_docstring(name):
    """The docstring of a recipe, read from its source without importing it
    (importing a recipe imports TensorFlow)."""
    spec = importlib.util.find_spec(f"keras_seq.recipes.{name}")
    source = pathlib.Path(spec.origin).read_text(encoding="utf-8")
    return ast.get_docstring(ast.parse(source)) or ""


def _recipe_line(name):
    doc = _recipe_docstring(name)
    title = doc.splitlines()[0].strip() if doc else "(no docstring)"
    runtime = re.search(r"^Runtime:\s*(.+?)\s+on\s", doc, re.MULTILINE)
    return name, runtime.group(1) if runtime else "?", title


def _list(args):
    lines = [_recipe_line(name) for name in _recipe_names()]
    if not lines:
        raise _Failure("list", "no recipes found in keras_seq.recipes")
    width = max(len(name) for name, _, _ in lines)
    runtime_width = max(len(runtime) for _, runtime, _ in lines)
    for name, runtime, title in lines:
        print(f"{name:<{width}}  {runtime:<{runtime_width}}  {title}")
    return 0


# -- run ----------------------------------------------------------------------


def _run(args):
    names = _recipe_names()
    if args.name not in names:
        raise _Failure(
            "run", f"no recipe {args.name!r}; choose from: {', '.join(names)}", code=2
        )
    _import_keras_quietly()
    module = importlib.import_module(f"keras_seq.recipes.{args.name}")
    code = module.main(list(args.options))
    return 0 if code is None else int(code)


# -- complete -----------------------------------------------------------------


def _complete(args):
    words = _WORD.findall(args.prompt.lower().replace("\u2019", "'"))
    if not words:
        raise _Failure(
            "complete", f"the prompt has no words. Received: {args.prompt!r}", code=2
        )
    path = _next_word_model(args.model)
    keras = _import_keras_quietly()
    try:
        model = keras.saving.load_model(path)
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise _Failure("complete", f"cannot load {_shown(path)}: {message}") from None
    vocabulary, length, network = _reader(keras, model, path)
    context = words[-length:] if length else words
    unknown = sorted({word for word in context if word not in vocabulary})
    if unknown:
        print(
            "note: not in the model's vocabulary, read as unknown: "
            + ", ".join(unknown),
            file=sys.stderr,
        )
    ranked = _next_words(network, vocabulary, length, " ".join(context), args.k, path)
    width = max(len(word) for word, _ in ranked)
    for word, probability in ranked:
        print(f"{word:<{width}}  {probability:.3f}")
    return 0


def _reader(keras, model, path):
    """`(vocabulary, length, network)` of a next_word model: the network of
    token ids, the word of each id and how many ids it reads (None: any).

    A model saved on TensorFlow reads text (a `TextVectorization`, then the
    network); one saved elsewhere reads ids, with `vocabulary.json` beside
    it (`runs.Run.save(..., vocabulary=...)`)."""
    vectorizer = next(
        (
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.TextVectorization)
        ),
        None,
    )
    if vectorizer is not None:
        vocabulary = [str(word) for word in vectorizer.get_vocabulary()]
        length = vectorizer.get_config().get("output_sequence_length")
        network = keras.Sequential(model.layers[model.layers.index(vectorizer) + 1 :])
    else:
        listed = path.parent / runs._VOCABULARY_FILE
        if not listed.is_file():
            raise _Failure(
                "complete",
                f"{_shown(path)} is not a next_word model (it has no "
                "TextVectorization layer and no "
                f"{runs._VOCABULARY_FILE} beside it); train one with: "
                f"{_PROG} run {_NEXT_WORD}",
            )
        try:
            vocabulary = json.loads(listed.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise _Failure(
                "complete", f"cannot read {_shown(listed)}: {error}"
            ) from None
        import keras_seq.data.idioms

        try:
            keras_seq.data.idioms._check_vocabulary(vocabulary)
        except (TypeError, ValueError) as error:
            message = " ".join(str(error).split())[:200]
            raise _Failure(
                "complete", f"{_shown(listed)} is not a next_word vocabulary: {message}"
            ) from None
        shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
        length = shape[1] if shape is not None and len(shape) == 2 else None
        network = model
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    if outputs and outputs[0].shape[-1] != len(vocabulary):
        raise _Failure(
            "complete",
            f"{_shown(path)} outputs {outputs[0].shape[-1]} scores for "
            f"{len(vocabulary)} words: not a next_word model",
        )
    return vocabulary, length, network


def _next_words(network, vocabulary, length, prompt, k, path):
    """`keras_seq.data.next_words` on the network of token ids, given the
    prompt's last `length` words, padded after them."""
    import keras_seq.data

    try:
        return keras_seq.data.next_words(
            network, vocabulary, prompt, k=k, max_len=length, padding="post"
        )
    except ValueError as error:
        message = " ".join(str(error).split())[:200]
        raise _Failure(
            "complete", f"{_shown(path)} is not a next_word model: {message}"
        ) from None


def _next_word_model(path):
    """The .keras file to complete with: `path` (a file or a run
    directory), or the latest next_word run under ./runs."""
    if path is not None:
        if path.is_dir():
            path = path / runs._MODEL_FILE
        if not path.is_file():
            raise _Failure("complete", f"no model at {_shown(path)}", code=2)
        return path
    run_dir = runs.latest_run(pathlib.Path("runs", _NEXT_WORD))
    if run_dir is None or not (run_dir / runs._MODEL_FILE).is_file():
        raise _Failure(
            "complete",
            f"no trained {_NEXT_WORD} model under runs/{_NEXT_WORD}/ "
            f"(or pass --model PATH); train one with: {_PROG} run {_NEXT_WORD}",
        )
    return run_dir / runs._MODEL_FILE


# -- report -------------------------------------------------------------------


def _report(args):
    if not args.run_dir.exists():
        raise _Failure("report", f"no such directory: {args.run_dir}", code=2)
    run_dir = runs.latest_run(args.run_dir)
    try:
        if run_dir is not None:
            text = runs.describe(run_dir)
        elif runs._monitor_events(args.run_dir):
            text = runs.describe_log_dir(args.run_dir)
        else:
            raise _Failure(
                "report",
                f"{args.run_dir} is neither a finished run nor a "
                "GradientMonitor log_dir: expected a recipe run's "
                f"{runs._SUMMARY_FILE} (written when it ends) in it or in a "
                "subdirectory, or TensorBoard event files under "
                f"{args.run_dir / runs._MONITOR_RUN}/ (written by "
                "GradientMonitor(log_dir=...))",
            )
    except (OSError, ValueError) as error:
        raise _Failure("report", str(error)) from None
    print(text)
    return 0


# -- TensorFlow, quietly ------------------------------------------------------


def _import_keras_quietly():
    """Imports Keras (and TensorFlow, on its backend) and keras-seq's
    classes, keeping TensorFlow's C++ start-up logging off the terminal.

    `TF_CPP_MIN_LOG_LEVEL=3` (unless set) silences TensorFlow's later
    logging, but TensorFlow 2.19+ logs a few lines while loading (the absl
    preamble, oneDNN and CUDA notices) whatever it says
    (tensorflow/tensorflow#100442). So file descriptor 2 goes to a temporary
    file during the import; its lines come back to stderr unless they are
    absl log lines below that level.
    """
    warnings.showwarning = _show_warning
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # On another backend (KERAS_BACKEND=jax) TensorFlow is not imported at
    # all, and need not be installed.
    if os.environ["KERAS_BACKEND"] == "tensorflow" and "tensorflow" not in sys.modules:
        with _FilteredStderr(_min_log_level()):
            import tensorflow  # noqa: F401
    import keras

    import keras_seq

    keras_seq.layers  # noqa: B018 (loads keras-seq, registering its classes)
    return keras


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # One line, without the source line Python's format repeats.
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr if file is None else file)


def _min_log_level():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


class _FilteredStderr:
    def __init__(self, level):
        self.level = level

    def __enter__(self):
        sys.stderr.flush()
        try:
            self._saved = os.dup(2)
        except OSError:  # no file descriptor 2: nothing reaches a terminal
            self._saved = None
            return
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._capture.seek(0)
        text = self._capture.read().decode("utf-8", errors="replace")
        self._capture.close()
        kept = [line for line in text.splitlines(True) if self._keep(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False

    def _keep(self, line):
        if line.startswith(_ABSL_PREAMBLE):
            return self.level < 1
        match = _ABSL_LINE.match(line)
        return match is None or _SEVERITY[match.group(1)] >= self.level


def _version():
    from keras_seq.version import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
