"""The estimators' training loop reaches the layers through _train_forward /
_train_backward, which skip the per-call checks fit already made (issue 11: Python
overhead per batch). They must give the public forward/backward's bits, fall back to
them for anything unusual, keep the core in bounds, and small training calls must
really use more than one thread (the work threshold is 4e6 multiply-adds per thread)."""
import numpy as np
import pytest

import fastrnn
from fastrnn import GRU, LSTM, RNN, LSTMClassifier, _core
from fastrnn.estimators._tasks import ClassificationTask
from fastrnn.losses import softmax_cross_entropy_rows

LAYERS = [(LSTM, {}), (GRU, {}), (RNN, {"nonlinearity": "tanh"}),
          (RNN, {"nonlinearity": "relu"})]
IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.fixture
def restore_threads():
    n = fastrnn.get_num_threads()
    yield n
    fastrnn.set_num_threads(n)


def _data(B, T, I, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    return X, lengths


def _public(layer, X, lengths, d_out, d_h_n, return_sequences):
    out, state = layer.forward(X, lengths, training=True, return_sequences=return_sequences)
    h_n = state[0] if isinstance(state, tuple) else state
    d_state = None if d_h_n is None else ((d_h_n, None) if isinstance(layer, LSTM) else d_h_n)
    dX, grads = layer.backward(d_out, d_state)
    return out, h_n, dX, grads


def _fast(layer, X, lengths, d_out, d_h_n, return_sequences):
    out, state = layer._train_forward(X, lengths, None, return_sequences=return_sequences)
    h_n = state[0] if isinstance(state, tuple) else state
    dX, grads = layer._train_backward(d_out, d_h_n, None)
    return out, h_n, dX, grads


def _assert_same(a, b):
    out_a, h_a, dx_a, g_a = a
    out_b, h_b, dx_b, g_b = b
    if out_a is None:
        assert out_b is None
    else:
        np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(h_a, h_b)
    np.testing.assert_array_equal(dx_a, dx_b)
    assert g_a.keys() == g_b.keys()
    for k in g_a:
        np.testing.assert_array_equal(g_a[k], g_b[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cls,kw", LAYERS, ids=IDS)
def test_fast_path_is_bitwise_the_public_path(cls, kw, return_sequences, dtype):
    """Two layers, both directions, dropout between them, ragged lengths (int64, as
    fit's data holds them): the same outputs, states and gradients bit for bit."""
    X, lengths = _data(9, 7, 5, dtype)
    a = cls(5, 6, num_layers=2, bidirectional=True, dropout=0.3, dtype=dtype,
            random_state=1, **kw)
    b = cls(5, 6, num_layers=2, bidirectional=True, dropout=0.3, dtype=dtype,
            random_state=1, **kw)
    rng = np.random.default_rng(5)
    d_out = rng.standard_normal((9, 7, 12)).astype(dtype) if return_sequences else None
    d_h_n = None if return_sequences else rng.standard_normal((4, 9, 6)).astype(dtype)
    for _ in range(2):    # the second call reuses buffers and the cached call size
        _assert_same(_public(a, X, lengths, d_out, d_h_n, return_sequences),
                     _fast(b, X, lengths.astype(np.int64), d_out, d_h_n, return_sequences))
    np.testing.assert_array_equal(a.last_dropout_masks_[0], b.last_dropout_masks_[0])


def test_smaller_batch_after_a_larger_one_reuses_buffers_correctly():
    """An epoch's last, smaller batch runs in a prefix of the training buffers the
    larger batches made: the result equals a fresh layer's, and the next full batch
    again equals the public path."""
    X, lengths = _data(32, 10, 4, np.float32, seed=2)
    d_h_n = np.random.default_rng(3).standard_normal((1, 32, 16)).astype(np.float32)
    used = LSTM(4, 16, random_state=0)
    _fast(used, X, lengths, None, d_h_n, False)
    small = _fast(used, X[:5].copy(), lengths[:5], None, d_h_n[:, :5].copy(), False)
    assert used._train_bufs[("h", 0, 0)].size == 11 * 32 * 16   # kept, not reallocated
    fresh = LSTM(4, 16, random_state=0)
    _assert_same(small, _public(fresh, X[:5], lengths[:5], None, d_h_n[:, :5], False))
    _assert_same(_fast(used, X, lengths, None, d_h_n, False),
                 _public(fresh, X, lengths, None, d_h_n, False))


def test_fast_path_falls_back_to_the_checks():
    """Anything the fast path does not take goes through forward's checks: the same
    error messages as the public call."""
    layer = LSTM(3, 4, random_state=0)
    X = np.zeros((2, 5, 3), np.float32)
    # another dtype, non-contiguous: converted by forward, same result
    ref = layer.forward(X.astype(np.float32), None, training=True)[0]
    np.testing.assert_array_equal(layer._train_forward(X.astype(np.float64), None, None)[0],
                                  ref)
    Xf = np.zeros((2, 5, 6), np.float32)[:, :, ::2]
    np.testing.assert_array_equal(layer._train_forward(Xf, None, None)[0], ref)
    with pytest.raises(ValueError, match="input_size=3"):
        layer._train_forward(np.zeros((2, 5, 4), np.float32), np.full(2, 5, np.int32), None)
    with pytest.raises(ValueError, match="lengths must"):
        layer._train_forward(X, np.array([0, 5], np.int32), None)
    with pytest.raises(ValueError, match="lengths must"):
        layer._train_forward(X, np.array([6, 5], np.int32), None)
    with pytest.raises(ValueError, match="shape"):
        layer._train_forward(X, np.array([5, 5, 5], np.int32), None)
    with pytest.raises(ValueError, match="NaN"):
        layer._train_forward(np.full((2, 5, 3), np.nan), None, None)
    layer._train_forward(X, np.full(2, 5, np.int32), None)
    with pytest.raises(ValueError, match="d_out must have shape"):
        layer._train_backward(np.zeros((2, 5, 5), np.float32), None, None)
    with pytest.raises(ValueError, match=r"d_state \(d_h_n\) must have shape"):
        layer._train_backward(None, np.zeros((1, 3, 4), np.float32), None)
    fresh = LSTM(3, 4, random_state=0)
    with pytest.raises(ValueError, match="preceding forward"):
        fresh._train_backward(None, None, None)


@pytest.mark.parametrize("w", [None, "weights"])
def test_training_loss_equals_the_checked_loss(w):
    """The classifier's loss skips the label and weight checks (fit made them): its
    loss and gradient are softmax_cross_entropy_rows' bits, class weights included."""
    rng = np.random.default_rng(0)
    task = ClassificationTask()
    task._class_weights_ = np.array([0.5, 2.0, 1.25])
    logits = rng.standard_normal((11, 3)).astype(np.float32)
    y = rng.integers(0, 3, 11)
    rows = np.ones(11) if w is None else rng.uniform(0.1, 3.0, 11)
    loss, dz = task._loss(logits, y, rows, 1)
    ref_loss, ref_dz = softmax_cross_entropy_rows(logits, y, rows * task._class_weights_[y])
    assert loss == ref_loss
    np.testing.assert_array_equal(dz, ref_dz)
    task._class_weights_ = np.ones(4)   # a label past the logits' columns reaches the core
    with pytest.raises(ValueError, match="labels y must lie"):   # its bound check
        task._loss(logits, np.full(11, 3), rows, 1)


@pytest.mark.parametrize("cls,kw,H", [(LSTM, {}, 128), (GRU, {}, 128), (RNN, {}, 256)],
                         ids=IDS[:3])
def test_small_training_calls_use_two_threads_and_the_same_bits(cls, kw, H,
                                                                 restore_threads):
    """The shape of a small real problem (32 sequences of 8 steps, 8 features, hidden
    128; 1.8e7 multiply-adds per LSTM forward, 1.3e7 GRU, RNN of hidden 256 1.7e7) is
    cut into two chunks, so 2 and 3 threads really work on it, with the bits of one
    thread. (Before the threshold was lowered to 4e6 per thread, these ran on one.)"""
    X, lengths = _data(32, 8, 8, np.float32, seed=4)
    d_h_n = np.random.default_rng(6).standard_normal((1, 32, H)).astype(np.float32)
    from fastrnn.layers import _chunk_size
    assert _chunk_size(32, cls(8, H, **kw)._work(32, 8)) == 16    # two work items
    res = {}
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        layer = cls(8, H, random_state=0, **kw)
        _core.reset_threads_used()
        res[n] = _fast(layer, X, lengths, None, d_h_n, False)
        used = _core.threads_used()[1]
        assert used == 1 if n == 1 else used >= 2, (n, _core.threads_used())
    for n in (2, 3):
        _assert_same(res[1], res[n])


def test_fit_small_problem_same_model_for_any_thread_count(restore_threads):
    """End to end on the 1348x8x8 shape (smaller): fit's calls use two threads and the
    fitted weights are the same bits for 1, 2 and 3 threads."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    weights = {}
    for n in (1, 2, 3):
        _core.reset_threads_used()
        m = LSTMClassifier(hidden_size=128, batch_size=32, max_epochs=2, n_jobs=n,
                           random_state=0).fit(X, y)
        used = _core.threads_used()[1]
        assert used == 1 if n == 1 else used >= 2, (n, used)
        weights[n] = m.model_.params()
    for n in (2, 3):
        for k, v in weights[1].items():
            np.testing.assert_array_equal(weights[n][k], v, err_msg=k)


@pytest.mark.parametrize("cell", [LSTM, GRU], ids=["lstm", "gru"])
@pytest.mark.parametrize("H", [128, 48])
def test_streamed_and_plain_kept_rows_same_bits(cell, H, monkeypatch, restore_threads):
    """The training forward keeps its gates and states in the layer's buffers, which
    start on a 64-byte boundary so that the core writes whole rows with non-temporal
    stores (vmath.c); buffers that do not (the core then stores them as usual) must give
    the same outputs and gradients, bit for bit, on 1 and 2 threads, and agree with
    the float64 layer."""
    rng = np.random.default_rng(3)
    X, lengths = _data(48, 24, 9, np.float32, seed=3)
    d_out = rng.standard_normal((48, 24, H)).astype(np.float32)
    layer = cell(9, H, num_layers=2, random_state=1)
    for key, buf in layer.__dict__.get("_train_bufs", {}).items():
        assert buf.ctypes.data % 64 == 0, key
    runs = {}
    for aligned in (True, False):
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            if not aligned:          # every kept buffer 4 bytes past a 64-byte boundary
                real = cell._train_buffer

                def shifted(self, key, shape, _real=real):
                    size = int(np.prod(shape))
                    base = _real(self, ("shifted",) + key, (size + 16,))
                    assert base.ctypes.data % 64 == 0
                    return base[1:1 + size].reshape(shape)
                monkeypatch.setattr(cell, "_train_buffer", shifted)
            _core.reset_threads_used()
            out, _, dX, grads = _public(layer, X, lengths, d_out, None, True)
            assert _core.threads_used()[1] == n
            bufs = layer.__dict__["_train_bufs"]
            assert all((b.ctypes.data % 64 == 0) for k, b in bufs.items() if k[0] != "shifted")
            runs[aligned, n] = (out.copy(), dX.copy(), {k: v.copy() for k, v in grads.items()})
            monkeypatch.undo()
    ref = runs[True, 1]
    for key, (out, dX, grads) in runs.items():
        np.testing.assert_array_equal(out, ref[0], err_msg=str(key))
        np.testing.assert_array_equal(dX, ref[1], err_msg=str(key))
        for k, v in grads.items():
            np.testing.assert_array_equal(v, ref[2][k], err_msg=f"{k} {key}")
    layer64 = cell(9, H, num_layers=2, dtype=np.float64, random_state=1)
    out64, _, dX64, g64 = _public(layer64, X.astype(np.float64), lengths,
                                  d_out.astype(np.float64), None, True)
    assert np.abs(ref[0] - out64).max() < 1e-4
    for k, v in g64.items():
        assert np.abs(ref[2][k] - v).max() <= 1e-3 * (np.abs(v).max() + 1e-6), k
