import numpy as np
import pytest

from keras_seq.recipes import bidirectional_tagging


def test_tags_compare_the_parities_of_both_neighbours():
    tokens, tags = bidirectional_tagging.neighbour_parity_tags(50, 7, seed=0)
    assert tokens.shape == tags.shape == (50, 7)
    assert tokens.min() >= 0 and tokens.max() < bidirectional_tagging.TOKENS
    for row in range(50):
        for t in range(7):
            before = tokens[row, t - 1] % 2 if t > 0 else 0
            after = tokens[row, t + 1] % 2 if t < 6 else 0
            assert tags[row, t] == int(before == after)
    assert 0.4 < tags.mean() < 0.6


def test_smoke_run_compares_the_two_taggers(tmp_path, check_run, capsys):
    argv = ["--smoke", "--timesteps", "6", "--log-dir", str(tmp_path)]
    assert bidirectional_tagging.main(argv) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path, labels=("one_directional", "bidirectional"))
    rows = summary["tables"]["Per-token validation accuracy"]
    assert [row["model"] for row in rows] == ["one_directional", "bidirectional"]
    assert summary["figures"]["one_directional_ceiling"] == pytest.approx(0.5 + 0.5 / 6)
    for row in rows:
        assert 0 <= row["val_accuracy"] <= 1
        assert row["parameters"] == models[row["model"]].count_params()
    # Each direction of the Bidirectional is a monitored sublayer of its own.
    assert len(summary["models"]["bidirectional"]["diagnosis"]) == 2
    assert len(summary["models"]["one_directional"]["diagnosis"]) == 1
    tags = np.asarray(models["bidirectional"](np.zeros((1, 6), "int32")))
    assert tags.shape == (1, 6, 2)
    assert "Per-token validation accuracy:" in out
