"""predict* on equal-length input reaches the layers' plain inference path (no per-call
checks of lengths and zero states), the head's parameter check takes its common case
first, the input scaling of a few sequences skips the repeated mean/scale copies and the
input finiteness check is the core's one-pass check (a batch-1 predict: 73 -> 46 us,
issue 11). Every one of these must give exactly the bits of the paths they replace and
keep the errors for bad input."""
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import GRU, LSTM, RNN, GRURegressor, LSTMClassifier, RNNClassifier, _core
from fastrnn.dense import Dense
from fastrnn.estimators import _base


@pytest.fixture
def restore_threads():
    n = fastrnn.get_num_threads()
    yield n
    fastrnn.set_num_threads(n)


def _data(n=40, T=12, F=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, F)).astype(np.float32)
    return X, rng.integers(0, 3, n), rng.standard_normal(n)


ESTIMATORS = [
    lambda: LSTMClassifier(hidden_size=16, num_layers=2, bidirectional=True, max_epochs=2,
                           random_state=0),
    lambda: GRURegressor(hidden_size=16, max_epochs=2, random_state=0),
    lambda: RNNClassifier(hidden_size=16, max_epochs=2, random_state=0),
]


def _fitted(make, X, y, yr):
    est = make()
    return est.fit(X, yr if isinstance(est, GRURegressor) else y)


def _outputs(est, X):
    outs = [est.predict(X), est.predict(X[:1])]
    if hasattr(est, "predict_proba"):
        outs.append(est.predict_proba(X))
    return outs


@pytest.mark.parametrize("make", ESTIMATORS, ids=["lstm_bidir", "gru_reg", "rnn"])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_equal_length_predict_takes_the_plain_path_same_bits(make, n_threads, monkeypatch,
                                                             restore_threads):
    """Equal-length X goes through the layers' _infer_plain (proven: with the layers'
    full-check forward refused, predict still runs); the same sequences as a list take
    the full path (lengths given): the outputs are the same bits."""
    fastrnn.set_num_threads(n_threads)
    X, y, yr = _data()
    est = _fitted(make, X, y, yr)
    full_path = _outputs(est, [x for x in X])          # a list: the ragged route
    rnn_cls = type(est.model_.rnn)
    calls = []
    real = rnn_cls._infer_plain

    def spy(self, *a, **k):
        calls.append(a[0].shape)
        return real(self, *a, **k)

    def refuse(self, *a, **k):
        raise AssertionError("the layers' full-check forward ran")
    monkeypatch.setattr(rnn_cls, "_infer_plain", spy)
    monkeypatch.setattr(rnn_cls, "forward", refuse)
    plain = _outputs(est, X)
    assert calls and all(s[1] == X.shape[1] for s in calls)
    for a, b in zip(plain, full_path):
        assert np.array_equal(a, b)


def test_ragged_predict_keeps_the_full_path_and_bf16_keeps_its_precision(
        monkeypatch, restore_threads):
    """Sequences of different lengths still go through forward with their lengths;
    bf16 inference of equal-length X takes the plain path with its precision (the
    products in bf16 where the CPU has them)."""
    X, y, _ = _data()
    est = LSTMClassifier(hidden_size=8, max_epochs=1, random_state=0).fit(X, y)
    seen, runs = [], []
    real, real_run = LSTM.forward, LSTM._run_forward

    def spy(self, X, lengths=None, *a, **k):
        seen.append((lengths is not None, k.get("precision", "float32")))
        return real(self, X, lengths, *a, **k)

    def spy_run(self, *a):
        runs.append(a[-1])                       # use_bf16
        return real_run(self, *a)
    monkeypatch.setattr(LSTM, "forward", spy)
    monkeypatch.setattr(LSTM, "_run_forward", spy_run)
    est.predict([X[0], X[1, :5]])
    assert seen and seen[-1][0]
    assert runs[-1] is False
    est.set_params(inference_precision="bfloat16")
    n_seen = len(seen)
    with warnings.catch_warnings():       # the float32 fallback warns without bf16
        warnings.simplefilter("ignore")
        est.predict(X)
    assert len(seen) == n_seen            # equal lengths: the plain path, not forward
    assert runs[-1] is bool(_core.bf16_available())


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN], ids=["lstm", "gru", "rnn"])
def test_forward_with_n_threads_takes_the_plain_path(cls, monkeypatch, restore_threads):
    """forward(X, n_threads=k) of full-length sequences now takes the plain path too:
    the same bits as without n_threads (any k), and bad n_threads still raise."""
    fastrnn.set_num_threads(1)
    layer = cls(5, 64, num_layers=2, random_state=0)
    X = np.random.default_rng(1).standard_normal((2, 30, 5)).astype(np.float32)
    want = layer.forward(X)

    def refuse(*a, **k):
        raise AssertionError("the full path ran")
    monkeypatch.setattr(layer, "_check_X", refuse)
    for k in (1, 2, 3):
        got = layer.forward(X, n_threads=k)
        assert np.array_equal(got[0], want[0])
    monkeypatch.undo()
    with pytest.raises(TypeError, match="n_threads"):
        layer.forward(X, n_threads=1.5)
    with pytest.raises(ValueError, match="n_threads"):
        layer.forward(X, n_threads=0)


