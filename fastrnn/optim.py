"""Optimizers, gradient clipping and learning-rate schedules (numpy only).

Optimizers follow torch.optim's update formulas exactly (same defaults apart from SGD's
lr), so a model trained here and one trained with PyTorch from the same start take the
same steps. Interface::

    opt = Adam(lr=1e-3)
    opt.step(params, grads)     # params: dict name -> ndarray, updated IN PLACE
    opt.step(params, grads, max_norm=1.0)   # clip by global norm first, in the same call

Only the keys present in ``grads`` are updated (a frozen parameter simply has no
gradient); per-parameter state (moments, step counts) is kept under the same key.
``opt.lr`` is a plain attribute: schedulers change it between epochs. All state is plain
numpy and Python numbers, so optimizers (and schedulers) pickle.

A gradient may also be a `fastrnn.sparse.RowSparseGrad` (an embedding table's gradient,
nonzero on a few rows). The update is then "lazy", as torch.optim.SparseAdam and
TensorFlow's LazyAdam: the dense formulas are applied to the listed rows of the parameter
and of its state arrays, and every other row, state included, is left as it is (weight
decay too acts on the listed rows alone). State arrays stay dense, the shape of the
parameter, so one parameter can get dense gradients on some steps and sparse ones on
others. Adam's bias correction counts every step of the parameter, sparse or dense.

Dense gradients of float32 or float64 C-contiguous parameters are clipped and applied by
ONE call into the C core (src_c/optim.c) for all parameters, with the same formulas in
the same order, so the result has the same bits as the numpy formulas below (which
remain the reference, the path of sparse gradients, and the fallback for other arrays
and for subclasses that override ``_update``).

Nothing here calls numpy's BLAS (np.dot, @, np.linalg.norm...): a BLAS call wakes numpy's
own thread pool, whose spinning threads then take cores from fastrnn's OpenMP threads.

Schedulers are stepped once per epoch: ``sched.step()`` or ``sched.step(val_loss)``.
"""
import math
import numbers

import numpy as np

from . import _core
from ._threads import get_num_threads
from .sparse import RowSparseGrad

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "make_optimizer", "clip_grad_norm",
           "ConstantLR", "CosineAnnealingLR", "ReduceLROnPlateau", "make_scheduler"]


