"""Exceptions and warnings raised by fastrnn.

scikit-learn is never imported by fastrnn; but when the caller has imported it, the
not-fitted error and the data-conversion warning are raised as scikit-learn's own
classes (subclassed), so its checks and user code catching them recognise them."""
import sys


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before `fit` (a ValueError and an AttributeError, as in
    scikit-learn)."""


class ModelFileError(ValueError):
    """A model file is truncated, corrupt, or from an incompatible version."""


class DataConversionWarning(UserWarning):
    """Input data was converted (for instance a column-vector y raveled)."""


def _sklearn_exceptions():
    return sys.modules.get("sklearn.exceptions") if "sklearn" in sys.modules else None


_cache = {}


def not_fitted_error():
    """The class to raise for use-before-fit."""
    skl = _sklearn_exceptions()
    if skl is None:
        return NotFittedError
    if "nf" not in _cache:
        _cache["nf"] = type("NotFittedError", (NotFittedError, skl.NotFittedError), {})
    return _cache["nf"]


def data_conversion_warning():
    """The class to warn with when input data is converted."""
    skl = _sklearn_exceptions()
    if skl is None:
        return DataConversionWarning
    if "dc" not in _cache:
        _cache["dc"] = type("DataConversionWarning",
                            (DataConversionWarning, skl.DataConversionWarning), {})
    return _cache["dc"]
