"""fastrnn.onnx: the exported graphs, run by onnxruntime, against fastrnn itself (float32,
within 1e-5), for every cell, 1-3 layers, both directions, ragged batches, every
estimator kind, token input, carried state and scikit-learn Pipelines."""
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from fastrnn import (GRUClassifier, GRURegressor, GRUSequenceRegressor, GRUTagger,  # noqa: E402
                     LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor, LSTMTagger,
                     RNNClassifier, RNNRegressor, RNNSequenceRegressor, RNNTagger)
from fastrnn.layers import GRU, LSTM, RNN  # noqa: E402
from fastrnn.onnx import to_onnx  # noqa: E402
import fastrnn  # noqa: E402

TOL = 1e-5
CELLS = [("lstm", {}), ("gru", {}), ("rnn", {"nonlinearity": "tanh"}),
         ("rnn", {"nonlinearity": "relu"})]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
CLASSIFIERS = {"lstm": LSTMClassifier, "gru": GRUClassifier, "rnn": RNNClassifier}
REGRESSORS = {"lstm": LSTMRegressor, "gru": GRURegressor, "rnn": RNNRegressor}
TAGGERS = {"lstm": LSTMTagger, "gru": GRUTagger, "rnn": RNNTagger}
SEQ_REGRESSORS = {"lstm": LSTMSequenceRegressor, "gru": GRUSequenceRegressor,
                  "rnn": RNNSequenceRegressor}
FIT = dict(hidden_size=6, max_epochs=3, batch_size=16, random_state=0)


def session(model):
    """An onnxruntime session on the model, after the full ONNX check."""
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3   # the optional inputs' defaults are initializers: a warning
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run(model, **feeds):
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def ragged(rng, n, F, lo=2, hi=9):
    """A list of (T_i, F) float sequences and the same as padded (n, T, F) + lengths."""
    lengths = rng.integers(lo, hi + 1, size=n)
    lengths[0] = hi   # the longest sets T
    seqs = [rng.normal(size=(t, F)) * 2 + 1 for t in lengths]
    X = rng.normal(size=(n, hi, F)) * 5   # padding holds garbage: it must not leak
    for i, s in enumerate(seqs):
        X[i, :len(s)] = s
    return seqs, X.astype(np.float32), lengths.astype(np.int32)


def assert_close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64),
                               np.asarray(expected, np.float64), rtol=tol, atol=tol)


# ---------------------------------------------------------------------- layer stacks
def make_layer(cell, kw, layers, bidirectional, F=3, H=5, seed=0):
    return LAYERS[cell](F, H, num_layers=layers, bidirectional=bidirectional,
                        random_state=seed, **kw)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_layer_stack_matches_fastrnn(cell, kw, layers, bidirectional):
    rng = np.random.default_rng(layers)
    layer = make_layer(cell, kw, layers, bidirectional)
    _, X, lengths = ragged(rng, 7, 3)
    LD = layers * layer.num_directions
    h0 = rng.normal(size=(LD, 7, 5)).astype(np.float32)
    c0 = rng.normal(size=(LD, 7, 5)).astype(np.float32)
    lstm = cell == "lstm"
    out, state = layer.forward(X, lengths, h0=h0, c0=c0 if lstm else None)
    h_n, c_n = state if lstm else (state, None)
    feeds = dict(X=X, sequence_lens=lengths, h0=h0)
    if lstm:
        feeds["c0"] = c0
    got = run(to_onnx(layer), **feeds)
    assert_close(got["Y"], out)          # the whole array: zero past each length in both
    assert_close(got["h_n"], h_n)
    if lstm:
        assert_close(got["c_n"], c_n)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_layer_defaults_are_full_lengths_and_zero_state(cell, kw):
    rng = np.random.default_rng(1)
    layer = make_layer(cell, kw, 2, True)
    X = rng.normal(size=(4, 6, 3)).astype(np.float32)
    out, state = layer.forward(X)
    h_n = state[0] if cell == "lstm" else state
    got = run(to_onnx(layer), X=X)
    assert_close(got["Y"], out)
    assert_close(got["h_n"], h_n)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_layer_state_carried_across_two_calls_equals_one_call(cell, kw):
    rng = np.random.default_rng(2)
    layer = make_layer(cell, kw, 2, False)
    X = rng.normal(size=(5, 10, 3)).astype(np.float32)
    sess = session(to_onnx(layer))
    names = [o.name for o in sess.get_outputs()]
    whole = dict(zip(names, sess.run(None, {"X": X})))
    first = dict(zip(names, sess.run(None, {"X": X[:, :4]})))
    feeds = {"X": X[:, 4:], "h0": first["h_n"]}
    if cell == "lstm":
        feeds["c0"] = first["c_n"]
    second = dict(zip(names, sess.run(None, feeds)))
    assert_close(np.concatenate([first["Y"], second["Y"]], axis=1), whole["Y"])
    assert_close(second["h_n"], whole["h_n"])
    # and fastrnn agrees on the whole
    out, _ = layer.forward(X)
    assert_close(whole["Y"], out)


