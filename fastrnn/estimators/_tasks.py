"""The two tasks, on rows: classification (softmax cross-entropy, accuracy) and regression
(mean squared error on standardised targets, R^2). A row is one sequence (classifiers,
regressors) or one valid step (taggers, sequence regressors); `_reshape_rows` of the base
class turns rows back into the structure X came in."""
import numbers
import warnings

import numpy as np

from ..layers import _resolve_threads
from ..losses import _softmax_xent_rows, log_softmax, mean_squared_error, softmax
from ._inputs import read_sample_weight, read_step_targets

__all__ = ["ClassificationTask", "RegressionTask"]


def _check_labels(y, name="y"):
    """Class labels (numbers or strings) as a 1-D array, refusing continuous values and
    missing labels."""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if not np.all(y == np.round(y)):
            raise ValueError(f"Unknown label type: continuous. {name} of a classifier must "
                             f"hold class labels (integers or strings), not continuous values")
    if y.dtype.kind == "O":
        if any(v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))
               for v in y):
            raise ValueError(f"{name} contains NaN, infinity or None (a missing label)")
        try:
            y = y.astype(str) if any(isinstance(v, str) for v in y) else y.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} labels must be sortable numbers or strings: {e}") from e
    if y.dtype.kind == "c":
        raise ValueError(f"{name}: complex labels are not supported")
    return y


class ClassificationTask:
    """Mixin: labels, class weights, cross-entropy, accuracy, probabilities."""
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

    def _target_rows(self, y, X):
        """y as rows of labels (one per sequence, or one per valid step: X of equal
        lengths when it is an array, so its y rows are all valid)."""
        if self._per_step:
            rows, ndim = read_step_targets(y, X)
            if ndim != 1:
                raise ValueError(f"{type(self).__name__} takes one label per step: y[i] "
                                 f"must be 1-D, got {ndim}-D per-step targets")
            return _check_labels(np.asarray(rows))
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            from ..exceptions import data_conversion_warning
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples,), for example using ravel().",
                          data_conversion_warning(), stacklevel=4)
            y = y.ravel()
        if y.ndim != 1:
            hint = (" (one label per step? use a Tagger)" if y.ndim == 2 else "")
            raise ValueError(f"y must be 1-D (n_samples,) for a classifier, got shape "
                             f"{y.shape}{hint}")
        if y.shape[0] != len(X):
            raise ValueError(f"X and y have inconsistent numbers of samples: {len(X)} and "
                             f"{y.shape[0]}")
        return _check_labels(y)

    def _prepare_targets(self, y, X, sw_rows, incremental, classes):
        """Target rows of y (class indices), learning the classes unless fitted."""
        return self._fit_targets(self._target_rows(y, X), np.asarray(sw_rows, np.float64),
                                 None, incremental, classes)

    def _fit_targets(self, y, row_counts, moments, incremental, classes):
        """Class indices of the label rows y; learns classes_ and the class weights
        unless continuing. row_counts: how often each row counts (its sequence's
        multiplicity among the virtual samples, or its weight), for 'balanced'."""
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
        if not (incremental and hasattr(self, "_class_weights_")):
            self._class_weights_ = self._class_weight_vector(idx, row_counts)
        return idx.astype(np.int32)

    def _class_weight_vector(self, idx, row_counts):
        k = len(self.classes_)
        cw = self.class_weight
        dtype = np.dtype(self.dtype)
        if cw is None:
            return np.ones(k, dtype=dtype)
        if isinstance(cw, str) and cw == "balanced":
            # rows counted as often as they are trained on (integer weights: exact
            # counts of the virtual samples, as if repeated)
            counts = np.bincount(idx, weights=row_counts, minlength=k)
            w = np.where(counts > 0, counts.sum() / (k * np.where(counts > 0, counts, 1)),
                         1.0)
            return w.astype(dtype)
        w = np.ones(k, dtype=dtype)
        for label, value in cw.items():
            pos = np.searchsorted(self.classes_, label)
            if pos >= k or self.classes_[pos] != label:
                raise ValueError(f"class_weight has a label {label!r} that is not in the "
                                 f"classes {self.classes_.tolist()!r}")
            w[pos] = value
        return w

    def _n_outputs(self):
        return len(self.classes_)

    def _loss(self, logits, y_idx, w_rows, n_threads):
        # labels and weights were checked once, when fit read them
        z = logits if logits.flags.c_contiguous else np.ascontiguousarray(logits)
        w = (w_rows * self._class_weights_[y_idx]).astype(z.dtype, copy=False)
        return _softmax_xent_rows(z, y_idx.astype(np.int32), w, _resolve_threads(n_threads))

    def _score_rows(self, logits, y_idx, w_rows=None):
        return float(np.average(np.argmax(logits, axis=1) == y_idx, weights=w_rows))

    # ------------------------------------------------------------ public
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over X, y; `classes` (all labels) is required on the first call."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def decision_function(self, X):
        """Logits: (n_samples, n_classes), or per step (n, T, n_classes) / a list of
        (T_i, n_classes); for two classes the margin of class 1, without the last axis."""
        logits, seqs = self._predict_rows(X)
        if logits.shape[1] == 2:
            logits = logits[:, 1] - logits[:, 0]
        return self._reshape_rows(logits, seqs)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of classes_: (n_samples, n_classes),
        or per step (n, T, n_classes) / a list of (T_i, n_classes) arrays."""
        logits, seqs = self._predict_rows(X)
        return self._reshape_rows(softmax(logits.astype(np.float64)), seqs)

    def predict_log_proba(self, X):
        """Logarithm of predict_proba, computed stably."""
        logits, seqs = self._predict_rows(X)
        return self._reshape_rows(log_softmax(logits.astype(np.float64)), seqs)

    def predict(self, X):
        """The most probable class: (n_samples,), or per step (n, T) / a list of (T_i,)."""
        logits, seqs = self._predict_rows(X)
        return self._reshape_rows(self.classes_[np.argmax(logits, axis=1)], seqs)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy over sequences (or over every valid step of every sequence),
        weighted by sample_weight (one weight per sequence). Labels in y that the model
        never saw in fit are an error: they could never be predicted."""
        logits, seqs = self._predict_rows(X)
        pred = self.classes_[np.argmax(logits, axis=1)]
        y = self._target_rows(y, seqs)
        try:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
        except TypeError:  # labels of a kind that cannot even be compared with classes_
            unseen = np.unique(np.asarray(y, dtype=object).astype(str))
        if unseen.size:
            raise ValueError(f"y contains {unseen.size} label(s) the model never saw in fit: "
                             f"{unseen[:10].tolist()!r}; expected labels among classes_ = "
                             f"{self.classes_.tolist()!r}")
        sw = self._row_weights(read_sample_weight(sample_weight, len(seqs), np.float64), seqs)
        return float(np.average(pred == y, weights=sw))

    def _fitted_arrays(self):
        return {"classes_": self.classes_, "class_weights_": self._class_weights_}


