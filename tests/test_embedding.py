"""fastrnn.embedding.Embedding and its C gradient (src_c/embedding.c): against PyTorch's
nn.Embedding and a numpy reference; bad input never crashes."""
import pickle

import numpy as np
import pytest

from fastrnn import _core
from fastrnn.embedding import Embedding
from fastrnn.layers import Embedding as ReExported
from fastrnn.sparse import RowSparseGrad


def batch(rng, V, B, T):
    ids = rng.integers(0, V, (B, T))
    lengths = rng.integers(1, T + 1, B)
    return ids, lengths


def valid_mask(lengths, T):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_matches_torch_forward_and_gradient(dtype, padding_idx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    V, E, B, T = 12, 5, 6, 9          # few ids over many positions: many repeats
    emb = Embedding(V, E, padding_idx=padding_idx, dtype=dtype, random_state=1)
    ids, lengths = batch(rng, V, B, T)
    ids[0, :3] = [3, 3, 0]            # repeated ids and the padding ids at valid positions
    out = emb.forward(ids, lengths, training=True)
    d_out = rng.normal(size=out.shape).astype(dtype)
    _, grads = emb.backward(d_out)
    g = grads["weight"]

    tdt = torch.float64 if dtype == np.float64 else torch.float32
    ref = torch.nn.Embedding(V, E, padding_idx=padding_idx).to(tdt)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(emb.params["weight"]))
    ot = ref(torch.tensor(ids))
    mask = torch.tensor(valid_mask(lengths, T), dtype=tdt)[..., None]
    (ot * torch.tensor(d_out) * mask).sum().backward()   # padding positions excluded

    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert out.dtype == dtype and out.shape == (B, T, E)
    np.testing.assert_array_equal(out, ot.detach().numpy())
    assert isinstance(g, RowSparseGrad) and g.values.dtype == dtype and g.shape == (V, E)
    np.testing.assert_allclose(g.to_dense(), ref.weight.grad.numpy(), rtol=tol, atol=tol)
    # the rows are exactly the distinct ids at valid positions (padding_idx left out),
    # in order of first appearance
    seen = [int(i) for i in ids[valid_mask(lengths, T)]]
    expected = list(dict.fromkeys(i for i in seen if i != padding_idx))
    assert g.rows.tolist() == expected


def test_gradient_sums_in_scan_order_and_map_is_reset():
    emb = Embedding(4, 2, dtype=np.float64)
    ids = np.array([[2, 1, 2], [1, 2, 0]])
    emb.forward(ids, lengths=[3, 2], training=True)
    d = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    _, g = emb.backward(d)
    g = g["weight"]
    assert g.rows.tolist() == [2, 1]
    np.testing.assert_array_equal(g.values, [d[0, 0] + d[0, 2] + d[1, 1], d[0, 1] + d[1, 0]])
    assert (emb._map == -1).all()


def test_init_statistics_padding_row_and_seed():
    emb = Embedding(2000, 64, padding_idx=5, random_state=0)
    W = emb.params["weight"]
    assert W.shape == (2000, 64) and W.dtype == np.float32
    assert not W[5].any()
    rest = np.delete(W, 5, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01
    np.testing.assert_array_equal(Embedding(2000, 64, padding_idx=5, random_state=0)
                                  .params["weight"], W)
    assert ReExported is Embedding
    assert Embedding(10, 2, padding_idx=-1).padding_idx == 9


@pytest.mark.parametrize("ids, exc, word", [
    (np.array([[0, -1]]), ValueError, "-1"),
    (np.array([[0, 10]]), ValueError, "10"),
    (np.array([[0.0, 1.0]]), TypeError, "integer"),
    (np.array([0, 1]), ValueError, "2-D"),
])
def test_bad_ids_raise_clear_errors(ids, exc, word):
    with pytest.raises(exc, match=word):
        Embedding(10, 3).forward(ids)


def test_bad_calls_raise():
    emb = Embedding(10, 3)
    with pytest.raises(RuntimeError, match="training"):
        emb.backward(np.zeros((1, 2, 3)))
    emb.forward(np.zeros((2, 4), dtype=int), training=True)
    with pytest.raises(ValueError, match="d_out"):
        emb.backward(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="lengths"):
        emb.forward(np.zeros((2, 4), dtype=int), lengths=[0, 5], training=True)
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(10, 3, padding_idx=10)
    with pytest.raises(TypeError, match="dtype"):
        Embedding(10, 3, dtype=np.int32)


def test_pickle_keeps_weights_drops_scratch():
    emb = Embedding(10, 3, padding_idx=0, dtype=np.float64, random_state=0)
    ids = np.array([[1, 2, 3]])
    emb.forward(ids, training=True)
    emb.backward(np.ones((1, 3, 3)))
    assert emb._map is not None
    clone = pickle.loads(pickle.dumps(emb))
    assert clone._map is None and clone._cache is None
    np.testing.assert_array_equal(clone.forward(ids), emb.forward(ids))


# ------------------------------------------------------------------ the core call
def core_args(V=6, E=2):
    ids = np.array([[1, 5, 1], [0, 0, 4]], dtype=np.int32)
    lengths = np.array([3, 2], dtype=np.int32)
    d_out = np.ones((2, 3, E))
    return dict(ids=ids, lengths=lengths, d_out=d_out, map=np.full(V, -1, np.int32),
                rows_out=np.empty(6, np.int32), values_out=np.empty((6, E)))


def call(a, **kw):
    return _core.embedding_backward(a["ids"], a["lengths"], a["d_out"], a["map"],
                                    a["rows_out"], a["values_out"], **kw)


def test_core_counts_and_skip_id():
    a = core_args()
    assert call(a) == 3 and a["rows_out"][:3].tolist() == [1, 5, 0]
    np.testing.assert_array_equal(a["values_out"][:3], [[2, 2], [1, 1], [2, 2]])
    assert call(a, skip_id=0) == 2 and a["rows_out"][:2].tolist() == [1, 5]


def test_core_map_not_all_minus_one_is_harmless():
    a = core_args()
    a["map"][:] = [3, 0, 7, -5, 2, 1]     # stale or garbage entries
    assert call(a) == 3 and a["rows_out"][:3].tolist() == [1, 5, 0]
    np.testing.assert_array_equal(a["values_out"][:3], [[2, 2], [1, 1], [2, 2]])
    assert a["map"][[0, 1, 5]].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("change, exc", [
    (lambda a: a["ids"].__setitem__((0, 1), 6), ValueError),          # id >= V
    (lambda a: a["ids"].__setitem__((0, 0), -2), ValueError),         # negative id
    (lambda a: a.update(ids=a["ids"].astype(np.int64)), TypeError),
    (lambda a: a.update(lengths=np.array([3, 4], np.int32)), ValueError),
    (lambda a: a.update(lengths=np.array([3], np.int32)), ValueError),
    (lambda a: a.update(d_out=np.ones((2, 3, 2), np.float32)), TypeError),   # values f64
    (lambda a: a.update(d_out=np.ones((2, 2, 2))), ValueError),
    (lambda a: a.update(rows_out=np.empty(2, np.int32), values_out=np.empty((2, 2))), ValueError),
    (lambda a: a.update(values_out=np.empty((6, 3))), ValueError),
    (lambda a: a.update(map=np.full(6, -1, np.int64)), TypeError),
    (lambda a: a.update(ids=np.zeros((2, 6), np.int32)[:, ::2]), ValueError),
])
def test_core_rejects_bad_input(change, exc):
    a = core_args()
    change(a)
    with pytest.raises(exc):
        call(a)
    assert (a["map"] == -1).all() or a["map"].dtype != np.int32
