"""Dense (fully connected) layer with an explicit forward/backward pair.

Layout and default initialization are PyTorch's nn.Linear, so its ``state_dict()``
converted to numpy loads as ``params`` unchanged. Re-exported by fastrnn.layers.
The products run in the C core (src_c/dense.c) on fastrnn's own threads: numpy's matmul
would wake numpy's BLAS threads, which keep spinning after the call and halve the speed
of the recurrence running next to them.
"""
import numpy as np

from . import _core
from ._checks import _as_real_array, _check_dtype, _check_positive_int, checked_params


_resolve = None


def _resolve_threads(n_threads):
    # the recurrent layers' resolution (None -> get_num_threads(), one thread in a child
    # forked after OpenMP started); looked up late because layers imports this module
    global _resolve
    if _resolve is None:
        from .layers import _resolve_threads as resolve
        _resolve = resolve
    return _resolve(n_threads)

__all__ = ["Dense"]


class Dense:
    """Affine map of the last axis: Y = X @ W^T + b.

    Shapes: X (..., in_features), W = params['weight'] (out_features, in_features),
    b = params['bias'] (out_features,), Y (..., out_features). With X and dY flattened
    to rows (n, in) and (n, out), backward computes::

        dX = dY @ W          dW = dY^T @ X          db = sum_rows dY

    Initialization (nn.Linear's default): W and b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, dtype=np.float32, random_state=None):
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        self.dtype = _check_dtype(dtype)
        rng = np.random.default_rng(random_state)
        bound = 1.0 / np.sqrt(self.in_features)
        self.params = {
            "weight": rng.uniform(-bound, bound, (self.out_features, self.in_features))
                         .astype(self.dtype),
            "bias": rng.uniform(-bound, bound, self.out_features).astype(self.dtype),
        }
        self._X = None  # input of the last training forward, needed by backward

    def param_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def _checked_params(self):
        return checked_params(self.params, self.param_shapes(), self.dtype)

    def _workspace(self, n):
        size = _core.dense_workspace_size(n, self.in_features, self.out_features)
        return np.empty(size, dtype=self.dtype)

    def forward(self, X, training=False, n_threads=None):
        """Y = X @ W^T + b for X of shape (..., in_features); returns (..., out_features).

        With ``training=True`` X is kept for the following ``backward``. ``n_threads``:
        threads of the C core (None: fastrnn.get_num_threads()); results are the same
        for any count.
        """
        X = _as_real_array(X, "X", self.dtype)
        if X.ndim < 1 or X.shape[-1] != self.in_features:
            raise ValueError(f"X must have shape (..., {self.in_features}) "
                             f"(last axis = in_features), got {X.shape}")
        # NaN/inf are passed through, not rejected: a diverging fit must reach the loss,
        # where the caller detects it and restores the last good weights.
        p = self._checked_params()
        nt = _resolve_threads(n_threads)
        X = np.ascontiguousarray(X)
        self._X = X if training else None
        rows = X.reshape(-1, self.in_features)
        Y = np.empty((rows.shape[0], self.out_features), dtype=self.dtype)
        _core.dense_forward(Y, rows, p["weight"], p["bias"], self._workspace(rows.shape[0]),
                            nt)
        return Y.reshape(X.shape[:-1] + (self.out_features,))

    def backward(self, dY, n_threads=None):
        """Gradients of the last training forward given dY = dL/dY (..., out_features).

        Returns ``(dX, grads)``: dX of X's shape and grads {'weight': dW, 'bias': db}.
        """
        if self._X is None:
            raise RuntimeError("backward needs a preceding forward(X, training=True)")
        X = self._X
        dY = _as_real_array(dY, "dY", self.dtype)
        expected = X.shape[:-1] + (self.out_features,)
        if dY.shape != expected:
            raise ValueError(f"dY must have shape {expected}, got {dY.shape}")
        W = self._checked_params()["weight"]
        nt = _resolve_threads(n_threads)
        rows_x = X.reshape(-1, self.in_features)
        rows_dy = np.ascontiguousarray(dY).reshape(-1, self.out_features)
        n = rows_x.shape[0]
        dX = np.empty(X.shape, dtype=self.dtype)
        grads = {"weight": np.zeros_like(W), "bias": np.zeros(self.out_features, self.dtype)}
        _core.dense_backward(dX.reshape(n, self.in_features), grads["weight"], grads["bias"],
                             rows_dy, rows_x, W, self._workspace(n), nt)
        return dX, grads

    # pickles carry the parameters, not the activation kept for backward
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_X"] = None
        return state

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"dtype={self.dtype.name})")
