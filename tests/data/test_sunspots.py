import numpy as np

import keras_seq


def test_yearly_numbers_1700_to_2008():
    frame = keras_seq.data.load_sunspots()
    assert list(frame.columns) == ["YEAR", "SUNACTIVITY"]
    np.testing.assert_array_equal(frame.YEAR, np.arange(1700, 2009))
    assert frame.SUNACTIVITY.dtype == np.float64
    assert frame.SUNACTIVITY.notna().all() and (frame.SUNACTIVITY >= 0).all()
    assert frame.SUNACTIVITY.iloc[:3].tolist() == [5.0, 11.0, 16.0]  # the source's
    # The solar cycle: the strongest period of the series is ~11 years.
    values = frame.SUNACTIVITY.to_numpy() - frame.SUNACTIVITY.mean()
    power = np.abs(np.fft.rfft(values)) ** 2
    frequencies = np.fft.rfftfreq(len(values))
    assert 10 <= 1 / frequencies[1:][np.argmax(power[1:])] <= 12


def test_each_call_returns_a_new_frame():
    first = keras_seq.data.load_sunspots()
    first.loc[0, "SUNACTIVITY"] = -1.0
    assert keras_seq.data.load_sunspots().SUNACTIVITY.iloc[0] == 5.0
