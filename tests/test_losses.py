"""Tests of fastrnn.losses: finite differences (float64), PyTorch, numerical stability."""
import numpy as np
import pytest

from fastrnn.losses import log_softmax, mean_squared_error, softmax, softmax_cross_entropy


def numeric_grad(f, x, h=1e-5):
    """Central finite differences of the scalar f at x, element by element."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f(x)
        x[idx] = old - h
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


def ce_case(rng, n=7, c=4):
    z = rng.normal(size=(n, c))
    y = rng.integers(0, c, size=n)
    return z, y


# ------------------------------------------------------------------ softmax
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_sums_to_one_and_keeps_dtype(dtype):
    z = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(dtype)
    p = softmax(z)
    assert p.dtype == dtype and p.shape == z.shape
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_softmax(z)), p, rtol=1e-5)


def test_softmax_huge_logits_no_nan():
    z = np.array([[1e4, -1e4, 0.0], [1e30, 1e30, -1e30], [-1e5, -1e5 + 1, -1e5]])
    for dtype in (np.float32, np.float64):
        p = softmax(z.astype(dtype))
        lp = log_softmax(z.astype(dtype))
        assert np.isfinite(p).all() and np.isfinite(lp).all()
        np.testing.assert_allclose(p[0], [1, 0, 0], atol=1e-7)
        np.testing.assert_allclose(p[1], [0.5, 0.5, 0], atol=1e-7)


# ------------------------------------------------------------------ cross-entropy
@pytest.mark.parametrize("weights", ["none", "class", "sample", "both"])
def test_cross_entropy_gradient_matches_finite_differences(weights):
    rng = np.random.default_rng(1)
    z, y = ce_case(rng)
    cw = rng.uniform(0.2, 2.0, size=4) if weights in ("class", "both") else None
    sw = rng.uniform(0.0, 3.0, size=7) if weights in ("sample", "both") else None
    loss, dz = softmax_cross_entropy(z, y, class_weight=cw, sample_weight=sw)
    num = numeric_grad(lambda v: softmax_cross_entropy(v, y, cw, sw)[0], z.copy())
    assert dz.dtype == np.float64
    np.testing.assert_allclose(dz, num, rtol=1e-6, atol=1e-9)


def test_cross_entropy_value_by_hand():
    z = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 0])
    cw = np.array([1.0, 5.0])
    sw = np.array([1.0, 3.0])
    nll = -log_softmax(z)[[0, 1], [0, 0]]
    loss, _ = softmax_cross_entropy(z, y, class_weight=cw, sample_weight=sw)
    assert loss == pytest.approx((1 * nll[0] + 3 * nll[1]) / 4, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_dtype(dtype):
    z, y = ce_case(np.random.default_rng(2))
    loss, dz = softmax_cross_entropy(z.astype(dtype), y)
    assert isinstance(loss, float) and dz.dtype == dtype and dz.shape == z.shape


def test_cross_entropy_matches_torch_with_class_weights():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    z, y = ce_case(rng, n=11, c=5)
    cw = rng.uniform(0.1, 3.0, size=5)
    for weight in (None, cw):
        zt = torch.tensor(z, requires_grad=True)
        wt = None if weight is None else torch.tensor(weight)
        ref = F.cross_entropy(zt, torch.tensor(y), weight=wt)
        ref.backward()
        loss, dz = softmax_cross_entropy(z, y, class_weight=weight)
        assert loss == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_sample_weights_match_torch_weighted_sum():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    z, y = ce_case(rng, n=9, c=3)
    sw = rng.uniform(0.0, 2.0, size=9)
    zt = torch.tensor(z, requires_grad=True)
    per = F.cross_entropy(zt, torch.tensor(y), reduction="none")
    ref = (per * torch.tensor(sw)).sum() / sw.sum()
    ref.backward()
    loss, dz = softmax_cross_entropy(z, y, sample_weight=sw)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_huge_logits_is_finite_and_correct():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 3e38, 0.0]], dtype=np.float32)
    y = np.array([2, 1])
    loss, dz = softmax_cross_entropy(z, y)
    assert np.isfinite(loss) and np.isfinite(dz).all()
    # sample 0 is wrong by 2e4 nats, sample 1 exactly right: mean loss 1e4
    assert loss == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(dz[0], [0.5, 0, -0.5], atol=1e-6)
    np.testing.assert_allclose(dz[1], 0, atol=1e-6)


def test_cross_entropy_zero_weight_sum_gives_zero():
    z, y = ce_case(np.random.default_rng(5))
    loss, dz = softmax_cross_entropy(z, y, sample_weight=np.zeros(7))
    assert loss == 0.0 and not dz.any()
    cw = np.zeros(4)
    loss, dz = softmax_cross_entropy(z, y, class_weight=cw)
    assert loss == 0.0 and not dz.any()


def test_cross_entropy_zero_weight_sample_gets_no_gradient():
    z, y = ce_case(np.random.default_rng(6))
    sw = np.ones(7)
    sw[2] = 0.0
    _, dz = softmax_cross_entropy(z, y, sample_weight=sw)
    assert not dz[2].any() and dz[3].any()


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(logits=np.zeros(3), y=[0, 1, 2]), ValueError, "logits"),
    (dict(logits=np.zeros((3, 2)), y=[0, 1]), ValueError, "y"),
    (dict(logits=np.zeros((3, 2)), y=[0, 1, 2]), ValueError, "y"),
    (dict(logits=np.zeros((3, 2)), y=[0, -1, 1]), ValueError, "y"),
    (dict(logits=np.zeros((3, 2)), y=[0.5, 1, 1]), TypeError, "y"),
    (dict(logits=np.zeros((3, 2)), y=[0, 1, 1], class_weight=[1.0]), ValueError, "class_weight"),
    (dict(logits=np.zeros((3, 2)), y=[0, 1, 1], sample_weight=[1, -1, 1]), ValueError,
     "sample_weight"),
    (dict(logits=np.array([["a", "b"]]), y=[0]), TypeError, "logits"),
])
def test_cross_entropy_rejects_bad_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        softmax_cross_entropy(**kwargs)


# ------------------------------------------------------------------ squared error
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(6, 3), (5,)])
def test_mse_gradient_matches_finite_differences(weighted, shape):
    rng = np.random.default_rng(7)
    pred, target = rng.normal(size=shape), rng.normal(size=shape)
    sw = rng.uniform(0.0, 2.0, size=shape[0]) if weighted else None
    loss, dp = mean_squared_error(pred, target, sample_weight=sw)
    num = numeric_grad(lambda v: mean_squared_error(v, target, sw)[0], pred.copy())
    assert dp.shape == pred.shape
    np.testing.assert_allclose(dp, num, rtol=1e-6, atol=1e-9)


def test_mse_weighted_value_by_hand():
    pred = np.array([[1.0, 2.0], [0.0, 0.0]])
    target = np.zeros((2, 2))
    loss, _ = mean_squared_error(pred, target, sample_weight=[3.0, 1.0])
    assert loss == pytest.approx(3 * 2.5 / 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    pred, target = rng.normal(size=(8, 3)).astype(dtype), rng.normal(size=(8, 3)).astype(dtype)
    pt = torch.tensor(pred, requires_grad=True)
    ref = torch.nn.functional.mse_loss(pt, torch.tensor(target))
    ref.backward()
    loss, dp = mean_squared_error(pred, target)
    assert dp.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(ref.item(), rel=tol)
    np.testing.assert_allclose(dp, pt.grad.numpy(), rtol=tol, atol=tol)


def test_mse_zero_weight_sum_and_bad_input():
    pred = np.ones((3, 2))
    loss, dp = mean_squared_error(pred, np.zeros((3, 2)), sample_weight=np.zeros(3))
    assert loss == 0.0 and not dp.any()
    with pytest.raises(ValueError, match="target"):
        mean_squared_error(pred, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="sample_weight"):
        mean_squared_error(pred, pred, sample_weight=np.ones(2))
