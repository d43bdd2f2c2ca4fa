"""Time-series forecasting from a pandas DataFrame with a SharedRNN.

Forecasts the next value of a series from the `--window` values before it.
The default series is the yearly sunspot numbers 1700-2008 (public domain,
NOAA; shipped with keras-seq, `keras_seq.data.load_sunspots()`); `--csv
PATH --target COLUMN` reads your own (one row per time step, in order).
The last `--test-fraction` of the rows is held out, the 15% before it
validates (early stopping with the best weights kept). Windows are NumPy
arrays (`fit` shuffles them; no TensorFlow needed on JAX), values are
standardised with the training part's mean and deviation, and `Input((window, 1)) ->
SharedRNN(32) -> Dense(1)` trains with a GradientMonitor watching. Reports
the mean absolute error on the held-out tail against the naive forecast
(the last value again), and plots forecast against truth
(`forecast.png`, and TensorBoard's Images tab).

Runtime: ~10 s on 2 CPU cores (--smoke: ~5 s).

    keras-seq run timeseries [--window 20] [--epochs 100]
    keras-seq run timeseries --csv data.csv --target sales
    python recipes/timeseries.py [same options]
"""

import math
import pathlib
import sys

import keras
import matplotlib
import numpy as np
import pandas as pd

import keras_seq
from keras_seq import runs

matplotlib.use("Agg")  # files only, no window
from matplotlib import pyplot as plt  # noqa: E402

NAME = "timeseries"
DEFAULT_TARGET = "SUNACTIVITY"
VALIDATION_FRACTION = 0.15  # of the training part, at its end


def read_series(parser, csv, target):
    """`(values, times, time_label, target, source)`: the target column as
    float64 values and what to put on the time axis, or one line and exit
    code 2 (through `parser.error`) saying what is wrong with the data."""
    if csv is None:
        frame = keras_seq.data.load_sunspots()
        target = target or DEFAULT_TARGET
        source = "yearly sunspot numbers 1700-2008"
        times, time_label = frame.YEAR.to_numpy(), "year"
    else:
        if not csv.is_file():
            parser.error(f"--csv: no such file: {csv}")
        try:
            # Missing and "n/a" cells stay text, so the error can show them.
            frame = pd.read_csv(csv, keep_default_na=False)
        except (ValueError, UnicodeDecodeError, OSError) as error:
            reason = " ".join(str(error).split())
            parser.error(f"--csv: cannot read {csv} as CSV: {reason}")
        source = str(csv)
        times, time_label = np.arange(1, len(frame) + 1), "data row"
    columns = [str(c) for c in frame.columns]
    if target is None:
        if len(columns) != 1:
            parser.error(
                f"--target is needed: {source} has {len(columns)} columns "
                f"({', '.join(columns)})"
            )
        target = columns[0]
    if target not in columns:
        parser.error(
            f"--target: no column {target!r} in {source}; "
            f"its columns: {', '.join(columns)}"
        )
    raw = frame[frame.columns[columns.index(target)]]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype="float64", na_value=0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        parser.error(
            f"column {target!r} of {source} must hold numbers only: "
            f"{int(bad.sum())} value(s) are not, the first in data row "
            f"{row + 1} ({str(raw.iloc[row])!r})"
        )
    return values.to_numpy(dtype="float64"), times, time_label, target, source


def windows(series, window):
    """`(window values, next value)` pairs of `series`: inputs
    `(pairs, window, 1)` and targets `(pairs,)`, float32."""
    values = np.asarray(series, "float32")
    starts = np.arange(len(values) - window)
    inputs = values[starts[:, None] + np.arange(window)][..., None]
    return inputs, values[window:]


def forecast_figure(times, time_label, truth, forecast, naive, target):
    figure, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(times, truth, color="black", label="truth")
    ax.plot(times, forecast, label="SharedRNN forecast")
    ax.plot(times, naive, linestyle=":", label="naive (last value)")
    ax.set_xlabel(time_label)
    ax.set_ylabel(target)
    ax.set_title(f"One step ahead on the held-out tail: {target}")
    ax.legend(fontsize=8)
    return figure


