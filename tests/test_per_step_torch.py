"""Per-step estimators (taggers, sequence regressors), token input and the sequence-level
estimators against an independent PyTorch computation built from the same weights.

The fastrnn side is a real fitted estimator (one epoch, so the weights are no longer the
initial ones): a batch goes through ``m.model_.forward`` (training mode), ``m._loss`` and
``m.model_.backward`` -- what one step of fit does. The PyTorch side copies the fitted
weights into nn.Embedding / nn.LSTM | nn.GRU | nn.RNN / nn.Linear and computes, on a
RAGGED batch (lengths differ, several of length 1, the longest not first):

    pack_padded_sequence(enforce_sorted=False) -> rnn -> pad_packed_sequence
    -> Linear on every step -> the loss over the VALID steps only

(or, for the sequence-level estimators, Linear on h_n of the last layer, both
directions), and autograd. Compared: output rows, loss, every parameter gradient.

Nothing of the expected side goes through fastrnn's own input/target handling, except
where a test says so: the inputs are scaled with the fitted m.x_mean_ / m.x_scale_,
labels indexed into m.classes_, targets standardised with m.y_mean_ / m.y_scale_, and
token ids mapped to embedding rows by this file's own reading of the documented rule
(ids seen in fit keep their row; anything else -> the last, "unknown" row).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import (pack_padded_sequence, pad_packed_sequence,  # noqa: E402
                                pad_sequence)

from fastrnn import (GRUClassifier, GRUSequenceRegressor, GRUTagger,  # noqa: E402
                     LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor, LSTMTagger,
                     RNNClassifier, RNNSequenceRegressor, RNNTagger)

# tolerances: (rtol, atol) per dtype. float32: two different summation orders of
# float32 products; float64: the same, 2**29 times finer.
TOL_FLOAT32 = dict(rtol=1e-4, atol=1e-5)
TOL_FLOAT64 = dict(rtol=1e-9, atol=1e-12)
TOL = {"float32": TOL_FLOAT32, "float64": TOL_FLOAT64}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}

# lengths of the ragged batch: two of length 1, the longest in the middle, unsorted
LENGTHS = [4, 1, 7, 3, 1, 6, 2]
N_FEATURES = 3
HIDDEN = 5

TAGGERS = {"lstm": LSTMTagger, "gru": GRUTagger, "rnn": RNNTagger}
SEQ_REGRESSORS = {"lstm": LSTMSequenceRegressor, "gru": GRUSequenceRegressor,
                  "rnn": RNNSequenceRegressor}
CLASSIFIERS = {"lstm": LSTMClassifier, "gru": GRUClassifier, "rnn": RNNClassifier}
TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
CELL_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]

# the largest differences seen, per dtype and quantity: printed at the end (pytest -s)
MAX_DIFF = {}


@pytest.fixture(scope="module", autouse=True)
def _report_max_differences():
    yield
    for (dtype, what), (absd, reld) in sorted(MAX_DIFF.items()):
        print(f"\n[per-step vs torch] {dtype:7s} {what:10s} max |diff| {absd:.3e}  "
              f"max rel {reld:.3e}", end="")


def _close(actual, expected, dtype, what, name=""):
    """assert_allclose at the dtype's tolerance, recording the largest differences."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (name or what, actual.shape, expected.shape)
    diff = np.abs(actual - expected)
    absd = float(diff.max()) if diff.size else 0.0
    reld = float((diff / np.maximum(np.abs(expected), 1e-30)).max()) if diff.size else 0.0
    old = MAX_DIFF.get((dtype, what), (0.0, 0.0))
    MAX_DIFF[(dtype, what)] = (max(old[0], absd), max(old[1], reld))
    np.testing.assert_allclose(actual, expected, err_msg=f"{what} {name}", **TOL[dtype])


# ---------------------------------------------------------------- data

def ragged_floats(seed, lengths=LENGTHS, F=N_FEATURES):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T, F)) for T in lengths]


def step_labels(X):
    """Three classes per step, all of them present."""
    return [np.digitize(np.cumsum(x[:, 0]), [-0.5, 0.5]) for x in X]


def step_targets(X, k):
    ys = [np.stack([np.cumsum(x[:, 0]) * 3 + 1, x[:, 1] - 2 * x[:, 2]], axis=1)[:, :k]
          for x in X]
    return [y[:, 0] for y in ys] if k == 1 else ys


