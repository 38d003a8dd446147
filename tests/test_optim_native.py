"""The native optimizer step (src_c/optim.c through Optimizer.step): clipping by global
norm and the update of every dense parameter in one core call, checked against the
numpy formulas of fastrnn.optim (bitwise), torch.optim with clip_grad_norm_, and
clip_grad_norm; thread invariance; bad input."""
import copy
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.optim import SGD, Adam, RMSprop, clip_grad_norm
from fastrnn.sparse import RowSparseGrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_optim import OPTIMIZER_CASES  # noqa: E402

SHAPES = {"weight_ih": (32, 5), "weight_hh": (32, 8), "bias": (32,), "head": (3, 8, 2)}
N_STEPS = 30

# the cases the numpy path is checked on against PyTorch (test_optim), plus RMSprop
# with momentum and no weight decay
CASES = OPTIMIZER_CASES + [(RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.7))]
IDS = [f"{name}-{i}" for i, (_, name, _) in enumerate(CASES)]
DTYPES = [np.float32, np.float64]


def params_and_grads(dtype, seed=0, shapes=SHAPES, n_steps=N_STEPS):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: (rng.normal(size=s) * rng.uniform(0.1, 3)).astype(dtype)
              for k, s in shapes.items()} for _ in range(n_steps)]
    return params, grads


@pytest.fixture
def core_calls(monkeypatch):
    """Counts the calls of _core.optim_step (proves which path ran)."""
    calls = []
    real = _core.optim_step

    def counting(*args):
        calls.append(args[0])
        return real(*args)
    monkeypatch.setattr(_core, "optim_step", counting)
    return calls


def python_step(opt, params, grads, max_norm):
    """The numpy reference: clip_grad_norm, then `_update` key by key."""
    total = clip_grad_norm(grads, max_norm) if max_norm is not None else None
    for key, g in grads.items():
        st = opt.state.get(key, {})
        opt._update(st, params[key], g)
        if st:
            opt.state[key] = st
    return total


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cls, torch_name, kwargs", CASES, ids=IDS)
def test_native_step_is_bitwise_the_numpy_formulas(cls, torch_name, kwargs, dtype, core_calls):
    params, grad_seq = params_and_grads(dtype)
    ref_params = copy.deepcopy(params)
    start = copy.deepcopy(params)
    opt, ref = cls(**kwargs), cls(**kwargs)
    for grads in grad_seq:
        assert opt.step(params, copy.deepcopy(grads)) is None
        python_step(ref, ref_params, copy.deepcopy(grads), None)
    assert len(core_calls) == N_STEPS
    for k in params:
        assert params[k].dtype == dtype
        assert not np.allclose(params[k], start[k])
        np.testing.assert_array_equal(params[k], ref_params[k])
        assert (k in opt.state) == (k in ref.state)
        for name, a in ref.state.get(k, {}).items():
            np.testing.assert_array_equal(opt.state[k][name], a)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cls, torch_name, kwargs", CASES, ids=IDS)
def test_native_clipped_step_matches_numpy_formulas(cls, torch_name, kwargs, dtype,
                                                     core_calls):
    """With clipping (active on most steps): the norm is summed in another order than
    clip_grad_norm's, so the coefficient may differ in its last bit."""
    params, grad_seq = params_and_grads(dtype, seed=1)
    ref_params = copy.deepcopy(params)
    opt, ref = cls(**kwargs), cls(**kwargs)
    clipped = 0
    for grads in grad_seq:
        g_native, g_ref = copy.deepcopy(grads), copy.deepcopy(grads)
        total = opt.step(params, g_native, max_norm=20.0)
        ref_total = python_step(ref, ref_params, g_ref, 20.0)
        assert isinstance(total, float)
        np.testing.assert_allclose(total, ref_total, rtol=1e-14)
        clipped += total > 20.0
        for k in grads:   # the gradients are scaled in place, as clip_grad_norm does
            np.testing.assert_allclose(g_native[k], g_ref[k], rtol=1e-6 if dtype == np.float32
                                       else 1e-14)
    assert 5 < clipped < N_STEPS    # both branches taken
    assert len(core_calls) == N_STEPS
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], **tol)


