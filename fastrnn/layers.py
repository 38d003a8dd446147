"""Recurrent layers: LSTM, GRU and RNN with explicit forward/backward pairs (no autograd).

Each layer stacks `num_layers` layers of one or two directions; every layer-direction
is one call into the C core (fastrnn._core -> src_c/recurrence.c). This module owns
the parameters (a dict of numpy arrays under PyTorch's names, shapes and gate order,
so a PyTorch ``state_dict()`` converted to numpy loads as is), validates every input
with a message naming the argument, and applies dropout between layers. Input and
output stay batch-first (B, T, .): the core reads and writes those rows in place.

Semantics follow PyTorch's nn.LSTM / nn.GRU / nn.RNN with packed sequences:
sample b runs steps 0..len_b-1, its outputs past len_b are 0, its final state is the
state after step len_b-1, and the reverse direction starts at step len_b-1.
"""
import math
import os
import threading

import numpy as np

from . import _core
from ._checks import (_as_real_array, _check_dtype, _check_positive_int, all_finite,
                      checked_params)
from .dense import Dense  # noqa: F401  (the dense layer, re-exported here)
from .embedding import Embedding  # noqa: F401  (re-exported here)
from ._memory import BLAS_INT_MAX, CHECK_ABOVE, check_memory
from ._threads import get_num_threads

__all__ = ["LSTM", "GRU", "RNN", "Embedding"]

# the C core's description of each cell ("rnn" stands for rnn_tanh and rnn_relu alike)
_CELL_INFO = _core.cell_info()
_GATES = {c: len(_CELL_INFO[c if c != "rnn" else "rnn_tanh"]["gates"])
          for c in ("lstm", "gru", "rnn")}
# values the core stores per step and sample for backward, in units of hidden
_STORE = {c: _CELL_INFO[c if c != "rnn" else "rnn_tanh"]["store_width"]
          for c in ("lstm", "gru", "rnn")}
_GATES_OF_CELL = {c: len(_CELL_INFO[c]["gates"]) for c in _CELL_INFO}
_MAX_THREADS = 1 << 10


def _check_finite(arr, name):
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity")


# GNU OpenMP is not fork-safe: a process forked after its parent ran a parallel region
# hangs in its own first parallel region (the parent's pool threads do not exist in the
# child). A child forked after this module started OpenMP threads therefore runs the
# core on one thread (results do not depend on the thread count). Processes that are
# started fresh (spawn, forkserver, joblib's loky) are not affected.
_threads_started = False
_forked_child = False


def _after_fork_in_child():
    global _forked_child
    if _threads_started:
        _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _resolve_threads(n_threads):
    global _threads_started
    if n_threads is None:
        n = get_num_threads()
    elif isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be an integer or None, got {type(n_threads).__name__}")
    elif n_threads < 1 or n_threads > _MAX_THREADS:
        raise ValueError(f"n_threads must lie in [1, {_MAX_THREADS}], got {n_threads}")
    else:
        n = int(n_threads)
    if _forked_child:
        return 1
    if n > 1 and not _threads_started:
        _threads_started = True
    return n


# ---------------------------------------------------------------- bfloat16 inference
_bf16_warned = False
_bf16_lock = threading.Lock()


def bf16_status():
    """(in use, reason): whether precision='bfloat16' runs bf16 products in this process,
    and why not when it does not."""
    if _core.bf16_available():
        return True, "AVX512_BF16 (vdpbf16ps products, float32 accumulation)"
    if not _core.bf16_cpu():
        return False, "this CPU lacks AVX512_BF16 (or this build of fastrnn does)"
    for env in ("FASTRNN_NO_BF16", "FASTRNN_PORTABLE"):
        if os.environ.get(env, "") not in ("", "0"):
            return False, f"{env} is set"
    return False, "turned off when fastrnn was imported (FASTRNN_NO_BF16 / FASTRNN_PORTABLE)"


def bf16_in_use():
    """True when bf16 inference runs here; otherwise False after a RuntimeWarning (once
    per process): precision='bfloat16' then runs float32."""
    global _bf16_warned
    if _core.bf16_available():
        return True
    with _bf16_lock:
        warn, _bf16_warned = not _bf16_warned, True
    if warn:
        import warnings
        warnings.warn(f"precision='bfloat16' runs float32 here: {bf16_status()[1]}. "
                      f"(This warning is shown once per process.)", RuntimeWarning,
                      stacklevel=3)
    return False


def param_count(cell, input_size, hidden_size, num_layers=1, num_directions=1):
    """Number of parameters of a recurrent stack (cell 'lstm', 'gru' or 'rnn')."""
    G, H, D = _GATES[cell], hidden_size, num_directions
    first = G * H * (input_size + H + 2)
    deeper = G * H * (D * H + H + 2)
    return D * (first + (num_layers - 1) * deeper)