# ---------------------------------------------------------------- fastrnn side

def fastrnn_batch(m, X, y, sw, expected_targets):
    """Output rows, loss and gradients of one training batch, as fit computes them.

    y: the targets as a user passes them; sw: one weight per sequence. The estimator's
    own target rows (class indices / standardised values, from its fit-time path) must
    equal the ones this file computed for PyTorch."""
    seqs = m._transform_inputs(m._read_X_predict(X))
    xb, lb = seqs.values, seqs.lengths
    np.testing.assert_array_equal(lb, [len(x) for x in X])
    sw = np.asarray(sw, dtype=np.dtype(m.dtype))
    row_weights = np.repeat(sw, lb) if m._per_step else sw
    Y = m._prepare_targets(y, seqs, row_weights, True, None)   # fitted state kept
    if m._is_classifier:
        assert Y.dtype == np.int32
        np.testing.assert_array_equal(Y, expected_targets)
    else:
        assert Y.dtype == np.dtype(m.dtype)
        np.testing.assert_allclose(Y, expected_targets, rtol=1e-6 if m.dtype == "float32"
                                   else 1e-14, atol=0)
    out = m.model_.forward(xb, lb, True, 1)
    loss, d = m._loss(out, Y, row_weights, 1)
    grads = m.model_.backward(d, 1)
    return np.asarray(out).copy(), loss, grads


# ---------------------------------------------------------------- PyTorch side

def torch_modules(m, n_inputs):
    """nn.[Embedding], nn.LSTM | GRU | RNN(batch_first=True), nn.Linear holding m's
    fitted weights (copies: the two sides never share memory)."""
    tdt = TORCH_DTYPE[m.dtype]
    params = m.model_.params()
    kw = dict(num_layers=m.num_layers, bidirectional=m.bidirectional, batch_first=True,
              dtype=tdt)
    if m._cell == "rnn":
        kw["nonlinearity"] = m.nonlinearity
    rnn = TORCH_CELLS[m._cell](n_inputs, m.hidden_size, **kw)
    sd = rnn.state_dict()
    assert {"rnn." + k for k in sd} == {k for k in params if k.startswith("rnn.")}
    rnn.load_state_dict({k: torch.tensor(params["rnn." + k]) for k in sd})
    D = 2 if m.bidirectional else 1
    head = nn.Linear(D * m.hidden_size, params["head.weight"].shape[0], dtype=tdt)
    head.load_state_dict({"weight": torch.tensor(params["head.weight"]),
                          "bias": torch.tensor(params["head.bias"])})
    emb = None
    if "embedding.weight" in params:
        W = params["embedding.weight"]
        emb = nn.Embedding(W.shape[0], W.shape[1], dtype=tdt)
        emb.load_state_dict({"weight": torch.tensor(W)})
    return emb, rnn, head


def torch_inputs(m, X):
    """The float sequences scaled as the estimator learnt in fit, in its dtype, padded
    with zeros (packing ignores the padding anyway)."""
    dt = np.dtype(m.dtype)
    scaled = [(np.asarray(x, dtype=dt) - m.x_mean_.astype(dt)) / m.x_scale_.astype(dt)
              for x in X]
    return pad_sequence([torch.tensor(s) for s in scaled], batch_first=True)


