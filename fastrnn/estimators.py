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
import json
import numbers
import sys
import time
import warnings

import numpy as np

from . import __version__ as _version
from .dense import Dense
from .layers import GRU, LSTM, RNN
from .losses import mean_squared_error, softmax, softmax_cross_entropy
from .optim import clip_grad_norm, make_optimizer, make_scheduler
from ._threads import get_num_threads
from . import _core

__all__ = ["LSTMClassifier", "LSTMRegressor", "GRUClassifier", "GRURegressor",
           "RNNClassifier", "RNNRegressor", "load"]

_FORMAT_VERSION = 1
_PREDICT_BATCH = 1024


# ---------------------------------------------------------------- input handling

def _as_float_array(a, name, dtype):
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported")
    if a.dtype.kind in "OUS":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must hold numbers: argument must be a string or a "
                            f"real number ({e})") from e
    elif a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = np.asarray(a, dtype=dtype)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _sequences(X, dtype):
    """(padded (n, T, F) array, lengths (n,), kind) from any accepted form of X.
    kind is '2d', '3d' or 'ragged'."""
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
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(
                self.n_jobs, numbers.Integral) or self.n_jobs == 0 or self.n_jobs < -1):
            raise ValueError(f"n_jobs must be None, -1 or a positive integer, got {self.n_jobs!r}")
        if self.verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        if self._is_classifier:
            self._check_class_weight_param()

    def _n_threads(self):
        if self.n_jobs is None:
            return get_num_threads()
        if self.n_jobs == -1:
            return max(1, _core.max_threads())
        return int(self.n_jobs)

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

    def _snapshot(self):
        return {k: v.copy() for k, v in self._params().items()}

    def _restore(self, snap):
        for k, v in self._params().items():
            v[...] = snap[k]

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
        nt = self._n_threads()
        outs = []
        for start in range(0, Xp.shape[0], _PREDICT_BATCH):
            sl = slice(start, start + _PREDICT_BATCH)
            lb = lengths[sl]
            outs.append(self._forward_batch(Xp[sl, :lb.max()], lb, False, nt))
        return np.concatenate(outs, axis=0)

    # ------------------------------------------------------------ training
    def fit(self, X, y, sample_weight=None):
        """Train on X, y (see the module docstring for the forms of X); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
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
        nt = self._n_threads()
        bs = min(int(self.batch_size), len(tr))
        params = self._params()
        for _ in range(epochs):
            t0 = time.perf_counter()
            last_good = self._snapshot()
            order = self._rng_.permutation(tr) if self.shuffle else tr
            total, wsum = 0.0, 0.0
            n_batches = (len(order) + bs - 1) // bs
            try:
                for bi in range(n_batches):
                    b = order[bi * bs:(bi + 1) * bs]
                    lb = lengths[b]
                    Xb = Xp[b, :lb.max()]
                    with np.errstate(over="ignore", invalid="ignore"):
                        # a diverging fit is reported below, by name and epoch
                        out = self._forward_batch(Xb, lb, True, nt)
                        loss, d_out = self._loss(out, Y[b], sw[b])
                    if not np.isfinite(loss):
                        self._diverged(last_good)
                        return
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
            except KeyboardInterrupt:
                self._restore(last_good)
                warnings.warn(f"fit interrupted during epoch {self.n_iter_ + 1}; the weights "
                              f"of the last completed epoch ({self.n_iter_}) were kept.",
                              RuntimeWarning, stacklevel=3)
                return
            if not all(np.isfinite(v).all() for v in params.values()):
                self._diverged(last_good)
                return
            self.n_iter_ += 1
            epoch_loss = total / wsum if wsum > 0 else 0.0
            self.loss_curve_.append(epoch_loss)
            stop = self._end_of_epoch(Xp, lengths, Y, va, epoch_loss, incremental)
            if self.verbose:
                _report(self, epoch_loss, time.perf_counter() - t0)
            if stop:
                break
        if self.early_stopping and not incremental and getattr(self, "_best_params", None):
            self._restore(self._best_params)

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
                      f"lower learning_rate or clip_grad_norm.", RuntimeWarning, stacklevel=4)

    def _score_arrays(self, Xp, lengths, Y):
        raw = np.concatenate([
            self._forward_batch(Xp[s:s + _PREDICT_BATCH, :lengths[s:s + _PREDICT_BATCH].max()],
                                lengths[s:s + _PREDICT_BATCH], False, self._n_threads())
            for s in range(0, Xp.shape[0], _PREDICT_BATCH)])
        return self._score_raw(raw, Y)

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
        state.pop("_fastrnn_version", None)
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
        if cw is None or cw == "balanced" or isinstance(cw, dict):
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
                             f"the data, but the data contains only one class: "
                             f"{self.classes_[0]!r}")
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
        """Mean accuracy (weighted by sample_weight)."""
        pred = self.predict(X)
        y = _check_y_classification(y, len(pred))
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
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {meta.get('format') if isinstance(meta, dict) else '?'} "
                             f"is not supported by fastrnn {_version} (format {_FORMAT_VERSION})")
    cls = _ESTIMATORS.get(meta.get("class"))
    if cls is None:
        raise ModelFileError(f"{path}: unknown estimator class {meta.get('class')!r}")
    try:
        est = cls(**meta["params"])
        fitted = meta["fitted"]
        for k, v in fitted.items():
            if isinstance(v, str) and v in ("inf", "-inf", "nan"):
                v = float(v)
            setattr(est, k, v)
        for k in ("classes_", "class_weights_", "y_mean_", "y_scale_"):
            if k in files:
                setattr(est, "_class_weights_" if k == "class_weights_" else k, files.pop(k))
        n_out = len(est.classes_) if est._is_classifier else est.y_mean_.shape[0]
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
