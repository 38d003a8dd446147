"""What fit computes before and around its training batches: the feature moments
(row_moments over the valid steps, virtual repetitions bitwise as materialised rows),
the scaling of the inputs, the content hash of the canonical order and the initial loss
of the divergence check. Each is checked against a plain numpy computation, and where
fit promises bits, bit for bit."""
import copy
import os
import sys

import numpy as np
import pytest

from fastrnn import (GRUClassifier, LSTMClassifier, LSTMSequenceRegressor,
                     RNNRegressor, RNNTagger)
from fastrnn.estimators import _base, _inputs, _training
from fastrnn.estimators._network import SequenceModel
from fastrnn.estimators._inputs import read_X, row_moments, rows_of, virtual_index

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit_probes import record_snapshots  # noqa: E402


def sequences(n, full, F=3, T=7, seed=0, dtype=np.float32):
    """n sequences of F features (all of T steps, or of 1..T steps), as fit reads them."""
    rng = np.random.default_rng(seed)
    lengths = np.full(n, T) if full else rng.integers(1, T + 1, size=n)
    X = [(rng.normal(size=(int(t), F)) * rng.uniform(0.1, 5, size=F) + 3).astype(dtype)
         for t in lengths]
    return read_X(np.stack(X) if full else X, np.dtype(dtype))


def masked_rows(seqs, idx):
    """The valid steps of the sequences idx, sample after sample, through the mask."""
    v, lb = seqs.values[idx], seqs.lengths[idx]
    return v[np.arange(seqs.steps) < lb[:, None]]


def materialising_row_moments(seqs, index, weights=None):
    """The algorithm row_moments replaced: every chunk's rows copied to float64 for each
    pass, fetched twice; row_moments must give these bits."""
    index = np.asarray(index, dtype=np.int64)
    mean = None
    for second in (False, True):
        acc, cnt = 0.0, 0.0
        for s in range(0, len(index), 1024):
            idx = index[s:s + 1024]
            R = masked_rows(seqs, idx).astype(np.float64)
            if second:
                R = (R - mean) ** 2
            if weights is None:
                acc = acc + R.sum(axis=0)
                cnt += float(R.shape[0])
            else:
                wr = np.repeat(np.asarray(weights[s:s + 1024], dtype=np.float64),
                               seqs.lengths[idx])
                acc = acc + (R * wr[:, None]).sum(axis=0)
                cnt += float(wr.sum())
        if second:
            return mean, np.sqrt(acc / cnt)
        mean = acc / cnt


# 1300 sequences: the sums run over two chunks of index (1024 entries each)
CASES = [(full, weighting) for full in (True, False)
         for weighting in ("none", "repeats", "float")]


def index_and_weights(n, weighting, seed=1):
    rng = np.random.default_rng(seed)
    if weighting == "none":
        return rng.permutation(n), None
    if weighting == "repeats":
        return rng.permutation(virtual_index(rng.integers(0, 4, size=n).astype(float))), None
    return rng.permutation(n), rng.uniform(0.1, 3, size=n)


@pytest.mark.parametrize("full,weighting", CASES)
@pytest.mark.parametrize("block", [None, 50, 1], ids=["1 MB groups", "groups of ~50 rows",
                                                      "one sequence a group"])
