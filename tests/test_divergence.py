"""A fit whose loss ends far above where it started, or stops being finite, is reported
by a warning that names the cause and the parameters to change, and the best weights
are kept: for every kind of estimator and every optimizer."""
import warnings

import numpy as np
import pytest

from fastrnn import (GRURegressor, LSTMClassifier, LSTMSequenceRegressor, RNNTagger)

OPTIMIZERS = ["adam", "adamw", "sgd", "rmsprop"]


def data(n=120, T=8, F=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    return X, {
        LSTMClassifier: (X[:, :, 0].sum(axis=1) > 0).astype(int),
        GRURegressor: X.sum(axis=(1, 2)),
        RNNTagger: (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int),
        LSTMSequenceRegressor: np.cumsum(X[:, :, :2], axis=1),
    }


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor, RNNTagger,
                                 LSTMSequenceRegressor], ids=lambda c: c.__name__)
def test_a_loss_that_ends_far_above_its_start_is_reported(cls, optimizer):
    X, ys = data()
    m = cls(learning_rate=1e6, optimizer=optimizer, max_epochs=6, hidden_size=8,
            random_state=0)
    with pytest.warns(RuntimeWarning, match=r"fit diverged: the training loss rose from "
                                            r".* lower learning_rate \(now 1000000.0\)"):
        m.fit(X * 1e30, ys[cls])
    assert m.loss_curve_[-1] > 2 * m.loss_curve_[0] or m.loss_curve_[-1] > 10
    # the kept weights are the best ones seen: here no epoch beat the initial weights,
    # so the model predicts as the unfitted initialisation does (finite, not 0/1)
    ref = cls(max_epochs=1, hidden_size=8, random_state=0, learning_rate=1e-30,
              optimizer=optimizer).fit(X * 1e30, ys[cls])
    for k, v in m.model_.params().items():
        np.testing.assert_allclose(v, ref.model_.params()[k], rtol=1e-5, atol=1e-6)
    out = m.predict_proba(X) if cls._is_classifier else m.predict(X)
    assert np.isfinite(np.asarray(out, dtype=float)).all()


def test_a_fit_that_learns_is_not_reported():
    X, ys = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = LSTMClassifier(max_epochs=10, hidden_size=8, random_state=0).fit(X, ys[LSTMClassifier])
    assert m.loss_curve_[-1] < m.loss_curve_[0]


def test_a_diverged_fit_can_train_on():
    """After the rollback the optimizer starts afresh: lowering the learning rate and
    training on works."""
    X, ys = data()
    y = ys[LSTMClassifier]
    m = LSTMClassifier(learning_rate=1e6, max_epochs=4, hidden_size=8, random_state=0)
    with pytest.warns(RuntimeWarning, match="fit diverged"):
        m.fit(X, y)
    assert m._optimizer.state == {}
    m.set_params(learning_rate=1e-2, warm_start=True, max_epochs=15).fit(X, y)
    assert m.score(X, y) > 0.8