def test_layer_graph_uses_one_standard_node_per_layer():
    for cell, kw in CELLS:
        model = to_onnx(make_layer(cell, kw, 3, True))
        ops = [n.op_type for n in model.graph.node]
        assert ops.count({"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]) == 3
        nodes = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
        assert attrs["direction"] == b"bidirectional"
        if cell == "gru":
            assert attrs["linear_before_reset"] == 1
        if cell == "rnn":
            assert attrs["activations"] == [kw["nonlinearity"].capitalize().encode()] * 2


# ---------------------------------------------------------------------- estimators
def fit_classifier(cls, kw, bidirectional=False, layers=1, per_step=False, seed=0):
    rng = np.random.default_rng(seed)
    seqs, X, lengths = ragged(rng, 40, 3)
    if per_step:
        y = [(s[:, 0] > 1).astype(int) + (s[:, 1] > 1) for s in seqs]
    else:
        y = np.array([int(s[:, 0].sum() > len(s)) + int(s[0, 1] > 1) for s in seqs])
    est = cls(bidirectional=bidirectional, num_layers=layers, **FIT, **kw).fit(seqs, y)
    return est, seqs, X, lengths


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_classifier_probabilities_and_labels(cell, kw, bidirectional):
    est, seqs, X, lengths = fit_classifier(CLASSIFIERS[cell], kw, bidirectional,
                                           layers=2)
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert got["probabilities"].shape == (len(seqs), len(est.classes_))
    assert_close(got["probabilities"], est.predict_proba(seqs))
    np.testing.assert_array_equal(got["label"], est.predict(seqs))


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_regressor_predictions(cell, kw, layers):
    rng = np.random.default_rng(3)
    seqs, X, lengths = ragged(rng, 30, 2)
    y = np.array([[s[:, 0].mean() * 10 + 100, s[:, 1].max()] for s in seqs])
    est = REGRESSORS[cell](num_layers=layers, bidirectional=layers == 3, **FIT, **kw)
    est.fit(seqs, y)
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert got["variable"].shape == (30, 2)
    # outputs of order 100 are float32 in the graph: relative tolerance
    np.testing.assert_allclose(got["variable"], est.predict(seqs), rtol=TOL, atol=TOL)
    # one target: (batch,) as predict
    est.fit(seqs, y[:, 0])
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert got["variable"].shape == (30,)
    np.testing.assert_allclose(got["variable"], est.predict(seqs), rtol=TOL, atol=TOL)


def valid_steps(per_step, lengths):
    return np.concatenate([per_step[i, :n] for i, n in enumerate(lengths)])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_tagger_per_step_probabilities(cell, kw, bidirectional):
    est, seqs, X, lengths = fit_classifier(TAGGERS[cell], kw, bidirectional, layers=2,
                                           per_step=True)
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert got["probabilities"].shape == X.shape[:2] + (len(est.classes_),)
    assert_close(valid_steps(got["probabilities"], lengths),
                 np.concatenate(est.predict_proba(seqs)))
    np.testing.assert_array_equal(valid_steps(got["label"], lengths),
                                  np.concatenate(est.predict(seqs)))


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_sequence_regressor_per_step(cell, kw):
    rng = np.random.default_rng(4)
    seqs, X, lengths = ragged(rng, 30, 2)
    y = [np.cumsum(s, axis=0) * 3 - 2 for s in seqs]            # two targets per step
    est = SEQ_REGRESSORS[cell](bidirectional=True, **FIT, **kw).fit(seqs, y)
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert got["variable"].shape == X.shape[:2] + (2,)
    np.testing.assert_allclose(valid_steps(got["variable"], lengths),
                               np.concatenate(est.predict(seqs)), rtol=TOL, atol=TOL)


def test_token_input_with_unknown_and_out_of_vocabulary_ids():
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 30, size=rng.integers(3, 12)) for _ in range(60)]
    docs = [d[d != 7] for d in docs]             # id 7 is never seen: the unknown row
    labels = np.array([int((d < 5).any()) for d in docs])
    est = GRUClassifier(embedding_dim=4, num_layers=2, bidirectional=True, **FIT)
    est.fit(docs, labels)
    test = [np.array([3, 7, 12, 29]), np.array([7, 40, 1000]), np.array([1, 2, 3, 4, 5, 6]),
            np.array([29])]
    lengths = np.array([len(d) for d in test], np.int32)
    ids = np.full((len(test), lengths.max()), 123456, np.int64)
    for i, d in enumerate(test):
        ids[i, :len(d)] = d
    model = to_onnx(est)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    got = run(model, X=ids, sequence_lens=lengths)
    assert_close(got["probabilities"], est.predict_proba(test))
    np.testing.assert_array_equal(got["label"], est.predict(test))
    # ids 7, 40 and 1000 all read the unknown row: the same as any other unknown id
    same = run(model, X=np.array([[7, 41, 999]], np.int64))
    assert_close(same["probabilities"], got["probabilities"][1:2])


