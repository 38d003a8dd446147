"""The C output head (src_c/dense.c, src_c/xent.c) through fastrnn._core and the Python
layer over it (fastrnn.dense.Dense, fastrnn.losses.softmax_cross_entropy_rows); the
cell table (_core.cell_info). References: numpy, finite differences and PyTorch."""
import numpy as np
import pytest

from fastrnn import _core
from fastrnn.dense import Dense
from fastrnn.layers import GRU, LSTM, RNN, _GATES, _STORE
from fastrnn.losses import softmax_cross_entropy, softmax_cross_entropy_rows

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def dense_core(x, w, b, dy, n_threads=1, want_dx=True):
    n, k = x.shape
    m = w.shape[0]
    ws = np.empty(_core.dense_workspace_size(n, k, m), dtype=x.dtype)
    y = np.empty((n, m), dtype=x.dtype)
    _core.dense_forward(y, x, w, b, ws, n_threads)
    dx = np.empty_like(x) if want_dx else None
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    _core.dense_backward(dx, dw, db, dy, x, w, ws, n_threads)
    return y, dx, dw, db


# ------------------------------------------------------------------ dense, core
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, m", [(1, 1, 1), (1, 5, 1), (7, 1, 3), (257, 33, 10),
                                     (1500, 17, 40), (2100, 64, 1), (513, 96, 37)])
def test_dense_core_matches_numpy(dtype, n, k, m):
    rng = np.random.default_rng(n + k + m)
    x, dy = rng.normal(size=(n, k)).astype(dtype), rng.normal(size=(n, m)).astype(dtype)
    w, b = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=m).astype(dtype)
    y, dx, dw, db = dense_core(x, w, b, dy, n_threads=2)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    tol = TOL[dtype] * max(1.0, np.sqrt(n)) if dtype == np.float32 else TOL[dtype]
    np.testing.assert_allclose(y, x64 @ w64.T + b, rtol=tol, atol=tol * np.sqrt(k))
    np.testing.assert_allclose(dx, dy64 @ w64, rtol=tol, atol=tol * np.sqrt(m))
    np.testing.assert_allclose(dw, dy64.T @ x64, rtol=tol, atol=tol * np.sqrt(n))
    np.testing.assert_allclose(db, dy64.sum(axis=0), rtol=tol, atol=tol * np.sqrt(n))


def test_dense_core_accumulates_weight_grads_and_skips_dx():
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(300, 8)), rng.normal(size=(300, 3))
    w, b = rng.normal(size=(3, 8)), rng.normal(size=3)
    ws = np.empty(_core.dense_workspace_size(300, 8, 3))
    dw, db = np.ones((3, 8)), np.ones(3)
    _core.dense_backward(None, dw, db, dy, x, w, ws, 1)
    np.testing.assert_allclose(dw, 1 + dy.T @ x, rtol=1e-12)
    np.testing.assert_allclose(db, 1 + dy.sum(0), rtol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3), (3,), (300, 3)])
def test_dense_layer_finite_differences(shape):
    rng = np.random.default_rng(1)
    layer = Dense(3, 4, dtype=np.float64, random_state=2)
    X = rng.normal(size=shape)
    R = rng.normal(size=shape[:-1] + (4,))

    def loss():
        return float(np.sum(R * np.tanh(layer.forward(X))))

    Y = layer.forward(X, training=True)
    dX, grads = layer.backward(R * (1 - np.tanh(Y) ** 2))
    h = 1e-6
    for arr, g in ((X, dX), (layer.params["weight"], grads["weight"]),
                   (layer.params["bias"], grads["bias"])):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            fp = loss()
            arr[idx] = old - h
            fm = loss()
            arr[idx] = old
            num[idx] = (fp - fm) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_layer_matches_numpy_any_leading_shape(dtype):
    rng = np.random.default_rng(3)
    layer = Dense(19, 11, dtype=dtype, random_state=0)
    X = rng.normal(size=(5, 7, 19)).astype(dtype)
    dY = rng.normal(size=(5, 7, 11)).astype(dtype)
    Y = layer.forward(X[:, ::1], training=True)
    dX, g = layer.backward(dY)
    W, b = (layer.params[k].astype(np.float64) for k in ("weight", "bias"))
    tol = TOL[dtype] * 10
    assert Y.shape == (5, 7, 11) and dX.shape == X.shape and Y.dtype == dtype
    np.testing.assert_allclose(Y, X @ W.T + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(dX, dY @ W, rtol=tol, atol=tol)
    np.testing.assert_allclose(g["weight"], dY.reshape(-1, 11).T.astype(np.float64)
                               @ X.reshape(-1, 19), rtol=tol, atol=tol)
    np.testing.assert_allclose(g["bias"], dY.sum((0, 1), dtype=np.float64), rtol=tol,
                               atol=tol)


def test_dense_layer_nan_reaches_output_and_empty_batch():
    layer = Dense(3, 2)
    Y = layer.forward(np.array([[np.nan, 0, 1], [0, 1, 2]] * 300))
    assert np.isnan(Y[0]).all() and np.isfinite(Y[1]).all()
    assert layer.forward(np.ones((0, 3)), training=True).shape == (0, 2)
    dX, g = layer.backward(np.ones((0, 2)))
    assert dX.shape == (0, 3) and not g["weight"].any() and not g["bias"].any()


# ------------------------------------------------------------------ thread counts
def test_dense_bitwise_identical_for_any_thread_count():
    # n * k * m = 20000 * 256 * 64 = 3.3e8 multiply-adds, 20 times the 1.6e7 per thread
    # below which the core keeps a call on one thread; 79 blocks of 256 rows forward and
    # 8 weight-gradient segments: 2 and 3 threads really share the work.
    rng = np.random.default_rng(4)
    n, k, m = 20000, 256, 64
    x = rng.normal(size=(n, k)).astype(np.float32)
    dy = rng.normal(size=(n, m)).astype(np.float32)
    w = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=m).astype(np.float32)
    ref = dense_core(x, w, b, dy, n_threads=1)
    for nt in (2, 3):
        _core.reset_threads_used()
        got = dense_core(x, w, b, dy, n_threads=nt)
        assert _core.threads_used()[1] == nt
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent_bitwise_identical_for_any_thread_count(dtype):
    # 20000 * 100 = 2e6 logits, 7 times the 2**18 per thread below which the core keeps
    # a call on one thread; 79 blocks of 256 rows
    rng = np.random.default_rng(5)
    z = rng.normal(size=(20000, 100)).astype(dtype) * 3
    y = rng.integers(0, 100, 20000).astype(np.int32)
    w = rng.random(20000).astype(dtype)
    out = []
    for nt in (1, 2, 3):
        dz = np.empty_like(z)
        _core.reset_threads_used()
        out.append((_core.softmax_xent(z, y, w, 0.5, dz, nt), dz))
        assert _core.threads_used() == (nt, nt)
    for loss, dz in out[1:]:
        assert loss == out[0][0]
        np.testing.assert_array_equal(dz, out[0][1])


