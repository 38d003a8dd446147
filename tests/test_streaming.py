"""Streams (fastrnn.streaming, Layer.stream): step-by-step inference must give bitwise the
outputs of predict / forward on the whole sequences (float32 with the AVX-512 kernel,
the default path; see fastrnn/streaming.py for what holds elsewhere), for every cell,
1-2 layers, every estimator kind, float and token input, with step_many, reset, state
round trips, bad inputs refused, and many streams in many threads."""
import threading

import numpy as np
import pytest

from fastrnn import (GRUClassifier, GRURegressor, GRUSequenceRegressor, GRUTagger,
                     LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor, LSTMTagger,
                     RNNClassifier, RNNRegressor, RNNSequenceRegressor, RNNTagger, _core)
from fastrnn.layers import GRU, LSTM, RNN
from fastrnn.streaming import make_stream

pytestmark = pytest.mark.skipif(not _core.avx512_paths(),
                                reason="bitwise equality needs the AVX-512 kernel path")

LAYERS = [(LSTM, {}), (GRU, {}), (RNN, {}), (RNN, {"nonlinearity": "relu"})]
# (input, hidden): small odd sizes, the H < 64 gate path, and shapes predict computes
# as two products per step (hidden a multiple of 64, enough work: the unit-split family)
SIZES = [(3, 7), (5, 40), (32, 128), (64, 64)]


def _stepwise(stream, X, copy=True):
    return np.stack([stream.step(X[:, t], copy=copy) for t in range(X.shape[1])], axis=1)


# ------------------------------------------------------------------ layers
@pytest.mark.parametrize("cls,kw", LAYERS)
@pytest.mark.parametrize("I,H", SIZES)
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
def test_layer_stream_equals_forward(cls, kw, I, H, L, B):
    rng = np.random.default_rng(I * H + L)
    layer = cls(I, H, num_layers=L, random_state=7, **kw)
    X = rng.standard_normal((B, 11, I)).astype(np.float32)
    s = layer.stream(B)
    for nt in (1, 2):
        out, state = layer.forward(X, n_threads=nt)
        s.reset()
        np.testing.assert_array_equal(_stepwise(s, X), out)
        h = state[0] if isinstance(state, tuple) else state
        got = s.get_state()
        np.testing.assert_array_equal(got[0] if isinstance(got, tuple) else got, h)
        s.reset()
        np.testing.assert_array_equal(s.step_many(X), out)
        s.reset()
        parts = [s.step_many(X[:, :4]), s.step_many(X[:, 4:5]), s.step_many(X[:, 5:])]
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), out)


@pytest.mark.parametrize("cls,kw", LAYERS)
@pytest.mark.parametrize("B", [2, 3])
def test_layer_stream_equals_forward_of_long_small_batches(cls, kw, B):
    """Batches of 2 and 3 long sequences: inference keeps them one work item (the unit
    split), so even the layers that compute x W_ih^T and h W_hh^T apart there (hidden
    128) stream the bits of forward; forward itself really ran on two threads."""
    rng = np.random.default_rng(B)
    layer = cls(32, 128, random_state=3, **kw)
    X = rng.standard_normal((B, 100, 32)).astype(np.float32)
    s = layer.stream(B)
    want = _stepwise(s, X)
    for nt in (1, 2):
        _core.reset_threads_used()
        out, _ = layer.forward(X, n_threads=nt)
        if _core.avx512_paths():
            assert _core.threads_used()[1] == nt
        np.testing.assert_array_equal(want, out)


def test_layer_stream_state_in_and_out():
    rng = np.random.default_rng(0)
    layer = LSTM(4, 16, num_layers=2, random_state=0)
    X = rng.standard_normal((2, 9, 4)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 16)).astype(np.float32)
    c0 = rng.standard_normal((2, 2, 16)).astype(np.float32)
    out, (h_n, c_n) = layer.forward(X, h0=h0, c0=c0, n_threads=1)
    s = layer.stream(2)
    s.set_state(h0, c0)
    np.testing.assert_array_equal(s.step_many(X), out)
    h, c = s.get_state()
    np.testing.assert_array_equal(h, h_n)
    np.testing.assert_array_equal(c, c_n)
    # continue from a saved state: the same as running on
    s2 = layer.stream(2)
    s2.set_state(h, c)
    X2 = rng.standard_normal((2, 5, 4)).astype(np.float32)
    out2, _ = layer.forward(X2, h0=h_n, c0=c_n, n_threads=1)
    np.testing.assert_array_equal(s2.step_many(X2), out2)


def test_layer_stream_output_buffer_and_copy():
    layer = GRU(3, 8, random_state=0)
    s = layer.stream(1)
    x = np.ones((1, 3), dtype=np.float32)
    a = s.step(x)
    b = s.step(x)
    assert a is b                         # the stream's buffer, overwritten
    c = s.step(x, copy=True)
    assert c is not b and np.array_equal(c, b)
    assert s.step(np.ones((1, 3))).dtype == np.float32   # float64 input converted
    assert s.step([1.0, 1.0, 1.0]).shape == (1, 8)         # (I,) for batch_size=1


