"""Tests of fastrnn.optim against torch.optim, torch's clip_grad_norm_ and lr schedulers."""
import ast
import copy
import inspect
import math
import pickle

import numpy as np
import pytest

import fastrnn.optim
from fastrnn.optim import (SGD, Adam, AdamW, ConstantLR, CosineAnnealingLR, ReduceLROnPlateau,
                           RMSprop, clip_grad_norm, make_optimizer, make_scheduler)
from fastrnn.sparse import RowSparseGrad

SHAPES = {"weight": (4, 3), "bias": (4,), "scale": (2, 2, 2)}
N_STEPS = 10


def random_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def random_grads(rng, dtype=np.float64):
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


# (ours, torch class name, kwargs shared by both)
OPTIMIZER_CASES = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    (Adam, "Adam", dict(lr=0.01)),
    (Adam, "Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (AdamW, "AdamW", dict(lr=0.01)),
    (AdamW, "AdamW", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3)),
    (RMSprop, "RMSprop", dict(lr=0.01)),
    (RMSprop, "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.7, weight_decay=0.05)),
]
CASE_IDS = [f"{name}-{i}" for i, (_, name, _) in enumerate(OPTIMIZER_CASES)]


def run_torch(torch, cls_name, kwargs, params, grad_seq, lrs=None):
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(torch.optim, cls_name)(list(tparams.values()), **kwargs)
    for i, grads in enumerate(grad_seq):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[i]
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tparams.items()}


@pytest.mark.parametrize("cls, torch_name, kwargs", OPTIMIZER_CASES, ids=CASE_IDS)
def test_optimizer_matches_torch(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grad_seq = [random_grads(rng) for _ in range(N_STEPS)]
    params = random_params()
    start = {k: v.copy() for k, v in params.items()}
    opt = cls(**kwargs)
    for grads in grad_seq:
        opt.step(params, grads)
    ref = run_torch(torch, torch_name, kwargs, start, grad_seq)
    for k in params:
        assert not np.allclose(params[k], start[k])  # the test would pass on a no-op
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls, torch_name, kwargs", OPTIMIZER_CASES[2::3], ids=CASE_IDS[2::3])
def test_optimizer_follows_lr_changed_between_steps(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grad_seq = [random_grads(rng) for _ in range(N_STEPS)]
    lrs = list(np.linspace(kwargs["lr"], kwargs["lr"] / 10, N_STEPS))
    params = random_params()
    ref = run_torch(torch, torch_name, kwargs, params, grad_seq, lrs)
    opt = cls(**kwargs)
    for lr, grads in zip(lrs, grad_seq):
        opt.lr = lr
        opt.step(params, grads)
    for k in params:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop])
def test_optimizer_float32_in_place_and_only_keys_with_grads(cls):
    params = random_params(dtype=np.float32)
    ids = {k: id(v) for k, v in params.items()}
    frozen = params["scale"].copy()
    grads = random_grads(np.random.default_rng(3), dtype=np.float64)
    del grads["scale"]
    opt = cls(lr=0.1, momentum=0.5) if cls in (SGD, RMSprop) else cls(lr=0.1)
    before = params["weight"].copy()
    opt.step(params, grads)
    assert all(id(params[k]) == ids[k] for k in params)
    assert all(params[k].dtype == np.float32 for k in params)
    assert not np.array_equal(params["weight"], before)
    np.testing.assert_array_equal(params["scale"], frozen)
    assert "scale" not in opt.state


@pytest.mark.parametrize("cls, torch_name, kwargs", OPTIMIZER_CASES, ids=CASE_IDS)
def test_pickled_optimizer_continues_identically(cls, torch_name, kwargs):
    rng = np.random.default_rng(4)
    params = random_params()
    opt = cls(**kwargs)
    for _ in range(3):
        opt.step(params, random_grads(rng))
    clone = pickle.loads(pickle.dumps(opt))
    params2 = {k: v.copy() for k, v in params.items()}
    for _ in range(3):
        grads = random_grads(rng)
        opt.step(params, grads)
        clone.step(params2, grads)
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])