def torch_forward(m, x, lengths, n_inputs):
    """(output rows, modules). Rows: Linear on every valid step, sample after sample,
    steps in order (per-step estimators); Linear on the last layer's h_n, forward then
    backward direction (sequence-level)."""
    emb, rnn, head = torch_modules(m, n_inputs)
    inp = emb(x) if emb is not None else x
    packed = pack_padded_sequence(inp, torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    out, state = rnn(packed)
    if m._per_step:
        padded, out_lengths = pad_packed_sequence(out, batch_first=True)
        assert out_lengths.tolist() == list(lengths)
        valid = torch.arange(padded.shape[1])[None, :] < torch.tensor(lengths)[:, None]
        rows = head(padded[valid])            # boolean mask: row-major = sample, step
    else:
        h_n = state[0] if isinstance(state, tuple) else state
        D = 2 if m.bidirectional else 1
        rows = head(torch.cat(list(h_n[-D:]), dim=1))
    return rows, (emb, rnn, head)


def torch_grads(modules):
    emb, rnn, head = modules
    g = {"rnn." + k: p.grad.numpy() for k, p in rnn.named_parameters()}
    g.update({"head." + k: p.grad.numpy() for k, p in head.named_parameters()})
    if emb is not None:
        g["embedding.weight"] = emb.weight.grad.numpy()
    return g


def compare_grads(grads, expected, dtype, *, sparse_rows=None):
    """Every parameter's gradient, and no parameter missing on either side."""
    assert set(grads) == set(expected)
    for k, v in expected.items():
        got = grads[k]
        if k == "embedding.weight":
            assert sparse_rows is not None
            # exactly the rows of the ids at valid positions, nothing of the padding
            assert set(np.asarray(got.rows).tolist()) == set(sparse_rows)
            assert len(got.rows) == len(set(sparse_rows))
            got = got.to_dense()
        _close(got, v, dtype, "gradient", k)


# ---------------------------------------------------------------- 1. per step, float input

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_tagger_matches_torch(cell, nonlinearity, num_layers, bidirectional, dtype):
    Xfit = ragged_floats(0, lengths=[5, 3, 8, 1, 6, 2, 7, 4])
    m = TAGGERS[cell](hidden_size=HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                      nonlinearity=nonlinearity, max_epochs=1, batch_size=4, dtype=dtype,
                      random_state=0).fit(Xfit, step_labels(Xfit))
    X = ragged_floats(1)
    y = step_labels(X)
    labels = np.concatenate(y)
    Y = np.searchsorted(m.classes_, labels)
    assert np.array_equal(m.classes_[Y], labels)
    out, loss, grads = fastrnn_batch(m, X, y, np.ones(len(X)), Y)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    t_loss = F.cross_entropy(rows, torch.tensor(Y, dtype=torch.long))
    t_loss.backward()

    assert out.shape == (sum(LENGTHS), len(m.classes_))
    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
    # the public inference path: the same rows, split back per sequence
    proba = m.predict_proba(X)
    t_proba = torch.softmax(rows.detach().double(), dim=1).numpy()
    assert [p.shape for p in proba] == [(T, len(m.classes_)) for T in LENGTHS]
    _close(np.concatenate(proba), t_proba, dtype, "outputs", "predict_proba")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_sequence_regressor_matches_torch(cell, nonlinearity, num_layers, bidirectional,
                                          dtype):
    k = num_layers          # one target per step with 1 layer, two with 2 layers
    Xfit = ragged_floats(2, lengths=[5, 3, 8, 1, 6, 2, 7, 4])
    m = SEQ_REGRESSORS[cell](hidden_size=HIDDEN, num_layers=num_layers,
                             bidirectional=bidirectional, nonlinearity=nonlinearity,
                             max_epochs=1, batch_size=4, dtype=dtype,
                             random_state=0).fit(Xfit, step_targets(Xfit, k))
    X = ragged_floats(3)
    y = step_targets(X, k)
    Yraw = np.concatenate(y).reshape(sum(LENGTHS), k)
    Ystd = ((Yraw - m.y_mean_) / m.y_scale_).astype(dtype)
    out, loss, grads = fastrnn_batch(m, X, y, np.ones(len(X)), Ystd)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    t_loss = F.mse_loss(rows, torch.tensor(Ystd))
    t_loss.backward()

    assert out.shape == (sum(LENGTHS), k)
    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
    # predict undoes the standardisation, in the structure of y
    pred = m.predict(X)
    assert [p.shape for p in pred] == [a.shape for a in y]
    t_pred = rows.detach().double().numpy() * m.y_scale_ + m.y_mean_
    _close(np.concatenate(pred).reshape(-1, k), t_pred, dtype, "outputs", "predict")


# ---------------------------------------------------------------- 2. class and sample weights

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("class_weight", ["dict", "balanced"])
def test_weighted_tagger_loss_matches_torch(class_weight, dtype):
    Xfit = ragged_floats(4, lengths=[5, 3, 8, 1, 6, 2, 7, 4])
    yfit = step_labels(Xfit)
    cw_param = {0: 3.0, 2: 0.25} if class_weight == "dict" else "balanced"
    m = GRUTagger(hidden_size=HIDDEN, num_layers=2, bidirectional=True, max_epochs=1,
                  batch_size=4, class_weight=cw_param, dtype=dtype,
                  random_state=0).fit(Xfit, yfit)
    # the class weights, computed here from the documented rule
    if class_weight == "dict":
        cw = np.array([cw_param.get(c, 1.0) for c in m.classes_])
    else:
        counts = np.array([np.sum(np.concatenate(yfit) == c) for c in m.classes_])
        cw = sum(counts) / (len(m.classes_) * counts)
    assert len(np.unique(cw)) > 1
    X = ragged_floats(5)
    y = step_labels(X)
    Y = np.searchsorted(m.classes_, np.concatenate(y))
    sw = np.array([2.0, 0.5, 1.0, 0.0, 3.0, 1.5, 1.0])   # one weight per sequence
    out, loss, grads = fastrnn_batch(m, X, y, sw, Y)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    w = torch.tensor(np.repeat(sw, LENGTHS) * cw[Y], dtype=TORCH_DTYPE[dtype])
    per_row = F.cross_entropy(rows, torch.tensor(Y, dtype=torch.long), reduction="none")
    t_loss = (per_row * w).sum() / w.sum()
    t_loss.backward()

    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
    # the weights matter: the unweighted mean is a different number
    assert abs(F.cross_entropy(rows, torch.tensor(Y, dtype=torch.long)).item() - loss) > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weighted_sequence_regressor_loss_matches_torch(dtype):
    Xfit = ragged_floats(6, lengths=[5, 3, 8, 1, 6, 2, 7, 4])
    m = LSTMSequenceRegressor(hidden_size=HIDDEN, bidirectional=True, max_epochs=1,
                              batch_size=4, dtype=dtype,
                              random_state=0).fit(Xfit, step_targets(Xfit, 2),
                                                  sample_weight=np.arange(1.0, 9.0))
    X = ragged_floats(7)
    y = step_targets(X, 2)
    Yraw = np.concatenate(y)
    Ystd = ((Yraw - m.y_mean_) / m.y_scale_).astype(dtype)
    sw = np.array([0.5, 4.0, 1.0, 2.0, 0.0, 1.0, 3.0])
    out, loss, grads = fastrnn_batch(m, X, y, sw, Ystd)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    w = torch.tensor(np.repeat(sw, LENGTHS), dtype=TORCH_DTYPE[dtype])
    per_row = F.mse_loss(rows, torch.tensor(Ystd), reduction="none").mean(dim=1)
    t_loss = (per_row * w).sum() / w.sum()
    t_loss.backward()

    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
    assert abs(F.mse_loss(rows, torch.tensor(Ystd)).item() - loss) > 1e-3


# ---------------------------------------------------------------- 3. token input

def ragged_tokens(seed, lengths, low, high):
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, size=T) for T in lengths]


