"""Tests of the real implementation ``fastrnn.layers`` (LSTM / GRU / RNN).

Ground truths: central finite differences (float64), the plain-numpy reference in
tests/reference.py, and torch.nn.LSTM / GRU / RNN (autograd).
"""
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import LSTM, GRU, RNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import (reference_forward, reference_backward, param_names,  # noqa: E402
                       relu_margin)

CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------

def make_layer(cell, nl, I, H, L=1, bidir=False, dropout=0.0, dtype=np.float64,
               random_state=0):
    kw = dict(num_layers=L, bidirectional=bidir, dropout=dropout, dtype=dtype,
              random_state=random_state)
    if cell == "lstm":
        return LSTM(I, H, **kw)
    if cell == "gru":
        return GRU(I, H, **kw)
    return RNN(I, H, nonlinearity=nl, **kw)


def fwd(layer, cell, X, lengths=None, h0=None, c0=None, training=False):
    kw = {}
    if lengths is not None:
        kw["lengths"] = lengths
    if h0 is not None:
        kw["h0"] = h0
    if c0 is not None:
        kw["c0"] = c0
    out, state = layer.forward(X, training=training, **kw)
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        h_n, c_n = state
    else:
        h_n, c_n = state, None
    return out, h_n, c_n


def bwd(layer, cell, d_out, d_h=None, d_c=None):
    if cell == "lstm":
        d_state = None if (d_h is None and d_c is None) else (d_h, d_c)
    else:
        assert d_c is None
        d_state = d_h
    return layer.backward(d_out, d_state=d_state)


def ref_params(layer):
    return {k: np.asarray(v, dtype=np.float64).copy() for k, v in layer.params.items()}


def run_ref(cell, nl, params, X, lengths, h0, c0, L, bidir, masks=None):
    return reference_forward(
        cell, params, np.asarray(X, dtype=np.float64), lengths,
        None if h0 is None else np.asarray(h0, dtype=np.float64),
        None if (c0 is None or cell != "lstm") else np.asarray(c0, dtype=np.float64),
        num_layers=L, bidirectional=bidir, nonlinearity=nl,
        dropout_masks=None if masks is None else [np.asarray(m, np.float64) for m in masks])


