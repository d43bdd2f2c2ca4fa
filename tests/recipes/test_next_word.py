import json

import keras
import numpy as np
import pytest

from keras_seq.recipes import next_word


def test_smoke_run_writes_everything_and_loads(tmp_path, check_run, capsys):
    assert next_word.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path)

    figures = summary["figures"]
    assert summary["recipe"] == "next_word" and summary["arguments"]["smoke"]
    assert figures["epochs"] == 1 and figures["pairs"] > 50
    for k in (1, 5):
        assert 0 <= figures[f"top{k}_accuracy"] <= figures[f"top{k}_ceiling"] <= 1
    # The saved model reads token ids, the words of vocabulary.json, and
    # gives one probability per word; on TensorFlow it reads raw text too,
    # as the same network on that text's ids.
    vocabulary = json.loads((tmp_path / "vocabulary.json").read_text())
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) == figures["vocabulary"]
    model = network = models["model"]
    if keras.backend.backend() == "tensorflow":
        network = model.layers[-1]
    length = network.inputs[0].shape[1]
    ids = [vocabulary.index("break"), vocabulary.index("the")]
    probabilities = np.asarray(network(np.array([ids + [0] * (length - 2)])))
    assert probabilities.shape == (1, figures["vocabulary"])
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    if network is not model:
        text = np.asarray(model(np.array([["Break  the"]])))
        np.testing.assert_allclose(text, probabilities, atol=1e-6)
    assert "Completions (top 3 with probabilities" in out
    assert "Final figures:" in out and "tensorboard --logdir" in out


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the recipes' seeding is backend-neutral (runs.start); suite time",
)
def test_same_seed_same_run(tmp_path):
    summaries = []
    for name in ("a", "b"):
        argv = ["--smoke", "--epochs", "2", "--log-dir", str(tmp_path / name)]
        assert next_word.main(argv) == 0
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    assert summaries[0]["figures"] == summaries[1]["figures"]
    assert summaries[0]["models"] == summaries[1]["models"]


def test_corpus_ceilings():
    prefixes, targets, longest = next_word.next_word_pairs(
        ["bite the bullet", "bite the dust", "break the ice"]
    )
    assert longest == 2
    assert list(zip(prefixes, targets)) == [
        ("bite", "the"),
        ("bite the", "bullet"),
        ("bite", "the"),
        ("bite the", "dust"),
        ("break", "the"),
        ("break the", "ice"),
    ]
    top1, top5, following = next_word.ceilings(prefixes, targets)
    assert top1 == pytest.approx(5 / 6)  # "bite the" has two endings
    assert top5 == 1.0
    assert following["bite the"] == {"bullet": 1, "dust": 1}


def test_bad_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        next_word.main(["--units", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "next_word.py: error: argument --units: must be an integer >= 1. "
        "Received: 0 (see --help)\n"
    )