def test_token_tagger_state_carried_across_two_calls():
    rng = np.random.default_rng(6)
    X = rng.integers(0, 20, size=(30, 12))
    y = np.roll(X, -1, axis=1)
    est = LSTMTagger(embedding_dim=5, num_layers=2, **FIT).fit(X, y)
    sess = session(to_onnx(est))
    names = [o.name for o in sess.get_outputs()]
    ids = X[:4].astype(np.int64)
    whole = dict(zip(names, sess.run(None, {"X": ids})))
    first = dict(zip(names, sess.run(None, {"X": ids[:, :5]})))
    second = dict(zip(names, sess.run(None, {"X": ids[:, 5:], "h0": first["h_n"],
                                             "c0": first["c_n"]})))
    assert_close(np.concatenate([first["probabilities"], second["probabilities"]], axis=1),
                 whole["probabilities"])
    assert_close(whole["probabilities"], est.predict_proba(X[:4]))
    assert_close(second["c_n"], whole["c_n"])


def test_string_float_and_2d_inputs():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 8)).astype(np.float32)           # 2-D: univariate series
    names = np.array(["down", "up"])[(X.sum(axis=1) > 0).astype(int)]
    est = RNNClassifier(**FIT).fit(X, names)
    got = run(to_onnx(est), X=X)
    np.testing.assert_array_equal(got["label"], est.predict(X))   # strings, as classes_
    assert_close(got["probabilities"], est.predict_proba(X))
    est = LSTMClassifier(**FIT).fit(X, (X[:, 0] > 0) * 2.0 - 1.0)  # float labels
    got = run(to_onnx(est), X=X)
    assert got["label"].dtype == np.float64
    np.testing.assert_array_equal(got["label"], est.predict(X))


def test_unscaled_inputs_and_float64_model():
    rng = np.random.default_rng(8)
    seqs, X, lengths = ragged(rng, 30, 3)
    y = np.array([s[:, 2].mean() for s in seqs])
    est = GRURegressor(scale_inputs=False, **FIT).fit(seqs, y)
    assert est.x_mean_ is None
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert_close(got["variable"], est.predict(seqs))
    est = GRURegressor(dtype="float64", **FIT).fit(seqs, y)      # exported in float32
    got = run(to_onnx(est), X=X, sequence_lens=lengths)
    assert_close(got["variable"], est.predict(seqs), tol=1e-4)