def call_bytes(cell, input_size, hidden_size, num_layers, num_directions, batch, steps,
               itemsize, training, return_sequences=True):
    """Bytes one forward call allocates (with training=True: also what the following
    backward does), to refuse calls that cannot fit before allocating anything."""
    G, H, L, D, B, T = (_GATES[cell], hidden_size, num_layers, num_directions, batch,
                        steps)
    seq = B * T * D * H                          # one layer's output sequence
    n = seq if return_sequences else 0
    n += 2 * param_count(cell, input_size, H, L, D)   # packed weights of the kernel
    if training:
        n += (L - 1) * seq * 3                   # kept outputs, dropout masks and inputs
        per = (T + 1) * B * H * (2 if cell == "lstm" else 1) + T * B * _STORE[cell] * H
        n += L * D * per                         # h_all, c_all, stored gates
        n += 2 * T * B * G * H + 2 * B * T * max(input_size, D * H)  # backward: dG, dX
    elif L > 1:
        n += min(L - 1, 2) * seq                 # scratch between layers
    return n * itemsize


# weights (elements of one layer-direction) up to which inference keeps them packed
# between calls (fastrnn._core.forward's wcache): 4 MB of float32, i.e. hidden up to
# ~500 for an LSTM; the cache holds a copy and the panels, about twice the weights
_CACHE_MAX_WEIGHTS = 1 << 20

_WORK_PER_CHUNK = 4e6    # multiply-adds: below this a work item is not worth a thread

# Inference keeps batches below this in one chunk (whatever the thread count) when the
# core runs one chunk with the hidden units split over the threads (its rule:
# _core.splits_as_one_chunk): each thread streams its share of W_hh per step instead of
# all of it. (Elsewhere one chunk would be one thread.)
# Hidden 128, 100 steps, 2 threads, against two chunks: float32 LSTM batch 2 338 -> 249
# us, batch 3 420 -> 357, GRU 238 -> 187, 313 -> 270, RNN level; bf16 LSTM 329 -> 206,
# 388 -> 291, GRU 244 -> 186, 286 -> 266; at batch 4 the two were level (bf16) and
# at 8 the split was slower. Rows do not depend on the chunking, but a layer that
# splits computes x W_ih^T and h W_hh^T apart on one chunk and (LSTM, RNN) as one
# product on several: streams, which are one chunk, now match predict up to batch 3.
_ONE_CHUNK_INFERENCE = 4


