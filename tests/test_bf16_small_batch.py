"""bfloat16 inference of small batches (src_c/bf16.c): the unit-split path (a batch of
one chunk with its hidden units cut over the threads) and the packed-weight cache
(fastrnn._core.forward_bf16's wcache).

The split path must give the bits of the chunk path (one thread), which
tests/test_bf16.py checks against an independent numpy reference; here it is checked
against that reference too, and it must really run on several threads (one chunk can
only use several threads on the split path). The cache must never serve stale panels:
after any change of the weights a call gives bitwise what a fresh layer gives."""
import os
import sys

import numpy as np
import pytest

from fastrnn import _core
from fastrnn.layers import GRU, LSTM

sys.path.insert(0, os.path.dirname(__file__))
from test_bf16 import make_layer, ref_forward  # noqa: E402
from test_weight_cache import _differs, _fresh_forward  # noqa: E402

needs_bf16 = pytest.mark.skipif(
    not _core.bf16_available(),
    reason="needs a CPU with AVX512_BF16 (and FASTRNN_NO_BF16 / FASTRNN_PORTABLE unset)")

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def _split_expected(cell, layer, B, T, nt):
    """Whether a call of this layer (input 32) on B x T takes the split path with nt
    threads: one chunk of samples, enough work per step (src_c/bf16.c
    fr_bsplit_threads)."""
    from fastrnn.layers import _chunk_size
    G = {"lstm": 4, "gru": 3}.get(cell, 1)
    H = layer.hidden_size
    one_chunk = layer._small_batch_splits(B, True) or _chunk_size(B, layer._work(B, T)) >= B
    return one_chunk and H % 64 == 0 and G * H * (32 + H) >= 32768 and nt >= 2


@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,bidirectional,num_layers", [(1, False, 1), (3, True, 1),
                                                        (2, False, 2)])
def test_split_path_against_reference(cell, B, bidirectional, num_layers):
    """Batch 1-3, hidden 128, ragged lengths: the reference within float32 ulps, and the
    one-thread (chunk path) bits on 2 threads, which really work."""
    rng = np.random.default_rng(CELLS.index(cell) * 10 + B)
    # (longer runs may meet a near-tie in h's rounding to bf16, where the C code's fused
    # activations and numpy's differ by an ulp and the reference drifts by ~1e-4; the
    # bits against one thread are checked over 40 steps below)
    H, T = 128 if cell != "rnn_tanh" else 192, 37 if B < 3 else 15
    layer = make_layer(cell, 32, H, num_layers=num_layers, bidirectional=bidirectional,
                       random_state=2)
    X = rng.normal(size=(B, T, 32)).astype(np.float32)
    lengths = np.array([T, 5, 11][:B])
    one = layer.forward(X, lengths, precision="bfloat16", n_threads=1)
    _core.reset_threads_used()
    two = layer.forward(X, lengths, precision="bfloat16", n_threads=2)
    if _split_expected(cell, layer, B, T, 2):
        assert _core.threads_used()[1] == 2, _core.threads_used()
    else:
        assert cell == "rnn_relu", "the split path must be reached here"
    assert not _differs(one, two)
    ref_out, ref_h, ref_c = ref_forward(cell, layer.params, X, lengths, num_layers,
                                        bidirectional)
    out, state = two
    h_n = state[0] if cell == "lstm" else state
    assert np.abs(out - ref_out).max() <= 1e-6
    assert np.abs(h_n - ref_h).max() <= 1e-6
    if cell == "lstm":
        assert np.abs(state[1] - ref_c).max() <= 2e-6
    for b in range(B):
        assert not out[b, lengths[b]:].any()