# ------------------------------------------------------------------ softmax cross-entropy
def numpy_xent(z, y, w):
    z = z.astype(np.float64)
    s = z - z.max(1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    rows = np.arange(len(y))
    p = np.exp(logp)
    p[rows, y] -= 1
    return float(-(w * logp[rows, y]).sum()), w[:, None] * p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c", [(1, 1), (1, 4), (300, 7), (513, 2)])
def test_softmax_xent_core_matches_numpy(dtype, n, c):
    rng = np.random.default_rng(n * c)
    z = (rng.normal(size=(n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n).astype(np.int32)
    w = rng.random(n).astype(dtype)
    dz = np.empty_like(z)
    loss = _core.softmax_xent(z, y, w, 2.0, dz, 2)
    ref_loss, ref_dz = numpy_xent(z, y, w.astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(ref_loss, rel=tol, abs=tol)
    np.testing.assert_allclose(dz, 2.0 * ref_dz, rtol=tol, atol=tol)
    # no weights = ones; no dz = loss only
    assert _core.softmax_xent(z, y, None, 1.0, None, 1) == pytest.approx(
        numpy_xent(z, y, np.ones(n))[0], rel=tol, abs=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_rows_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    z = (rng.normal(size=(64, 9)) * 3).astype(dtype)
    z[:5] *= 1e4                      # huge logits stay finite
    y = rng.integers(0, 9, 64)
    w = rng.random(64).astype(dtype)
    loss, dz = softmax_cross_entropy_rows(z, y, row_weight=w, n_threads=2)
    zt = torch.tensor(z, requires_grad=True)
    wt = torch.tensor(w)
    lt = (torch.nn.functional.cross_entropy(zt, torch.tensor(y), reduction="none") * wt).sum() / wt.sum()
    lt.backward()
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert np.isfinite(loss) and np.isfinite(dz).all() and dz.dtype == dtype
    assert loss == pytest.approx(lt.item(), rel=tol)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=tol, atol=tol)
    # the same as the numpy implementation with sample weights
    ref_loss, ref_dz = softmax_cross_entropy(z, y, sample_weight=w)
    assert loss == pytest.approx(ref_loss, rel=tol)
    np.testing.assert_allclose(dz, ref_dz, rtol=tol, atol=tol)


def test_softmax_cross_entropy_rows_zero_weight_and_nan():
    z = np.random.default_rng(7).normal(size=(5, 3))
    loss, dz = softmax_cross_entropy_rows(z, [0, 1, 2, 0, 1], row_weight=np.zeros(5))
    assert loss == 0.0 and dz.shape == z.shape and not dz.any()
    z[2, 1] = np.nan
    loss, _ = softmax_cross_entropy_rows(z, [0, 1, 2, 0, 1])
    assert np.isnan(loss)
    with pytest.raises(ValueError, match="y must lie"):
        softmax_cross_entropy_rows(z, [0, 1, 3, 0, 1])
    with pytest.raises(ValueError, match="row_weight"):
        softmax_cross_entropy_rows(z, [0, 1, 2, 0, 1], row_weight=-np.ones(5))


# ------------------------------------------------------------------ cell table
def test_cell_info_matches_core_and_layers():
    info = _core.cell_info()
    assert set(info) == {"lstm", "gru", "rnn_tanh", "rnn_relu"}
    assert info["lstm"]["gates"] == ("i", "f", "g", "o")
    assert info["gru"]["gates"] == ("r", "z", "n")
    assert info["lstm"]["states"] == ("h", "c") and info["gru"]["states"] == ("h",)
    assert info["rnn_tanh"]["stored"] == () and info["rnn_tanh"]["store_width"] == 0
    for cell, d in info.items():
        assert _core.store_width(cell, 7) == 7 * d["store_width"]
        assert d["store_width"] in (0, len(d["stored"]))
    layers = {"lstm": LSTM(3, 5), "gru": GRU(3, 5), "rnn_tanh": RNN(3, 5),
              "rnn_relu": RNN(3, 5, nonlinearity="relu")}
    for cell, layer in layers.items():
        G = len(info[cell]["gates"])
        assert layer.params["weight_ih_l0"].shape == (G * 5, 3)
        assert layer.params["weight_hh_l0"].shape == (G * 5, 5)
        key = cell.split("_")[0]
        assert _GATES[key] == G and _STORE[key] == info[cell]["store_width"]


# ------------------------------------------------------------------ bad input
def _good_dense():
    rng = np.random.default_rng(8)
    x, w, b = rng.normal(size=(6, 4)), rng.normal(size=(3, 4)), np.zeros(3)
    return x, w, b, np.empty((6, 3)), np.empty(_core.dense_workspace_size(6, 4, 3))


@pytest.mark.parametrize("change, exc", [
    (lambda a: a.update(x=a["x"].astype(np.float32)), TypeError),
    (lambda a: a.update(w=a["w"][:, :3].copy()), ValueError),
    (lambda a: a.update(b=np.zeros(4)), ValueError),
    (lambda a: a.update(y=np.empty((6, 4))), ValueError),
    (lambda a: a.update(ws=np.empty(3)), ValueError),
    (lambda a: a.update(x=np.asfortranarray(np.ones((6, 4)))), ValueError),
    (lambda a: a.update(x=[[1.0] * 4] * 6), TypeError),
    (lambda a: a.update(y=np.empty((6, 3), dtype=np.int32)), TypeError),
])
def test_dense_core_rejects_bad_buffers(change, exc):
    x, w, b, y, ws = _good_dense()
    args = dict(x=x, w=w, b=b, y=y, ws=ws)
    change(args)
    with pytest.raises(exc):
        _core.dense_forward(args["y"], args["x"], args["w"], args["b"], args["ws"], 1)


def test_dense_backward_core_rejects_bad_buffers():
    x, w, b, y, ws = _good_dense()
    dy, dw, db = np.ones((6, 3)), np.zeros((3, 4)), np.zeros(3)
    with pytest.raises(ValueError, match="dx"):
        _core.dense_backward(np.empty((5, 4)), dw, db, dy, x, w, ws, 1)
    with pytest.raises(ValueError, match="dy"):
        _core.dense_backward(None, dw, db, np.ones((6, 2)), x, w, ws, 1)
    with pytest.raises(TypeError):
        _core.dense_backward(None, dw.astype(np.float32), db, dy, x, w, ws, 1)
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros((3, 4))
        ro.setflags(write=False)
        _core.dense_backward(None, ro, db, dy, x, w, ws, 1)
    with pytest.raises(ValueError, match="overlap"):
        _core.dense_backward(x, dw, db, dy, x, w, ws, 1)
    with pytest.raises(ValueError):
        _core.dense_workspace_size(-1, 4, 3)


def test_softmax_xent_core_rejects_bad_input():
    z, y = np.zeros((4, 3)), np.array([0, 1, 2, 0], dtype=np.int32)
    for bad_y in (np.array([0, 1, 3, 0], np.int32), np.array([0, -1, 2, 0], np.int32)):
        with pytest.raises(ValueError, match="labels"):
            _core.softmax_xent(z, bad_y, None, 1.0, None, 1)
    with pytest.raises(TypeError):
        _core.softmax_xent(z, y.astype(np.int64), None, 1.0, None, 1)
    with pytest.raises(ValueError):
        _core.softmax_xent(z, y[:3].copy(), None, 1.0, None, 1)
    with pytest.raises(ValueError):
        _core.softmax_xent(z, y, np.ones(5), 1.0, None, 1)
    with pytest.raises(ValueError):
        _core.softmax_xent(z, y, None, 1.0, np.empty((4, 2)), 1)
    with pytest.raises(TypeError):
        _core.softmax_xent(z.astype(np.float32), y, np.ones(4), 1.0, None, 1)
    with pytest.raises(ValueError):
        _core.softmax_xent(np.zeros((4, 3))[:, ::2], y, None, 1.0, None, 1)
    with pytest.raises(ValueError, match="overlap"):
        _core.softmax_xent(z, y, None, 1.0, z, 1)
    with pytest.raises(ValueError):
        _core.softmax_xent(np.zeros((4, 0)), y, None, 1.0, None, 1)
