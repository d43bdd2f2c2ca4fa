"""The `keras-seq` command, through its installed console script."""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_seq
from keras_seq import cli
from keras_seq.recipes import next_word

# A model that reads text through keras.layers.TextVectorization needs
# TensorFlow (on every backend); next_word saves one there only.
needs_text_vectorization = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TextVectorization needs TensorFlow",
)
# A 15-epoch next_word training (~40 s) runs on TensorFlow only: what its
# tests check past the smoke run's (the command's choice of run, the
# ranking) does not depend on the backend; on JAX the smoke run's model
# of ids completes through vocabulary.json.
needs_trained_run = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the trained run's checks are backend-neutral (suite time)",
)

COMMAND = pathlib.Path(sys.executable).parent / "keras-seq"
# What TensorFlow prints while it starts: absl log lines, CUDA and oneDNN.
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuda|cuInit", re.M)


def keras_seq_command(*args, cwd=None, importtime=False):
    """Runs the installed `keras-seq` as a user would, without the test
    suite's TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    prefix = [sys.executable, "-X", "importtime"] if importtime else []
    return subprocess.run(
        [*prefix, str(COMMAND), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def imported_tensorflow(importtime_stderr):
    return re.search(r"\|\s+tensorflow$", importtime_stderr, re.M) is not None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`keras-seq run next_word --smoke` through the console script, in a
    fresh directory: it writes runs/next_word/<timestamp>/ there."""
    cwd = tmp_path_factory.mktemp("smoke")
    result = keras_seq_command("run", "next_word", "--smoke", cwd=cwd)
    (run_dir,) = (cwd / "runs" / "next_word").iterdir()
    return result, run_dir


def readme_block_after(sentence):
    """The lines of the README's first code block after `sentence`."""
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    found = re.search(r"\s+".join(map(re.escape, sentence.split())), text)
    assert found, f"README.md no longer says {sentence!r}"
    block = text[found.end() :].split("```", 2)[1]
    return block.splitlines()[1:]  # without the ```bash line


