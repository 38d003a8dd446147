"""Robustness: bad input gets a clear error, sizes that cannot work are refused before
anything is allocated, faults during training leave a usable model, model files are
read safely, and concurrent use (threads, forked and spawned processes, joblib) gives
the single-threaded results without deadlock or oversubscription.

Fast by design (well under 90 s on 2 busy cores): tiny models everywhere except the
timing and GIL tests, which need calls long enough to measure."""
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn
from fastrnn import (GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                     RNNClassifier, RNNRegressor)
from fastrnn import _core, _memory, estimators, layers
from fastrnn.exceptions import ModelFileError
from fastrnn.layers import GRU, LSTM, RNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import reference_backward, reference_forward  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import (HealthCheck, event, example, given, settings,  # noqa: E402
                        strategies as st)

ERR = (ValueError, TypeError)
CLASSIFIERS = [LSTMClassifier, GRUClassifier, RNNClassifier]
REGRESSORS = [LSTMRegressor, GRURegressor, RNNRegressor]


def data(n=20, T=6, F=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    y[:2] = [0, 1]
    return X, y


def tiny(cls=LSTMClassifier, **kw):
    args = dict(hidden_size=4, max_epochs=1, random_state=0)
    args.update(kw)
    return cls(**args)


X0, Y0 = data()
FITTED = tiny(max_epochs=2).fit(X0, Y0)
FITTED_2D = tiny(GRURegressor).fit(X0[:, :, 0], X0[:, :, 0].sum(1))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ================================================================ bad input, one by one
# (id, call, exception type, regex the message must match: it names the argument and
# says what was expected). The report's table is generated from this list.

def _layer(cls=LSTM, **kw):
    return cls(3, 4, **kw)


BAD_INPUTS = [
    # ---- estimators: X
    ("est X 1-D", lambda: tiny().fit(X0[0, 0], Y0[:3]), ValueError, "Expected 2D array"),
    ("est X 4-D", lambda: tiny().fit(X0[..., None], Y0), ValueError, "X must be 2-D or 3-D"),
    ("est X scalar", lambda: tiny().fit(3.0, Y0), ValueError, "got scalar array"),
    ("est predict wrong features/step (3-D)", lambda: FITTED.predict(X0[:, :, :2]),
     ValueError, "X has 2 features per step.*fitted with 3"),
    ("est predict wrong column count (2-D)", lambda: FITTED_2D.predict(X0[:, :5, 0]),
     ValueError, "X has 5 features, but GRURegressor is expecting 6"),
    ("est predict 2-D X on a 3-features model", lambda: FITTED.predict(X0[:, :, 0]),
     ValueError, "features per step"),
    ("est X zero samples", lambda: tiny().fit(X0[:0], Y0[:0]), ValueError, "0 samples"),
    ("est predict zero samples", lambda: FITTED.predict(X0[:0]), ValueError, "0 samples"),
    ("est X empty list", lambda: tiny().fit([], []), ValueError, "0 samples"),
    ("est X zero steps", lambda: tiny().fit(X0[:, :0], Y0), ValueError, "0 steps"),
    ("est X zero features", lambda: tiny().fit(X0[:, :, :0], Y0), ValueError,
     "0 features"),
    ("est ragged X with a 0-step sequence", lambda: tiny().fit([X0[0], X0[1][:0]], Y0[:2]),
     ValueError, r"X\[1\] is an empty sequence"),
    ("est predict ragged with a 0-step sequence",
     lambda: FITTED.predict([X0[0], X0[1][:0]]), ValueError, r"X\[1\] is an empty"),
    ("est ragged X, features differ", lambda: tiny().fit([X0[0], X0[1][:4, :2]], Y0[:2]),
     ValueError, "same number of features"),
    ("est ragged X, a 3-D element", lambda: tiny().fit([X0[0], X0[:2]], Y0[:2]),
     ValueError, r"X\[1\] must be 2-D"),
    ("est X NaN", lambda: tiny().fit(np.where(X0 > 1, np.nan, X0), Y0), ValueError,
     "X contains NaN or infinity"),
    ("est X inf", lambda: tiny().fit(np.where(X0 > 1, np.inf, X0), Y0), ValueError,
     "X contains NaN or infinity"),
    ("est predict X NaN", lambda: FITTED.predict(np.where(X0 > 1, np.nan, X0)), ValueError,
     "X contains NaN"),
    ("est ragged X NaN", lambda: tiny().fit([X0[0], np.full((2, 3), np.nan)], Y0[:2]),
     ValueError, r"X\[1\] contains NaN"),
    ("est X too large for float32", lambda: tiny().fit(np.full((20, 6, 3), 1e39), Y0),
     ValueError, "too large for float32"),
    ("est X complex", lambda: tiny().fit(X0.astype(complex), Y0), ValueError,
     "Complex data not supported"),
    ("est X strings", lambda: tiny().fit(X0.astype(str), Y0), TypeError,
     "X must hold numbers, got strings"),
    ("est X object (non-numeric)", lambda: tiny().fit(np.full((20, 6), "a", dtype=object), Y0),
     TypeError, "X must hold numbers"),
    ("est X object holding a dict",
     lambda: tiny().fit(np.array([[{"a": 1}] * 6] * 20, dtype=object), Y0), TypeError,
     "X must hold numbers"),
    ("est X sparse", lambda: tiny().fit(__import__("scipy.sparse").sparse.csr_matrix(
        X0[:, :, 0]), Y0), TypeError, "sparse input is not supported"),
    # ---- estimators: y
    ("est y NaN (classifier)", lambda: tiny().fit(X0, np.where(Y0 > 0, np.nan, 0.0)),
     ValueError, "y contains NaN or infinity"),
    ("est y NaN (regressor)", lambda: tiny(LSTMRegressor).fit(X0, np.where(Y0 > 0, np.nan, 0.)),
     ValueError, "y contains NaN or infinity"),
    ("est y inf (regressor)", lambda: tiny(GRURegressor).fit(X0, np.where(Y0 > 0, np.inf, 0.)),
     ValueError, "y contains NaN or infinity"),
    ("est y continuous (classifier)", lambda: tiny().fit(X0, X0[:, 0, 0]), ValueError,
     "Unknown label type: continuous"),
    ("est y strings (regressor)", lambda: tiny(LSTMRegressor).fit(X0, Y0.astype(str)),
     ValueError, "y must hold numbers"),
    ("est y complex (classifier)", lambda: tiny().fit(X0, Y0.astype(complex)), ValueError,
     "complex labels"),
    ("est y 2-D (classifier)", lambda: tiny().fit(X0, np.stack([Y0, Y0], 1)), ValueError,
     r"y must be 1-D"),
    ("est y None", lambda: tiny().fit(X0, None), ValueError, "requires y"),
    ("est y labels with a missing (None) label",
     lambda: tiny().fit(X0, np.array(["a", "b"] * 9 + ["a", None], dtype=object)), ValueError,
     "y contains NaN, infinity or None"),
    ("est y single class", lambda: tiny().fit(X0, np.zeros(20, int)), ValueError,
     "at least 2 classes"),
    ("est X/y lengths differ", lambda: tiny().fit(X0, Y0[:-1]), ValueError,
     "inconsistent numbers of samples: 20 and 19"),
    ("est X/y lengths differ (regressor)", lambda: tiny(RNNRegressor).fit(X0, Y0[:-2]),
     ValueError, "inconsistent numbers of samples"),
    ("est score: labels never seen in fit", lambda: FITTED.score(X0, np.full(20, 7)),
     ValueError, r"never saw in fit: \[7\].*classes_ = \[0, 1\]"),
    ("est score: string labels on int classes", lambda: FITTED.score(X0, np.array(["a"] * 20)),
     ValueError, "never saw in fit"),
    ("est score: X/y lengths differ", lambda: FITTED.score(X0, Y0[:5]), ValueError,
     "inconsistent numbers of samples"),
    ("est partial_fit: label outside classes",
     lambda: tiny().partial_fit(X0, np.full(20, 5), classes=[0, 1]), ValueError,
     "not in classes"),
    # ---- estimators: sample_weight
    ("est sample_weight wrong length", lambda: tiny().fit(X0, Y0, sample_weight=np.ones(3)),
     ValueError, r"sample_weight.shape == \(3,\), expected \(20,\)"),
    ("est sample_weight 2-D", lambda: tiny().fit(X0, Y0, sample_weight=np.ones((20, 1))),
     ValueError, r"sample_weight.shape == \(20, 1\)"),
    ("est sample_weight negative", lambda: tiny().fit(X0, Y0, sample_weight=-np.ones(20)),
     ValueError, "Negative values in data passed to sample_weight"),
    ("est sample_weight NaN", lambda: tiny().fit(X0, Y0, sample_weight=np.full(20, np.nan)),
     ValueError, "sample_weight contains NaN"),
    ("est sample_weight all zero", lambda: tiny().fit(X0, Y0, sample_weight=np.zeros(20)),
     ValueError, "at least one non-zero"),
    ("est sample_weight strings", lambda: tiny().fit(X0, Y0, sample_weight=["a"] * 20),
     TypeError, "sample_weight must be numeric"),
    ("est integer sample_weight summing to over 2**28 copies",
     lambda: tiny().fit(X0, Y0, sample_weight=np.full(20, 2 ** 24)), ValueError,
     r"integer sample_weight acts as repetitions.*sum to 335544320 virtual samples"),
    # ---- estimators: hyperparameters
    ("est hidden_size=0", lambda: tiny(hidden_size=0).fit(X0, Y0), ValueError,
     r"hidden_size must lie in \[1, 16384\], got 0"),
    ("est hidden_size=-3", lambda: tiny(hidden_size=-3).fit(X0, Y0), ValueError,
     "hidden_size must lie in"),
    ("est hidden_size=10**9", lambda: tiny(hidden_size=10 ** 9).fit(X0, Y0), ValueError,
     "hidden_size must lie in"),
    ("est hidden_size=2.5", lambda: tiny(hidden_size=2.5).fit(X0, Y0), TypeError,
     "hidden_size must be an integer"),
    ("est hidden_size='8'", lambda: tiny(hidden_size="8").fit(X0, Y0), TypeError,
     "hidden_size must be an integer"),
    ("est num_layers=0", lambda: tiny(num_layers=0).fit(X0, Y0), ValueError,
     r"num_layers must lie in \[1, 64\]"),
    ("est num_layers=10**6", lambda: tiny(num_layers=10 ** 6).fit(X0, Y0), ValueError,
     "num_layers must lie in"),
    ("est batch_size=0", lambda: tiny(batch_size=0).fit(X0, Y0), ValueError,
     "batch_size must lie in"),
    ("est batch_size=10**12", lambda: tiny(batch_size=10 ** 12).fit(X0, Y0), ValueError,
     "batch_size must lie in"),
    ("est hidden_size=16384, num_layers=64 (terabytes)",
     lambda: tiny(hidden_size=16384, num_layers=64).fit(X0, Y0), MemoryError,
     r"LSTMClassifier\(hidden_size=16384, num_layers=64.*needs .* but only .* available"),
    ("est steps*gates*hidden_size >= 2**31",
     lambda: tiny(hidden_size=16384).fit(np.zeros((2, 40000, 1), np.float32), [0, 1]),
     ValueError, r"steps \* gates \* hidden_size = 2621440000 exceeds 2\*\*31 - 1"),
    ("est batch*steps*gates*hidden >= 2**31",
     lambda: tiny(hidden_size=4096, batch_size=512).fit(
         np.broadcast_to(np.float32(0), (1024, 1000, 1)), np.arange(1024) % 2),
     ValueError, r"batch_size=512 .*exceeds 2\*\*31 - 1.*use batch_size <= 131"),
    ("est optimizer='adagrad'", lambda: tiny(optimizer="adagrad").fit(X0, Y0), ValueError,
     "optimizer must be one of 'sgd', 'adam', 'adamw', 'rmsprop', got 'adagrad'"),
    ("est optimizer=None", lambda: tiny(optimizer=None).fit(X0, Y0), ValueError,
     "optimizer must be one of"),
    ("est lr_schedule='step'", lambda: tiny(lr_schedule="step").fit(X0, Y0), ValueError,
     "lr_schedule must be"),
    ("est learning_rate=0", lambda: tiny(learning_rate=0.0).fit(X0, Y0), ValueError,
     "learning_rate must lie in"),
    ("est learning_rate=nan", lambda: tiny(learning_rate=float("nan")).fit(X0, Y0), TypeError,
     "learning_rate must be a finite real number"),
    ("est dropout=1", lambda: tiny(dropout=1.0).fit(X0, Y0), ValueError, "dropout must lie in"),
    ("est nonlinearity='sigmoid'", lambda: tiny(RNNClassifier, nonlinearity="sigmoid").fit(
        X0, Y0), ValueError, "nonlinearity must be 'tanh' or 'relu'"),
    ("est dtype='float16'", lambda: tiny(dtype="float16").fit(X0, Y0), ValueError,
     "dtype must be 'float32' or 'float64'"),
    ("est dtype='nonsense'", lambda: tiny(dtype="nonsense").fit(X0, Y0), ValueError,
     "dtype must be 'float32' or 'float64'"),
    ("est n_jobs=0", lambda: tiny(n_jobs=0).fit(X0, Y0), ValueError, "n_jobs must be None"),
    ("est n_jobs=10**9", lambda: tiny(n_jobs=10 ** 9).fit(X0, Y0), ValueError,
     r"n_jobs must be None, -1 or an integer in \[1, 1024\]"),
    ("est class_weight={0: -1}", lambda: tiny(class_weight={0: -1.0}).fit(X0, Y0), ValueError,
     r"class_weight\[0\] must be a finite number >= 0"),
    ("est class_weight={0: 'x'}", lambda: tiny(class_weight={0: "x"}).fit(X0, Y0), ValueError,
     r"class_weight\[0\] must be a finite number"),
    ("est class_weight='weird'", lambda: tiny(class_weight="weird").fit(X0, Y0), ValueError,
     "class_weight must be None, 'balanced' or a dict"),
    ("est random_state='x'", lambda: tiny(random_state="x").fit(X0, Y0), ValueError,
     "random_state must be"),
    ("est early_stopping with 1 sample",
     lambda: tiny(LSTMRegressor, early_stopping=True).fit(X0[:1], [1.0]), ValueError,
     "early_stopping needs at least 2 samples"),
    ("est predict before fit", lambda: tiny().predict(X0), ValueError, "not fitted yet"),
    # ---- layers
    ("layer X 2-D", lambda: _layer().forward(X0[0]), ValueError, r"X must be 3-D"),
    ("layer X 4-D", lambda: _layer().forward(X0[None]), ValueError, "X must be 3-D"),
    ("layer X wrong features", lambda: _layer().forward(X0[:, :, :2]), ValueError,
     "X has 2 features per step, the layer expects input_size=3"),
    ("layer X zero samples", lambda: _layer().forward(X0[:0]), ValueError,
     "at least one sample and one step"),
    ("layer X zero steps", lambda: _layer().forward(X0[:, :0]), ValueError,
     "at least one sample and one step"),
    ("layer X NaN", lambda: _layer().forward(np.where(X0 > 1, np.nan, X0)), ValueError,
     "X contains NaN or infinity"),
    ("layer X inf", lambda: _layer(GRU).forward(np.where(X0 > 1, -np.inf, X0)), ValueError,
     "X contains NaN or infinity"),
    ("layer X complex", lambda: _layer().forward(X0.astype(complex)), TypeError,
     "X must hold real numbers, got dtype complex128"),
    ("layer X object", lambda: _layer().forward(X0.astype(object)), TypeError,
     "X must hold real numbers, got dtype object"),
    ("layer X strings", lambda: _layer().forward(X0.astype(str)), TypeError,
     "X must hold real numbers"),
    ("layer lengths > steps", lambda: _layer().forward(X0, lengths=np.full(20, 7)), ValueError,
     r"lengths must lie in \[1, 6\] \(the number of steps\), got min 7, max 7"),
    ("layer lengths negative", lambda: _layer().forward(X0, lengths=np.full(20, -1)),
     ValueError, r"lengths must lie in \[1, 6\]"),
    ("layer lengths zero", lambda: _layer(RNN).forward(X0, lengths=np.zeros(20, int)),
     ValueError, r"lengths must lie in \[1, 6\]"),
    ("layer lengths wrong count", lambda: _layer().forward(X0, lengths=[6, 6]), ValueError,
     r"lengths must have shape \(20,\)"),
    ("layer lengths fractional", lambda: _layer().forward(X0, lengths=np.full(20, 2.5)),
     TypeError, "lengths must be integers"),
    ("layer h0 wrong shape", lambda: _layer().forward(X0, h0=np.zeros((1, 3, 4))), ValueError,
     r"h0 must have shape \(1, 20, 4\)"),
    ("layer h0 NaN", lambda: _layer(GRU).forward(X0, h0=np.full((1, 20, 4), np.nan)),
     ValueError, "h0 contains NaN"),
    ("layer c0 for GRU", lambda: _layer(GRU).forward(X0, c0=np.zeros((1, 20, 4))), ValueError,
     "c0 is only for LSTM"),
    ("layer backward before training forward", lambda: _layer().backward(np.zeros((20, 6, 4))),
     ValueError, r"backward\(\) needs a preceding forward"),
    ("layer n_threads=0", lambda: _layer().forward(X0, n_threads=0), ValueError,
     r"n_threads must lie in \[1, 1024\]"),
    ("layer n_threads=2**40", lambda: _layer().forward(X0, n_threads=2 ** 40), ValueError,
     r"n_threads must lie in \[1, 1024\]"),
    ("layer hidden_size=0", lambda: LSTM(3, 0), ValueError, "hidden_size must be >= 1"),
    ("layer hidden_size=2**17", lambda: LSTM(3, 1 << 17), ValueError,
     "hidden_size must be <= 65536"),
    ("layer input_size=-1", lambda: GRU(-1, 4), ValueError, "input_size must be >= 1"),
    ("layer num_layers=0", lambda: RNN(3, 4, num_layers=0), ValueError,
     "num_layers must be >= 1"),
    ("layer hidden_size=65536, num_layers=1024 (petabytes)",
     lambda: LSTM(3, 1 << 16, num_layers=1 << 10), MemoryError,
     r"LSTM\(input_size=3, hidden_size=65536, num_layers=1024.*parameters needs .* only"),
    ("layer dtype=int32", lambda: LSTM(3, 4, dtype=np.int32), TypeError,
     "dtype must be float32 or float64"),
    ("layer steps*gates*hidden >= 2**31",
     lambda: LSTM(1, 1024).forward(np.broadcast_to(np.float32(0), (1, 600000, 1))),
     ValueError, r"X has 600000 steps: steps \* gates \* hidden_size .* exceeds 2\*\*31 - 1"),
    ("layer training batch*steps*gates*hidden >= 2**31",
     lambda: GRU(1, 512).forward(np.broadcast_to(np.float32(0), (2000, 1000, 1)),
                                 training=True),
     ValueError, r"X holds 2000 sequences of 1000 steps.*at most 1398 sequences"),
    ("layer inference needing more memory than exists",
     lambda: LSTM(1, 4).forward(np.broadcast_to(np.float32(0), (1 << 24, 1 << 16, 1))),
     MemoryError, r"LSTM.forward\(training=False\) on 16777216 sequences .* needs .* only"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(name, call, exc, match):
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match):
            call()
    # refused up front: no allocation, no work
    assert time.perf_counter() - t0 < 10
    assert rss_bytes() - rss0 < 200 << 20


def test_memory_refusal_is_deterministic(monkeypatch):
    """With little memory available, a model that would not fit is refused with a
    MemoryError before its parameters exist; small models are unaffected."""
    monkeypatch.setattr(_memory, "available_bytes", lambda: 100 << 20)
    with pytest.raises(MemoryError, match="hidden_size=2048.*needs .* but only 100.0 MiB"):
        LSTM(8, 2048)
    with pytest.raises(MemoryError, match=r"LSTMRegressor\(hidden_size=2048"):
        LSTMRegressor(hidden_size=2048, max_epochs=1).fit(X0, Y0)
    with pytest.raises(MemoryError, match="forward"):
        GRU(3, 64).forward(np.zeros((4096, 200, 3), np.float32), training=True)
    LSTMClassifier(hidden_size=8, max_epochs=1).fit(X0, Y0).predict(X0)


# ================================================================ accepted, and correct

def _layouts(X):
    big = np.zeros((X.shape[0], 2 * X.shape[1], 3 * X.shape[2]), X.dtype)
    big[:, ::2, ::3] = X
    ro = X.copy()
    ro.setflags(write=False)
    return {"fortran": np.asfortranarray(X), "strided": big[:, ::2, ::3], "readonly": ro,
            "transposed": np.ascontiguousarray(X.transpose(2, 1, 0)).transpose(2, 1, 0),
            "float64": X.astype(np.float64), "int": np.round(X * 10).astype(np.int64),
            "object": X.astype(object)}


@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor], ids=lambda c: c.__name__)
def test_layouts_are_accepted_and_give_the_same_model(cls):
    X, y = data(n=24, T=5, F=3, seed=4)
    target = y if cls._is_classifier else X.sum(axis=(1, 2))
    ref = tiny(cls, max_epochs=2).fit(X, target)
    ref_out = ref.predict_proba(X) if cls._is_classifier else ref.predict(X)
    for name, Xv in _layouts(X).items():
        yv = target.copy()
        yv.setflags(write=False)
        m = tiny(cls, max_epochs=2).fit(Xv, yv)
        out = m.predict_proba(Xv) if cls._is_classifier else m.predict(Xv)
        if name == "int":   # other values: just a valid model
            assert np.isfinite(out).all()
            continue
        np.testing.assert_array_equal(out, ref_out, err_msg=name)
        np.testing.assert_array_equal(
            ref.predict_proba(Xv) if cls._is_classifier else ref.predict(Xv), ref_out,
            err_msg=name)


