"""keras_seq.runs: the options, run directories and summaries of recipes."""

import json
import os
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

import keras_seq
from keras_seq import runs


def parse(argv, **kwargs):
    parser = runs.argument_parser("demo", "A demo recipe.", epochs=7, **kwargs)
    return parser.parse_args(argv)


def test_options_and_their_defaults():
    args = parse([])
    assert (args.epochs, args.batch_size, args.log_dir, args.seed, args.smoke) == (
        7,
        32,
        None,
        0,
        False,
    )
    args = parse(
        ["--epochs", "3", "--batch-size", "8", "--log-dir", "d", "--seed", "5"]
    )
    assert (args.epochs, args.batch_size, args.log_dir, args.seed) == (
        3,
        8,
        pathlib.Path("d"),
        5,
    )


def test_smoke_sets_the_epochs_unless_given():
    assert parse(["--smoke"], smoke_epochs=2).epochs == 2
    assert parse(["--smoke", "--epochs", "4"], smoke_epochs=2).epochs == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "argument --epochs: must be an integer >= 1. Received: 0"),
        (["--batch-size", "x"], "argument --batch-size: must be an integer >= 1"),
        (["--seed", "1.5"], "argument --seed: must be an integer"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("demo.py: error: ")
    assert message in err


def test_parser_error_for_bad_data_is_one_line(capsys):
    parser = runs.argument_parser("demo", "A demo recipe.", epochs=1)
    with pytest.raises(SystemExit) as exit_:
        parser.error("column 'y' is missing;\navailable: a, b")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "demo.py: error: column 'y' is missing; available: a, b (see --help)\n"
    )


def test_start_seeds_and_makes_the_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = runs.start("demo", parse(["--seed", "3"]))
    first = np.random.rand()
    runs.start("demo", parse(["--seed", "3"]))
    assert np.random.rand() == first  # reseeded
    assert run.dir.parent == pathlib.Path("runs", "demo")
    assert run.dir.is_dir()
    assert len(list((tmp_path / "runs" / "demo").iterdir())) == 2  # same second
    assert f"demo: writing to {run.dir}" in capsys.readouterr().out


