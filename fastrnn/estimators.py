"""scikit-learn-style estimators: LSTMClassifier, LSTMRegressor, GRU*, RNN*.

One base class holds the whole training loop; a subclass only names its cell and its
task (classification or regression). scikit-learn's conventions are followed without
depending on scikit-learn: ``__init__`` stores its arguments untouched, fitted
attributes end in ``_``, ``fit`` returns ``self``, ``get_params``/``set_params``,
``random_state``, cloneable and picklable.

Model: a recurrent stack (fastrnn.layers) whose final hidden state (both directions when
bidirectional, at each sequence's own last step) feeds a Dense head.

Input X, three forms:
  * 3-D array (n_samples, n_timesteps, n_features);
  * 2-D array (n_samples, n_timesteps): a batch of univariate series;
  * list of arrays shaped (T_i, n_features) (or (T_i,) for univariate), lengths T_i free:
    a variable-length batch, handled by the core's lengths (no padding leaks in).
The feature-count rule (reconciling scikit-learn with sequences): ``n_features_in_`` is
what scikit-learn means by it for 2-D input, the column count, i.e. the number of steps
of the univariate series; predict then demands 2-D X with that many columns. After
fitting on 3-D or ragged X, ``n_features_in_`` is the per-step feature count and X of
any length may be predicted, as long as each step has that many features.
"""
import contextlib
import copy
import json
import numbers
import sys
import threading
import time
import warnings

import numpy as np

from . import __version__ as _version
from .dense import Dense
from ._memory import BLAS_INT_MAX, check_memory
from .layers import GRU, LSTM, RNN, call_bytes, param_count
from .losses import mean_squared_error, softmax, softmax_cross_entropy
from .optim import clip_grad_norm, make_optimizer, make_scheduler
from ._threads import get_num_threads
from . import _core

__all__ = ["LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "load"]

_FORMAT_VERSION = 1
_PREDICT_BATCH = 1024
_PREDICT_MEMORY = 256 << 20   # bytes of layer scratch one predict batch may take
_MAX_JOBS = 1 << 10
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}

# ---------------------------------------------------------------- threads of concurrent calls
# fit/predict calls running at once in this process (joblib's threading backend, a
# thread pool calling predict, ...). Each call's OpenMP team would otherwise take every
# core, and N concurrent calls would run N x cores threads: the cores are shared
# instead. (Worker processes need nothing: joblib's loky sets OMP_NUM_THREADS in them.)
_active_lock = threading.Lock()
_active_calls = 0


@contextlib.contextmanager
def _running():
    global _active_calls
    with _active_lock:
        _active_calls += 1
    try:
        yield
    finally:
        with _active_lock:
            _active_calls -= 1


# ---------------------------------------------------------------- input handling

def _as_float_array(a, name, dtype):
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported")
    if a.dtype.kind in "US":
        raise TypeError(f"{name} must hold numbers, got strings (dtype {a.dtype}); "
                        f"convert it explicitly, e.g. {name}.astype(float)")
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must hold numbers: argument must be a string or a "
                            f"real number ({e})") from e
    elif a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    with np.errstate(over="ignore"):
        converted = np.asarray(a, dtype=dtype)
    if not np.isfinite(converted).all():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if a.dtype.kind in "fiu":
            raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name} "
                             f"(largest magnitude {float(np.abs(a).max()):g})")
        raise ValueError(f"{name} contains NaN or infinity")
    return converted


def _sequences(X, dtype):
    """(padded (n, T, F) array, lengths (n,), kind) from any accepted form of X.
    kind is '2d', '3d' or 'ragged'."""
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X has 0 samples (an empty list); at least 1 is required")
    if isinstance(X, (list, tuple)) and len(X) > 0 and all(
            hasattr(x, "__len__") for x in X):
        seqs = []
        try:
            arrs = [np.asarray(x) for x in X]
        except Exception as e:
            raise ValueError(f"X could not be read as a list of sequences: {e}") from e
        ndims = {a.ndim for a in arrs}
        shapes = {a.shape for a in arrs}
        if len(shapes) == 1 and ndims <= {1, 2}:
            pass  # regular: falls through to the array path below
        else:
            for i, a in enumerate(arrs):
                if a.ndim == 1:
                    a = a[:, None]
                if a.ndim != 2:
                    raise ValueError(f"X[{i}] must be 2-D (steps, features) or 1-D, "
                                     f"got shape {a.shape}")
                if a.shape[0] == 0:
                    raise ValueError(f"X[{i}] is an empty sequence (0 steps)")
                seqs.append(_as_float_array(a, f"X[{i}]", dtype))
            feats = {s.shape[1] for s in seqs}
            if len(feats) != 1:
                raise ValueError(f"all sequences of X must have the same number of features "
                                 f"per step, got {sorted(feats)}")
            lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
            out = np.zeros((len(seqs), lengths.max(), feats.pop()), dtype=dtype)
            for i, s in enumerate(seqs):
                out[i, :len(s)] = s
            return out, lengths, "ragged"
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse") \
            or hasattr(X, "tocsr"):
        raise TypeError("X: sparse input is not supported; pass a dense array")
    try:
        arr = np.asarray(X)
    except Exception as e:
        raise ValueError(f"X could not be converted to an array: {e}") from e
    if arr.ndim == 0 or arr.ndim == 1:
        raise ValueError(f"Expected 2D array, got {'scalar' if arr.ndim == 0 else '1D'} array "
                         f"instead: X must be (n_samples, n_timesteps[, n_features]) or a "
                         f"list of sequences. Reshape your data, e.g. X.reshape(-1, 1) for "
                         f"one step per sample or X.reshape(1, -1) for one sequence.")
    if arr.ndim > 3:
        raise ValueError(f"X must be 2-D or 3-D, got {arr.ndim}-D array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"X has 0 samples (shape {arr.shape}); at least 1 is required")
    if arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum "
                         f"of 1 is required: X has 0 steps.")
    if arr.ndim == 3 and arr.shape[2] == 0:
        raise ValueError(f"X has 0 features per step (shape {arr.shape})")
    kind = "2d" if arr.ndim == 2 else "3d"
    arr = _as_float_array(arr, "X", dtype)
    if kind == "2d":
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr), np.full(arr.shape[0], arr.shape[1], np.int64), kind