def test_inputs_are_not_modified():
    X, y = data()
    X2, y2 = X.copy(), y.copy()
    sw = np.linspace(0.5, 1.5, len(y))
    sw2 = sw.copy()
    m = tiny(max_epochs=2).fit(X, y, sample_weight=sw)
    m.predict(X)
    m.score(X, y)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(sw, sw2)


# ================================================================ property-based

_CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]

# Each fault (and None: valid input, in any accepted layout and dtype, which must give
# the reference's output) over random shapes, cells, dtypes, lengths and values; a
# faulty call breaks exactly that one thing and must be refused with a ValueError or
# TypeError naming the argument.
LAYER_FAULTS = ["B=0", "T=0", "features", "2-D X", "4-D X", "complex X", "object X",
                "string X", "NaN in X", "inf in X", "length 0", "length > T",
                "negative lengths", "lengths count", "fractional lengths", "h0 shape",
                "NaN in h0"]


def _make_layer(cell, nl, I, H, L, bidir, dtype, seed):
    kw = dict(num_layers=L, bidirectional=bidir, dtype=dtype, random_state=seed)
    if cell == "lstm":
        return LSTM(I, H, **kw)
    if cell == "gru":
        return GRU(I, H, **kw)
    return RNN(I, H, nonlinearity=nl, **kw)