def test_written_file_and_errors(tmp_path):
    layer = make_layer("gru", {}, 1, False)
    path = tmp_path / "gru.onnx"
    model = to_onnx(layer, path, opset=19)
    assert onnx.load(str(path)) == model
    assert model.opset_import[0].version == 19
    with pytest.raises(ValueError, match="not fitted"):
        to_onnx(LSTMClassifier())
    with pytest.raises(TypeError, match="to_onnx exports"):
        to_onnx(object())
    with pytest.raises(ValueError, match="opset"):
        to_onnx(layer, opset=9)


def test_required_inputs_when_not_optional():
    layer = make_layer("lstm", {}, 2, True)
    model = to_onnx(layer, optional_inputs=False)
    assert not {i.name for i in model.graph.initializer} & {"sequence_lens", "h0", "c0"}
    rng = np.random.default_rng(11)
    _, X, lengths = ragged(rng, 5, 3)
    h0, c0 = (rng.normal(size=(4, 5, 5)).astype(np.float32) for _ in range(2))
    got = run(model, X=X, sequence_lens=lengths, h0=h0, c0=c0)
    out, (h_n, c_n) = layer.forward(X, lengths, h0=h0, c0=c0)
    assert_close(got["Y"], out)
    assert_close(got["c_n"], c_n)
    with pytest.raises(Exception, match="sequence_lens|h0|c0"):
        session(model).run(None, {"X": X})


def test_core_imports_neither_onnx_nor_onnxruntime():
    code = ("import sys, fastrnn, fastrnn.layers, fastrnn.estimators; "
            "bad = [m for m in ('onnx', 'onnxruntime', 'skl2onnx') if m in sys.modules]; "
            "assert not bad, bad")
    # from the folder of the fastrnn under test (`python -c` puts the working directory
    # first on sys.path, and a source checkout there has no compiled core)
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))


# ---------------------------------------------------------------------- Pipelines
def test_pipeline_with_convertible_steps():
    pytest.importorskip("skl2onnx")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(9)
    X = (rng.normal(size=(40, 10)) * 3 + 2).astype(np.float32)
    y = (X[:, :5].sum(axis=1) > 10).astype(int)
    pipe = make_pipeline(StandardScaler(), LSTMClassifier(**FIT)).fit(X, y)
    got = run(to_onnx(pipe), X=X)
    assert_close(got["probabilities"], pipe.predict_proba(X))
    np.testing.assert_array_equal(got["label"], pipe.predict(X))
    reg = make_pipeline(StandardScaler(), GRURegressor(**FIT)).fit(X, X[:, 0] * 4)
    got = run(to_onnx(reg), X=X)
    np.testing.assert_allclose(got["variable"], reg.predict(X), rtol=TOL, atol=TOL)


def test_pipeline_with_an_unconvertible_step_names_it():
    pytest.importorskip("skl2onnx")
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    X = np.random.default_rng(10).normal(size=(20, 6)).astype(np.float32)
    pipe = Pipeline([("half", FunctionTransformer(lambda a: a / 2)),
                     ("clf", LSTMClassifier(**FIT))]).fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(ValueError, match="step 'half' \\(FunctionTransformer\\)"):
        to_onnx(pipe)


# ---------------------------------------------------------------------- OpenVINO
def test_loads_and_runs_in_openvino(tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed")
    est, _, X, _ = fit_classifier(LSTMClassifier, {}, True, layers=2)
    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}   # not bf16 on such CPUs
    expected = est.predict_proba(X)          # every sequence running all steps
    # the default graph: OpenVINO freezes the optional inputs to their defaults, X alone
    path = tmp_path / "clf.onnx"
    to_onnx(est, path)
    compiled = core.compile_model(str(path), "CPU", f32)
    assert_close(compiled({"X": X})[compiled.output("probabilities")], expected)
    # required inputs: lengths and states are fed (OpenVINO 2026.4 does not stop a
    # sequence at its length, so only equal lengths agree: see fastrnn.onnx)
    to_onnx(est, path, optional_inputs=False)
    compiled = core.compile_model(str(path), "CPU", f32)
    zeros = np.zeros((4, len(X), 6), np.float32)
    lengths = np.full(len(X), X.shape[1], np.int32)
    result = compiled({"X": X, "sequence_lens": lengths, "h0": zeros, "c0": zeros})
    assert_close(result[compiled.output("probabilities")], expected)