def test_grads_are_not_modified():
    params = random_params()
    grads = random_grads(np.random.default_rng(5))
    saved = {k: v.copy() for k, v in grads.items()}
    for opt in (SGD(momentum=0.9, weight_decay=0.1), Adam(weight_decay=0.1), AdamW(),
                RMSprop(momentum=0.5, weight_decay=0.1)):
        for _ in range(2):
            opt.step(params, grads)
    for k in grads:
        np.testing.assert_array_equal(grads[k], saved[k])


@pytest.mark.parametrize("factory, word", [
    (lambda: SGD(lr=0.0), "lr"),
    (lambda: SGD(lr=-1.0), "lr"),
    (lambda: SGD(lr=float("nan")), "lr"),
    (lambda: SGD(momentum=-0.1), "momentum"),
    (lambda: SGD(nesterov=True), "nesterov"),
    (lambda: SGD(weight_decay=-1e-3), "weight_decay"),
    (lambda: Adam(betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda: Adam(betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda: Adam(eps=-1.0), "eps"),
    (lambda: AdamW(weight_decay=-0.01), "weight_decay"),
    (lambda: RMSprop(alpha=1.5), "alpha"),
    (lambda: RMSprop(momentum=-1.0), "momentum"),
])
def test_bad_hyperparameters_raise(factory, word):
    with pytest.raises(ValueError, match=word):
        factory()


def test_bad_hyperparameter_types_raise():
    with pytest.raises(TypeError, match="lr"):
        Adam(lr="0.1")
    with pytest.raises(TypeError, match="betas"):
        Adam(betas=0.9)


def test_step_rejects_mismatched_grads():
    params = random_params()
    opt = SGD()
    with pytest.raises(KeyError, match="unknown"):
        opt.step(params, {"unknown": np.zeros(3)})
    with pytest.raises(ValueError, match="weight"):
        opt.step(params, {"weight": np.zeros((3, 4))})
    with pytest.raises(TypeError, match="weight"):
        opt.step({"weight": [[1.0]]}, {"weight": np.zeros((1, 1))})


def test_make_optimizer():
    opt = make_optimizer("AdamW", lr=0.5, betas=(0.8, 0.9))
    assert type(opt) is AdamW and opt.lr == 0.5 and opt.betas == (0.8, 0.9)
    assert opt.weight_decay == 0.0
    opt = make_optimizer("sgd", lr=0.1, weight_decay=0.2, momentum=0.9, nesterov=True)
    assert type(opt) is SGD and opt.weight_decay == 0.2 and opt.nesterov
    assert type(make_optimizer("RMSprop", 0.01)) is RMSprop
    assert type(make_optimizer("adam", 0.01)) is Adam
    with pytest.raises(ValueError, match="adamw.*rmsprop.*sgd"):
        make_optimizer("lbfgs", lr=0.1)


# ------------------------------------------------------------------ clipping
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    grads = random_grads(np.random.default_rng(6))
    tensors = [torch.tensor(g.copy(), requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    ref_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    before = {k: g.copy() for k, g in grads.items()}
    total = clip_grad_norm(grads, max_norm)
    assert total == pytest.approx(ref_norm.item(), rel=1e-12)
    for t, (k, g) in zip(tensors, grads.items()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    new_norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if total > max_norm:
        assert new_norm == pytest.approx(max_norm, rel=1e-5)
    else:
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])


def test_clip_grad_norm_float32_and_checks():
    grads = {"a": np.full(4, 3.0, dtype=np.float32)}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(6.0)
    assert grads["a"].dtype == np.float32
    np.testing.assert_allclose(grads["a"], 0.5, rtol=1e-5)
    assert clip_grad_norm({}, 1.0) == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)
    with pytest.raises(TypeError, match="grads"):
        clip_grad_norm([np.ones(2)], 1.0)


# ------------------------------------------------------------------ row-sparse gradients
# (class, kwargs): every optimizer, with the settings that read or write state or p
SPARSE_CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (AdamW, dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.7, weight_decay=0.05)),
]
SPARSE_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(SPARSE_CASES)]
TABLE_SHAPES = {"emb": (9, 4), "vec": (7,), "cube": (5, 2, 3)}  # (V, ...) parameters


def random_sparse(rng, shape, rows):
    rows = np.asarray(rows, dtype=np.int64)
    return RowSparseGrad(rows, rng.normal(size=(len(rows),) + shape[1:]), shape)