# ------------------------------------------------------------------ argument checks
def _check_real(value, name, low=None, high=None, low_open=False, high_open=False):
    """A finite real number in the given interval, else TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = ("(" if low_open else "[") + (str(low) if low is not None else "-inf")
        hi = "inf)" if high is None else str(high) + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}, {hi}, got {value}")
    return value


def _check_betas(betas):
    try:
        b1, b2 = betas
    except (TypeError, ValueError) as e:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from e
    return (_check_real(b1, "betas[0]", 0.0, 1.0, high_open=True),
            _check_real(b2, "betas[1]", 0.0, 1.0, high_open=True))


# ------------------------------------------------------------------ optimizers
class Optimizer:
    """Base class: checks the (params, grads) pair and runs `_update` per key.

    Subclasses implement ``_update(st, p, g)``, which changes ``p`` and the arrays of the
    parameter's state dict ``st`` in place, with ``g`` already cast to ``p``'s dtype and
    shape-checked. The same `_update` serves sparse gradients: it is run on copies of the
    listed rows of ``p`` and of the state arrays, which are then written back
    (`_update_rows`), so a lazy update uses exactly the dense formulas.
    """

    def __init__(self, lr):
        self.lr = _check_real(lr, "lr", 0.0, low_open=True)
        self.state = {}  # key -> dict of numpy arrays / numbers

    def step(self, params, grads, max_norm=None, n_threads=None):
        """Update ``params[k]`` in place for every key k of ``grads``; a gradient is an
        array of the parameter's shape or a RowSparseGrad (only its rows are updated).

        With ``max_norm``, the gradients are first clipped together by their global L2
        norm, exactly as `clip_grad_norm` does (in place, sparse ones included), and the
        norm before clipping is returned; without it, None. ``n_threads``: threads of
        the C core (None: fastrnn.get_num_threads()); the result is the same for any."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict of arrays, got {type(grads).__name__}")
        if max_norm is not None and not (type(max_norm) is float and 0.0 < max_norm < math.inf):
            max_norm = _check_real(max_norm, "max_norm", 0.0, low_open=True)
        dense, sparse = [], []
        for key, g in grads.items():
            p = params.get(key)
            if (type(p) is np.ndarray and type(g) is np.ndarray and g.dtype == p.dtype
                    and g.shape == p.shape and p.dtype.kind == "f" and p.flags.writeable):
                dense.append((key, p, g))    # the common case, every check passed at once
                continue
            p = self._checked_param(params, key)
            rows, g = self._checked_grad(g, key, p)
            if rows is None:
                dense.append((key, p, g))
            else:
                sparse.append((key, p, rows, g))
        kind = self._native_kind_for(dense, sparse)
        if kind is not None:
            total = self._native_step(kind, dense, sparse, max_norm, n_threads)
        else:
            total = None
            if max_norm is not None:
                total = _clip_arrays([g for _, _, g in dense] + [g for *_, g in sparse],
                                     max_norm)
            for key, p, g in dense:
                st = self.state.get(key, {})
                self._update(st, p, g)
                if st:  # no empty entries for parameters that keep no state (plain SGD)
                    self.state[key] = st
        for key, p, rows, g in sparse:
            st = self._update_rows(key, p, rows, g)
            if st:
                self.state[key] = st
        return total

    # ------------------------------------------------------------ the native path
    _native_kind = None   # the name of _update's formulas in src_c/optim.c, if there

    def _native_kind_for(self, dense, sparse):
        """The optimizer kind the C core runs for this call, or None (Python path):
        formulas the core knows (not overridden by a subclass), one float dtype it
        handles, C-contiguous parameters (state arrays are created like them)."""
        kind = self._native_kind
        if kind is None or type(self)._update is not _NATIVE_UPDATES[kind]:
            return None
        if not dense and not sparse:
            return None
        dtype = (dense[0][1] if dense else sparse[0][1]).dtype
        if dtype != np.float32 and dtype != np.float64:
            return None
        for _, p, g in dense:
            if p.dtype != dtype or not p.flags.c_contiguous:
                return None
        for _, p, _, _ in sparse:
            if p.dtype != dtype:
                return None
        return kind

    def _native_step(self, kind, dense, sparse, max_norm, n_threads):
        n = len(dense)
        ps, gs = [None] * n, [None] * n
        s1, s2, c1, c2, first = [None] * n, [None] * n, [0.0] * n, [0.0] * n, [False] * n
        state = self.state
        for i, (key, p, g) in enumerate(dense):
            st = state.get(key)
            if st is None:
                st = {}
            ps[i] = p
            gs[i] = g if g.flags.c_contiguous else np.ascontiguousarray(g)
            s1[i], s2[i], c1[i], c2[i], first[i] = self._native_state(st, p)
            if st:
                state[key] = st
        extra = []
        for j, (key, p, rows, g) in enumerate(sparse):
            if not g.flags.c_contiguous:   # the scaled values must be the ones applied
                g = np.ascontiguousarray(g)
                sparse[j] = (key, p, rows, g)
            extra.append(g)
        nt = get_num_threads() if n_threads is None else int(n_threads)
        return _core.optim_step(kind, self._native_hyper(), ps, gs, s1, s2, c1, c2, first,
                                extra, 0.0 if max_norm is None else max_norm, nt)

    def _native_hyper(self):
        """(lr, weight_decay, momentum, nesterov, beta1, beta2, alpha, eps) for the core"""
        raise NotImplementedError

    def _native_state(self, st, p):
        """(state1, state2, c1, c2, first) of one parameter for the core (see
        src_c/optim.h), creating the state arrays and advancing counters as `_update`
        does."""
        raise NotImplementedError

    @staticmethod
    def _checked_param(params, key):
        if key not in params:
            raise KeyError(f"grads has key {key!r} which params does not have")
        p = params[key]
        # the update is in place, so it needs a real writable float array, not a copy
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise TypeError(f"params[{key!r}] must be a float numpy array (updated in place)")
        if not p.flags.writeable:
            raise ValueError(f"params[{key!r}] is read-only")
        return p

    @staticmethod
    def _checked_grad(g, key, p):
        """(None, dense gradient) or (rows, values) of a RowSparseGrad, the gradient cast
        to ``p``'s dtype after checking its dtype and shape against ``p``."""
        if isinstance(g, RowSparseGrad):
            return Optimizer._checked_sparse_grad(g, key, p)
        g = np.asarray(g)
        if g.dtype.kind not in "fiu":
            raise TypeError(f"grads[{key!r}] must hold real numbers, got dtype {g.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {g.shape}, params[{key!r}] has {p.shape}")
        return None, g.astype(p.dtype, copy=False)

    @staticmethod
    def _checked_sparse_grad(g, key, p):
        values = np.asarray(g.values)
        if values.dtype.kind not in "fiu":
            raise TypeError(f"grads[{key!r}] must hold real numbers, got dtype {values.dtype}")
        if tuple(g.shape) != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {tuple(g.shape)}, "
                             f"params[{key!r}] has {p.shape}")
        # RowSparseGrad checked these when built; its attributes may have been reassigned
        # since, and a stray row would silently update the wrong one (negative indices)
        rows = np.asarray(g.rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu" \
                or values.shape != (len(rows),) + p.shape[1:]:
            raise ValueError(f"grads[{key!r}]: {rows.shape} rows of dtype {rows.dtype} and "
                             f"values of shape {values.shape} do not fit params[{key!r}] "
                             f"of shape {p.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= p.shape[0]):
            raise ValueError(f"grads[{key!r}]: rows must lie in [0, {p.shape[0]})")
        return rows, values.astype(p.dtype, copy=False)

    def _update_rows(self, key, p, rows, g):
        """Lazy update of rows `rows` of `p` by their gradient `g` (len(rows), ...): run
        `_update` on copies of those rows of `p` and of the state arrays, write them back.
        A state array `_update` creates is created dense, the shape of `p`, zero on the
        rows not listed (so SGD's momentum buffer still starts at a row's first gradient).
        Numbers in the state (Adam's step count) are per parameter, not per row. Returns
        the parameter's state dict."""
        st = self.state.get(key, {})
        sub = {name: a[rows] if isinstance(a, np.ndarray) else a for name, a in st.items()}
        p_rows = p[rows]
        self._update(sub, p_rows, g)
        p[rows] = p_rows
        for name, a in sub.items():
            if isinstance(a, np.ndarray):
                if name not in st:
                    st[name] = np.zeros_like(p)
                st[name][rows] = a
            else:
                st[name] = a
        return st

    @staticmethod
    def _buffer(st, name, like):
        """The state array `name` of the state dict `st`, zeros like `like` at first use."""
        if name not in st:
            st[name] = np.zeros_like(like)
        return st[name]

    def _update(self, st, p, g):
        raise NotImplementedError

    def reset(self):
        """Forget all per-parameter state (moments, step counts)."""
        self.state = {}

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "state")
        return f"{type(self).__name__}({hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD
    with dampening 0::

        g = grad + weight_decay * p
        b = g                      (first step)
        b = momentum * b + g       (later steps)
        g = g + momentum * b       if nesterov else  g = b      (when momentum > 0)
        p = p - lr * g
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_real(momentum, "momentum", 0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_real(weight_decay, "weight_decay", 0.0)

    def _update(self, st, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            if "momentum_buffer" not in st:
                # PyTorch starts the buffer at the first gradient, not at zero
                st["momentum_buffer"] = g.copy()
            else:
                buf = st["momentum_buffer"]
                buf *= self.momentum
                buf += g
            buf = st["momentum_buffer"]
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g

    _native_kind = "sgd"

    def _native_hyper(self):
        return (self.lr, self.weight_decay, self.momentum, self.nesterov, 0.0, 0.0, 0.0, 0.0)

    def _native_state(self, st, p):
        if not self.momentum:
            return None, None, 0.0, 0.0, False
        buf = st.get("momentum_buffer")
        if buf is None:   # PyTorch starts the buffer at the first gradient: the core copies it
            st["momentum_buffer"] = buf = np.empty_like(p)
            return buf, None, 0.0, 0.0, True
        return buf, None, 0.0, 0.0, False


class Adam(Optimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam with L2 weight decay added to the gradient::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_real(eps, "eps", 0.0)
        self.weight_decay = _check_real(weight_decay, "weight_decay", 0.0)

    def _update(self, st, p, g):
        beta1, beta2 = self.betas
        if self.weight_decay:
            if self._decoupled:
                # AdamW: shrink the weights directly, outside the adaptive scaling
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m = self._buffer(st, "exp_avg", p)
        v = self._buffer(st, "exp_avg_sq", p)
        st["step"] = st.get("step", 0) + 1
        m += (1 - beta1) * (g - m)  # = beta1*m + (1-beta1)*g, PyTorch's lerp form
        v *= beta2
        v += (1 - beta2) * g * g
        step_size = self.lr / (1 - beta1 ** st["step"])
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** st["step"]) + self.eps
        p -= step_size * (m / denom)

    _native_kind = "adam"

    def _native_kind_for(self, dense, sparse):
        kind = super()._native_kind_for(dense, sparse)
        return "adamw" if kind is not None and self._decoupled else kind

    def _native_hyper(self):
        return (self.lr, self.weight_decay, 0.0, False, self.betas[0], self.betas[1], 0.0,
                self.eps)

    def _native_state(self, st, p):
        beta1, beta2 = self.betas
        m = self._buffer(st, "exp_avg", p)
        v = self._buffer(st, "exp_avg_sq", p)
        t = st["step"] = st.get("step", 0) + 1
        return m, v, self.lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t), False


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW::

        p = p * (1 - lr * weight_decay)
        then the Adam step above with g = grad (no decay in the gradient)
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton), as torch.optim.RMSprop (not centered)::

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        u = g / (sqrt(v) + eps)
        b = momentum * b + u,  p = p - lr * b     if momentum > 0
        p = p - lr * u                            otherwise
    """

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(lr)
        self.alpha = _check_real(alpha, "alpha", 0.0, 1.0, high_open=True)
        self.eps = _check_real(eps, "eps", 0.0)
        self.momentum = _check_real(momentum, "momentum", 0.0)
        self.weight_decay = _check_real(weight_decay, "weight_decay", 0.0)

    def _update(self, st, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        v = self._buffer(st, "square_avg", p)
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        u = g / (np.sqrt(v) + self.eps)
        if self.momentum:
            buf = self._buffer(st, "momentum_buffer", p)  # PyTorch starts this one at zero
            buf *= self.momentum
            buf += u
            u = buf
        p -= self.lr * u

    _native_kind = "rmsprop"

    def _native_hyper(self):
        return (self.lr, self.weight_decay, self.momentum, False, 0.0, 0.0, self.alpha,
                self.eps)

    def _native_state(self, st, p):
        v = self._buffer(st, "square_avg", p)
        buf = self._buffer(st, "momentum_buffer", p) if self.momentum else None
        return v, buf, 0.0, 0.0, False


# the formulas src_c/optim.c implements, by kind: a subclass overriding _update runs its own
_NATIVE_UPDATES = {"sgd": SGD._update, "adam": Adam._update, "adamw": Adam._update,
                   "rmsprop": RMSprop._update}

_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def make_optimizer(name, lr, weight_decay=0.0, **kw):
    """The optimizer called `name` ('sgd', 'adam', 'adamw', 'rmsprop', any case).

    ``weight_decay`` defaults to 0 for all of them, AdamW included, so that switching
    the name alone never silently switches regularization on.
    """
    cls = _OPTIMIZERS.get(name.lower() if isinstance(name, str) else None)
    if cls is None:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {name!r}")
    return cls(lr=lr, weight_decay=weight_decay, **kw)


# ------------------------------------------------------------------ gradient clipping
_NORM_CHUNK = 1 << 16  # elements squared per pass: a 512 KB float64 scratch, cache-sized


def _squared_norm(g):
    """sum(g^2) accumulated in float64, without BLAS: np.dot would wake numpy's BLAS
    thread pool, whose threads then spin and take cores from fastrnn's OpenMP threads.
    Chunks of g are squared in float64 into one scratch array and summed by numpy's
    pairwise reduction; the partial sums are added exactly (math.fsum)."""
    flat = g.ravel(order="K")  # a view unless g is neither C- nor F-contiguous
    n = flat.size
    if n == 0:
        return 0.0
    scratch = np.empty(min(n, _NORM_CHUNK), dtype=np.float64)
    partials = []
    for start in range(0, n, _NORM_CHUNK):
        chunk = flat[start:start + _NORM_CHUNK]
        sq = scratch[:chunk.size]
        if chunk.dtype == np.float64:
            np.multiply(chunk, chunk, out=sq)
        else:  # float32 (or narrower): widen first so no square is rounded to float32
            np.copyto(sq, chunk)
            np.multiply(sq, sq, out=sq)
        partials.append(float(np.add.reduce(sq)))
    return math.fsum(partials)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so their global L2 norm is at most `max_norm`.

    total = sqrt(sum over every array g of sum(g^2)); when the coefficient
    max_norm / (total + 1e-6) is below 1 every array is multiplied by it, in place
    (torch.nn.utils.clip_grad_norm_; the 1e-6 guards a zero norm). Returns `total`,
    the norm before clipping, as a float. A NaN or infinite total leaves the
    gradients untouched (scaling would only spread the NaN) and is returned as is.

    A gradient may be a RowSparseGrad: its values count in the norm (its rows are
    distinct, so that is the norm of the dense gradient) and are scaled in place.
    """
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    max_norm = _check_real(max_norm, "max_norm", 0.0, low_open=True)
    arrays = []
    for key, g in grads.items():
        if isinstance(g, RowSparseGrad):
            g = g.values
            what = f"grads[{key!r}].values (a RowSparseGrad's)"
        else:
            what = f"grads[{key!r}]"
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"{what} must be a float numpy array (scaled in place)")
        arrays.append(g)
    return _clip_arrays(arrays, max_norm)


