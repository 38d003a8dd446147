"""float32 GRU backward through the fused gate step (vmath.c's fr_gru_rows_backward_avx512,
taken by gru.c's rows function whenever the CPU has AVX-512F; elsewhere these tests run
the portable loop, which must satisfy them too).

The fused step works 16 hidden units at a time: H = 16 is one whole block, 48 three,
20 one block and a masked tail of 4, 5 the tail alone. Every case has variable lengths,
a non-zero initial state (so dh0 and the h_{t-1} - n term are exercised from step 0),
and gradients from both the outputs and the final state.

Ground truths: the float64 numpy reference (tests/reference.py) at the float32 tolerance
of tests/test_small_backward.py (largest error <= 2e-4 of the largest value, per
gradient), a float64 finite difference of the loss along a random direction of every
input at once, and bitwise equality over 1, 2 and 3 working threads."""
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.layers import GRU

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import reference_forward, reference_backward  # noqa: E402
from test_small_backward import _grads_on_1_2_3_threads  # noqa: E402

RTOL = 2e-4          # tests/test_small_backward.py's float32 tolerance


@pytest.fixture
def restore_threads():
    n = fastrnn.get_num_threads()
    yield n
    fastrnn.set_num_threads(n)


def _problem(I, H, B, T, L=1, bidir=False, seed=0, with_h0=True):
    D = 2 if bidir else 1
    layer = GRU(I, H, num_layers=L, bidirectional=bidir, dtype=np.float32,
                random_state=seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    lengths[0], lengths[-1] = 1, T            # unsorted, one full and one 1-step sample
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(np.float32) if with_h0 else None
    d_out = rng.standard_normal((B, T, D * H)).astype(np.float32)
    d_h_n = rng.standard_normal((L * D, B, H)).astype(np.float32)
    return layer, X, lengths, h0, d_out, d_h_n


def _fastrnn_grads(layer, X, lengths, h0, d_out, d_h_n, n_threads):
    layer.forward(X, lengths=lengths, h0=h0, training=True, n_threads=n_threads)
    dX, g = layer.backward(d_out, d_h_n, n_threads=n_threads)
    return dX.copy(), {k: v.copy() for k, v in g.items()}


def _reference_grads(layer, X, lengths, h0, d_out, d_h_n):
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    params = {k: np.asarray(v, np.float64) for k, v in layer.params.items()}
    h0 = np.zeros((L * D, X.shape[0], H)) if h0 is None else np.asarray(h0, np.float64)
    _, _, _, cache = reference_forward("gru", params, X.astype(np.float64), lengths, h0,
                                       num_layers=L, bidirectional=D == 2)
    return reference_backward(cache, d_out.astype(np.float64), d_h_n.astype(np.float64))


def _assert_matches_reference(dX, g, r_dX, r_g):
    assert set(g) == set(r_g)                  # every parameter and h0
    for name, got, want in [("dX", dX, r_dX)] + [(k, g[k], r_g[k]) for k in r_g]:
        assert got.dtype == np.float32, name
        scale = np.abs(want).max()
        assert scale > 1e-3, (name, scale)    # not trivially zero
        err = np.abs(np.asarray(got, np.float64) - want).max() / scale
        assert err < RTOL, (name, err)


@pytest.mark.parametrize("H", [16, 48, 20, 5])
def test_float32_gradients_match_reference(H):
    """One layer, one direction, two threads: dX, every parameter and dh0."""
    layer, X, lengths, h0, d_out, d_h_n = _problem(I=7, H=H, B=37, T=15, seed=H)
    dX, g = _fastrnn_grads(layer, X, lengths, h0, d_out, d_h_n, 2)
    _assert_matches_reference(dX, g, *_reference_grads(layer, X, lengths, h0, d_out, d_h_n))
    # padded steps get no gradient
    assert np.all(dX[np.arange(X.shape[1])[None, :] >= lengths[:, None]] == 0)


@pytest.mark.parametrize("H", [16, 48, 20])
def test_float32_gradients_match_finite_differences(H):
    """The float32 gradients predict the change of the float64 loss (same parameters)
    along a random direction of all parameters, X and h0 together: an independent check
    of the reference the other tests use."""
    layer, X, lengths, h0, d_out, d_h_n = _problem(I=5, H=H, B=9, T=8, L=2, bidir=True,
                                                   seed=100 + H)
    dX, g = _fastrnn_grads(layer, X, lengths, h0, d_out, d_h_n, 2)
    f64 = GRU(5, H, num_layers=2, bidirectional=True, dtype=np.float64)
    for k, v in layer.params.items():
        f64.params[k][...] = v
    R1, R2 = d_out.astype(np.float64), d_h_n.astype(np.float64)

    def loss(eps, V):
        for k in f64.params:
            f64.params[k][...] = np.asarray(layer.params[k], np.float64) + eps * V[k]
        out, h_n = f64.forward(X + eps * V["X"], lengths=lengths, h0=h0 + eps * V["h0"])
        return float(np.sum(out * R1) + np.sum(h_n * R2))

    rng = np.random.default_rng(H)
    for trial in range(3):
        V = {k: rng.standard_normal(np.shape(v)) for k, v in layer.params.items()}
        V["X"], V["h0"] = rng.standard_normal(X.shape), rng.standard_normal(h0.shape)
        eps = 1e-6
        numeric = (loss(eps, V) - loss(-eps, V)) / (2 * eps)
        analytic = sum(float(np.sum(np.asarray(g[k], np.float64) * V[k]))
                       for k in layer.params)
        analytic += float(np.sum(dX * V["X"])) + float(np.sum(g["h0"] * V["h0"]))
        assert abs(numeric) > 1.0
        assert abs(analytic - numeric) < 1e-4 * abs(numeric), (trial, analytic, numeric)


@pytest.mark.parametrize("H", [16, 48, 20])
def test_bidirectional_two_layers_thread_invariant_and_right(H, restore_threads):
    """Two bidirectional layers, variable lengths: bitwise the same on 1, 2 and 3 working
    threads (the core's record), and right against the reference (dh0 included)."""
    layer, X, lengths, _, d_out, d_h_n = _problem(I=32, H=H, B=128, T=48, L=2, bidir=True,
                                                  seed=200 + H, with_h0=False)
    dX, g = _grads_on_1_2_3_threads(layer, X, lengths, d_out, d_h_n)[3]
    _assert_matches_reference(dX, g, *_reference_grads(layer, X, lengths, None, d_out,
                                                        d_h_n))

