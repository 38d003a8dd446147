"""Tests of fastrnn.optim against torch.optim, torch's clip_grad_norm_ and lr schedulers."""
import math
import pickle

import numpy as np
import pytest

from fastrnn.optim import (SGD, Adam, AdamW, ConstantLR, CosineAnnealingLR, ReduceLROnPlateau,
                           RMSprop, clip_grad_norm, make_optimizer, make_scheduler)

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
