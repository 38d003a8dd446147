"""n_features: flat 2-D X, each row n_timesteps * n_features values step after step, is
read as (n_samples, n_timesteps, n_features) -- the form tools that pass 2-D data only
(Dask's Incremental, ParallelPostFit) can hand over."""
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn import (GRUTagger, LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor,
                     RNNClassifier)
from fastrnn.estimators import ESTIMATORS

N, T, F = 48, 7, 3
SMALL = dict(hidden_size=8, max_epochs=3, batch_size=16, random_state=0)


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, F)).astype(np.float32)
    y_cls = (X[:, :, 0].sum(1) > 0).astype(int)
    y_reg = X[:, :, 1].sum(1)
    y_steps = (X[:, :, 2] > 0).astype(int)
    return X, {"cls": y_cls, "reg": y_reg, "steps": y_steps,
               "step_reg": X[:, :, 0].cumsum(1)}


@pytest.mark.parametrize("cls, target", [(LSTMClassifier, "cls"), (LSTMRegressor, "reg"),
                                         (GRUTagger, "steps"),
                                         (LSTMSequenceRegressor, "step_reg")])
def test_flat_X_is_the_same_model_as_3d_X(cls, target):
    X, ys = data()
    y = ys[target]
    deep = cls(**SMALL).fit(X, y)
    flat = cls(n_features=F, **SMALL).fit(X.reshape(N, -1), y)
    assert flat.n_features_in_ == T * F and deep.n_features_in_ == F
    assert flat.n_step_features_ == F
    np.testing.assert_array_equal(flat.predict(X.reshape(N, -1)), deep.predict(X))
    if hasattr(deep, "predict_proba"):
        np.testing.assert_array_equal(flat.predict_proba(X.reshape(N, -1)),
                                      deep.predict_proba(X))
    assert flat.score(X.reshape(N, -1), y) == deep.score(X, y)


def test_predict_demands_2d_X_of_the_fitted_column_count():
    X, ys = data()
    est = LSTMClassifier(n_features=F, **SMALL).fit(X.reshape(N, -1), ys["cls"])
    with pytest.raises(ValueError, match="fitted on 2-D X of 21 columns"):
        est.predict(X)
    with pytest.raises(ValueError, match="fitted on 2-D X of 21 columns"):
        est.predict(list(X))
    with pytest.raises(ValueError, match="X has 18 features, but LSTMClassifier is "
                                         "expecting 21"):
        est.predict(X[:, :6].reshape(N, -1))
    with pytest.raises(ValueError, match="not a multiple of n_features=3"):
        est.predict(X.reshape(N, -1)[:, :20])
    est.set_params(n_features=None)   # read as 21 univariate steps: the per-step count differs
    with pytest.raises(ValueError, match="1 features per step, but LSTMClassifier was "
                                         "fitted with 3"):
        est.predict(X.reshape(N, -1))


def test_partial_fit_on_flat_blocks_equals_3d_blocks():
    X, ys = data()
    deep = LSTMClassifier(**SMALL)
    flat = LSTMClassifier(n_features=F, **SMALL)
    for part in np.array_split(np.arange(N), 3):
        deep.partial_fit(X[part], ys["cls"][part], classes=[0, 1])
        flat.partial_fit(X[part].reshape(len(part), -1), ys["cls"][part], classes=[0, 1])
    np.testing.assert_array_equal(flat.predict_proba(X.reshape(N, -1)),
                                  deep.predict_proba(X))
    with pytest.raises(ValueError, match="not a multiple"):
        flat.partial_fit(X.reshape(N, -1)[:, 1:], ys["cls"])


def test_n_features_checks_3d_and_ragged_X():
    X, ys = data()
    est = LSTMClassifier(n_features=F, **SMALL)
    np.testing.assert_array_equal(est.fit(X, ys["cls"]).predict(X),
                                  LSTMClassifier(**SMALL).fit(X, ys["cls"]).predict(X))
    with pytest.raises(ValueError, match="X has 3 features per step, but n_features=2"):
        LSTMClassifier(n_features=2, **SMALL).fit(X, ys["cls"])
    with pytest.raises(ValueError, match=r"X\[0\] has 3 features per step, but n_features=2"):
        LSTMClassifier(n_features=2, **SMALL).fit([X[0], X[1, :5]], [0, 1])
    # a list of flat 1-D sequences of different lengths: each read as (T_i, n_features)
    seqs = [X[0].ravel(), X[1, :4].ravel()]
    got = LSTMClassifier(n_features=F, **SMALL).fit(seqs, [0, 1]).predict_proba(seqs)
    ref = LSTMClassifier(**SMALL).fit([X[0], X[1, :4]], [0, 1]).predict_proba(
        [X[0], X[1, :4]])
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError, match=r"X\[1\] has 4 values per sequence, not a multiple"):
        LSTMClassifier(n_features=F, **SMALL).fit([X[0].ravel(), np.ones(4)], [0, 1])


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError),
                                          (2.5, TypeError), (True, TypeError),
                                          ("3", TypeError)])
def test_invalid_n_features(value, error):
    X, ys = data()
    with pytest.raises(error, match="n_features"):
        LSTMClassifier(n_features=value, **SMALL).fit(X.reshape(N, -1), ys["cls"])


def test_n_features_with_tokens_is_refused():
    ids = np.random.default_rng(0).integers(0, 9, size=(N, T))
    with pytest.raises(ValueError, match="n_features is for float input"):
        LSTMClassifier(embedding_dim=4, n_features=2, **SMALL).fit(ids, ids[:, 0] > 4)


def test_every_estimator_takes_n_features():
    for cls in ESTIMATORS.values():
        assert cls().get_params()["n_features"] is None
        assert cls(n_features=4).n_features == 4
        assert "n_features" in (cls.__doc__ or "")


def test_n_features_survives_save_load_pickle_and_clone(tmp_path):
    from sklearn.base import clone
    X, ys = data()
    Xf = X.reshape(N, -1)
    est = RNNClassifier(n_features=F, **SMALL).fit(Xf, ys["cls"])
    est.save(tmp_path / "m.npz")
    for other in (fastrnn.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(est))):
        assert other.n_features == F and other.n_features_in_ == T * F
        np.testing.assert_array_equal(other.predict_proba(Xf), est.predict_proba(Xf))
        with pytest.raises(ValueError, match="fitted on 2-D X"):
            other.predict(X)
    assert clone(est).n_features == F
    assert "n_features=3" in repr(est)