def test_start_refuses_an_unwritable_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        runs.start("demo", parse(["--log-dir", str(blocker / "run")]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot write the run directory" in err and "--log-dir" in err


def trained(log_dir):
    model = keras_seq.Sequential(
        [
            keras.Input((5, 2)),
            keras_seq.layers.SharedRNN(3, name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = keras_seq.callbacks.GradientMonitor(log_dir=log_dir, every=1)
    x = np.random.RandomState(0).rand(8, 5, 2).astype("float32")
    model.fit(x, x[:, -1, :1], epochs=1, batch_size=4, verbose=0, callbacks=[monitor])
    return model, monitor


def test_save_and_finish_write_what_describe_reads(tmp_path, capsys):
    run = runs.start("demo", parse(["--log-dir", str(tmp_path / "run")]))
    model, monitor = trained(run.dir)
    files = run.save(model, monitor)
    other_model, other_monitor = trained(run.log_dir("other"))
    run.save(other_model, other_monitor, label="other")
    summary = run.finish(
        {"mse": np.float32(0.25), "steps": np.int64(2), "note": "x"},
        tables={"Table": pd.DataFrame({"model": ["a", "b"], "mse": [0.5, 0.125]})},
        notes=["A note."],
    )
    printed = capsys.readouterr().out

    assert set(files) == {"model", "gradients", "timesteps", "report"}
    assert keras.saving.load_model(files["model"]).count_params() == (
        model.count_params()
    )
    assert len(pd.read_parquet(files["gradients"])) == 2
    assert set(pd.read_parquet(files["timesteps"]).layer) == {"rnn/level_0"}
    on_disk = json.loads((run.dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["figures"] == {"mse": 0.25, "steps": 2, "note": "x"}
    assert on_disk["tables"]["Table"] == [
        {"model": "a", "mse": 0.5},
        {"model": "b", "mse": 0.125},
    ]
    assert on_disk["models"]["model"]["files"]["model"] == "model.keras"
    assert on_disk["models"]["other"]["files"]["report"] == "other/report.txt"
    verdict = on_disk["models"]["model"]["diagnosis"]["rnn/level_0"]
    assert verdict["horizon"] == monitor.diagnosis().sublayers["rnn/level_0"].horizon
    assert on_disk["arguments"]["log_dir"] == str(tmp_path / "run")

    text = runs.describe(run.dir)
    assert text in printed
    assert "  mse    0.25" in text
    assert "  model    mse\n  a        0.5\n  b      0.125" in text
    assert "Note: A note." in text
    assert monitor.report() in text and other_monitor.report() in text
    assert "Gradients of other (other/report.txt):" in text
    assert text.endswith(runs.tensorboard_command(run.dir))


def test_finish_ends_with_the_commands_to_go_on(tmp_path, capsys):
    run = runs.start("demo", parse(["--log-dir", str(tmp_path)]))
    run.finish({"x": 1}, commands=[("keras-seq list", "the recipes"), "echo hi"])
    printed = capsys.readouterr().out.rstrip().splitlines()
    assert printed[-4:] == [
        "Go on with:",
        "  keras-seq list  # the recipes",
        "  echo hi",
        f"  {runs.tensorboard_command(tmp_path)}",  # added, last
    ]
    # Not saved: the report of the run ends with the TensorBoard line.
    assert runs.describe(tmp_path).endswith(
        f"\n\nTensorBoard: {runs.tensorboard_command(tmp_path)}"
    )
    tensorboard_first = [runs.tensorboard_command(tmp_path), ("b", "c")]
    assert runs.describe(tmp_path, commands=tensorboard_first).endswith(
        f"Go on with:\n  {runs.tensorboard_command(tmp_path)}\n  b  # c"
    )


def test_describe_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a finished run"):
        runs.describe(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a keras-seq run summary"):
        runs.describe(tmp_path)
    (tmp_path / "summary.json").write_text('{"recipe": "x"}')
    with pytest.raises(ValueError, match="KeyError"):
        runs.describe(tmp_path)


def test_latest_run_is_the_last_finished(tmp_path):
    assert runs.latest_run(tmp_path / "missing") is None
    assert runs.latest_run(tmp_path) is None
    for name, mtime in (("b", 100), ("a", 200), ("unfinished", None)):
        (tmp_path / name).mkdir()
        if mtime is not None:
            summary = tmp_path / name / "summary.json"
            summary.write_text("{}")
            os.utime(summary, (mtime, mtime))
    assert runs.latest_run(tmp_path) == tmp_path / "a"
    assert runs.latest_run(tmp_path / "b") == tmp_path / "b"


def test_save_writes_the_vocabulary_and_checks_it_first(tmp_path):
    run = runs.start("demo", parse(["--log-dir", str(tmp_path)]))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    words = ["", "[UNK]", "caf\u00e9"]
    files = run.save(model, vocabulary=words)
    assert json.loads(files["vocabulary"].read_text(encoding="utf-8")) == words
    for label, bad, match in (
        ("a", "abc", "`vocabulary` must be a list of strings"),
        ("b", ["", "[UNK]", b"x"], r"vocabulary\[2\]=b'x' \(of type bytes\)"),
    ):
        with pytest.raises(TypeError, match=match):
            run.save(model, vocabulary=bad, label=label)
        assert not (tmp_path / label).exists()  # nothing written


def test_label_must_be_a_plain_name(tmp_path):
    run = runs.start("demo", parse(["--log-dir", str(tmp_path)]))
    for label in ("", "../up", "a/b", ".hidden", 3):
        with pytest.raises(ValueError, match="Argument `label` must be"):
            run.log_dir(label)


def _tiny_fit(callbacks, epochs):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=callbacks)


def test_progress_prints_every_nth_epoch_and_the_last(capsys):
    run = runs.Run("demo", ".", parse([]))
    _tiny_fit([run.progress(every=3, label="m")], epochs=5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["m: epoch 3/5", "m: epoch 5/5"]
    assert "loss " in lines[0]


def test_progress_prints_the_last_epoch_of_a_fit_stopped_early(capsys):
    class StopAtSecond(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    run = runs.Run("demo", ".", parse([]))
    _tiny_fit([StopAtSecond(), run.progress(every=10)], epochs=30)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 2/30"]


def test_save_figure_writes_a_png_and_a_tensorboard_image(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from tensorboard.backend.event_processing import event_accumulator

    run = runs.start("demo", parse(["--log-dir", str(tmp_path)]))
    figure, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    path = run.save_figure(figure, "curve", step=7)
    plt.close(figure)
    assert path == tmp_path / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "figures"), size_guidance={"tensors": 0}
    ).Reload()
    (event,) = accumulator.Tensors("figures/curve")
    assert event.step == 7
    width, height = (int(v) for v in event.tensor_proto.string_val[:2])
    assert (width, height) == (200, 150)  # 2 x 1.5 inches at 100 dpi
    summary = run.finish({})
    assert summary["pictures"] == {"curve": "curve.png"}
    assert "Picture curve: " in runs.describe(tmp_path)
    with pytest.raises(ValueError, match="Argument `label`"):
        run.save_figure(figure, "../outside")