@st.composite
def layer_calls(draw):
    cell, nl = draw(st.sampled_from(_CELLS))
    return dict(
        cell=cell, nl=nl, I=draw(st.integers(1, 4)), H=draw(st.integers(1, 5)),
        L=draw(st.integers(1, 2)), bidir=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        B=draw(st.integers(1, 5)), T=draw(st.integers(1, 6)),
        layout=draw(st.sampled_from(["f64", "f32", "int", "bool", "fortran", "strided",
                                     "readonly", "list"])),
        values=draw(st.sampled_from(["normal", "normal", "huge", "tiny", "zero"])),
        lengths=draw(st.sampled_from(["none", "valid", "valid", "float-valued"])),
        h0=draw(st.sampled_from(["none", "valid"])),
        seed=draw(st.integers(0, 2 ** 16)))


def _layer_inputs(c, rng):
    f = c["fault"]
    B = 0 if f == "B=0" else c["B"]
    T = 0 if f == "T=0" else c["T"]
    I = c["I"] + 1 if f == "features" else c["I"]
    X = rng.standard_normal((B, T, I))
    X = {"huge": X * 1e30, "tiny": X * 1e-30, "zero": 0 * X}.get(c["values"], X)
    if c["layout"] == "int":
        X = np.round(X.clip(-1e6, 1e6) * 4).astype(np.int64)
    elif c["layout"] == "bool":
        X = X > 0
    elif c["layout"] == "f32":
        X = X.astype(np.float32)
    elif c["layout"] == "fortran":
        X = np.asfortranarray(X)
    elif c["layout"] == "strided":
        big = np.zeros((B, 2 * T, 2 * I))
        big[:, ::2, ::2] = X
        X = big[:, ::2, ::2]
    elif c["layout"] == "readonly":
        X.setflags(write=False)
    elif c["layout"] == "list":
        X = X.tolist()
    if f == "2-D X":
        X = np.asarray(X, dtype=np.float64)[:, :, 0]
    elif f == "4-D X":
        X = np.asarray(X, dtype=np.float64)[None]
    elif f == "complex X":
        X = np.asarray(X).astype(np.complex128)
    elif f == "object X":
        X = np.asarray(X).astype(object)
    elif f == "string X":
        X = np.asarray(X).astype(str)
    elif f in ("NaN in X", "inf in X"):
        X = np.array(X, dtype=np.float64)
        X[rng.integers(B), rng.integers(T), rng.integers(I)] = \
            np.nan if f == "NaN in X" else -np.inf
    lengths = None
    if c["lengths"] != "none" or (f or "").startswith(("length", "negative", "fractional")):
        lengths = rng.integers(1, max(T, 1) + 1, size=B)
        if c["lengths"] == "float-valued":
            lengths = lengths.astype(np.float64)
        i = rng.integers(B) if B else 0
        if f == "length 0":
            lengths[i] = 0
        elif f == "length > T":
            lengths[i] = T + 1
        elif f == "negative lengths":
            lengths = -lengths
        elif f == "lengths count":
            lengths = np.append(lengths, 1)
        elif f == "fractional lengths":
            lengths = lengths + 0.5
    D = 2 if c["bidir"] else 1
    sshape = (c["L"] * D, B, c["H"])
    h0 = rng.standard_normal(sshape) if c["h0"] == "valid" else None
    if f == "h0 shape":
        h0 = np.zeros((c["L"] * D, B + 1, c["H"]))
    elif f == "NaN in h0":
        h0 = np.full(sshape, np.nan)
    return X, lengths, h0


@pytest.mark.parametrize("fault", [None] + LAYER_FAULTS)
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(c=layer_calls())
def test_property_layers_raise_cleanly_or_are_correct(fault, c):
    c = dict(c, fault=fault)
    rng = np.random.default_rng(c["seed"])
    layer = _make_layer(c["cell"], c["nl"], c["I"], c["H"], c["L"], c["bidir"], c["dtype"],
                        c["seed"])
    X, lengths, h0 = _layer_inputs(c, rng)
    if c["fault"] is not None:
        with pytest.raises(ERR) as info:
            layer.forward(X, lengths=lengths, h0=h0)
        msg = str(info.value)
        assert any(w in msg for w in ("X", "lengths", "h0")), msg
        event(f"refused: {c['fault']}")
        return
    out, state = layer.forward(X, lengths=lengths, h0=h0)
    event("accepted")
    B, T, D, H = c["B"], c["T"], 2 if c["bidir"] else 1, c["H"]
    h_n = state[0] if c["cell"] == "lstm" else state
    assert out.shape == (B, T, D * H) and out.dtype == c["dtype"]
    assert h_n.shape == (c["L"] * D, B, H)
    if not (c["cell"] == "rnn" and c["nl"] == "relu"):   # bounded cells stay finite
        assert np.isfinite(out).all() and np.isfinite(h_n).all()
    if c["values"] == "huge":
        return   # saturated (and relu may legitimately overflow): finiteness was the point
    as_run = lambda a: np.asarray(a, dtype=c["dtype"]).astype(np.float64)  # noqa: E731
    params = {k: np.asarray(v, np.float64) for k, v in layer.params.items()}
    ref_out, ref_h, _, cache = reference_forward(
        c["cell"], params, as_run(X), None if lengths is None else lengths.astype(int),
        None if h0 is None else as_run(h0), None, num_layers=c["L"],
        bidirectional=c["bidir"], nonlinearity=c["nl"])
    tol = 1e-9 if c["dtype"] == np.float64 else 2e-4

    def close(actual, desired, what):
        scale = max(1.0, float(np.abs(desired).max()))
        np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * scale, err_msg=what)

    close(out, ref_out, "out")
    close(h_n, ref_h, "h_n")
    # and the training pass: forward kept for backward, then the gradients
    d_out = rng.standard_normal(out.shape)
    out_t, _ = layer.forward(X, lengths=lengths, h0=h0, training=True)
    close(out_t, ref_out, "training out")
    dX, grads = layer.backward(d_out)
    ref_dX, ref_grads = reference_backward(cache, as_run(d_out))
    close(dX, ref_dX, "dX")
    for k, g in ref_grads.items():
        close(grads[k], g, k)


