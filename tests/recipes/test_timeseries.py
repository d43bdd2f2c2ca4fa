import keras
import numpy as np
import pandas as pd
import pytest

import keras_seq
from keras_seq.recipes import timeseries


def test_smoke_run_on_the_sunspots(tmp_path, check_run, capsys):
    assert timeseries.main(["--smoke", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary, _ = check_run(tmp_path)
    figures = summary["figures"]
    assert (figures["rows"], figures["test_rows"]) == (309, 62)
    assert summary["arguments"]["target"] == "SUNACTIVITY"
    # The naive forecast's error, computed here from the data alone.
    values = keras_seq.data.load_sunspots().SUNACTIVITY.to_numpy()
    naive = np.mean(np.abs(np.diff(values)[-62:]))
    assert figures["naive_mae"] == pytest.approx(naive)
    assert figures["mae_vs_naive"] == pytest.approx(figures["mae"] / naive)
    assert (tmp_path / "forecast.png").is_file()
    assert "yearly sunspot numbers 1700-2008" in out and "Picture forecast" in out


def test_own_csv_forecasts_the_tail_from_the_windows_before_it(tmp_path, check_run):
    t = np.arange(120)
    frame = pd.DataFrame(
        {"t": t, "value": np.sin(t / 4.0) * 10 + 50, "label": ["x"] * 120}
    )
    frame.to_csv(tmp_path / "data.csv", index=False)
    run_dir = tmp_path / "run"
    argv = ["--csv", str(tmp_path / "data.csv"), "--target", "value", "--window", "8"]
    assert timeseries.main([*argv, "--smoke", "--log-dir", str(run_dir)]) == 0
    summary, models = check_run(run_dir)
    figures = summary["figures"]
    assert (figures["rows"], figures["test_rows"]) == (120, 24)

    # The reported error, recomputed from the saved model and the CSV: the
    # last 24 values, each forecast from the 8 before it, standardised with
    # the statistics of the rows the model trained on (train 96 rows, of
    # which the last 14 validate).
    series = frame.value.to_numpy()
    fit_rows = 96 - 14
    mean, deviation = series[:fit_rows].mean(), series[:fit_rows].std()
    scaled = (series - mean) / deviation
    windows = np.stack([scaled[i - 8 : i] for i in range(96, 120)])[..., None]
    forecast = keras.ops.convert_to_numpy(models["model"](windows))[:, 0]
    forecast = forecast * deviation + mean
    assert figures["mae"] == pytest.approx(
        np.mean(np.abs(forecast - series[96:])), rel=1e-4
    )
    assert figures["naive_mae"] == pytest.approx(
        np.mean(np.abs(series[95:119] - series[96:]))
    )


def _error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        timeseries.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_data_errors_are_one_line(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    assert "--csv: no such file: " in _error(["--csv", str(csv)], capsys)

    pd.DataFrame({"day": range(60), "sales": range(60)}).to_csv(csv, index=False)
    err = _error(["--csv", str(csv), "--target", "revenue"], capsys)
    assert "no column 'revenue'" in err and "its columns: day, sales" in err
    err = _error(["--csv", str(csv)], capsys)
    assert "--target is needed" in err and "(day, sales)" in err

    sales = [str(v) for v in range(60)]
    sales[41] = "n/a"
    pd.DataFrame({"sales": sales}).to_csv(csv, index=False)
    err = _error(["--csv", str(csv)], capsys)
    assert "must hold numbers only" in err and "data row 42 ('n/a')" in err

    sales[41] = ""
    pd.DataFrame({"sales": sales}).to_csv(csv, index=False)
    assert "data row 42 ('')" in _error(["--csv", str(csv)], capsys)

    pd.DataFrame({"sales": range(30)}).to_csv(csv, index=False)
    err = _error(["--csv", str(csv), "--window", "20"], capsys)
    assert "has 30 rows: too few for --window 20" in err

    csv.write_bytes(b"\xff\xfe\x00garbage\x00")
    assert "cannot read" in _error(["--csv", str(csv)], capsys)

    err = _error(["--test-fraction", "1.5"], capsys)
    assert "--test-fraction must be between 0 and 1. Received: 1.5" in err
    assert not (tmp_path / "runs").exists()


def test_forecast_figure_plots_against_the_given_times():
    times = np.array([1990, 1991, 1992])
    figure = timeseries.forecast_figure(
        times, "year", [1.0, 2.0, 3.0], [1.5, 2.0, 2.5], [0.0, 1.0, 2.0], "spots"
    )
    (ax,) = figure.axes
    assert ax.get_xlabel() == "year" and ax.get_ylabel() == "spots"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == ["SharedRNN forecast", "naive (last value)", "truth"]
    np.testing.assert_array_equal(lines["truth"].get_xdata(), times)
    np.testing.assert_array_equal(lines["naive (last value)"].get_ydata(), [0, 1, 2])
