"""Argument and parameter checks shared by the layers (fastrnn.layers, fastrnn.dense)."""
import numpy as np

from . import _core


def _check_positive_int(value, name, upper=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be <= {upper}, got {value}")
    return int(value)


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _as_real_array(value, name, dtype=None):
    """`value` as an array of `dtype` (None: its own real dtype, not converted yet),
    refusing complex, object and string data."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be converted to an array: {e}") from e
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr if dtype is None else np.asarray(arr, dtype=dtype)


def all_finite(a):
    """No NaN or infinity in the float array `a`: the core's one pass (no boolean
    temporary) when `a` is C-contiguous float32/float64, else numpy's."""
    if a.flags.c_contiguous and a.dtype in (np.float32, np.float64):
        return _core.all_finite(a)
    return bool(np.isfinite(a).all())


def checked_params(params, shapes, dtype):
    """`params` (a dict of arrays) as C-contiguous arrays of `dtype` (no copy when they
    already are), after checking it holds exactly the names and shapes of `shapes`.
    The common case first: every parameter already is such an ndarray, returned as it
    is (a batch-1 call spent as long in the conversions as in two recurrence steps)."""
    if type(params) is dict:
        out = {}
        for name, shape in shapes.items():
            p = params.get(name)
            if type(p) is not np.ndarray or p.dtype != dtype or p.shape != shape \
                    or not p.flags.c_contiguous:
                break
            out[name] = p
        else:
            return out
    if not isinstance(params, dict):
        raise TypeError("params must be a dict of arrays")
    out = {}
    for name, shape in shapes.items():
        if name not in params:
            raise ValueError(f"params is missing {name!r}")
        p = _as_real_array(params[name], f"params[{name!r}]", dtype)
        if p.shape != shape:
            raise ValueError(f"params[{name!r}] has shape {p.shape}, expected {shape}")
        out[name] = np.ascontiguousarray(p)
    return out