EST_FAULTS = ["no samples", "no steps", "no features", "empty sequence", "string X",
              "complex X", "NaN in X", "inf in X", "dict in X", "one class", "NaN in y",
              "y too short", "2-D y for a classifier", "negative sample_weight",
              "sample_weight too short", "zero sample_weight", "wrong features at predict"]


@st.composite
def estimator_calls(draw):
    return dict(
        cls=draw(st.sampled_from(CLASSIFIERS + REGRESSORS)),
        n=draw(st.integers(2, 9)), T=draw(st.integers(1, 5)), F=draw(st.integers(1, 3)),
        form=draw(st.sampled_from(["3d", "3d", "2d", "ragged", "list"])),
        layout=draw(st.sampled_from(["f64", "f32", "int", "object", "fortran", "readonly"])),
        labels=draw(st.sampled_from(["int", "str", "float-int"])),
        weights=draw(st.sampled_from([None, "positive"])),
        seed=draw(st.integers(0, 2 ** 16)))


def _est_X(c, rng, F):
    n = 0 if c["fault"] == "no samples" else c["n"]
    T = 0 if c["fault"] == "no steps" else c["T"]
    F = 0 if c["fault"] == "no features" else F
    if c["form"] == "ragged" and n and T:
        X = [rng.standard_normal((int(rng.integers(1, T + 2)), F)) for _ in range(n)]
        if c["fault"] == "empty sequence":
            X[rng.integers(n)] = np.zeros((0, F))
        elif c["fault"] in ("NaN in X", "inf in X"):
            X[0][0, 0] = np.nan if c["fault"] == "NaN in X" else np.inf
        elif c["fault"] in ("string X", "complex X", "dict in X"):
            X[0] = {"string X": X[0].astype(str), "complex X": X[0] + 1j,
                    "dict in X": np.array([[{"a": 1}] * F], dtype=object)}[c["fault"]]
        return X
    two_d = c["form"] == "2d" and c["fault"] != "no features"   # 2-D X has no feature axis
    X = rng.standard_normal((n, T) if two_d else (n, T, F))
    if c["fault"] == "empty sequence":
        X = [x for x in X.reshape(n, T, -1)] + [np.zeros((0, X.reshape(n, T, -1).shape[2]))]
        return X
    if c["fault"] in ("NaN in X", "inf in X") and X.size:
        X.flat[rng.integers(X.size)] = np.nan if c["fault"] == "NaN in X" else np.inf
    layout = c["layout"]
    if layout == "f32":
        X = X.astype(np.float32)
    elif layout == "int":
        X = np.round(X * 3).astype(np.int64) if np.isfinite(X).all() else X
    elif layout == "object":
        X = X.astype(object)
    elif layout == "fortran":
        X = np.asfortranarray(X)
    elif layout == "readonly":
        X.setflags(write=False)
    if c["fault"] == "string X":
        X = np.asarray(X).astype(str)
    elif c["fault"] == "complex X":
        X = np.asarray(X).astype(complex)
    elif c["fault"] == "dict in X" and X.size:
        X = np.asarray(X).astype(object)
        X.flat[0] = {"a": 1}
    if c["form"] == "list":
        X = X.tolist()
    return X