@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
def test_split_thread_count_invariance(cell):
    """Hidden 192 splits over 2 and 3 threads (slices of 96 and 64 units), hidden 128
    over 2 (3 threads fall back to 2 slices): every count gives the one-thread bits, on
    the final-state-only call too."""
    rng = np.random.default_rng(7)
    for H in (128, 192):
        layer = make_layer(cell, 32, H, random_state=3)
        X = rng.normal(size=(1, 40, 32)).astype(np.float32)
        ref = layer.forward(X, precision="bfloat16", n_threads=1)
        ref_last = layer.forward(X, precision="bfloat16", n_threads=1,
                                 return_sequences=False)
        for nt in (2, 3):
            _core.reset_threads_used()
            got = layer.forward(X, precision="bfloat16", n_threads=nt)
            used = _core.threads_used()[1]
            if _split_expected(cell, layer, 1, 40, nt):
                want = nt if H % (32 * nt) == 0 else nt - 1
                assert used == want, (H, nt, used)
            assert not _differs(got, ref), (H, nt)
            last = layer.forward(X, precision="bfloat16", n_threads=nt,
                                 return_sequences=False)
            assert last[0] is None and not _differs(last, ref_last)


@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [1, 40])
def test_cache_sees_every_weight_change(cell, B):
    """Split path (batch 1) and chunk path (40 samples, several chunks) with the cache:
    in-place changes of one element of W_hh and of W_ih, a new array, and a change of
    the thread count (another slice layout) between calls all reach the result."""
    rng = np.random.default_rng(B)
    layer = make_layer(cell, 32, 128, random_state=5)
    X = rng.normal(size=(B, 12, 32)).astype(np.float32)
    first = layer.forward(X, precision="bfloat16", n_threads=2)
    assert not _differs(layer.forward(X, precision="bfloat16", n_threads=2), first)
    changes = [
        lambda p: p["weight_hh_l0"].__setitem__((-1, -1), p["weight_hh_l0"][-1, -1] + 0.5),
        lambda p: p["weight_ih_l0"].__setitem__((0, 0), p["weight_ih_l0"][0, 0] - 0.5),
        lambda p: p["weight_hh_l0"].__setitem__((7, 3), p["weight_hh_l0"][7, 3] * -3),
        lambda p: p.__setitem__("weight_hh_l0", p["weight_hh_l0"] * np.float32(0.9)),
    ]
    prev = first
    for change in changes:
        change(layer.params)
        got = layer.forward(X, precision="bfloat16", n_threads=2)
        assert _differs(got, prev)
        assert not _differs(got, _fresh_forward(layer, X, precision="bfloat16", n_threads=1))
        prev = got
    for nt in (1, 3, 2):
        assert not _differs(layer.forward(X, precision="bfloat16", n_threads=nt), prev)


@needs_bf16
def test_cache_is_separate_from_float32():
    """float32 and bf16 calls in turn keep their own caches: neither serves the
    other's panels."""
    layer = LSTM(32, 128, random_state=1)
    X = np.random.default_rng(0).normal(size=(1, 15, 32)).astype(np.float32)
    f32 = layer.forward(X)
    b16 = layer.forward(X, precision="bfloat16")
    assert _differs(f32, b16)
    for _ in range(3):
        assert not _differs(layer.forward(X), f32)
        assert not _differs(layer.forward(X, precision="bfloat16"), b16)


@needs_bf16
def test_core_cache_argument_checks():
    layer = GRU(4, 64)
    p = layer._checked_params()
    X = np.zeros((1, 3, 4), np.float32)
    h = np.zeros((1, 64), np.float32)
    ws = np.empty(_core.bf16_workspace_size("gru", 1, 3, 4, 64, False, 2, 16, True),
                  np.float32)
    size = _core.bf16_weight_cache_size("gru", 4, 64)
    assert size > 0
    args = ("gru", False, 2, 16, None, 0, h.copy(), None, X, np.full(1, 3, np.int32), h,
            None, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
            ws, True)
    with pytest.raises(ValueError, match="wcache has"):
        _core.forward_bf16(*args, wcache=np.zeros(size - 1, np.float32))
    with pytest.raises(TypeError, match="wcache"):
        _core.forward_bf16(*args, wcache=np.zeros(size, np.float64))
    _core.forward_bf16(*args, wcache=np.zeros(size, np.float32))