def _clip_arrays(arrays, max_norm):
    """clip_grad_norm on a list of float arrays (numpy, the reference formulas)."""
    total = math.sqrt(math.fsum(_squared_norm(g) for g in arrays))
    coef = max_norm / (total + 1e-6)
    if math.isfinite(total) and coef < 1.0:
        for g in arrays:
            g *= coef
    return total


# ------------------------------------------------------------------ learning-rate schedules
class _Scheduler:
    """Base: remembers the optimizer and its starting lr; ``last_epoch`` counts steps."""

    def __init__(self, optimizer):
        if not isinstance(getattr(optimizer, "lr", None), numbers.Real):
            raise TypeError("optimizer must have a numeric lr attribute")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def get_last_lr(self):
        """The learning rate the optimizer currently uses."""
        return self.optimizer.lr


class ConstantLR(_Scheduler):
    """lr = base_lr * factor for the first `total_iters` epochs, base_lr afterwards
    (torch.optim.lr_scheduler.ConstantLR). The defaults (factor 1) keep lr constant."""

    def __init__(self, optimizer, factor=1.0, total_iters=0):
        super().__init__(optimizer)
        self.factor = _check_real(factor, "factor", 0.0, 1.0, low_open=True)
        if isinstance(total_iters, bool) or not isinstance(total_iters, numbers.Integral) \
                or total_iters < 0:
            raise ValueError(f"total_iters must be a non-negative integer, got {total_iters!r}")
        self.total_iters = int(total_iters)
        self.optimizer.lr = self._lr()

    def _lr(self):
        return self.base_lr * (self.factor if self.last_epoch < self.total_iters else 1.0)

    def step(self, metric=None):
        """Advance one epoch; `metric` is ignored."""
        self.last_epoch += 1
        self.optimizer.lr = self._lr()