class RegressionTask:
    """Mixin: targets standardised internally (over the rows as trained on: integer
    weights act as repetitions; predict undoes it), mean squared error, R^2."""
    _is_classifier = False

    def _target_rows(self, y, X):
        if self._per_step:
            rows, ndim = read_step_targets(y, X)
        else:
            rows = np.asarray(y)
            ndim = rows.ndim
            if ndim not in (1, 2):
                hint = " (a value per step? use a SequenceRegressor)" if ndim == 3 else ""
                raise ValueError(f"y must be 1-D or 2-D, got shape {rows.shape}{hint}")
            if rows.shape[0] != len(X):
                raise ValueError(f"X and y have inconsistent numbers of samples: {len(X)} "
                                 f"and {rows.shape[0]}")
        rows = np.asarray(rows)
        if rows.dtype.kind == "O":
            try:
                rows = rows.astype(np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f"y must hold numbers: {e}") from e
        elif rows.dtype.kind not in "fiub":
            raise ValueError(f"y must hold numbers, got dtype {rows.dtype}")
        rows = rows.astype(np.float64)
        if not np.isfinite(rows).all():
            raise ValueError("y contains NaN or infinity")
        Y = rows.reshape(len(rows), -1)
        if Y.shape[1] == 0:
            raise ValueError("y has 0 targets per sample")
        return Y, ndim

    def _prepare_targets(self, y, X, sw_rows, incremental, classes):
        """Standardised target rows of y (learning the scaling unless fitted)."""
        w = np.asarray(sw_rows, np.float64)

        def moments(Y):
            mean = np.average(Y, axis=0, weights=w)
            return mean, np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
        return self._fit_targets(self._target_rows(y, X), w, moments, incremental, classes)

    def _fit_targets(self, rows, row_counts, moments, incremental, classes):
        """Standardised target rows; learns y_mean_ / y_scale_ unless continuing, with
        `moments(Y)` -> (mean, std) over the rows as fit trains on them (integer weights:
        the virtual repetitions, bitwise as if repeated; else weighted)."""
        Y, ndim = rows
        if incremental and hasattr(self, "y_mean_"):
            if Y.shape[1] != self.y_mean_.shape[0]:
                raise ValueError(f"y has {Y.shape[1]} targets, the model was fitted with "
                                 f"{self.y_mean_.shape[0]}")
        else:
            # standardised so one learning rate fits any scale
            self._y_ndim_ = ndim
            self.y_mean_, std = moments(Y)
            self.y_scale_ = np.where(std > 1e-12, std, 1.0)
        return ((Y - self.y_mean_) / self.y_scale_).astype(np.dtype(self.dtype))

    def _n_outputs(self):
        return self.y_mean_.shape[0]

    def _loss(self, pred, Y, w_rows, n_threads):
        return mean_squared_error(pred, Y, sample_weight=w_rows)

    def _score_rows(self, pred, Y, w_rows=None):
        return _r2(Y.astype(np.float64), pred.astype(np.float64), w_rows)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y (continues training when already fitted)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _unscaled(self, rows):
        out = rows.astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_ndim_ == 1 else out

    def predict(self, X):
        """Predicted targets, shaped as y was: (n_samples[, n_targets]), or per step
        (n, T[, n_targets]) / a list of (T_i[, n_targets]) arrays."""
        rows, seqs = self._predict_rows(X)
        return self._reshape_rows(self._unscaled(rows), seqs)

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 over sequences (or over every valid step),
        uniform average over targets, weighted by sample_weight (one per sequence)."""
        rows, seqs = self._predict_rows(X)
        Y, _ = self._target_rows(y, seqs)
        pred = self._unscaled(rows).reshape(len(rows), -1)
        if Y.shape[1] != pred.shape[1]:
            raise ValueError(f"y has {Y.shape[1]} targets, the model predicts {pred.shape[1]}")
        sw = None if sample_weight is None else self._row_weights(
            read_sample_weight(sample_weight, len(seqs), np.float64), seqs)
        return _r2(Y, pred, sw)

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
