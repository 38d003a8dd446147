"""Reading what users pass: X (floats or token ids; 3-D, 2-D or ragged), per-sequence or
per-step y, sample_weight, random_state. Every check names what is wrong; nothing here
knows about the network.

The forms of X:
  * 3-D array (n_samples, n_timesteps, n_features) of floats;
  * 2-D array (n_samples, n_timesteps): a batch of univariate series (floats), or of
    token-id sequences when the estimator has an embedding;
  * a list of arrays shaped (T_i, n_features) or (T_i,), lengths T_i free: a
    variable-length batch (the core's lengths; no padding leaks in).
With the estimators' `n_features` set, a 2-D float array is flat multivariate data: each
row holds n_timesteps * n_features values, step after step (the row of a C-ordered
(n_samples, n_timesteps, n_features) array), as tabular tools such as Dask hand them
over; a 1-D sequence in a list is read the same way.
Internally X becomes `Sequences`: a padded array, the lengths and the form it came in.
"""
import numbers

import numpy as np

from .._checks import all_finite

__all__ = ["Sequences", "read_X", "read_sample_weight", "make_rng", "rows_of", "flat_rows",
           "integer_weights", "virtual_index", "canonical_order", "row_moments",
           "read_step_targets", "split_rows"]


class Sequences:
    """Padded inputs: `values` (n, T, F) floats or (n, T) int64 token ids, `lengths` (n,)
    int64 in [1, T], `kind` '2d', '3d' or 'ragged' (how X came in), `tokens` bool."""

    __slots__ = ("values", "lengths", "kind", "tokens")

    def __init__(self, values, lengths, kind, tokens):
        self.values, self.lengths, self.kind, self.tokens = values, lengths, kind, tokens

    def __len__(self):
        return len(self.lengths)

    @property
    def steps(self):
        return self.values.shape[1]

    def subset(self, idx):
        return Sequences(self.values[idx], self.lengths[idx], self.kind, self.tokens)

    def step_rows(self, idx):
        """The valid steps of the sequences idx as rows (sum of their lengths, F), sample
        after sample, and their lengths: a reshape of the gathered values when none of
        them is padded, else the values under the mask of valid steps."""
        lb = self.lengths[idx]
        v = self.values[idx]
        if len(lb) and lb.min() == self.steps:
            return v.reshape(-1, v.shape[2]), lb
        return v[np.arange(self.steps) < lb[:, None]], lb


def _as_float_array(a, name, dtype):
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported")
    if a.dtype.kind in "US":
        raise TypeError(f"{name} must hold numbers, got strings (dtype {a.dtype}); "
                        f"convert it explicitly, e.g. {name}.astype(float)")
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must hold numbers: argument must be a string or a "
                            f"real number ({e})") from e
    elif a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    with np.errstate(over="ignore"):
        converted = np.asarray(a, dtype=dtype)
    if not all_finite(converted):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if a.dtype.kind in "fiu":
            raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name} "
                             f"(largest magnitude {float(np.abs(a).max()):g})")
        raise ValueError(f"{name} contains NaN or infinity")
    return converted


def _as_token_array(a, name):
    """Token ids as int64: an integer dtype, every id >= 0."""
    a = np.asarray(a)
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"{name} must hold integer token ids: {e}") from e
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids (embedding_dim is set, so X "
                        f"is read as tokens), got dtype {a.dtype}")
    if a.size and a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds token ids above 2**63 - 1")
    a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        bad = np.argwhere(a < 0)[0]
        raise ValueError(f"{name} holds a negative token id {int(a[tuple(bad)])} at position "
                         f"{tuple(int(i) for i in bad)}; ids must be >= 0")
    return a