def _check_sample_weight(sample_weight, n, dtype):
    if sample_weight is None:
        return np.ones(n, dtype=dtype)
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.dtype.kind not in "fiub":
        raise TypeError(f"sample_weight must be numeric, got dtype {sw.dtype}")
    sw = sw.astype(dtype)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)")
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (sw < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    if n > 0 and not (sw > 0).any():
        raise ValueError("Sample weights must contain at least one non-zero number")
    return sw


def _rng(random_state):
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2 ** 31 - 1))
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.Generator)):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int, a RandomState or a Generator, "
                     f"got {random_state!r}")


# ---------------------------------------------------------------- the base estimator

class _RecurrentEstimator:
    """Training loop, persistence and scikit-learn plumbing shared by all estimators."""

    _cell = "lstm"           # 'lstm', 'gru' or 'rnn'
    _is_classifier = False

    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                 nonlinearity="tanh", optimizer="adam", learning_rate=1e-2,
                 weight_decay=0.0, lr_schedule="constant", batch_size=32, max_epochs=100,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, clip_grad_norm=1.0, shuffle=True, random_state=None,
                 n_jobs=None, dtype="float32", verbose=0, warm_start=False):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.nonlinearity = nonlinearity
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.clip_grad_norm = clip_grad_norm
        self.shuffle = shuffle
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------ sklearn plumbing
    @classmethod
    def _get_param_names(cls):
        import inspect
        sig = inspect.signature(cls.__init__)
        return sorted(p for p in sig.parameters if p != "self")

    def get_params(self, deep=True):
        """Parameters of this estimator (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set parameters (scikit-learn convention); returns self."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator "
                                 f"{type(self).__name__}. Valid parameters are: {valid!r}.")
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = type(self)().get_params()
        changed = {k: v for k, v in self.get_params().items()
                   if not (type(v) is type(defaults[k]) and _equal(v, defaults[k]))}
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items()))
        return f"{type(self).__name__}({args})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "rnn_")

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags
        tags = Tags(estimator_type="classifier" if self._is_classifier else "regressor",
                    target_tags=TargetTags(required=True))
        if self._is_classifier:
            tags.classifier_tags = ClassifierTags()
        else:
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
            tags.target_tags.single_output = True
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    @property
    def _estimator_type(self):
        return "classifier" if self._is_classifier else "regressor"

    # ------------------------------------------------------------ hyperparameter checks
    def _validate_params(self):
        def pos_int(name, upper):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {v!r}")
            if v < 1 or v > upper:
                raise ValueError(f"{name} must lie in [1, {upper}], got {v}")

        pos_int("hidden_size", 1 << 14)
        pos_int("num_layers", 64)
        pos_int("batch_size", 1 << 24)
        pos_int("max_epochs", 1 << 30)
        pos_int("n_iter_no_change", 1 << 30)

        def real(name, lo, hi, lo_open=False, hi_open=False, none_ok=False):
            v = getattr(self, name)
            if v is None and none_ok:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise TypeError(f"{name} must be a finite real number, got {v!r}")
            if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
                raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}"
                                 f"{')' if hi_open else ']'}, got {v}")

        real("dropout", 0.0, 1.0, hi_open=True)
        real("learning_rate", 0.0, np.inf, lo_open=True)
        real("weight_decay", 0.0, np.inf)
        real("validation_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
        real("tol", 0.0, np.inf)
        real("clip_grad_norm", 0.0, np.inf, lo_open=True, none_ok=True)
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in (
                "sgd", "adam", "adamw", "rmsprop"):
            raise ValueError(f"optimizer must be one of 'sgd', 'adam', 'adamw', 'rmsprop', "
                             f"got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine", "plateau"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'plateau', "
                             f"got {self.lr_schedule!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(
                self.n_jobs, numbers.Integral) or self.n_jobs == 0 or self.n_jobs < -1
                or self.n_jobs > _MAX_JOBS):
            raise ValueError(f"n_jobs must be None, -1 or an integer in [1, {_MAX_JOBS}], "
                             f"got {self.n_jobs!r}")
        if self.verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        if self._is_classifier:
            self._check_class_weight_param()

    def _n_threads(self):
        if self.n_jobs is None:
            requested = get_num_threads()
        elif self.n_jobs == -1:
            requested = max(1, _core.max_threads())
        else:
            requested = int(self.n_jobs)
        active = _active_calls
        if active > 1:  # concurrent calls share the cores (results do not depend on it)
            return max(1, min(requested, max(1, _core.max_threads()) // active))
        return requested

    def _check_sizes(self, n_inputs, n_outputs, steps, n_train):
        """Refuse, before anything is built, a model or training batch that cannot work:
        one whose core calls exceed 32-bit BLAS sizes (steps * batch * gates * hidden
        below 2**31), or whose parameters, optimizer state and training buffers cannot
        fit in the memory available."""
        G, H, L = _GATES[self._cell], int(self.hidden_size), int(self.num_layers)
        D = 2 if self.bidirectional else 1
        bs = max(1, min(int(self.batch_size), n_train))
        per_sample = steps * G * H
        if bs * per_sample > BLAS_INT_MAX:
            what = (f"sequences of {steps} steps with hidden_size={H}: steps * gates * "
                    f"hidden_size = {per_sample}" if per_sample > BLAS_INT_MAX else
                    f"batch_size={self.batch_size} with sequences of {steps} steps and "
                    f"hidden_size={H}: batch * steps * gates * hidden_size = "
                    f"{bs * per_sample}")
            fix = ("use shorter sequences or a smaller hidden_size" if per_sample >
                   BLAS_INT_MAX else f"use batch_size <= {BLAS_INT_MAX // per_sample}")
            raise ValueError(f"{what} exceeds 2**31 - 1, the largest size 32-bit BLAS "
                             f"can index; {fix}")
        itemsize = np.dtype(self.dtype).itemsize
        n_params = param_count(self._cell, n_inputs, H, L, D) + (D * H + 1) * n_outputs
        # weights, gradients and the epoch snapshot; the optimizer's slots and their
        # snapshot; the best weights (early stopping)
        slots = {"sgd": 0, "rmsprop": 1}.get(self.optimizer.lower(), 2)
        copies = 3 + 2 * slots + bool(self.early_stopping)
        largest = G * H * max(n_inputs, D * H, H)   # drawn in float64 at initialisation
        nbytes = (n_params * itemsize * copies + largest * 8
                  + call_bytes(self._cell, n_inputs, H, L, D, bs, steps, itemsize, True,
                               return_sequences=False))
        check_memory(nbytes, f"{type(self).__name__}(hidden_size={H}, num_layers={L}, "
                             f"batch_size={self.batch_size}) training on sequences of "
                             f"{steps} steps with {n_inputs} features",
                     "reduce hidden_size, num_layers or batch_size")

    def _predict_batch_size(self, steps):
        """Samples per inference call: at most _PREDICT_BATCH, within 32-bit BLAS sizes
        and with at most _PREDICT_MEMORY of scratch between layers."""
        G, H, L = _GATES[self._cell], int(self.rnn_.hidden_size), int(self.rnn_.num_layers)
        D = 2 if self.rnn_.bidirectional else 1
        by_blas = max(1, BLAS_INT_MAX // (steps * G * H))
        between = steps * D * H * np.dtype(self.rnn_.dtype).itemsize * min(L - 1, 2)
        by_memory = max(1, _PREDICT_MEMORY // between) if between else _PREDICT_BATCH
        return max(1, min(_PREDICT_BATCH, by_blas, by_memory))

    # ------------------------------------------------------------ X handling
    def _check_X_fit(self, X):
        Xp, lengths, kind = _sequences(X, np.dtype(self.dtype))
        self._input_kind_ = kind
        self.n_step_features_ = Xp.shape[2]
        self.n_features_in_ = Xp.shape[1] if kind == "2d" else Xp.shape[2]
        return Xp, lengths

    def _check_X_predict(self, X):
        self._check_fitted()
        Xp, lengths, kind = _sequences(X, np.dtype(self.dtype))
        if self._input_kind_ == "2d" and kind == "2d":
            if Xp.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {Xp.shape[1]} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input.")
        elif Xp.shape[2] != self.n_step_features_:
            raise ValueError(f"X has {Xp.shape[2]} features per step, but "
                             f"{type(self).__name__} was fitted with "
                             f"{self.n_step_features_} features per step.")
        return Xp, lengths

    def _check_fitted(self):
        if not hasattr(self, "rnn_"):
            from .exceptions import not_fitted_error
            raise not_fitted_error()(f"This {type(self).__name__} instance is not fitted yet. "
                                 f"Call 'fit' with appropriate arguments before using this "
                                 f"estimator.")

    # ------------------------------------------------------------ the network
    def _build(self, n_inputs, n_outputs, rng):
        layer_cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[self._cell]
        kw = dict(num_layers=self.num_layers, bidirectional=bool(self.bidirectional),
                  dropout=float(self.dropout), dtype=np.dtype(self.dtype),
                  random_state=int(rng.integers(2 ** 31 - 1)))
        if self._cell == "rnn":
            kw["nonlinearity"] = self.nonlinearity
        self.rnn_ = layer_cls(n_inputs, self.hidden_size, **kw)
        D = 2 if self.bidirectional else 1
        self.head_ = Dense(D * self.hidden_size, n_outputs, dtype=np.dtype(self.dtype),
                           random_state=int(rng.integers(2 ** 31 - 1)))

    def _params(self):
        """All trainable arrays by one flat name (shared with the layers: in-place
        updates by the optimizer update the model)."""
        p = {"rnn." + k: v for k, v in self.rnn_.params.items()}
        p.update({"head." + k: v for k, v in self.head_.params.items()})
        return p

    def _snapshot(self, training_state=False):
        """Copies of the weights; with training_state also of the optimizer's state and
        the sample count, so a fit rolled back to it continues as if from there."""
        snap = {k: v.copy() for k, v in self._params().items()}
        if training_state:
            snap["__training_state__"] = (copy.deepcopy(self._optimizer.state), self.t_)
        return snap

    def _restore(self, snap):
        for k, v in self._params().items():
            v[...] = snap[k]
        if "__training_state__" in snap:
            state, self.t_ = snap["__training_state__"]
            self._optimizer.state = copy.deepcopy(state)

    def _features(self, Xb, lengths, training, nt):
        """Final hidden state of the last layer, both directions: (batch, D*H)."""
        _, state = self.rnn_.forward(Xb, lengths, training=training, n_threads=nt,
                                     return_sequences=False)
        h_n = state[0] if isinstance(state, tuple) else state
        D = 2 if self.rnn_.bidirectional else 1
        last = h_n[-D:]                                   # (D, B, H)
        return np.ascontiguousarray(last.transpose(1, 0, 2).reshape(last.shape[1], -1))

    def _forward_batch(self, Xb, lengths, training, nt):
        feats = self._features(Xb, lengths, training, nt)
        return self.head_.forward(feats, training=training)

    def _backward_batch(self, d_logits, nt):
        d_feats, head_grads = self.head_.backward(d_logits)
        L, D, H = self.rnn_.num_layers, 2 if self.rnn_.bidirectional else 1, self.hidden_size
        B = d_feats.shape[0]
        d_h_n = np.zeros((L * D, B, H), dtype=d_feats.dtype)
        d_h_n[-D:] = d_feats.reshape(B, D, H).transpose(1, 0, 2)
        d_state = (d_h_n, None) if self._cell == "lstm" else d_h_n
        _, rnn_grads = self.rnn_.backward(None, d_state, n_threads=nt)
        grads = {"rnn." + k: v for k, v in rnn_grads.items() if k not in ("h0", "c0")}
        grads.update({"head." + k: v for k, v in head_grads.items()})
        return grads

    def _predict_raw(self, X):
        """Network outputs for every sample, in inference mode, in batches."""
        Xp, lengths = self._check_X_predict(X)
        with _running():
            return self._raw_outputs(Xp, lengths)

    def _raw_outputs(self, Xp, lengths):
        step = self._predict_batch_size(Xp.shape[1])
        outs = []
        for start in range(0, Xp.shape[0], step):
            sl = slice(start, start + step)
            lb = lengths[sl]
            outs.append(self._forward_batch(Xp[sl, :lb.max()], lb, False, self._n_threads()))
        return np.concatenate(outs, axis=0)

    # ------------------------------------------------------------ training
    def fit(self, X, y, sample_weight=None):
        """Train on X, y (see the module docstring for the forms of X); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        with _running():
            return self._fit_checked(X, y, sample_weight, incremental, classes)

    def _fit_checked(self, X, y, sample_weight, incremental, classes):
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None")
        if incremental and hasattr(self, "rnn_"):
            Xp, lengths = self._check_X_predict(X)
        else:
            Xp, lengths = self._check_X_fit(X)
        sw = _check_sample_weight(sample_weight, Xp.shape[0], np.dtype(self.dtype))
        Y = self._prepare_targets(y, Xp.shape[0], incremental, classes, sw)
        first = not (hasattr(self, "rnn_") and (self.warm_start or incremental))
        if first:
            self._check_sizes(Xp.shape[2], self._n_outputs(), Xp.shape[1], Xp.shape[0])
            self._rng_ = _rng(self.random_state)
            self._build(Xp.shape[2], self._n_outputs(), self._rng_)
            self.n_iter_ = 0
            self.t_ = 0
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_loss_ = np.inf
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self._optimizer = make_optimizer(self.optimizer, lr=float(self.learning_rate),
                                             weight_decay=float(self.weight_decay))
            self._scheduler = make_scheduler(
                self.lr_schedule, self._optimizer,
                **({"T_max": int(self.max_epochs)} if self.lr_schedule == "cosine" else {}))
            self._no_improve = 0
        if not incremental:
            self._no_improve = 0
        tr, va = self._split(Xp.shape[0], Y, incremental)
        epochs = 1 if incremental else int(self.max_epochs)
        self._train_epochs(Xp, lengths, Y, sw, tr, va, epochs, incremental)
        return self

    def _split(self, n, Y, incremental):
        idx = np.arange(n)
        if not self.early_stopping or incremental:
            return idx, None
        n_val = int(np.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(f"early_stopping needs at least 2 samples to set "
                             f"validation_fraction={self.validation_fraction} of them apart, "
                             f"got {n}")
        perm = self._rng_.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _train_epochs(self, Xp, lengths, Y, sw, tr, va, epochs, incremental):
        bs = min(int(self.batch_size), len(tr))
        params = self._params()
        for _ in range(epochs):
            t0 = time.perf_counter()
            done, last_good = self.n_iter_, None
            # Ctrl-C anywhere in the epoch (Python sees it between two core calls, which
            # run without the GIL and are never cut short) rolls the model back to the
            # end of the last completed epoch: weights, optimizer state, counters.
            try:
                last_good = self._snapshot(training_state=True)
                epoch_loss = self._run_batches(Xp, lengths, Y, sw, tr, bs, params)
                if epoch_loss is None or not all(np.isfinite(v).all()
                                                 for v in params.values()):
                    self._diverged(last_good)
                    return
                self.loss_curve_.append(epoch_loss)
                self.n_iter_ += 1
                stop = self._end_of_epoch(Xp, lengths, Y, va, epoch_loss, incremental)
            except KeyboardInterrupt:
                self._interrupted(done, last_good)
                return
            if self.verbose:
                _report(self, epoch_loss, time.perf_counter() - t0)
            if stop:
                break
        if self.early_stopping and not incremental and getattr(self, "_best_params", None):
            self._restore(self._best_params)

    def _run_batches(self, Xp, lengths, Y, sw, tr, bs, params):
        """One pass over the rows `tr` in mini-batches: their mean loss, or None as soon
        as the loss of a batch is NaN or infinite (that batch is not applied)."""
        order = self._rng_.permutation(tr) if self.shuffle else tr
        total, wsum = 0.0, 0.0
        n_batches = (len(order) + bs - 1) // bs
        for bi in range(n_batches):
            nt = self._n_threads()
            b = order[bi * bs:(bi + 1) * bs]
            lb = lengths[b]
            Xb = Xp[b, :lb.max()]
            with np.errstate(over="ignore", invalid="ignore"):
                # a diverging fit is reported by the caller, by name and epoch
                out = self._forward_batch(Xb, lb, True, nt)
                loss, d_out = self._loss(out, Y[b], sw[b])
            if not np.isfinite(loss):
                return None
            grads = self._backward_batch(d_out, nt)
            if self.clip_grad_norm is not None:
                clip_grad_norm(grads, float(self.clip_grad_norm))
            self._optimizer.step(params, grads)
            self.t_ += len(b)
            w = float(sw[b].sum())
            total += loss * w
            wsum += w
            if self.verbose >= 2:
                _progress(bi + 1, n_batches, total / max(wsum, 1e-12))
        return total / wsum if wsum > 0 else 0.0

    def _interrupted(self, done, last_good):
        if self.n_iter_ == done and last_good is not None:   # the epoch was not complete
            self._restore(last_good)
        del self.loss_curve_[self.n_iter_:]
        if self.validation_scores_ is not None:
            del self.validation_scores_[self.n_iter_:]
        warnings.warn(f"fit interrupted (KeyboardInterrupt) in epoch {done + 1}; the model "
                      f"keeps the weights of the last completed epoch ({self.n_iter_}) and "
                      f"can be used or trained further.", RuntimeWarning, stacklevel=6)

    def _end_of_epoch(self, Xp, lengths, Y, va, epoch_loss, incremental):
        """Bookkeeping after an epoch; True when training should stop."""
        if self.early_stopping and va is not None:
            score = self._score_arrays(Xp[va], lengths[va], Y[va])
            self.validation_scores_.append(score)
            if score > self.best_validation_score_ + self.tol:
                self._no_improve = 0
            else:
                self._no_improve += 1
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self._snapshot()
            metric = -score
        else:
            if epoch_loss < self.best_loss_ - self.tol:
                self._no_improve = 0
            else:
                self._no_improve += 1
            self.best_loss_ = min(self.best_loss_, epoch_loss)
            metric = epoch_loss
        self._scheduler.step(metric)
        return (not incremental) and self._no_improve >= self.n_iter_no_change

    def _diverged(self, last_good):
        self._restore(last_good)
        warnings.warn(f"fit stopped in epoch {self.n_iter_ + 1}: the loss became NaN or "
                      f"infinite; the weights after epoch {self.n_iter_} were kept. Try a "
                      f"lower learning_rate or clip_grad_norm.", RuntimeWarning, stacklevel=6)

    def _score_arrays(self, Xp, lengths, Y):
        return self._score_raw(self._raw_outputs(Xp, lengths), Y)

    # ------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fitted model to `path` (.npz with JSON metadata). Loading it with
        fastrnn.load never unpickles or executes anything from the file."""
        self._check_fitted()
        meta = {"format": _FORMAT_VERSION, "fastrnn_version": _version,
                "class": type(self).__name__, "params": _jsonable(self.get_params()),
                "fitted": {k: _jsonable(getattr(self, k)) for k in self._fitted_scalars()}}
        arrays = {"param:" + k: v for k, v in self._params().items()}
        arrays.update(self._fitted_arrays())
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def _fitted_scalars(self):
        return ["n_features_in_", "n_step_features_", "_input_kind_", "n_iter_", "t_",
                "loss_curve_", "validation_scores_", "best_loss_", "best_validation_score_"]

    def _fitted_arrays(self):
        return {}

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fastrnn_version"] = _version
        return state

    def __setstate__(self, state):
        pickled = state.pop("_fastrnn_version", None)
        if pickled != _version:
            warnings.warn(f"this {type(self).__name__} was pickled by fastrnn {pickled} and is "
                          f"unpickled by fastrnn {_version}: it may not work; save() and "
                          f"fastrnn.load() check the format across versions",
                          UserWarning, stacklevel=2)
        self.__dict__.update(state)


def _equal(a, b):
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not np.isfinite(v):
        return repr(v)
    if isinstance(v, (np.random.RandomState, np.random.Generator)):
        return None
    return v


def _progress(done, total, loss):
    width = 30
    fill = int(width * done / total)
    sys.stdout.write(f"\r  [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                     f"loss {loss:.4f}")
    if done == total:
        sys.stdout.write("\r" + " " * (width + 40) + "\r")
    sys.stdout.flush()


def _report(est, loss, seconds):
    val = ""
    if est.validation_scores_:
        val = f", validation score {est.validation_scores_[-1]:.4f}"
    print(f"epoch {est.n_iter_}: train loss {loss:.6f}{val}, {seconds:.2f} s", flush=True)


# ---------------------------------------------------------------- the two tasks

class _ClassifierMixin:
    _is_classifier = True

    def _check_class_weight_param(self):
        cw = self.class_weight
        if isinstance(cw, dict):
            for label, w in cw.items():
                if isinstance(w, bool) or not isinstance(w, numbers.Real) \
                        or not np.isfinite(w) or w < 0:
                    raise ValueError(f"class_weight[{label!r}] must be a finite number "
                                     f">= 0, got {w!r}")
            return
        if cw is None or (isinstance(cw, str) and cw == "balanced"):
            return
        raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")

    def _prepare_targets(self, y, n, incremental, classes, sw):
        y = _check_y_classification(y, n)
        if incremental and hasattr(self, "classes_"):
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError("classes must equal the classes of the first partial_fit "
                                 f"call {self.classes_!r}")
        elif incremental:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
        else:
            self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data, but the data contains only "
                             + (f"one class: {self.classes_.tolist()[0]!r}"
                                if len(self.classes_) == 1 else "no class"))
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels not in classes: {unknown.tolist()!r}")
        idx = np.searchsorted(self.classes_, y)
        self._class_weights_ = self._class_weight_vector(idx)
        return idx

    def _class_weight_vector(self, idx):
        k = len(self.classes_)
        cw = self.class_weight
        if cw is None:
            return np.ones(k, dtype=np.dtype(self.dtype))
        if cw == "balanced":
            counts = np.bincount(idx, minlength=k).astype(np.float64)
            w = np.where(counts > 0, len(idx) / (k * np.maximum(counts, 1)), 1.0)
            return w.astype(np.dtype(self.dtype))
        w = np.ones(k, dtype=np.dtype(self.dtype))
        for label, value in cw.items():
            pos = np.searchsorted(self.classes_, label)
            if pos >= k or self.classes_[pos] != label:
                raise ValueError(f"class_weight has a label {label!r} that is not in the "
                                 f"classes {self.classes_.tolist()!r}")
            w[pos] = value
        return w

    def _n_outputs(self):
        return len(self.classes_)

    def _loss(self, logits, y_idx, sw):
        return softmax_cross_entropy(logits, y_idx, class_weight=self._class_weights_,
                                     sample_weight=sw)

    def _score_raw(self, logits, y_idx):
        return float(np.mean(np.argmax(logits, axis=1) == y_idx))

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over X, y; `classes` (all labels) is required on the first call."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def decision_function(self, X):
        """Logits (n_samples, n_classes); for two classes the margin of class 1 (n_samples,)."""
        logits = self._predict_raw(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        return softmax(self._predict_raw(X).astype(np.float64))

    def predict_log_proba(self, X):
        from .losses import log_softmax
        return log_softmax(self._predict_raw(X).astype(np.float64))

    def predict(self, X):
        """The most probable class of each sample."""
        raw = self._predict_raw(X)
        return self.classes_[np.argmax(raw, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (weighted by sample_weight). Labels in y that the model never
        saw in fit (not in classes_) are an error: they could never be predicted."""
        pred = self.predict(X)
        y = _check_y_classification(y, len(pred))
        try:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
        except TypeError:  # labels of a kind that cannot even be compared with classes_
            unseen = np.unique(np.asarray(y, dtype=object).astype(str))
        if unseen.size:
            raise ValueError(f"y contains {unseen.size} label(s) the model never saw in fit: "
                             f"{unseen[:10].tolist()!r}; expected labels among classes_ = "
                             f"{self.classes_.tolist()!r}")
        sw = _check_sample_weight(sample_weight, len(pred), np.float64)
        return float(np.average(pred == y, weights=sw))

    def _fitted_scalars(self):
        return super()._fitted_scalars()

    def _fitted_arrays(self):
        return {"classes_": self.classes_, "class_weights_": self._class_weights_}


def _check_y_classification(y, n):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        from .exceptions import data_conversion_warning
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                      "change the shape of y to (n_samples,), for example using ravel().",
                      data_conversion_warning(), stacklevel=3)
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,) for a classifier, got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"X and y have inconsistent numbers of samples: {n} and {y.shape[0]}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        if not np.all(y == np.round(y)):
            raise ValueError("Unknown label type: continuous. y of a classifier must hold "
                             "class labels (integers or strings), not continuous values")
    if y.dtype.kind == "O":
        if any(v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))
               for v in y):
            raise ValueError("y contains NaN, infinity or None (a missing label)")
        try:
            y = y.astype(str) if any(isinstance(v, str) for v in y) else y.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"y labels must be sortable numbers or strings: {e}") from e
    if y.dtype.kind == "c":
        raise ValueError("y: complex labels are not supported")
    return y


