"""Tests of fastrnn.dense.Dense: finite differences (float64) and torch.nn.Linear."""
import pickle

import numpy as np
import pytest

from fastrnn.dense import Dense


def numeric_grad(f, x, h=1e-6):
    """Central finite differences of the scalar f at x, element by element."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = f()
        x[idx] = old - h
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 4, 3), (3,)])
def test_gradients_match_finite_differences(x_shape):
    rng = np.random.default_rng(0)
    layer = Dense(3, 2, dtype=np.float64, random_state=1)
    X = rng.normal(size=x_shape)
    R = rng.normal(size=x_shape[:-1] + (2,))  # loss = sum(R * Y) has dL/dY = R

    def loss():
        return float(np.sum(R * layer.forward(X)))

    layer.forward(X, training=True)
    dX, grads = layer.backward(R)
    assert set(grads) == {"weight", "bias"}
    np.testing.assert_allclose(dX, numeric_grad(loss, X), rtol=1e-6, atol=1e-8)
    for name in ("weight", "bias"):
        num = numeric_grad(loss, layer.params[name])
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_linear(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    layer = Dense(6, 4, dtype=dtype, random_state=3)
    lin = torch.nn.Linear(6, 4).to(torch.float64 if dtype == np.float64 else torch.float32)
    lin.load_state_dict({k: torch.tensor(v) for k, v in layer.params.items()})
    X = rng.normal(size=(3, 5, 6)).astype(dtype)
    dY = rng.normal(size=(3, 5, 4)).astype(dtype)
    xt = torch.tensor(X, requires_grad=True)
    yt = lin(xt)
    yt.backward(torch.tensor(dY))
    Y = layer.forward(X, training=True)
    dX, grads = layer.backward(dY)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert Y.dtype == dtype and dX.dtype == dtype and grads["weight"].dtype == dtype
    np.testing.assert_allclose(Y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dX, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["weight"], lin.weight.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["bias"], lin.bias.grad.numpy(), rtol=tol, atol=tol)


def test_init_layout_bounds_and_seed():
    layer = Dense(16, 5, random_state=0)
    w, b = layer.params["weight"], layer.params["bias"]
    assert w.shape == (5, 16) and b.shape == (5,)
    assert w.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(w).max() <= 0.25 and np.abs(b).max() <= 0.25
    assert np.abs(w).max() > 0.15  # really spread over the whole interval
    again = Dense(16, 5, random_state=0)
    np.testing.assert_array_equal(again.params["weight"], w)
    other = Dense(16, 5, random_state=1)
    assert not np.array_equal(other.params["weight"], w)


def test_backward_needs_training_forward():
    layer = Dense(3, 2)
    layer.forward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="training"):
        layer.backward(np.ones((2, 2)))


def test_pickle_keeps_params_drops_cache():
    layer = Dense(3, 2, dtype=np.float64, random_state=0)
    X = np.ones((4, 3))
    layer.forward(X, training=True)
    clone = pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(clone.forward(X), layer.forward(X))
    assert clone._X is None


@pytest.mark.parametrize("factory, exc, word", [
    (lambda: Dense(0, 2), ValueError, "in_features"),
    (lambda: Dense(2, 1.5), TypeError, "out_features"),
    (lambda: Dense(2, 2, dtype=np.int32), TypeError, "dtype"),
    (lambda: Dense(3, 2).forward(np.ones((2, 4))), ValueError, "X"),
    (lambda: Dense(3, 2).forward(np.array([["a", "b", "c"]])), TypeError, "X"),
])
def test_bad_input_raises(factory, exc, word):
    with pytest.raises(exc, match=word):
        factory()


def test_nan_input_propagates_instead_of_raising():
    # the estimators detect divergence from a NaN loss, so NaN must reach the output
    Y = Dense(3, 2).forward(np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]]))
    assert np.isnan(Y[0]).all() and np.isfinite(Y[1]).all()


def test_bad_dY_shape_raises():
    layer = Dense(3, 2)
    layer.forward(np.ones((4, 3)), training=True)
    with pytest.raises(ValueError, match="dY"):
        layer.backward(np.ones((4, 3)))
