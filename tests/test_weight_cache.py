"""The packed-weight cache of float32 inference (fastrnn._core.forward's wcache,
src_c/recurrence.c fr_forward_cached_f32) and the batch-1 paths (the unit split of every
cell, its spin barrier, the alternating panel order).

The cache must never serve stale panels: after any change of the weights (in place, one
element, a new array, an optimizer step, load_torch, another thread count or batch
layout) a call must give bitwise what a fresh layer with the same weights gives, which
never saw a cache. And float32 results stay bitwise independent of the thread count on
problems where several threads really work."""
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import GRU, LSTM, RNN
from fastrnn.optim import Adam

CELLS = [(LSTM, {}), (GRU, {}), (RNN, {}), (RNN, {"nonlinearity": "relu"})]
# (batch, input, hidden): the unit-split family at batch 1 and 3 (hidden a multiple of
# 64), the chunk path with the fused product (RNN hidden 16) or products apart (GRU),
# a batch of several chunks
SHAPES = [(1, 32, 128), (3, 8, 64), (1, 5, 16), (40, 6, 24)]


def _fresh_forward(layer, X, **kw):
    """The same call on a new layer holding copies of the weights: no cache seen yet."""
    twin = type(layer)(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                       bidirectional=layer.bidirectional,
                       **({"nonlinearity": layer.nonlinearity}
                          if isinstance(layer, RNN) else {}))
    twin.params = {k: np.array(v, copy=True) for k, v in layer.params.items()}
    return twin.forward(X, **kw)


def _flat(result):
    out, state = result
    parts = [] if out is None else [out]
    parts += list(state) if isinstance(state, tuple) else [state]
    return parts


def _assert_same(a, b):
    for x, y in zip(_flat(a), _flat(b)):
        np.testing.assert_array_equal(x, y)