class _RegressorMixin:
    _is_classifier = False

    def _prepare_targets(self, y, n, incremental, classes, sw):
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            if y.dtype.kind == "O":
                try:
                    y = y.astype(np.float64)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"y must hold numbers: {e}") from e
            else:
                raise ValueError(f"y must hold numbers, got dtype {y.dtype}")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"X and y have inconsistent numbers of samples: {n} and {y.shape[0]}")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        Y = y.reshape(n, -1)
        if Y.shape[1] == 0:
            raise ValueError("y has 0 targets per sample")
        if incremental and hasattr(self, "y_mean_"):
            if Y.shape[1] != self.y_mean_.shape[0]:
                raise ValueError(f"y has {Y.shape[1]} targets, the model was fitted with "
                                 f"{self.y_mean_.shape[0]}")
        else:
            # Targets are standardised internally (weighted by sample_weight, so weights
            # act like repeated samples) so one learning rate fits any scale; predict
            # undoes it.
            self._y_ndim_ = y.ndim
            w = sw.astype(np.float64)
            self.y_mean_ = np.average(Y, axis=0, weights=w)
            std = np.sqrt(np.average((Y - self.y_mean_) ** 2, axis=0, weights=w))
            self.y_scale_ = np.where(std > 1e-12, std, 1.0)
        return ((Y - self.y_mean_) / self.y_scale_).astype(np.dtype(self.dtype))

    def _n_outputs(self):
        return self.y_mean_.shape[0]

    def _loss(self, pred, Y, sw):
        return mean_squared_error(pred, Y, sample_weight=sw)

    def _score_raw(self, pred, Y):
        return _r2(Y.astype(np.float64), pred.astype(np.float64))

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y (continues training when already fitted)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets, (n_samples,) or (n_samples, n_targets) as y was."""
        out = self._predict_raw(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_ndim_ == 1 else out

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 (uniform average over targets)."""
        pred = self.predict(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape[0] != pred.shape[0]:
            raise ValueError(f"X and y have inconsistent numbers of samples: "
                             f"{pred.shape[0]} and {y.shape[0]}")
        sw = None if sample_weight is None else _check_sample_weight(
            sample_weight, len(pred), np.float64)
        return _r2(y.reshape(len(y), -1), pred.reshape(len(y), -1), sw)

    def _fitted_scalars(self):
        return super()._fitted_scalars() + ["_y_ndim_"]

    def _fitted_arrays(self):
        return {"y_mean_": self.y_mean_, "y_scale_": self.y_scale_}


def _r2(Y, P, sw=None):
    w = np.ones(len(Y)) if sw is None else np.asarray(sw, dtype=np.float64)
    mean = np.average(Y, axis=0, weights=w)
    ss_res = (w[:, None] * (Y - P) ** 2).sum(axis=0)
    ss_tot = (w[:, None] * (Y - mean) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                      np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(r2))


# ---------------------------------------------------------------- the six estimators

_CLASSIFIER_DOC = """{cell} sequence classifier.

    Parameters mirror scikit-learn's MLPClassifier where it has one; see the module
    docstring of fastrnn.estimators for the accepted forms of X.
    """


def _classifier_init(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                     nonlinearity="tanh", optimizer="adam", learning_rate=1e-2,
                     weight_decay=0.0, lr_schedule="constant", batch_size=32, max_epochs=100,
                     early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                     tol=1e-4, clip_grad_norm=1.0, class_weight=None, shuffle=True,
                     random_state=None, n_jobs=None, dtype="float32", verbose=0,
                     warm_start=False):
    _RecurrentEstimator.__init__(
        self, hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
        dropout=dropout, nonlinearity=nonlinearity, optimizer=optimizer,
        learning_rate=learning_rate, weight_decay=weight_decay, lr_schedule=lr_schedule,
        batch_size=batch_size, max_epochs=max_epochs, early_stopping=early_stopping,
        validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change, tol=tol,
        clip_grad_norm=clip_grad_norm, shuffle=shuffle, random_state=random_state,
        n_jobs=n_jobs, dtype=dtype, verbose=verbose, warm_start=warm_start)
    self.class_weight = class_weight


class _Classifier(_ClassifierMixin, _RecurrentEstimator):
    __init__ = _classifier_init


class _Regressor(_RegressorMixin, _RecurrentEstimator):
    pass


class LSTMClassifier(_Classifier):
    """LSTM sequence classifier: an LSTM stack, its final hidden state, a softmax head.

    Parameters
    ----------
    hidden_size, num_layers, bidirectional, dropout : the recurrent stack.
    nonlinearity : only used by RNN* estimators ('tanh' or 'relu').
    optimizer : 'adam' (default), 'adamw', 'sgd' or 'rmsprop'; learning_rate, weight_decay.
    lr_schedule : 'constant', 'cosine' (over max_epochs) or 'plateau' (reduce on plateau).
    batch_size, max_epochs, shuffle : mini-batch training.
    early_stopping, validation_fraction, n_iter_no_change, tol : stop when the validation
        score (early_stopping=True; the best weights are restored) or the training loss
        has not improved by tol for n_iter_no_change epochs.
    clip_grad_norm : clip gradients to this global L2 norm (None: no clipping).
    class_weight : None, 'balanced' or {label: weight}.
    random_state : same value, same model, whatever n_jobs.
    n_jobs : threads (None: fastrnn.get_num_threads(); -1: all cores).
    dtype : 'float32' (fast) or 'float64'.
    verbose : 0 silent, 1 a line per epoch, 2 also a progress bar.
    warm_start : continue from the fitted weights in fit.
    """
    _cell = "lstm"


class GRUClassifier(_Classifier):
    """GRU sequence classifier; parameters as LSTMClassifier."""
    _cell = "gru"


class RNNClassifier(_Classifier):
    """Plain (Elman) RNN sequence classifier; parameters as LSTMClassifier, with
    nonlinearity 'tanh' or 'relu'."""
    _cell = "rnn"


class LSTMRegressor(_Regressor):
    """LSTM sequence regressor: an LSTM stack, its final hidden state, a linear head.
    Targets (1-D or 2-D) are standardised internally and restored on predict.
    Parameters as LSTMClassifier (without class_weight)."""
    _cell = "lstm"


class GRURegressor(_Regressor):
    """GRU sequence regressor; parameters as LSTMRegressor."""
    _cell = "gru"


class RNNRegressor(_Regressor):
    """Plain (Elman) RNN sequence regressor; parameters as LSTMRegressor."""
    _cell = "rnn"


_ESTIMATORS = {c.__name__: c for c in (LSTMClassifier, GRUClassifier, RNNClassifier,
                                        LSTMRegressor, GRURegressor, RNNRegressor)}


# ---------------------------------------------------------------- loading

def load(path):
    """Load a model written by ``save``. Only arrays and JSON are read (allow_pickle is
    off), so a file from an untrusted source cannot execute code."""
    from .exceptions import ModelFileError
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ModelFileError(f"{path}: not a readable fastrnn model file ({e})") from e
    except Exception as e:  # zipfile.BadZipFile and friends
        raise ModelFileError(f"{path}: not a readable fastrnn model file ({e})") from e
    try:
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except Exception as e:
        raise ModelFileError(f"{path}: model metadata missing or corrupt ({e})") from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: model metadata is not a JSON object")
    fmt = meta.get("format")
    if fmt != _FORMAT_VERSION:
        newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > _FORMAT_VERSION
        raise ModelFileError(
            f"{path}: model format {fmt!r} is not supported by fastrnn {_version} (format "
            f"{_FORMAT_VERSION})" + (f"; the file was written by a newer fastrnn "
                                     f"({meta.get('fastrnn_version')!r}): upgrade fastrnn "
                                     f"to load it" if newer else ""))
    cls = _ESTIMATORS.get(meta.get("class"))
    if cls is None:
        raise ModelFileError(f"{path}: unknown estimator class {meta.get('class')!r}")
    try:
        params = meta["params"]
        if not isinstance(params, dict):
            raise ModelFileError(f"{path}: model parameters are not a JSON object")
        est = cls(**params)
        est._validate_params()
        _set_fitted_scalars(est, meta["fitted"], path)
        for k in ("classes_", "class_weights_", "y_mean_", "y_scale_"):
            if k in files:
                setattr(est, "_class_weights_" if k == "class_weights_" else k, files.pop(k))
        n_out = _check_fitted_arrays(est, path)
        _check_param_arrays(est, files, n_out, path)
        est._rng_ = _rng(None)
        est._build(est.n_step_features_, n_out, np.random.default_rng(0))
        params = est._params()
        for k, v in params.items():
            arr = files.get("param:" + k)
            if arr is None or arr.shape != v.shape:
                raise ModelFileError(f"{path}: parameter {k} missing or of the wrong shape")
            v[...] = arr
        est._optimizer = make_optimizer(est.optimizer, lr=float(est.learning_rate),
                                        weight_decay=float(est.weight_decay))
        est._scheduler = make_scheduler(
            est.lr_schedule, est._optimizer,
            **({"T_max": int(est.max_epochs)} if est.lr_schedule == "cosine" else {}))
        est._no_improve = 0
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{path}: inconsistent model file ({e})") from e
    return est


_FITTED_KINDS = ("2d", "3d", "ragged")


def _set_fitted_scalars(est, fitted, path):
    """The fitted attributes stored as JSON, checked: only the expected names, of the
    expected kinds (a file cannot set arbitrary attributes)."""
    from .exceptions import ModelFileError
    if not isinstance(fitted, dict):
        raise ModelFileError(f"{path}: fitted attributes are not a JSON object")
    expected = set(est._fitted_scalars())
    if set(fitted) != expected:
        raise ModelFileError(f"{path}: fitted attributes {sorted(fitted)} differ from the "
                             f"expected {sorted(expected)}")
    for k, v in fitted.items():
        if isinstance(v, str) and v in ("inf", "-inf", "nan"):
            v = float(v)
        setattr(est, k, v)
    for k in ("n_features_in_", "n_step_features_", "n_iter_", "t_"):
        v = getattr(est, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if "features" in k else 0):
            raise ModelFileError(f"{path}: fitted attribute {k} = {v!r} is not a valid count")
    if est.n_step_features_ > 1 << 24:
        raise ModelFileError(f"{path}: n_step_features_ = {est.n_step_features_} is too large")
    if est._input_kind_ not in _FITTED_KINDS:
        raise ModelFileError(f"{path}: unknown input kind {est._input_kind_!r}")


def _check_fitted_arrays(est, path):
    """Checks the stored classes / target scaling; returns the number of outputs."""
    from .exceptions import ModelFileError

    def real_1d(name, arr):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "fiu" \
                or not np.isfinite(arr).all():
            raise ModelFileError(f"{path}: {name} must be a finite 1-D numeric array")
        return arr

    if est._is_classifier:
        classes = getattr(est, "classes_", None)
        if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) < 2 \
                or classes.dtype.kind not in "biufUS":
            raise ModelFileError(f"{path}: classes_ must be a 1-D array of at least 2 labels")
        weights = real_1d("class_weights_", getattr(est, "_class_weights_", None))
        if weights.shape != classes.shape or (weights < 0).any():
            raise ModelFileError(f"{path}: class_weights_ must hold one weight >= 0 per class")
        est._class_weights_ = weights.astype(np.dtype(est.dtype))
        return len(classes)
    mean = real_1d("y_mean_", getattr(est, "y_mean_", None))
    scale = real_1d("y_scale_", getattr(est, "y_scale_", None))
    if mean.shape != scale.shape or mean.size < 1 or (scale <= 0).any():
        raise ModelFileError(f"{path}: y_mean_ and y_scale_ must have one entry per target, "
                             f"with y_scale_ > 0")
    if est._y_ndim_ not in (1, 2):
        raise ModelFileError(f"{path}: _y_ndim_ must be 1 or 2, got {est._y_ndim_!r}")
    return mean.shape[0]


def _check_param_arrays(est, files, n_out, path):
    """The weights in the file: finite real arrays, exactly as many numbers as the
    stored sizes imply. Checked before the model is built, so sizes in a corrupt file
    cannot make `load` allocate more than the file itself holds."""
    from .exceptions import ModelFileError
    total = 0
    for k, arr in files.items():
        if not k.startswith("param:"):
            continue
        if arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
            raise ModelFileError(f"{path}: parameter {k[6:]} is not a finite real array")
        total += arr.size
    D = 2 if est.bidirectional else 1
    H = int(est.hidden_size)
    expected = (param_count(est._cell, est.n_step_features_, H, int(est.num_layers), D)
                + (D * H + 1) * n_out)
    if total != expected:
        raise ModelFileError(f"{path}: the file holds {total} weights, its sizes imply "
                             f"{expected}")