@pytest.mark.parametrize("fault", [None] + EST_FAULTS)
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(c=estimator_calls())
def test_property_estimators_raise_cleanly_or_predict(fault, c):
    c = dict(c, fault=fault)
    rng = np.random.default_rng(c["seed"])
    cls, f = c["cls"], c["fault"]
    X = _est_X(c, rng, c["F"])
    n = len(X)
    if cls._is_classifier:
        y = rng.integers(0, 3, size=n)
        y[:min(n, 2)] = [0, 1][:min(n, 2)]
        y = {"int": y, "str": np.array(["a", "b", "c"])[y],
             "float-int": y.astype(float)}[c["labels"]]
        if f == "one class":
            y = y[:1].repeat(n)
        elif f == "2-D y for a classifier":
            y = np.stack([y, y], axis=1)
    else:
        y = rng.standard_normal(n)
        if f in ("one class", "2-D y for a classifier"):
            f = None    # valid for a regressor (constant or multi-output targets)
            y = np.stack([y, y], axis=1) if c["fault"] == "2-D y for a classifier" else 0 * y
    if f == "NaN in y":
        y = np.where(np.arange(n) == n - 1, np.nan, np.asarray(y, dtype=object)) \
            if cls._is_classifier and c["labels"] == "str" else \
            np.where(np.arange(n) == n - 1, np.nan, np.asarray(y, dtype=float))
    elif f == "y too short":
        y = y[:-1]
    sw = rng.uniform(0.5, 2.0, n) if c["weights"] else None
    if f == "negative sample_weight":
        sw = -np.ones(n)
    elif f == "sample_weight too short":
        sw = np.ones(n - 1)
    elif f == "zero sample_weight":
        sw = np.zeros(n)
    m = cls(hidden_size=3, max_epochs=1, batch_size=4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if f is not None and f != "wrong features at predict":
            with pytest.raises(ERR) as info:
                m.fit(X, y, sample_weight=sw)
            assert str(info.value)
            event(f"refused: {f}")
            return
        m.fit(X, y, sample_weight=sw)
        if f == "wrong features at predict":
            if c["form"] == "2d":
                Xw = rng.standard_normal((n, c["T"] + 1))
            else:
                Xw = rng.standard_normal((n, c["T"], c["F"] + 1))
            with pytest.raises(ValueError, match="features"):
                m.predict(Xw)
            event("refused: wrong features at predict")
            return
        pred = m.predict(X)
    event("accepted")
    assert len(pred) == n
    if cls._is_classifier:
        assert set(np.unique(pred)) <= set(m.classes_)
        proba = m.predict_proba(X)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        assert 0.0 <= m.score(X, y) <= 1.0
    else:
        assert np.isfinite(pred).all()
        assert np.isfinite(m.score(X, y))


# ================================================================ 32-bit BLAS sizes

def test_inference_over_the_32bit_limit_is_split(monkeypatch):
    """A batch whose steps*batch*gates*hidden would overflow 32-bit BLAS integers is run
    in slices (inference) with unchanged results, and refused for training. The limit
    is lowered here so the test needs no gigabytes."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((37, 9, 3))
    lengths = rng.integers(1, 10, size=37)
    for layer in (LSTM(3, 5, num_layers=2, bidirectional=True, dtype=np.float64),
                  GRU(3, 4, dtype=np.float64), RNN(3, 4, nonlinearity="relu")):
        G = {"LSTM": 4, "GRU": 3, "RNN": 1}[type(layer).__name__]
        out, state = layer.forward(X, lengths)
        monkeypatch.setattr(layers, "BLAS_INT_MAX", 9 * G * layer.hidden_size * 5 + 3)
        out2, state2 = layer.forward(X, lengths)
        # the same math; BLAS may round the last bit differently for other row counts
        rtol = 1e-12 if layer.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(out2, out, rtol=rtol, atol=rtol)
        for a, b in zip(state if isinstance(state, tuple) else (state,),
                        state2 if isinstance(state2, tuple) else (state2,)):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)
        with pytest.raises(ValueError, match="at most 5 sequences per call"):
            layer.forward(X, lengths, training=True)
        monkeypatch.undo()


def test_estimator_predict_batches_respect_the_32bit_limit(monkeypatch):
    seqs = [np.random.default_rng(i).standard_normal((3 + i % 5, 2)) for i in range(30)]
    y = np.arange(30) % 2
    m = tiny(GRUClassifier, hidden_size=6, max_epochs=2).fit(seqs, y)
    ref = m.predict_proba(seqs)
    monkeypatch.setattr(estimators._base, "BLAS_INT_MAX", 7 * 3 * 6 * 4)   # 4 samples a call
    assert m._predict_batch_size(7) == 4
    np.testing.assert_allclose(m.predict_proba(seqs), ref, rtol=1e-6, atol=1e-7)


def test_core_refuses_32bit_overflow_without_allocating():
    from fastrnn import _core
    with pytest.raises(ValueError, match="2\\*\\*31"):
        _core.workspace_sizes("lstm", 1 << 16, 1 << 12, 8, 64, False, 1, 16, True)


# ================================================================ no leaks

def test_rss_stays_flat_over_1000_fit_predict_calls():
    """1000 fit + predict calls of small models over ever-changing shapes (so a cache
    or buffer kept per shape, or a leaked workspace, would add up): RSS stays flat."""
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((24, 40, 2)).astype(np.float32)
    models = [LSTMClassifier(hidden_size=16, max_epochs=1, batch_size=8, random_state=0),
              GRURegressor(hidden_size=8, max_epochs=1, num_layers=2, bidirectional=True,
                           random_state=0),
              RNNClassifier(hidden_size=12, max_epochs=1, nonlinearity="relu",
                            random_state=0)]

    def one(i):
        m = models[i % 3]
        n, T = 6 + i % 17, 2 + (7 * i) % 37
        X = pool[:n, :T]
        target = np.arange(n) % 2 if m._is_classifier else X.sum(axis=(1, 2))
        if i % 2:
            X = [X[j, :1 + (i + j) % T] for j in range(n)]
        m.fit(X, target)
        m.predict(X)

    for i in range(100):   # warm-up: allocator pools, caches, lazy imports
        one(i)
    gc.collect()
    before = rss_bytes()
    for i in range(1000):
        one(i)
    gc.collect()
    growth = rss_bytes() - before
    print(f"RSS growth over 1000 calls: {growth / 2 ** 20:.2f} MiB")
    assert growth < 20 << 20, f"RSS grew by {growth / 2 ** 20:.1f} MiB over 1000 calls"


# ================================================================ faults during training

def _fit_with(monkeypatch, m, X, y, at_call, action):
    """fit `m`, calling action() at the `at_call`-th backward (1-based)."""
    calls = {"n": 0}
    orig = m._backward_batch

    def hooked(d, nt):
        calls["n"] += 1
        if calls["n"] == at_call:
            action()
        return orig(d, nt)

    monkeypatch.setattr(m, "_backward_batch", hooked)
    return m.fit(X, y)


def _same_params(a, b):
    pa, pb = a.model_.params(), b.model_.params()
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def _same_optimizer_state(a, b):
    sa, sb = a._optimizer.state, b._optimizer.state
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            np.testing.assert_array_equal(sa[k][name], sb[k][name], err_msg=f"{k}.{name}")


def test_sigint_during_fit_keeps_the_last_completed_epoch(monkeypatch):
    """A real SIGINT (Ctrl-C) raised mid-epoch: fit returns with a warning, and the model
    is exactly the model after the last completed epoch (weights and optimizer state),
    usable for prediction and for further training."""
    X, y = data(n=64, T=5)
    kw = dict(hidden_size=5, max_epochs=5, batch_size=16, random_state=0)
    m = LSTMClassifier(**kw)
    with pytest.warns(RuntimeWarning, match=r"interrupted .*in epoch 2.*last completed "
                                            r"epoch \(1\)") as rec:
        _fit_with(monkeypatch, m, X, y, at_call=7,                  # epoch 2, 3rd batch
                  action=lambda: signal.raise_signal(signal.SIGINT))
    assert rec[0].filename == __file__      # the warning points at the caller's fit
    ref = LSTMClassifier(**dict(kw, max_epochs=1)).fit(X, y)
    assert m.n_iter_ == 1 and len(m.loss_curve_) == 1 and m.t_ == ref.t_
    _same_params(m, ref)
    _same_optimizer_state(m, ref)
    np.testing.assert_array_equal(m.predict_proba(X), ref.predict_proba(X))
    monkeypatch.undo()
    m.partial_fit(X, y)
    assert m.n_iter_ == 2 and np.isfinite(m.predict_proba(X)).all()


def test_sigint_from_another_thread_stops_after_the_current_batch():
    X, y = data(n=600, T=30, F=4)
    m = GRUClassifier(hidden_size=32, max_epochs=500, batch_size=32, random_state=0,
                      n_iter_no_change=10 ** 6)
    # the signal arrives while the core runs without the GIL; Python acts on it as soon
    # as the call returns, so the fit stops after the current batch
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            m.fit(X, y)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, elapsed          # 500 epochs would take minutes
    assert 0 <= m.n_iter_ < 500 and len(m.loss_curve_) == m.n_iter_
    assert np.isfinite(m.predict_proba(X)).all()


def test_divergence_names_the_epoch_and_keeps_the_last_finite_weights(monkeypatch):
    X, y = data(n=48, T=5)
    kw = dict(hidden_size=5, max_epochs=6, batch_size=16, random_state=1)
    m = GRUClassifier(**kw)
    orig_loss = m._loss
    calls = {"n": 0}

    def loss(*args):    # call 1 is the loss at the start; call 8, epoch 3's first batch, is NaN
        calls["n"] += 1
        value, grad = orig_loss(*args)
        return (np.nan if calls["n"] == 8 else value), grad

    monkeypatch.setattr(m, "_loss", loss)
    with pytest.warns(RuntimeWarning, match=r"fit stopped in epoch 3: the loss became NaN "
                                            r"or infinite; the weights after epoch 2") as rec:
        m.fit(X, y)
    assert rec[0].filename == __file__
    ref = GRUClassifier(**dict(kw, max_epochs=2)).fit(X, y)
    assert m.n_iter_ == 2
    _same_params(m, ref)
    _same_optimizer_state(m, ref)
    assert m.t_ == ref.t_

    # non-finite weights after an update (finite loss): same rollback
    m2 = LSTMRegressor(**dict(kw, max_epochs=4))
    target = X.sum(axis=(1, 2))

    def poison():
        for v in m2.model_.params().values():
            v.flat[0] = np.inf
            break

    with pytest.warns(RuntimeWarning, match="fit stopped in epoch 2"):
        _fit_with(monkeypatch, m2, X, target, at_call=4, action=poison)
    ref2 = LSTMRegressor(**dict(kw, max_epochs=1)).fit(X, target)
    _same_params(m2, ref2)
    assert all(np.isfinite(v).all() for v in m2.model_.params().values())
    # the model trains on from there
    monkeypatch.undo()
    m2.set_params(learning_rate=1e-3).partial_fit(X, target)
    assert np.isfinite(m2.predict(X)).all()


def test_real_divergence_keeps_finite_usable_model():
    X, y = data(n=40)
    m = RNNRegressor(hidden_size=8, nonlinearity="relu", learning_rate=1e8, optimizer="sgd",
                     clip_grad_norm=None, max_epochs=30, random_state=0, scale_inputs=False)
    with pytest.warns(RuntimeWarning, match=r"fit stopped in epoch \d+"):
        m.fit(X * 100, X.sum(axis=(1, 2)) * 1e3)
    assert all(np.isfinite(v).all() for v in m.model_.params().values())
    assert all(np.isfinite(v).all() for st_ in m._optimizer.state.values()
               for v in st_.values())
    assert np.isfinite(m.predict(X)).all()


# ================================================================ model files

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    X, y = data(n=24, T=5)
    m = tiny(LSTMClassifier, hidden_size=5, num_layers=2, bidirectional=True,
             max_epochs=2).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    m.save(path)
    return m, path, X


def _rewrite(src, dst, edit_meta=None, edit_arrays=None):
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)
    return dst


def test_truncated_or_corrupted_files_fail_cleanly(saved_model, tmp_path):
    """Every truncation and a sample of single-byte corruptions: either a ModelFileError
    or (a byte that does not matter, e.g. a zip timestamp) the very same model."""
    m, path, X = saved_model
    data_ = path.read_bytes()
    expected = m.predict_proba(X)
    bad = tmp_path / "bad.npz"
    cuts = sorted(set(np.linspace(0, len(data_) - 1, 60).astype(int)))
    rng = np.random.default_rng(0)
    flips = rng.choice(len(data_), size=120, replace=False)
    outcomes = {"error": 0, "same": 0}
    for kind, positions in (("cut", cuts), ("flip", flips)):
        for p in positions:
            if kind == "cut":
                bad.write_bytes(data_[:p])
            else:
                b = bytearray(data_)
                b[p] ^= 0xFF
                bad.write_bytes(bytes(b))
            try:
                loaded = fastrnn.load(bad)
            except ModelFileError as e:
                assert str(bad) in str(e)
                outcomes["error"] += 1
                continue
            np.testing.assert_array_equal(loaded.predict_proba(X), expected,
                                          err_msg=f"{kind} at {p}")
            outcomes["same"] += 1
    assert outcomes["error"] > 100


def test_crafted_model_files_are_refused(saved_model, tmp_path):
    m, path, X = saved_model

    def meta_set(**kv):
        def edit(meta):
            for k, v in kv.items():
                section, key = k.split("__")
                if section == "top":
                    meta[key] = v
                else:
                    meta[section][key] = v
        return edit

    cases = {
        "newer format": (meta_set(top__format=99, top__fastrnn_version="9.0"),
                         None, r"format 99 is not supported.*newer fastrnn.*upgrade"),
        "format not a number": (meta_set(top__format="1"), None, "format '1'"),
        "unknown class": (meta_set(top__class="os.system"), None, "unknown estimator class"),
        "huge hidden_size, small arrays": (meta_set(params__hidden_size=16384), None,
                                           "holds .* weights, its sizes imply"),
        "negative hidden_size": (meta_set(params__hidden_size=-1), None, "hidden_size"),
        "unknown parameter": (meta_set(params__evil=1), None, "inconsistent model file"),
        "extra fitted attribute": (meta_set(fitted__predict=1), None, "fitted attributes"),
        "bad feature count": (meta_set(fitted__n_step_features_=-5), None, "not a valid count"),
        "huge feature count": (meta_set(fitted__n_step_features_=10 ** 12), None,
                               "too large"),
        "bad input kind": (meta_set(fitted___input_kind_="exec"), None, "input kind"),
        "NaN weights": (None, lambda a: a.__setitem__(
            "param:rnn.weight_hh_l0", np.full_like(a["param:rnn.weight_hh_l0"], np.nan)),
            "not a finite real array"),
        "weights as strings": (None, lambda a: a.__setitem__(
            "param:head.bias", a["param:head.bias"].astype(str)), "not a finite real"),
        "missing weights": (None, lambda a: a.pop("param:rnn.bias_ih_l1"), "weights"),
        "one class": (None, lambda a: a.__setitem__("classes_", a["classes_"][:1]),
                      "classes_"),
        "negative class weight": (None, lambda a: a.__setitem__(
            "class_weights_", -a["class_weights_"]), "class_weights_"),
    }
    for name, (edit_meta, edit_arrays, match) in cases.items():
        f = _rewrite(path, tmp_path / "crafted.npz", edit_meta, edit_arrays)
        rss0 = rss_bytes()
        with pytest.raises(ModelFileError, match=match):
            fastrnn.load(f)
        assert rss_bytes() - rss0 < 100 << 20, name
    # not JSON, not an object
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for meta in (b"\xff\xfe not json", b"[1, 2, 3]", b"{\"format\": 1"):
        arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
        np.savez(tmp_path / "meta.npz", **arrays)
        with pytest.raises(ModelFileError, match="metadata"):
            fastrnn.load(tmp_path / "meta.npz")


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_executes_code_from_the_file(saved_model, tmp_path):
    m, path, X = saved_model
    marker = tmp_path / "pwned"
    evil_files = []
    # 1. a pickled object array in place of the metadata
    f1 = tmp_path / "evil_meta.npz"
    np.savez(f1, meta=np.array([_Payload(marker)], dtype=object))
    evil_files.append(f1)
    # 2. a valid model with a pickled object array in place of a weight / the classes
    for key in ("param:head.bias", "classes_"):
        f = tmp_path / f"evil_{key.replace(':', '_')}.npz"
        _rewrite(path, f, edit_arrays=lambda a, key=key: a.__setitem__(
            key, np.array([_Payload(marker)] * 2, dtype=object)))
        evil_files.append(f)
    # 3. a raw pickle (what joblib.dump / pickle.dump would write)
    f3 = tmp_path / "evil.pkl"
    f3.write_bytes(pickle.dumps(_Payload(marker)))
    evil_files.append(f3)
    for f in evil_files:
        with pytest.raises(ModelFileError):
            fastrnn.load(f)
        assert not marker.exists(), f
    # the metadata is JSON: a pickle opcode stream there is just bad JSON
    f4 = tmp_path / "evil_json.npz"
    _rewrite(path, f4)
    with np.load(f4) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.frombuffer(pickle.dumps(_Payload(marker)), dtype=np.uint8)
    np.savez(f4, **arrays)
    with pytest.raises(ModelFileError):
        fastrnn.load(f4)
    assert not marker.exists()


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ModelFileError, match="not a readable fastrnn model file"):
        fastrnn.load(tmp_path / "nope.npz")


def test_unpickling_a_model_of_another_version_warns():
    state = FITTED.__getstate__()
    state["_fastrnn_version"] = "99.0"
    clone = LSTMClassifier.__new__(LSTMClassifier)
    with pytest.warns(UserWarning, match="pickled by fastrnn 99.0"):
        clone.__setstate__(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(pickle.dumps(FITTED))          # same version: silent


# ================================================================ concurrency

@pytest.mark.parametrize("cls", [LSTMClassifier, GRURegressor, RNNClassifier],
                         ids=lambda c: c.__name__)
def test_predict_from_many_threads_equals_single_threaded(cls):
    rng = np.random.default_rng(5)
    seqs = [rng.standard_normal((int(rng.integers(1, 40)), 3)).astype(np.float32)
            for _ in range(300)]
    target = np.arange(300) % 3 if cls._is_classifier else np.array([s.sum() for s in seqs])
    m = cls(hidden_size=16, num_layers=2, bidirectional=True, max_epochs=1,
            random_state=0).fit(seqs, target)
    predict = m.predict_proba if cls._is_classifier else m.predict
    jobs = [seqs[i:i + 17 + i % 50] for i in range(0, 300, 13)] + \
           [np.stack([s[:1] for s in seqs[:64]])]
    serial = [predict(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=6) as ex:
        for _ in range(3):
            parallel = list(ex.map(predict, jobs))
            for a, b in zip(parallel, serial):
                np.testing.assert_array_equal(a, b)


def test_gil_is_released_during_core_calls():
    """While one thread runs a long core call, another thread keeps running Python."""
    layer = LSTM(32, 128, random_state=0, dtype=np.float64)    # one call of ~0.2 s
    X = np.random.default_rng(0).standard_normal((128, 150, 32))
    layer.forward(X[:8, :10], n_threads=1)                  # warm-up
    done = threading.Event()
    span = {}

    def work():
        t0 = time.perf_counter()
        layer.forward(X, n_threads=1)
        span["call"] = (t0, time.perf_counter())
        done.set()

    ticks = []
    th = threading.Thread(target=work)
    th.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0)
    th.join()
    t0, t1 = span["call"]
    duration = t1 - t0
    inside = [t for t in ticks if t0 <= t <= t1]
    gaps = np.diff([t0] + inside + [t1])
    assert duration > 0.05, duration
    # with the GIL held by the call, this thread would be frozen for all of it
    assert gaps.max() < 0.5 * duration, (gaps.max(), duration)
    assert len(inside) > 10


def _core_avx512():
    from fastrnn import _core
    return _core.avx512_paths()


def _run_script(code, timeout, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastrnn.__file__))] + sys.path)
    # run from the directory holding the fastrnn under test: `python -c` puts the working
    # directory first on sys.path, and a source checkout there has no compiled core
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _all_paths_results(tmp_file):
    """Script: forward + backward of every cell on float32 batches that take the chunked
    path (70 samples, ragged, 2 layers, bidirectional) and the batch-1 path (hidden 128),
    saved to tmp_file."""
    return f"""
        import numpy as np
        from fastrnn import _core
        from fastrnn.layers import GRU, LSTM, RNN
        res = {{"avx512": np.array(_core.avx512_paths())}}
        for name, cls in (("lstm", LSTM), ("gru", GRU), ("rnn", RNN)):
            for tag, (B, T, I, H, L, bidir) in (("chunks", (70, 23, 5, 40, 2, True)),
                                                ("one", (1, 30, 32, 128, 1, False))):
                rng = np.random.default_rng(7)
                layer = cls(I, H, num_layers=L, bidirectional=bidir, random_state=3)
                X = rng.standard_normal((B, T, I)).astype(np.float32)
                lengths = rng.integers(1, T + 1, size=B)
                lengths[0] = T
                out, state = layer.forward(X, lengths=lengths, training=True, n_threads=2)
                d_out = rng.standard_normal(out.shape).astype(np.float32)
                dX, grads = layer.backward(d_out)
                inf, _ = layer.forward(X, lengths=lengths, n_threads=2)
                res[f"{{name}}_{{tag}}_out"] = out
                res[f"{{name}}_{{tag}}_inf"] = inf
                res[f"{{name}}_{{tag}}_dX"] = dX
                for k, g in grads.items():
                    res[f"{{name}}_{{tag}}_g_{{k}}"] = g
        np.savez({str(tmp_file)!r}, **res)
        print("ok")
    """


@pytest.mark.skipif(not _core_avx512(), reason="needs a CPU with AVX-512F")
def test_portable_paths_agree_with_avx512_paths(tmp_path):
    """FASTRNN_PORTABLE=1 runs the baseline code (scipy BLAS for every product, the
    portable activations) on this machine too: its results agree with the AVX-512 ones
    (packed kernels, vector activations, unit split) to float32 rounding."""
    fast, portable = tmp_path / "fast.npz", tmp_path / "portable.npz"
    assert _run_script(_all_paths_results(fast), timeout=300).strip() == "ok"
    assert _run_script(_all_paths_results(portable), timeout=300,
                       extra_env={"FASTRNN_PORTABLE": "1"}).strip() == "ok"
    a, b = np.load(fast), np.load(portable)
    assert bool(a["avx512"]) and not bool(b["avx512"])
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 30
    for k in a.files:
        if k == "avx512":
            continue
        scale = max(1.0, float(np.abs(b[k]).max()))
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=2e-5 * scale, err_msg=k)


def test_forked_processes_after_threaded_use_do_not_deadlock():
    """GNU OpenMP is not fork-safe: a child forked after the parent used OpenMP threads
    would hang in its first parallel region. fastrnn runs such children single-threaded
    (same results)."""
    out = _run_script("""
        import multiprocessing as mp, numpy as np
        from fastrnn.layers import LSTM
        X = np.random.default_rng(0).standard_normal((256, 40, 4)).astype(np.float32)
        layer = LSTM(4, 64, random_state=0)
        def job(_):
            return layer.forward(X, n_threads=2)[0]
        ref = job(0)                           # the parent starts its OpenMP threads
        with mp.get_context("fork").Pool(2) as pool:
            res = pool.map_async(job, range(4)).get(timeout=60)
        assert all(np.array_equal(r, ref) for r in res)
        print("ok")
    """, timeout=120)
    assert out.strip() == "ok"


def test_joblib_around_gridsearch_no_oversubscription_no_deadlock():
    """GridSearchCV(n_jobs=2) (joblib's process and thread backends) around fastrnn:
    the time per fit stays within 1.5x of the serial time per fit, and nothing hangs
    (the whole run is killed after a generous timeout). Best of two attempts against
    the noise of a shared machine; loky's workers are started before timing."""
    out = _run_script("""
        import json, time, numpy as np, joblib
        from sklearn.model_selection import GridSearchCV
        from fastrnn import LSTMClassifier
        rng = np.random.default_rng(0)
        X = rng.normal(size=(600, 60, 4)).astype(np.float32)
        y = (X[:, :, 0].sum(1) > 0).astype(int)
        est = LSTMClassifier(hidden_size=64, max_epochs=4, batch_size=64, random_state=0,
                             n_iter_no_change=100)     # ~0.3 s a fit on 2 idle cores
        grid = {"learning_rate": [1e-2, 3e-3]}
        n_fits = 2 * 2 + 1
        def per_fit(n_jobs, backend):
            with joblib.parallel_backend(backend, n_jobs=n_jobs):
                t = time.perf_counter()
                GridSearchCV(est, grid, cv=2, n_jobs=n_jobs).fit(X, y)
                return (time.perf_counter() - t) / n_fits
        GridSearchCV(est, grid, cv=2, n_jobs=2).fit(X[:40], y[:40])   # start loky
        per_fit(1, "loky")                                              # warm caches
        result = {}
        for backend in ("loky", "threading", "multiprocessing"):
            ratios = []
            for attempt in range(2):
                serial, parallel = per_fit(1, backend), per_fit(2, backend)
                ratios.append(parallel / serial)
                if ratios[-1] <= 1.5:
                    break
            result[backend] = min(ratios)
        print(json.dumps(result))
    """, timeout=400)
    ratios = json.loads(out.strip().splitlines()[-1])
    for backend, ratio in ratios.items():
        assert ratio <= 1.5, (backend, ratios)


def test_concurrent_estimator_calls_share_the_cores(monkeypatch):
    """Each of N concurrent fit/predict calls in one process gets 1/N of the cores;
    results do not depend on it."""
    seen = []
    orig = layers._resolve_threads

    def spy(n):
        seen.append(n)
        return orig(n)

    monkeypatch.setattr(layers, "_resolve_threads", spy)
    X, y = data(n=32, T=6)
    cores = max(1, fastrnn._core.max_threads())
    m = tiny(max_epochs=1, n_jobs=-1).fit(X, y)
    alone = m.predict_proba(X)
    assert set(seen) == {cores}
    seen.clear()
    barrier = threading.Barrier(4)

    def call(_):
        with estimators._base.running():
            barrier.wait()
            out = m.predict_proba(X)
            barrier.wait()
        return out

    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(call, range(4)))
    for o in outs:
        np.testing.assert_array_equal(o, alone)
    # 4 outer calls held open by the barrier, plus at least one inner: >= 5 running
    assert seen and max(seen) <= max(1, cores // 5)



# ================================================================ fuzzing: per-step estimators
# taggers and sequence regressors: ragged or padded X, y of the matching structure or
# not, weights of every kind; token input with ids of every kind; per-step model files;
# streaming in random step sizes.
from fastrnn import (GRUSequenceRegressor, GRUTagger, LSTMSequenceRegressor,  # noqa: E402
                     LSTMTagger, RNNSequenceRegressor, RNNTagger)

PER_STEP = [LSTMTagger, GRUTagger, RNNTagger,
            LSTMSequenceRegressor, GRUSequenceRegressor, RNNSequenceRegressor]
Y_FAULTS = [None, None, "step short", "step long", "sequence missing", "array for ragged",
            "one value per sequence", "ragged y for padded X", "2-D labels"]


@st.composite
def per_step_calls(draw):
    return dict(
        cls=draw(st.sampled_from(PER_STEP)),
        n=draw(st.integers(2, 7)), T=draw(st.integers(1, 6)), F=draw(st.integers(1, 3)),
        form=draw(st.sampled_from(["ragged", "padded", "2d"])),
        k=draw(st.sampled_from([None, 2])),             # targets per step (regressors)
        weights=draw(st.sampled_from([None, "integer", "fraction"])),
        fault=draw(st.sampled_from(Y_FAULTS)),
        seed=draw(st.integers(0, 2 ** 16)))


def _per_step_X_y(c, rng):
    n, T, F = c["n"], c["T"], c["F"]
    lengths = (rng.integers(1, T + 1, size=n) if c["form"] == "ragged"
               else np.full(n, T))
    if c["form"] == "ragged":
        lengths[0] = T + 1                    # never all equal: a true ragged list
        X = [rng.standard_normal((int(t), F)) for t in lengths]
    elif c["form"] == "padded":
        X = rng.standard_normal((n, T, F))
    else:
        X = rng.standard_normal((n, T))
    classifier = c["cls"]._is_classifier
    k = None if classifier else c["k"]

    def targets(t):
        shape = (t,) if k is None else (t, k)
        return rng.integers(0, 3, size=shape) if classifier else rng.standard_normal(shape)

    ys = [targets(int(t)) for t in lengths]
    for i in range(min(2, n)):
        if classifier:
            ys[i][0] = i                      # two classes at least
    f = c["fault"]
    if f in ("step short", "step long"):
        i = int(rng.integers(n))
        t = int(lengths[i]) + (1 if f == "step long" else -1)
        ys[i] = targets(t) if t > 0 else targets(0)
    elif f == "sequence missing":
        ys = ys[:-1]
    elif f == "2-D labels" and classifier:
        ys = [np.stack([y, y], axis=1) for y in ys]
    if c["form"] != "ragged" and f not in ("step short", "step long", "sequence missing",
                                           "ragged y for padded X"):
        y = np.stack(ys)                      # the matching (n, T[, k]) array
    else:
        y = ys
    if f == "array for ragged" and c["form"] == "ragged":
        y = np.zeros((n, T + 1) + (() if k is None else (k,)))
    elif f == "one value per sequence":
        y = np.array([yy.reshape(len(yy), -1)[0, 0] for yy in ys])
    return X, y, lengths


def _expect_error(c):
    f = c["fault"]
    if f in ("step short", "step long", "sequence missing", "one value per sequence"):
        return True
    if f == "array for ragged":
        return c["form"] == "ragged"
    if f == "2-D labels":
        return c["cls"]._is_classifier
    return False


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(c=per_step_calls())
@example(c=dict(cls=LSTMTagger, n=5, T=4, F=2, form="ragged", k=None, weights=None,
                fault="array for ragged", seed=1))
@example(c=dict(cls=GRUSequenceRegressor, n=5, T=4, F=2, form="ragged", k=2,
                weights="integer", fault="array for ragged", seed=2))
@example(c=dict(cls=RNNSequenceRegressor, n=4, T=3, F=1, form="padded", k=2,
                weights="fraction", fault="ragged y for padded X", seed=3))
@example(c=dict(cls=GRUTagger, n=6, T=3, F=1, form="2d", k=None, weights="integer",
                fault="ragged y for padded X", seed=4))
@example(c=dict(cls=LSTMTagger, n=4, T=1, F=1, form="padded", k=None, weights="integer",
                fault=None, seed=7))
def test_property_per_step_estimators_raise_cleanly_or_follow_the_structure(c):
    rng = np.random.default_rng(c["seed"])
    X, y, lengths = _per_step_X_y(c, rng)
    n = len(lengths)
    sw = None
    if c["weights"] == "integer":
        sw = rng.integers(0, 3, size=n)
        sw[:2] = 1
    elif c["weights"] == "fraction":
        sw = rng.uniform(0.1, 2.0, size=n)
    m = c["cls"](hidden_size=3, max_epochs=1, batch_size=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _expect_error(c):
            with pytest.raises(ERR) as info:
                m.fit(X, y, sample_weight=sw)
            assert "y" in str(info.value) or "step" in str(info.value), str(info.value)
            event(f"refused: {c['fault']}")
            return
        m.fit(X, y, sample_weight=sw)
        pred = m.predict(X)
    event(f"accepted {c['form']}")
    k = None if c["cls"]._is_classifier else c["k"]
    tail = () if k is None else (k,)
    if c["form"] == "ragged":
        assert isinstance(pred, list) and len(pred) == n
        for p, t in zip(pred, lengths):
            assert p.shape == (t,) + tail
    else:
        assert pred.shape == (n, c["T"]) + tail
    flat = np.concatenate([np.asarray(p).reshape(-1) for p in pred])
    if c["cls"]._is_classifier:
        assert set(np.unique(flat)) <= set(m.classes_)
        proba = m.predict_proba(X)
        rows = np.concatenate([np.asarray(p).reshape(-1, len(m.classes_)) for p in proba])
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert np.isfinite(flat).all()
    labels = np.concatenate([np.asarray(t).reshape(-1) for t in y])
    if c["cls"]._is_classifier and not set(labels) <= set(m.classes_):
        # a class only zero-weighted sequences had is not the model's
        with pytest.raises(ValueError, match="never saw in fit"):
            m.score(X, y)
        event("a class only zero-weighted sequences had")
        return
    assert np.isfinite(m.score(X, y))


# ---------------------------------------------------------------- token ids

TOKEN_CASES = ["seen", "unseen inside the vocabulary", "above the vocabulary", "huge",
               "negative", "non-integer", "strings", "uint64 above int64", "mixed lengths"]


@st.composite
def token_calls(draw):
    return dict(cls=draw(st.sampled_from([LSTMClassifier, GRUTagger, RNNRegressor,
                                          LSTMSequenceRegressor])),
                case=draw(st.sampled_from(TOKEN_CASES)),
                vocab=draw(st.sampled_from([None, 12])),
                seed=draw(st.integers(0, 2 ** 16)))


_TOKEN_MODELS = {}


def _token_model(cls, vocab):
    """A fitted model on ids 0..9 of which 3 and 7 never occur (fitted once per class)."""
    key = (cls, vocab)
    if key not in _TOKEN_MODELS:
        rng = np.random.default_rng(0)
        ids = np.array([0, 1, 2, 4, 5, 6, 8, 9])
        X = [rng.choice(ids, size=int(rng.integers(2, 7))) for _ in range(16)]
        if cls._per_step:
            y = [x % 2 if cls._is_classifier else x * 0.5 for x in X]
        else:
            y = np.array([x.sum() % 2 if cls._is_classifier else x.sum() for x in X])
        m = cls(embedding_dim=3, vocab_size=vocab, hidden_size=4, max_epochs=2,
                random_state=0)
        _TOKEN_MODELS[key] = m.fit(X, y)
    return _TOKEN_MODELS[key]


def _outputs_of(m, X):
    out = m.predict_proba(X) if m._is_classifier else m.predict(X)
    return [np.asarray(o) for o in out]


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(c=token_calls())
def test_property_token_ids_are_read_or_refused_cleanly(c):
    """Ids the model never saw (unseen, beyond the vocabulary, huge) all read the one
    reserved row: the outputs equal those of any other unknown id. Negative, fractional,
    string ids and uint64 ids above 2**63 - 1 are refused with an error naming X."""
    m = _token_model(c["cls"], c["vocab"])
    rng = np.random.default_rng(c["seed"])
    X = [rng.choice([0, 1, 2, 4, 5], size=int(rng.integers(1, 6))) for _ in range(3)]
    case = c["case"]
    bad = {"negative": -1, "non-integer": 2.5, "strings": "a"}
    if case in bad or case == "uint64 above int64":
        X[1] = X[1].astype(object) if case == "strings" else X[1]
        if case == "uint64 above int64":
            X = np.array([[1, 2**63 + 5]], dtype=np.uint64)
        else:
            X[1] = np.append(X[1], bad[case]) if case != "strings" else np.append(
                X[1].astype(str), "a")
        with pytest.raises(ERR, match="X|token"):
            m.predict(X)
        event(f"refused: {case}")
        return
    unknown = {"unseen inside the vocabulary": 3, "above the vocabulary": m.vocab_size_ + 4,
               "huge": 2 ** 62, "mixed lengths": 7, "seen": 1}[case]
    X[0] = np.append(X[0], unknown)
    out = _outputs_of(m, X)
    if case == "seen":
        event("seen")
        return
    other = [x.copy() for x in X]
    other[0][-1] = m.vocab_size_ + 1000            # another id the model does not know
    for a, b in zip(out, _outputs_of(m, other)):
        np.testing.assert_array_equal(a, b)
    event(f"unknown: {case}")


def test_fit_refuses_bad_token_ids():
    X = [np.array([0, 1, 2]), np.array([3, 1])]
    for bad, match in ((np.array([0, -2]), "negative token id"),
                       (np.array([0.5, 1.0]), "integer token ids"),
                       (np.array([0, 1 << 40]), "smaller vocab_size")):
        with pytest.raises(ERR, match=match):
            GRUTagger(embedding_dim=2, max_epochs=1).fit([X[0], bad],
                                                         [np.zeros(3), np.ones(2)])


# ---------------------------------------------------------------- per-step model files

_PER_STEP_FILES = {}


def _per_step_file(which, tmp_dir):
    if which not in _PER_STEP_FILES:
        rng = np.random.default_rng(1)
        if which == "tagger tokens":
            X = [rng.integers(0, 9, size=int(rng.integers(1, 6))) for _ in range(12)]
            m = LSTMTagger(embedding_dim=3, hidden_size=4, max_epochs=2, random_state=0)
            m.fit(X, [x % 3 for x in X])
        else:
            X = [rng.standard_normal((int(rng.integers(1, 6)), 2)) for _ in range(12)]
            m = GRUSequenceRegressor(hidden_size=4, num_layers=2, max_epochs=2,
                                     random_state=0)
            m.fit(X, [np.stack([x[:, 0], x.sum(1)], 1) for x in X])
        path = os.path.join(tmp_dir, which.replace(" ", "_") + ".npz")
        m.save(path)
        with open(path, "rb") as fh:
            _PER_STEP_FILES[which] = (m, X, fh.read())
    return _PER_STEP_FILES[which]


@pytest.fixture(scope="module")
def per_step_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("per_step"))


@pytest.mark.parametrize("which", ["tagger tokens", "sequence regressor"])
def test_per_step_model_files_round_trip(which, per_step_dir):
    m, X, blob = _per_step_file(which, per_step_dir)
    path = os.path.join(per_step_dir, "rt.npz")
    with open(path, "wb") as fh:
        fh.write(blob)
    loaded = fastrnn.load(path)
    assert type(loaded) is type(m) and loaded.get_params() == m.get_params()
    for a, b in zip(_outputs_of(m, X), _outputs_of(loaded, X)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("which", ["tagger tokens", "sequence regressor"])
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["cut", "flip", "flip", "zero run"]),
       where=st.floats(0.0, 1.0), size=st.integers(1, 64))
def test_property_corrupted_per_step_files_fail_cleanly(which, per_step_dir, kind, where,
                                                         size):
    """A cut, a flipped byte or a run of zeros anywhere in a per-step model file: a
    ModelFileError naming the file, or (bytes that do not matter) the very same model."""
    m, X, blob = _per_step_file(which, per_step_dir)
    p = min(int(where * len(blob)), len(blob) - 1)
    b = bytearray(blob)
    if kind == "cut":
        b = b[:p]
    elif kind == "flip":
        b[p] ^= 0xFF
    else:
        b[p:p + size] = bytes(len(b[p:p + size]))
    path = os.path.join(per_step_dir, "bad.npz")
    with open(path, "wb") as fh:
        fh.write(bytes(b))
    try:
        loaded = fastrnn.load(path)
    except ModelFileError as e:
        assert path in str(e)
        event(f"{kind}: refused")
        return
    for a, c in zip(_outputs_of(m, X), _outputs_of(loaded, X)):
        np.testing.assert_array_equal(a, c)
    event(f"{kind}: same model")


# ---------------------------------------------------------------- streaming

_STREAM_MODELS = {}


def _stream_model(cls, dtype):
    key = (cls, dtype)
    if key not in _STREAM_MODELS:
        rng = np.random.default_rng(2)
        X = rng.standard_normal((12, 5, 2))
        if cls._per_step:
            y = (X[:, :, 0] > 0).astype(int) if cls._is_classifier else X.sum(axis=2)
        else:
            y = (X[:, :, 0].sum(1) > 0).astype(int) if cls._is_classifier else X.sum((1, 2))
        _STREAM_MODELS[key] = cls(hidden_size=5, num_layers=2, max_epochs=2, dtype=dtype,
                                  random_state=0).fit(X, y)
    return _STREAM_MODELS[key]


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from([LSTMClassifier, GRURegressor, RNNTagger,
                            LSTMSequenceRegressor]),
       dtype=st.sampled_from(["float32", "float64"]), B=st.integers(1, 3),
       T=st.integers(1, 9), cuts=st.lists(st.integers(1, 4), min_size=1, max_size=9),
       seed=st.integers(0, 2 ** 16))
