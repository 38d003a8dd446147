"""bfloat16 inference (src_c/bf16.c; layer.forward(precision="bfloat16"); the estimators'
inference_precision).

The reference below is independent numpy: it rounds the weights, the inputs and h to
bf16 exactly as specified (round to nearest even) and accumulates each product in
float32 in vdpbf16ps' order (per pair of k: the odd element's product, then the even
one's; products of two bf16 values are exact in float32), so the kernel is checked
BITWISE and the layers to a few float32 ulps - far tighter than bf16 against float32
(~1e-3). The activations are the bf16 mode's cheaper formulas, computed here in numpy
float32 (_sigmoid_fast, _tanh_fast).
Tests that need the CPU feature skip, naming it, when it is absent; the fallback runs in
a subprocess with FASTRNN_NO_BF16=1 on any machine.
"""
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.layers import GRU, LSTM, RNN

needs_bf16 = pytest.mark.skipif(
    not _core.bf16_available(),
    reason="needs a CPU with AVX512_BF16 (and FASTRNN_NO_BF16 / FASTRNN_PORTABLE unset)")

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


# ---------------------------------------------------------------- the reference
def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even; denormals to signed zero (the
    instructions' DAZ)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = np.where((u & 0x7F800000) == 0, (u >> 16) & 0x8000, r)
    return r.astype(np.uint16)


def bf16(x):
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def bf16_matmul(a, w):
    """bf16(a) (m, k) @ bf16(w)^T (n, k), float32 accumulation in vdpbf16ps' order."""
    a, w = bf16(a), bf16(w)
    if a.shape[1] % 2:
        a = np.concatenate([a, np.zeros((a.shape[0], 1), np.float32)], axis=1)
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.float32)], axis=1)
    acc = np.zeros((a.shape[0], w.shape[0]), np.float32)
    for k in range(0, a.shape[1], 2):
        acc = acc + np.outer(a[:, k + 1], w[:, k + 1]).astype(np.float32)
        acc = acc + np.outer(a[:, k], w[:, k]).astype(np.float32)
    return acc


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _tanh(x):
    return np.tanh(x.astype(np.float64)).astype(np.float32)


def _exp2_fast(t):
    """2^t as bf16 inference's LSTM and GRU gate math computes it (src_c/vmath.c): t
    rounded to an integer n by the 1.5 * 2^23 trick, a degree-4 polynomial of the rest,
    float32 throughout (the C code fuses its multiply-adds: results differ by an ulp)."""
    f32 = np.float32
    magic = f32(12582912.0)
    n = (t + magic) - magic
    f = t - n
    p = f32(0.00958285294)
    for c in (0.0559064262, 0.240240991, 0.693124175, 1.0):
        p = p * f + f32(c)
    return np.ldexp(p, n.astype(np.int32)).astype(np.float32)


def _sigmoid_fast(x):
    x = np.clip(x, np.float32(-87), np.float32(87))
    e = _exp2_fast(x * np.float32(-1.44269504088896341))
    return np.float32(1) / (np.float32(1) + e)


def _tanh_fast(x):
    """1 - 2 / (e^{2|x|} + 1), the sign of x put back by its bit (as the C code does)."""
    ax = np.minimum(np.abs(x), np.float32(10))
    e = _exp2_fast(ax * np.float32(2.88539008177792681))
    t = np.float32(1) - np.float32(2) * (np.float32(1) / (e + np.float32(1)))
    bits = t.view(np.uint32) | (x.astype(np.float32).view(np.uint32) & np.uint32(0x80000000))
    return bits.view(np.float32)


def test_fast_activations_are_close():
    """The bf16 mode's cheaper activations against exact ones: a few 1e-6 at most."""
    x = np.linspace(-30, 30, 200001, dtype=np.float32)
    assert np.abs(_sigmoid_fast(x) - _sigmoid(x)).max() < 4e-6
    assert np.abs(_tanh_fast(x) - _tanh(x)).max() < 6e-6
    assert _tanh_fast(np.zeros(1, np.float32))[0] == 0