def _unflatten(a, n_features, name):
    """(..., T * F) flat steps -> (..., T, F), checking that the row length divides."""
    cols = a.shape[-1]
    if cols % n_features:
        raise ValueError(f"{name} has {cols} values per {'row' if a.ndim == 2 else 'sequence'}"
                         f", not a multiple of n_features={n_features}: with n_features set, "
                         f"each row holds n_timesteps * n_features values, step after step")
    return a.reshape(a.shape[:-1] + (cols // n_features, n_features))


def _check_step_features(a, n_features, name):
    if n_features is not None and a.shape[-1] != n_features:
        raise ValueError(f"{name} has {a.shape[-1]} features per step, but n_features="
                         f"{n_features}")


def _ragged(X, dtype, tokens, n_features=None):
    """A list of sequences -> Sequences, or None when X is a regular list of equal
    shapes (then read as an array)."""
    try:
        arrs = [np.asarray(x) for x in X]
    except Exception as e:
        raise ValueError(f"X could not be read as a list of sequences: {e}") from e
    ndims = {a.ndim for a in arrs}
    shapes = {a.shape for a in arrs}
    if len(shapes) == 1 and ndims <= ({1} if tokens else {1, 2}):
        return None
    seqs = []
    for i, a in enumerate(arrs):
        if tokens:
            if a.ndim != 1:
                raise ValueError(f"X[{i}] must be a 1-D sequence of token ids, got shape "
                                 f"{a.shape}")
        elif a.ndim == 1:
            a = a[:, None] if n_features is None else _unflatten(a, n_features, f"X[{i}]")
        elif a.ndim != 2:
            raise ValueError(f"X[{i}] must be 2-D (steps, features) or 1-D, "
                             f"got shape {a.shape}")
        else:
            _check_step_features(a, n_features, f"X[{i}]")
        if a.shape[0] == 0:
            raise ValueError(f"X[{i}] is an empty sequence (0 steps)")
        seqs.append(_as_token_array(a, f"X[{i}]") if tokens
                    else _as_float_array(a, f"X[{i}]", dtype))
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if tokens:
        out = np.zeros((len(seqs), lengths.max()), dtype=np.int64)
    else:
        feats = {s.shape[1] for s in seqs}
        if len(feats) != 1:
            raise ValueError(f"all sequences of X must have the same number of features "
                             f"per step, got {sorted(feats)}")
        out = np.zeros((len(seqs), lengths.max(), feats.pop()), dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return Sequences(out, lengths, "ragged", tokens)


def read_X(X, dtype, tokens=False, n_features=None):
    """Sequences from any accepted form of X; `tokens`: X holds token ids; `n_features`:
    a 2-D float X (and a 1-D sequence in a list) holds that many features per step,
    flattened step after step."""
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X has 0 samples (an empty list); at least 1 is required")
    if isinstance(X, (list, tuple)) and all(hasattr(x, "__len__") for x in X):
        seqs = _ragged(X, dtype, tokens, n_features)
        if seqs is not None:
            return seqs
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse") \
            or hasattr(X, "tocsr"):
        raise TypeError("X: sparse input is not supported; pass a dense array")
    try:
        arr = np.asarray(X)
    except Exception as e:
        raise ValueError(f"X could not be converted to an array: {e}") from e
    if arr.ndim == 0 or arr.ndim == 1:
        raise ValueError(f"Expected 2D array, got {'scalar' if arr.ndim == 0 else '1D'} array "
                         f"instead: X must be (n_samples, n_timesteps[, n_features]) or a "
                         f"list of sequences. Reshape your data, e.g. X.reshape(-1, 1) for "
                         f"one step per sample or X.reshape(1, -1) for one sequence.")
    if arr.ndim > 3 or (tokens and arr.ndim == 3):
        what = "2-D (n_samples, n_timesteps) token ids" if tokens else "2-D or 3-D"
        raise ValueError(f"X must be {what}, got {arr.ndim}-D array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"X has 0 samples (shape {arr.shape}); at least 1 is required")
    if arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum "
                         f"of 1 is required: X has 0 steps.")
    if arr.ndim == 3 and arr.shape[2] == 0:
        raise ValueError(f"X has 0 features per step (shape {arr.shape})")
    if tokens:
        lengths = np.full(arr.shape[0], arr.shape[1], np.int64)
        return Sequences(np.ascontiguousarray(_as_token_array(arr, "X")), lengths, "2d", True)
    kind = "2d" if arr.ndim == 2 else "3d"
    arr = _as_float_array(arr, "X", dtype)
    if kind == "3d":
        _check_step_features(arr, n_features, "X")
    elif n_features is None:
        arr = arr[:, :, None]
    else:
        arr = _unflatten(arr, n_features, "X")
    lengths = np.full(arr.shape[0], arr.shape[1], np.int64)
    return Sequences(np.ascontiguousarray(arr), lengths, kind, False)


def read_sample_weight(sample_weight, n, dtype):
    """One non-negative weight per sequence (ones when None)."""
    if sample_weight is None:
        return np.ones(n, dtype=dtype)
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.dtype.kind not in "fiub":
        raise TypeError(f"sample_weight must be numeric, got dtype {sw.dtype}")
    sw = sw.astype(dtype)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)")
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (sw < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    if n > 0 and not (sw > 0).any():
        raise ValueError("Sample weights must contain at least one non-zero number")
    return sw


def make_rng(random_state):
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2 ** 31 - 1))
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.Generator)):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int, a RandomState or a Generator, "
                     f"got {random_state!r}")


