"""The one model behind every estimator:

    [Embedding] -> recurrent stack (LSTM | GRU | RNN) -> Dense head

The head reads either the last valid step of each sequence ("last": the final hidden
state of the top layer, both directions, at each sequence's own last step) or every valid
step ("every"). Either way the model's output is a block of ROWS: one per sequence for
"last", one per valid step (sample after sample, steps in order; see _inputs.flat_rows)
for "every". Losses, targets and scores work on rows alone, so the two reaches share
everything else.
"""
import numpy as np

from ..dense import Dense
from ..embedding import Embedding
from ..layers import GRU, LSTM, RNN
from ._inputs import flat_rows

__all__ = ["SequenceModel"]

_LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


class SequenceModel:
    """Parameters and forward/backward of [embedding] -> stack -> head.

    embedding: None or (num_embeddings, embedding_dim); reach: 'last' or 'every'."""

    def __init__(self, cell, n_inputs, n_outputs, hidden_size, num_layers, bidirectional,
                 dropout, nonlinearity, dtype, rng, reach, embedding=None):
        dtype = np.dtype(dtype)
        seeds = [int(rng.integers(2 ** 31 - 1)) for _ in range(3 if embedding else 2)]
        kw = dict(num_layers=num_layers, bidirectional=bool(bidirectional),
                  dropout=float(dropout), dtype=dtype, random_state=seeds[0])
        if cell == "rnn":
            kw["nonlinearity"] = nonlinearity
        self.embedding = None
        if embedding is not None:
            self.embedding = Embedding(embedding[0], embedding[1], dtype=dtype,
                                       random_state=seeds[2])
            n_inputs = embedding[1]
        self.rnn = _LAYERS[cell](n_inputs, hidden_size, **kw)
        D = 2 if bidirectional else 1
        self.head = Dense(D * hidden_size, n_outputs, dtype=dtype, random_state=seeds[1])
        self.reach = reach
        self._cache = None

    # ------------------------------------------------------------ parameters
    def params(self):
        """Every trainable array under one flat name ('embedding.weight', 'rnn.<torch
        name>', 'head.weight', 'head.bias'); the arrays are the layers' own, so in-place
        updates by an optimizer update the model."""
        p = {}
        if self.embedding is not None:
            p["embedding.weight"] = self.embedding.params["weight"]
        p.update({"rnn." + k: v for k, v in self.rnn.params.items()})
        p.update({"head." + k: v for k, v in self.head.params.items()})
        return p

    @property
    def dtype(self):
        return self.rnn.dtype

    # ------------------------------------------------------------ forward / backward
    def _inputs(self, xb, lengths, training):
        if self.embedding is None:
            return xb
        return self.embedding.forward(xb, lengths, training=training)

    def forward(self, xb, lengths, training, n_threads, precision="float32", full=False):
        """Output rows for a batch: (B, n_outputs) for 'last', (sum(lengths), n_outputs)
        for 'every'. precision: of the recurrent stack's products (inference only).
        full: every length is the batch's step count (the layers' plain inference path
        then serves it: no per-call checks of lengths and states)."""
        inp = self._inputs(xb, lengths, training)
        B, T = inp.shape[:2]
        last = self.reach == "last"
        if training:   # the training loop's batches were validated once, at fit
            out, state = self.rnn._train_forward(inp, lengths, n_threads,
                                                 return_sequences=not last)
        else:
            res = None
            if full:
                res = self.rnn._infer_plain(inp, not last, n_threads, precision)
            if res is None:
                res = self.rnn.forward(inp, lengths, training=False, n_threads=n_threads,
                                       return_sequences=not last, precision=precision)
            out, state = res
        if last:
            feats = self._last_features(state)
            rows = None
        else:
            feats, rows = _valid_steps(out, lengths)
        if training:
            self._cache = (B, T, rows)
        return self.head.forward(feats, training=training, n_threads=n_threads)

    def _last_features(self, state):
        """The top layer's final hidden state, both directions: (B, D*H)."""
        h_n = state[0] if isinstance(state, tuple) else state
        D = self.rnn.num_directions
        last = h_n[-D:]                                   # (D, B, H)
        return np.ascontiguousarray(last.transpose(1, 0, 2).reshape(last.shape[1], -1))

    def backward(self, d_rows, n_threads):
        """Gradients of every parameter (flat names as params()) after a training
        forward, given dL/d(output rows)."""
        B, T, rows = self._cache
        d_feats, head_grads = self.head.backward(d_rows, n_threads=n_threads)
        L, D, H = self.rnn.num_layers, self.rnn.num_directions, self.rnn.hidden_size
        if self.reach == "last":
            d_h_n = np.zeros((L * D, B, H), dtype=d_feats.dtype)
            d_h_n[-D:] = d_feats.reshape(B, D, H).transpose(1, 0, 2)
            dX, rnn_grads = self.rnn._train_backward(None, d_h_n, n_threads,
                                                     need_dx=self.embedding is not None)
        else:
            if rows is None:
                d_out = d_feats.reshape(B, T, D * H)
            else:
                d_out = np.zeros((B * T, D * H), dtype=d_feats.dtype)
                d_out[rows] = d_feats
                d_out = d_out.reshape(B, T, D * H)
            dX, rnn_grads = self.rnn._train_backward(d_out, None, n_threads,
                                                     need_dx=self.embedding is not None)
        grads = {}
        if self.embedding is not None:
            grads["embedding.weight"] = self.embedding.backward(dX)[1]["weight"]
        grads.update({"rnn." + k: v for k, v in rnn_grads.items() if k not in ("h0", "c0")})
        grads.update({"head." + k: v for k, v in head_grads.items()})
        return grads

    # ------------------------------------------------------------ step by step
    def run(self, xb, lengths, state=None, n_threads=None):
        """Inference that also returns the recurrent state after each sequence's last
        step, and takes one to start from: what generation and streaming carry forward.
        Returns (output rows of every valid step, state)."""
        inp = self._inputs(xb, lengths, False)
        lstm = isinstance(self.rnn, LSTM)
        h0, c0 = (state if lstm else (state, None)) if state is not None else (None, None)
        out, new_state = self.rnn.forward(inp, lengths, h0=h0, c0=c0, training=False,
                                          n_threads=n_threads)
        return self.head.forward(_valid_steps(out, lengths)[0], n_threads=n_threads), new_state

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


def _valid_steps(out, lengths):
    """The valid steps of padded (B, T, F) outputs as rows (sum(lengths), F), sample after
    sample, and their indices into the (B * T) flattening (None when nothing is padding:
    the rows are then a view)."""
    B, T = out.shape[:2]
    flat = out.reshape(B * T, -1)
    if np.all(lengths == T):
        return flat, None
    rows = flat_rows(lengths, T)
    return flat[rows], rows
