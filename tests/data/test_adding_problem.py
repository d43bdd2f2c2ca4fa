import numpy as np
import pytest

import keras_seq


def test_one_marker_per_half_and_the_target_sums_the_marked_values():
    x, y = keras_seq.data.adding_problem(500, 11, seed=0)
    assert x.shape == (500, 11, 2) and y.shape == (500, 1)
    assert x.dtype == y.dtype == np.float32
    markers = x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers[:, :5].sum(axis=1) == 1).all()  # first half: steps 0-4
    assert (markers[:, 5:].sum(axis=1) == 1).all()
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    for row in range(5):  # against an independent loop
        marked = [t for t in range(11) if markers[row, t] == 1.0]
        assert y[row, 0] == pytest.approx(sum(x[row, t, 0] for t in marked))


def test_always_answering_one_scores_a_sixth():
    _, y = keras_seq.data.adding_problem(20000, 10, seed=1)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)


def test_a_seed_gives_the_same_data_and_another_different():
    a, _ = keras_seq.data.adding_problem(8, 6, seed=3)
    b, _ = keras_seq.data.adding_problem(8, 6, seed=3)
    c, _ = keras_seq.data.adding_problem(8, 6, seed=(3, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"samples": 0, "timesteps": 5},
            ValueError,
            "`samples` must be an integer >= 1",
        ),
        (
            {"samples": 2, "timesteps": 1},
            ValueError,
            "`timesteps` must be an integer >= 2",
        ),
        ({"samples": 2.5, "timesteps": 5}, TypeError, "Received: samples=2.5"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_seq.data.adding_problem(**kwargs)
