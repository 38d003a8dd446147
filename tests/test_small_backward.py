"""Backward on small training problems: the weight gradients cut by gate rows (few
segments of rows, so the dW products are split in blocks of gate rows to keep two or
three threads busy), dW_ih summed step by step during the recurrence for few inputs
(I <= 8: SMALL and the odd sizes; I = 16 takes the product after the loop), and the
option to skip dX (need_dx=False / dx=None), which must leave every other gradient the
same, bit for bit.

Ground truths: the float64 numpy reference (tests/reference.py), and bitwise equality
across thread counts (1, 2, 3, on problems where the core's record shows that many
threads worked) and between the calls with and without dX."""
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import LSTM, GRU, RNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import reference_forward, reference_backward  # noqa: E402

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@pytest.fixture
def restore_threads():
    n = fastrnn.get_num_threads()
    yield n
    fastrnn.set_num_threads(n)


def _problem(cell, I, H, B, T, dtype, seed=0, variable=True):
    layer = CELLS[cell](I, H, dtype=dtype, random_state=seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = (rng.integers(1, T + 1, size=B) if variable
               else np.full(B, T)).astype(np.int32)
    d_h_n = rng.standard_normal((1, B, H)).astype(dtype)
    d_out = rng.standard_normal((B, T, H)).astype(dtype)
    return layer, X, lengths, d_h_n, d_out


def _grads(layer, X, lengths, d_out, d_h_n, n, need_dx=True):
    layer._train_forward(X, lengths, n, return_sequences=d_out is not None)
    for (key, _), buf in layer._ws.buffers.items():
        if key == "backward":      # scratch left by an earlier call must not be read
            buf.fill(np.nan)
    dX, g = layer._train_backward(d_out, d_h_n, n, need_dx=need_dx)
    return (None if dX is None else dX.copy()), {k: v.copy() for k, v in g.items()}


# 768 (t, b) rows: one segment of rows, so dW_hh (and dW_ih) are cut by gate rows; the
# work (>= 1.3e7 multiply-adds, 4e6 per thread) lets 3 threads work for every cell
SMALL = dict(I=8, H=128, B=32, T=24)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_problem_thread_invariant_and_right(cell, dtype, restore_threads):
    layer, X, lengths, d_h_n, d_out = _problem(cell, dtype=dtype, **SMALL)
    res = _grads_on_1_2_3_threads(layer, X, lengths, d_out, d_h_n)
    _check_reference(cell, layer, X, lengths, d_out, d_h_n, *res[3], dtype)


def _grads_on_1_2_3_threads(layer, X, lengths, d_out, d_h_n):
    """{n: (dX, grads)} on n = 1, 2, 3 threads, each seen working (the core's record),
    all bitwise equal."""
    res = {}
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        _core.reset_threads_used()
        res[n] = _grads(layer, X, lengths, d_out, d_h_n, n)
        assert _core.threads_used()[1] == n, (n, _core.threads_used())
    for n in (2, 3):
        np.testing.assert_array_equal(res[n][0], res[1][0], err_msg=f"dX, {n} threads")
        for k, v in res[1][1].items():
            np.testing.assert_array_equal(res[n][1][k], v, err_msg=f"{k}, {n} threads")
    return res


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("shape", [(5, 40, 33, 20), (3, 7, 17, 9), (16, 64, 32, 50)],
                         ids=["gh-not-32-aligned", "tiny", "S"])
def test_small_problem_odd_sizes_right(cell, shape):
    """Gate counts x hidden sizes that do not cut into whole blocks of 32 rows."""
    I, H, B, T = shape
    layer, X, lengths, d_h_n, d_out = _problem(cell, I, H, B, T, np.float64, seed=4)
    dX, g = _grads(layer, X, lengths, d_out, d_h_n, 2)
    _check_reference(cell, layer, X, lengths, d_out, d_h_n, dX, g, np.float64)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("I", range(1, 9))
def test_step_dw_ih_every_input_count(cell, I):
    """dW_ih summed during the recurrence (I <= 8) in float32: the AVX-512 kernel keeps
    a register block whose width depends on I, so every I is run, with gate widths
    (G * H for H = 5, 15, 20) whose last 16 columns are partial or whole."""
    for H in (5, 15, 20):
        layer, X, lengths, d_h_n, d_out = _problem(cell, I, H, 19, 9, np.float32, seed=I)
        dX, g = _grads(layer, X, lengths, d_out, d_h_n, 2)
        assert np.abs(g["weight_ih_l0"]).min() > 0
        _check_reference(cell, layer, X, lengths, d_out, d_h_n, dX, g, np.float32)


# dW_ih after the loop, from x gathered in loop order: I = 33 > 16 takes one pass over
# dG for dW_hh and dW_ih together (LSTM, RNN with the float32 kernel), I = 16 the two
# products apart; GRU its own input-side dG. Two bidirectional layers: reverse walks,
# and the upper layer's dX (computed in loop order, scattered to x's rows) of both
# directions adds into one buffer. 2560 rows: two segments of rows.
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("I", [16, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loop_order_weight_and_input_gradients(cell, I, dtype, restore_threads):
    B, T, H = 64, 40, 48
    layer = CELLS[cell](I, H, num_layers=2, bidirectional=True, dtype=dtype, random_state=5)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    lengths[0] = T
    d_h_n = rng.standard_normal((4, B, H)).astype(dtype)
    d_out = rng.standard_normal((B, T, 2 * H)).astype(dtype)
    dX, g = _grads_on_1_2_3_threads(layer, X, lengths, d_out, d_h_n)[2]
    assert np.all(dX[np.arange(T)[None, :] >= lengths[:, None]] == 0)   # padding rows
    params = {k: np.asarray(v, np.float64) for k, v in layer.params.items()}
    h0 = np.zeros((4, B, H))
    _, _, _, cache = reference_forward(cell, params, X.astype(np.float64), lengths, h0,
                                       h0 if cell == "lstm" else None, num_layers=2,
                                       bidirectional=True)
    r_dX, r_g = reference_backward(cache, d_out.astype(np.float64), d_h_n.astype(np.float64))
    rtol = 2e-4 if dtype == np.float32 else 1e-9
    for name, got, want in [("dX", dX, r_dX)] + [(k, g[k], r_g[k]) for k in params]:
        err = np.abs(np.asarray(got, np.float64) - want).max() / (np.abs(want).max() + 1e-30)
        assert err < rtol, (name, err)


def _check_reference(cell, layer, X, lengths, d_out, d_h_n, dX, g, dtype):
    params = {k: np.asarray(v, np.float64) for k, v in layer.params.items()}
    B, H = X.shape[0], layer.hidden_size
    h0 = np.zeros((1, B, H))
    _, _, _, cache = reference_forward(cell, params, X.astype(np.float64), lengths, h0,
                                       h0 if cell == "lstm" else None)
    r_dX, r_g = reference_backward(cache, d_out.astype(np.float64),
                                   d_h_n.astype(np.float64))
    rtol = 2e-4 if dtype == np.float32 else 1e-9
    for name, got, want in [("dX", dX, r_dX)] + [(k, g[k], r_g[k]) for k in params]:
        scale = np.abs(want).max() + 1e-30
        err = np.abs(np.asarray(got, np.float64) - want).max() / scale
        assert err < rtol, (name, err)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_d_out", [False, True])
def test_no_dx_same_gradients_bitwise(cell, dtype, with_d_out, restore_threads):
    """need_dx=False returns no dX and the same parameter and state gradients, bit for
    bit, as the full call, on 1, 2 and 3 working threads."""
    layer, X, lengths, d_h_n, d_out = _problem(cell, dtype=dtype, **SMALL)
    d_out = d_out if with_d_out else None
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        full_dx, full = _grads(layer, X, lengths, d_out, d_h_n, n)
        _core.reset_threads_used()
        none_dx, part = _grads(layer, X, lengths, d_out, d_h_n, n, need_dx=False)
        assert _core.threads_used()[1] == n
        assert none_dx is None and full_dx is not None
        assert np.abs(full_dx).max() > 0
        assert set(part) == set(full)
        for k, v in full.items():
            np.testing.assert_array_equal(part[k], v, err_msg=f"{k}, {n} threads")


def test_no_dx_two_layers_keeps_inner_dx():
    """With two layers the upper layer's dX feeds the lower one: need_dx=False only
    drops the first layer's, and the parameters' gradients stay the same."""
    layer = LSTM(6, 32, num_layers=2, dtype=np.float32, random_state=2)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 11, 6)).astype(np.float32)
    lengths = rng.integers(1, 12, size=20).astype(np.int32)
    d_h_n = rng.standard_normal((2, 20, 32)).astype(np.float32)
    full_dx, full = _grads(layer, X, lengths, None, d_h_n, 2)
    none_dx, part = _grads(layer, X, lengths, None, d_h_n, 2, need_dx=False)
    assert none_dx is None
    for k, v in full.items():
        np.testing.assert_array_equal(part[k], v, err_msg=k)
    assert np.abs(full["weight_ih_l0"]).max() > 0


def test_core_backward_dx_validation(monkeypatch):
    """The core takes dx None (no dX) and refuses a dx of the wrong dtype, size, layout
    or a read-only one before entering C."""
    layer, X, lengths, d_h_n, _ = _problem("lstm", 4, 16, 8, 5, np.float32)
    calls = []
    real = _core.backward

    def record(*a, **k):
        calls.append((a, k))
        return real(*a, **k)

    monkeypatch.setattr(_core, "backward", record)
    _grads(layer, X, lengths, None, d_h_n, 1)
    monkeypatch.setattr(_core, "backward", real)
    (args, kw), = calls
    args = list(args)
    dx = args[4]
    assert isinstance(dx, np.ndarray) and dx.shape == X.shape

    def call(new_dx):
        a = list(args)
        a[4] = new_dx
        a[6] = np.zeros_like(args[6])      # fresh weight-gradient outputs (added to)
        return real(*a, **kw)

    call(None)                                           # accepted: no dX
    with pytest.raises(TypeError, match="dx"):
        call(np.zeros(X.shape, np.float64))
    with pytest.raises(ValueError, match="dx"):
        call(np.zeros(X.size - 1, np.float32))
    with pytest.raises(ValueError, match="dx"):
        call(np.zeros(X.shape[::-1], np.float32).T)      # not C-contiguous
    ro = np.zeros(X.shape, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dx"):
        call(ro)
    with pytest.raises(TypeError, match="dx"):
        call([0.0] * X.size)


def test_estimator_fit_unchanged_by_skipped_dx(monkeypatch):
    """LSTMClassifier.fit (no embedding: it never reads dX) asks the layer for no dX and
    trains to the same weights as when dX is computed."""
    from fastrnn import LSTMClassifier
    from fastrnn.layers import _Recurrent
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def fit():
        m = LSTMClassifier(hidden_size=16, batch_size=16, max_epochs=2, random_state=0,
                           early_stopping=False, n_jobs=1)
        return m.fit(X, y)

    seen = []
    orig = _Recurrent._train_backward

    def spy(self, d_out, d_h_n, n_threads, need_dx=True):
        seen.append(need_dx)
        return orig(self, d_out, d_h_n, n_threads, need_dx)

    monkeypatch.setattr(_Recurrent, "_train_backward", spy)
    a = fit()
    assert seen and not any(seen)

    def spy_full(self, d_out, d_h_n, n_threads, need_dx=True):
        return orig(self, d_out, d_h_n, n_threads, True)

    monkeypatch.setattr(_Recurrent, "_train_backward", spy_full)
    b = fit()
    assert a.loss_curve_ == b.loss_curve_