class CosineAnnealingLR(_Scheduler):
    """lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 after t steps
    (torch.optim.lr_scheduler.CosineAnnealingLR, closed form): base_lr at t = 0, eta_min
    at t = T_max, and, as in PyTorch, rising again on the same cosine past T_max."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Integral) or T_max < 1:
            raise ValueError(f"T_max must be a positive integer, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _check_real(eta_min, "eta_min", 0.0)

    def step(self, metric=None):
        """Advance one epoch; `metric` is ignored."""
        self.last_epoch += 1
        cos = math.cos(math.pi * self.last_epoch / self.T_max)
        self.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * (1 + cos) / 2


class ReduceLROnPlateau(_Scheduler):
    """Multiply lr by `factor` when `metric` has not improved for `patience` epochs
    (torch.optim.lr_scheduler.ReduceLROnPlateau).

    "Improved" (mode 'min'; 'max' mirrors it) means metric < best * (1 - threshold) with
    threshold_mode 'rel', metric < best - threshold with 'abs'. After a reduction the
    bad-epoch count restarts and `cooldown` epochs pass before bad epochs count again.
    lr never drops below `min_lr`, and a change smaller than 1e-8 is not applied.
    """

    _EPS = 1e-8  # PyTorch's default eps: ignore reductions smaller than this

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0):
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = _check_real(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = self._check_count(patience, "patience")
        self.cooldown = self._check_count(cooldown, "cooldown")
        self.threshold = _check_real(threshold, "threshold", 0.0)
        self.min_lr = _check_real(min_lr, "min_lr", 0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @staticmethod
    def _check_count(value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        return int(value)

    def _is_better(self, current):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return current < self.best * (1 - self.threshold)
            return current < self.best - self.threshold
        if self.threshold_mode == "rel":
            return current > self.best * (1 + self.threshold)
        return current > self.best + self.threshold

    def step(self, metric=None):
        """Record this epoch's `metric` (required) and reduce lr if it has plateaued."""
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step needs the metric (e.g. validation loss)")
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            # epochs right after a reduction do not count as bad
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce_lr(self):
        old = self.optimizer.lr
        new = max(old * self.factor, self.min_lr)
        if old - new > self._EPS:
            self.optimizer.lr = new


_SCHEDULERS = {"constant": ConstantLR, "cosine": CosineAnnealingLR, "plateau": ReduceLROnPlateau}


def make_scheduler(name, optimizer, **kw):
    """The schedule called `name` ('constant', 'cosine', 'plateau', any case) on
    `optimizer`; `kw` go to its constructor (e.g. T_max for 'cosine')."""
    cls = _SCHEDULERS.get(name.lower() if isinstance(name, str) else None)
    if cls is None:
        raise ValueError(f"scheduler must be one of {sorted(_SCHEDULERS)}, got {name!r}")
    return cls(optimizer, **kw)