@pytest.mark.parametrize("clip", [None, 20.0], ids=["noclip", "clip"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cls, torch_name, kwargs", CASES, ids=IDS)
def test_native_step_matches_torch(cls, torch_name, kwargs, dtype, clip, core_calls):
    torch = pytest.importorskip("torch")
    params, grad_seq = params_and_grads(dtype, seed=2)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    topt = getattr(torch.optim, torch_name)(list(tparams.values()), **kwargs)
    opt = cls(**kwargs)
    for grads in grad_seq:
        total = opt.step(params, copy.deepcopy(grads), max_norm=clip)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k].copy())
        if clip is not None:
            tnorm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)
            np.testing.assert_allclose(total, float(tnorm), rtol=1e-5 if dtype == np.float32
                                       else 1e-12)
        topt.step()
    assert len(core_calls) == N_STEPS
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_clipping_alone_equals_clip_grad_norm(dtype, core_calls):
    """SGD with lr -> the grads scaled in place and the norm returned are clip_grad_norm's;
    a norm below max_norm leaves the grads' bits untouched."""
    _, (grads,) = params_and_grads(dtype, seed=3, n_steps=1)
    params = {k: np.zeros_like(g) for k, g in grads.items()}
    for max_norm in (0.5, 1e6):
        mine, ref = copy.deepcopy(grads), copy.deepcopy(grads)
        total = SGD(lr=1.0).step(params, mine, max_norm=max_norm)
        ref_total = clip_grad_norm(ref, max_norm)
        exact = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        np.testing.assert_allclose(total, exact, rtol=1e-14)
        np.testing.assert_allclose(total, ref_total, rtol=1e-14)
        for k in grads:
            if max_norm > total:
                np.testing.assert_array_equal(mine[k], grads[k])
            else:
                np.testing.assert_allclose(mine[k], ref[k], rtol=1e-6 if dtype == np.float32
                                           else 1e-14)
    assert len(core_calls) == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sparse_grads_count_in_the_global_norm(dtype, core_calls):
    """An embedding's RowSparseGrad: counted in the norm and scaled in the native call,
    then applied by the lazy path; same result as clip_grad_norm + the numpy steps."""
    rng = np.random.default_rng(4)
    params = {"emb": rng.normal(size=(20, 4)).astype(dtype),
              "w": rng.normal(size=(6, 4)).astype(dtype)}
    ref_params = copy.deepcopy(params)
    opt, ref = Adam(lr=0.05), Adam(lr=0.05)
    for _ in range(8):
        rows = np.sort(rng.choice(20, size=5, replace=False))
        vals = (rng.normal(size=(5, 4)) * 4).astype(dtype)
        w = rng.normal(size=(6, 4)).astype(dtype)
        mine = {"emb": RowSparseGrad(rows, vals.copy(), (20, 4)), "w": w.copy()}
        theirs = {"emb": RowSparseGrad(rows, vals.copy(), (20, 4)), "w": w.copy()}
        total = opt.step(params, mine, max_norm=2.0)
        ref_total = clip_grad_norm(theirs, 2.0)
        ref.step(ref_params, theirs)    # already clipped
        expect = np.sqrt(np.sum(vals.astype(np.float64) ** 2) + np.sum(w.astype(np.float64) ** 2))
        np.testing.assert_allclose(total, expect, rtol=1e-13)
        np.testing.assert_allclose(total, ref_total, rtol=1e-13)
        np.testing.assert_allclose(mine["emb"].values, theirs["emb"].values, rtol=1e-6)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=tol, atol=tol)


def test_results_do_not_depend_on_the_thread_count():
    """A problem large enough for several threads: the same bits with 1, 2 and 3."""
    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP: one thread only")
    shapes = {"a": (700, 1000), "b": (300_001,), "c": (7,)}
    results = []
    used = []
    for nt in (1, 2, 3):
        params, grad_seq = params_and_grads(np.float32, seed=5, shapes=shapes, n_steps=3)
        opt = Adam(lr=0.01)
        norms = []
        _core.reset_threads_used()
        for grads in grad_seq:
            norms.append(opt.step(params, grads, max_norm=100.0, n_threads=nt))
        used.append(_core.threads_used()[1])
        results.append((params, norms))
    assert used[0] == 1 and used[1] == 2 and used[2] == 3
    for params, norms in results[1:]:
        assert norms == results[0][1]
        for k in params:
            np.testing.assert_array_equal(params[k], results[0][0][k])