def ref_direction(cell, x, lengths, w_ih, w_hh, b_ih, b_hh, reverse):
    """One layer-direction, batch-first x (B, T, I): out (B, T, H), h_n, c_n. Float32
    everywhere except the two bf16 products; bias adds in float32 after the products
    (xp + a + b_ih + b_hh), as specified."""
    B, T, I = x.shape
    GH, H = w_hh.shape
    xp = bf16_matmul(x.reshape(B * T, I), w_ih).reshape(B, T, GH)
    h = np.zeros((B, H), np.float32)
    c = np.zeros((B, H), np.float32)
    out = np.zeros((B, T, H), np.float32)
    rows = np.arange(B)
    for step in range(T):
        act = lengths > step
        t = np.where(act, (lengths - 1 - step) if reverse else step, 0)
        xs = xp[rows, t]
        a = bf16_matmul(h, w_hh)
        if cell == "lstm":             # the cheaper activations (_sigmoid_fast, _tanh_fast)
            g = xs + a + b_ih + b_hh
            i, f = _sigmoid_fast(g[:, :H]), _sigmoid_fast(g[:, H:2 * H])
            gg, o = _tanh_fast(g[:, 2 * H:3 * H]), _sigmoid_fast(g[:, 3 * H:])
            c_new = f * c + i * gg
            h_new = o * _tanh_fast(c_new)
            c = np.where(act[:, None], c_new, c)
        elif cell == "gru":
            s = xs[:, :2 * H] + a[:, :2 * H] + b_ih[:2 * H] + b_hh[:2 * H]
            r, z = _sigmoid_fast(s[:, :H]), _sigmoid_fast(s[:, H:])
            n = _tanh_fast(xs[:, 2 * H:] + b_ih[2 * H:] + r * (a[:, 2 * H:] + b_hh[2 * H:]))
            h_new = n + z * (h - n)
        else:
            pre = xs + a + b_ih + b_hh
            h_new = _tanh_fast(pre) if cell == "rnn_tanh" else np.maximum(pre, np.float32(0))
        h = np.where(act[:, None], h_new, h)
        out[rows[act], t[act]] = h_new[act]
    return out, h, c


def ref_forward(cell, params, x, lengths, num_layers, bidirectional):
    D = 2 if bidirectional else 1
    inp, hs, cs = x.astype(np.float32), [], []
    for k in range(num_layers):
        outs = []
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            o, h, c = ref_direction(cell, inp, lengths, params["weight_ih" + s],
                                    params["weight_hh" + s], params["bias_ih" + s],
                                    params["bias_hh" + s], d == 1)
            outs.append(o)
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hs), np.stack(cs)


def make_layer(cell, I, H, **kw):
    if cell.startswith("rnn"):
        return RNN(I, H, nonlinearity=cell[4:], **kw)
    return {"lstm": LSTM, "gru": GRU}[cell](I, H, **kw)


# ---------------------------------------------------------------- the kernel
@needs_bf16
def test_reference_rounding_matches_core():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=4000) * 10.0 ** rng.integers(-44, 35, size=4000)).astype(np.float32)
    # exact ties (bit 15 set, lower bits zero) of both parities, denormals, zeros, limits
    ties = (np.arange(200, dtype=np.uint32) << 16 | 0x8000) + (0x3F80 << 16)
    special = np.array([0.0, -0.0, 1e-39, -1e-39, 1e-45, np.finfo(np.float32).tiny,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max], np.float32)
    x = np.concatenate([x, ties.view(np.float32), special])
    assert np.array_equal(_core.bf16_round(x), bf16_bits(x))
    # round to nearest EVEN: 1 + 2^-8 (a tie) rounds down to 1, 1 + 3 * 2^-8 up
    assert bf16(np.float32([1 + 2 ** -8, 1 + 3 * 2 ** -8])).tolist() == [1.0, 1 + 2 ** -6]


@needs_bf16
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 128, 64), (2, 130, 7), (3, 256, 33),
                                   (8, 64, 2), (9, 512, 128), (17, 96, 65), (40, 33, 300)])
def test_kernel_bitwise_against_reference(m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(n, k)).astype(np.float32)
    got = _core.bf16_matmul(a, w)
    assert np.array_equal(got, bf16_matmul(a, w))
    # and it is really bf16: float32 products differ
    assert not np.array_equal(got, (a @ w.T).astype(np.float32))


# ---------------------------------------------------------------- the layers
@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False),
                                                      (2, True)])
