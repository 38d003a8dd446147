"""Model files: ``est.save(path)`` and ``fastrnn.load(path)``.

A file is an .npz of plain arrays plus one JSON document ("meta"): the class, its
parameters, the fitted scalars. Loading reads arrays and JSON only (allow_pickle is off),
so a file from an untrusted source cannot execute code, and every value is checked
before the model is built from it. Format 2 (fastrnn 0.2) adds per-step estimators,
token input (vocabulary, embedding) and input scaling; format 1 files (fastrnn 0.1)
still load.
"""
import contextlib
import json
import os
import tempfile

import numpy as np

from ..exceptions import ModelFileError
from ..layers import param_count
from ._inputs import make_rng

__all__ = ["save", "load"]

FORMAT_VERSION = 2
_READABLE = (1, 2)
_ARRAYS = ("classes_", "class_weights_", "y_mean_", "y_scale_", "x_mean_", "x_scale_",
           "known_tokens_")


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


def save(est, path):
    """Write `est` to `path` atomically (see _write_atomically), or to an open file."""
    from .. import __version__
    est._check_fitted()
    meta = {"format": FORMAT_VERSION, "fastrnn_version": __version__,
            "class": type(est).__name__, "params": _jsonable(est.get_params()),
            "fitted": {k: _jsonable(getattr(est, k)) for k in est._fitted_scalars()}}
    arrays = {"param:" + k: v for k, v in est.model_.params().items()}
    arrays.update(est._fitted_arrays())
    for k in ("x_mean_", "x_scale_", "known_tokens_"):
        if getattr(est, k, None) is not None:
            arrays[k] = getattr(est, k)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    if hasattr(path, "write"):          # an open file: the caller owns it
        np.savez(path, **arrays)
        return
    _write_atomically(os.fspath(path), lambda f: np.savez(f, **arrays))


def _write_atomically(path, write):
    """Write through a temporary file in the same directory, flushed to disk, then
    renamed over `path`: a reader (or a process killed mid-write) sees the old file or the
    new one, never a mix."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastrnn-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):     # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(path):
    """Load a model written by ``save`` (any fastrnn estimator). Only arrays and JSON
    are read (allow_pickle is off), so a file from an untrusted source cannot execute
    code."""
    from .. import __version__
    from . import ESTIMATORS
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except Exception as e:  # OSError, ValueError, zipfile.BadZipFile and friends
        raise ModelFileError(f"{path}: not a readable fastrnn model file ({e})") from e
    try:
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except Exception as e:
        raise ModelFileError(f"{path}: model metadata missing or corrupt ({e})") from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: model metadata is not a JSON object")
    fmt = meta.get("format")
    if fmt not in _READABLE or isinstance(fmt, bool):
        newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION
        raise ModelFileError(
            f"{path}: model format {fmt!r} is not supported by fastrnn {__version__} (formats "
            f"{', '.join(map(str, _READABLE))})" + (
                f"; the file was written by a newer fastrnn ({meta.get('fastrnn_version')!r}):"
                f" upgrade fastrnn to load it" if newer else ""))
    cls = ESTIMATORS.get(meta.get("class"))
    if cls is None:
        raise ModelFileError(f"{path}: unknown estimator class {meta.get('class')!r}")
    try:
        params = meta["params"]
        if not isinstance(params, dict):
            raise ModelFileError(f"{path}: model parameters are not a JSON object")
        fitted = meta["fitted"]
        if fmt == 1:   # fastrnn 0.1: float input, no scaling, no vocabulary
            params = dict(params, scale_inputs=False)
            fitted = dict(fitted, vocab_size_=None) if isinstance(fitted, dict) else fitted
        est = cls(**params)
        est._validate_params()
        _set_fitted_scalars(est, fitted, path)
        for k in _ARRAYS:
            setattr(est, "_class_weights_" if k == "class_weights_" else k, files.pop(k, None))
        n_out = _check_fitted_arrays(est, path)
        _check_param_arrays(est, files, n_out, path)
        est._rng_ = make_rng(None)
        est._build(n_out, np.random.default_rng(0))
        for k, v in est.model_.params().items():
            arr = files.get("param:" + k)
            if arr is None or arr.shape != v.shape:
                raise ModelFileError(f"{path}: parameter {k} missing or of the wrong shape")
            v[...] = arr
        est._new_optimizer()
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{path}: inconsistent model file ({e})") from e
    return est


_FITTED_KINDS = ("2d", "3d", "ragged")


def _set_fitted_scalars(est, fitted, path):
    """The fitted attributes stored as JSON, checked: only the expected names, of the
    expected kinds (a file cannot set arbitrary attributes)."""
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
    V = est.vocab_size_
    if est._tokens != (V is not None):
        raise ModelFileError(f"{path}: vocab_size_ {V!r} does not match embedding_dim "
                             f"{est.embedding_dim!r}")
    if V is not None and (isinstance(V, bool) or not isinstance(V, int) or not
                          1 <= V <= 1 << 26):
        raise ModelFileError(f"{path}: vocab_size_ = {V!r} is not a valid vocabulary size")


def _check_fitted_arrays(est, path):
    """Checks the stored classes, target and input scaling, vocabulary; returns the
    number of outputs."""
    def real_1d(name, arr):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "fiu" \
                or not np.isfinite(arr).all():
            raise ModelFileError(f"{path}: {name} must be a finite 1-D numeric array")
        return arr

    if est._tokens:
        known = est.known_tokens_
        if not isinstance(known, np.ndarray) or known.dtype != bool \
                or known.shape != (est.vocab_size_,):
            raise ModelFileError(f"{path}: known_tokens_ must be a boolean array of "
                                 f"vocab_size_ entries")
    elif est.x_mean_ is not None or est.x_scale_ is not None:
        mean, scale = real_1d("x_mean_", est.x_mean_), real_1d("x_scale_", est.x_scale_)
        if mean.shape != scale.shape or mean.shape[0] != est.n_step_features_ \
                or (scale <= 0).any():
            raise ModelFileError(f"{path}: x_mean_ and x_scale_ must have one entry per "
                                 f"feature, with x_scale_ > 0")
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
    total = 0
    for k, arr in files.items():
        if not k.startswith("param:"):
            continue
        if arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
            raise ModelFileError(f"{path}: parameter {k[6:]} is not a finite real array")
        total += arr.size
    D = 2 if est.bidirectional else 1
    H = int(est.hidden_size)
    n_in = est.n_step_features_
    emb = 0
    if est._tokens:
        n_in = int(est.embedding_dim)
        emb = (est.vocab_size_ + 1) * n_in
    expected = (param_count(est._cell, n_in, H, int(est.num_layers), D)
                + (D * H + 1) * n_out + emb)
    if total != expected:
        raise ModelFileError(f"{path}: the file holds {total} weights, its sizes imply "
                             f"{expected}")