def test_property_stream_in_random_step_sizes_equals_predict(cls, dtype, B, T, cuts, seed):
    """Feeding B sequences through est.stream() in chunks of random sizes (step for one
    step, step_many for several) gives what predict gives on the sequences so far."""
    m = _stream_model(cls, dtype)
    X = np.random.default_rng(seed).standard_normal((B, T, 2))
    stream = m.stream(batch_size=B)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12,
                                                                     atol=1e-13)
    full = _outputs_of(m, X) if cls._per_step else None
    t, i = 0, 0
    while t < T:
        k = min(cuts[i % len(cuts)], T - t)
        i += 1
        chunk = X[:, t:t + k]
        out = stream.step(chunk[:, 0]) if k == 1 else stream.step_many(chunk)
        t += k
        if cls._per_step:
            want = np.stack(full)[:, t - k:t]
            np.testing.assert_allclose(out.reshape(want.shape), want, **tol)
        else:
            np.testing.assert_allclose(out, np.stack(_outputs_of(m, X[:, :t])), **tol)
    event(f"{cls.__name__} {dtype}, {i} chunks")
    stream.reset()
    first = stream.step(X[:, 0])
    want = np.stack(full)[:, 0] if cls._per_step else np.stack(_outputs_of(m, X[:, :1]))
    np.testing.assert_allclose(first, want, **tol)