def test_layer_against_bf16_reference(cell, num_layers, bidirectional):
    rng = np.random.default_rng(CELLS.index(cell) * 10 + num_layers * 2 + bidirectional)
    B, T, I, H = 7, 9, 5, 20          # odd I (padded pair), H not a multiple of 32
    layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       random_state=3)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    out, state = layer.forward(X, lengths, precision="bfloat16")
    ref_out, ref_h, ref_c = ref_forward(cell, layer.params, X, lengths, num_layers,
                                        bidirectional)
    h_n = state[0] if cell == "lstm" else state
    err = np.abs(out - ref_out).max()
    assert err <= 1e-6, err
    assert np.abs(h_n - ref_h).max() <= 1e-6
    if cell == "lstm":
        assert np.abs(state[1] - ref_c).max() <= 2e-6
    # padding stays exactly zero
    for b in range(B):
        assert not out[b, lengths[b]:].any()
    # the float32 path is far from the bf16 reference: the comparison above is tight
    out32, _ = layer.forward(X, lengths)
    assert np.abs(out32 - ref_out).max() > 100 * max(err, 1e-7)


@needs_bf16
@pytest.mark.parametrize("cell", CELLS)
def test_time_major_equals_batch_first(cell):
    """The core's time-major layout (batch_first=False) gives the same bits."""
    rng = np.random.default_rng(5)
    B, T, I, H = 6, 8, 4, 33
    G = {"lstm": 4, "gru": 3}.get(cell, 1)
    w_ih = rng.uniform(-0.3, 0.3, (G * H, I)).astype(np.float32)
    w_hh = rng.uniform(-0.3, 0.3, (G * H, H)).astype(np.float32)
    b_ih, b_hh = (rng.uniform(-0.3, 0.3, G * H).astype(np.float32) for _ in range(2))
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32) if cell == "lstm" else None
    results = []
    for batch_first in (True, False):
        for reverse in (False, True):
            x = X if batch_first else np.ascontiguousarray(X.transpose(1, 0, 2))
            out = np.empty((B, T, H) if batch_first else (T, B, H), np.float32)
            h_n = np.empty((B, H), np.float32)
            c_n = np.empty((B, H), np.float32) if cell == "lstm" else None
            ws = np.empty(_core.bf16_workspace_size(cell, B, T, I, H, reverse, 2, 4,
                                                    batch_first), np.float32)
            _core.forward_bf16(cell, reverse, 2, 4, out, 0, h_n, c_n, x, lengths, h0, c0,
                               w_ih, w_hh, b_ih, b_hh, ws, batch_first)
            if not batch_first:
                out = out.transpose(1, 0, 2)
            results.append((reverse, out, h_n, c_n))
    for rev in (False, True):
        (a, b) = [r for r in results if r[0] == rev]
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        if cell == "lstm":
            assert np.array_equal(a[3], b[3])


@needs_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_error_against_float32_is_bounded(cell):
    rng = np.random.default_rng(1)
    layer = make_layer(cell, 32, 128, num_layers=2, random_state=0)
    X = rng.normal(size=(16, 50, 32)).astype(np.float32)
    out16, _ = layer.forward(X, precision="bfloat16")
    out32, _ = layer.forward(X)
    err = np.abs(out16 - out32).max()
    assert 0 < err < 0.03, err
    assert np.abs(out16 - out32).mean() < 3e-3


@needs_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_thread_count_invariance(cell):
    """Bitwise the same output for 1, 2 and 3 threads on a problem that more than one
    thread really works on (fixed chunks of samples)."""
    rng = np.random.default_rng(2)
    layer = make_layer(cell, 32, 128, bidirectional=True, random_state=1)
    X = rng.normal(size=(64, 40, 32)).astype(np.float32)
    lengths = rng.integers(1, 41, size=64)
    before = fastrnn.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            fastrnn.set_num_threads(n)
            _core.reset_threads_used()
            out, state = layer.forward(X, lengths, precision="bfloat16")
            assert _core.threads_used()[1] == n, (n, _core.threads_used())
            outs.append((out, state))
    finally:
        fastrnn.set_num_threads(before)
    for out, state in outs[1:]:
        assert np.array_equal(out, outs[0][0])
        for a, b in zip(np.atleast_1d(state), np.atleast_1d(outs[0][1])):
            assert np.array_equal(a, b)


