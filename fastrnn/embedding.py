"""Embedding: token ids to learned vectors, with a row-sparse gradient.

Layout, initialization and padding_idx are PyTorch's nn.Embedding, so its
``state_dict()`` converted to numpy loads as ``params``. Re-exported by fastrnn.layers.
The gradient touches only the rows of the ids in the batch; it is returned as a
fastrnn.sparse.RowSparseGrad, built in C (src_c/embedding.c) in one pass over the tokens.
"""
import numpy as np

from . import _core
from ._checks import _check_dtype, _check_positive_int, checked_params
from .sparse import RowSparseGrad

__all__ = ["Embedding"]


class Embedding:
    """Lookup of rows of a table: out[b, t] = W[ids[b, t]].

    Shapes: ids (B, T) integers in [0, num_embeddings), W = params['weight']
    (num_embeddings, embedding_dim), out (B, T, embedding_dim). Position t of sample b
    is valid when t < lengths[b] (default: all). Given dL/dout, backward computes::

        dW[v] = sum of dL/dout[b, t] over valid positions (b, t) with ids[b, t] == v

    returned for the ids that occur only (rows in order of first appearance, b then t;
    each sum in that order, so the result is deterministic). The row of ``padding_idx``
    gets no gradient, as in PyTorch.

    Initialization (nn.Embedding's default): W ~ N(0, 1), the padding_idx row zero.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32,
                 random_state=None):
        self.num_embeddings = _check_positive_int(num_embeddings, "num_embeddings", 2**31 - 1)
        self.embedding_dim = _check_positive_int(embedding_dim, "embedding_dim", 2**31 - 1)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
                raise TypeError(f"padding_idx must be an integer or None, got "
                                f"{type(padding_idx).__name__}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must lie in [-{self.num_embeddings}, "
                                 f"{self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings   # PyTorch's convention
        self.padding_idx = padding_idx
        self.dtype = _check_dtype(dtype)
        rng = np.random.default_rng(random_state)
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.params = {"weight": weight.astype(self.dtype)}
        self._cache = None   # (ids, lengths) of the last training forward
        self._map = None     # int32 scratch of num_embeddings entries, all -1

    def param_shapes(self):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def _check_ids(self, ids):
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integer token ids, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"ids must be 2-D (batch, steps), got shape {arr.shape}")
        if arr.size:
            lo, hi = arr.min(), arr.max()
            bad = lo if lo < 0 else hi if hi >= self.num_embeddings else None
            if bad is not None:
                raise ValueError(f"ids must lie in [0, {self.num_embeddings}) "
                                 f"(num_embeddings), got id {bad}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def forward(self, ids, lengths=None, training=False):
        """Rows of the table for ids (B, T): returns (B, T, embedding_dim). Every id,
        padding positions included, must lie in [0, num_embeddings). With
        ``training=True`` ids and lengths are kept for the following ``backward``."""
        ids = self._check_ids(ids)
        B, T = ids.shape
        if lengths is not None or training:
            from .layers import _Recurrent   # the recurrent layers' own lengths check
            lengths = _Recurrent._check_lengths(lengths, B, T)
        W = checked_params(self.params, self.param_shapes(), self.dtype)["weight"]
        out = np.empty((B, T, self.embedding_dim), dtype=self.dtype)
        np.take(W, ids, axis=0, out=out)
        self._cache = (ids, lengths) if training else None
        return out

    def backward(self, d_out):
        """Gradient of the last training forward given d_out = dL/dout (B, T, dim).

        Returns ``(None, {'weight': RowSparseGrad})`` (ids have no gradient)."""
        if self._cache is None:
            raise RuntimeError("backward needs a preceding forward(ids, training=True)")
        ids, lengths = self._cache
        B, T = ids.shape
        d_out = np.asarray(d_out)
        if d_out.dtype.kind not in "fiub":
            raise TypeError(f"d_out must hold real numbers, got dtype {d_out.dtype}")
        expected = (B, T, self.embedding_dim)
        if d_out.shape != expected:
            raise ValueError(f"d_out must have shape {expected}, got {d_out.shape}")
        d_out = np.ascontiguousarray(d_out, dtype=self.dtype)
        V = self.num_embeddings
        if self._map is None:
            self._map = np.full(V, -1, dtype=np.int32)
        cap = max(1, min(V, int(lengths.sum(dtype=np.int64))))
        rows = np.empty(cap, dtype=np.int32)
        values = np.empty((cap, self.embedding_dim), dtype=self.dtype)
        skip = -1 if self.padding_idx is None else self.padding_idx
        count = _core.embedding_backward(ids, lengths, d_out, self._map, rows, values,
                                         skip_id=skip)
        grad = RowSparseGrad(rows[:count], values[:count], (V, self.embedding_dim))
        return None, {"weight": grad}

    # pickles carry the parameters, not the batch kept for backward nor the scratch map
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_map"] = None
        return state

    def __repr__(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}{pad}, "
                f"dtype={self.dtype.name})")
