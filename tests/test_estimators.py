"""The scikit-learn-style estimators: API conventions, scikit-learn's own checks,
variable-length input, persistence, reproducibility, and that they actually learn."""
import io
import os
import pickle
import sys
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastrnn
from fastrnn import (GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                     RNNClassifier, RNNRegressor)
from fastrnn.datasets import make_adding, make_majority
from fastrnn.exceptions import ModelFileError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_probes import record_snapshots  # noqa: E402

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

CLASSIFIERS = [LSTMClassifier, GRUClassifier, RNNClassifier]
REGRESSORS = [LSTMRegressor, GRURegressor, RNNRegressor]
ALL = CLASSIFIERS + REGRESSORS


def small_seq_data(n=60, T=6, F=3, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int) if n_classes == 2 else \
        rng.integers(0, n_classes, size=n)
    return X, y


def ragged(n=40, F=2, seed=0, max_len=12):
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(rng.integers(1, max_len + 1), F)).astype(np.float32)
            for _ in range(n)]
    y = np.array([int(s[:, 0].sum() > 0) for s in seqs])
    return seqs, y


# ---------------------------------------------------------------- scikit-learn's checks

def _check_config(cls):
    """The one configuration scikit-learn's checks run on, for every estimator: the
    defaults (README.md names it), with random_state fixed so that the checks' fits are
    reproducible. Integer sample weights act as repetitions in any configuration, so
    check_sample_weight_equivalence passes bitwise on mini-batch training."""
    return cls(random_state=0)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_check_estimator(cls):
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(_check_config(cls), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert failed == []
    passed = [r for r in results if r["status"] == "passed"]
    assert len(passed) >= 55
    # the only skip allowed is the array-API check (needs SCIPY_ARRAY_API set)
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input"}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_get_set_params_clone(cls):
    est = cls(hidden_size=7, max_epochs=3)
    params = est.get_params()
    assert params["hidden_size"] == 7 and params["max_epochs"] == 3
    est2 = clone(est)
    assert est2.get_params() == params and est2 is not est
    assert est.set_params(num_layers=2) is est and est.num_layers == 2
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(nonexistent=1)
    assert "hidden_size=7" in repr(est)


def test_pipeline_gridsearch_cross_val_3d():
    X, y = small_seq_data(n=80, T=5)
    pipe = Pipeline([("scale", FunctionTransformer(lambda Z: Z * 2.0)),
                     ("rnn", GRUClassifier(hidden_size=8, max_epochs=15, learning_rate=1e-2,
                                          random_state=0))])
    grid = GridSearchCV(pipe, {"rnn__hidden_size": [4, 8]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["rnn__hidden_size"] in (4, 8)
    assert grid.predict(X).shape == (80,)
    scores = cross_val_score(LSTMClassifier(hidden_size=8, max_epochs=15, learning_rate=1e-2,
                                            random_state=0),
                             X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.6)


def test_gridsearch_cross_val_ragged():
    seqs, y = ragged(n=60)
    scores = cross_val_score(GRUClassifier(hidden_size=8, max_epochs=20, learning_rate=1e-2,
                                           random_state=0),
                             seqs, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.6)
    grid = GridSearchCV(LSTMClassifier(max_epochs=10, random_state=0),
                        {"hidden_size": [4, 8]}, cv=2).fit(seqs, y)
    assert grid.best_estimator_.predict(seqs).shape == (60,)


# ---------------------------------------------------------------- input forms

def test_input_forms_and_feature_rule():
    X, y = small_seq_data(n=30, T=6, F=3)
    m = LSTMClassifier(hidden_size=4, max_epochs=2, random_state=0).fit(X, y)
    assert m.n_features_in_ == 3
    # 3-D fitted: any length may be predicted, features per step must match
    assert m.predict(X[:, :2]).shape == (30,)
    assert m.predict(np.concatenate([X, X], axis=1)).shape == (30,)
    with pytest.raises(ValueError, match="features per step"):
        m.predict(X[:, :, :2])
    # ragged lists of the same features are fine
    assert m.predict([X[0], X[1, :3]]).shape == (2,)
    # 2-D: univariate series, n_features_in_ is the column count
    X2 = X[:, :, 0]
    m2 = GRURegressor(hidden_size=4, max_epochs=2, random_state=0).fit(X2, X2.sum(1))
    assert m2.n_features_in_ == 6
    with pytest.raises(ValueError, match="6 features"):
        m2.predict(X2[:, :5])
    # but a 3-D univariate input of any length is accepted
    assert m2.predict(X2[:, :4, None]).shape == (30,)


def test_prediction_independent_of_batch_partners():
    seqs, y = ragged(n=50, max_len=20)
    m = LSTMClassifier(hidden_size=8, max_epochs=5, random_state=0).fit(seqs, y)
    alone = np.stack([m.predict_proba([s])[0] for s in seqs[:10]])
    together = m.predict_proba(seqs)[:10]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    # padding a sequence with anything in a 3-D batch (via lengths) is what the list
    # form does; a long partner must not change a short sequence's prediction
    short = seqs[0][:2]
    long = np.random.default_rng(1).normal(size=(40, 2)).astype(np.float32) * 100
    np.testing.assert_allclose(m.predict_proba([short, long])[0], m.predict_proba([short])[0],
                               rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_reported():
    X, y = small_seq_data(n=20)
    m = LSTMClassifier(hidden_size=4, max_epochs=1)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        m.fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        m.fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="empty sequence"):
        m.fit([X[0], X[1][:0]], y[:2])
    with pytest.raises(ValueError, match="same number of features"):
        m.fit([X[0], X[1][:, :2]], y[:2])
    with pytest.raises(ValueError, match="optimizer"):
        LSTMClassifier(optimizer="adagrad").fit(X, y)
    with pytest.raises(ValueError, match="hidden_size"):
        LSTMClassifier(hidden_size=0).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        m.fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="sample_weight"):
        m.fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="Negative"):
        m.fit(X, y, sample_weight=-np.ones(len(X)))
    with pytest.raises(TypeError, match="sparse"):
        import scipy.sparse
        m.fit(scipy.sparse.csr_matrix(X[:, :, 0]), y)


# ---------------------------------------------------------------- training behaviour

def test_verbose_output(capsys):
    X, y = small_seq_data(n=30)
    LSTMClassifier(hidden_size=4, max_epochs=2, verbose=0, random_state=0).fit(X, y)
    assert capsys.readouterr().out == ""
    LSTMClassifier(hidden_size=4, max_epochs=2, verbose=1, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1: train loss")
    LSTMClassifier(hidden_size=4, max_epochs=1, verbose=2, batch_size=8,
                   early_stopping=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "[" in out and "validation score" in out


@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor], ids=lambda c: c.__name__)
def test_same_random_state_same_model_any_n_jobs(cls):
    """Bitwise the same model for 1, 2 and 3 threads, on batches where 2 and 3 threads
    really work (128 x 40 steps x G x 64 units x (12 + 64) >= 2.5e7 multiply-adds per
    call over 2 chunks at least; the core's record of its team sizes proves it)."""
    from fastrnn import _core
    X, y = small_seq_data(n=256, T=40, F=12)
    target = y if cls._is_classifier else X.sum(axis=(1, 2))
    preds = []
    for n_jobs in (1, 2, 3):
        _core.reset_threads_used()
        m = cls(hidden_size=64, max_epochs=2, batch_size=128, random_state=42,
                n_jobs=n_jobs).fit(X, target)
        assert _core.threads_used()[1] >= min(n_jobs, 2), (n_jobs, _core.threads_used())
        preds.append(m.predict_proba(X) if cls._is_classifier else m.predict(X))
    np.testing.assert_array_equal(preds[0], preds[1])
    np.testing.assert_array_equal(preds[0], preds[2])
    other = cls(hidden_size=64, max_epochs=2, batch_size=128, random_state=7).fit(X, target)
    other_pred = other.predict_proba(X) if cls._is_classifier else other.predict(X)
    assert not np.array_equal(preds[0], other_pred)


def test_early_stopping_restores_best():
    X, y = small_seq_data(n=120, T=5)
    m = GRUClassifier(hidden_size=8, max_epochs=40, early_stopping=True, n_iter_no_change=5,
                      validation_fraction=0.25, random_state=0).fit(X, y)
    assert len(m.validation_scores_) == m.n_iter_
    assert m.best_validation_score_ == max(m.validation_scores_)
    assert len(m.loss_curve_) == m.n_iter_
    assert m.best_loss_ == np.inf or m.best_loss_ <= min(m.loss_curve_)


def test_early_stopping_restored_weights_score():
    X, y = small_seq_data(n=100, T=5, seed=3)
    m = LSTMClassifier(hidden_size=8, max_epochs=30, early_stopping=True, n_iter_no_change=3,
                       validation_fraction=0.3, random_state=1, learning_rate=0.05)
    m.fit(X, y)
    # recompute the validation split exactly as fit drew it (over the training samples
    # in their canonical order) and score the final model
    from fastrnn.estimators import _rng
    from fastrnn.estimators._inputs import canonical_order, read_X
    order = canonical_order(read_X(X, np.float32), y.reshape(-1), False)
    rng = _rng(1)
    rng.integers(2 ** 31 - 1)  # rnn init seed
    rng.integers(2 ** 31 - 1)  # head init seed
    perm = rng.permutation(len(X))
    va = order[np.sort(perm[:int(np.ceil(0.3 * len(X)))])]
    assert m.score(X[va], y[va]) == pytest.approx(m.best_validation_score_)


def test_partial_fit_and_warm_start():
    X, y = small_seq_data(n=60)
    m = LSTMClassifier(hidden_size=8, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        m.partial_fit(X, y)
    m.partial_fit(X, y, classes=[0, 1])
    assert m.n_iter_ == 1
    m.partial_fit(X, y)
    assert m.n_iter_ == 2 and len(m.loss_curve_) == 2
    with pytest.raises(ValueError, match="not in classes"):
        m.partial_fit(X, np.full(len(X), 5))
    w = LSTMClassifier(hidden_size=8, max_epochs=2, warm_start=True, random_state=0).fit(X, y)
    before = {k: v.copy() for k, v in w.rnn_.params.items()}
    w.fit(X, y)
    assert w.n_iter_ == 4
    assert any(not np.array_equal(before[k], w.rnn_.params[k]) for k in before)


def test_class_and_sample_weights_change_the_model():
    X, y = small_seq_data(n=80, seed=2)
    base = LSTMClassifier(hidden_size=6, max_epochs=5, random_state=0).fit(X, y)
    cw = LSTMClassifier(hidden_size=6, max_epochs=5, random_state=0,
                        class_weight={0: 10.0}).fit(X, y)
    bal = LSTMClassifier(hidden_size=6, max_epochs=5, random_state=0,
                         class_weight="balanced").fit(X[:50], y[:50])
    assert bal.predict(X).shape == (80,)
    # class 0 weighted up: more class-0 probability on average
    assert cw.predict_proba(X)[:, 0].mean() > base.predict_proba(X)[:, 0].mean()
    with pytest.raises(ValueError, match="class_weight"):
        LSTMClassifier(class_weight={7: 2.0}, max_epochs=1).fit(X, y)


# ---------------------------------------------------------------- sample_weight

def _outputs(m, X):
    return m.predict_proba(X) if m._is_classifier else m.predict(X)


def _repeat(X, y, w):
    return X.repeat(w, axis=0), y.repeat(w, axis=0)


def _assert_same_model(a, b, X):
    for k, v in a.model_.params().items():
        np.testing.assert_array_equal(v, b.model_.params()[k], err_msg=k)
    np.testing.assert_array_equal(_outputs(a, X), _outputs(b, X))
    for name in ("x_mean_", "x_scale_", "y_mean_", "y_scale_", "classes_", "_class_weights_"):
        if getattr(a, name, None) is not None:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_ and a.t_ == b.t_


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_integer_weights_are_repetitions_bitwise_in_minibatch_training(cls, dtype):
    """Integer sample_weight = the samples repeated, bitwise, in mini-batch Adam
    training, with the weighted samples in another order than the repeated ones (as
    scikit-learn's check shuffles them), zeros among the weights, and early stopping
    drawing its validation split."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(23, 5, 3)) * 3 + 1
    y = rng.integers(0, 3, size=23) if cls._is_classifier else \
        np.stack([X[:, :, 0].sum(1), 100 + X[:, :, 1].max(1)], axis=1)
    w = rng.integers(0, 4, size=23)
    w[0] = 0
    perm = rng.permutation(23)
    kw = dict(hidden_size=6, batch_size=7, max_epochs=6, dtype=dtype, random_state=3,
              optimizer="adam", learning_rate=0.02)
    for extra in ({}, dict(early_stopping=True, validation_fraction=0.2)):
        rep = cls(**kw, **extra).fit(*_repeat(X, y, w))
        wtd = cls(**kw, **extra).fit(X[perm], y[perm], sample_weight=w[perm])
        _assert_same_model(rep, wtd, X)
        if extra:
            assert rep.validation_scores_ == wtd.validation_scores_
    # and the weights are used: the model differs from the unweighted one
    assert not np.array_equal(_outputs(cls(**kw).fit(X, y), X), _outputs(wtd, X))


@pytest.mark.parametrize("cls,kw", [
    (LSTMClassifier, dict(dropout=0.3, num_layers=2, bidirectional=True,
                          class_weight="balanced", lr_schedule="plateau")),
    (GRUClassifier, dict(optimizer="rmsprop", weight_decay=1e-3, lr_schedule="cosine",
                         n_jobs=2)),
    (RNNRegressor, dict(optimizer="adamw", dropout=0.2, num_layers=2, early_stopping=True)),
    (LSTMClassifier, dict(optimizer="sgd", clip_grad_norm=None, batch_size=1)),
], ids=["dropout-bidir-balanced-plateau", "rmsprop-decay-cosine-2threads",
        "adamw-dropout-early-stopping", "sgd-batch-1"])
def test_integer_weights_are_repetitions_in_every_training_setting(cls, kw):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(19, 5, 2))
    y = rng.integers(0, 3, 19) if cls._is_classifier else X.sum(axis=(1, 2))
    w = rng.integers(0, 4, 19)
    perm = rng.permutation(19)
    args = dict(hidden_size=4, max_epochs=5, batch_size=6, random_state=1)
    args.update(kw)
    _assert_same_model(cls(**args).fit(*_repeat(X, y, w)),
                       cls(**args).fit(X[perm], y[perm], sample_weight=w[perm]), X)


def test_integer_weights_are_repetitions_in_partial_fit():
    rng = np.random.default_rng(1)
    X, y, w = rng.normal(size=(15, 4, 2)), rng.integers(0, 3, 15), rng.integers(0, 3, 15)
    perm = rng.permutation(15)
    a = LSTMClassifier(hidden_size=4, batch_size=5, random_state=0)
    b = LSTMClassifier(hidden_size=4, batch_size=5, random_state=0)
    for _ in range(3):
        a.partial_fit(*_repeat(X, y, w), classes=[0, 1, 2])
        b.partial_fit(X[perm], y[perm], classes=[0, 1, 2], sample_weight=w[perm])
    _assert_same_model(a, b, X)


@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor], ids=lambda c: c.__name__)
def test_all_ones_weights_and_any_order_give_the_model_of_no_weights(cls):
    X, y = small_seq_data(n=30, seed=6)
    target = y if cls._is_classifier else X.sum(axis=(1, 2))
    kw = dict(hidden_size=5, batch_size=8, max_epochs=3, random_state=0)
    base = cls(**kw).fit(X, target)
    _assert_same_model(base, cls(**kw).fit(X, target, sample_weight=np.ones(30)), X)
    _assert_same_model(base, cls(**kw).fit(X, target, sample_weight=[1] * 30), X)
    perm = np.random.default_rng(0).permutation(30)
    _assert_same_model(base, cls(**kw).fit(X[perm], target[perm]), X)


def test_shuffle_false_weights_repeat_in_place():
    """Without shuffling fit trains in the order of X: weight k is the sample repeated k
    times where it stands (X.repeat(w)), not elsewhere."""
    X, y = small_seq_data(n=20, seed=7)
    w = np.arange(20) % 3
    kw = dict(hidden_size=5, batch_size=6, max_epochs=3, random_state=0, shuffle=False)
    _assert_same_model(LSTMClassifier(**kw).fit(*_repeat(X, y, w)),
                       LSTMClassifier(**kw).fit(X, y, sample_weight=w), X)
    rev = LSTMClassifier(**kw).fit(*_repeat(X[::-1], y[::-1], w[::-1]))
    assert not np.array_equal(rev.predict_proba(X),
                              LSTMClassifier(**kw).fit(X, y, sample_weight=w).predict_proba(X))


def test_zero_weight_is_removal_even_of_a_class_and_of_the_longest_sequence():
    seqs, y = ragged(n=25, seed=3)
    y = y.copy()
    longest = int(np.argmax([len(s) for s in seqs]))
    y[longest] = 7                                     # a class only a zero-weighted has
    w = np.ones(25, dtype=int)
    w[longest] = 0
    kw = dict(hidden_size=5, batch_size=4, max_epochs=2, random_state=0,
              class_weight="balanced")
    keep = [i for i in range(25) if i != longest]
    a = GRUClassifier(**kw).fit([seqs[i] for i in keep], y[keep])
    b = GRUClassifier(**kw).fit(seqs, y, sample_weight=w)
    assert list(b.classes_) == [0, 1]
    _assert_same_model(a, b, seqs)


def test_integer_weights_survive_hash_collisions(monkeypatch):
    """The canonical order must not depend on the hash: with every hash equal it falls
    back to ordering by bytes, and weights still equal repetitions."""
    from fastrnn.estimators import _inputs
    monkeypatch.setattr(_inputs, "_row_hash", lambda a: np.zeros(len(a), dtype=np.uint64))
    X, y = small_seq_data(n=12, seed=8)
    w = np.arange(12) % 3
    perm = np.random.default_rng(1).permutation(12)
    kw = dict(hidden_size=4, batch_size=5, max_epochs=2, random_state=0)
    _assert_same_model(LSTMRegressor(**kw).fit(*_repeat(X, X.sum(axis=(1, 2)), w)),
                       LSTMRegressor(**kw).fit(X[perm], X.sum(axis=(1, 2))[perm],
                                               sample_weight=w[perm]), X)


@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor], ids=lambda c: c.__name__)
def test_non_integer_weights_agree_with_proportional_repetition_in_full_batches(cls):
    """Weights 0.37 * k in one batch per epoch (float64, SGD) give the model of the
    samples repeated k times, to rounding: the loss normalisation, the input and target
    scaling and 'balanced' class weights are all weighted alike."""
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15) if cls._is_classifier else X @ rng.rand(30)
    k = rng.randint(0, 5, size=15)
    kw = dict(random_state=0, dtype="float64", batch_size=1000, optimizer="sgd",
              max_epochs=60, hidden_size=8)
    if cls._is_classifier:
        kw["class_weight"] = "balanced"
    a = cls(**kw).fit(*_repeat(X, y, k))
    b = cls(**kw).fit(X, y, sample_weight=0.37 * k)
    np.testing.assert_allclose(_outputs(a, X), _outputs(b, X), rtol=1e-10, atol=1e-12)


def test_too_many_virtual_samples_is_a_clear_error():
    X, y = small_seq_data(n=10)
    w = np.ones(10)
    w[0] = 2.0 ** 29
    with pytest.raises(ValueError, match="integer sample_weight acts as repetitions"):
        LSTMClassifier(max_epochs=1).fit(X, y, sample_weight=w)


@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor], ids=lambda c: c.__name__)
def test_non_integer_weights_weight_the_loss_gradient(cls, monkeypatch):
    """One full-batch SGD step with non-integer weights moves the weights by -lr times
    sum_i w_i g_i / sum_i w_i, g_i the gradient of sample i alone (numpy combines
    them), and the target scaling is the weighted one."""
    X, y = small_seq_data(n=9, seed=9)
    X = X.astype(np.float64)
    target = y if cls._is_classifier else 3 + 2 * X.sum(axis=(1, 2))
    w = np.array([0.5, 1.7, 0.25, 3.0, 1.0, 0.1, 2.2, 0.9, 1.3])
    seen = record_snapshots(monkeypatch)
    lr = 0.05
    m = cls(hidden_size=5, optimizer="sgd", learning_rate=lr, batch_size=9, max_epochs=1,
            clip_grad_norm=None, shuffle=False, dtype="float64", random_state=0)
    m.fit(X, target, sample_weight=w)
    start = {k: v for k, v in seen[0].items() if not k.startswith("__")}
    if not cls._is_classifier:
        assert m.y_mean_[0] == pytest.approx(np.average(target, weights=w), rel=1e-13)
        Y = ((target - m.y_mean_[0]) / m.y_scale_[0])[:, None]
    else:
        Y = np.searchsorted(m.classes_, y).astype(np.int32)
    np.testing.assert_allclose(m.x_mean_, np.average(X.reshape(-1, 3), axis=0,
                                                     weights=np.repeat(w, 6)), rtol=1e-13)
    after = {k: v.copy() for k, v in m.model_.params().items()}
    params = m.model_.params()
    Xs = (X - m.x_mean_) / m.x_scale_
    ref = {k: np.zeros_like(v) for k, v in start.items()}
    for i in range(9):
        for k, v in params.items():
            v[...] = start[k]
        out = m.model_.forward(Xs[i:i + 1], np.array([6]), True, 1)
        _, d = m._loss(out, Y[i:i + 1], np.ones(1), 1)
        for k, g in m.model_.backward(d, 1).items():
            ref[k] += w[i] / w.sum() * g
    for k in start:
        np.testing.assert_allclose(after[k], start[k] - lr * ref[k], rtol=1e-10, atol=1e-13,
                                   err_msg=k)
    # and not the unweighted mean gradient
    unweighted = cls(**m.get_params()).fit(X, target).model_.params()
    assert not all(np.allclose(unweighted[k], after[k], rtol=1e-6) for k in after)


def test_classifier_outputs_consistent():
    X, y = small_seq_data(n=60, n_classes=3)
    labels = np.array(["cat", "dog", "eel"])[y]
    m = GRUClassifier(hidden_size=8, max_epochs=3, random_state=0).fit(X, labels)
    assert list(m.classes_) == ["cat", "dog", "eel"]
    proba = m.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(m.predict_log_proba(X)), proba, rtol=1e-6)
    assert set(m.predict(X)) <= set(m.classes_)
    np.testing.assert_array_equal(m.classes_[m.decision_function(X).argmax(1)], m.predict(X))
    assert 0.0 <= m.score(X, labels) <= 1.0


def test_regressor_standardises_targets():
    X, _ = small_seq_data(n=100, T=5, F=2)
    y = 5e4 + 1e3 * X[:, :, 0].sum(axis=1)
    m = LSTMRegressor(hidden_size=16, max_epochs=60, random_state=0).fit(X, y)
    assert abs(m.y_mean_[0] - y.mean()) < 1e-6 * abs(y.mean())
    assert m.score(X, y) > 0.8
    assert abs(m.predict(X).mean() - y.mean()) < 0.1 * y.std()
    Y2 = np.stack([y, -y], axis=1)
    m2 = GRURegressor(hidden_size=8, max_epochs=5, random_state=0).fit(X, Y2)
    assert m2.predict(X).shape == (100, 2)


def test_divergence_warns_and_keeps_finite_weights():
    X, y = small_seq_data(n=40)
    X = X * 1e3
    m = RNNClassifier(hidden_size=8, nonlinearity="relu", learning_rate=1e6,
                      clip_grad_norm=None, optimizer="sgd", max_epochs=20, random_state=0,
                      scale_inputs=False)
    with pytest.warns(RuntimeWarning, match="epoch"):
        m.fit(X, y)
    assert all(np.isfinite(v).all() for v in m.rnn_.params.values())
    assert np.isfinite(m.predict_proba(X)).all()


# ---------------------------------------------------------------- persistence

@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor, RNNClassifier],
                         ids=lambda c: c.__name__)
def test_pickle_and_save_load_round_trip(cls, tmp_path):
    seqs, y = ragged(n=30)
    target = y if cls._is_classifier else np.array([s.sum() for s in seqs])
    m = cls(hidden_size=6, max_epochs=3, bidirectional=True, num_layers=2,
            random_state=0).fit(seqs, target)
    pred = m.predict_proba(seqs) if cls._is_classifier else m.predict(seqs)
    m2 = pickle.loads(pickle.dumps(m))
    pred2 = m2.predict_proba(seqs) if cls._is_classifier else m2.predict(seqs)
    np.testing.assert_array_equal(pred, pred2)
    path = tmp_path / "model.npz"
    m.save(path)
    m3 = fastrnn.load(path)
    assert type(m3) is cls and m3.get_params() == m.get_params()
    pred3 = m3.predict_proba(seqs) if cls._is_classifier else m3.predict(seqs)
    np.testing.assert_array_equal(pred, pred3)
    if cls._is_classifier:
        np.testing.assert_array_equal(m3.classes_, m.classes_)


def test_load_rejects_bad_files(tmp_path):
    X, y = small_seq_data(n=20)
    m = LSTMClassifier(hidden_size=4, max_epochs=1, random_state=0).fit(X, y)
    good = tmp_path / "m.npz"
    m.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        fastrnn.load(trunc)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError):
        fastrnn.load(garbage)
    # a file holding a pickled object array is refused without unpickling it
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([object()], dtype=object))
    with pytest.raises(ModelFileError):
        fastrnn.load(evil)
    # newer format version
    import json
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(ModelFileError, match="format 99"):
        fastrnn.load(newer)


# ---------------------------------------------------------------- it must learn

def test_lstm_gru_solve_a_task_needing_memory_over_150_steps():
    X, y = make_majority(1800, n_steps=150, random_state=0)
    Xtr, ytr, Xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    # a model seeing only the last 30 steps: count the symbols there
    last30 = np.mean(Xte[:, -30:, :3].sum(axis=1).argmax(axis=1) == yte)
    assert last30 < 0.7
    for cls in (LSTMClassifier, GRUClassifier):
        m = cls(hidden_size=32, max_epochs=30, learning_rate=1e-2, random_state=0)
        acc = m.fit(Xtr, ytr).score(Xte, yte)
        assert acc >= 0.9, (cls.__name__, acc)


def test_sequential_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    X = (d.data / 16.0).reshape(-1, 8, 8)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.25, random_state=0,
                                          stratify=d.target)
    m = LSTMClassifier(hidden_size=64, max_epochs=30, random_state=0).fit(Xtr, ytr)
    assert m.score(Xte, yte) >= 0.95


def test_adding_problem_regression_learns():
    X, y = make_adding(1200, n_steps=30, random_state=0)
    m = GRURegressor(hidden_size=32, max_epochs=40, random_state=0).fit(X[:1000], y[:1000])
    assert m.score(X[1000:], y[1000:]) > 0.8


def test_keyboard_interrupt_keeps_last_epoch(monkeypatch):
    X, y = small_seq_data(n=64)
    m = LSTMClassifier(hidden_size=4, max_epochs=5, batch_size=16, random_state=0)
    calls = {"n": 0}
    orig = m._backward_batch

    def interrupting(d, nt):
        calls["n"] += 1
        if calls["n"] == 7:   # second epoch, third batch
            raise KeyboardInterrupt
        return orig(d, nt)

    monkeypatch.setattr(m, "_backward_batch", interrupting)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        m.fit(X, y)
    assert m.n_iter_ == 1
    assert np.isfinite(m.predict_proba(X)).all()