def expected_rows(fit_X, X, vocab_size):
    """The documented mapping, computed here: an id seen in fit (and below the
    vocabulary size) keeps its row, any other id -> the last row."""
    seen = set(np.concatenate(fit_X).tolist())
    return [np.array([t if (t in seen and t < vocab_size) else vocab_size for t in x])
            for x in X]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", ["ragged", "ragged_unknown", "2d"])
@pytest.mark.parametrize("reach", ["tagger", "classifier"])
def test_token_input_matches_torch(reach, form, dtype):
    # ids 1..19 in fit, never 0 (so the padding 0 maps to the unknown row) nor 7
    fit_X = [np.array([t for t in x if t != 7]) for x in
             ragged_tokens(8, [6, 9, 3, 8, 5, 7, 9, 4, 6, 8], 1, 20)]
    fit_X = [x for x in fit_X if len(x)]
    if reach == "tagger":
        m = LSTMTagger(hidden_size=HIDDEN, embedding_dim=4, bidirectional=True,
                       max_epochs=1, batch_size=4, dtype=dtype, random_state=0)
        m.fit(fit_X, [x % 3 for x in fit_X])
    else:
        m = LSTMClassifier(hidden_size=HIDDEN, embedding_dim=4, num_layers=2,
                           bidirectional=True, max_epochs=1, batch_size=4, dtype=dtype,
                           random_state=0)
        m.fit(fit_X, np.arange(len(fit_X)) % 3)
    V = m.vocab_size_
    assert V == 20

    if form == "2d":          # all of length 5: the path without padding
        X = np.stack(ragged_tokens(9, [5] * 6, 1, 20))
        lengths = [5] * 6
        Xlist = list(X)
    else:
        lengths = LENGTHS
        high = 20 if form == "ragged" else 30     # 20..29: beyond the vocabulary
        Xlist = ragged_tokens(9, lengths, 1, high)
        if form == "ragged_unknown":
            Xlist[2][1] = 7                        # inside the vocabulary, never seen
        else:
            Xlist = [np.where(x == 7, 8, x) for x in Xlist]
        X = Xlist
    rows_ids = expected_rows(fit_X, Xlist, V)
    unknown = any((r == V).any() for r in rows_ids)
    assert unknown == (form == "ragged_unknown")
    # the estimator's own mapping agrees with the rule at every valid position
    mapped = m._transform_inputs(m._read_X_predict(X)).values
    for i, r in enumerate(rows_ids):
        np.testing.assert_array_equal(mapped[i, :len(r)], r)

    if reach == "tagger":
        labels = np.concatenate([x % 3 for x in Xlist])
    else:
        labels = np.array([x.sum() % 3 for x in Xlist])
    Y = np.searchsorted(m.classes_, labels)
    y = [x % 3 for x in Xlist] if reach == "tagger" else labels
    if form == "2d" and reach == "tagger":
        y = np.stack(y)
    out, loss, grads = fastrnn_batch(m, X, y, np.ones(len(Xlist)), Y)

    ids = pad_sequence([torch.tensor(r) for r in rows_ids], batch_first=True)
    rows, modules = torch_forward(m, ids, lengths, n_inputs=4)
    t_loss = F.cross_entropy(rows, torch.tensor(Y, dtype=torch.long))
    t_loss.backward()

    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    valid_ids = np.concatenate(rows_ids).tolist()
    compare_grads(grads, torch_grads(modules), dtype, sparse_rows=valid_ids)
    # the padding (id 0 -> the unknown row V) never receives a gradient
    if form != "2d" and not unknown:
        assert V not in set(np.asarray(grads["embedding.weight"].rows).tolist())