def state_arrays(opt, key):
    return {n: a for n, a in opt.state.get(key, {}).items() if isinstance(a, np.ndarray)}


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "after-dense"])
@pytest.mark.parametrize("cls, kwargs", SPARSE_CASES, ids=SPARSE_IDS)
def test_sparse_step_is_the_dense_step_on_listed_rows_only(cls, kwargs, warm):
    rng = np.random.default_rng(8)
    params = {k: rng.normal(size=s) for k, s in TABLE_SHAPES.items()}
    opt = cls(**kwargs)
    if warm:  # state arrays nonzero everywhere, as after dense training
        for _ in range(2):
            opt.step(params, {k: rng.normal(size=s) for k, s in TABLE_SHAPES.items()})
    rows = {"emb": [5, 1, 7], "vec": [6, 0], "cube": [3]}
    sparse = {k: random_sparse(rng, s, rows[k]) for k, s in TABLE_SHAPES.items()}
    saved_values = {k: g.values.copy() for k, g in sparse.items()}
    dense_opt, dense_params = copy.deepcopy(opt), copy.deepcopy(params)
    before, before_state = copy.deepcopy(params), copy.deepcopy(opt.state)
    state_ids = {k: {n: id(a) for n, a in state_arrays(opt, k).items()} for k in params}

    opt.step(params, sparse)
    dense_opt.step(dense_params, {k: g.to_dense() for k, g in sparse.items()})

    for k, shape in TABLE_SHAPES.items():
        on = np.zeros(shape[0], dtype=bool)
        on[rows[k]] = True
        np.testing.assert_array_equal(sparse[k].values, saved_values[k])  # grads unchanged
        assert not np.allclose(params[k][on], before[k][on])  # a no-op would pass the rest
        np.testing.assert_array_equal(params[k][on], dense_params[k][on])
        np.testing.assert_array_equal(params[k][~on], before[k][~on])
        st, dense_st = state_arrays(opt, k), state_arrays(dense_opt, k)
        assert set(st) == set(dense_st)
        for name, a in st.items():
            assert a.shape == shape  # state stays dense
            np.testing.assert_array_equal(a[on], dense_st[name][on], err_msg=name)
            old = before_state.get(k, {}).get(name, np.zeros(shape))
            np.testing.assert_array_equal(a[~on], old[~on], err_msg=name)
            if name in state_ids[k]:
                assert id(a) == state_ids[k][name]  # the same arrays, updated in place
        assert opt.state.get(k, {}).get("step") == dense_opt.state.get(k, {}).get("step")


@pytest.mark.parametrize("cls, kwargs", SPARSE_CASES, ids=SPARSE_IDS)
def test_sparse_and_dense_steps_mixed_match_per_row_reference(cls, kwargs):
    """Lazy semantics: each row behaves as a parameter of its own with its own dense
    optimizer, stepped only when the row is listed (a dense gradient lists every row),
    except that Adam's bias correction counts every step of the whole parameter."""
    rng = np.random.default_rng(9)
    shape = (8, 3)
    start = rng.normal(size=shape)
    # row subsets in any order, an empty one, and dense gradients in between
    schedule = [[4, 0], None, [2, 5, 7, 0], [], [6], None, [1, 6, 3], [0, 4]]
    p = start.copy()
    p_ref = start.copy()
    opt = cls(**kwargs)
    row_opts = [cls(**kwargs) for _ in range(shape[0])]
    for t, rows in enumerate(schedule, start=1):
        if rows is None:
            g_dense = rng.normal(size=shape)
            opt.step({"w": p}, {"w": g_dense})
            rows = list(range(shape[0]))
            values = g_dense
        else:
            values = rng.normal(size=(len(rows),) + shape[1:])
            opt.step({"w": p}, {"w": RowSparseGrad(rows, values, shape)})
        for r, v in zip(rows, values):
            if isinstance(opt, Adam):
                row_opts[r].state.setdefault("w", {})["step"] = t - 1
            row_opts[r].step({"w": p_ref[r:r + 1]}, {"w": v[None]})  # a view: in place
    assert opt.state.get("w", {}).get("step", len(schedule)) == len(schedule)
    assert not np.allclose(p, start)
    np.testing.assert_allclose(p, p_ref, rtol=1e-13, atol=1e-15)
    for name, a in state_arrays(opt, "w").items():
        ref = np.concatenate([o.state["w"][name] for o in row_opts])
        np.testing.assert_allclose(a, ref, rtol=1e-13, atol=1e-15, err_msg=name)