@needs_bf16
def test_large_batch_in_parts_and_reuse():
    """Two calls in a row (workspace and packed-weight cache reused) and a weight change
    between calls (the cache compares the weights on every call: no stale panels)."""
    rng = np.random.default_rng(3)
    layer = LSTM(6, 40, random_state=2)
    X = rng.normal(size=(20, 12, 6)).astype(np.float32)
    a, _ = layer.forward(X, precision="bfloat16")
    b, _ = layer.forward(X, precision="bfloat16")
    assert np.array_equal(a, b)
    layer.params["weight_hh_l0"] *= 0.5
    c, _ = layer.forward(X, precision="bfloat16")
    ref, _, _ = ref_forward("lstm", layer.params, X, np.full(20, 12), 1, False)
    assert np.abs(c - ref).max() <= 1e-6


# ---------------------------------------------------------------- bad calls
def test_bad_precision_values():
    layer = LSTM(3, 8, random_state=0)
    X = np.zeros((2, 4, 3), np.float32)
    for bad in ("float16", "bf16", None, 16):
        with pytest.raises(ValueError, match="precision must be"):
            layer.forward(X, precision=bad)
    with pytest.raises(ValueError, match="inference only"):
        layer.forward(X, training=True, precision="bfloat16")
    layer64 = GRU(3, 8, dtype=np.float64, random_state=0)
    with pytest.raises(ValueError, match="float32 layer"):
        layer64.forward(X, precision="bfloat16")


# ---------------------------------------------------------------- the fallback
_FALLBACK = textwrap.dedent("""
    import io, warnings
    import numpy as np
    import fastrnn
    from fastrnn import _core
    from fastrnn.layers import LSTM
    assert not _core.bf16_available()
    layer = LSTM(5, 40, random_state=0)
    X = np.random.default_rng(0).normal(size=(8, 10, 5)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, _ = layer.forward(X, precision="bfloat16")
        b, _ = layer.forward(X, precision="bfloat16")
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "float32" in str(ours[0].message) and "{env}" in str(ours[0].message)
    c, _ = layer.forward(X)
    assert np.array_equal(a, c) and np.array_equal(b, c)
    f = io.StringIO()
    fastrnn.show_config(file=f)
    line = [l for l in f.getvalue().splitlines() if l.startswith("bfloat16")][0]
    assert "NOT available" in line and "{env}" in line, line
    assert fastrnn.get_config()["cpu"]["bf16_inference"] is False
    print("fallback ok")
""")


