"""The estimator base: scikit-learn's conventions (without importing scikit-learn), the
hyperparameter checks, what fit learns about the inputs (the vocabulary of token ids, the
scaling of float features), building the model, and fit / predict as calls of the
pieces in _inputs, _network, _training and _persistence.

A public class only sets `_cell` ('lstm', 'gru', 'rnn'), `_per_step` (the head reads
every step instead of the last one) and mixes in a task (_tasks.py).

Conventions: ``__init__`` stores its arguments untouched, fitted attributes end in
``_``, ``fit`` returns ``self``, ``get_params``/``set_params``, ``random_state``,
cloneable and picklable.

The feature-count rule (reconciling scikit-learn with sequences): after fitting on 2-D
X, ``n_features_in_`` is the column count (the number of steps of the univariate series)
and predict demands 2-D float X with that many columns. After fitting on 3-D or ragged
X, ``n_features_in_`` is the per-step feature count and X of any length may be predicted.
With ``n_features`` set, 2-D float X is flat multivariate data (each row n_timesteps *
n_features values, step after step): ``n_features_in_`` is again the column count, and
a model fitted on such X predicts 2-D X of that many columns only.
"""
import contextlib
import numbers
import threading

import numpy as np

from .. import _core
from .._memory import BLAS_INT_MAX, check_memory
from ..layers import _GATES, call_bytes, param_count
from ..optim import make_optimizer, make_scheduler
from .._threads import get_num_threads
from ._inputs import (Sequences, canonical_order, integer_weights, make_rng,
                      read_sample_weight, read_X, row_moments, rows_of, split_rows,
                      virtual_index)
from ._network import SequenceModel
from ._training import TrainingData, train_epochs

__all__ = ["RecurrentEstimator"]

_PREDICT_BATCH = 1024
_PREDICT_MEMORY = 256 << 20   # bytes of layer scratch one predict batch may take
_REPEAT_SCALING = 1 << 16     # input values above which the scaling repeats mean/scale
_MAX_JOBS = 1 << 10
_MAX_VOCAB = 1 << 26

# ---------------------------------------------------------------- threads of concurrent calls
# fit/predict calls running at once in this process (joblib's threading backend, a
# thread pool calling predict, ...). Each call's OpenMP team would otherwise take every
# core, and N concurrent calls would run N x cores threads: the cores are shared
# instead. (Worker processes need nothing: joblib's loky sets OMP_NUM_THREADS in them.)
_active_lock = threading.Lock()
_active_calls = 0


@contextlib.contextmanager
def running():
    global _active_calls
    with _active_lock:
        _active_calls += 1
    try:
        yield
    finally:
        with _active_lock:
            _active_calls -= 1


def _equal(a, b):
    try:
        return bool(a == b)
    except Exception:
        return a is b