def test_sparse_grad_on_float32_parameter_is_cast():
    rng = np.random.default_rng(10)
    p = rng.normal(size=(6, 2)).astype(np.float32)
    p_dense = p.copy()
    g = RowSparseGrad([3, 0], rng.normal(size=(2, 2)), p.shape)  # float64 values
    Adam(lr=0.1).step({"w": p}, {"w": g})
    Adam(lr=0.1).step({"w": p_dense}, {"w": g.to_dense()})
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p[[3, 0]], p_dense[[3, 0]])
    assert g.values.dtype == np.float64


def test_lazy_adam_matches_torch_sparse_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    torch.manual_seed(0)
    V, D = 40, 5
    emb = torch.nn.Embedding(V, D, sparse=True, dtype=torch.float64)
    # eps tiny: SparseAdam adds eps before the bias correction of the second moment,
    # torch.optim.Adam (and ours) after it; with eps -> 0 both are the same step
    kwargs = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-13)
    ref_opt = torch.optim.SparseAdam(emb.parameters(), **kwargs)
    weight = emb.weight.detach().numpy().copy()
    start = weight.copy()
    opt = Adam(**kwargs)
    seen = np.zeros(V, dtype=bool)
    for _ in range(8):
        tokens = torch.from_numpy(rng.integers(0, V // 2, size=(3, 4)))  # repeats, unseen rows
        out = emb(tokens)
        (out * torch.from_numpy(rng.normal(size=out.shape))).sum().backward()
        grad = emb.weight.grad.coalesce()
        perm = rng.permutation(grad.indices().shape[1])  # rows in no particular order
        rows = grad.indices()[0].numpy()[perm]
        values = grad.values().numpy()[perm]
        seen[rows] = True
        opt.step({"emb": weight}, {"emb": RowSparseGrad(rows, values, weight.shape)})
        ref_opt.step()
        ref_opt.zero_grad()
    ref = emb.weight.detach().numpy()
    assert seen[:V // 2].any() and not seen.all()
    np.testing.assert_array_equal(weight[~seen], start[~seen])
    assert not np.allclose(weight[seen], start[seen])
    np.testing.assert_allclose(weight, ref, rtol=1e-10, atol=1e-12)
    ref_state = ref_opt.state[emb.weight]
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(opt.state["emb"][name], ref_state[name].numpy(),
                                   rtol=1e-10, atol=1e-15, err_msg=name)
    assert opt.state["emb"]["step"] == int(ref_state["step"]) == 8


def test_bad_sparse_grads_raise():
    params = {"emb": np.zeros((5, 2))}
    rng = np.random.default_rng(12)
    for opt in (SGD(momentum=0.9), Adam(), RMSprop()):
        with pytest.raises(ValueError, match=r"grads\['emb'\] has shape \(6, 2\)"):
            opt.step(params, {"emb": random_sparse(rng, (6, 2), [1])})
        with pytest.raises(ValueError, match=r"grads\['emb'\] has shape \(5, 3\)"):
            opt.step(params, {"emb": random_sparse(rng, (5, 3), [1])})
        for bad in (np.ones((1, 2), dtype=complex), np.array([["a", "b"]]),
                    np.ones((1, 2), dtype=bool)):
            with pytest.raises(TypeError, match=r"grads\['emb'\] must hold real numbers"):
                opt.step(params, {"emb": RowSparseGrad([0], bad, (5, 2))})
        g = random_sparse(rng, (5, 2), [0, 3])
        g.rows = np.array([0, -1])  # reassigned after the checks of RowSparseGrad
        with pytest.raises(ValueError, match=r"grads\['emb'\]: rows must lie in \[0, 5\)"):
            opt.step(params, {"emb": g})
        g = random_sparse(rng, (5, 2), [0, 3])
        g.values = np.ones((3, 2))
        with pytest.raises(ValueError, match=r"grads\['emb'\].*do not fit"):
            opt.step(params, {"emb": g})
        assert not np.any(params["emb"]) and opt.state == {}  # nothing applied
    with pytest.raises(TypeError, match=r"grads\['emb'\]\.values.*float numpy array"):
        clip_grad_norm({"emb": RowSparseGrad([1], np.ones((1, 2), dtype=int), (5, 2))}, 1.0)


def test_clip_grad_norm_mixed_dense_and_sparse_equals_dense():
    rng = np.random.default_rng(13)
    for max_norm in (0.5, 1e3):
        grads = {"w": rng.normal(size=(4, 3)),
                 "emb": random_sparse(rng, (10, 3), [8, 2, 5]),
                 "emb32": RowSparseGrad([0, 6], rng.normal(size=(2, 2)).astype(np.float32),
                                        (7, 2)),
                 "b32": rng.normal(size=5).astype(np.float32)}
        dense = {k: g.to_dense() if isinstance(g, RowSparseGrad) else g.copy()
                 for k, g in grads.items()}
        values_ids = {k: id(g.values) for k, g in grads.items() if isinstance(g, RowSparseGrad)}
        total = clip_grad_norm(grads, max_norm)
        assert total == pytest.approx(clip_grad_norm(dense, max_norm), rel=1e-14)
        assert (total > max_norm) == (max_norm == 0.5)
        for k, g in grads.items():
            if isinstance(g, RowSparseGrad):
                assert id(g.values) == values_ids[k] and g.dtype == dense[k].dtype
                g = g.to_dense()
            np.testing.assert_array_equal(g, dense[k], err_msg=k)


def test_clip_grad_norm_nonfinite_sparse_left_untouched_like_dense():
    g = RowSparseGrad([2], np.array([[np.nan, 1.0]]), (4, 2))
    d = np.array([3.0, 4.0])
    assert math.isnan(clip_grad_norm({"emb": g, "d": d}, 1.0))
    np.testing.assert_array_equal(d, [3.0, 4.0])
    assert g.values[0, 1] == 1.0


BLAS_ENTRY_POINTS = ["dot", "vdot", "inner", "matmul", "einsum", "tensordot", "linalg"]


def test_optim_never_calls_numpy_blas(monkeypatch):
    """numpy's BLAS wakes its own thread pool, which then competes with fastrnn's OpenMP
    threads. `@` cannot be patched, so the source is also searched for it."""
    rng = np.random.default_rng(14)
    arrays = [rng.normal(size=200_003).astype(np.float32),  # several chunks, ragged end
              rng.normal(size=(300, 700)).T,                  # F-contiguous
              rng.normal(size=(40, 30))[::3, ::2],            # neither C nor F
              np.zeros((0, 3))]
    sparse = random_sparse(rng, (50, 4), [7, 1, 30])
    expected = [math.fsum((a.astype(np.float64).ravel() ** 2).tolist()) for a in arrays]
    expected.append(math.fsum((sparse.values.ravel() ** 2).tolist()))

    def forbidden(*args, **kwargs):
        raise AssertionError("numpy BLAS called")
    for name in ("dot", "vdot", "inner", "matmul", "einsum", "tensordot"):
        monkeypatch.setattr(np, name, forbidden)
    for name in ("norm", "multi_dot"):
        monkeypatch.setattr(np.linalg, name, forbidden)

    grads = {str(i): a.copy() for i, a in enumerate(arrays)}
    grads["emb"] = sparse
    total = clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(math.sqrt(math.fsum(expected)), rel=1e-14)
    for i, (a, e) in enumerate(zip(arrays, expected)):
        assert fastrnn.optim._squared_norm(a) == pytest.approx(e, rel=1e-14, abs=0), i
    params = {"emb": rng.normal(size=(50, 4))}
    for opt in (SGD(momentum=0.9, nesterov=True, weight_decay=0.1), Adam(weight_decay=0.1),
                AdamW(), RMSprop(momentum=0.5, weight_decay=0.1)):
        opt.step(params, {"emb": sparse})
        opt.step(params, {"emb": sparse.to_dense()})

    tree = ast.parse(inspect.getsource(fastrnn.optim))
    for node in ast.walk(tree):
        assert not isinstance(getattr(node, "op", None), ast.MatMult), f"@ at line {node.lineno}"
        if isinstance(node, ast.Attribute):
            assert node.attr not in BLAS_ENTRY_POINTS, f".{node.attr} at line {node.lineno}"


# ------------------------------------------------------------------ schedulers
def torch_lrs(torch, sched_factory, lr, n_epochs, metrics=None):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = sched_factory(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for e in range(n_epochs):
        opt.step()
        sched.step(metrics[e]) if metrics is not None else sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def our_lrs(sched_factory, lr, n_epochs, metrics=None):
    opt = SGD(lr=lr)
    sched = sched_factory(opt)
    lrs = [opt.lr]
    for e in range(n_epochs):
        sched.step(metrics[e]) if metrics is not None else sched.step()
        lrs.append(opt.lr)
    return lrs


def test_constant_lr_is_constant():
    lrs = our_lrs(lambda o: make_scheduler("constant", o), 0.3, 12)
    assert lrs == [0.3] * 13


def test_constant_lr_with_factor_matches_torch():
    torch = pytest.importorskip("torch")
    ref = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ConstantLR(
        o, factor=0.25, total_iters=4), 0.2, 8)
    ours = our_lrs(lambda o: ConstantLR(o, factor=0.25, total_iters=4), 0.2, 8)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert ours[0] != ours[-1]


@pytest.mark.parametrize("T_max, eta_min", [(10, 0.0), (7, 0.001), (3, 0.01)])
def test_cosine_matches_torch(T_max, eta_min):
    torch = pytest.importorskip("torch")
    n = 2 * T_max + 5  # past T_max too, where the cosine rises again
    ref = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=T_max, eta_min=eta_min), 0.1, n)
    ours = our_lrs(lambda o: make_scheduler("Cosine", o, T_max=T_max, eta_min=eta_min), 0.1, n)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-13)
    assert ours[T_max] == pytest.approx(eta_min, abs=1e-15)