def test_scaling_few_and_many_sequences_same_bits(monkeypatch):
    """The input scaling repeats mean and scale over the steps only above
    _REPEAT_SCALING values; below, numpy broadcasts them: the same values either way."""
    X, y, _ = _data(n=30, T=9, F=3, seed=3)
    X = (X * 50 + 7).astype(np.float32)
    est = LSTMClassifier(hidden_size=8, max_epochs=1, random_state=0).fit(X, y)
    monkeypatch.setattr(_base, "_REPEAT_SCALING", 0)
    repeated = est.predict_proba(X)
    monkeypatch.setattr(_base, "_REPEAT_SCALING", 1 << 40)
    broadcast = est.predict_proba(X)
    assert np.array_equal(repeated, broadcast)


@pytest.mark.parametrize("layout", ["contiguous", "strided", "float64"])
def test_predict_still_refuses_nan_and_inf(layout):
    """The finiteness check of X (the core's one pass for C-contiguous float32/float64,
    numpy's otherwise) still refuses NaN and infinity."""
    X, y, _ = _data()
    est = LSTMClassifier(hidden_size=8, max_epochs=1, random_state=0).fit(X, y)
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[3, 5, 1] = bad
        if layout == "strided":
            Xb = np.asfortranarray(Xb)
            assert not Xb.flags.c_contiguous
        elif layout == "float64":
            Xb = Xb.astype(np.float64)
        with pytest.raises(ValueError, match="NaN or infinity"):
            est.predict(Xb)
    with pytest.raises(ValueError, match="too large"):
        est.predict(np.full((2, 12, 4), 1e300))


def test_param_check_common_case_and_fallback(monkeypatch):
    """checked_params (Dense, the recurrent layers, Embedding) returns the arrays
    themselves when they already are C-contiguous of the layer's dtype and shapes,
    without the conversion path (proven: with it refused, the calls still run), converts
    anything else as before, and still refuses a wrong shape."""
    from fastrnn import _checks
    from fastrnn.embedding import Embedding
    d = Dense(6, 3, random_state=0)
    layer = LSTM(6, 8, random_state=0)
    emb = Embedding(10, 6, random_state=0)
    W, b = d.params["weight"], d.params["bias"]
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    want = d.forward(x)
    real = _checks._as_real_array

    def refuse(*a, **k):
        raise AssertionError("the conversion path ran")
    monkeypatch.setattr(_checks, "_as_real_array", refuse)
    p = d._checked_params()
    assert p["weight"] is W and p["bias"] is b
    assert np.array_equal(d.forward(x), want)
    assert all(v is layer.params[k] for k, v in layer._checked_params().items())
    emb.forward(np.array([[1, 2, 3]]))
    with pytest.raises(AssertionError, match="conversion path"):    # not the common case
        _checks.checked_params({"weight": W.T.copy().T, "bias": b},
                               d.param_shapes(), np.float32)
    monkeypatch.setattr(_checks, "_as_real_array", real)
    d.params = {"weight": np.asfortranarray(W.astype(np.float64)), "bias": b.tolist()}
    p = d._checked_params()
    assert p["weight"].dtype == np.float32 and p["weight"].flags.c_contiguous
    assert np.array_equal(d.forward(x), want)
    d.params = {"weight": W[:, :5], "bias": b}
    with pytest.raises(ValueError, match="shape"):
        d.forward(x)