def test_layer_stream_refuses():
    with pytest.raises(ValueError, match="bidirectional"):
        LSTM(3, 4, bidirectional=True).stream()
    layer = LSTM(3, 4, random_state=0)
    with pytest.raises(ValueError):
        layer.stream(0)
    with pytest.raises(TypeError):
        layer.stream(1.5)
    s = layer.stream(2)
    before = s.get_state()
    for bad in (np.zeros((1, 3)), np.zeros((2, 4)), np.zeros((2, 3, 1)), np.zeros(3)):
        with pytest.raises(ValueError):
            s.step(bad)
    with pytest.raises(ValueError, match="NaN"):
        s.step(np.array([[0, 0, 0], [0, np.nan, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        s.step_many(np.full((2, 3, 3), np.inf, dtype=np.float32))
    with pytest.raises(TypeError):
        s.step(np.array([["a", "b", "c"]] * 2))
    with pytest.raises(ValueError):
        s.step_many(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError):
        s.set_state(np.zeros((1, 2, 4)), np.zeros((1, 2, 5)))
    with pytest.raises(ValueError):
        s.set_state(np.zeros((1, 2, 4)))          # LSTM needs c
    with pytest.raises(ValueError, match="NaN"):
        s.set_state(np.full((1, 2, 4), np.nan), np.zeros((1, 2, 4)))
    after = s.get_state()
    for u, v in zip(before, after):                # nothing refused changed the state
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError):
        GRU(3, 4).stream().set_state(np.zeros((1, 1, 4)), np.zeros((1, 1, 4)))


# ------------------------------------------------------------------ estimators
def _series(n, T, F, seed):
    rng = np.random.default_rng(seed)
    return (3 + 2 * rng.standard_normal((n, T, F))).astype(np.float32)


def _fit(cls, X, y, **kw):
    params = dict(hidden_size=24, max_epochs=2, batch_size=8, random_state=0)
    params.update(kw)
    return cls(**params).fit(X, y)


SEQ_LEVEL = [LSTMClassifier, GRUClassifier, RNNClassifier, LSTMRegressor, GRURegressor,
             RNNRegressor]
PER_STEP = [LSTMTagger, GRUTagger, RNNTagger, LSTMSequenceRegressor, GRUSequenceRegressor,
            RNNSequenceRegressor]


def _predict_out(est, X):
    return est.predict_proba(X) if est._is_classifier else est.predict(X)


def _targets(cls, X):
    s = np.cumsum(X[..., 0] - 3, axis=1)
    if cls in PER_STEP:
        return (s > 0).astype(int) if "Tagger" in cls.__name__ else s
    return (s[:, -1] > 0).astype(int) if "Classifier" in cls.__name__ else s[:, -1]


@pytest.mark.parametrize("cls", SEQ_LEVEL + PER_STEP)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_estimator_stream_equals_predict(cls, num_layers):
    X = _series(24, 7, 3, 1)
    est = _fit(cls, X, _targets(cls, X), num_layers=num_layers)
    Xt = _series(3, 7, 3, 2)
    full = _predict_out(est, Xt)
    for B, rows in ((1, [0]), (3, [0, 1, 2])):
        s = make_stream(est, batch_size=B)
        outs = [s.step(Xt[rows, t]) for t in range(7)]
        if cls in PER_STEP:
            np.testing.assert_array_equal(np.stack(outs, axis=1), full[rows])
        else:
            np.testing.assert_array_equal(outs[-1], full[rows])
            # each step's output is predict on the sequences ending there
            np.testing.assert_array_equal(outs[2], _predict_out(est, Xt[rows, :3]))
        s.reset()
        many = s.step_many(Xt[rows])
        np.testing.assert_array_equal(many, full[rows] if cls in PER_STEP else outs[-1])


@pytest.mark.parametrize("cls", [LSTMClassifier, LSTMTagger, LSTMRegressor])
def test_estimator_stream_unit_split_shapes(cls):
    """hidden 128, 32 inputs: predict computes each step as x W_ih^T and h W_hh^T apart
    (the unit-split family) for a batch of one, on any thread count."""
    X = _series(8, 5, 32, 3)
    est = _fit(cls, X, _targets(cls, X), hidden_size=128, max_epochs=1)
    Xt = _series(1, 6, 32, 4)
    s = make_stream(est)
    outs = [s.step(Xt[:, t]) for t in range(6)]
    for n_jobs in (1, 2):
        est.set_params(n_jobs=n_jobs)
        full = _predict_out(est, Xt)
        got = np.stack(outs, axis=1) if cls is LSTMTagger else outs[-1]
        np.testing.assert_array_equal(got, full)


def test_estimator_stream_ragged_and_univariate():
    rng = np.random.default_rng(5)
    X = [rng.normal(size=(rng.integers(2, 9), 2)).astype(np.float32) for _ in range(20)]
    y = [(np.cumsum(x[:, 0]) > 0).astype(int) for x in X]
    est = _fit(GRUTagger, X, y)
    probs = est.predict_proba(X[:4])
    s = make_stream(est)
    for x, p in zip(X[:4], probs):
        s.reset()
        np.testing.assert_array_equal(s.step_many(x[None])[0], p)
    # 2-D X: univariate series; a step is (batch_size, 1) or (batch_size,)
    X2 = rng.normal(size=(30, 6)).astype(np.float32)
    reg = _fit(LSTMRegressor, X2, X2.sum(axis=1))
    s = make_stream(reg, batch_size=2)
    for t in range(6):
        out = s.step(X2[:2, t]) if t % 2 else s.step(X2[:2, t:t + 1])
    np.testing.assert_array_equal(out, reg.predict(X2[:2]))


def test_estimator_stream_tokens():
    rng = np.random.default_rng(0)
    X = [rng.integers(0, 30, size=rng.integers(3, 10)) for _ in range(40)]
    y = np.array([int(x.sum() % 2) for x in X])
    est = _fit(LSTMClassifier, X, y, embedding_dim=8)
    # ids never seen (above the vocabulary, and inside it but unseen) read the unknown row
    seqs = [np.array([3, 1000, 2, 7]), np.array([5, 5, 29, 0, 12, 400])]
    for seq in seqs:
        s = make_stream(est)
        for t in seq:
            p = s.step(np.array([t]))
        np.testing.assert_array_equal(p, est.predict_proba([seq]))
    s = make_stream(est)
    with pytest.raises(ValueError, match=">= 0"):
        s.step(np.array([-1]))
    with pytest.raises(TypeError):
        s.step(np.array([0.5]))
    tag = _fit(GRUTagger, X, [(x % 2).astype(int) for x in X], embedding_dim=6)
    s = make_stream(tag, batch_size=2)
    Xp = np.stack([seqs[0], seqs[1][:4]])
    np.testing.assert_array_equal(s.step_many(Xp), tag.predict_proba(Xp))


def test_estimator_stream_state_round_trip():
    X = _series(20, 6, 2, 0)
    for cls in (LSTMRegressor, GRUTagger):
        est = _fit(cls, X, _targets(cls, X), num_layers=2)
        s = make_stream(est)
        s.step_many(X[:1, :3])
        saved = s.state
        a = s.step_many(X[:1, 3:])
        s.state = saved
        np.testing.assert_array_equal(s.step_many(X[:1, 3:]), a)
        s.reset()
        np.testing.assert_array_equal(s.step_many(X[:1]), a if cls is LSTMRegressor
                                      else est.predict_proba(X[:1]))
        with pytest.raises(ValueError):
            s.state = np.zeros((3, 1, 24))


def test_estimator_stream_refuses():
    X = _series(10, 5, 2, 0)
    est = _fit(LSTMClassifier, X, _targets(LSTMClassifier, X), bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        make_stream(est)
    with pytest.raises(Exception):
        make_stream(LSTMClassifier())              # not fitted
    est = _fit(GRURegressor, X, _targets(GRURegressor, X))
    s = make_stream(est, batch_size=2)
    with pytest.raises(ValueError):
        s.step(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        s.step(np.zeros((1, 2)))


def test_weights_are_a_snapshot():
    layer = RNN(3, 5, random_state=0)
    x = np.ones((1, 3), dtype=np.float32)
    s = layer.stream()
    before = s.step(x, copy=True)
    layer.params["weight_ih_l0"][:] = 0
    s.reset()
    np.testing.assert_array_equal(s.step(x), before)


# ------------------------------------------------------------------ threads
def test_many_streams_many_threads():
    X = _series(24, 12, 3, 6)
    est = _fit(LSTMTagger, X, _targets(LSTMTagger, X), num_layers=2, hidden_size=64)
    seqs = _series(8, 40, 3, 7)
    serial = []
    for i in range(8):
        s = make_stream(est)
        serial.append(np.stack([s.step(seqs[i:i + 1, t]) for t in range(40)], axis=1))
    results = [None] * 8
    barrier = threading.Barrier(8)

    def run(i):
        s = make_stream(est)
        barrier.wait()
        outs = []
        for rep in range(5):
            s.reset()
            outs = [s.step(seqs[i:i + 1, t]) for t in range(40)]
        results[i] = np.stack(outs, axis=1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], serial[i])
    np.testing.assert_array_equal(np.concatenate(serial), est.predict_proba(seqs))


def test_one_stream_two_threads_is_refused_not_raced():
    layer = LSTM(64, 256, num_layers=3, random_state=0)
    s = layer.stream(4)
    X = np.ones((4, 200, 64), dtype=np.float32)
    errors = []

    def run():
        try:
            for _ in range(5):
                s.step_many(X)
        except RuntimeError as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # either the calls never overlapped or the overlap was refused; never a silent race
    assert all("in use" in str(e) for e in errors)