def command_and_comment(line):
    """The words of a shell line (whatever the quoting) and its comment."""
    words = shlex.split(line, comments=False)
    if "#" in words:
        at = words.index("#")
        return words[:at], " ".join(words[at + 1 :])
    return words, ""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short real next_word training (15 epochs, ~10 s), in process."""
    run_dir = tmp_path_factory.mktemp("trained")
    assert next_word.main(["--epochs", "15", "--log-dir", str(run_dir)]) == 0
    keras.utils.clear_session()
    return run_dir


@pytest.mark.parametrize("args", [[], ["list"], ["run"], ["complete"], ["report"]])
def test_help_everywhere(args):
    result = keras_seq_command(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: keras-seq {' '.join(args)}".rstrip())
    assert result.stderr == ""


def test_no_command_shows_the_help_and_is_bad_usage():
    result = keras_seq_command()
    assert result.returncode == 2
    assert "usage: keras-seq" in result.stdout and "list" in result.stdout


def test_version():
    result = keras_seq_command("--version")
    assert (result.returncode, result.stdout) == (
        0,
        f"keras-seq {keras_seq.__version__}\n",
    )


def test_bad_usage_is_one_line_and_code_2():
    one_line_error(keras_seq_command("bogus"), 2, "keras-seq: error: argument COMMAND")
    one_line_error(
        keras_seq_command("run", "nope"),
        2,
        "keras-seq run: error: no recipe 'nope'; choose from: adding_problem,",
    )
    one_line_error(keras_seq_command("complete", "a", "-k", "0"), 2, "argument -k")


def test_list_shows_every_recipe_with_its_runtime_without_tensorflow():
    result = keras_seq_command("list", importtime=True)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(names) and {"next_word", "adding_problem"} <= set(names)
    for line in lines:
        name, runtime, title = re.match(r"(\S+)\s+(~\S+ \S+)\s+(.+)$", line).groups()
        assert name in cli._recipe_names() and title.endswith(".")
    assert not imported_tensorflow(result.stderr)


def test_run_trains_and_prints_without_tensorflow_noise(smoke_run):
    result, run_dir = smoke_run
    assert result.returncode == 0, result.stderr
    assert not NOISE.search(result.stderr), result.stderr
    assert "Final figures:" in result.stdout
    assert "Gradient diagnosis at step" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["recipe"] == "next_word" and summary["arguments"]["smoke"]


def test_run_ends_with_the_commands_the_readme_shows(smoke_run):
    result, run_dir = smoke_run
    assert result.returncode == 0, result.stderr
    printed = result.stdout.rstrip().splitlines()
    readme = readme_block_after("It ends with the commands to go on:")
    assert printed[-len(readme) - 1] == "Go on with:"
    bin_dir = str(COMMAND.parent)
    timestamp = run_dir.name
    assert re.fullmatch(r"\d{8}-\d{6}", timestamp)
    for shown, documented in zip(printed[-len(readme) :], readme):
        # The README runs them from the checkout: .venv/bin/..., and says
        # <timestamp> for the run's directory.
        documented = documented.replace(".venv/bin", bin_dir)
        documented = documented.replace("<timestamp>", timestamp)
        command, comment = command_and_comment(shown)
        expected_command, expected_comment = command_and_comment(documented)
        assert command == expected_command
        assert bool(comment) == bool(expected_comment)
        if "complete" not in command:  # its comment shows the run's words
            assert comment == expected_comment


def test_run_passes_bad_options_back_as_one_line(tmp_path):
    result = keras_seq_command("run", "next_word", "--epochs", "0", cwd=tmp_path)
    one_line_error(
        result,
        2,
        "keras-seq run next_word: error: argument --epochs: must be an integer "
        ">= 1. Received: 0 (see --help)",
    )
    assert not NOISE.search(result.stderr)


def test_report_prints_the_run_without_tensorflow(smoke_run):
    _, run_dir = smoke_run
    result = keras_seq_command("report", str(run_dir), importtime=True)
    assert result.returncode == 0
    assert result.stdout == keras_seq.runs.describe(run_dir) + "\n"
    assert "top1_accuracy" in result.stdout
    assert (run_dir / "report.txt").read_text().strip() in result.stdout
    assert not imported_tensorflow(result.stderr)


def test_report_of_a_recipe_directory_is_its_latest_run(smoke_run, tmp_path):
    _, run_dir = smoke_run
    shutil.copytree(run_dir, tmp_path / "20000101-000000")
    result = keras_seq_command("report", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.startswith(f"next_word: {tmp_path / '20000101-000000'},")


@pytest.fixture(scope="module")
def monitor_log(tmp_path_factory):
    """A user's own tiny fit with `GradientMonitor(log_dir=..., every=1)`:
    two epochs of two steps (~3 s)."""
    log_dir = tmp_path_factory.mktemp("monitor") / "logs"
    x = np.random.default_rng(0).random((8, 6, 2), dtype=np.float32)
    model = keras.Sequential(
        [keras.Input((6, 2)), keras_seq.layers.SharedRNN(4), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = keras_seq.callbacks.GradientMonitor(log_dir=log_dir, every=1)
    model.fit(x, x[:, -1, :1], epochs=2, batch_size=4, verbose=0, callbacks=[monitor])
    frame, diagnosis = monitor.to_frame(), monitor.diagnosis().markdown()
    keras.utils.clear_session()
    return log_dir, frame, diagnosis


def test_report_of_a_monitor_log_dir_without_tensorflow(monitor_log):
    log_dir, frame, diagnosis = monitor_log
    result = keras_seq_command("report", str(log_dir), importtime=True)
    assert result.returncode == 0, result.stderr
    assert not imported_tensorflow(result.stderr)
    norms = frame["global_norm"]
    summary, latest = result.stdout.split("\n\nLatest diagnosis (step 3, ", 1)
    assert summary.splitlines() == [
        f"GradientMonitor log: {log_dir}",
        "  recorded steps  4 (first 0, last 3)",
        f"  global norm     {norms.min():.4g} to {norms.max():.4g} "
        f"(last {norms.iloc[-1]:.4g})",
        f"  loss            {frame['loss'].iloc[-1]:.4g} (last recorded step)",
    ]
    assert list(frame["step"]) == [0, 1, 2, 3]
    # The Markdown of the last epoch's end, without its bold markers.
    text, tensorboard = latest.split("\n\nTensorBoard: ")
    assert text == "gradients/diagnosis):\n" + diagnosis.replace("**", "").rstrip()
    assert tensorboard.rstrip().endswith(f"--logdir {log_dir}")
    # The monitor's own run directory reads the same.
    again = keras_seq_command("report", str(log_dir / "gradients"))
    assert again.stdout == result.stdout


def test_report_of_a_monitor_log_dir_started_over(monitor_log, tmp_path, capsys):
    log_dir, _, _ = monitor_log
    shutil.copytree(log_dir, tmp_path / "logs")
    # A fresh run in the same log_dir starts over from step 0 (a START at
    # step 0, written in a later file): nothing of the first one shows.
    x = np.random.default_rng(1).random((4, 6, 2), dtype=np.float32)
    model = keras.Sequential(
        [keras.Input((6, 2)), keras_seq.layers.SharedRNN(4), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = keras_seq.callbacks.GradientMonitor(log_dir=tmp_path / "logs", every=1)
    model.fit(x, x[:, -1, :1], epochs=1, batch_size=4, verbose=0, callbacks=[monitor])
    keras.utils.clear_session()
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "  recorded steps  1 (first 0, last 0)\n" in out
    assert "Latest diagnosis (step 0, " in out


def test_report_errors(tmp_path):
    one_line_error(
        keras_seq_command("report", str(tmp_path / "nope")),
        2,
        "keras-seq report: error: no such directory",
    )
    (tmp_path / "train").mkdir()  # keras.callbacks.TensorBoard's, say
    one_line_error(
        keras_seq_command("report", str(tmp_path)),
        1,
        f"keras-seq report: error: {tmp_path} is neither a finished run nor a "
        "GradientMonitor log_dir: expected a recipe run's summary.json",
        f"or TensorBoard event files under {tmp_path / 'gradients'}/",
    )
    (tmp_path / "summary.json").write_text("{broken")
    one_line_error(
        keras_seq_command("report", str(tmp_path)),
        1,
        "summary.json is not a keras-seq run summary",
    )


def test_complete_prints_k_words_with_probabilities(smoke_run):
    _, run_dir = smoke_run
    result = keras_seq_command(
        "complete", "break the", "--model", str(run_dir), "-k", "3"
    )
    assert result.returncode == 0, result.stderr
    assert not NOISE.search(result.stderr), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    probabilities = [float(line.split()[-1]) for line in lines]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities)


def test_complete_without_a_model_says_how_to_train_one(tmp_path):
    one_line_error(
        keras_seq_command("complete", "feeling under the", cwd=tmp_path),
        1,
        "no trained next_word model under runs/next_word/",
        "train one with: keras-seq run next_word",
    )
    one_line_error(
        keras_seq_command("complete", "x", "--model", str(tmp_path / "m.keras")),
        2,
        "keras-seq complete: error: no model at",
    )
    one_line_error(keras_seq_command("complete", " ?! "), 2, "the prompt has no words")


def test_complete_refuses_a_model_that_is_not_next_word(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "other.keras")
    code = cli.main(["complete", "a b", "--model", str(tmp_path / "other.keras")])
    assert code == 1
    assert capsys.readouterr().err == (
        f"keras-seq complete: error: {tmp_path / 'other.keras'} is not a "
        "next_word model (it has no TextVectorization layer and no "
        "vocabulary.json beside it); train one with: keras-seq run next_word\n"
    )
    (tmp_path / "vocabulary.json").write_text('["", "[UNK]", 3]')
    code = cli.main(["complete", "a b", "--model", str(tmp_path / "other.keras")])
    assert code == 1
    assert capsys.readouterr().err == (
        f"keras-seq complete: error: {tmp_path / 'vocabulary.json'} is not a "
        "next_word vocabulary: Argument `vocabulary` must be a list of "
        "strings. Received: vocabulary[2]=3 (of type int)\n"
    )


@needs_text_vectorization
def test_complete_reads_the_text_model_as_its_network_and_vocabulary(
    trained_run, tmp_path, capsys
):
    # A text model (TensorFlow) and its network of ids saved beside
    # vocabulary.json (what next_word saves on JAX) complete alike.
    text_model = keras.saving.load_model(trained_run / "model.keras")
    ids_dir = tmp_path / "ids"
    ids_dir.mkdir()
    text_model.layers[-1].save(ids_dir / "model.keras")
    shutil.copy(trained_run / "vocabulary.json", ids_dir)
    outputs = []
    for model in (trained_run, ids_dir):
        assert cli.main(["complete", "bite the", "--model", str(model), "-k", "4"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 4


@needs_text_vectorization
def test_complete_refuses_a_text_model_with_the_wrong_output_size(tmp_path, capsys):
    vectorizer = keras.layers.TextVectorization(output_sequence_length=3)
    vectorizer.adapt(["break the ice", "once in a blue moon"])
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="string"),
            vectorizer,
            keras.Sequential(
                [
                    keras.Input((3,), dtype="int32"),
                    keras.layers.Embedding(10, 2),
                    keras.layers.GRU(2),
                    keras.layers.Dense(5, activation="softmax"),
                ]
            ),
        ]
    )
    model.save(tmp_path / "five.keras")
    code = cli.main(["complete", "break the", "--model", str(tmp_path / "five.keras")])
    assert code == 1
    assert capsys.readouterr().err == (
        f"keras-seq complete: error: {tmp_path / 'five.keras'} outputs 5 "
        f"scores for {len(vectorizer.get_vocabulary())} words: not a next_word "
        "model\n"
    )


@needs_trained_run
@pytest.mark.parametrize(
    "prompt, ending",
    [
        ("feeling under the", "weather"),
        ("once in a blue", "moon"),
        ("kill two birds with one", "stone"),
        ("Let the cat out of the", "bag"),
    ],
)
def test_complete_returns_the_idioms_ending(trained_run, prompt, ending, capsys):
    assert cli.main(["complete", prompt, "--model", str(trained_run), "-k", "1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    word, probability = line.split()
    assert word == ending and float(probability) > 0.3


@needs_trained_run
def test_complete_uses_the_latest_next_word_run(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "runs" / "next_word" / "20000101-000000")
    result = keras_seq_command("complete", "break the", "-k", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "ice"