@pytest.mark.parametrize("env", ["FASTRNN_NO_BF16", "FASTRNN_PORTABLE"])
def test_fallback_without_bf16(env):
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastrnn.__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    environ.pop("FASTRNN_NO_BF16", None)
    environ.pop("FASTRNN_PORTABLE", None)
    environ[env] = "1"
    # without the CPU feature the warning names the CPU instead of the variable
    expect = env if _core.bf16_cpu() else "lacks AVX512_BF16"
    # run where the fastrnn under test lives: `python -c` puts the working directory
    # first on sys.path, and a source checkout there (no compiled core) would shadow it
    res = subprocess.run([sys.executable, "-c", _FALLBACK.replace("{env}", expect)],
                         env=environ, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    assert res.returncode == 0, res.stderr
    assert "fallback ok" in res.stdout


@needs_bf16
def test_show_config_reports_bf16():
    import io
    f = io.StringIO()
    fastrnn.show_config(file=f)
    line = [ln for ln in f.getvalue().splitlines() if ln.startswith("bfloat16")][0]
    assert "used" in line and "AVX512_BF16" in line
    cfg = fastrnn.get_config()["cpu"]
    assert cfg["bf16_inference"] is True and cfg["avx512_bf16"] is True


# ---------------------------------------------------------------- the estimators
@pytest.fixture(scope="module")
def fitted_classifier():
    from fastrnn.datasets import make_periodic
    X, y = make_periodic(1000, n_steps=40, random_state=0)
    clf = fastrnn.LSTMClassifier(hidden_size=32, max_epochs=25, random_state=0)
    clf.fit(X[:400], y[:400])
    return clf, X[400:], y[400:]


@needs_bf16
def test_estimator_bf16_accuracy_matches_float32(fitted_classifier):
    clf, X, y = fitted_classifier
    acc32 = clf.score(X, y)
    p32 = clf.predict_proba(X)
    clf.set_params(inference_precision="bfloat16")
    try:
        acc16 = clf.score(X, y)
        p16 = clf.predict_proba(X)
        d16 = clf.decision_function(X)
    finally:
        clf.set_params(inference_precision="float32")
    assert 0.8 < acc32 < 1, acc32      # learnt (chance: 1/3), not saturated
    assert abs(acc16 - acc32) <= 0.01, (acc16, acc32)
    assert not np.array_equal(p16, p32)        # the bf16 path really ran
    # probabilities move by ~1e-4 typically; a sample near a steep spot of the model may
    # move more (0.2 was seen in a -O1 build, whose trained weights differ)
    diff = np.abs(p16 - p32)
    assert diff.mean() < 5e-3 and np.quantile(diff, 0.99) < 0.05, (diff.mean(), diff.max())
    assert d16.shape == (len(X), 3)


@needs_bf16
def test_estimator_fit_stays_float32():
    """fit is unaffected by inference_precision: the same weights either way."""
    from fastrnn.datasets import make_delayed_recall
    X, y = make_delayed_recall(80, n_steps=8, random_state=1)
    kw = dict(hidden_size=8, max_epochs=3, random_state=0, early_stopping=True)
    a = fastrnn.GRUClassifier(**kw).fit(X, y)
    b = fastrnn.GRUClassifier(inference_precision="bfloat16", **kw).fit(X, y)
    for k, v in a.model_.params().items():
        assert np.array_equal(v, b.model_.params()[k])
    assert a.validation_scores_ == b.validation_scores_


@needs_bf16
def test_per_step_estimator_bf16():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12, 3)).astype(np.float32)
    Y = np.cumsum(X[:, :, 0], axis=1)
    reg = fastrnn.RNNSequenceRegressor(hidden_size=16, max_epochs=5, random_state=0)
    reg.fit(X, Y)
    p32 = reg.predict(X)
    reg.set_params(inference_precision="bfloat16")
    p16 = reg.predict(X)
    assert p16.shape == p32.shape and not np.array_equal(p16, p32)
    assert np.abs(p16 - p32).max() < 0.1 * np.abs(p32).max()


def test_estimator_param_plumbing(fitted_classifier, tmp_path):
    clf, X, _ = fitted_classifier
    est = fastrnn.LSTMRegressor(inference_precision="bfloat16")
    assert est.get_params()["inference_precision"] == "bfloat16"
    assert "inference_precision='bfloat16'" in repr(est)
    assert type(est)(**est.get_params()).inference_precision == "bfloat16"
    sklearn = pytest.importorskip("sklearn.base")
    assert sklearn.clone(est).inference_precision == "bfloat16"
    # a fitted model: pickle and save/load keep the setting and the predictions
    clf16 = pickle.loads(pickle.dumps(clf))
    clf16.set_params(inference_precision="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the fallback, off bf16 CPUs
        p = clf16.predict_proba(X)
        back = pickle.loads(pickle.dumps(clf16))
        assert back.inference_precision == "bfloat16"
        assert np.array_equal(back.predict_proba(X), p)
        clf16.save(tmp_path / "m.npz")
        loaded = fastrnn.load(tmp_path / "m.npz")
        assert loaded.inference_precision == "bfloat16"
        assert np.array_equal(loaded.predict_proba(X), p)


def test_estimator_bad_inference_precision(fitted_classifier):
    from fastrnn.datasets import make_delayed_recall
    X, y = make_delayed_recall(40, n_steps=6, random_state=0)
    for bad in ("float16", "BF16", None, 32):
        with pytest.raises(ValueError, match="inference_precision must be"):
            fastrnn.LSTMClassifier(max_epochs=1, inference_precision=bad).fit(X, y)
    with pytest.raises(ValueError, match="needs dtype='float32'"):
        fastrnn.GRUClassifier(max_epochs=1, dtype="float64",
                              inference_precision="bfloat16").fit(X, y)
    # set after fit: refused at predict time
    clf = pickle.loads(pickle.dumps(fitted_classifier[0]))
    clf.set_params(inference_precision="half")
    with pytest.raises(ValueError, match="inference_precision must be"):
        clf.predict(fitted_classifier[1])