def test_row_moments_agree_with_numpy_and_keep_the_bits(full, weighting, block,
                                                        monkeypatch):
    """Against np.average over the materialised (repeated, weighted) valid rows, and bit
    for bit against the algorithm it replaced (every chunk's rows at once), however the
    rows of a chunk are grouped on their way to the sums."""
    if block:
        monkeypatch.setattr(_inputs, "_BLOCK_BYTES", block * 3 * 8)
    seqs = sequences(1300, full)
    index, weights = index_and_weights(len(seqs), weighting)
    mean, std = row_moments(seqs.step_rows, index, weights)

    rows = masked_rows(seqs, index).astype(np.float64)
    w = None if weights is None else np.repeat(weights, seqs.lengths[index])
    ref_mean = np.average(rows, axis=0, weights=w)
    ref_std = np.sqrt(np.average((rows - ref_mean) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(std, ref_std, rtol=1e-10)

    old_mean, old_std = materialising_row_moments(seqs, index, weights)
    np.testing.assert_array_equal(mean, old_mean)
    np.testing.assert_array_equal(std, old_std)


def rows_source(lengths, cols, dtype, seed, order="C"):
    """get_rows over synthetic sequences of the given lengths: their rows in order (in
    the memory order `order`), the rows per sequence; and all rows (in float64)."""
    rng = np.random.default_rng(seed)
    total = int(np.sum(lengths))
    big = rng.normal(size=(total, cols)) * np.exp(rng.normal(size=(total, cols)) * 4)
    rows = (big * 50).astype(dtype) if np.dtype(dtype).kind == "i" else big.astype(dtype)
    starts = np.cumsum(lengths) - lengths

    def get_rows(idx):
        picked = rows[rows_of(starts[idx], lengths[idx])]
        if order == "C-then-F":       # the layout changes with the size of the request
            return np.asarray(picked, order="C" if len(idx) <= 8 else "F"), lengths[idx]
        return np.asarray(picked, order=order), lengths[idx]
    return get_rows, rows


@pytest.mark.parametrize("cols", [1, 2, 3, 32])
@pytest.mark.parametrize("n_seqs", [1, 9, 700])
@pytest.mark.parametrize("block", [1, 2, 64, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_chunk_sums_are_the_plain_expression_bit_for_bit(cols, n_seqs, block, dtype,
                                                         monkeypatch):
    """A chunk's rows fetched in groups of sequences, each group's sums carried into the
    next, add what numpy's sum over all the chunk's float64 rows adds, in its order:
    plain, squared deviations, weighted, both; the count (rows, or their weight) too.
    For one column (summed pairwise by numpy), rows that come non-contiguous, groups of
    one sequence or one row and more. Rows in another layout (numpy would sum those of
    an F-ordered array pairwise) give the sums of their C-ordered copy."""
    if block:
        monkeypatch.setattr(_inputs, "_BLOCK_BYTES", block * cols * 8)
    rng = np.random.default_rng(n_seqs * cols)
    lengths = rng.integers(1, 9, size=n_seqs)
    idx = rng.permutation(np.repeat(np.arange(n_seqs), 2))[:max(1, n_seqs)]
    mean = rng.normal(size=cols) * 3
    w = rng.uniform(0, 3, size=len(idx))
    for order in ("C", "F", "C-then-F"):
        get_rows, rows = rows_source(lengths, cols, dtype, n_seqs, order)
        X = get_rows(idx)[0].astype(np.float64, order="C")
        wr = np.repeat(w, lengths[idx])
        for m, ww in ((None, None), (mean, None), (None, w), (mean, w)):
            plain = X if m is None else (X - m) ** 2
            plain = plain if ww is None else plain * wr[:, None]
            sums, count = _inputs._chunk_sums(get_rows, idx, ww, m)
            np.testing.assert_array_equal(sums, plain.sum(axis=0))
            np.testing.assert_array_equal(np.signbit(sums), np.signbit(plain.sum(axis=0)))
            assert count == (float(len(X)) if ww is None else float(wr.sum()))


@pytest.mark.parametrize("full", [True, False], ids=["full-length", "ragged"])
def test_row_moments_of_float64_rows_leave_them_alone(full):
    """Rows handed over in float64 (targets, float64 inputs) are not a copy of
    row_moments' own: its second pass must not write over them."""
    seqs = sequences(50, full, dtype=np.float64)
    before = seqs.values.copy()
    index = np.arange(len(seqs))
    kept = {}

    def rows_of_values(idx):            # a view into seqs.values when idx is all of them
        if full and len(idx) == len(seqs):
            kept["rows"] = seqs.values.reshape(-1, 3)
            return kept["rows"], seqs.lengths[idx]
        return seqs.step_rows(idx)
    mean, std = row_moments(rows_of_values, index)
    np.testing.assert_array_equal(seqs.values, before)
    ref = materialising_row_moments(seqs, index)
    np.testing.assert_array_equal(mean, ref[0])
    np.testing.assert_array_equal(std, ref[1])


def test_full_length_step_rows_are_a_reshape_equal_to_the_masked_rows():
    """No sequence padded: the rows are the gathered values reshaped (no mask, no
    copy of their own); with padding they go through the mask. Same values either
    way, in the same order and dtype."""
    idx = np.random.default_rng(0).permutation(40)[:30]
    full = sequences(40, True)
    rows, lb = full.step_rows(idx)
    assert not rows.flags.owndata and rows.base.shape == (30, full.steps, 3)
    np.testing.assert_array_equal(lb, full.lengths[idx])
    masked = masked_rows(full, idx)
    assert rows.dtype == masked.dtype and rows.shape == masked.shape
    np.testing.assert_array_equal(rows, masked)
    ragged = sequences(40, False)
    rows, lb = ragged.step_rows(idx)
    assert rows.flags.owndata
    np.testing.assert_array_equal(rows, masked_rows(ragged, idx))
    # full-length sequences picked out of a ragged batch also take the reshape
    longest = np.flatnonzero(ragged.lengths == ragged.steps)
    assert len(longest) >= 2
    rows, _ = ragged.step_rows(longest)
    assert not rows.flags.owndata
    np.testing.assert_array_equal(rows, masked_rows(ragged, longest))


@pytest.mark.parametrize("full", [True, False], ids=["full-length", "ragged"])
@pytest.mark.parametrize("block", [None, 70, 1], ids=["1 MB groups", "groups of ~70 rows",
                                                      "one sequence a group"])
def test_integer_weights_give_the_bits_of_materialised_rows(full, block, monkeypatch):
    """Virtual repetitions (repeated entries of index) give bitwise the moments of the
    sequences materialised and repeated, across chunk boundaries (sum of the weights
    above 1024), however the rows are grouped on their way to the sums."""
    if block:
        monkeypatch.setattr(_inputs, "_BLOCK_BYTES", block * 3 * 8)
    seqs = sequences(700, full)
    sw = np.random.default_rng(2).integers(0, 5, size=len(seqs)).astype(float)
    index = virtual_index(sw)
    assert len(index) > 1024
    virtual = row_moments(seqs.step_rows, index)
    listed = [seqs.values[i, :seqs.lengths[i]] for i in index]
    rep = read_X(np.stack(listed) if full else listed, np.dtype(np.float32))
    if not full:
        assert rep.kind == "ragged"
    materialised = row_moments(rep.step_rows, np.arange(len(rep)))
    for a, b in zip(virtual, materialised):
        np.testing.assert_array_equal(a, b)


def test_fit_scales_inputs_in_float32_as_the_plain_expression_and_leaves_X_alone():
    """fit and predict scale (values - mean) / scale in the estimator's dtype, bit for
    bit as the plain numpy expression, into a new array: the caller's X (which read_X
    does not copy when it is C-contiguous float32) is never written."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(30, 6, 4)) * 7 + 2).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 14).astype(int)
    before = X.copy()
    m = LSTMClassifier(hidden_size=5, max_epochs=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(X, before)
    m.predict(X)
    np.testing.assert_array_equal(X, before)
    seqs = m._read_X(X)
    assert np.shares_memory(seqs.values, X)
    out = m._transform_inputs(seqs).values
    assert not np.shares_memory(out, X) and out.dtype == np.float32
    mean, scale = m.x_mean_.astype(np.float32), m.x_scale_.astype(np.float32)
    np.testing.assert_array_equal(out, (X - mean) / scale)
    np.testing.assert_array_equal(X, before)


def widened_row_hash(a):
    """The hash as first written: every word widened to uint64, then multiplied."""
    a = np.ascontiguousarray(a)
    w = a.view(np.dtype(f"u{a.dtype.itemsize}")).astype(np.uint64)
    h = np.zeros(len(a), dtype=np.uint64)
    mix = _inputs._MIX
    with np.errstate(over="ignore"):
        for c0 in range(0, w.shape[1], len(mix)):
            block = w[:, c0:c0 + len(mix)]
            h = _inputs._mix(h + (block * mix[:block.shape[1]]).sum(axis=1, dtype=np.uint64)
                             + np.uint64(c0))
    return h


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.int8,
                                   np.bool_, np.float16])
@pytest.mark.parametrize("shape", [(5, 1), (300, 9000), (700, 3)])
def test_row_hash_is_the_hash_of_widened_words(dtype, shape):
    """The content hash (and so the canonical order fit trains in) is that of the words
    widened to uint64, over several mix blocks (9000 columns) and row blocks."""
    a = (np.random.default_rng(0).normal(size=shape) * 1000).astype(dtype)
    np.testing.assert_array_equal(_inputs._row_hash(a), widened_row_hash(a))


def first_batch_probe(monkeypatch, est):
    """Records the initial loss fit settles on (what the divergence check compares the
    last epoch with), and the first batch the fit trains on."""
    seen = {}
    orig_batch = _training.TrainingData.batch
    orig_report = _training._report_divergence
    orig_train = _training.train_epochs

    def train_epochs(est_, data, tr, *a):
        seen.setdefault("tr", (data, tr.copy()))
        return orig_train(est_, data, tr, *a)

    def batch(self, b):
        out = orig_batch(self, b)
        seen.setdefault("batch", tuple(np.copy(a) for a in out))
        return out

    def report(est_, start, losses, best):
        seen["start"] = start
        return orig_report(est_, start, losses, best)
    monkeypatch.setattr(_training.TrainingData, "batch", batch)
    monkeypatch.setattr(_training, "_report_divergence", report)
    monkeypatch.setattr(_base, "train_epochs", train_epochs)
    return seen


INITIAL_LOSS_CASES = [
    (LSTMClassifier, {}),
    (LSTMClassifier, dict(num_layers=2, dropout=0.5)),
    (RNNTagger, dict(num_layers=2, dropout=0.3, bidirectional=True)),
    (LSTMClassifier, dict(shuffle=False)),
    (LSTMClassifier, dict(shuffle=False, num_layers=2, dropout=0.5)),
    (LSTMSequenceRegressor, dict(shuffle=False)),
    (GRUClassifier, dict(shuffle=False, bidirectional=True, num_layers=2)),
    (RNNRegressor, dict(shuffle=False, dtype="float64")),
    (GRUClassifier, dict(shuffle=False, embedding_dim=4)),
]
INITIAL_LOSS_IDS = ["shuffled", "shuffled-dropout", "tagger-dropout", "in-order",
                    "in-order-dropout", "in-order-per-step", "in-order-gru-bidir-2-layers",
                    "in-order-rnn-float64", "in-order-tokens"]


def initial_loss_data(cls, kw):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 50)
    if kw.get("embedding_dim"):
        X = [rng.integers(0, 20, size=int(t)) for t in lengths]
        return X, np.array([int(x.sum() > 9 * len(x)) for x in X])
    X = [rng.normal(size=(int(t), 3)).astype(np.float32) for t in lengths]
    if cls is RNNTagger:
        return X, [(np.cumsum(x[:, 0]) > 0).astype(int) for x in X]
    if cls is LSTMSequenceRegressor:
        return X, [np.cumsum(x[:, :2], axis=0) for x in X]
    if cls._is_classifier:
        return X, np.array([int(x[:, 0].sum() > 0) for x in X])
    return X, np.array([x[:, 0].sum() for x in X])


@pytest.mark.parametrize("cls,kw", INITIAL_LOSS_CASES, ids=INITIAL_LOSS_IDS)
def test_initial_loss_is_the_inference_loss_of_the_first_batch(cls, kw, monkeypatch):
    """The loss the divergence check starts from is the loss of the initial weights on
    the first batch of the training sequences, tr[:batch_size], in inference mode (no
    dropout), bit for bit: whether computed by a forward of its own or, without
    shuffling or dropout, taken from the first training batch (which is then that
    batch, and whose training forward is then the inference forward)."""
    X, y = initial_loss_data(cls, kw)
    m = cls(hidden_size=6, batch_size=8, max_epochs=2, random_state=0, **kw)
    seen = first_batch_probe(monkeypatch, m)
    snaps = record_snapshots(monkeypatch)
    m.fit(X, y)
    ref = copy.deepcopy(m)
    for k, v in ref.model_.params().items():
        v[...] = snaps[0][k]                          # the weights fit started from
    xb, lb, yb, wb = seen["batch"]
    data, tr = seen["tr"]
    for got, want in zip(seen["batch"], data.batch(tr[:8])):     # the batch tr[:8]
        np.testing.assert_array_equal(got, want)
    if not m.shuffle:                                 # fit's order is that of X
        np.testing.assert_array_equal(lb, [len(x) for x in X[:8]])
    loss = ref._loss(ref.model_.forward(xb, lb, False, 1), yb, wb, 1)[0]
    assert np.isfinite(loss) and seen["start"] == float(loss)
    if kw.get("dropout"):
        # the distinction is real here: a training forward draws dropout masks
        train_loss = ref._loss(ref.model_.forward(xb, lb, True, 1), yb, wb, 1)[0]
        assert train_loss != loss


@pytest.mark.parametrize("kw,inference_forwards", [
    (dict(), 1), (dict(shuffle=False), 0), (dict(shuffle=False, num_layers=2, dropout=0.5), 1),
    (dict(shuffle=False, num_layers=2), 0)])
def test_the_first_training_batch_gives_the_initial_loss_when_it_can(kw, inference_forwards,
                                                                     monkeypatch):
    """Without shuffling or dropout, fit runs no inference forward for its initial loss:
    the first training batch's loss is it. Otherwise one inference forward runs."""
    X, y = initial_loss_data(LSTMClassifier, kw)
    m = LSTMClassifier(hidden_size=6, batch_size=8, max_epochs=2, random_state=0, **kw)
    calls = []
    orig = SequenceModel.forward

    def forward(self, xb, lengths, training, *a, **k):
        calls.append(training)
        return orig(self, xb, lengths, training, *a, **k)
    monkeypatch.setattr(SequenceModel, "forward", forward)
    m.fit(X, y)
    assert calls.count(False) == inference_forwards
    assert calls.count(True) == 2 * 7                 # 2 epochs of 7 batches
