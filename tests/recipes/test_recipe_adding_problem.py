import pytest

from keras_seq.recipes import adding_problem


def test_smoke_run_compares_three_models(tmp_path, check_run, capsys):
    assert adding_problem.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, models = check_run(tmp_path, labels=("tanh_rnn", "irnn", "lstm"))

    rows = summary["tables"]["Comparison"]
    assert [row["model"] for row in rows] == ["tanh_rnn", "irnn", "lstm"]
    for row in rows:
        assert row["val_mse"] == pytest.approx(
            row["vs_baseline"] * summary["figures"]["baseline_mse"]
        )
        assert 1 <= row["horizon"] <= row["T"] == summary["figures"]["timesteps"]
        assert summary["figures"][f"{row['model']}/horizon"] == row["horizon"]
        (diagnosis,) = summary["models"][row["model"]]["diagnosis"].values()
        assert diagnosis["horizon"] == row["horizon"]
    irnn = models["irnn"].layers[0].get_config()
    assert irnn["activation"] == "relu"
    assert irnn["recurrent_initializer"]["class_name"] == "Identity"
    assert type(models["lstm"].layers[0]).__name__ == "LSTM"
    assert "Comparison:" in out and "vs_baseline" in out
    assert "this run is too short to show that" in out  # 8 steps do not


def test_timesteps_must_allow_two_halves(capsys):
    with pytest.raises(SystemExit) as exit_:
        adding_problem.main(["--timesteps", "1"])
    assert exit_.value.code == 2
    assert "--timesteps must be >= 2" in capsys.readouterr().err
