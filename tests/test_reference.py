"""Validation of the plain-numpy reference implementation in tests/reference.py.

(a) central finite differences (float64) against reference_backward;
(b) agreement with torch.nn.LSTM / GRU / RNN (float64), including packed sequences;
(c) a few semantic properties (padding, batch invariance, dropout masks).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import (reference_forward, reference_backward, init_params,  # noqa: E402
                       param_names, relu_margin)

CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------

def make_case(cell, nl, B, T, I, H, L, bidir, variable, seed, dropout_p=None,
              margin=1e-3):
    """Random params/inputs; for relu, re-draw until no pre-activation is near the kink."""
    D = 2 if bidir else 1
    for attempt in range(200):
        rng = np.random.default_rng(1000 * seed + attempt)
        params = init_params(cell, I, H, L, bidir, rng=rng, scale=0.8)
        X = rng.standard_normal((B, T, I))
        if variable:
            lengths = rng.integers(1, T + 1, size=B)
            lengths[rng.integers(B)] = T
        else:
            lengths = None
        h0 = 0.5 * rng.standard_normal((L * D, B, H))
        c0 = 0.5 * rng.standard_normal((L * D, B, H)) if cell == "lstm" else None
        masks = None
        if dropout_p is not None and L > 1:
            masks = [(rng.random((B, T, D * H)) >= dropout_p) / (1.0 - dropout_p)
                     for _ in range(L - 1)]
        R1 = rng.standard_normal((B, T, D * H))
        R2 = rng.standard_normal((L * D, B, H))
        R3 = rng.standard_normal((L * D, B, H)) if cell == "lstm" else None
        case = dict(cell=cell, nl=nl, L=L, bidir=bidir, params=params, X=X,
                    lengths=lengths, h0=h0, c0=c0, masks=masks, R1=R1, R2=R2, R3=R3)
        if cell == "rnn" and nl == "relu":
            _, _, _, cache = run_fwd(case)
            if relu_margin(cache) < margin:
                continue
        return case
    raise AssertionError("could not find a kink-free relu case")


def run_fwd(case, params=None, X=None, h0=None, c0=None):
    return reference_forward(
        case["cell"], case["params"] if params is None else params,
        case["X"] if X is None else X, case["lengths"],
        case["h0"] if h0 is None else h0, case["c0"] if c0 is None else c0,
        num_layers=case["L"], bidirectional=case["bidir"], nonlinearity=case["nl"],
        dropout_masks=case["masks"])


def loss_of(case, **kw):
    out, h_n, c_n, _ = run_fwd(case, **kw)
    loss = np.sum(out * case["R1"]) + np.sum(h_n * case["R2"])
    if case["cell"] == "lstm":
        loss += np.sum(c_n * case["R3"])
    return loss


def analytic(case):
    _, _, _, cache = run_fwd(case)
    return reference_backward(cache, case["R1"], case["R2"], case["R3"])


def fd_grad(f, arr, eps=1e-6, idx_list=None):
    """Central finite differences of scalar f() w.r.t. entries of arr (modified in place)."""
    g = np.zeros_like(arr)
    if idx_list is None:
        idx_list = list(np.ndindex(arr.shape))
    for idx in idx_list:
        old = arr[idx]
        arr[idx] = old + eps
        fp = f()
        arr[idx] = old - eps
        fm = f()
        arr[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g, idx_list


def assert_grad_close(a, n, name, rtol=1e-6, atol=1e-8):
    err = np.abs(a - n)
    tol = atol + rtol * np.maximum(np.abs(a), np.abs(n))
    bad = err > tol
    assert not bad.any(), "%s: max abs err %g (analytic %s vs numeric %s)" % (
        name, err.max(), a[bad][:5], n[bad][:5])


def fd_check_all(case, max_entries=None, seed=0):
    dX, grads = analytic(case)
    rng = np.random.default_rng(seed)

    def pick(arr):
        idx = list(np.ndindex(arr.shape))
        if max_entries is not None and len(idx) > max_entries:
            sel = rng.choice(len(idx), max_entries, replace=False)
            idx = [idx[i] for i in sel]
        return idx

    params = {k: v.copy() for k, v in case["params"].items()}
    X = case["X"].copy()
    h0 = case["h0"].copy()
    c0 = case["c0"].copy() if case["c0"] is not None else None

    def f():
        return loss_of(case, params=params, X=X, h0=h0, c0=c0)

    checked = 0
    for name in param_names(case["L"], case["bidir"]):
        ids = pick(params[name])
        n, _ = fd_grad(f, params[name], idx_list=ids)
        sel = tuple(np.array(ids).T)
        assert_grad_close(grads[name][sel], n[sel], name)
        checked += len(ids)
    ids = pick(X)
    n, _ = fd_grad(f, X, idx_list=ids)
    sel = tuple(np.array(ids).T)
    assert_grad_close(dX[sel], n[sel], "X")
    ids = pick(h0)
    n, _ = fd_grad(f, h0, idx_list=ids)
    sel = tuple(np.array(ids).T)
    assert_grad_close(grads["h0"][sel], n[sel], "h0")
    if case["cell"] == "lstm":
        ids = pick(c0)
        n, _ = fd_grad(f, c0, idx_list=ids)
        sel = tuple(np.array(ids).T)
        assert_grad_close(grads["c0"][sel], n[sel], "c0")
    else:
        assert "c0" not in grads
    assert checked > 0
    # analytic gradients should not be trivially zero
    assert np.abs(dX).max() > 1e-3
    assert np.abs(grads["weight_hh_l0"]).max() > 1e-3


# ----------------------------------------------------------------------------------
# (a) finite differences
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", [False, True], ids=["equal", "varlen"])
@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_fd(cell, nl, L, bidir, variable):
    seed = 7 * L + 3 * bidir + variable
    case = make_case(cell, nl, B=3, T=4, I=3, H=2, L=L, bidir=bidir,
                     variable=variable, seed=seed)
    fd_check_all(case, max_entries=25, seed=seed)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_fd_full_tiny(cell, nl):
    """Every single entry, 2 layers, bidirectional, variable lengths."""
    case = make_case(cell, nl, B=2, T=3, I=2, H=2, L=2, bidir=True, variable=True, seed=11)
    case["lengths"] = np.array([3, 1])
    fd_check_all(case, max_entries=None)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("L", [2, 3])
def test_reference_fd_dropout_masks(cell, nl, L):
    case = make_case(cell, nl, B=3, T=4, I=2, H=3, L=L, bidir=True, variable=True,
                     seed=21 + L, dropout_p=0.4)
    assert case["masks"] is not None and len(case["masks"]) == L - 1
    fd_check_all(case, max_entries=20, seed=5)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_fd_partial_state_grads(cell, nl):
    """d_h_n only / d_out only / (lstm) d_c_n only."""
    case = make_case(cell, nl, B=3, T=4, I=2, H=2, L=2, bidir=True, variable=True, seed=31)
    variants = [dict(R1=np.zeros_like(case["R1"])), dict(R2=np.zeros_like(case["R2"]))]
    if cell == "lstm":
        variants.append(dict(R1=np.zeros_like(case["R1"]), R2=np.zeros_like(case["R2"])))
    for v in variants:
        fd_check_all(dict(case, **v), max_entries=10, seed=1)
    # None for the state gradients is the same as zeros
    _, _, _, cache = run_fwd(case)
    dX_none, g_none = reference_backward(cache, case["R1"])
    dX_zero, g_zero = reference_backward(cache, case["R1"], np.zeros_like(case["R2"]),
                                         None if cell != "lstm" else
                                         np.zeros_like(case["R2"]))
    np.testing.assert_array_equal(dX_none, dX_zero)
    for k in g_none:
        np.testing.assert_array_equal(g_none[k], g_zero[k])


# ----------------------------------------------------------------------------------
# (c) semantic properties of the reference
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_padding_and_batch_invariance(cell, nl):
    case = make_case(cell, nl, B=4, T=6, I=3, H=3, L=2, bidir=True, variable=True, seed=41)
    case["lengths"] = np.array([6, 2, 1, 4])
    out, h_n, c_n, cache = run_fwd(case)
    for b, lb in enumerate(case["lengths"]):
        assert np.all(out[b, lb:] == 0.0)
        if nl != "relu":
            assert np.all(out[b, :lb] != 0.0)
    # each sample alone, truncated to its own length
    dX, grads = reference_backward(cache, case["R1"], case["R2"], case["R3"])
    for b, lb in enumerate(case["lengths"]):
        sub = dict(case, X=case["X"][b:b + 1, :lb], lengths=None,
                   h0=case["h0"][:, b:b + 1], c0=None if case["c0"] is None
                   else case["c0"][:, b:b + 1])
        o1, h1, c1, cache1 = run_fwd(sub)
        np.testing.assert_allclose(o1[0], out[b, :lb], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(h1[:, 0], h_n[:, b], rtol=1e-13, atol=1e-14)
        if cell == "lstm":
            np.testing.assert_allclose(c1[:, 0], c_n[:, b], rtol=1e-13, atol=1e-14)
        dX1, g1 = reference_backward(cache1, case["R1"][b:b + 1, :lb], case["R2"][:, b:b + 1],
                                     None if cell != "lstm" else case["R3"][:, b:b + 1])
        np.testing.assert_allclose(dX1[0], dX[b, :lb], rtol=1e-12, atol=1e-13)
        assert np.all(dX[b, lb:] == 0.0)
        np.testing.assert_allclose(g1["h0"][:, 0], grads["h0"][:, b], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_padded_d_out_ignored(cell, nl):
    case = make_case(cell, nl, B=3, T=5, I=2, H=2, L=2, bidir=True, variable=True, seed=51)
    case["lengths"] = np.array([5, 2, 3])
    _, _, _, cache = run_fwd(case)
    R1 = case["R1"].copy()
    dX1, g1 = reference_backward(cache, R1, case["R2"], case["R3"])
    for b, lb in enumerate(case["lengths"]):
        R1[b, lb:] = 1e3
    dX2, g2 = reference_backward(cache, R1, case["R2"], case["R3"])
    np.testing.assert_array_equal(dX1, dX2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_reference_lengths_validation():
    p = init_params("gru", 2, 2, rng=0)
    X = np.zeros((2, 3, 2))
    for bad in ([0, 3], [4, 1], [-1, 2], [3, 3, 3]):
        with pytest.raises(ValueError):
            reference_forward("gru", p, X, np.array(bad))


# ----------------------------------------------------------------------------------
# (b) agreement with torch (float64)
# ----------------------------------------------------------------------------------

def _torch_module(torch, cell, nl, I, H, L, bidir):
    kw = dict(num_layers=L, bidirectional=bidir, batch_first=True)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, **kw)
    if cell == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=nl, **kw)


def torch_run(torch, mod, cell, X, lengths, h0, c0, R1, R2, R3, packed):
    T = X.shape[1]
    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True) if cell == "lstm" else None
    state0 = (h0t, c0t) if cell == "lstm" else h0t
    mod.zero_grad()
    if packed:
        pk = torch.nn.utils.rnn.pack_padded_sequence(
            Xt, torch.as_tensor(np.asarray(lengths), dtype=torch.int64), batch_first=True,
            enforce_sorted=False)
        o, st = mod(pk, state0)
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=T)
    else:
        o, st = mod(Xt, state0)
    hn, cn = (st if cell == "lstm" else (st, None))
    loss = (o * torch.tensor(R1)).sum() + (hn * torch.tensor(R2)).sum()
    if cell == "lstm":
        loss = loss + (cn * torch.tensor(R3)).sum()
    loss.backward()
    res = dict(out=o.detach().numpy(), h_n=hn.detach().numpy(),
               c_n=None if cn is None else cn.detach().numpy(),
               dX=Xt.grad.numpy(), h0=h0t.grad.numpy())
    if cell == "lstm":
        res["c0"] = c0t.grad.numpy()
    res["grads"] = {k: p.grad.numpy().copy() for k, p in mod.named_parameters()}
    return res


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("L,bidir", [(1, False), (1, True), (2, False), (3, True)])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_vs_torch(cell, nl, L, bidir, packed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(L * 10 + bidir)
    B, T, I, H = 5, 6, 3, 4
    D = 2 if bidir else 1
    rng = np.random.default_rng(100 + 10 * L + 2 * bidir + packed)
    mod = _torch_module(torch, cell, nl, I, H, L, bidir).double()
    params = {k: v.detach().numpy().copy() for k, v in mod.state_dict().items()}
    assert set(params) == set(param_names(L, bidir))
    X = rng.standard_normal((B, T, I))
    lengths = np.array([3, 6, 1, 5, 2]) if packed else np.full(B, T)
    h0 = 0.5 * rng.standard_normal((L * D, B, H))
    c0 = 0.5 * rng.standard_normal((L * D, B, H))
    R1 = rng.standard_normal((B, T, D * H))
    R2 = rng.standard_normal((L * D, B, H))
    R3 = rng.standard_normal((L * D, B, H))
    ref = torch_run(torch, mod, cell, X, lengths, h0, c0, R1, R2, R3, packed)

    out, h_n, c_n, cache = reference_forward(
        cell, params, X, lengths if packed else None, h0,
        c0 if cell == "lstm" else None, num_layers=L, bidirectional=bidir,
        nonlinearity=nl)
    dX, grads = reference_backward(cache, R1, R2, R3 if cell == "lstm" else None)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, ref["out"], **tol)
    np.testing.assert_allclose(h_n, ref["h_n"], **tol)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, ref["c_n"], **tol)
        np.testing.assert_allclose(grads["c0"], ref["c0"], **tol)
    else:
        assert c_n is None
    np.testing.assert_allclose(dX, ref["dX"], **tol)
    np.testing.assert_allclose(grads["h0"], ref["h0"], **tol)
    for k in params:
        np.testing.assert_allclose(grads[k], ref["grads"][k], err_msg=k, **tol)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_reference_dropout_masks_vs_torch_stack(cell, nl):
    """Dropout masks: compare against single-layer torch modules stacked by hand."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    B, T, I, H, L = 4, 5, 3, 3, 3
    D = 2
    rng = np.random.default_rng(77)
    lengths = np.array([5, 1, 3, 4])
    X = rng.standard_normal((B, T, I))
    h0 = 0.5 * rng.standard_normal((L * D, B, H))
    c0 = 0.5 * rng.standard_normal((L * D, B, H))
    R1 = rng.standard_normal((B, T, D * H))
    R2 = rng.standard_normal((L * D, B, H))
    R3 = rng.standard_normal((L * D, B, H))
    p = 0.3
    masks = [(rng.random((B, T, D * H)) >= p) / (1 - p) for _ in range(L - 1)]

    mods = [_torch_module(torch, cell, nl, I if k == 0 else D * H, H, 1, True).double()
            for k in range(L)]
    params = {}
    for k, m in enumerate(mods):
        for name, v in m.state_dict().items():
            params[name.replace("_l0", "_l%d" % k)] = v.detach().numpy().copy()

    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    inp = Xt
    hs, cs = [], []
    for k, m in enumerate(mods):
        st0 = (h0t[2 * k:2 * k + 2], c0t[2 * k:2 * k + 2]) if cell == "lstm" \
            else h0t[2 * k:2 * k + 2]
        pk = torch.nn.utils.rnn.pack_padded_sequence(inp, torch.as_tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
        o, st = m(pk, st0)
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=T)
        if cell == "lstm":
            hs.append(st[0])
            cs.append(st[1])
        else:
            hs.append(st)
        inp = o * torch.tensor(masks[k]) if k < L - 1 else o
    hn = torch.cat(hs, 0)
    loss = (inp * torch.tensor(R1)).sum() + (hn * torch.tensor(R2)).sum()
    if cell == "lstm":
        cn = torch.cat(cs, 0)
        loss = loss + (cn * torch.tensor(R3)).sum()
    loss.backward()

    out, h_n, c_n, cache = reference_forward(
        cell, params, X, lengths, h0, c0 if cell == "lstm" else None, num_layers=L,
        bidirectional=True, nonlinearity=nl, dropout_masks=masks)
    dX, grads = reference_backward(cache, R1, R2, R3 if cell == "lstm" else None)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, inp.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, hn.detach().numpy(), **tol)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), **tol)
    np.testing.assert_allclose(grads["h0"], h0t.grad.numpy(), **tol)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, cn.detach().numpy(), **tol)
        np.testing.assert_allclose(grads["c0"], c0t.grad.numpy(), **tol)
    for k, m in enumerate(mods):
        for name, prm in m.named_parameters():
            np.testing.assert_allclose(grads[name.replace("_l0", "_l%d" % k)],
                                       prm.grad.numpy(), err_msg=name, **tol)