def _scaled_close(actual, desired, rtol, atol, name=""):
    """assert_allclose with atol relative to the magnitude of the desired tensor."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = max(1.0, float(np.abs(desired).max())) if desired.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol,
                               atol=atol * scale, err_msg=name)


def random_lengths(rng, B, T):
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T          # at least one full-length sample
    return lengths


class Case:
    """A layer plus random inputs and random loss weights R1, R2, R3.

    loss = sum(out * R1) + sum(h_n * R2) [+ sum(c_n * R3)]
    R1 is non-zero at padded steps too (those entries must be ignored).
    """

    def __init__(self, cell, nl, B, T, I, H, L, bidir, variable, seed, dtype=np.float64,
                 dropout=0.0, with_h0=True, margin=0.0):
        self.cell, self.nl, self.L, self.bidir = cell, nl, L, bidir
        self.D = 2 if bidir else 1
        self.dropout = dropout
        D = self.D
        for attempt in range(100):
            rs = 1000 * seed + attempt
            rng = np.random.default_rng(rs)
            self.layer = make_layer(cell, nl, I, H, L, bidir, dropout, dtype, random_state=rs)
            self.rng_seed = rs + 12345
            self.X = rng.standard_normal((B, T, I)).astype(dtype)
            self.lengths = random_lengths(rng, B, T) if variable else None
            self.h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype) \
                if with_h0 else None
            self.c0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype) \
                if (with_h0 and cell == "lstm") else None
            self.R1 = rng.standard_normal((B, T, D * H)).astype(dtype)
            self.R2 = rng.standard_normal((L * D, B, H)).astype(dtype)
            self.R3 = rng.standard_normal((L * D, B, H)).astype(dtype) \
                if cell == "lstm" else None
            self.margin = margin
            if cell == "rnn" and nl == "relu" and margin > 0:
                masks = None
                if self.use_dropout:
                    self.forward(training=True)
                    masks = self.layer.last_dropout_masks_
                _, _, _, cache = run_ref(cell, nl, ref_params(self.layer), self.X,
                                         self.lengths, self.h0, self.c0, L, bidir, masks)
                if relu_margin(cache) < margin:
                    continue
            return
        raise AssertionError("could not draw a kink-free relu case")

    @property
    def use_dropout(self):
        return self.dropout > 0 and self.L > 1

    def forward(self, training=False, X=None, h0=None, c0=None):
        if self.dropout > 0 and training:
            self.layer.rng = np.random.default_rng(self.rng_seed)
        return fwd(self.layer, self.cell, self.X if X is None else X, self.lengths,
                   self.h0 if h0 is None else h0, self.c0 if c0 is None else c0,
                   training=training)

    def loss(self, X=None, h0=None, c0=None):
        out, h_n, c_n = self.forward(training=self.dropout > 0, X=X, h0=h0, c0=c0)
        val = np.sum(out * self.R1) + np.sum(h_n * self.R2)
        if self.cell == "lstm":
            val += np.sum(c_n * self.R3)
        return float(val)

    def grads(self):
        self.forward(training=True)
        return bwd(self.layer, self.cell, self.R1, self.R2, self.R3)


def _pick(shape, rng, n):
    idx = list(np.ndindex(shape))
    if len(idx) > n:
        sel = rng.choice(len(idx), n, replace=False)
        idx = [idx[i] for i in sel]
    return idx


def _fd_entries(f, arr, ids, eps):
    out = []
    for idx in ids:
        old = arr[idx]
        arr[idx] = old + eps
        fp = f()
        arr[idx] = old - eps
        fm = f()
        arr[idx] = old
        out.append((fp - fm) / (2 * eps))
    return np.array(out)


def _assert_fd(analytic, numeric, name, rtol=1e-6, atol=1e-8):
    analytic = np.asarray(analytic, dtype=np.float64)
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.maximum(np.abs(analytic), np.abs(numeric))
    bad = err > tol
    assert not bad.any(), "%s: FD mismatch analytic=%s numeric=%s" % (
        name, analytic[bad][:5], numeric[bad][:5])


def fd_check(case, n_entries=20, eps=1e-6, seed=0):
    """Finite-difference check of dX, every parameter gradient, h0 (and c0) gradients."""
    if case.nl == "relu":
        assert case.margin >= 1e-4, "relu FD cases must be drawn away from the kink"
    dX, grads = case.grads()
    layer = case.layer
    expected = set(layer.params) | {"h0"} | ({"c0"} if case.cell == "lstm" else set())
    assert set(grads) == expected
    rng = np.random.default_rng(seed)
    X = case.X.copy()
    B, T = X.shape[:2]
    H = layer.params["weight_hh_l0"].shape[1]
    h0 = case.h0.copy() if case.h0 is not None else np.zeros((case.L * case.D, B, H))
    c0 = None
    if case.cell == "lstm":
        c0 = case.c0.copy() if case.c0 is not None else np.zeros((case.L * case.D, B, H))

    def f():
        return case.loss(X=X, h0=h0, c0=c0)

    base = f()
    checked = []
    for name in param_names(case.L, case.bidir):
        arr = layer.params[name]
        ids = _pick(arr.shape, rng, n_entries)
        num = _fd_entries(f, arr, ids, eps)
        _assert_fd(np.array([grads[name][i] for i in ids]), num, name)
        checked.append(name)
    # parameters were restored exactly
    assert f() == base
    for name, arr, g in [("X", X, dX), ("h0", h0, grads["h0"])] + (
            [("c0", c0, grads["c0"])] if case.cell == "lstm" else []):
        ids = _pick(arr.shape, rng, n_entries)
        num = _fd_entries(f, arr, ids, eps)
        _assert_fd(np.array([g[i] for i in ids]), num, name)
        checked.append(name)
    assert len(checked) == 4 * case.L * case.D + 2 + (case.cell == "lstm")
    # the gradients must not be trivially zero
    assert np.abs(dX).max() > 1e-4
    assert np.abs(grads["weight_ih_l0"]).max() > 1e-4


# ----------------------------------------------------------------------------------
# construction, parameters, shapes
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("L,bidir", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_layout_and_init(cell, nl, L, bidir, dtype):
    I, H = 20, 16
    D = 2 if bidir else 1
    G = GATES[cell]
    layer = make_layer(cell, nl, I, H, L, bidir, dtype=dtype, random_state=3)
    assert set(layer.params) == set(param_names(L, bidir))
    bound = 1.0 / np.sqrt(H)
    for k in range(L):
        I_k = I if k == 0 else D * H
        for d in range(D):
            s = "_l%d%s" % (k, "_reverse" if d else "")
            shapes = {"weight_ih": (G * H, I_k), "weight_hh": (G * H, H),
                      "bias_ih": (G * H,), "bias_hh": (G * H,)}
            for base, shape in shapes.items():
                p = layer.params[base + s]
                assert isinstance(p, np.ndarray)
                assert p.shape == shape, base + s
                assert p.dtype == dtype, base + s
                assert np.all(np.abs(p) <= bound * (1 + 1e-6)), base + s
    # pooled distribution looks like U(-bound, bound)
    allp = np.concatenate([np.asarray(v, np.float64).ravel() for v in layer.params.values()])
    assert allp.size >= 600
    assert allp.max() > 0.97 * bound and allp.min() < -0.97 * bound
    assert abs(allp.mean()) < 0.1 * bound
    assert abs(allp.std() - bound / np.sqrt(3)) < 0.06 * bound
    assert np.unique(allp).size > allp.size // 2
    # reproducible with random_state, different with another one
    layer2 = make_layer(cell, nl, I, H, L, bidir, dtype=dtype, random_state=3)
    layer3 = make_layer(cell, nl, I, H, L, bidir, dtype=dtype, random_state=4)
    for k in layer.params:
        np.testing.assert_array_equal(layer.params[k], layer2.params[k])
    assert any(not np.array_equal(layer.params[k], layer3.params[k]) for k in layer.params)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_shapes_and_dtypes(cell, nl, dtype):
    B, T, I, H, L = 3, 4, 2, 5, 2
    layer = make_layer(cell, nl, I, H, L, True, dtype=dtype)
    X = np.random.default_rng(0).standard_normal((B, T, I)).astype(dtype)
    out, h_n, c_n = fwd(layer, cell, X, training=True)
    assert out.shape == (B, T, 2 * H) and out.dtype == dtype
    assert h_n.shape == (2 * L, B, H) and h_n.dtype == dtype
    if cell == "lstm":
        assert c_n.shape == (2 * L, B, H) and c_n.dtype == dtype
    dX, grads = bwd(layer, cell, np.ones_like(out))
    assert dX.shape == X.shape and dX.dtype == dtype
    expected = set(layer.params) | {"h0"} | ({"c0"} if cell == "lstm" else set())
    assert set(grads) == expected
    for k, p in layer.params.items():
        assert grads[k].shape == p.shape and grads[k].dtype == dtype, k
    assert grads["h0"].shape == (2 * L, B, H)
    if cell == "lstm":
        assert grads["c0"].shape == (2 * L, B, H)
    assert np.all(np.isfinite(dX)) and np.abs(dX).max() > 0


# ----------------------------------------------------------------------------------
# finite differences (float64)
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", [False, True], ids=["equal", "varlen"])
@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_fd_gradients(cell, nl, L, bidir, variable):
    seed = 1 + 4 * L + 2 * bidir + variable
    case = Case(cell, nl, B=3, T=5, I=3, H=4, L=L, bidir=bidir, variable=variable,
                seed=seed, margin=1e-3)
    fd_check(case, n_entries=20, seed=seed)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_fd_gradients_without_h0(cell, nl):
    """h0/c0 omitted: the returned 'h0'/'c0' grads are those of a zero initial state."""
    case = Case(cell, nl, B=3, T=4, I=2, H=3, L=2, bidir=True, variable=True, seed=60,
                with_h0=False, margin=1e-3)
    fd_check(case, n_entries=15, seed=1)


# ----------------------------------------------------------------------------------
# agreement with the numpy reference
# ----------------------------------------------------------------------------------

def _random_config(seed):
    rng = np.random.default_rng(seed)
    if seed == 0:
        return dict(B=1, T=1, I=1, H=1, L=1, bidir=False, variable=False, with_h0=True)
    if seed == 1:
        return dict(B=1, T=1, I=1, H=1, L=2, bidir=True, variable=True, with_h0=False)
    if seed == 2:
        return dict(B=4, T=3, I=1, H=1, L=1, bidir=True, variable=True, with_h0=True)
    return dict(B=int(rng.integers(1, 7)), T=int(rng.integers(1, 8)),
                I=int(rng.integers(1, 5)), H=int(rng.integers(1, 6)),
                L=int(rng.integers(1, 4)), bidir=bool(rng.integers(2)),
                variable=bool(rng.random() < 0.7), with_h0=bool(rng.random() < 0.6))


def _compare_with_reference(case, tol):
    rtol, atol = tol
    out, h_n, c_n = case.forward(training=True)
    dX, grads = bwd(case.layer, case.cell, case.R1, case.R2, case.R3)
    r_out, r_h, r_c, cache = run_ref(case.cell, case.nl, ref_params(case.layer), case.X,
                                     case.lengths, case.h0, case.c0, case.L, case.bidir)
    r_dX, r_grads = reference_backward(
        cache, np.asarray(case.R1, np.float64), np.asarray(case.R2, np.float64),
        None if case.R3 is None else np.asarray(case.R3, np.float64))
    _scaled_close(out, r_out, rtol, atol, "out")
    _scaled_close(h_n, r_h, rtol, atol, "h_n")
    if case.cell == "lstm":
        _scaled_close(c_n, r_c, rtol, atol, "c_n")
    _scaled_close(dX, r_dX, rtol, atol, "dX")
    assert set(grads) == set(r_grads)
    for k in r_grads:
        _scaled_close(grads[k], r_grads[k], rtol, atol, k)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_reference(cell, nl, seed, dtype):
    cfg = _random_config(seed)
    case = Case(cell, nl, cfg["B"], cfg["T"], cfg["I"], cfg["H"], cfg["L"], cfg["bidir"],
                cfg["variable"], seed=100 + seed, dtype=dtype, with_h0=cfg["with_h0"])
    if cfg["variable"] and case.lengths is not None and cfg["B"] > 2:
        # make sure the batch is not sorted by length
        case.lengths[0] = 1
        case.lengths[-1] = cfg["T"]
    tol = (1e-10, 1e-10) if dtype == np.float64 else (1e-4, 1e-5)
    _compare_with_reference(case, tol)


@pytest.mark.parametrize("H", [16, 20, 37, 64])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_float32_gate_blocks_match_reference(cell, nl, H):
    """float32 gate math over several 16-unit blocks and a masked tail (the fused AVX-512
    cell steps of vmath.c work 16 units at a time): forward and gradients against the
    numpy reference, batch of 3 and of 1."""
    for B in (3, 1):
        case = Case(cell, nl, B, 6, 5, H, 1, False, B > 1, seed=7 + H, dtype=np.float32)
        _compare_with_reference(case, (1e-4, 1e-5))


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_split_path_matches_reference(cell, nl, restore_threads):
    """Batch-1 inference on two threads takes the unit-split path (each thread a slice
    of the hidden units, hence the fused gate steps on a slice); against the numpy
    reference and bitwise against one thread."""
    H = 128
    layer = make_layer(cell, nl, 7, H, dtype=np.float32, random_state=3)
    X = np.random.default_rng(4).standard_normal((1, 40, 7)).astype(np.float32)
    outs = {}
    for nt in (1, 2):
        fastrnn.set_num_threads(nt)
        _core.reset_threads_used()
        outs[nt] = fwd(layer, cell, X)
        assert _core.threads_used()[1] == nt
    for a, b in zip(outs[1], outs[2]):
        if a is not None:
            assert np.array_equal(a, b)
    r_out, r_h, r_c, _ = run_ref(cell, nl, ref_params(layer), X, None, None, None, 1, False)
    _scaled_close(outs[2][0], r_out, 1e-4, 1e-5, "out")
    _scaled_close(outs[2][1], r_h, 1e-4, 1e-5, "h_n")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_plain_inference_path_matches_full_path(cell, nl, dtype, monkeypatch):
    """forward(X) of full-length sequences from a zero state takes the cheap-checks path
    (_infer_plain, proven by making the full path's X check fail): same bits as the full
    path (explicit lengths and zero state), over changing shapes and layer stacks."""
    layer = make_layer(cell, nl, 3, 20, L=2, bidir=True, dtype=dtype, random_state=1)
    rng = np.random.default_rng(2)
    shapes = [(1, 30), (4, 7), (1, 30), (2, 1)]
    full = {}
    for B, T in shapes:
        X = rng.standard_normal((B, T, 3)).astype(dtype)
        zeros = np.zeros((4, B, 20), dtype)
        kw = dict(lengths=np.full(B, T), h0=zeros) | (dict(c0=zeros) if cell == "lstm" else {})
        full[(B, T)] = (X, fwd(layer, cell, X, **kw), layer.forward(X, return_sequences=False))

    def refuse(*a, **k):
        raise AssertionError("the full path ran")
    monkeypatch.setattr(layer, "_check_X", refuse)
    for B, T in shapes:
        X, want, want_last = full[(B, T)]
        got = fwd(layer, cell, X)
        for g, w in zip(got, want):
            if w is not None:
                assert np.array_equal(g, w)
        out, state = layer.forward(X, return_sequences=False)
        assert out is None
        as_tuple = (lambda st: st) if cell == "lstm" else (lambda st: (st,))
        for g, w in zip(as_tuple(state), as_tuple(want_last[1])):
            assert np.array_equal(g, w)
        got[0][...] = 7       # the returned arrays are the caller's own
        assert np.array_equal(fwd(layer, cell, X)[0], want[0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        X = full[(1, 30)][0].copy()
        X[0, 29, 2] = np.inf
        layer.forward(X)
    monkeypatch.undo()
    # a non-contiguous X or another dtype leaves for the full path, same results
    X, want, _ = full[(4, 7)]
    Xs = np.asfortranarray(X)
    assert np.array_equal(fwd(layer, cell, Xs)[0], want[0])


def test_pickle_drops_per_process_caches():
    """What forward keeps per shape (workspace sizes depend on the machine's CPU paths)
    is not pickled; the unpickled layer computes the same."""
    import pickle
    layer = make_layer("lstm", "tanh", 3, 20, dtype=np.float32, random_state=1)
    X = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    want = layer.forward(X)[0]
    layer._train_forward(X, np.full(2, 5, np.int32), None)
    assert {"_plain", "_plan_cache", "_sized"} <= set(layer.__dict__)
    state = layer.__getstate__()
    assert not {"_plain", "_plan_cache", "_sized", "_zeros"} & set(state)
    again = pickle.loads(pickle.dumps(layer))
    assert np.array_equal(again.forward(X)[0], want)


def test_all_finite():
    for dt in (np.float32, np.float64):
        x = np.random.default_rng(0).standard_normal(1001).astype(dt)
        x[5] = np.finfo(dt).max
        x[6] = np.finfo(dt).tiny / 4          # subnormal
        assert _core.all_finite(x)
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[1000] = bad
            assert not _core.all_finite(y)
        assert _core.all_finite(x[:0])
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.all_finite(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.all_finite(np.zeros(4, np.int32))


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_partial_state_gradients(cell, nl):
    """d_state None / d_h_n only / (lstm) (d_h_n, None) and (None, d_c_n)."""
    case = Case(cell, nl, B=4, T=5, I=3, H=3, L=2, bidir=True, variable=True, seed=70)
    r_out, r_h, r_c, cache = run_ref(cell, nl, ref_params(case.layer), case.X, case.lengths,
                                     case.h0, case.c0, 2, True)
    variants = [(None, None), (case.R2, None)]
    if cell == "lstm":
        variants += [(None, case.R3), (case.R2, case.R3)]
    for d_h, d_c in variants:
        case.forward(training=True)
        dX, grads = bwd(case.layer, cell, case.R1, d_h, d_c)
        r_dX, r_grads = reference_backward(cache, case.R1, d_h, d_c)
        _scaled_close(dX, r_dX, 1e-10, 1e-10, "dX")
        for k in r_grads:
            _scaled_close(grads[k], r_grads[k], 1e-10, 1e-10, k)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_param_assignment_is_used(cell, nl):
    """Both in-place (params[k][...] = v) and whole-dict assignment take effect."""
    case = Case(cell, nl, B=3, T=4, I=2, H=3, L=2, bidir=True, variable=True, seed=80)
    out0, _, _ = case.forward()
    rng = np.random.default_rng(5)
    # in-place modification after a forward has already been run
    for k, v in case.layer.params.items():
        v[...] = rng.uniform(-0.7, 0.7, v.shape)
    out1, h1, _ = case.forward()
    assert not np.allclose(out0, out1)
    r_out, r_h, _, _ = run_ref(cell, nl, ref_params(case.layer), case.X, case.lengths,
                               case.h0, case.c0, 2, True)
    _scaled_close(out1, r_out, 1e-10, 1e-10, "out (in-place params)")
    _scaled_close(h1, r_h, 1e-10, 1e-10, "h_n (in-place params)")
    # whole-dict assignment
    new = {k: rng.uniform(-0.7, 0.7, v.shape) for k, v in case.layer.params.items()}
    case.layer.params = {k: v.copy() for k, v in new.items()}
    out2, h2, _ = case.forward()
    r_out, r_h, _, _ = run_ref(cell, nl, new, case.X, case.lengths, case.h0, case.c0, 2, True)
    _scaled_close(out2, r_out, 1e-10, 1e-10, "out (assigned params)")
    _scaled_close(h2, r_h, 1e-10, 1e-10, "h_n (assigned params)")


def _long_lengths(B, T, rng):
    """Unsorted lengths: a block of very short samples, lengths around multiples of 32
    (step-block boundaries of a blocked implementation) and full-length ones."""
    special = np.array([1, 2, 3, 31, 32, 33, 63, 64, 65, T - 1, T])
    if B < 16:
        lengths = rng.choice(special, size=B)
        lengths[:2] = [T, 1]
        return rng.permutation(lengths)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[:16] = rng.integers(1, 4, size=16)          # a whole chunk of short samples
    n = min(len(special), B - 16)
    lengths[16:16 + n] = special[len(special) - n:]
    lengths[16:] = lengths[16:][rng.permutation(B - 16)]
    return np.clip(lengths, 1, T)


@pytest.mark.parametrize("B", [37, 33, 5])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_sequences_match_reference(cell, nl, B, dtype):
    """Long sequences (T > 2 * 32) and batches that need several work chunks."""
    T = 70
    case = Case(cell, nl, B=B, T=T, I=5, H=6, L=2, bidir=True, variable=True, seed=300 + B,
                dtype=dtype)
    case.lengths = _long_lengths(B, T, np.random.default_rng(B))
    assert case.lengths.max() == T and case.lengths.min() == 1
    tol = (1e-10, 1e-10) if dtype == np.float64 else (2e-4, 2e-5)
    _compare_with_reference(case, tol)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_saturated_activations_match_reference(cell, nl, dtype):
    """Large pre-activations (saturated sigmoid / tanh): finite and accurate."""
    case = Case(cell, nl, B=6, T=8, I=4, H=5, L=2, bidir=True, variable=True, seed=400,
                dtype=dtype)
    case.X = (40.0 * case.X).astype(dtype)
    for k, v in case.layer.params.items():
        v[...] = 6.0 * v
    out, h_n, c_n = case.forward(training=True)
    dX, grads = bwd(case.layer, cell, case.R1, case.R2, case.R3)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dX))
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    if cell == "lstm" or nl == "tanh" and cell == "rnn":
        # the tanh-bounded outputs saturate but never exceed 1
        assert np.all(np.abs(out) <= 1.0)
        assert np.abs(out).max() > 0.99
    tol = (1e-10, 1e-10) if dtype == np.float64 else (1e-4, 1e-5)
    _compare_with_reference(case, tol)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_concurrent_python_threads(cell, nl):
    """Calls from several Python threads (separate layers for training, one shared layer
    for inference) give the same results as sequential calls."""
    from concurrent.futures import ThreadPoolExecutor
    cases = [Case(cell, nl, B=9 + 7 * j, T=12 + j, I=3, H=5, L=2, bidir=True,
                  variable=True, seed=500 + j, dtype=np.float32) for j in range(6)]
    shared = cases[0].layer

    def train(c):
        return _run_all(c)

    def infer(c):
        out, h, _ = fwd(shared, cell, c.X, c.lengths, c.h0, c.c0)
        return out.copy(), h.copy()

    seq_train = [train(c) for c in cases]
    seq_infer = [infer(c) for c in cases]
    with ThreadPoolExecutor(max_workers=4) as ex:
        for _ in range(3):
            par_train = list(ex.map(train, cases))
            par_infer = list(ex.map(infer, cases))
            for a, b in zip(par_train, seq_train):
                for k in b:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            for a, b in zip(par_infer, seq_infer):
                np.testing.assert_array_equal(a[0], b[0])
                np.testing.assert_array_equal(a[1], b[1])


# ----------------------------------------------------------------------------------
# agreement with torch
# ----------------------------------------------------------------------------------

def _torch_module(torch, cell, nl, I, H, L, bidir):
    kw = dict(num_layers=L, bidirectional=bidir, batch_first=True)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, **kw)
    if cell == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=nl, **kw)


TORCH_CONFIGS = [(1, False, False), (1, True, True), (2, False, True), (2, True, False),
                 (2, True, True)]


@pytest.mark.parametrize("L,bidir,packed", TORCH_CONFIGS,
                         ids=["1uni-dense", "1bi-packed", "2uni-packed", "2bi-dense",
                              "2bi-packed"])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(cell, nl, L, bidir, packed, dtype):
    torch = pytest.importorskip("torch")
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(17 * L + bidir)
    B, T, I, H = 6, 7, 4, 5
    D = 2 if bidir else 1
    rng = np.random.default_rng(200 + 10 * L + 2 * bidir + packed)
    mod = _torch_module(torch, cell, nl, I, H, L, bidir).to(tdtype)
    layer = make_layer(cell, nl, I, H, L, bidir, dtype=dtype, random_state=1)
    layer.params = {k: v.detach().numpy().copy() for k, v in mod.state_dict().items()}

    X = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = np.array([3, 7, 1, 5, 2, 6]) if packed else None
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
    R1 = rng.standard_normal((B, T, D * H)).astype(dtype)
    R2 = rng.standard_normal((L * D, B, H)).astype(dtype)
    R3 = rng.standard_normal((L * D, B, H)).astype(dtype)

    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    st0 = (h0t, c0t) if cell == "lstm" else h0t
    if packed:
        pk = torch.nn.utils.rnn.pack_padded_sequence(
            Xt, torch.as_tensor(lengths, dtype=torch.int64), batch_first=True,
            enforce_sorted=False)
        o, st = mod(pk, st0)
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=T)
    else:
        o, st = mod(Xt, st0)
    hn, cn = st if cell == "lstm" else (st, None)
    loss = (o * torch.tensor(R1)).sum() + (hn * torch.tensor(R2)).sum()
    if cell == "lstm":
        loss = loss + (cn * torch.tensor(R3)).sum()
    loss.backward()

    out, h_n, c_n = fwd(layer, cell, X, lengths, h0, c0 if cell == "lstm" else None,
                        training=True)
    dX, grads = bwd(layer, cell, R1, R2, R3 if cell == "lstm" else None)

    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (1e-4, 1e-5)
    _scaled_close(out, o.detach().numpy(), rtol, atol, "out")
    _scaled_close(h_n, hn.detach().numpy(), rtol, atol, "h_n")
    _scaled_close(dX, Xt.grad.numpy(), rtol, atol, "dX")
    _scaled_close(grads["h0"], h0t.grad.numpy(), rtol, atol, "h0")
    if cell == "lstm":
        _scaled_close(c_n, cn.detach().numpy(), rtol, atol, "c_n")
        _scaled_close(grads["c0"], c0t.grad.numpy(), rtol, atol, "c0")
    names = set()
    for name, p in mod.named_parameters():
        _scaled_close(grads[name], p.grad.numpy(), rtol, atol, name)
        names.add(name)
    assert names == set(layer.params)
    if packed:
        for b, lb in enumerate(lengths):
            assert np.all(out[b, lb:] == 0)


# ----------------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    n = fastrnn.get_num_threads()
    yield n
    fastrnn.set_num_threads(n)
    assert fastrnn.get_num_threads() == n


def _run_all(case):
    out, h_n, c_n = case.forward(training=True)
    dX, grads = bwd(case.layer, case.cell, case.R1, case.R2, case.R3)
    res = dict(out=out.copy(), h_n=h_n.copy(), dX=dX.copy())
    if c_n is not None:
        res["c_n"] = c_n.copy()
    res.update({"g_" + k: v.copy() for k, v in grads.items()})
    return res


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_thread_invariance(cell, nl, dtype, restore_threads):
    """Forward and backward give the same bits on 1, 2 and 3 threads, on a problem where
    2 and 3 threads really work: each layer-direction call is 64 sequences x 60 steps x
    G gates x 128 units x (16 or 256 + 128) inputs >= 7e7 multiply-adds (the core wants
    4e6 per thread) cut into 4 chunks of 16 sequences; the core's own record of its
    team sizes proves it."""
    layer = make_layer(cell, nl, 16, 128, L=2, bidir=True, dtype=dtype, random_state=3)
    rng = np.random.default_rng(90)
    X = rng.standard_normal((64, 60, 16)).astype(dtype)
    lengths = rng.integers(1, 61, size=64)
    d_out = rng.standard_normal((64, 60, 256)).astype(dtype)
    results = {}
    for n in (1, 2, 3):
        fastrnn.set_num_threads(n)
        _core.reset_threads_used()
        out, state = layer.forward(X, lengths, training=True)
        dX, grads = layer.backward(d_out)
        assert _core.threads_used()[1] == n, (n, _core.threads_used())
        h_n = state[0] if isinstance(state, tuple) else state
        results[n] = dict(out=out, h_n=h_n, dX=dX, **grads)
    for n in (2, 3):
        for k, v in results[1].items():
            np.testing.assert_array_equal(results[n][k], v, err_msg=f"{k}, {n} threads")
    # and the multi-threaded result is right
    h0 = np.zeros((4, 64, 128))
    r_out, _, _, _ = run_ref(cell, nl, ref_params(layer), X.astype(np.float64), lengths,
                             h0, h0 if cell == "lstm" else None, 2, True)
    _scaled_close(results[3]["out"], r_out, 1e-4 if dtype == np.float32 else 1e-10,
                  1e-5 if dtype == np.float32 else 1e-12, "out vs reference")


# ----------------------------------------------------------------------------------
# inference vs training, dropout
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_equals_training(cell, nl, dtype):
    case = Case(cell, nl, B=5, T=6, I=3, H=4, L=2, bidir=True, variable=True, seed=95,
                dtype=dtype)
    o1, h1, c1 = case.forward(training=False)
    o2, h2, c2 = case.forward(training=True)
    tol = (1e-12, 1e-14) if dtype == np.float64 else (1e-6, 1e-7)
    _scaled_close(o1, o2, *tol, name="out")
    _scaled_close(h1, h2, *tol, name="h_n")
    if cell == "lstm":
        _scaled_close(c1, c2, *tol, name="c_n")


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_dropout_inference_is_identity(cell, nl):
    B, T, I, H, L = 4, 5, 3, 4, 3
    drop = make_layer(cell, nl, I, H, L, True, dropout=0.5, random_state=0)
    plain = make_layer(cell, nl, I, H, L, True, dropout=0.0, random_state=1)
    plain.params = {k: v.copy() for k, v in drop.params.items()}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, T, I))
    lengths = np.array([5, 2, 4, 1])
    o1, h1, c1 = fwd(drop, cell, X, lengths)
    o2, h2, c2 = fwd(plain, cell, X, lengths)
    np.testing.assert_allclose(o1, o2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h1, h2, rtol=1e-13, atol=1e-15)
    # with training=True dropout does change the result
    drop.rng = np.random.default_rng(1)
    o3, _, _ = fwd(drop, cell, X, lengths, training=True)
    assert not np.allclose(o3, o1)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks(cell, nl, dtype):
    B, T, I, H, L, p = 8, 10, 3, 6, 3, 0.5
    layer = make_layer(cell, nl, I, H, L, True, dropout=p, dtype=dtype, random_state=0)
    X = np.random.default_rng(0).standard_normal((B, T, I)).astype(dtype)
    lengths = random_lengths(np.random.default_rng(1), B, T)
    layer.rng = np.random.default_rng(42)
    o1, h1, _ = fwd(layer, cell, X, lengths, training=True)
    masks = [np.array(m, copy=True) for m in layer.last_dropout_masks_]
    assert len(masks) == L - 1
    for m in masks:
        assert m.shape == (B, T, 2 * H)
        vals = np.asarray(m, dtype=np.float64)
        is0 = vals == 0
        isk = np.isclose(vals, 1.0 / (1.0 - p), rtol=1e-6)
        assert np.all(is0 | isk)
        assert 0.35 < is0.mean() < 0.65
    assert not np.array_equal(masks[0], masks[1])
    # same rng seed -> same masks and outputs; another seed -> different masks
    layer.rng = np.random.default_rng(42)
    o2, h2, _ = fwd(layer, cell, X, lengths, training=True)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(h1, h2)
    for m, m2 in zip(masks, layer.last_dropout_masks_):
        np.testing.assert_array_equal(m, m2)
    layer.rng = np.random.default_rng(43)
    fwd(layer, cell, X, lengths, training=True)
    assert not np.array_equal(masks[0], layer.last_dropout_masks_[0])


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_matches_reference(cell, nl, dtype):
    case = Case(cell, nl, B=5, T=6, I=3, H=4, L=3, bidir=True, variable=True, seed=110,
                dtype=dtype, dropout=0.3)
    out, h_n, c_n = case.forward(training=True)
    masks = [np.array(m, copy=True) for m in case.layer.last_dropout_masks_]
    dX, grads = bwd(case.layer, cell, case.R1, case.R2, case.R3)
    r_out, r_h, r_c, cache = run_ref(cell, nl, ref_params(case.layer), case.X, case.lengths,
                                     case.h0, case.c0, 3, True, masks)
    r_dX, r_grads = reference_backward(
        cache, np.asarray(case.R1, np.float64), np.asarray(case.R2, np.float64),
        None if case.R3 is None else np.asarray(case.R3, np.float64))
    tol = (1e-10, 1e-10) if dtype == np.float64 else (1e-4, 1e-5)
    _scaled_close(out, r_out, *tol, name="out")
    _scaled_close(h_n, r_h, *tol, name="h_n")
    if cell == "lstm":
        _scaled_close(c_n, r_c, *tol, name="c_n")
    _scaled_close(dX, r_dX, *tol, name="dX")
    for k in r_grads:
        _scaled_close(grads[k], r_grads[k], *tol, name=k)
    # and the masks actually matter: without them the reference differs
    r_out0, _, _, _ = run_ref(cell, nl, ref_params(case.layer), case.X, case.lengths,
                              case.h0, case.c0, 3, True)
    assert not np.allclose(r_out0, r_out)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_dropout_fd_gradients(cell, nl):
    case = Case(cell, nl, B=3, T=4, I=3, H=3, L=2, bidir=True, variable=True, seed=120,
                dropout=0.4, margin=1e-3)
    fd_check(case, n_entries=15, seed=2)


# ----------------------------------------------------------------------------------
# padding and batch invariance
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_padding_and_batch_invariance(cell, nl, dtype):
    case = Case(cell, nl, B=5, T=7, I=3, H=4, L=2, bidir=True, variable=True, seed=130,
                dtype=dtype)
    case.lengths = np.array([4, 7, 1, 6, 2])
    out, h_n, c_n = case.forward(training=True)
    dX, grads = bwd(case.layer, cell, case.R1, case.R2, case.R3)
    tol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    for b, lb in enumerate(case.lengths):
        assert np.all(out[b, lb:] == 0), "padded outputs must be exactly 0"
        assert np.all(dX[b, lb:] == 0), "padded steps must get zero gradient"
        if nl != "relu":
            assert np.all(out[b, :lb] != 0)
        sl = slice(b, b + 1)
        for trim in (True, False):
            Xb = case.X[sl, :lb] if trim else case.X[sl]
            lens = None if trim else np.array([lb])
            c0b = case.c0[:, sl] if cell == "lstm" else None
            o1, h1, c1 = fwd(case.layer, cell, Xb, lens, case.h0[:, sl], c0b, training=True)
            R1b = case.R1[sl, :lb] if trim else case.R1[sl]
            dX1, g1 = bwd(case.layer, cell, R1b, case.R2[:, sl],
                          case.R3[:, sl] if cell == "lstm" else None)
            _scaled_close(o1[0, :lb], out[b, :lb], *tol, name="out b=%d" % b)
            _scaled_close(h1[:, 0], h_n[:, b], *tol, name="h_n b=%d" % b)
            if cell == "lstm":
                _scaled_close(c1[:, 0], c_n[:, b], *tol, name="c_n b=%d" % b)
                _scaled_close(g1["c0"][:, 0], grads["c0"][:, b], *tol, name="c0 b=%d" % b)
            _scaled_close(dX1[0, :lb], dX[b, :lb], *tol, name="dX b=%d" % b)
            _scaled_close(g1["h0"][:, 0], grads["h0"][:, b], *tol, name="h0 b=%d" % b)
            if not trim:
                assert np.all(o1[0, lb:] == 0)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_padded_d_out_is_ignored_and_full_lengths(cell, nl):
    case = Case(cell, nl, B=4, T=6, I=2, H=3, L=2, bidir=True, variable=True, seed=140)
    case.lengths = np.array([6, 3, 1, 5])
    case.forward(training=True)
    dX1, g1 = bwd(case.layer, cell, case.R1, case.R2, case.R3)
    R1 = case.R1.copy()
    for b, lb in enumerate(case.lengths):
        R1[b, lb:] = 1e3
    case.forward(training=True)
    dX2, g2 = bwd(case.layer, cell, R1, case.R2, case.R3)
    np.testing.assert_allclose(dX1, dX2, rtol=1e-13, atol=1e-14)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-13, atol=1e-14, err_msg=k)
    # lengths all == T is the same as lengths=None
    o_none, h_none, _ = fwd(case.layer, cell, case.X, None, case.h0, case.c0)
    o_full, h_full, _ = fwd(case.layer, cell, case.X, np.full(4, 6), case.h0, case.c0)
    np.testing.assert_allclose(o_none, o_full, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h_none, h_full, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_lengths_int_types(cell, nl):
    case = Case(cell, nl, B=3, T=5, I=2, H=3, L=1, bidir=True, variable=True, seed=150)
    case.lengths = np.array([2, 5, 3])
    o_ref, h_ref, _ = case.forward()
    for lens in ([2, 5, 3], np.array([2, 5, 3], dtype=np.int32),
                 np.array([2, 5, 3], dtype=np.uint8), (2, 5, 3)):
        o, h, _ = fwd(case.layer, cell, case.X, lens, case.h0, case.c0)
        np.testing.assert_array_equal(o, o_ref)
        np.testing.assert_array_equal(h, h_ref)


# ----------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------

@pytest.fixture(params=CELLS, ids=CELL_IDS)
def small(request):
    cell, nl = request.param
    layer = make_layer(cell, nl, 3, 4, 2, True)
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    return cell, nl, layer, X


ERR = (ValueError, TypeError)


def test_bad_X_ndim(small):
    cell, _, layer, X = small
    for bad in (X[0], X[None], X[0, 0], np.float64(1.0)):
        with pytest.raises(ERR, match="X"):
            layer.forward(bad)


def test_bad_X_features(small):
    cell, _, layer, X = small
    with pytest.raises(ERR, match="X"):
        layer.forward(np.zeros((2, 5, 4)))
    with pytest.raises(ERR, match="X"):
        layer.forward(np.zeros((2, 5, 2)))


def test_empty_X_raises(small):
    """B == 0 or T == 0: a clean ValueError naming X (there is no state to return)."""
    cell, _, layer, X = small
    for shape in ((0, 5, 3), (2, 0, 3)):
        with pytest.raises(ValueError, match="X must have at least one sample and one step"):
            layer.forward(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.complex128, object, np.str_])
def test_bad_X_dtype(small, bad):
    cell, _, layer, X = small
    if bad is np.str_:
        Xb = X.astype(str)
    else:
        Xb = X.astype(bad)
    with pytest.raises(ERR, match="X"):
        layer.forward(Xb)


def test_bad_lengths(small):
    cell, _, layer, X = small
    for bad in ([0, 5], [6, 1], [-1, 3], [5, 5, 5], [5], [[5, 5]], [2.5, 3],
                np.array([3.0, 4.5])):
        with pytest.raises(ERR, match="lengths"):
            layer.forward(X, lengths=np.asarray(bad) if not isinstance(bad, list) else bad)


def test_bad_h0(small):
    cell, _, layer, X = small
    for shape in ((4, 2), (2, 2, 4), (4, 3, 4), (4, 2, 5), (1, 4, 2, 4)):
        with pytest.raises(ERR, match="h0"):
            layer.forward(X, h0=np.zeros(shape))
    with pytest.raises(ERR, match="h0"):
        layer.forward(X, h0=np.zeros((4, 2, 4), dtype=np.complex128))


def test_bad_c0():
    layer = make_layer("lstm", "tanh", 3, 4, 2, True)
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    for shape in ((4, 2), (4, 3, 4), (4, 2, 5)):
        with pytest.raises(ERR, match="c0"):
            layer.forward(X, c0=np.zeros(shape))


def test_backward_before_training_forward(small):
    cell, _, layer, X = small
    d_out = np.zeros((2, 5, 8))
    with pytest.raises(ERR, match="(?i)forward|training"):
        layer.backward(d_out)
    layer.forward(X, training=False)
    with pytest.raises(ERR, match="(?i)forward|training"):
        layer.backward(d_out)


def test_bad_d_out(small):
    cell, _, layer, X = small
    layer.forward(X, training=True)
    for shape in ((2, 5, 4), (2, 4, 8), (3, 5, 8), (2, 5)):
        with pytest.raises(ERR, match="d_out"):
            layer.backward(np.zeros(shape))
    with pytest.raises(ERR, match="d_out"):
        layer.backward(np.zeros((2, 5, 8), dtype=np.complex128))
    # a valid call still works afterwards
    dX, grads = layer.backward(np.ones((2, 5, 8)))
    assert dX.shape == X.shape and np.abs(dX).max() > 0


def test_bad_d_state(small):
    cell, _, layer, X = small
    layer.forward(X, training=True)
    d_out = np.zeros((2, 5, 8))
    bad = np.zeros((4, 3, 4))
    d_state = (bad, None) if cell == "lstm" else bad
    with pytest.raises(ERR, match="d_state|d_h|h_n"):
        layer.backward(d_out, d_state=d_state)
    if cell == "lstm":
        with pytest.raises(ERR, match="d_state|d_c|c_n"):
            layer.backward(d_out, d_state=(None, bad))


@pytest.mark.parametrize("cls,kw,name", [
    (LSTM, dict(hidden_size=0), "hidden_size"),
    (GRU, dict(input_size=0), "input_size"),
    (RNN, dict(nonlinearity="sigmoid"), "nonlinearity"),
    (LSTM, dict(num_layers=0), "num_layers"),
    (GRU, dict(dropout=1.5), "dropout"),
    (RNN, dict(dropout=-0.1), "dropout"),
    (LSTM, dict(dtype=np.int32), "dtype"),
])
def test_bad_constructor_args(cls, kw, name):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    with pytest.raises(ERR, match=name):
        cls(**args)


# ----------------------------------------------------------------------------------
# read-only, non-contiguous and Fortran-ordered inputs
# ----------------------------------------------------------------------------------

def _readonly(a):
    if a is None:
        return None
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_readonly_and_noncontiguous_inputs(cell, nl, dtype):
    case = Case(cell, nl, B=4, T=5, I=3, H=4, L=2, bidir=True, variable=True, seed=160,
                dtype=dtype)
    base = _run_all(case)
    originals = dict(X=case.X.copy(), h0=case.h0.copy(), R1=case.R1.copy(),
                     lengths=case.lengths.copy())

    variants = {}
    variants["readonly"] = dict(X=_readonly(case.X), h0=_readonly(case.h0),
                                c0=_readonly(case.c0), lengths=_readonly(case.lengths),
                                R1=_readonly(case.R1), R2=_readonly(case.R2),
                                R3=_readonly(case.R3))
    big = np.zeros((case.X.shape[0], 2 * case.X.shape[1], 2 * case.X.shape[2]), dtype)
    big[:, ::2, ::2] = case.X
    bigR = np.zeros((case.R1.shape[0], case.R1.shape[1], 2 * case.R1.shape[2]), dtype)
    bigR[:, :, 1::2] = case.R1
    variants["strided"] = dict(X=big[:, ::2, ::2], R1=bigR[:, :, 1::2],
                               h0=np.ascontiguousarray(case.h0.transpose(1, 0, 2))
                               .transpose(1, 0, 2))
    variants["fortran"] = dict(X=np.asfortranarray(case.X), R1=np.asfortranarray(case.R1),
                               h0=np.asfortranarray(case.h0),
                               c0=None if case.c0 is None else np.asfortranarray(case.c0),
                               R2=np.asfortranarray(case.R2))
    variants["transposed_view"] = dict(
        X=np.ascontiguousarray(case.X.transpose(1, 0, 2)).transpose(1, 0, 2),
        lengths=case.lengths[::-1].copy()[::-1])
    assert not variants["strided"]["X"].flags.c_contiguous
    assert not variants["fortran"]["X"].flags.c_contiguous
    assert not variants["transposed_view"]["X"].flags.c_contiguous

    for vname, v in variants.items():
        X = v.get("X", case.X)
        lengths = v.get("lengths", case.lengths)
        h0 = v.get("h0", case.h0)
        c0 = v.get("c0", case.c0)
        out, h_n, c_n = fwd(case.layer, cell, X, lengths, h0, c0, training=True)
        dX, grads = bwd(case.layer, cell, v.get("R1", case.R1), v.get("R2", case.R2),
                        v.get("R3", case.R3))
        got = dict(out=out, h_n=h_n, dX=dX)
        if c_n is not None:
            got["c_n"] = c_n
        got.update({"g_" + k: g for k, g in grads.items()})
        assert set(got) == set(base)
        for k in base:
            np.testing.assert_allclose(got[k], base[k], rtol=1e-12 if dtype == np.float64
                                       else 1e-6, atol=0, err_msg="%s: %s" % (vname, k))
    # inputs were not modified
    np.testing.assert_array_equal(case.X, originals["X"])
    np.testing.assert_array_equal(case.h0, originals["h0"])
    np.testing.assert_array_equal(case.R1, originals["R1"])
    np.testing.assert_array_equal(case.lengths, originals["lengths"])


@pytest.mark.parametrize("cell,nl", CELLS, ids=CELL_IDS)
def test_outputs_are_not_aliased(cell, nl):
    """Results of one call must not be overwritten by the next call."""
    case = Case(cell, nl, B=3, T=4, I=2, H=3, L=2, bidir=True, variable=True, seed=170)
    out1, h1, c1 = case.forward(training=True)
    dX1, g1 = bwd(case.layer, cell, case.R1, case.R2, case.R3)
    snap = dict(out=out1.copy(), h=h1.copy(), dX=dX1.copy(),
                **{k: v.copy() for k, v in g1.items()})
    X2 = np.random.default_rng(9).standard_normal(case.X.shape)
    case.forward(training=True, X=X2)
    bwd(case.layer, cell, 2 * case.R1, case.R2, case.R3)
    np.testing.assert_array_equal(out1, snap["out"])
    np.testing.assert_array_equal(h1, snap["h"])
    np.testing.assert_array_equal(dX1, snap["dX"])
    for k, v in g1.items():
        np.testing.assert_array_equal(v, snap[k], err_msg=k)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_return_sequences_false_gives_same_state_and_gradients(cls, bidirectional):
    rng = np.random.default_rng(5)
    layer = cls(3, 6, num_layers=2, bidirectional=bidirectional, dtype=np.float64,
                random_state=0)
    X = rng.normal(size=(9, 7, 3))
    lengths = rng.integers(1, 8, size=9)
    out, state = layer.forward(X, lengths, training=True)
    none, state2 = layer.forward(X, lengths, training=True, return_sequences=False)
    assert none is None
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    state2 if isinstance(state2, tuple) else (state2,)):
        np.testing.assert_array_equal(a, b)
    h_n = state[0] if isinstance(state, tuple) else state
    d_h = rng.normal(size=h_n.shape)
    d_state = (d_h, None) if cls is LSTM else d_h
    dX1, g1 = layer.backward(None, d_state)
    layer.forward(X, lengths, training=True)
    dX2, g2 = layer.backward(np.zeros_like(out), d_state)
    np.testing.assert_allclose(dX1, dX2, rtol=1e-12, atol=1e-14)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [LSTM, RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_tiny_batch_unit_split_matches_one_thread(cls, bidirectional):
    # batches too small to cut into chunks split the hidden units across threads
    # instead (inference, LSTM/RNN, H a multiple of 32 per thread): same results
    rng = np.random.default_rng(11)
    kw = {"nonlinearity": "relu"} if cls is RNN else {}
    layer = cls(24, 256, num_layers=2, bidirectional=bidirectional, random_state=0, **kw)
    for B in (1, 3):
        X = rng.normal(size=(B, 40, 24)).astype(np.float32)
        lengths = rng.integers(1, 41, size=B)
        ref_out, ref_state = layer.forward(X, lengths, n_threads=1)
        for nt in (2, 3, 4):
            _core.reset_threads_used()
            out, state = layer.forward(X, lengths, n_threads=nt)
            # several threads work: on the unit split (one chunk: its kernel needs
            # AVX-512; elsewhere such a call stays on one thread) or, for a batch with
            # work enough for two chunks, on the chunks
            used = _core.threads_used()[1]
            if _core.avx512_paths():
                assert used >= 2, (B, nt, used)
            np.testing.assert_array_equal(out, ref_out)
            for a, b in zip(state if isinstance(state, tuple) else (state,),
                            ref_state if isinstance(ref_state, tuple) else (ref_state,)):
                np.testing.assert_array_equal(a, b)
        assert np.all(ref_out[np.arange(40)[None, :] >= lengths[:, None]] == 0)
