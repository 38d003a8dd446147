"""Per-step estimators (taggers, sequence regressors) and token input: the structure of
y and of the outputs, losses over valid steps only, scikit-learn plumbing with ragged
lists, persistence, thread-count invariance, and that they learn what needs memory."""
import os
import pickle
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import (GRUClassifier, GRUSequenceRegressor, GRUTagger, LSTMClassifier,
                     LSTMRegressor, LSTMSequenceRegressor, LSTMTagger, RNNSequenceRegressor,
                     RNNTagger)
from fastrnn.datasets import make_marked_recall

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_probes import record_snapshots  # noqa: E402

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

TAGGERS = [LSTMTagger, GRUTagger, RNNTagger]
SEQ_REGRESSORS = [LSTMSequenceRegressor, GRUSequenceRegressor, RNNSequenceRegressor]


def ragged_tagging(n=40, F=2, seed=0, max_len=12):
    """Sequences of random lengths; the label at each step: is the running sum of
    feature 0 positive (needs memory of everything so far)."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(rng.integers(1, max_len + 1), F)).astype(np.float32)
         for _ in range(n)]
    y = [(np.cumsum(x[:, 0]) > 0).astype(int) for x in X]
    return X, y


def padded_tagging(n=60, T=8, F=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    return X, (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)


# ---------------------------------------------------------------- structure of y and outputs

def test_tagger_outputs_follow_the_input_structure():
    X, y = ragged_tagging()
    m = LSTMTagger(hidden_size=8, max_epochs=3, random_state=0).fit(X, y)
    pred, proba = m.predict(X), m.predict_proba(X)
    assert isinstance(pred, list) and isinstance(proba, list) and len(pred) == len(X)
    for x, p, q, lq in zip(X, pred, proba, m.predict_log_proba(X)):
        assert p.shape == (len(x),) and q.shape == (len(x), 2)
        np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.exp(lq), q, rtol=1e-6)
        np.testing.assert_array_equal(m.classes_[q.argmax(axis=1)], p)
    assert [d.shape for d in m.decision_function(X)] == [(len(x),) for x in X]
    Xp, yp = padded_tagging()
    m2 = GRUTagger(hidden_size=8, max_epochs=2, random_state=0).fit(Xp, yp)
    assert m2.predict(Xp).shape == (60, 8) and m2.predict_proba(Xp).shape == (60, 8, 2)
    # a list of equal-length sequences is an array-like: array output
    assert isinstance(m2.predict(list(Xp[:5])), np.ndarray)
    # string labels per step
    labels = [np.where(t == 1, "up", "down") for t in y]
    m3 = RNNTagger(hidden_size=6, max_epochs=2, random_state=0).fit(X, labels)
    assert list(m3.classes_) == ["down", "up"] and m3.predict(X)[0].dtype.kind == "U"


def test_sequence_regressor_outputs_follow_y():
    X, _ = ragged_tagging(n=30)
    y1 = [np.cumsum(x[:, 0]) for x in X]
    y2 = [np.stack([np.cumsum(x[:, 0]), x[:, 1]], axis=1) for x in X]
    m1 = LSTMSequenceRegressor(hidden_size=8, max_epochs=2, random_state=0).fit(X, y1)
    assert [p.shape for p in m1.predict(X)] == [(len(x),) for x in X]
    m2 = GRUSequenceRegressor(hidden_size=8, max_epochs=2, random_state=0).fit(X, y2)
    assert [p.shape for p in m2.predict(X)] == [(len(x), 2) for x in X]
    Xp, _ = padded_tagging(n=20)
    Yp = np.cumsum(Xp, axis=1)
    m3 = RNNSequenceRegressor(hidden_size=8, max_epochs=2, random_state=0).fit(Xp, Yp)
    assert m3.predict(Xp).shape == (20, 8, 2)
    assert m3.y_mean_.shape == (2,)


def test_mismatched_lengths_name_the_sample():
    X, y = ragged_tagging(n=10)
    bad = list(y)
    bad[3] = np.append(bad[3], 1)
    with pytest.raises(ValueError, match=r"y\[3\] has \d+ steps but X\[3\] has"):
        LSTMTagger(max_epochs=1).fit(X, bad)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        LSTMTagger(max_epochs=1).fit(X, y[:-1])
    with pytest.raises(ValueError, match="list of per-step target arrays"):
        LSTMTagger(max_epochs=1).fit(X, np.zeros(10))
    Xp, yp = padded_tagging(n=10)
    with pytest.raises(ValueError, match=r"shape \(10, 8\)"):
        LSTMTagger(max_epochs=1).fit(Xp, yp[:, :5])
    with pytest.raises(ValueError, match="use a Tagger"):
        LSTMClassifier(max_epochs=1).fit(Xp, yp)
    with pytest.raises(ValueError, match="use a SequenceRegressor"):
        LSTMRegressor(max_epochs=1).fit(Xp, np.zeros((10, 8, 1)))
    with pytest.raises(ValueError, match="continuous"):
        LSTMTagger(max_epochs=1).fit(Xp, yp + 0.5)


def test_padding_never_counts():
    """The same sequences, alone or batched with longer partners (whose padding sits
    behind them in the batch), give the same loss and gradients."""
    X, y = ragged_tagging(n=6, max_len=9, seed=3)
    m = LSTMTagger(hidden_size=5, max_epochs=1, dtype="float64", random_state=0).fit(X, y)
    data_all = _batch(m, X, y)
    short = [i for i in range(6) if len(X[i]) < max(len(x) for x in X)]
    sub = _batch(m, [X[i] for i in short], [y[i] for i in short])
    # a weight of zero on every other sequence in the full batch = the short ones alone
    w = np.zeros(6)
    w[short] = 1
    loss_w, grads_w = _loss_and_grads(m, *data_all, weights=w)
    loss_s, grads_s = _loss_and_grads(m, *sub)
    assert loss_w == pytest.approx(loss_s, rel=1e-12)
    for k in grads_s:
        np.testing.assert_allclose(grads_w[k], grads_s[k], rtol=1e-10, atol=1e-14)


def _batch(m, X, y):
    seqs = m._transform_inputs(m._read_X_predict(X))
    rows = m._target_rows(y, seqs)
    Y = np.searchsorted(m.classes_, rows).astype(np.int32)
    return seqs.values, seqs.lengths, Y


def _loss_and_grads(m, xb, lb, Y, weights=None):
    w = np.ones(len(lb)) if weights is None else weights
    out = m.model_.forward(xb, lb, True, 1)
    loss, d = m._loss(out, Y, np.repeat(w, lb).astype(xb.dtype), 1)
    grads = m.model_.backward(d, 1)
    return loss, {k: np.asarray(v) for k, v in grads.items()}


# ---------------------------------------------------------------- scikit-learn plumbing

@pytest.mark.parametrize("cls", TAGGERS + SEQ_REGRESSORS, ids=lambda c: c.__name__)
def test_params_clone_pickle_save_load(cls, tmp_path):
    X, y = ragged_tagging(n=24)
    if not cls._is_classifier:
        y = [np.cumsum(x, axis=0) for x in X]
    est = cls(hidden_size=6, max_epochs=2, bidirectional=True, num_layers=2, random_state=0)
    assert clone(est).get_params() == est.get_params()
    est.fit(X, y)
    out = est.predict_proba(X) if cls._is_classifier else est.predict(X)
    again = pickle.loads(pickle.dumps(est))
    est.save(tmp_path / "m.npz")
    loaded = fastrnn.load(tmp_path / "m.npz")
    assert type(loaded) is cls and loaded.get_params() == est.get_params()
    for other in (again, loaded):
        o = other.predict_proba(X) if cls._is_classifier else other.predict(X)
        for a, b in zip(out, o):
            np.testing.assert_array_equal(a, b)
    from sklearn.utils.estimator_checks import (check_get_params_invariance,
                                                check_no_attributes_set_in_init,
                                                check_parameters_default_constructible,
                                                check_set_params)
    for check in (check_get_params_invariance, check_no_attributes_set_in_init,
                  check_parameters_default_constructible, check_set_params):
        check(cls.__name__, cls())


def test_gridsearch_cross_val_pipeline_with_ragged_lists():
    X, y = ragged_tagging(n=60, seed=1)
    scores = cross_val_score(GRUTagger(hidden_size=8, max_epochs=30, learning_rate=1e-2,
                                       random_state=0), X, y,
                             cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.8)
    pipe = Pipeline([("scale", FunctionTransformer(lambda Z: [z * 2.0 for z in Z])),
                     ("tag", LSTMTagger(max_epochs=8, learning_rate=1e-2, random_state=0))])
    grid = GridSearchCV(pipe, {"tag__hidden_size": [4, 8]}, cv=2).fit(X, y)
    assert grid.best_params_["tag__hidden_size"] in (4, 8)
    assert [p.shape for p in grid.predict(X)] == [(len(x),) for x in X]
    Ys = [3 * x[:, 0] - x[:, 1] for x in X]
    r2 = cross_val_score(LSTMSequenceRegressor(hidden_size=8, max_epochs=40, learning_rate=1e-2,
                                               random_state=0),
                         X, Ys, cv=3)
    assert np.all(r2 > 0.8)


def test_score_is_over_all_valid_steps():
    X, y = ragged_tagging(n=30)
    m = RNNTagger(hidden_size=4, max_epochs=1, random_state=0).fit(X, y)
    pred = np.concatenate(m.predict(X))
    truth = np.concatenate(y)
    assert m.score(X, y) == pytest.approx(np.mean(pred == truth))
    w = np.arange(30) % 3
    steps_w = np.repeat(w, [len(x) for x in X])
    assert m.score(X, y, sample_weight=w) == pytest.approx(
        np.average(pred == truth, weights=steps_w))
    r = LSTMSequenceRegressor(hidden_size=4, max_epochs=1, random_state=0)
    Ys = [np.cumsum(x[:, 0]) for x in X]
    r.fit(X, Ys)
    P, T = np.concatenate(r.predict(X)), np.concatenate(Ys).astype(np.float64)
    assert r.score(X, Ys) == pytest.approx(1 - ((T - P) ** 2).sum() / ((T - T.mean()) ** 2).sum())


def test_partial_fit_warm_start_early_stopping_weights():
    X, y = ragged_tagging(n=50)
    m = LSTMTagger(hidden_size=6, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        m.partial_fit(X, y)
    m.partial_fit(X, y, classes=[0, 1])
    m.partial_fit(X, y)
    assert m.n_iter_ == 2
    w = GRUTagger(hidden_size=6, max_epochs=2, warm_start=True, random_state=0).fit(X, y)
    before = {k: v.copy() for k, v in w.model_.params().items()}
    w.fit(X, y)
    assert w.n_iter_ == 4 and any(not np.array_equal(before[k], v)
                                  for k, v in w.model_.params().items())
    es = LSTMTagger(hidden_size=6, max_epochs=30, early_stopping=True, n_iter_no_change=3,
                    random_state=0).fit(X, y)
    assert len(es.validation_scores_) == es.n_iter_
    assert es.best_validation_score_ == max(es.validation_scores_)
    base = LSTMTagger(hidden_size=6, max_epochs=5, random_state=0).fit(X, y)
    cw = LSTMTagger(hidden_size=6, max_epochs=5, random_state=0,
                    class_weight={0: 10.0}).fit(X, y)
    mean0 = lambda est: np.mean(np.concatenate([p[:, 0] for p in est.predict_proba(X)]))
    assert mean0(cw) > mean0(base)
    sw = np.where(np.arange(50) < 25, 5.0, 1.0)
    weighted = LSTMTagger(hidden_size=6, max_epochs=5, random_state=0).fit(X, y,
                                                                        sample_weight=sw)
    assert not np.array_equal(weighted.predict_proba(X)[0], base.predict_proba(X)[0])


def test_integer_sample_weight_equals_repetition_in_one_full_batch():
    """With one full batch in float64, weight 2 is the same loss and gradient as the
    sequence repeated: the loss is the mean over valid steps, weighted per sequence."""
    X, y = ragged_tagging(n=8, seed=5)
    m = LSTMTagger(hidden_size=5, max_epochs=1, dtype="float64", random_state=0).fit(X, y)
    w = np.array([2, 1, 0, 3, 1, 1, 2, 1])
    Xr = [x for x, k in zip(X, w) for _ in range(k)]
    yr = [t for t, k in zip(y, w) for _ in range(k)]
    lw, gw = _loss_and_grads(m, *_batch(m, X, y), weights=w.astype(float))
    lr, gr = _loss_and_grads(m, *_batch(m, Xr, yr))
    assert lw == pytest.approx(lr, rel=1e-12)
    for k in gw:
        np.testing.assert_allclose(gw[k], gr[k], rtol=1e-9, atol=1e-13)


def test_bidirectional_tagger_sees_the_future():
    """The label at each step is the NEXT step's sign: only a model that reads the
    sequence backwards too can know it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 10, 1)).astype(np.float32)
    y = np.zeros((400, 10), int)
    y[:, :-1] = X[:, 1:, 0] > 0
    uni = LSTMTagger(hidden_size=16, max_epochs=25, random_state=0).fit(X[:300], y[:300])
    bi = LSTMTagger(hidden_size=16, max_epochs=25, bidirectional=True,
                    random_state=0).fit(X[:300], y[:300])
    assert bi.score(X[300:], y[300:]) > 0.95
    assert uni.score(X[300:], y[300:]) < 0.7


