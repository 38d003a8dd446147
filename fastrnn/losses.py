"""Losses with their exact gradients: softmax cross-entropy from logits, mean squared error.

Every loss returns ``(loss, d_input)``: the scalar loss as a Python float and its gradient
with respect to the network output, an array of the output's dtype (float32 or float64),
ready to hand to the last layer's ``backward``. numpy only.

Weighting follows PyTorch's ``reduction='mean'``: the loss is a weighted *average*, so
its value does not depend on the batch size and a batch whose weights are all zero
contributes nothing (loss 0, zero gradient) instead of 0/0.
"""
import numpy as np

__all__ = ["softmax", "log_softmax", "softmax_cross_entropy", "softmax_cross_entropy_rows",
           "mean_squared_error"]


# ------------------------------------------------------------------ input checks
def _as_float_array(value, name):
    """`value` as float32/float64 (kept if already one of them, else float64)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr


def _check_labels(y, n_samples, n_classes):
    """Class indices as int64 of shape (n_samples,), each in [0, n_classes)."""
    y = np.asarray(y)
    # float labels are accepted when they are whole numbers (e.g. read from a float file)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (n_samples,):
        raise ValueError(f"y must have shape ({n_samples},) (one label per row of logits), "
                         f"got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y must lie in [0, {n_classes}) (the number of classes), got "
                         f"min {y.min()}, max {y.max()}")
    return y.astype(np.int64, copy=False)


def _check_weights(w, length, name, dtype):
    """Non-negative finite weights of shape (length,), or ones when `w` is None."""
    if w is None:
        return np.ones(length, dtype=dtype)
    w = _as_float_array(w, name)
    if w.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative")
    return w.astype(dtype, copy=False)


# ------------------------------------------------------------------ softmax
def log_softmax(logits):
    """log p_k = z_k - max(z) - log sum_j exp(z_j - max(z)), over the last axis.

    Subtracting the maximum first keeps every exp() in (0, 1], so huge logits neither
    overflow nor turn into inf - inf = NaN.
    """
    z = _as_float_array(logits, "logits")
    shifted = z - np.max(z, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(logits):
    """p_k = exp(z_k - max(z)) / sum_j exp(z_j - max(z)), over the last axis."""
    z = _as_float_array(logits, "logits")
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


# ------------------------------------------------------------------ cross-entropy
def softmax_cross_entropy(logits, y, class_weight=None, sample_weight=None):
    """Weighted mean softmax cross-entropy of integer labels, from logits.

    With p_i = softmax(z_i) and per-sample weight w_i = s_i * c_{y_i}
    (s = sample_weight, c = class_weight, both default to ones)::

        loss        = sum_i w_i * (-log p_i[y_i]) / W,        W = sum_i w_i
        dloss/dz_i  = (w_i / W) * (p_i - onehot(y_i))

    which is ``torch.nn.functional.cross_entropy(z, y, weight=c)`` (PyTorch divides by
    the summed weights too, not by N). If W == 0 the loss is 0 and the gradient zero.

    Parameters: logits (N, C) float array; y (N,) integer class indices in [0, C);
    class_weight (C,) or None; sample_weight (N,) or None, both non-negative.
    Returns ``(loss, dlogits)``: a float and an (N, C) array of the logits' dtype.
    """
    z = _as_float_array(logits, "logits")
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be 2-D (n_samples, n_classes), got shape {z.shape}")
    n, c = z.shape
    y = _check_labels(y, n, c)
    class_w = _check_weights(class_weight, c, "class_weight", z.dtype)
    w = class_w[y] * _check_weights(sample_weight, n, "sample_weight", z.dtype)
    total = w.sum()
    if total == 0:
        return 0.0, np.zeros_like(z)
    logp = log_softmax(z)
    rows = np.arange(n)
    loss = -np.sum(w * logp[rows, y]) / total
    dz = np.exp(logp)  # softmax recovered from log_softmax: no second max/sum pass
    dz[rows, y] -= 1
    dz *= (w / total)[:, None]
    return float(loss), dz


def softmax_cross_entropy_rows(logits, y, row_weight=None, n_threads=None):
    """softmax_cross_entropy(logits, y, sample_weight=row_weight), fused in the C core.

    With p_r = softmax(z_r), w_r = row_weight[r] (default ones) and W = sum_r w_r::

        loss        = sum_r w_r * (-log p_r[y_r]) / W
        dloss/dz_r  = (w_r / W) * (p_r - onehot(y_r))

    one pass over the logits (max subtraction, exp, log-sum, gradient) on fastrnn's
    threads (``n_threads``, None: fastrnn.get_num_threads(); the same bits for any
    count). If W == 0 the loss is 0 and the gradient zero; NaN or inf logits give a NaN
    loss. Parameters and return value as softmax_cross_entropy without class weights:
    logits (N, C) float32/float64 (other real dtypes become float64), y (N,) integer
    labels in [0, C), row_weight (N,) non-negative or None. Returns ``(loss, dlogits)``.
    """
    from .layers import _resolve_threads
    z = _as_float_array(logits, "logits")
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be 2-D (n_samples, n_classes), got shape {z.shape}")
    n, c = z.shape
    y = _check_labels(y, n, c).astype(np.int32)
    w = None if row_weight is None else np.ascontiguousarray(
        _check_weights(row_weight, n, "row_weight", z.dtype))
    return _softmax_xent_rows(np.ascontiguousarray(z), y, w, _resolve_threads(n_threads))


def _softmax_xent_rows(z, y, w, n_threads):
    """softmax_cross_entropy_rows on inputs checked by the caller (the estimators'
    training loop validates labels and weights once per fit): z (n, C) C-contiguous
    float32/float64, y int32 (n,), w None or C-contiguous (n,) of z's dtype, finite and
    non-negative. The core still checks shapes and the label range (bounds)."""
    from . import _core
    total = float(z.shape[0]) if w is None else float(np.sum(w, dtype=np.float64))
    if total == 0:
        return 0.0, np.zeros_like(z)
    dz = np.empty_like(z)
    loss = _core.softmax_xent(z, y, w, 1.0 / total, dz, n_threads)
    return loss / total, dz


# ------------------------------------------------------------------ squared error
def mean_squared_error(pred, target, sample_weight=None):
    """Weighted mean squared error over samples, averaged over outputs.

    With residual r_ik = pred_ik - target_ik, K outputs per sample, s = sample_weight
    (default ones) and S = sum_i s_i::

        loss            = sum_i s_i * (1/K) sum_k r_ik^2 / S
        dloss/dpred_ik  = 2 * s_i * r_ik / (K * S)

    Unweighted this is ``torch.nn.functional.mse_loss(pred, target)``. If S == 0 the
    loss is 0 and the gradient zero.

    Parameters: pred and target of the same shape (N, K) (a 1-D (N,) is one output per
    sample); sample_weight (N,) or None, non-negative.
    Returns ``(loss, dpred)``: a float and an array of pred's shape and dtype.
    """
    p = _as_float_array(pred, "pred")
    if p.ndim not in (1, 2):
        raise ValueError(f"pred must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), "
                         f"got shape {p.shape}")
    t = _as_float_array(target, "target")
    if t.shape != p.shape:
        raise ValueError(f"target must have the shape of pred {p.shape}, got {t.shape}")
    n = p.shape[0]
    k = 1 if p.ndim == 1 else p.shape[1]
    s = _check_weights(sample_weight, n, "sample_weight", p.dtype)
    total = s.sum()
    if total == 0 or k == 0:
        return 0.0, np.zeros_like(p)
    r = (p - t.astype(p.dtype, copy=False)).reshape(n, k)
    loss = np.sum(s * np.mean(r * r, axis=1)) / total
    dp = (2.0 / (k * total)) * s[:, None] * r
    return float(loss), dp.astype(p.dtype, copy=False).reshape(p.shape)