# ---------------------------------------------------------------- per-step rows

def rows_of(starts, lengths):
    """Indices of the rows [starts[i], starts[i] + lengths[i]) of every i, in order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    firsts = np.cumsum(lengths) - lengths               # where each i's rows begin
    return np.repeat(starts - firsts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def flat_rows(lengths, steps):
    """Indices into a (n * steps) flattening of padded (n, steps, ...) data of every valid
    step, sample after sample: the order of per-step rows everywhere in fastrnn."""
    return rows_of(np.arange(len(lengths), dtype=np.int64) * steps, lengths)


def split_rows(rows, lengths):
    """Per-step rows (sum(lengths), ...) back into a list of (T_i, ...) arrays."""
    return np.split(rows, np.cumsum(lengths)[:-1])


def read_step_targets(y, X, name="y"):
    """Per-step targets y in the shape of X (a list of (T_i[, k]) arrays for ragged X, an
    array (n, T[, k]) otherwise) -> (rows (sum T_i[, k]), per-step ndim 1 or 2). Each
    y[i] must have as many steps as X[i]."""
    n, lengths = len(X), X.lengths
    if y is None:
        raise ValueError(f"{name} is None; a per-step estimator needs a target for every "
                         f"step of every sequence")
    if isinstance(y, (list, tuple)):
        if len(y) != n:
            raise ValueError(f"X and {name} have inconsistent numbers of samples: {n} and "
                             f"{len(y)}")
        parts = []
        for i, yi in enumerate(y):
            a = np.asarray(yi)
            if a.ndim == 0 or a.ndim > 2:
                raise ValueError(f"{name}[{i}] must hold one target per step of X[{i}] "
                                 f"(shape ({lengths[i]},) or ({lengths[i]}, k)), got shape "
                                 f"{a.shape}")
            if a.shape[0] != lengths[i]:
                raise ValueError(f"{name}[{i}] has {a.shape[0]} steps but X[{i}] has "
                                 f"{lengths[i]}: per-step targets must be as long as their "
                                 f"sequence")
            parts.append(a)
        ndims = {a.ndim for a in parts}
        if len(ndims) != 1 or len({a.shape[1:] for a in parts}) != 1:
            raise ValueError(f"all {name}[i] must have the same number of targets per step")
        return np.concatenate(parts, axis=0), ndims.pop()
    a = np.asarray(y)
    if X.kind == "ragged":
        raise ValueError(f"X is a list of sequences of different lengths, so {name} must be "
                         f"a list of per-step target arrays (one per sequence), got an "
                         f"array of shape {a.shape}")
    T = X.steps
    if a.ndim not in (2, 3) or a.shape[:2] != (n, T):
        raise ValueError(f"{name} must hold a target for every step: shape ({n}, {T}) or "
                         f"({n}, {T}, k) to match X, got shape {a.shape}")
    return a.reshape((n * T,) + a.shape[2:]), a.ndim - 1


# ---------------------------------------------------------------- weights as repetitions
# Integer sample weights act as repetitions: a sequence of weight k is trained on as k
# virtual copies of itself (an index array, never a copy of X), so every batch, every
# statistic learnt from the data and every random draw of fit is bitwise those of
# fitting X with the sequence repeated k times. With shuffle=True the training sequences
# are first put in a canonical order (by content), which makes fit independent of the
# order of the samples in X, and so of where the repeated copies stand.

MAX_VIRTUAL = 1 << 28     # virtual sequences (sum of integer weights) fit may train on


def integer_weights(sw):
    """True when every weight is a whole number (then they act as repetitions)."""
    return bool(np.all(sw == np.floor(sw)))


def virtual_index(sw):
    """The virtual sequences of integer weights: sequence i repeated sw[i] times, in
    order (np.repeat(arange(n), sw))."""
    total = float(np.sum(sw))
    if total > MAX_VIRTUAL:
        raise ValueError(f"integer sample_weight acts as repetitions, and these weights "
                         f"sum to {total:.0f} virtual samples per epoch (at most "
                         f"{MAX_VIRTUAL}); divide them by a common factor, or pass "
                         f"non-integer weights, which weight the loss instead")
    return np.repeat(np.arange(len(sw), dtype=np.int64), sw.astype(np.int64))


_MIX = np.random.default_rng(0x5EED).integers(1, 2 ** 63, size=4096, dtype=np.uint64) | 1


def _mix(h):
    """splitmix64's finaliser on an uint64 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _as_words(a):
    """Rows of a 2-D array as unsigned words of their bits (uint64 for 8-byte items, else
    the unsigned type of the item's size: a product with uint64 widens them exactly)."""
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _row_hash(a):
    """One uint64 per row of a 2-D array, from the bits of all its values."""
    n = a.shape[0]
    out = np.empty(n, dtype=np.uint64)
    cols = a.shape[1]
    step = max(1, (1 << 20) // max(cols, 1))
    with np.errstate(over="ignore"):
        for s in range(0, n, step):
            w = _as_words(a[s:s + step])
            h = np.zeros(w.shape[0], dtype=np.uint64)
            for c0 in range(0, cols, len(_MIX)):
                block = w[:, c0:c0 + len(_MIX)]
                # sum of the products mod 2**64 (any order: integers), no product array
                dot = np.einsum("ij,j->i", block, _MIX[:block.shape[1]], dtype=np.uint64)
                h = _mix(h + dot + np.uint64(c0))
            out[s:s + step] = h
    return out


def canonical_order(seqs, Y, per_step):
    """An order of the sequences that depends only on their contents (inputs, length and
    targets): identical sequences end up next to each other, and the same multiset of
    sequences gives the same ordered list whatever order it came in. Sorted by a 64-bit
    hash of the contents; sequences whose hashes collide are ordered by their bytes."""
    n = len(seqs)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    X2 = seqs.values.reshape(n, -1)
    with np.errstate(over="ignore"):
        hx = _mix(_row_hash(X2) ^ _mix(seqs.lengths.astype(np.uint64)))
        Y2 = Y.reshape(len(Y), -1)
        if per_step:
            starts = np.cumsum(seqs.lengths) - seqs.lengths
            pos = np.arange(len(Y2), dtype=np.int64) - np.repeat(starts, seqs.lengths)
            r = _mix(_row_hash(Y2) + pos.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            hy = np.add.reduceat(r, starts).astype(np.uint64)
        else:
            hy = _row_hash(Y2)
    order = np.lexsort((hy, hx))
    same = np.flatnonzero((hx[order][1:] == hx[order][:-1])
                          & (hy[order][1:] == hy[order][:-1]))
    if same.size and not _all_identical(seqs, Y, per_step, order[same], order[same + 1]):
        # a true collision (about 2**-64 per pair): order those by their bytes
        order = np.array(sorted(range(n), key=lambda i: (
            int(hx[i]), int(hy[i]), _sequence_bytes(seqs, Y, per_step, i))), dtype=np.int64)
    return order


def _sequence_bytes(seqs, Y, per_step, i):
    if per_step:
        start = int(np.sum(seqs.lengths[:i]))
        y = Y[start:start + int(seqs.lengths[i])]
    else:
        y = Y[i:i + 1]
    return (int(seqs.lengths[i]), seqs.values[i].tobytes(),
            np.ascontiguousarray(y).tobytes())


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) if a.dtype.kind == "f" else a


def _all_identical(seqs, Y, per_step, a, b):
    """Whether sequences a[j] and b[j] are bitwise identical (inputs, length, targets)
    for every j; vectorised over chunks of the pairs."""
    if not np.array_equal(seqs.lengths[a], seqs.lengths[b]):
        return False
    starts = np.cumsum(seqs.lengths) - seqs.lengths
    step = max(1, (1 << 20) // max(1, seqs.values[0].size))
    for s in range(0, len(a), step):
        ca, cb = a[s:s + step], b[s:s + step]
        if not np.array_equal(_bits(seqs.values[ca]), _bits(seqs.values[cb])):
            return False
        if per_step:
            ra = rows_of(starts[ca], seqs.lengths[ca])
            rb = rows_of(starts[cb], seqs.lengths[cb])
        else:
            ra, rb = ca, cb
        if not np.array_equal(_bits(Y[ra]), _bits(Y[rb])):
            return False
    return True


_BLOCK_BYTES = 1 << 20    # float64 rows row_moments widens and sums at a time


def row_moments(get_rows, index, weights=None):
    """Mean and standard deviation (float64, per column) of the rows of the sequences
    `index`, each sequence counted once per entry of `index`, or weighted by `weights`
    (one per entry). get_rows(idx) -> ((m, k) rows of the sequences idx in order (any
    real dtype: widened to float64 exactly; never written), rows per sequence
    (len(idx),)).

    The sums run over fixed chunks of `index` in its order, so the result is a
    deterministic function of the list of rows: virtual repetitions (repeated entries of
    `index`) give bitwise what the rows materialised and repeated give. Each chunk's
    sums are those of numpy's sum over all its rows at once (see _chunk_sums), though
    its rows are fetched and widened a group of sequences at a time."""
    index = np.asarray(index, dtype=np.int64)
    chunk = 1024
    mean = None
    for second in (False, True):
        acc, cnt = 0.0, 0.0
        for s in range(0, len(index), chunk):
            w = None if weights is None else np.asarray(weights[s:s + chunk], np.float64)
            sums, count = _chunk_sums(get_rows, index[s:s + chunk], w,
                                      mean if second else None)
            acc = acc + sums
            cnt += count
        if second:
            return mean, np.sqrt(acc / cnt)
        mean = acc / cnt


def _chunk_sums(get_rows, idx, w=None, mean=None):
    """Column sums over the rows R of the sequences idx (all their rows, in order), and
    their count, bit for bit as the plain expressions
        X = R.astype(float64) [- mean] [** 2] [* wr[:, None]];  X.sum(axis=0)
        len(R), or wr.sum() with wr = np.repeat(w, rows per sequence)
    give them (the square with `mean`, the weights with `w`), for C-ordered rows R (as
    every get_rows of fit returns them; the sums of other layouts are those of their
    C-ordered copy).

    With two or more columns numpy adds the rows of a C-contiguous array one after the
    other, so the rows can come a group of sequences at a time (about _BLOCK_BYTES of
    float64 rows) into a small float64 buffer, the running sums carried in as the
    group's first row: no copy of the chunk's rows in either dtype (nor their page
    faults), each group summed while in cache. One column (numpy then sums pairwise)
    takes the plain expressions over the whole chunk."""
    R, per_seq = get_rows(idx[:8])
    R = np.asarray(R)
    if R.ndim != 2 or R.shape[1] < 2:
        return _plain_sums(*get_rows(idx), w, mean)
    k = R.shape[1]
    target = max(1, _BLOCK_BYTES // (8 * k))              # rows per group
    buf = np.empty((1, k))
    sums, counts, start, rows = None, [per_seq], 0, 0
    while True:
        m = len(R)
        if len(buf) < m + 1:
            buf = np.empty((m + 1, k))
        block = buf[1:m + 1]
        block[...] = R
        if mean is not None:
            np.subtract(block, mean, out=block)
            np.square(block, out=block)
        if w is not None:
            wr = np.repeat(w[start:start + len(per_seq)], per_seq)
            np.multiply(block, wr[:, None], out=block)
        if sums is None:
            sums = block.sum(axis=0)
        else:
            buf[0] = sums
            sums = buf[:m + 1].sum(axis=0)
        start += len(per_seq)
        rows += m
        if start >= len(idx):
            break
        # the next group: about `target` rows, from the rows per sequence seen so far
        g = max(1, target * start // max(rows, 1))
        R, per_seq = get_rows(idx[start:start + g])
        R = np.asarray(R)
        counts.append(per_seq)
    if w is None:
        return sums, float(rows)
    return sums, float(np.repeat(w, np.concatenate(counts)).sum())


def _plain_sums(R, per_seq, w, mean):
    X = np.asarray(R).astype(np.float64, order="C")
    if mean is not None:
        X = np.square(np.subtract(X, mean, out=X), out=X)
    if w is None:
        return X.sum(axis=0), float(X.shape[0])
    wr = np.repeat(w, per_seq)
    return np.multiply(X, wr[:, None], out=X).sum(axis=0), float(wr.sum())