PLATEAU_CASES = [
    dict(),
    dict(patience=2),
    dict(patience=1, factor=0.5, cooldown=2),
    dict(patience=0, factor=0.5, min_lr=0.02),
    dict(patience=1, threshold=0.05, threshold_mode="abs"),
    dict(mode="max", patience=1, factor=0.3),
    dict(mode="max", patience=2, threshold=0.1, threshold_mode="abs", cooldown=1),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES)
def test_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    # Scripted so every rule decides something: big drops, drops smaller than the abs
    # threshold, a long plateau (default patience 10) creeping down by less than the rel
    # threshold, a jump up then rises smaller than the abs threshold ('max' mode), gains
    # smaller than the rel threshold, noise.
    metrics = list(np.r_[np.linspace(1.0, 0.5, 6), 0.5 - 0.01 * np.arange(1, 7),
                         0.44 * (1 - 5e-6 * np.arange(12)), 1.2 + 0.02 * np.arange(6),
                         1.3 * (1 + 1e-5), 1.3 * (1 + 2e-5),
                         0.5 + rng.normal(0, 0.05, 10)])
    n = len(metrics)
    ref = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kwargs),
                    0.1, n, metrics)
    ours = our_lrs(lambda o: make_scheduler("plateau", o, **kwargs), 0.1, n, metrics)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert len(set(ref)) > 1  # the scripted metric must trigger at least one reduction


def test_plateau_needs_metric_and_valid_arguments():
    opt = SGD()
    with pytest.raises(ValueError, match="metric"):
        ReduceLROnPlateau(opt).step()
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(ValueError, match="threshold_mode"):
        ReduceLROnPlateau(opt, threshold_mode="pct")
    with pytest.raises(ValueError, match="patience"):
        ReduceLROnPlateau(opt, patience=-1)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="constant.*cosine.*plateau"):
        make_scheduler("step", opt)


def test_scheduler_and_optimizer_pickle_together():
    opt = Adam(lr=0.1)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    sched.step(1.0)
    sched.step(2.0)
    opt2, sched2 = pickle.loads(pickle.dumps((opt, sched)))
    assert sched2.optimizer is opt2 and opt2.lr == pytest.approx(0.05)
    sched2.step(3.0)
    assert opt2.lr == pytest.approx(0.025) and opt.lr == pytest.approx(0.05)
