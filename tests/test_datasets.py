"""fastrnn.datasets: documented shapes and dtypes, determinism under random_state, and
labels that follow from the data as each docstring says."""
import numpy as np
import pytest

from fastrnn.datasets import make_adding, make_delayed_recall, make_majority, make_periodic

GENERATORS = [make_majority, make_adding, make_delayed_recall, make_periodic]


@pytest.mark.parametrize("make,kw,features,y_kind", [
    (make_majority, dict(n_steps=40), 4, "i"),
    (make_majority, dict(n_steps=40, n_symbols=5), 6, "i"),
    (make_adding, dict(n_steps=30), 2, "f"),
    (make_delayed_recall, dict(n_steps=12), 5, "i"),
    (make_delayed_recall, dict(n_steps=12, n_classes=7), 8, "i"),
    (make_periodic, dict(n_steps=32), 1, "i"),
])
def test_shapes_and_dtypes(make, kw, features, y_kind):
    X, y = make(50, random_state=0, **kw)
    assert X.shape == (50, kw["n_steps"], features)
    assert X.dtype == np.float32 and np.isfinite(X).all()
    assert y.shape == (50,) and y.dtype.kind == y_kind


@pytest.mark.parametrize("make", GENERATORS)
def test_random_state(make):
    X1, y1 = make(30, random_state=7)
    X2, y2 = make(30, random_state=7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = make(30, random_state=8)
    assert not np.array_equal(X1, X3)
    X4, y4 = make(30, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(X4, X1)
    np.testing.assert_array_equal(y4, y1)


def test_majority_label_is_the_most_frequent_symbol():
    X, y = make_majority(300, n_steps=60, n_symbols=3, random_state=0)
    events = X[:, :, :3]
    assert set(np.unique(events)) <= {0.0, 1.0}
    assert (events.sum(axis=2) <= 1).all()                  # at most one symbol per step
    counts = events.sum(axis=1)
    assert (counts.argmax(axis=1) == y).all()
    top = np.sort(counts, axis=1)
    assert (top[:, -1] > top[:, -2]).all()                  # no ties
    assert set(np.unique(y)) == {0, 1, 2}


def test_adding_target_is_the_sum_of_the_marked_values():
    X, y = make_adding(200, n_steps=20, random_state=0)
    marks = X[:, :, 1]
    assert (marks.sum(axis=1) == 2).all()
    assert (marks[:, :10].sum(axis=1) == 1).all() and (marks[:, 10:].sum(axis=1) == 1).all()
    assert ((X[:, :, 0] >= 0) & (X[:, :, 0] < 1)).all()
    np.testing.assert_allclose(y, (X[:, :, 0] * marks).sum(axis=1), rtol=1e-6)


def test_delayed_recall_label_is_shown_first_and_cued_last():
    X, y = make_delayed_recall(200, n_steps=10, n_classes=4, random_state=0)
    np.testing.assert_array_equal(X[:, 0, :4], np.eye(4, dtype=np.float32)[y])
    np.testing.assert_array_equal(X[:, :, 4], np.eye(10, dtype=np.float32)[[9] * 200])
    assert not X[:, -1, :4].any()                           # the cue step holds no hint
    assert set(np.unique(y)) == {0, 1, 2, 3}


def test_periodic_label_is_the_dominant_frequency():
    X, y = make_periodic(200, n_steps=64, n_classes=3, noise=0.1, random_state=0)
    spectrum = np.abs(np.fft.rfft(X[:, :, 0], axis=1))
    np.testing.assert_array_equal(spectrum.argmax(axis=1), 2 * (y + 1))   # 2(c+1) cycles
    assert set(np.unique(y)) == {0, 1, 2}


@pytest.mark.parametrize("make,kw", [
    (make_majority, dict(n_samples=0)), (make_majority, dict(n_steps=0)),
    (make_majority, dict(n_symbols=1)), (make_adding, dict(n_steps=1)),
    (make_delayed_recall, dict(n_steps=1)), (make_periodic, dict(n_steps=3)),
])
def test_invalid_sizes(make, kw):
    with pytest.raises(ValueError):
        make(**kw)


def test_class_count_is_validated():
    from fastrnn.datasets import make_delayed_recall, make_periodic
    with pytest.raises(ValueError, match="n_classes"):
        make_periodic(10, n_steps=16, n_classes=6)
    with pytest.raises(ValueError, match="n_classes"):
        make_periodic(10, n_steps=64, n_classes=1)
    with pytest.raises(ValueError, match="n_classes"):
        make_delayed_recall(10, n_classes=1)
    X, y = make_periodic(10, n_steps=25, n_classes=6, random_state=0)
    assert X.shape == (10, 25, 1) and set(y) <= set(range(6))
