"""One backward per training forward: an LSTM backward writes its gate gradients over
the gates its forward stored (no dG buffer of its own), so every layer's backward uses up
what the forward saved, and a second backward raises a clear error instead of reading
gradients as gates. A new training forward makes the next backward exact again."""
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import GRU, LSTM, RNN

sys.path.insert(0, os.path.dirname(__file__))
from reference import reference_backward  # noqa: E402
from test_layers import (CELLS, CELL_IDS, make_layer, ref_params, run_ref,  # noqa: E402
                         restore_threads, _scaled_close)  # noqa: F401 (a fixture)


def _state_grads(cell, h_n):
    d_h = np.ones_like(h_n)
    return (d_h, np.full_like(h_n, 0.5)) if cell == "lstm" else d_h


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_second_backward_raises(cell, nl):
    layer = make_layer(cell, nl, 5, 6, L=2, bidir=True, dtype=np.float32)
    X = np.random.default_rng(0).normal(size=(4, 7, 5)).astype(np.float32)
    out, state = layer.forward(X, training=True)
    h_n = state[0] if cell == "lstm" else state
    layer.backward(np.ones_like(out), _state_grads(cell, h_n))
    with pytest.raises(ValueError, match=r"backward\(\) already ran for the last one"):
        layer.backward(np.ones_like(out), _state_grads(cell, h_n))
    # the estimators' entry point says the same
    with pytest.raises(ValueError, match=r"already ran"):
        layer._train_backward(np.ones_like(out), None, 1)
    # an invalid d_out is refused before anything is used up
    layer.forward(X, training=True)
    with pytest.raises(ValueError, match="d_out must have shape"):
        layer.backward(np.ones((4, 7, 3), np.float32))
    layer.backward(np.ones_like(out))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_forward_backward_repeated_is_exact(cell, nl, dtype):
    """forward, backward, forward, backward on the same data: the same bits twice, and
    both equal to the float64 reference (the second forward rewrote what the first
    backward wrote over)."""
    rng = np.random.default_rng(1)
    B, T, I, H = 9, 11, 4, 20                   # H = 20: the AVX-512 steps' masked tail
    layer = make_layer(cell, nl, I, H, L=2, bidir=True, dtype=dtype)
    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B)
    d_out = rng.normal(size=(B, T, 2 * H)).astype(dtype)
    runs = []
    for _ in range(2):
        out, state = layer.forward(X, lengths, training=True)
        h_n = state[0] if cell == "lstm" else state
        runs.append(layer.backward(d_out, _state_grads(cell, h_n)))
    (dx1, g1), (dx2, g2) = runs
    np.testing.assert_array_equal(dx1, dx2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)

    h0 = np.zeros((4, B, H))
    _, h_ref, _, cache = run_ref(cell, nl, ref_params(layer), X.astype(np.float64), lengths,
                                 h0, h0 if cell == "lstm" else None, 2, True)
    d_h = np.ones_like(h_ref)
    d_c = np.full_like(h_ref, 0.5) if cell == "lstm" else None
    dX_ref, g_ref = reference_backward(cache, d_out.astype(np.float64), d_h, d_c)
    rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
    _scaled_close(dx1, dX_ref, rtol, atol, "dX")
    for k in g_ref:
        _scaled_close(g1[k], g_ref[k], rtol, atol, k)


def test_lstm_backward_workspace_holds_no_gate_gradients():
    """The LSTM backward workspace no longer holds a (T, B, 4H) dG of its own; GRU and
    RNN still need theirs."""
    B, T, I, H = 64, 100, 32, 128
    for cell, gates in (("lstm", 4), ("gru", 3), ("rnn_tanh", 1)):
        ws = _core.workspace_sizes(cell, B, T, I, H, False, 2, 16)[1]
        dg = T * B * gates * H
        if cell == "lstm":
            assert ws < dg, (cell, ws, dg)
        else:
            assert ws > dg, (cell, ws, dg)


def test_lstm_store_holds_gate_gradients_after_backward():
    """What the LSTM's backward leaves in the stored gates is dG itself: dW_hh equals
    dG^T h_prev summed over the steps (computed here in numpy from the buffers)."""
    rng = np.random.default_rng(2)
    B, T, I, H = 5, 6, 3, 4
    layer = LSTM(I, H, dtype=np.float64, random_state=0)
    X = rng.normal(size=(B, T, I))
    out, _ = layer.forward(X, training=True, n_threads=1)
    h_all, c_all, store = layer._cache["caches"][0][1][0]
    h_prev = h_all[:T].copy()            # loop order (T, B, H): h_{t-1} of every step
    dX, grads = layer.backward(rng.normal(size=out.shape), n_threads=1)
    dG = store.reshape(T * B, 4 * H)
    np.testing.assert_allclose(dG.T @ h_prev.reshape(T * B, H), grads["weight_hh_l0"],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dG.sum(0), grads["bias_hh_l0"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_fit_is_thread_invariant_on_reused_buffers(cell, nl, restore_threads):
    """fit runs its forward/backward pairs on buffers reused from batch to batch: its
    final float32 weights are the same bits on 1, 2 and 3 threads (with 2 and 3, at least
    two really work: the core's record of its team sizes says so), and it learns."""
    from fastrnn import GRUClassifier, LSTMClassifier, RNNClassifier
    cls = {"lstm": LSTMClassifier, "gru": GRUClassifier, "rnn": RNNClassifier}[cell]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(96, 20, 16)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    kw = dict(hidden_size=128, max_epochs=3, batch_size=32, random_state=0,
              early_stopping=False, n_iter_no_change=10)
    if cell == "rnn":
        kw["nonlinearity"] = nl
    results = []
    for nt in (1, 2, 3):
        _core.reset_threads_used()
        est = cls(n_jobs=nt, **kw).fit(X, y)
        assert _core.threads_used()[1] >= min(nt, 2), (nt, _core.threads_used())
        assert est.loss_curve_[-1] < est.loss_curve_[0]
        results.append({k: v.copy() for k, v in est.model_.params().items()})
    for other in results[1:]:
        for k in results[0]:
            np.testing.assert_array_equal(results[0][k], other[k], err_msg=k)