@needs_bf16
def test_estimator_batch_one_bf16_matches_layer():
    """predict on one sequence with inference_precision='bfloat16' takes the layers'
    plain path and the split: the same probabilities as the layer-level bf16 call."""
    from fastrnn import LSTMClassifier
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 10, 6)).astype(np.float32)
    y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    clf = LSTMClassifier(hidden_size=128, max_epochs=2, random_state=0,
                         inference_precision="bfloat16").fit(X, y)
    p_one = np.vstack([clf.predict_proba(X[i:i + 1]) for i in range(5)])
    p_all = clf.predict_proba(X[:5])
    np.testing.assert_allclose(p_one, p_all, atol=1e-6)
    clf.set_params(inference_precision="float32")
    p32 = clf.predict_proba(X[:5])
    assert not np.array_equal(p32, p_all)
    assert np.abs(p32 - p_all).max() < 0.05



@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
def test_split_core_layouts_states_and_odd_inputs(cell):
    """The core call itself: time-major and batch-first, both directions, given initial
    states, an odd input size (a padded pair) and ragged lengths: the split (2 threads,
    which really work) gives the bits of the chunk path (1 thread)."""
    rng = np.random.default_rng(CELLS.index(cell))
    B, T, I = 2, 40, 5
    H = 128 if cell in ("lstm", "gru") else 192
    G = {"lstm": 4, "gru": 3}.get(cell, 1)
    w_ih = rng.uniform(-0.2, 0.2, (G * H, I)).astype(np.float32)
    w_hh = rng.uniform(-0.2, 0.2, (G * H, H)).astype(np.float32)
    b_ih, b_hh = (rng.uniform(-0.2, 0.2, G * H).astype(np.float32) for _ in range(2))
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    lengths = np.array([T, 17], np.int32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32) if cell == "lstm" else None
    for batch_first in (True, False):
        x = X if batch_first else np.ascontiguousarray(X.transpose(1, 0, 2))
        for reverse in (False, True):
            got = []
            for nt in (1, 2):
                out = np.full(x.shape[:2] + (H,), np.nan, np.float32)
                h_n = np.empty((B, H), np.float32)
                c_n = np.empty((B, H), np.float32) if cell == "lstm" else None
                ws = np.empty(_core.bf16_workspace_size(cell, B, T, I, H, reverse, nt, B,
                                                        batch_first), np.float32)
                cache = np.zeros(_core.bf16_weight_cache_size(cell, I, H), np.float32)
                _core.reset_threads_used()
                for _ in range(2):       # packs into the cache, then finds it there
                    _core.forward_bf16(cell, reverse, nt, B, out, 0, h_n, c_n, x, lengths,
                                       h0, c0, w_ih, w_hh, b_ih, b_hh, ws, batch_first,
                                       wcache=cache)
                assert _core.threads_used()[1] == nt
                assert not np.isnan(out).any()
                got.append((out, h_n, c_n))
            (o1, h1, c1), (o2, h2, c2) = got
            assert np.array_equal(o1, o2) and np.array_equal(h1, h2)
            if cell == "lstm":
                assert np.array_equal(c1, c2)


@pytest.mark.parametrize("precision", [
    "float32", pytest.param("bfloat16", marks=needs_bf16)])
def test_small_batches_that_cannot_split_keep_their_chunks(precision):
    """Inference keeps a batch of 2-3 in one chunk only where the core splits it over
    the hidden units; elsewhere (hidden 40; a bf16 RNN of hidden 128, below the bf16
    split's work per step) the batch stays two chunks on two threads."""
    rng = np.random.default_rng(4)
    layers = [LSTM(32, 40, random_state=0)]
    if precision == "bfloat16":
        layers.append(make_layer("rnn_tanh", 32, 128, random_state=0))
    for layer in layers:
        assert not layer._small_batch_splits(3, precision == "bfloat16")
        X = rng.normal(size=(3, 1500, 32)).astype(np.float32)
        ref = layer.forward(X, precision=precision, n_threads=1)
        _core.reset_threads_used()
        got = layer.forward(X, precision=precision, n_threads=2)
        assert _core.threads_used()[1] == 2
        assert not _differs(got, ref)
    if _core.avx512_paths():
        assert LSTM(32, 128)._small_batch_splits(3, False)