# ---------------------------------------------------------------- 4. sequence level

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
def test_sequence_classifier_matches_torch(cell, nonlinearity, num_layers, bidirectional,
                                          dtype):
    """The head on the last valid step of each sequence: torch's h_n of the last
    layer (packed, so each sequence's own last step; both directions)."""
    Xfit = ragged_floats(10, lengths=[5, 3, 8, 1, 6, 2, 7, 4, 3])
    yfit = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    m = CLASSIFIERS[cell](hidden_size=HIDDEN, num_layers=num_layers,
                          bidirectional=bidirectional, nonlinearity=nonlinearity,
                          max_epochs=1, batch_size=4, dtype=dtype,
                          random_state=0).fit(Xfit, yfit)
    X = ragged_floats(11)
    Y = np.array([2, 0, 1, 1, 0, 2, 1], dtype=np.int32)
    sw = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.0])
    out, loss, grads = fastrnn_batch(m, X, Y, sw, Y)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    w = torch.tensor(sw, dtype=TORCH_DTYPE[dtype])
    per_row = F.cross_entropy(rows, torch.tensor(Y, dtype=torch.long), reduction="none")
    t_loss = (per_row * w).sum() / w.sum()
    t_loss.backward()

    assert out.shape == (len(X), 3)
    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
    _close(m.predict_proba(X), torch.softmax(rows.detach().double(), 1).numpy(), dtype,
           "outputs", "predict_proba")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sequence_regressor_last_step_matches_torch(dtype):
    Xfit = ragged_floats(12, lengths=[5, 3, 8, 1, 6, 2, 7, 4])
    m = LSTMRegressor(hidden_size=HIDDEN, num_layers=2, bidirectional=True, max_epochs=1,
                      batch_size=4, dtype=dtype, random_state=0)
    m.fit(Xfit, np.array([x[:, 0].sum() * 4 + 1 for x in Xfit]))
    X = ragged_floats(13)
    y = np.array([x[:, 0].sum() * 4 + 1 for x in X])
    Ystd = ((y[:, None] - m.y_mean_) / m.y_scale_).astype(dtype)
    out, loss, grads = fastrnn_batch(m, X, y, np.ones(len(X)), Ystd)

    rows, modules = torch_forward(m, torch_inputs(m, X), LENGTHS, n_inputs=N_FEATURES)
    t_loss = F.mse_loss(rows, torch.tensor(Ystd))
    t_loss.backward()

    _close(out, rows.detach().numpy(), dtype, "outputs")
    _close(loss, t_loss.item(), dtype, "loss")
    compare_grads(grads, torch_grads(modules), dtype)