def _chunk_size(batch, work):
    """Samples per work item of the core, from the problem alone (never from the thread
    count, so results are identical for any number of threads): one item per
    _WORK_PER_CHUNK multiply-adds of the call, items of at least 16 samples (smaller ones
    waste the kernel's 8-row tiles) — except that a batch under 32 may still be halved
    when there is work for two. Fewer items also mean fewer per-step overheads."""
    by_work = int(work // _WORK_PER_CHUNK)
    if batch >= 32:
        n = max(1, min(by_work, batch // 16))
    else:
        n = 2 if (by_work >= 2 and batch >= 2) else 1
    return -(-batch // n)


class _Workspace(threading.local):
    """Per-thread scratch buffers reused across calls (no allocation per call once warm),
    one per Python thread so concurrent forward calls never share scratch."""

    def __init__(self):
        self.buffers = {}

    def get(self, key, size, dtype, zeroed=False):
        buf = self.buffers.get((key, dtype))
        if buf is None or buf.size < size:
            size = max(int(size), 1)
            buf = np.zeros(size, dtype=dtype) if zeroed else np.empty(size, dtype=dtype)
            self.buffers[(key, dtype)] = buf
        return buf


class _Recurrent:
    """Shared machinery of LSTM, GRU and RNN; subclasses set `_cell`."""

    _cell = None

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False,
                 dropout=0.0, dtype=np.float32, random_state=None):
        self.input_size = _check_positive_int(input_size, "input_size", 1 << 24)
        self.hidden_size = _check_positive_int(hidden_size, "hidden_size", 1 << 16)
        self.num_layers = _check_positive_int(num_layers, "num_layers", 1 << 10)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.dtype = _check_dtype(dtype)
        self._check_param_memory()
        self.rng = np.random.default_rng(random_state)
        self.params = self._init_params()
        self.last_dropout_masks_ = []
        self._cache = None
        self._ws = _Workspace()

    # ------------------------------------------------------------ parameters
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _core_cell(self):
        return self._cell

    @property
    def _gate_count(self):
        return _GATES_OF_CELL[self._cell]

    def _work(self, B, T):
        """Multiply-adds of one layer-direction's forward on (B, T): sets the chunking."""
        return float(T) * B * self._gate_count * self.hidden_size * (
            self.input_size + self.hidden_size)

    def _layer_input_size(self, k):
        return self.input_size if k == 0 else self.hidden_size * self.num_directions

    def _suffix(self, k, direction):
        return f"_l{k}" + ("_reverse" if direction == 1 else "")

    def param_shapes(self):
        """{name: shape} of every parameter, in PyTorch's order."""
        GH, H = self._gate_count * self.hidden_size, self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                s = self._suffix(k, d)
                shapes["weight_ih" + s] = (GH, self._layer_input_size(k))
                shapes["weight_hh" + s] = (GH, H)
                shapes["bias_ih" + s] = (GH,)
                shapes["bias_hh" + s] = (GH,)
        return shapes

    def _check_param_memory(self):
        """MemoryError before allocating parameters that cannot fit (the float64 draw of
        the largest one included)."""
        shapes = self.param_shapes().values()
        sizes = [int(np.prod(shape)) for shape in shapes]
        nbytes = sum(sizes) * self.dtype.itemsize + max(sizes) * 8
        check_memory(nbytes, f"{type(self).__name__}(input_size={self.input_size}, "
                             f"hidden_size={self.hidden_size}, num_layers="
                             f"{self.num_layers}, bidirectional={self.bidirectional}) with "
                             f"{sum(sizes)} parameters",
                     "reduce hidden_size or num_layers")

    def _check_call_size(self, B, T, training, return_sequences):
        """The largest batch one call of the core takes for T steps: its row counts and
        32-bit BLAS sizes hold steps * batch * gates * hidden_size, which must stay below
        2**31. Refuses a training call above it (inference is split instead), and a call
        whose buffers cannot fit in memory."""
        G, H = self._gate_count, self.hidden_size
        per_sample = T * G * H
        if per_sample > BLAS_INT_MAX:
            raise ValueError(f"X has {T} steps: steps * gates * hidden_size = {T} * {G} * "
                             f"{H} = {per_sample} exceeds 2**31 - 1, the largest size "
                             f"32-bit BLAS can index; use shorter sequences or a smaller "
                             f"hidden_size")
        max_batch = BLAS_INT_MAX // per_sample
        if training and B > max_batch:
            raise ValueError(f"X holds {B} sequences of {T} steps: batch * steps * gates * "
                             f"hidden_size = {B * per_sample} exceeds 2**31 - 1, the "
                             f"largest size 32-bit BLAS can index; train on at most "
                             f"{max_batch} sequences per call (batch_size)")
        nbytes = call_bytes(self._cell.split("_")[0], self.input_size, H, self.num_layers,
                            self.num_directions, B, T, self.dtype.itemsize, training,
                            return_sequences)
        if nbytes >= CHECK_ABOVE:
            held = sum(b.nbytes for b in self.__dict__.get("_train_bufs", {}).values())
            held += sum(b.nbytes for b in self._ws.buffers.values())
            check_memory(nbytes - held,
                         f"{type(self).__name__}.forward(training={bool(training)}) on "
                         f"{B} sequences of {T} steps with hidden_size={H}",
                         "pass fewer sequences per call" + (" (batch_size)" if training
                                                            else ""))
        return max_batch

    def _forward_in_parts(self, X, lengths, h0, c0, part, n_threads, return_sequences,
                          precision="float32"):
        """Inference over a batch too large for one core call: consecutive slices of at
        most `part` samples (samples are independent, so results are unchanged)."""
        outs, hs, cs = [], [], []
        for s in range(0, X.shape[0], part):
            sl = slice(s, s + part)
            out, state = self.forward(X[sl], lengths[sl], h0[:, sl],
                                      None if c0 is None else c0[:, sl], training=False,
                                      n_threads=n_threads, return_sequences=return_sequences,
                                      precision=precision)
            outs.append(out)
            hs.append(state[0] if c0 is not None else state)
            if c0 is not None:
                cs.append(state[1])
        out = np.concatenate(outs, axis=0) if return_sequences else None
        h_n = np.concatenate(hs, axis=1)
        return out, ((h_n, np.concatenate(cs, axis=1)) if c0 is not None else h_n)

    def _init_params(self):
        # PyTorch's default: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: self.rng.uniform(-bound, bound, size=shape).astype(self.dtype)
                for name, shape in self.param_shapes().items()}

    def _param_shapes_cached(self):
        """param_shapes(), computed again only when the architecture changes."""
        key = (self._cell, self.input_size, self.hidden_size, self.num_layers,
               self.bidirectional)
        cached = self.__dict__.get("_shapes_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.param_shapes())
            self._shapes_cache = cached
        return cached[1]

    def _checked_params(self):
        """The parameters as C-contiguous arrays of the layer's dtype (no copy when they
        already are), after checking names and shapes."""
        return checked_params(self.params, self._param_shapes_cached(), self.dtype)

    # ------------------------------------------------------------ input checks
    def _check_X(self, X, check_size=None):
        """X checked and converted to the layer's dtype; check_size(B, T) runs once the
        shape is known, before the conversion and the finiteness check allocate."""
        X = _as_real_array(X, "X")
        if X.ndim != 3:
            raise ValueError(f"X must be 3-D (batch, steps, input_size), got shape {X.shape}")
        B, T, I = X.shape
        if B < 1 or T < 1:
            raise ValueError(f"X must have at least one sample and one step, got shape {X.shape}")
        if I != self.input_size:
            raise ValueError(f"X has {I} features per step, the layer expects "
                             f"input_size={self.input_size}")
        if check_size is not None:
            check_size(B, T)
        X = np.asarray(X, dtype=self.dtype)
        _check_finite(X, "X")
        return X

    @staticmethod
    def _check_lengths(lengths, B, T):
        if lengths is None:
            return np.full(B, T, dtype=np.int32)
        arr = np.asarray(lengths)
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},) (one per sample), got {arr.shape}")
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths must lie in [1, {T}] (the number of steps), got "
                             f"min {arr.min()}, max {arr.max()}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _check_state(self, value, name, B):
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if value is None:
            return np.zeros(shape, dtype=self.dtype)
        arr = _as_real_array(value, name, self.dtype)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape} "
                             f"(num_layers * num_directions, batch, hidden_size), got {arr.shape}")
        _check_finite(arr, name)
        return np.ascontiguousarray(arr)

    def _check_grad(self, value, name, shape):
        arr = _as_real_array(value, name, self.dtype)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        _check_finite(arr, name)
        return arr

    # ------------------------------------------------------------ forward / backward
    def forward(self, X, lengths=None, h0=None, c0=None, training=False, n_threads=None,
                return_sequences=True, precision="float32"):
        """Run the layer. X: (batch, steps, input_size), batch first.

        Returns ``out`` (batch, steps, num_directions * hidden_size) and the final state:
        h_n (num_layers * num_directions, batch, hidden_size), or (h_n, c_n) for LSTM.
        With ``training=True`` dropout is applied between layers and what `backward`
        needs is kept; otherwise only the running state is (inference).
        ``n_threads`` overrides fastrnn.get_num_threads() for this call. With
        ``return_sequences=False`` the last layer's outputs are not materialised and
        ``out`` is None (the final state is all that is returned).

        ``precision="bfloat16"`` (inference of a float32 layer only) runs the products
        in bfloat16 on CPUs with AVX512_BF16: the weights and, as the left operand of
        each product, the inputs and the previous h are rounded to bf16 (nearest even);
        the products accumulate in float32, and the bias adds, gate math, cell state
        and h stay float32 (the activations by cheaper formulas, errors of a few
        1e-6). Elsewhere (or with FASTRNN_NO_BF16=1 / FASTRNN_PORTABLE=1)
        it runs float32, with a RuntimeWarning once per process. See README
        "bfloat16 inference"."""
        if lengths is None and h0 is None and c0 is None and not training:
            res = self._infer_plain(X, return_sequences, n_threads, precision)
            if res is not None:
                return res
        use_bf16 = self._use_bf16(precision, training)
        X = self._check_X(X, lambda B, T: self._check_call_size(B, T, training,
                                                                return_sequences))
        B, T, _ = X.shape
        lengths = self._check_lengths(lengths, B, T)
        lstm = self._cell == "lstm"
        h0 = self._check_state(h0, "h0", B)
        if lstm:
            c0 = self._check_state(c0, "c0", B)
        elif c0 is not None:
            raise ValueError(f"c0 is only for LSTM; {type(self).__name__} has no cell state")
        params = self._checked_params()
        nt = _resolve_threads(n_threads)
        max_batch = BLAS_INT_MAX // (T * self._gate_count * self.hidden_size)
        if B > max_batch:   # inference only: training was refused by _check_call_size
            return self._forward_in_parts(X, lengths, h0, c0 if lstm else None, max_batch,
                                          nt, return_sequences,
                                          "bfloat16" if use_bf16 else "float32")
        return self._run_forward(X, lengths, h0, c0, params, training, nt, return_sequences,
                                 use_bf16)

    def _direct_X(self, X):
        """(batch, steps) when X can go to the core as it is (a C-contiguous 3-D ndarray
        of the layer's dtype with input_size features and at least one sample and step),
        else None: the shortcuts below then leave it to forward's full checks."""
        if (type(X) is not np.ndarray or X.ndim != 3 or X.dtype != self.dtype
                or not X.flags.c_contiguous or X.shape[2] != self.input_size
                or X.shape[0] < 1 or X.shape[1] < 1):
            return None
        return X.shape[0], X.shape[1]

    def _infer_plain(self, X, return_sequences, n_threads=None, precision="float32"):
        """forward(X, training=False, precision=...) of full-length sequences from a
        zero state (the common inference call) with the checks made cheap, or None for
        forward's full path (X not a C-contiguous 3-D array of the layer's dtype with the
        right feature count, or a batch forward would split): the call-size check runs
        once per shape, lengths and zero states are kept per shape, finiteness is one C
        pass. A batch-1 call spent as long in forward's checks as in its first 15
        recurrence steps."""
        use_bf16 = precision != "float32" and self._use_bf16(precision, False)
        BT = self._direct_X(X)
        if BT is None:
            return None
        B, T = BT
        key = (B, T, return_sequences)
        plain = self.__dict__.get("_plain")
        if plain is None or plain[0] != key:
            max_batch = self._check_call_size(B, T, False, return_sequences)
            if B > max_batch:
                return None
            lengths = np.full(B, T, dtype=np.int32)
            lengths.flags.writeable = False
            plain = (key, lengths)
            self._plain = plain
        if not _core.all_finite(X):
            raise ValueError("X contains NaN or infinity")
        nt = _resolve_threads(n_threads)
        zeros = self._zero_state(B)
        return self._run_forward(X, plain[1], zeros, zeros, self._checked_params(), False,
                                 nt, return_sequences, use_bf16)

    def _train_forward(self, X, lengths, n_threads, return_sequences=True):
        """forward(X, lengths, training=True, ...) for a caller that has
        already validated its data once (the estimators' training loop): X finite, of
        the layer's dtype and C-contiguous, lengths int32 in [1, T]. Only the structure
        is checked here (what keeps the core in bounds); anything else takes forward."""
        if type(lengths) is np.ndarray and lengths.dtype == np.int64:
            lengths = lengths.astype(np.int32)
        BT = self._direct_X(X)
        B, T = BT if BT is not None else (0, 0)
        if (BT is None or type(lengths) is not np.ndarray or lengths.dtype != np.int32
                or lengths.shape != (B,)):
            return self.forward(X, lengths, training=True, n_threads=n_threads,
                                return_sequences=return_sequences)
        if self.__dict__.get("_sized") != (B, T, return_sequences):
            self._check_call_size(B, T, True, return_sequences)
            self._sized = (B, T, return_sequences)   # passed: the next batches repeat it
        zeros = self._zero_state(B)
        return self._run_forward(X, lengths, zeros, zeros, self._checked_params(), True,
                                 _resolve_threads(n_threads), return_sequences, False)

    def _zero_state(self, B):
        """A zero initial state (read-only: the core never writes h0/c0), kept between
        calls of the same batch size."""
        z = self.__dict__.get("_zeros")
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if z is None or z.shape != shape or z.dtype != self.dtype:
            z = np.zeros(shape, dtype=self.dtype)
            z.flags.writeable = False
            self._zeros = z
        return z

    def _run_forward(self, X, lengths, h0, c0, params, training, nt, return_sequences,
                     use_bf16):
        B, T, _ = X.shape
        lstm = self._cell == "lstm"
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        mode = "train" if training else ("bf16" if use_bf16 else "infer")
        chunk, S, ws_sizes, suffixes = self._call_plan(B, T, nt, mode)
        h_n = np.empty((L * D, B, H), dtype=self.dtype)
        c_n = np.empty((L * D, B, H), dtype=self.dtype) if lstm else None
        # everything stays batch-first: the core reads and writes (B, T, .) rows directly
        inp = np.ascontiguousarray(X)
        caches, masks = [], []
        for k in range(L):
            mask = None
            if k > 0 and training and self.dropout > 0:
                keep = self.rng.random(inp.shape) >= self.dropout
                mask = keep.astype(self.dtype) / self.dtype.type(1.0 - self.dropout)
                inp = inp * mask
            masks.append(mask)
            last = k == L - 1
            out = None if (last and not return_sequences) else \
                self._layer_output(k, (B, T, D * H), training)
            layer_cache = []
            for d in range(D):
                idx = k * D + d
                s = suffixes[idx]
                if use_bf16:
                    self._forward_bf16(k, d, nt, chunk, out, h_n[idx],
                                       c_n[idx] if lstm else None, inp, lengths, h0[idx],
                                       c0[idx] if lstm else None, params, s)
                    continue
                ws = self._ws.get("forward", ws_sizes[idx][0], self.dtype)
                h_all = c_all = store = None
                if training:
                    h_all = self._train_buffer(("h", k, d), (T + 1, B, H))
                    c_all = self._train_buffer(("c", k, d), (T + 1, B, H)) if lstm else None
                    store = self._train_buffer(("s", k, d), (T, B, S)) if S else None
                _core.forward(self._core_cell, d == 1, nt, chunk, out, d * H, h_n[idx],
                              c_n[idx] if lstm else None, h_all, c_all, store, inp, lengths,
                              h0[idx], c0[idx] if lstm else None, params["weight_ih" + s],
                              params["weight_hh" + s], params["bias_ih" + s],
                              params["bias_hh" + s], ws, True,
                              None if training else self._weight_cache(k, d, inp.shape[2]))
                layer_cache.append((h_all, c_all, store))
            caches.append((inp, layer_cache))
            inp = out
        if training:
            self._cache = dict(caches=caches, masks=masks, lengths=lengths, params=params,
                               B=B, T=T)
            self._cache_used = False
            self.last_dropout_masks_ = [m for m in masks if m is not None]
        else:
            self._cache = None
        return inp, ((h_n, c_n) if lstm else h_n)

    def _call_plan(self, B, T, nt, mode):
        """(chunk, store width, and per layer-direction the (forward, backward) workspace
        sizes and the parameter suffix) for training or inference calls on (B, T) with nt
        threads, kept while the shape and the architecture repeat (a batch-1 call spent
        microseconds recomputing them; backward reuses forward's). mode: "train",
        "infer" or "bf16" (inference may keep a small batch in one chunk:
        _small_batch_splits)."""
        key = (B, T, nt, mode, self._core_cell, self.input_size, self.hidden_size,
               self.num_layers, self.num_directions)
        plan = self.__dict__.get("_plan_cache")
        if plan is None or plan[0] != key:
            H, chunk = self.hidden_size, _chunk_size(B, self._work(B, T))
            if mode != "train" and self._small_batch_splits(B, mode == "bf16"):
                chunk = B
            sizes, suffixes = [], []
            for k in range(self.num_layers):
                for d in range(self.num_directions):
                    sizes.append(_core.workspace_sizes(self._core_cell, B, T,
                                                       self._layer_input_size(k), H, d == 1,
                                                       nt, chunk, True))
                    suffixes.append(self._suffix(k, d))
            plan = (key, (chunk, _core.store_width(self._core_cell, H), sizes, suffixes))
            self._plan_cache = plan
        return plan[1]

    def _small_batch_splits(self, B, bf16):
        """Whether an inference batch of B runs as one chunk split over the threads'
        hidden units (see _ONE_CHUNK_INFERENCE): every layer must qualify."""
        if B >= _ONE_CHUNK_INFERENCE or self.dtype != np.float32:
            return False
        return all(_core.splits_as_one_chunk(self._core_cell, self._layer_input_size(k),
                                             self.hidden_size, bf16)
                   for k in range(self.num_layers))

    def _use_bf16(self, precision, training):
        """Whether this forward call runs the bf16 products (checks `precision`)."""
        if precision == "float32":
            return False
        if precision != "bfloat16":
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        if training:
            raise ValueError("precision='bfloat16' is for inference only: call forward "
                             "with training=False (training runs float32)")
        if self.dtype != np.float32:
            raise ValueError(f"precision='bfloat16' needs a float32 layer; this "
                             f"{type(self).__name__} has dtype {self.dtype.name}")
        return bf16_in_use()

    def _forward_bf16(self, k, d, nt, chunk, out, h_n, c_n, inp, lengths, h0, c0, params, s):
        B, T, I = inp.shape
        H = self.hidden_size
        size = _core.bf16_workspace_size(self._core_cell, B, T, I, H, d == 1, nt, chunk,
                                         True)
        ws = self._ws.get("forward_bf16", size, np.float32)
        _core.forward_bf16(self._core_cell, d == 1, nt, chunk, out, d * H, h_n, c_n, inp,
                           lengths, h0, c0, params["weight_ih" + s], params["weight_hh" + s],
                           params["bias_ih" + s], params["bias_hh" + s], ws, True,
                           self._weight_cache(k, d, I, bf16=True))

    def _weight_cache(self, k, d, input_size, bf16=False):
        """The packed-weight cache of layer k, direction d for this Python thread, of
        float32 or (bf16) bfloat16 panels; float32 layers only, and only for weights up
        to _CACHE_MAX_WEIGHTS elements: it holds a copy of them and their packed panels.
        The core compares the weights with its copy on every call, bit for bit, and
        repacks what changed: in-place updates, new arrays (set_params,
        load_state_dict, optimizers) are always seen."""
        if self.dtype != np.float32:
            return None
        key = ("wcache_bf16" if bf16 else "wcache", k, d, self._core_cell, input_size,
               self.hidden_size)
        buf = self._ws.buffers.get((key, np.float32))
        if buf is not None or \
                self._gate_count * self.hidden_size * (input_size + self.hidden_size) \
                > _CACHE_MAX_WEIGHTS:
            return buf
        size = (_core.bf16_weight_cache_size if bf16 else _core.weight_cache_size)(
            self._core_cell, input_size, self.hidden_size)
        return self._ws.get(key, size, np.float32, zeroed=True)


    def stream(self, batch_size=1):
        """A stream: step-by-step inference with the state kept inside it.

        ``stream.step(x_t)``, x_t of shape (batch_size, input_size), runs one step of
        every layer and returns the top layer's output for it, (batch_size,
        hidden_size): the same bits as ``forward(X)[0][:, t]`` on the whole sequences
        (float32 with the AVX-512 kernel; see fastrnn.streaming). The returned array is
        the stream's own buffer, overwritten by the next step (``step(x_t, copy=True)``
        for a new one). ``step_many(X_chunk)`` advances (batch_size, K, input_size)
        steps at once and returns (batch_size, K, hidden_size); ``reset()`` returns to
        the zero state; ``get_state()`` / ``set_state(h[, c])`` read and write it as
        (num_layers, batch_size, hidden_size) arrays.

        The weights are copied (packed) into the stream now: later changes of
        ``params`` do not reach it. A stream is for one thread at a time; any number of
        streams over one layer may run in as many threads. A bidirectional layer cannot
        stream (its reverse direction starts from the end of the sequence)."""
        if self.bidirectional:
            raise ValueError(f"a bidirectional {type(self).__name__} cannot stream: its "
                             f"reverse direction reads each sequence from its end")
        batch_size = _check_positive_int(batch_size, "batch_size", 1 << 24)
        p = self._checked_params()
        names = [self._suffix(k, 0) for k in range(self.num_layers)]
        return _core.Stream(self._core_cell, batch_size,
                            [p["weight_ih" + s] for s in names],
                            [p["weight_hh" + s] for s in names],
                            [p["bias_ih" + s] for s in names],
                            [p["bias_hh" + s] for s in names],
                            chunk=self._stream_chunk(batch_size))

    def _stream_chunk(self, batch_size):
        """The chunk forward uses for batch_size sequences of one step: the grouping of
        products a stream reproduces (forward keeps it for longer sequences as long as
        the batch stays one work item; see fastrnn.streaming)."""
        return _chunk_size(batch_size, self._work(batch_size, 1))

    def _layer_output(self, k, shape, training):
        """Output buffer of layer k: a new array for the last layer (it is returned);
        below it, scratch reused across calls (kept per layer while training, since
        backward reads it)."""
        if k == self.num_layers - 1:
            return np.empty(shape, dtype=self.dtype)
        if training:
            return self._train_buffer(("out", k), shape)
        size = int(np.prod(shape))
        return self._ws.get(("between", k % 2), size, self.dtype)[:size].reshape(shape)

    def _train_buffer(self, key, shape):
        """A buffer kept for backward, reused by the next training forward (no page
        faults from fresh allocations on every step)."""
        bufs = self.__dict__.setdefault("_train_bufs", {})
        buf = bufs.get(key)
        size = math.prod(shape)
        if buf is None or buf.size < size or buf.dtype != self.dtype:
            # on a 64-byte boundary: the core streams rows into it when they all start
            # on one (vmath.c, fr_nt_rows)
            raw = np.empty(max(size, 1) + 64 // self.dtype.itemsize, dtype=self.dtype)
            off = (-raw.ctypes.data % 64) // raw.itemsize
            buf = raw[off:off + max(size, 1)]
            bufs[key] = buf
        # the batch of an epoch's last step is often smaller: a prefix of the buffer
        return buf[:size].reshape(shape)

    __call__ = forward

    def backward(self, d_out, d_state=None, n_threads=None):
        """Gradients after ``forward(..., training=True)``.

        d_out: dL/d(out), shaped like out, or None (zero); d_state: None, dL/dh_n, or
        (dL/dh_n, dL/dc_n) for LSTM (either may be None). Returns dX (shaped like X) and a dict with the
        gradient of every parameter plus 'h0' (and 'c0' for LSTM).
        One backward per training forward (as PyTorch without retain_graph): backward
        uses up what the forward saved, and a second call raises ValueError."""
        self._check_cache()
        cache = self._cache
        B, T, lengths, params = cache["B"], cache["T"], cache["lengths"], cache["params"]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        lstm = self._cell == "lstm"
        state_shape = (L * D, B, H)
        if d_out is not None:
            d_out = self._check_grad(d_out, "d_out", (B, T, D * H))
        d_h_n, d_c_n = self._split_d_state(d_state, state_shape)
        return self._run_backward(d_out, d_h_n, d_c_n, _resolve_threads(n_threads))

    def _train_backward(self, d_out, d_h_n, n_threads, need_dx=True):
        """backward(d_out, d_h_n) for the estimators' training loop, whose gradients come
        from its own loss and head: d_out None or (B, T, D*H), d_h_n None or the state's
        shape, C-contiguous arrays of the layer's dtype (else backward's checks run).
        need_dx False: the gradient of the input is not computed (returned as None; the
        parameter gradients are the same bit for bit) — for a loop that never reads it."""
        self._check_cache()
        B, T, dt = self._cache["B"], self._cache["T"], self.dtype
        D, H = self.num_directions, self.hidden_size
        ok = all(a is None or (type(a) is np.ndarray and a.dtype == dt and a.shape == s
                               and a.flags.c_contiguous)
                 for a, s in ((d_out, (B, T, D * H)), (d_h_n, (self.num_layers * D, B, H))))
        if not ok:
            dX, grads = self.backward(d_out, d_h_n, n_threads=n_threads)
            return (dX if need_dx else None), grads
        return self._run_backward(d_out, d_h_n, None, _resolve_threads(n_threads),
                                  bool(need_dx))

    def _check_cache(self):
        if self._cache is None:
            raise ValueError("backward() needs a preceding forward(X, training=True)"
                             + (": each forward's saved values serve one backward "
                                "(the LSTM's gate gradients are written over them), and "
                                "backward() already ran for the last one"
                                if self.__dict__.get("_cache_used") else ""))

    def _run_backward(self, d_out, d_h_n, d_c_n, nt, need_dx=True):
        cache = self._cache
        # used up from here on: the core writes the LSTM's gate gradients over the stored
        # gates (no dG buffer of its own: T*B*4H values less per layer-direction)
        self._cache, self._cache_used = None, True
        B, T, lengths, params = cache["B"], cache["T"], cache["lengths"], cache["params"]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        lstm = self._cell == "lstm"
        state_shape = (L * D, B, H)
        chunk, _, ws_sizes, suffixes = self._call_plan(B, T, nt, "train")
        grads = {name: np.zeros(shape, dtype=self.dtype)
                 for name, shape in self._param_shapes_cached().items()}
        dh0 = np.empty(state_shape, dtype=self.dtype)
        dc0 = np.empty(state_shape, dtype=self.dtype) if lstm else None
        d_inp = None if d_out is None else np.ascontiguousarray(d_out)
        for k in reversed(range(L)):
            inp, layer_cache = cache["caches"][k]
            if k == 0:
                # the core skips dX when given None
                dx = np.empty(inp.shape, dtype=self.dtype) if need_dx else None
            else:
                size = inp.size
                dx = self._ws.get(("dx", k % 2), size, self.dtype)[:size].reshape(inp.shape)
            for d in range(D):
                idx = k * D + d
                s = suffixes[idx]
                h_all, c_all, store = layer_cache[d]
                ws = self._ws.get("backward", ws_sizes[idx][1], self.dtype)
                _core.backward(self._core_cell, d == 1, nt, chunk, dx, d == 1,
                               grads["weight_ih" + s], grads["weight_hh" + s],
                               grads["bias_ih" + s], grads["bias_hh" + s], dh0[idx],
                               dc0[idx] if lstm else None, d_inp, d * H,
                               None if d_h_n is None else d_h_n[idx],
                               None if d_c_n is None else d_c_n[idx],
                               h_all, c_all, store, inp, lengths,
                               params["weight_ih" + s], params["weight_hh" + s], ws, True)
            if cache["masks"][k] is not None:
                dx *= cache["masks"][k]
            d_inp = dx
        grads["h0"] = dh0
        if lstm:
            grads["c0"] = dc0
        return d_inp, grads

    def _split_d_state(self, d_state, shape):
        if d_state is None:
            return None, None
        if self._cell == "lstm" and isinstance(d_state, (tuple, list)):
            if len(d_state) != 2:
                raise ValueError("d_state for LSTM must be d_h_n or a pair (d_h_n, d_c_n)")
            dh, dc = d_state
        else:
            dh, dc = d_state, None
        dh = None if dh is None else np.ascontiguousarray(
            self._check_grad(dh, "d_state (d_h_n)", shape))
        dc = None if dc is None else np.ascontiguousarray(
            self._check_grad(dc, "d_state (d_c_n)", shape))
        return dh, dc

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_ws", None)
        state.pop("_train_bufs", None)
        for name in ("_zeros", "_plain", "_plan_cache", "_sized"):   # per process
            state.pop(name, None)
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ws = _Workspace()

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if self._cell.startswith("rnn") else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"dropout={self.dropout}, dtype={self.dtype.name})")


class LSTM(_Recurrent):
    """Long short-term memory, PyTorch's nn.LSTM formulation (gate order i, f, g, o)::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)   f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)      o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g                           h' = o * tanh(c')
    """
    _cell = "lstm"


class GRU(_Recurrent):
    """Gated recurrent unit, PyTorch's nn.GRU formulation (gate order r, z, n; the reset
    gate multiplies the recurrent product, bias included)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    """
    _cell = "gru"


class RNN(_Recurrent):
    """Elman RNN, PyTorch's nn.RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` with
    act = tanh or relu (``nonlinearity``)."""

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", num_layers=1,
                 bidirectional=False, dropout=0.0, dtype=np.float32, random_state=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._cell = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         random_state=random_state)