@pytest.mark.parametrize("cls", [LSTMTagger, GRUSequenceRegressor, LSTMClassifier],
                         ids=lambda c: c.__name__)
def test_same_model_for_1_2_3_threads(cls):
    """A problem on which the core really uses several threads: each layer call is
    64 x 100 steps x 4 gates x 64 units x (24 + 64) inputs = 144M multiply-adds, over
    the 2 x 16M the core wants before it wakes a second thread, and the head's rows
    (6,400) span several of its fixed blocks."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 100, 24)).astype(np.float32)
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)
    target = y if cls._is_classifier else np.cumsum(X[:, :, :2], axis=1)
    kw = {}
    if cls is LSTMClassifier:     # token input: the embedding's sparse gradient too
        X = (np.abs(X[:, :, 0]) * 300).astype(np.int64)
        target = (X[:, 0] > 100).astype(int)
        kw = dict(embedding_dim=24)
    outs = []
    for n_jobs in (1, 2, 3):
        fastrnn._core.reset_threads_used()
        m = cls(hidden_size=64, max_epochs=2, batch_size=64, random_state=3,
                n_jobs=n_jobs, **kw).fit(X, target)
        assert fastrnn._core.threads_used()[1] == n_jobs
        outs.append(m.predict_proba(X) if cls._is_classifier else m.predict(X))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


# ---------------------------------------------------------------- it must learn

def test_lstm_tagger_learns_marked_recall_where_the_rnn_cannot():
    """The worked example done right: the label at every step is the symbol at the mark
    before the latest one, many steps back, behind a distractor at every step."""
    X, y = make_marked_recall(1200, n_steps=100, random_state=0)
    Xte, yte = make_marked_recall(300, n_steps=100, random_state=1)
    lstm = LSTMTagger(hidden_size=32, max_epochs=30, random_state=0).fit(X, y)
    rnn = RNNTagger(hidden_size=32, max_epochs=30, random_state=0).fit(X, y)
    assert lstm.score(Xte, yte) >= 0.99
    assert rnn.score(Xte, yte) < 0.4          # chance: 0.25


def test_sequence_regressor_learns_a_running_mean():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(rng.integers(5, 30), 1)) for _ in range(400)]
    y = [np.cumsum(x[:, 0]) / np.arange(1, len(x) + 1) for x in X]
    m = GRUSequenceRegressor(hidden_size=16, max_epochs=40, random_state=0).fit(X[:300], y[:300])
    assert m.score(X[300:], y[300:]) > 0.9


def test_format_1_files_still_load():
    from pathlib import Path
    d = Path(__file__).parent / "data"
    X = np.load(d / "format1_X.npy")
    clf = fastrnn.load(d / "format1_lstm_classifier.npz")
    np.testing.assert_allclose(clf.predict_proba(X),
                               np.load(d / "format1_lstm_classifier_proba.npy"), rtol=1e-6)
    reg = fastrnn.load(d / "format1_gru_regressor.npz")
    np.testing.assert_allclose(reg.predict(X), np.load(d / "format1_gru_regressor_pred.npy"),
                               rtol=1e-6)
    assert clf.scale_inputs is False and reg.x_mean_ is None


# ---------------------------------------------------------------- weights as repetitions

def _same_model(a, b):
    for k, v in a.model_.params().items():
        np.testing.assert_array_equal(v, b.model_.params()[k], err_msg=k)
    for name in ("x_mean_", "x_scale_", "y_mean_", "y_scale_", "classes_", "known_tokens_"):
        if getattr(a, name, None) is not None:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.loss_curve_ == b.loss_curve_ and a.t_ == b.t_


def _per_step_data(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "ragged tags":
        return ragged_tagging(n=17, seed=seed)
    if kind == "tokens":
        X = [rng.integers(0, 30, size=rng.integers(1, 9)) for _ in range(17)]
        return X, [(x % 3).astype(int) for x in X]
    if kind == "padded values":
        X = rng.normal(size=(17, 6, 2))
        return X, np.stack([np.cumsum(X[:, :, 0], 1), 5 + X[:, :, 1]], axis=2)
    X = [rng.normal(size=(rng.integers(1, 9), 2)) for _ in range(17)]    # ragged values
    return X, [np.cumsum(x[:, 0]) * 10 - 3 for x in X]


@pytest.mark.parametrize("cls,kind", [(LSTMTagger, "ragged tags"), (GRUTagger, "tokens"),
                                      (RNNTagger, "ragged tags"),
                                      (LSTMSequenceRegressor, "padded values"),
                                      (GRUSequenceRegressor, "ragged values"),
                                      (RNNSequenceRegressor, "ragged values")],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_integer_weights_are_repeated_sequences_bitwise(cls, kind):
    """A weight k per sequence = the sequence (all its steps) repeated k times, bitwise,
    in mini-batch Adam training, whatever the order of the weighted sequences."""
    X, y = _per_step_data(kind, seed=11)
    rng = np.random.default_rng(2)
    w = rng.integers(0, 4, size=17)
    w[3] = 0
    perm = rng.permutation(17)
    kw = dict(hidden_size=5, batch_size=4, max_epochs=4, random_state=1,
              optimizer="adam", learning_rate=0.02)
    if kind == "tokens":
        kw["embedding_dim"] = 3
    rep = [i for i in range(17) for _ in range(w[i])]
    pick = lambda a, idx: a[idx] if isinstance(a, np.ndarray) else [a[i] for i in idx]  # noqa
    for extra in ({}, dict(early_stopping=True, validation_fraction=0.25)):
        a = cls(**kw, **extra).fit(pick(X, rep), pick(y, rep))
        b = cls(**kw, **extra).fit(pick(X, perm), pick(y, perm), sample_weight=w[perm])
        _same_model(a, b)
        out = (lambda m: m.predict_proba(X)) if cls._is_classifier else (  # noqa
            lambda m: m.predict(X))
        for u, v in zip(out(a), out(b)):
            np.testing.assert_array_equal(u, v)
    # the weights are used: not the model of unweighted sequences
    assert any(not np.array_equal(u, v) for u, v in zip(out(cls(**kw).fit(X, y)), out(b)))


def test_non_integer_sequence_weights_weight_every_step_in_one_sgd_step(monkeypatch):
    """One full-batch SGD step of a tagger with non-integer sequence weights moves the
    weights by -lr * sum_i w_i T_i g_i / sum_i w_i T_i, g_i the gradient of sequence i
    alone (its mean over its T_i steps), combined in numpy; the input scaling is the
    weighted mean over the valid steps."""
    X, y = ragged_tagging(n=7, seed=12)
    X = [x.astype(np.float64) for x in X]
    w = np.array([0.3, 1.5, 2.25, 0.7, 1.1, 0.05, 3.0])
    seen = record_snapshots(monkeypatch)
    lr = 0.1
    m = LSTMTagger(hidden_size=4, optimizer="sgd", learning_rate=lr, batch_size=7,
                   max_epochs=1, clip_grad_norm=None, shuffle=False, dtype="float64",
                   random_state=0).fit(X, y, sample_weight=w)
    lengths = np.array([len(x) for x in X])
    np.testing.assert_allclose(m.x_mean_, np.average(np.concatenate(X), axis=0,
                                                     weights=np.repeat(w, lengths)),
                               rtol=1e-13)
    start = {k: v for k, v in seen[0].items() if not k.startswith("__")}
    after = {k: v.copy() for k, v in m.model_.params().items()}
    ref = {k: np.zeros_like(v) for k, v in start.items()}
    total = np.sum(w * lengths)
    for i in range(7):
        for k, v in m.model_.params().items():
            v[...] = start[k]
        _, g = _loss_and_grads(m, *_batch(m, [X[i]], [y[i]]))
        for k in ref:
            ref[k] += w[i] * lengths[i] / total * g[k]
    for k in start:
        np.testing.assert_allclose(after[k], start[k] - lr * ref[k], rtol=1e-10,
                                   atol=1e-13, err_msg=k)


@pytest.mark.parametrize("collide", [None, "all", "targets"],
                         ids=["hashed", "all hashes equal", "target hashes equal"])
def test_canonical_order_depends_only_on_the_contents(collide, monkeypatch):
    """The same multiset of (sequence, per-step targets) in any order is put in the same
    order of contents, also when sequences share inputs but not targets and when every
    hash collides (then the bytes decide)."""
    from fastrnn.estimators import _inputs
    real = _inputs._row_hash
    if collide == "all":
        monkeypatch.setattr(_inputs, "_row_hash",
                            lambda a: np.zeros(len(a), dtype=np.uint64))
    elif collide == "targets":    # the inputs hashed, the (integer) targets not
        monkeypatch.setattr(_inputs, "_row_hash", lambda a: real(a) if a.dtype.kind == "f"
                            else np.zeros(len(a), dtype=np.uint64))
    rng = np.random.default_rng(3)
    X = [rng.normal(size=(int(rng.integers(1, 5)), 2)) for _ in range(9)]
    X += [X[0].copy(), X[1].copy(), X[1].copy()]
    y = [rng.integers(0, 3, size=len(x)) for x in X]
    y[10] = y[1].copy()                      # a true duplicate of sequence 1
    y[11] = (y[1] + 1) % 3                   # same inputs as 1, other targets
    y[9] = y[0].copy()

    def ordered(perm):
        seqs = _inputs.read_X([X[i] for i in perm], np.float64)
        Y = np.concatenate([y[i] for i in perm])
        order = _inputs.canonical_order(seqs, Y, True)
        return [(X[perm[i]].tobytes(), y[perm[i]].tobytes()) for i in order]

    first = ordered(np.arange(12))
    for seed in range(4):
        assert ordered(np.random.default_rng(seed).permutation(12)) == first
