"""Row-sparse gradients: the gradient of an embedding table touches only the rows of the
tokens in the batch, so it is kept as (rows, values) instead of a (vocabulary, dim)
array of mostly zeros. Optimizers and clipping accept it (fastrnn.optim) and update
those rows alone ("lazy" updates, as PyTorch's SparseAdam and TensorFlow's LazyAdam)."""
import numpy as np

__all__ = ["RowSparseGrad"]


class RowSparseGrad:
    """Gradient of a parameter of shape `shape` = (n_rows, ...) that is zero except on
    `rows`: ``dense[rows[i]] = values[i]``. `rows` are distinct int64 indices, `values`
    has shape (len(rows),) + shape[1:]."""

    __slots__ = ("rows", "values", "shape")

    def __init__(self, rows, values, shape):
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(values)
        shape = tuple(int(s) for s in shape)
        if rows.ndim != 1 or values.shape != (len(rows),) + shape[1:]:
            raise ValueError(f"RowSparseGrad: values of shape {values.shape} do not match "
                             f"{len(rows)} rows of a {shape} parameter")
        if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
            raise ValueError(f"RowSparseGrad: rows must lie in [0, {shape[0]})")
        self.rows, self.values, self.shape = rows, values, shape

    @property
    def dtype(self):
        return self.values.dtype

    def to_dense(self):
        """The gradient as a full array of `shape` (for tests and for small tables)."""
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out[self.rows] = self.values
        return out

    def __repr__(self):
        return f"RowSparseGrad({len(self.rows)} of {self.shape[0]} rows, shape={self.shape})"
