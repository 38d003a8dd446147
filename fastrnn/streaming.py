"""Streaming inference: one step (a sensor sample, an audio frame, a token) at a time.

Re-running the whole history for every new step costs O(T^2); a stream keeps the
recurrent state of ``batch_size`` running sequences inside preallocated buffers and
advances them step by step::

    stream = make_stream(est, batch_size=1)     # est.stream(batch_size=1)
    for x_t in frames:                          # x_t: (batch_size, n_features)
        p = stream.step(x_t)                    # this step's output
    stream.reset()                              # start new sequences

What ``step`` returns is what predict returns for the sequences seen so far:
classifiers give ``predict_proba`` rows (batch_size, n_classes), regressors ``predict``
rows ((batch_size,) or (batch_size, n_targets)); for sequence-level estimators
(classifiers, regressors) that is the prediction for the sequences ENDING at this step,
for per-step estimators (taggers, sequence regressors) the output of this step.
``step_many(X_chunk)`` takes (batch_size, K, n_features) at once (every step's output
for per-step estimators, the last one otherwise). ``state`` reads or sets the recurrent
state ((h, c) for LSTM, h otherwise; (num_layers, batch_size, hidden_size) arrays).
Inputs go through what predict does to them: float features standardised with
``x_mean_`` / ``x_scale_``, token ids (a (batch_size,) int array per step) mapped to
the embedding's rows, unknown ids to the reserved row.

Bits. Feeding sequences step by step gives bitwise the outputs of predict on them: the
C step (src_c/stream.c) repeats the float operations of the core's forward for that
step (the same packed kernel, the same grouping of the products, the same cell code,
the same head), and the softmax / unscaling are predict's own numpy code. Precisely:
  * float32 models on a CPU with AVX-512 (the default path): bitwise, for any thread
    count predict uses, for ``batch_size=1`` against predict on the sequence alone, and
    for ``batch_size=B`` against predict on those B sequences. One exception, where
    predict itself changes: LSTM/RNN layers whose hidden size is a multiple of 64 with
    ``gates * hidden * (input + hidden) >= 32768`` (e.g. LSTM 128 units) are computed by
    predict as x W_ih^T and h W_hh^T apart while its batch is one work item, and as one
    fused product once a batch of B >= 4 long sequences (gates*H*(I+H)*B*T >= 3.2e7
    multiply-adds) is cut into two (batches of 1-3 stay one work item in inference);
    the stream, which cannot know T, keeps the first grouping. (Predict's own rows then
    differ in the last bits between a batch of one and a large batch, too.)
  * float64 models, or FASTRNN_PORTABLE=1 / CPUs without AVX-512: the products go
    through BLAS, which picks its kernels by the number of rows; the stream agrees with
    predict to rounding (~1e-7 relative in float32, ~1e-15 in float64), not bitwise.

Threads: a stream owns its buffers (the recurrent and head weights are copied into it
when it is made, the embedding table and the vocabulary are read in place); the model is
only read. Any number of streams over one fitted model may run in as many threads
(the C step releases the GIL); one stream used by two threads at once raises
RuntimeError. Bidirectional models cannot stream (their reverse direction starts from
the end of each sequence): make_stream raises ValueError.
"""
import numpy as np

from ._checks import _check_positive_int
from .losses import softmax

__all__ = ["make_stream", "EstimatorStream"]


def make_stream(est, batch_size=1):
    """A stream over the fitted estimator `est` for `batch_size` sequences at once."""
    from . import _core
    est._check_fitted()
    batch_size = _check_positive_int(batch_size, "batch_size", 1 << 24)
    model = est.model_
    rnn = model.rnn
    if rnn.bidirectional:
        raise ValueError(f"a bidirectional {type(est).__name__} cannot stream: its reverse "
                         f"direction reads each sequence from its end; refit with "
                         f"bidirectional=False to serve step by step")
    dtype = rnn.dtype
    p = rnn._checked_params()
    names = [rnn._suffix(k, 0) for k in range(rnn.num_layers)]
    head = model.head._checked_params()
    kw = {}
    if model.embedding is not None:
        kw["emb"] = np.ascontiguousarray(model.embedding.params["weight"], dtype=dtype)
        kw["known"] = np.ascontiguousarray(est.known_tokens_, dtype=bool)
    elif getattr(est, "x_mean_", None) is not None:
        # predict's (values - x_mean_.astype(dtype)) / x_scale_.astype(dtype)
        kw["mean"] = np.ascontiguousarray(est.x_mean_.astype(dtype))
        kw["scale"] = np.ascontiguousarray(est.x_scale_.astype(dtype))
    core = _core.Stream(rnn._core_cell, batch_size,
                        [p["weight_ih" + s] for s in names],
                        [p["weight_hh" + s] for s in names],
                        [p["bias_ih" + s] for s in names],
                        [p["bias_hh" + s] for s in names],
                        head_w=head["weight"], head_b=head["bias"],
                        chunk=rnn._stream_chunk(batch_size), **kw)
    return EstimatorStream(est, core)


class EstimatorStream:
    """Step-by-step predictions of a fitted estimator (see the module docstring)."""

    def __init__(self, est, core):
        self._est = est
        self._core = core
        self._classifier = bool(est._is_classifier)
        self._per_step = bool(est._per_step)
        if self._classifier:
            self.classes_ = est.classes_

    @property
    def batch_size(self):
        return self._core.batch_size

    def _finish(self, rows):
        """Network rows -> what predict_proba / predict returns for them, by predict's
        own code (float64 numpy)."""
        if self._classifier:
            return softmax(rows.astype(np.float64))
        return self._est._unscaled(rows)

    def step(self, x_t):
        """Advance one step: x_t (batch_size, n_features) floats, or (batch_size,)
        token ids. Returns a new array: class probabilities (classifiers) or
        predictions (regressors) for that step."""
        return self._finish(self._core.step(x_t))

    def step_many(self, X_chunk):
        """Advance K steps: X_chunk (batch_size, K, n_features) floats or (batch_size, K)
        token ids. Per-step estimators return every step's output, (batch_size, K, ...);
        sequence-level ones the output after the last step, as `step`."""
        if not self._per_step:
            return self._finish(self._core.step_many(X_chunk, every=False))
        out = self._core.step_many(X_chunk, every=True)
        B, K, W = out.shape
        res = self._finish(out.reshape(B * K, W))
        return res.reshape((B, K) + res.shape[1:])

    def reset(self):
        """Start new sequences: the zero state predict starts each sequence from."""
        self._core.reset()

    @property
    def state(self):
        """(h, c) for LSTM, else h: copies, (num_layers, batch_size, hidden_size)."""
        return self._core.get_state()

    @state.setter
    def state(self, value):
        if self._core.cell == "lstm":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError("an LSTM state is a pair (h, c)")
            self._core.set_state(value[0], value[1])
        else:
            self._core.set_state(value)

    def __repr__(self):
        return (f"<stream of {type(self._est).__name__}, batch_size={self.batch_size}, "
                f"{'per step' if self._per_step else 'sequence-level'}>")