class RecurrentEstimator:
    """Everything the estimators share; see the module docstring."""

    _cell = "lstm"           # 'lstm', 'gru' or 'rnn'
    _per_step = False        # head on every step (taggers, sequence regressors)
    _is_classifier = False

    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                 nonlinearity="tanh", embedding_dim=None, vocab_size=None,
                 scale_inputs=True, optimizer="adam", learning_rate=5e-3, weight_decay=0.0,
                 lr_schedule="constant", batch_size=32, max_epochs=100, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=20, tol=1e-4, clip_grad_norm=1.0,
                 shuffle=True, random_state=None, n_jobs=None, dtype="float32", verbose=0,
                 warm_start=False, n_features=None, inference_precision="float32"):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.nonlinearity = nonlinearity
        self.embedding_dim = embedding_dim
        self.vocab_size = vocab_size
        self.scale_inputs = scale_inputs
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
        self.n_features = n_features
        self.inference_precision = inference_precision

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
        return hasattr(self, "model_")

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
        if self._per_step:
            tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    @property
    def _estimator_type(self):
        return "classifier" if self._is_classifier else "regressor"

    # the model's parts, under the names the interop functions know
    rnn_ = property(lambda self: self.model_.rnn, doc="The fitted recurrent stack.")
    head_ = property(lambda self: self.model_.head, doc="The fitted Dense head.")
    embedding_ = property(lambda self: self.model_.embedding,
                          doc="The fitted Embedding, or None for float input.")

    # ------------------------------------------------------------ hyperparameter checks
    def _validate_params(self):
        def pos_int(name, upper, none_ok=False):
            v = getattr(self, name)
            if v is None and none_ok:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an integer{' or None' if none_ok else ''}, "
                                f"got {v!r}")
            if v < 1 or v > upper:
                raise ValueError(f"{name} must lie in [1, {upper}], got {v}")

        pos_int("hidden_size", 1 << 14)
        pos_int("num_layers", 64)
        pos_int("batch_size", 1 << 24)
        pos_int("max_epochs", 1 << 30)
        pos_int("n_iter_no_change", 1 << 30)
        pos_int("embedding_dim", 1 << 14, none_ok=True)
        pos_int("vocab_size", _MAX_VOCAB, none_ok=True)
        if self.vocab_size is not None and self.embedding_dim is None:
            raise ValueError("vocab_size is for token input and needs embedding_dim")
        pos_int("n_features", 1 << 24, none_ok=True)
        if self.n_features is not None and self.embedding_dim is not None:
            raise ValueError("n_features is for float input (flat 2-D X of several features "
                             "per step); with embedding_dim set X holds one token id per "
                             "step: leave n_features at None")

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
        if not isinstance(self.scale_inputs, (bool, np.bool_)):
            raise TypeError(f"scale_inputs must be True or False, got {self.scale_inputs!r}")
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
        self._checked_inference_precision()
        if self._is_classifier:
            self._check_class_weight_param()

    def _checked_inference_precision(self):
        """inference_precision, checked: 'float32' or 'bfloat16' (float32 models only)."""
        p = self.inference_precision
        if not isinstance(p, str) or p not in ("float32", "bfloat16"):
            raise ValueError(f"inference_precision must be 'float32' or 'bfloat16', "
                             f"got {p!r}")
        if p == "bfloat16" and np.dtype(self.dtype) != np.float32:
            raise ValueError(f"inference_precision='bfloat16' needs dtype='float32', got "
                             f"dtype={self.dtype!r}")
        return p

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
        n_emb = 0
        if self.embedding_dim is not None:
            n_emb = (self.vocab_size_ + 1) * int(self.embedding_dim)
            n_inputs = int(self.embedding_dim)
        n_params = (param_count(self._cell, n_inputs, H, L, D) + (D * H + 1) * n_outputs
                    + n_emb)
        # weights, gradients and the epoch snapshot; the optimizer's slots and their
        # snapshot; the best weights (early stopping)
        slots = {"sgd": 0, "rmsprop": 1}.get(self.optimizer.lower(), 2)
        copies = 3 + 2 * slots + bool(self.early_stopping)
        largest = max(G * H * max(n_inputs, D * H, H), n_emb)   # drawn in float64
        rows = bs * steps if self._per_step else bs
        nbytes = (n_params * itemsize * copies + largest * 8
                  + call_bytes(self._cell, n_inputs, H, L, D, bs, steps, itemsize, True,
                               return_sequences=self._per_step)
                  + 3 * rows * (D * H + n_outputs) * itemsize)
        check_memory(nbytes, f"{type(self).__name__}(hidden_size={H}, num_layers={L}, "
                             f"batch_size={self.batch_size}) training on sequences of "
                             f"{steps} steps with {n_inputs} features",
                     "reduce hidden_size, num_layers or batch_size")

    def _predict_batch_size(self, steps):
        """Samples per inference call: at most _PREDICT_BATCH, within 32-bit BLAS sizes
        and with at most _PREDICT_MEMORY of scratch between layers (and of per-step
        outputs)."""
        rnn = self.model_.rnn
        G, H, L, D = _GATES[self._cell], rnn.hidden_size, rnn.num_layers, rnn.num_directions
        by_blas = max(1, BLAS_INT_MAX // (steps * G * H))
        between = steps * D * H * rnn.dtype.itemsize * (min(L - 1, 2) + self._per_step)
        by_memory = max(1, _PREDICT_MEMORY // between) if between else _PREDICT_BATCH
        return max(1, min(_PREDICT_BATCH, by_blas, by_memory))

    # ------------------------------------------------------------ what fit learns of X
    @property
    def _tokens(self):
        return self.embedding_dim is not None

    def _read_X(self, X):
        return read_X(X, np.dtype(self.dtype), tokens=self._tokens,
                      n_features=None if self._tokens else self.n_features)

    def _read_X_fit(self, X):
        seqs = self._read_X(X)
        self._input_kind_ = seqs.kind
        self.n_step_features_ = 1 if seqs.tokens else seqs.values.shape[2]
        # 2-D X: the column count, n_timesteps * n_features with n_features set
        self.n_features_in_ = (seqs.steps * self.n_step_features_ if seqs.kind == "2d"
                               else self.n_step_features_)
        return seqs

    def _read_X_predict(self, X):
        self._check_fitted()
        seqs = self._read_X(X)
        if seqs.tokens:
            return seqs
        name = type(self).__name__
        if self._input_kind_ == "2d" and seqs.kind == "2d":
            columns = seqs.steps * seqs.values.shape[2]
            if columns != self.n_features_in_:
                raise ValueError(f"X has {columns} features, but {name} "
                                 f"is expecting {self.n_features_in_} features as input.")
        elif self._input_kind_ == "2d" and self.n_step_features_ > 1:
            raise ValueError(f"{name} was fitted on 2-D X of {self.n_features_in_} columns "
                             f"(n_features={self.n_step_features_} per step): pass X in that "
                             f"form, 2-D with {self.n_features_in_} columns")
        if seqs.values.shape[2] != self.n_step_features_:
            raise ValueError(f"X has {seqs.values.shape[2]} features per step, but "
                             f"{type(self).__name__} was fitted with "
                             f"{self.n_step_features_} features per step.")
        return seqs

    def _learn_inputs(self, seqs, index, weights):
        """The vocabulary (token input) or the feature scaling (float input), from the
        valid steps of the training sequences `index` (virtual repetitions for integer
        weights), weighted by `weights` (non-integer weights) when given."""
        if seqs.tokens:
            ids = seqs.values[np.arange(seqs.steps) < seqs.lengths[:, None]]
            V = int(self.vocab_size) if self.vocab_size is not None else int(ids.max()) + 1
            if V > _MAX_VOCAB:
                raise ValueError(f"X holds token id {V - 1}; ids above {_MAX_VOCAB - 1} "
                                 f"need an explicit, smaller vocab_size (ids outside the "
                                 f"vocabulary map to the unknown row)")
            self.vocab_size_ = V
            self.known_tokens_ = np.zeros(V, dtype=bool)
            self.known_tokens_[ids[ids < V]] = True
            self.x_mean_ = self.x_scale_ = None
            return
        self.vocab_size_ = self.known_tokens_ = None
        if not self.scale_inputs:
            self.x_mean_ = self.x_scale_ = None
            return
        self.x_mean_, std = row_moments(seqs.step_rows, index, weights)
        self.x_scale_ = np.where(std > 1e-12 * np.maximum(1.0, np.abs(self.x_mean_)), std, 1.0)

    def _transform_inputs(self, seqs):
        """Token ids -> rows of the embedding (unknown ids -> the last row); float
        features -> scaled as learnt in fit."""
        if seqs.tokens:
            V, ids = self.vocab_size_, seqs.values
            inside = ids < V
            known = inside & self.known_tokens_[np.where(inside, ids, 0)]
            seqs.values = np.where(known, ids, V).astype(np.int64)
        elif self.x_mean_ is not None:
            # (values - mean) / scale in the dtype (read_X gave values that dtype), into
            # one new array (values may be the caller's X) instead of two temporaries
            dtype = np.dtype(self.dtype)
            mean, scale = self.x_mean_.astype(dtype), self.x_scale_.astype(dtype)
            if seqs.values.dtype != dtype:
                seqs.values = ((seqs.values - mean) / scale).astype(dtype, copy=False)
                return seqs
            # mean and scale repeated over the steps: the loops run over whole sequences
            # (not worth the two copies for a few sequences; the same values either way)
            if seqs.values.size > _REPEAT_SCALING:
                steps = seqs.values.shape[1:]
                mean = np.broadcast_to(mean, steps).copy()
                scale = np.broadcast_to(scale, steps).copy()
            out = np.empty(seqs.values.shape, dtype=dtype)
            np.subtract(seqs.values, mean, out=out)
            seqs.values = np.divide(out, scale, out=out)
        return seqs

    def _row_weights(self, sw, seqs):
        return np.repeat(sw, seqs.lengths) if self._per_step else sw

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            from ..exceptions import not_fitted_error
            raise not_fitted_error()(f"This {type(self).__name__} instance is not fitted yet. "
                                     f"Call 'fit' with appropriate arguments before using "
                                     f"this estimator.")

    # ------------------------------------------------------------ the network
    def _build(self, n_outputs, rng):
        emb = None
        if self._tokens:
            emb = (self.vocab_size_ + 1, int(self.embedding_dim))
        self.model_ = SequenceModel(
            self._cell, self.n_step_features_, n_outputs, int(self.hidden_size),
            int(self.num_layers), self.bidirectional, self.dropout, self.nonlinearity,
            self.dtype, rng, "every" if self._per_step else "last", embedding=emb)
        if emb is not None:
            # the reserved unknown row starts at zero: an unseen token adds nothing
            self.model_.embedding.params["weight"][self.vocab_size_] = 0

    def _new_optimizer(self):
        self._optimizer = make_optimizer(self.optimizer, lr=float(self.learning_rate),
                                         weight_decay=float(self.weight_decay))
        self._scheduler = make_scheduler(
            self.lr_schedule, self._optimizer,
            **({"T_max": int(self.max_epochs)} if self.lr_schedule == "cosine" else {}))
        self._no_improve = 0

    def _backward_batch(self, d_out, n_threads):
        return self.model_.backward(d_out, n_threads)

    # ------------------------------------------------------------ predict
    def _predict_rows(self, X):
        """Network outputs (rows) for X, in inference mode, and the read X."""
        seqs = self._transform_inputs(self._read_X_predict(X))
        precision = self._checked_inference_precision()
        with running():
            return self._raw_rows(seqs, precision), seqs

    def _raw_rows(self, seqs, precision="float32"):
        step = self._predict_batch_size(seqs.steps)
        full = seqs.kind != "ragged"       # every sequence has all the steps
        nt = self._n_threads()
        outs = []
        for start in range(0, len(seqs), step):
            sl = slice(start, start + step)
            lb = seqs.lengths[sl]
            outs.append(self.model_.forward(seqs.values[sl] if full else
                                            seqs.values[sl, :lb.max()], lb, False, nt,
                                            precision=precision, full=full))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def stream(self, batch_size=1):
        """A stream over this fitted model: ``stream.step(x_t)`` feeds one step of
        `batch_size` sequences and returns that step's outputs (see
        fastrnn.streaming), the recurrent state kept in preallocated buffers."""
        from ..streaming import make_stream
        return make_stream(self, batch_size)

    def _reshape_rows(self, rows, seqs):
        """Rows back into the structure X came in: per sequence (n, ...) as is; per step
        a list of (T_i, ...) arrays for ragged X, else (n, T, ...)."""
        if not self._per_step:
            return rows
        if seqs.kind == "ragged":
            return split_rows(rows, seqs.lengths)
        return rows.reshape((len(seqs), seqs.steps) + rows.shape[1:])

    def _validation_score(self, data, va):
        seqs = data.seqs.subset(va)
        if self._per_step:
            rows = rows_of(data.offsets[va], seqs.lengths)
            return self._score_rows(self._raw_rows(seqs), data.Y[rows],
                                    np.repeat(data.sw[va], seqs.lengths))
        return self._score_rows(self._raw_rows(seqs), data.Y[va], data.sw[va])

    # ------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None):
        """Train on X, y (see the module docstring for the forms of X); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        with running():
            return self._fit_checked(X, y, sample_weight, incremental, classes)

    def _fit_checked(self, X, y, sample_weight, incremental, classes):
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None")
        continuing = hasattr(self, "model_") and (self.warm_start or incremental)
        seqs = self._read_X_predict(X) if continuing else self._read_X_fit(X)
        sw = read_sample_weight(sample_weight, len(seqs), np.float64)
        rows = self._target_rows(y, seqs)
        seqs, rows, sw, order = self._training_set(seqs, rows, sw)
        dtype = np.dtype(self.dtype)
        # `index`: the training sequences in the order fit takes them (the canonical
        # order with shuffle=True, else that of X), as indices into seqs
        if integer_weights(sw):
            # weights as repetitions: sequence i is trained on as sw[i] virtual copies
            index, weights = order[virtual_index(sw[order])], None
            counts = np.bincount(index, minlength=len(seqs)).astype(np.float64)
            row_sw = np.ones(len(seqs), dtype=dtype)
        else:
            # non-integer weights weight the loss (and the statistics learnt from X, y)
            index, weights = order, sw[order]
            counts, row_sw = sw, sw.astype(dtype)
        Y = self._fit_targets(rows, self._row_weights(counts, seqs),
                              self._target_moments(seqs, index, weights), incremental, classes)
        if not continuing:
            self._learn_inputs(seqs, index, weights)
        seqs = self._transform_inputs(seqs)
        if not continuing:
            self._check_sizes(self.n_step_features_, self._n_outputs(), seqs.steps,
                              len(index))
            self._rng_ = make_rng(self.random_state)
            self._build(self._n_outputs(), self._rng_)
            self.n_iter_ = 0
            self.t_ = 0
            self.loss_curve_ = []
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_loss_ = np.inf
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self._new_optimizer()
        elif not incremental:
            # a warm-start fit takes the current optimizer settings, as scikit-learn's
            # MLP does (a new optimizer; the weights carry on)
            self._new_optimizer()
        if not incremental:
            self._no_improve = 0
        tr, va = self._split(index, incremental)
        epochs = 1 if incremental else int(self.max_epochs)
        data = TrainingData(seqs, Y, row_sw, self._per_step)
        train_epochs(self, data, tr, va, epochs, incremental)
        return self

    def _training_set(self, seqs, rows, sw):
        """The sequences fit trains on and their order: those of non-zero weight (a
        weight of 0 is the sample left out: it adds no class, no vocabulary, no
        padding), and with shuffle=True the canonical order of their contents (fit then
        does not depend on the order of the samples in X), else the order of X."""
        if not (sw > 0).all():
            Yrows = rows[0] if isinstance(rows, tuple) else rows
            seqs, Yrows, sw = self._subset(seqs, Yrows, sw, np.flatnonzero(sw > 0))
            rows = (Yrows,) + rows[1:] if isinstance(rows, tuple) else Yrows
        if not self.shuffle:
            return seqs, rows, sw, np.arange(len(seqs), dtype=np.int64)
        Yrows = rows[0] if isinstance(rows, tuple) else rows
        key = (np.unique(Yrows, return_inverse=True)[1].reshape(len(Yrows))
               if self._is_classifier else Yrows)
        return seqs, rows, sw, canonical_order(seqs, key, self._per_step)

    def _subset(self, seqs, Yrows, sw, idx):
        lengths = seqs.lengths[idx]
        values = seqs.values[idx, :int(lengths.max())]
        if self._per_step:
            Yrows = Yrows[rows_of((np.cumsum(seqs.lengths) - seqs.lengths)[idx], lengths)]
        else:
            Yrows = Yrows[idx]
        return (Sequences(np.ascontiguousarray(values), lengths, seqs.kind, seqs.tokens),
                Yrows, sw[idx])

    def _target_moments(self, seqs, index, weights):
        """moments(Y) -> (mean, std) of target rows Y over the training sequences
        `index`, as row_moments computes them (see _learn_inputs)."""
        offsets = np.cumsum(seqs.lengths) - seqs.lengths

        def moments(Y):
            if self._per_step:
                def get(idx):
                    lb = seqs.lengths[idx]
                    return Y[rows_of(offsets[idx], lb)], lb
            else:
                def get(idx):
                    return Y[idx], np.ones(len(idx), dtype=np.int64)
            return row_moments(get, index, weights)
        return moments

    def _split(self, index, incremental):
        """The training and validation sequences (entries of `index`, drawn over its
        entries: over the virtual repetitions for integer weights)."""
        if not self.early_stopping or incremental:
            return index, None
        n = len(index)
        n_val = int(np.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(f"early_stopping needs at least 2 samples to set "
                             f"validation_fraction={self.validation_fraction} of them apart, "
                             f"got {n}")
        perm = self._rng_.permutation(n)
        return index[np.sort(perm[n_val:])], index[np.sort(perm[:n_val])]

    # ------------------------------------------------------------ persistence, pickling
    def save(self, path):
        """Write the fitted model to `path` (.npz with JSON metadata). Loading it with
        fastrnn.load never unpickles or executes anything from the file."""
        from ._persistence import save
        save(self, path)

    def _fitted_scalars(self):
        names = ["n_features_in_", "n_step_features_", "_input_kind_", "n_iter_", "t_",
                 "loss_curve_", "validation_scores_", "best_loss_", "best_validation_score_",
                 "vocab_size_"]
        return names + (["_y_ndim_"] if not self._is_classifier else [])

    def __getstate__(self):
        from .. import __version__
        state = self.__dict__.copy()
        state["_fastrnn_version"] = __version__
        return state

    def __setstate__(self, state):
        import warnings
        from .. import __version__
        pickled = state.pop("_fastrnn_version", None)
        if pickled != __version__:
            warnings.warn(f"this {type(self).__name__} was pickled by fastrnn {pickled} and is "
                          f"unpickled by fastrnn {__version__}: it may not work; save() and "
                          f"fastrnn.load() check the format across versions",
                          UserWarning, stacklevel=2)
        self.__dict__.update(state)