def test_python_path_for_other_dtypes_layouts_and_overridden_update(core_calls):
    class MySGD(SGD):
        def _update(self, st, p, g):
            p -= 2 * self.lr * g
    p = {"w": np.ones(4)}
    MySGD(lr=0.5).step(p, {"w": np.ones(4)})
    np.testing.assert_array_equal(p["w"], np.zeros(4))      # its own formula ran
    half = {"w": np.ones(4, dtype=np.float16)}
    Adam().step(half, {"w": np.ones(4, dtype=np.float16)}, max_norm=1.0)
    assert half["w"].dtype == np.float16 and np.all(half["w"] < 1)
    f_order = {"w": np.ones((3, 4), order="F")}
    SGD(lr=0.5).step(f_order, {"w": np.ones((3, 4))})
    np.testing.assert_array_equal(f_order["w"], 0.5)
    assert core_calls == []
    # a non-contiguous gradient is fine on the native path
    c = {"w": np.ones((3, 4))}
    SGD(lr=0.5).step(c, {"w": np.ones((4, 3)).T})
    np.testing.assert_array_equal(c["w"], 0.5)
    assert core_calls == ["sgd"]


def test_non_finite_norm_leaves_gradients_unscaled():
    g = {"a": np.array([1.0, np.nan]), "b": np.array([3.0, 4.0])}
    p = {"a": np.zeros(2), "b": np.zeros(2)}
    total = SGD(lr=1.0).step(p, g, max_norm=1.0)
    assert np.isnan(total)
    np.testing.assert_array_equal(g["b"], [3.0, 4.0])
    np.testing.assert_array_equal(p["b"], [-3.0, -4.0])


def test_bad_max_norm_raises():
    p = {"w": np.zeros(3)}
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="max_norm"):
            SGD().step(p, {"w": np.ones(3)}, max_norm=bad)
    with pytest.raises(TypeError, match="max_norm"):
        SGD().step(p, {"w": np.ones(3)}, max_norm="1")


def _call(kind="adam", params=None, grads=None, s1=None, s2=None, extra=(), max_norm=1.0,
          hyper=(0.1, 0.0, 0.0, False, 0.9, 0.999, 0.99, 1e-8)):
    params = [np.zeros(4, np.float32)] if params is None else params
    n = len(params)
    grads = [np.ones(4, np.float32)] * n if grads is None else grads
    s1 = [np.zeros(4, np.float32) for _ in range(n)] if s1 is None else s1
    s2 = [np.zeros(4, np.float32) for _ in range(n)] if s2 is None else s2
    return _core.optim_step(kind, hyper, params, grads, s1, s2, [0.1] * n, [1.0] * n,
                            [False] * n, list(extra), max_norm, 2)


def test_core_rejects_bad_input():
    f32 = np.zeros(4, np.float32)
    assert _call() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        _call(kind="adagrad")
    with pytest.raises(TypeError, match="dtype"):
        _call(grads=[np.ones(4)])                                   # float64 grad
    with pytest.raises(TypeError, match="dtype"):
        _call(params=[np.zeros(4, np.int32)])
    with pytest.raises(ValueError, match="elements"):
        _call(grads=[np.ones(5, np.float32)])
    with pytest.raises(ValueError, match="elements"):
        _call(s2=[np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="required"):
        _call(s2=[None])                                            # Adam needs both
    with pytest.raises(ValueError, match="C-contiguous"):
        _call(params=[np.zeros(8, np.float32)[::2]])
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _call(params=[ro])
    with pytest.raises(ValueError, match="distinct"):
        _call(params=[f32], grads=[f32])
    with pytest.raises(ValueError, match="same length"):
        _core.optim_step("sgd", (0.1,) + (0.0,) * 7, [f32], [], [], [], [], [], [], [], 0.0, 1)
    with pytest.raises(ValueError, match="hyper"):
        _core.optim_step("sgd", (0.1,), [], [], [], [], [], [], [], [], 0.0, 1)
    with pytest.raises(TypeError, match="numpy array"):
        _call(params=[[0.0] * 4])
    with pytest.raises(TypeError, match="numpy array"):
        _call(extra=[[1.0]])
    with pytest.raises(TypeError, match="dtype"):
        _call(extra=[np.ones(2)])
    # plain SGD needs no state; SGD with momentum needs its buffer
    assert _call(kind="sgd", s1=[None], s2=[None]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="required"):
        _call(kind="sgd", s1=[None], s2=[None],
              hyper=(0.1, 0.0, 0.9, False, 0.0, 0.0, 0.0, 0.0))


def test_fit_steps_through_the_core(core_calls):
    """The estimators' training loop clips and steps with one core call per batch."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    fastrnn.LSTMClassifier(hidden_size=8, max_epochs=2, batch_size=16,
                           random_state=0).fit(X, y)
    assert core_calls == ["adam"] * (2 * 3)