def main(argv=None):
    parser = runs.argument_parser(
        NAME, __doc__, epochs=100, batch_size=16, smoke_epochs=2
    )
    parser.add_argument(
        "--csv",
        type=pathlib.Path,
        default=None,
        metavar="PATH",
        help="a CSV file with a header row, one row per time step "
        "(default: the built-in sunspot numbers)",
    )
    parser.add_argument(
        "--target",
        default=None,
        metavar="COLUMN",
        help=f"the column to forecast (default: {DEFAULT_TARGET}, or the only "
        "column of --csv)",
    )
    parser.add_argument(
        "--window",
        type=runs.positive_int,
        default=20,
        metavar="N",
        help="past values the model sees (default: 20)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="share of the rows, at the end, held out (default: 0.2)",
    )
    parser.add_argument(
        "--units",
        type=runs.positive_int,
        default=32,
        metavar="N",
        help="recurrent units (default: 32)",
    )
    args = parser.parse_args(argv)
    if not (0 < args.test_fraction < 1 and math.isfinite(args.test_fraction)):
        parser.error(
            f"--test-fraction must be between 0 and 1. Received: {args.test_fraction}"
        )
    series, times, time_label, target, source = read_series(
        parser, args.csv, args.target
    )
    rows = len(series)
    test_rows = int(round(rows * args.test_fraction))
    train_rows = rows - test_rows
    val_rows = int(round(train_rows * VALIDATION_FRACTION))
    # Training needs a few windows; validation and the tail one value each.
    if train_rows - val_rows < args.window + 2 or min(test_rows, val_rows) < 1:
        needed = math.ceil(
            (args.window + 3) / (1 - VALIDATION_FRACTION) / (1 - args.test_fraction)
        )
        parser.error(
            f"{source} has {rows} rows: too few for --window {args.window} "
            f"and --test-fraction {args.test_fraction} (needs about {needed}; "
            "use a smaller --window)"
        )
    if args.smoke:
        args.units = min(args.units, 8)
    args.target = target
    run = runs.start(NAME, args)

    # The end of the training part validates (early stopping); the tail is
    # touched only for the final figures.
    fit_rows = train_rows - val_rows
    mean, deviation = series[:fit_rows].mean(), series[:fit_rows].std()
    deviation = deviation if deviation > 0 else 1.0
    scaled = (series - mean) / deviation
    train = windows(scaled[:fit_rows], args.window)
    # Each forecast sees the `window` values before it, from the part before.
    validation = windows(scaled[fit_rows - args.window : train_rows], args.window)
    test, _ = windows(scaled[train_rows - args.window :], args.window)
    print(
        f"{source}, column {target!r}: {rows} rows: {fit_rows} to train "
        f"({fit_rows - args.window} windows of {args.window}), the next "
        f"{val_rows} to validate, the last {test_rows} held out"
    )

    model = keras_seq.Sequential(
        [
            keras.Input((args.window, 1)),
            keras_seq.layers.SharedRNN(args.units, name="rnn"),
            keras.layers.Dense(1, name="next_value"),
        ],
        name="forecaster",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    monitor = keras_seq.callbacks.GradientMonitor(log_dir=run.dir, every=10)
    history = model.fit(
        *train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=validation,
        shuffle=True,
        verbose=0,
        callbacks=[
            runs.tensorboard(run.dir),
            monitor,
            keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
            run.progress(every=10),
        ],
    )
    run.save(model, monitor)

    forecast = (
        model.predict(test, batch_size=args.batch_size, verbose=0)[:, 0] * deviation
        + mean
    )
    truth = series[train_rows:]
    naive = series[train_rows - 1 : -1]  # the value one step before each
    mae = float(np.mean(np.abs(forecast - truth)))
    naive_mae = float(np.mean(np.abs(naive - truth)))
    figure = forecast_figure(
        times[train_rows:], time_label, truth, forecast, naive, target
    )
    run.save_figure(figure, "forecast", step=monitor.steps - 1)
    plt.close(figure)

    run.finish(
        {
            "rows": rows,
            "test_rows": test_rows,
            "epochs_trained": len(history.history["loss"]),
            "mae": mae,
            "naive_mae": naive_mae,
            "mae_vs_naive": mae / naive_mae if naive_mae > 0 else float("nan"),
        },
        notes=[
            "mae: mean absolute error of the one-step-ahead forecasts on the "
            f"held-out last {test_rows} rows, in the units of {target!r}; "
            "naive_mae: that of repeating the previous value. mae_vs_naive "
            "below 1 means the model beats it.",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