def _differs(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(_flat(a), _flat(b)))


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("B,I,H", SHAPES)
def test_in_place_changes_are_seen(cls, kw, B, I, H):
    rng = np.random.default_rng(B * 100 + H)
    layer = cls(I, H, random_state=1, **kw)
    X = rng.standard_normal((B, 9, I)).astype(np.float32)
    for nt in (1, 2):
        first = layer.forward(X, n_threads=nt)
        _assert_same(layer.forward(X, n_threads=nt), first)         # served from the cache
        for name in ("weight_hh_l0", "weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            p = layer.params[name]
            idx = tuple(rng.integers(0, s) for s in p.shape)
            p[idx] += np.float32(0.25)                              # ONE element, in place
            after = layer.forward(X, n_threads=nt)
            _assert_same(after, _fresh_forward(layer, X, n_threads=nt))
        # (one element may meet a unit relu keeps at zero; four changes together do not)
        assert _differs(after, first)
        # the last element of the last row (the end of the last thread's slice)
        layer.params["weight_hh_l0"][-1, -1] *= np.float32(-1.5)
        after = layer.forward(X, n_threads=nt)
        _assert_same(after, _fresh_forward(layer, X, n_threads=nt))
        # a whole new array under the same name, and a changed bit pattern of zero
        layer.params["weight_hh_l0"] = layer.params["weight_hh_l0"] * np.float32(0.5)
        _assert_same(layer.forward(X, n_threads=nt), _fresh_forward(layer, X, n_threads=nt))
        layer.params["weight_ih_l0"][0, 0] = np.float32(0.0)
        layer.forward(X, n_threads=nt)
        layer.params["weight_ih_l0"][0, 0] = np.float32(-0.0)
        _assert_same(layer.forward(X, n_threads=nt), _fresh_forward(layer, X, n_threads=nt))


@pytest.mark.parametrize("cls,kw", CELLS)
def test_layout_changes_between_calls(cls, kw):
    """One layer called with batch 1 (unit split on several threads), then other thread
    counts and batch sizes (chunk paths, fused or not), back and forth: each call equals
    a fresh layer's."""
    rng = np.random.default_rng(3)
    layer = cls(32, 128, random_state=2, **kw)
    Xs = {B: rng.standard_normal((B, 7, 32)).astype(np.float32) for B in (1, 2, 64)}
    for B, nt in [(1, 2), (1, 1), (1, 3), (64, 2), (1, 2), (2, 1), (1, 2), (64, 1), (1, 3)]:
        _assert_same(layer.forward(Xs[B], n_threads=nt),
                     _fresh_forward(layer, Xs[B], n_threads=nt))
        layer.params["weight_hh_l0"][nt, B % 7] += np.float32(0.01)


@pytest.mark.parametrize("cls,kw", CELLS)
def test_training_steps_between_inference_calls(cls, kw):
    """An optimizer updates the parameters in place between inference calls (as a fit
    with validation does): every inference call sees the new weights."""
    rng = np.random.default_rng(4)
    layer = cls(32, 128, num_layers=2, random_state=3, **kw)
    X = rng.standard_normal((1, 12, 32)).astype(np.float32)
    opt = Adam(lr=1e-2)
    for _ in range(3):
        ref = _fresh_forward(layer, X, n_threads=2)
        _assert_same(layer.forward(X, n_threads=2), ref)
        out, state = layer.forward(X, training=True, n_threads=2)
        _, grads = layer.backward(np.ones_like(out))
        opt.step(layer.params, {k: v for k, v in grads.items() if k in layer.params})
        assert _differs(layer.forward(X, n_threads=2), ref)


def test_load_torch_is_seen():
    torch = pytest.importorskip("torch")
    from fastrnn.interop import load_torch
    rng = np.random.default_rng(5)
    layer = LSTM(32, 128, random_state=0)
    X = rng.standard_normal((1, 10, 32)).astype(np.float32)
    layer.forward(X, n_threads=2)
    torch.manual_seed(0)
    mod = torch.nn.LSTM(32, 128, batch_first=True)
    load_torch(layer, mod)
    with torch.no_grad():
        _, (h, _) = mod(torch.from_numpy(X))
    _, (h_n, _) = layer.forward(X, n_threads=2)
    np.testing.assert_allclose(h_n, h.numpy(), rtol=1e-5, atol=1e-6)
    _assert_same(layer.forward(X, n_threads=2), _fresh_forward(layer, X, n_threads=2))


def test_estimator_warm_start_then_predict():
    """fit, predict, more fitting (warm start: the same parameter arrays updated in
    place), predict again: the second predict uses the new weights."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 8, 32)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    est = fastrnn.LSTMClassifier(hidden_size=128, max_epochs=1, warm_start=True,
                                 random_state=0).fit(X, y)
    p1 = est.predict_proba(X[:1])
    rnn = est.model_.rnn
    arrays = {k: id(v) for k, v in rnn.params.items()}
    est.fit(X, y)
    p2 = est.predict_proba(X[:1])
    assert not np.array_equal(p1, p2)
    fresh = _fresh_forward(rnn, X[:1], return_sequences=False)
    _assert_same(rnn.forward(X[:1], return_sequences=False), fresh)
    # (whether fit kept the arrays or made new ones, the cache must follow both)
    assert set(arrays) == set(rnn.params)


@pytest.mark.parametrize("cls,kw", CELLS)
@pytest.mark.parametrize("H", [64, 128, 192])
def test_batch_one_thread_count_invariance(cls, kw, H):
    """Batch 1 and 2, one layer: the unit split (every cell now, GRU included) on 2 and 3
    threads gives the bits of one thread; it must really run on several threads."""
    rng = np.random.default_rng(H)
    layer = cls(32, H, random_state=4, **kw)
    for B in (1, 2):
        X = rng.standard_normal((B, 50, 32)).astype(np.float32)
        lengths = np.array([50, 23][:B])
        ref = layer.forward(X, lengths, n_threads=1)
        for nt in (2, 3):
            _core.reset_threads_used()
            got = layer.forward(X, lengths, n_threads=nt)
            # (an RNN of hidden 64 has too little work per step for a barrier: one thread)
            if _core.avx512_paths() and not (cls is RNN and H == 64):
                assert _core.threads_used()[1] >= 2, (cls, H, B, nt)
            _assert_same(got, ref)


@pytest.mark.parametrize("cls", [GRU, LSTM], ids=["gru", "lstm"])
@pytest.mark.parametrize("precision", [
    "float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
        not _core.bf16_available(), reason="needs a CPU with AVX512_BF16"))])
def test_threads_share_a_layer(cls, precision):
    """Python threads calling one layer at once each use their own cache (the caches are
    written by the calls), float32 or bf16 (its own cache): every result equals the
    single-threaded one."""
    rng = np.random.default_rng(8)
    layer = cls(32, 128, random_state=5)
    Xs = [rng.standard_normal((1, 20, 32)).astype(np.float32) for _ in range(4)]
    refs = [layer.forward(X, n_threads=1, precision=precision) for X in Xs]
    errors = []

    def work(i):
        try:
            for _ in range(30):
                _assert_same(layer.forward(Xs[i], n_threads=2, precision=precision), refs[i])
        except Exception as e:   # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_weight_cache_checks():
    layer = LSTM(4, 64)
    p = layer._checked_params()
    X = np.zeros((1, 3, 4), np.float32)
    h = np.zeros((1, 64), np.float32)
    ws = np.empty(_core.workspace_sizes("lstm", 1, 3, 4, 64, False, 1, 1, True)[0], np.float32)
    size = _core.weight_cache_size("lstm", 4, 64)
    args = ("lstm", False, 1, 1, None, 0, h.copy(), h.copy(), None, None, None, X,
            np.full(1, 3, np.int32), h, h, p["weight_ih_l0"], p["weight_hh_l0"],
            p["bias_ih_l0"], p["bias_hh_l0"], ws, True)
    with pytest.raises(ValueError, match="wcache has"):
        _core.forward(*args, np.zeros(size - 1, np.float32))
    with pytest.raises(TypeError, match="wcache"):
        _core.forward(*args, np.zeros(size, np.float64))
    _core.forward(*args, np.zeros(size, np.float32))
    # float64 layers keep no cache
    assert LSTM(4, 64, dtype=np.float64)._weight_cache(0, 0, 4) is None


@pytest.mark.parametrize("precision", [
    "float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
        not _core.bf16_available(), reason="needs a CPU with AVX512_BF16"))])
def test_unit_split_with_a_smaller_team(precision):
    """OMP_DYNAMIC=true lets OpenMP hand a region fewer threads than asked: the unit
    split then runs several slices per thread (its barrier counts the real team) and must
    neither hang nor change a bit, float32 or bf16. In a fresh process (the setting is
    read at start)."""
    code = (
        "import numpy as np\n"
        "from fastrnn.layers import LSTM, GRU, RNN\n"
        "for cls in (LSTM, GRU, RNN):\n"
        "    L = cls(32, 192, random_state=0)\n"
        "    X = np.random.default_rng(0).standard_normal((2, 30, 32)).astype(np.float32)\n"
        f"    kw = dict(precision={precision!r})\n"
        "    ref = L.forward(X, np.array([30, 11]), n_threads=1, **kw)[0]\n"
        "    for nt in (2, 3):\n"
        "        for _ in range(20):\n"
        "            out = L.forward(X, np.array([30, 11]), n_threads=nt, **kw)[0]\n"
        "            assert np.array_equal(out, ref), (cls, nt)\n"
        "print('ok')\n")
    res = run_fresh_python(code, OMP_DYNAMIC="true")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def run_fresh_python(code, **env):
    """Runs code in a new interpreter with these environment variables set, importing
    the fastrnn under test (installed or built in place)."""
    import os
    import subprocess
    import sys
    full = dict(os.environ, **env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    full["PYTHONPATH"] = os.pathsep.join([root] + [p for p in full.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=120, cwd=root)
