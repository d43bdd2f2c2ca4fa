"""Yearly sunspot numbers, 1700-2008: a small public-domain time series."""

import importlib.resources

_FILE = "sunspots.csv"


def load_sunspots():
    """Returns the yearly sunspot numbers 1700-2008 as a pandas DataFrame.

    309 rows with the columns `YEAR` (int) and `SUNACTIVITY` (float, the
    yearly mean sunspot number). A classic forecasting series with a cycle
    of about 11 years. The data are public domain (NOAA National
    Geophysical Data Center); keras-seq ships the copy that statsmodels
    ships (`statsmodels/datasets/sunspots/sunspots.csv`, statsmodels 0.15.0),
    unchanged, as package data: nothing is downloaded.

    Returns:
        A new `pandas.DataFrame`.

    Example:

    >>> frame = keras_seq.data.load_sunspots()
    >>> frame.shape, list(frame.columns)
    ((309, 2), ['YEAR', 'SUNACTIVITY'])
    """
    import pandas as pd

    resource = importlib.resources.files("keras_seq.data").joinpath(_FILE)
    with resource.open("r", encoding="utf-8") as file:
        return pd.read_csv(file, dtype={"YEAR": "int64", "SUNACTIVITY": "float64"})