@pytest.mark.parametrize("entry", ["forward", "forward_bf16"])
def test_core_forward_refuses_bad_buffers(entry):
    """The core's forward entries (one shared check of their common buffers) refuse, with
    a ValueError/TypeError naming the buffer, anything C would read or write out of
    bounds: short, mistyped, non-contiguous or read-only arrays, lengths out of range,
    a column offset past the output, a missing LSTM cell state."""
    if entry == "forward_bf16" and not _core.bf16_available():
        pytest.skip("forward_bf16 needs a CPU with AVX512_BF16")
    B, T, I, H = 3, 4, 2, 5
    rng = np.random.default_rng(0)
    f32 = np.float32

    def good():
        return dict(out=np.zeros((B, T, H), f32), col=0, h_n=np.zeros((B, H), f32),
                    c_n=np.zeros((B, H), f32), x=rng.standard_normal((B, T, I)).astype(f32),
                    lengths=np.full(B, T, np.int32), h0=np.zeros((B, H), f32),
                    c0=np.zeros((B, H), f32), w_ih=np.zeros((4 * H, I), f32),
                    w_hh=np.zeros((4 * H, H), f32), b_ih=np.zeros(4 * H, f32),
                    b_hh=np.zeros(4 * H, f32))

    def call(a):
        if entry == "forward":
            ws = np.zeros(_core.workspace_sizes("lstm", B, T, I, H, False, 1, B, True)[0], f32)
            return _core.forward("lstm", False, 1, B, a["out"], a["col"], a["h_n"], a["c_n"],
                                 None, None, None, a["x"], a["lengths"], a["h0"], a["c0"],
                                 a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], ws, True)
        ws = np.zeros(_core.bf16_workspace_size("lstm", B, T, I, H, False, 1, B, True), f32)
        return _core.forward_bf16("lstm", False, 1, B, a["out"], a["col"], a["h_n"], a["c_n"],
                                  a["x"], a["lengths"], a["h0"], a["c0"], a["w_ih"],
                                  a["w_hh"], a["b_ih"], a["b_hh"], ws, True)

    call(good())                                     # the good call runs
    ro = np.zeros((B, H), f32)
    ro.flags.writeable = False
    bad = [("h_n", np.zeros((B, H - 1), f32), ValueError, "h_n has"),
           ("w_hh", np.zeros((4 * H, H - 1), f32), ValueError, "w_hh has"),
           ("b_ih", np.zeros(4 * H, np.float64), TypeError, "b_ih has dtype"),
           ("x", np.asfortranarray(rng.standard_normal((B, T, I)).astype(f32)), ValueError,
            "x must be C-contiguous"),
           ("h_n", ro, ValueError, "h_n must be writable"),
           ("lengths", np.array([T, T + 1, 1], np.int32), ValueError, "lengths must lie"),
           ("lengths", np.array([T, 0, 1], np.int32), ValueError, "lengths must lie"),
           ("col", 1, ValueError, "column offset"),
           ("c0", None, ValueError, "c0 is required")]
    for name, value, exc, msg in bad:
        a = good()
        a[name] = value
        with pytest.raises(exc, match=msg):
            call(a)
