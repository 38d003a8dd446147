"""The public estimators: a cell (LSTM, GRU, RNN) x a head reach (the last step, or every
step) x a task (classification, regression). Nothing else differs between them."""
import numbers

import numpy as np

from ..losses import softmax
from ._base import RecurrentEstimator, running
from ._inputs import make_rng, read_X
from ._tasks import ClassificationTask, RegressionTask

__all__ = ["LSTMClassifier", "GRUClassifier", "RNNClassifier",
           "LSTMRegressor", "GRURegressor", "RNNRegressor",
           "LSTMTagger", "GRUTagger", "RNNTagger",
           "LSTMSequenceRegressor", "GRUSequenceRegressor", "RNNSequenceRegressor"]


def _classifier_init(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                     nonlinearity="tanh", embedding_dim=None, vocab_size=None,
                     scale_inputs=True, optimizer="adam", learning_rate=5e-3,
                     weight_decay=0.0, lr_schedule="constant", batch_size=32, max_epochs=100,
                     early_stopping=False, validation_fraction=0.1, n_iter_no_change=20,
                     tol=1e-4, clip_grad_norm=1.0, class_weight=None, shuffle=True,
                     random_state=None, n_jobs=None, dtype="float32", verbose=0,
                     warm_start=False, n_features=None, inference_precision="float32"):
    RecurrentEstimator.__init__(
        self, hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
        dropout=dropout, nonlinearity=nonlinearity, embedding_dim=embedding_dim,
        vocab_size=vocab_size, scale_inputs=scale_inputs, optimizer=optimizer,
        learning_rate=learning_rate, weight_decay=weight_decay, lr_schedule=lr_schedule,
        batch_size=batch_size, max_epochs=max_epochs, early_stopping=early_stopping,
        validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change, tol=tol,
        clip_grad_norm=clip_grad_norm, shuffle=shuffle, random_state=random_state,
        n_jobs=n_jobs, dtype=dtype, verbose=verbose, warm_start=warm_start,
        n_features=n_features, inference_precision=inference_precision)
    self.class_weight = class_weight


class _Classifier(ClassificationTask, RecurrentEstimator):
    __init__ = _classifier_init


class _Regressor(RegressionTask, RecurrentEstimator):
    pass


class _Tagger(ClassificationTask, RecurrentEstimator):
    __init__ = _classifier_init
    _per_step = True

    def generate(self, prefix, n_steps, temperature=1.0, random_state=None):
        """Continue token sequences by sampling: a tagger trained to predict the next
        token at every step is a language model.

        prefix: a 1-D sequence of token ids (or a list of them / a 2-D array, to continue
        several at once). The prefix runs through the network once; then each new token
        is sampled from softmax(logits / temperature), fed back in, and only the
        recurrent state is carried forward (one step per token, never the whole history
        again). temperature=0 picks the most probable token. Returns the n_steps new
        tokens: (n_steps,) for one prefix, (n_prefixes, n_steps) for several."""
        self._check_fitted()
        if not self._tokens:
            raise ValueError(f"generate needs token input: this {type(self).__name__} was "
                             f"built without embedding_dim, so its outputs cannot be fed "
                             f"back in as inputs")
        if self.bidirectional:
            raise ValueError("generate cannot run a bidirectional model: its backward "
                             "direction would need the tokens that are not generated yet")
        if self.classes_.dtype.kind not in "iu":
            raise ValueError(f"generate needs integer class labels (the next token ids); "
                             f"this tagger's classes_ have dtype {self.classes_.dtype}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) \
                or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
                or not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        single = _one_sequence(prefix)
        seqs = read_X([np.asarray(prefix)] if single else prefix, np.dtype(self.dtype),
                      tokens=True)
        rng = make_rng(random_state)
        out = np.empty((len(seqs), int(n_steps)), dtype=self.classes_.dtype)
        with running():
            seqs = self._transform_inputs(seqs)
            rows, state = self.model_.run(seqs.values, seqs.lengths, n_threads=1)
            logits = rows[np.cumsum(seqs.lengths) - 1]
            ones = np.ones(len(seqs), dtype=np.int64)
            for s in range(int(n_steps)):
                out[:, s] = self.classes_[_sample(logits, temperature, rng)]
                if s + 1 < n_steps:
                    nxt = read_X(out[:, s:s + 1], np.dtype(self.dtype), tokens=True)
                    ids = self._transform_inputs(nxt).values
                    logits, state = self.model_.run(ids, ones, state, n_threads=1)
        return out[0] if single else out


def _one_sequence(prefix):
    if isinstance(prefix, np.ndarray):
        return prefix.ndim == 1
    return isinstance(prefix, (list, tuple)) and all(np.ndim(p) == 0 for p in prefix)


def _sample(logits, temperature, rng):
    """One class index per row, drawn from softmax(logits / temperature)."""
    if temperature == 0:
        return np.argmax(logits, axis=1)
    p = softmax(logits.astype(np.float64) / temperature)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


class _SequenceRegressor(RegressionTask, RecurrentEstimator):
    _per_step = True


_PARAMS = """
    Parameters
    ----------
    hidden_size, num_layers, bidirectional, dropout : the recurrent stack.
    nonlinearity : only used by RNN* estimators ('tanh' or 'relu').
    embedding_dim : None (default) for float input; an int makes X token ids (a 2-D int
        array or a list of 1-D int arrays) fed through a trainable Embedding of that size.
    vocab_size : token ids 0..vocab_size-1 get their own embedding row (None: learnt as
        the largest id in fit + 1). Ids never seen in fit, or >= vocab_size, share one
        reserved unknown row (the last, initialised to zero).
    scale_inputs : standardise each float feature with the mean and std of the training
        data (learnt in fit, stored in the model; x_mean_, x_scale_).
    optimizer : 'adam' (default), 'adamw', 'sgd' or 'rmsprop'; learning_rate, weight_decay.
    lr_schedule : 'constant', 'cosine' (over max_epochs) or 'plateau' (reduce on plateau).
    batch_size, max_epochs, shuffle : mini-batch training.
    early_stopping, validation_fraction, n_iter_no_change, tol : stop when the validation
        score (early_stopping=True; the best weights are restored) or the training loss
        has not improved by tol for n_iter_no_change epochs.
    clip_grad_norm : clip gradients to this global L2 norm (None: no clipping).
    random_state : same value, same model, whatever n_jobs.
    n_jobs : threads (None: fastrnn.get_num_threads(); -1: all cores).
    dtype : 'float32' (fast) or 'float64'.
    verbose : 0 silent, 1 a line per epoch, 2 also a progress bar.
    warm_start : continue from the fitted weights in fit.
    n_features : None (default), or the features per step of flat 2-D float X: each row
        holds n_timesteps * n_features values, step after step (X3d.reshape(n, -1)), and
        is read as (n_samples, n_timesteps, n_features). For tools that pass 2-D data
        only, such as dask_ml.wrappers.Incremental; n_features_in_ is then the column
        count, and predict takes 2-D X of that many columns.
    inference_precision : 'float32' (default) or 'bfloat16': the precision of the
        recurrent products in predict, predict_proba, decision_function and score (fit
        always trains in float32). 'bfloat16' needs dtype='float32' and a CPU with
        AVX512_BF16; elsewhere it runs float32 with a RuntimeWarning (once per process).
        See README "bfloat16 inference".
"""
_CLASS_WEIGHT = """    class_weight : None, 'balanced' or {label: weight}.
"""


def _doc(summary, classifier):
    return summary + "\n" + _PARAMS + (_CLASS_WEIGHT if classifier else "")


class LSTMClassifier(_Classifier):
    _cell = "lstm"
    __doc__ = _doc("LSTM sequence classifier: an LSTM stack, the final hidden state of "
                   "each sequence, a softmax head. One label per sequence.", True)


class GRUClassifier(_Classifier):
    _cell = "gru"
    __doc__ = _doc("GRU sequence classifier; as LSTMClassifier with a GRU stack.", True)


class RNNClassifier(_Classifier):
    _cell = "rnn"
    __doc__ = _doc("Plain (Elman) RNN sequence classifier, nonlinearity 'tanh' or 'relu'; "
                   "as LSTMClassifier otherwise.", True)


class LSTMRegressor(_Regressor):
    _cell = "lstm"
    __doc__ = _doc("LSTM sequence regressor: an LSTM stack, the final hidden state, a "
                   "linear head. One value (or row of values) per sequence; targets are "
                   "standardised internally and restored by predict.", False)


class GRURegressor(_Regressor):
    _cell = "gru"
    __doc__ = _doc("GRU sequence regressor; as LSTMRegressor with a GRU stack.", False)


class RNNRegressor(_Regressor):
    _cell = "rnn"
    __doc__ = _doc("Plain (Elman) RNN sequence regressor; as LSTMRegressor otherwise.",
                   False)


class LSTMTagger(_Tagger):
    _cell = "lstm"
    __doc__ = _doc("LSTM sequence tagger: a class label at every step. The softmax head "
                   "reads every step's output (both directions when bidirectional). y "
                   "follows X: a list of (T_i,) label arrays for a list of sequences, an "
                   "(n, T) array for an array. The loss is the mean over every valid step "
                   "of every sequence; predict / predict_proba return the structure X came "
                   "in; score is the accuracy over all valid steps. Over token input it is "
                   "a language model: see generate().", True)


class GRUTagger(_Tagger):
    _cell = "gru"
    __doc__ = _doc("GRU sequence tagger; as LSTMTagger with a GRU stack.", True)


class RNNTagger(_Tagger):
    _cell = "rnn"
    __doc__ = _doc("Plain (Elman) RNN sequence tagger; as LSTMTagger otherwise.", True)


class LSTMSequenceRegressor(_SequenceRegressor):
    _cell = "lstm"
    __doc__ = _doc("LSTM per-step regressor: a value (or a row of k values) at every step. "
                   "y follows X: a list of (T_i,) or (T_i, k) arrays for a list of "
                   "sequences, an (n, T) or (n, T, k) array for an array. Targets are "
                   "standardised internally; the loss is the mean squared error over every "
                   "valid step; score is R^2 over all valid steps.", False)


class GRUSequenceRegressor(_SequenceRegressor):
    _cell = "gru"
    __doc__ = _doc("GRU per-step regressor; as LSTMSequenceRegressor with a GRU stack.",
                   False)


class RNNSequenceRegressor(_SequenceRegressor):
    _cell = "rnn"
    __doc__ = _doc("Plain (Elman) RNN per-step regressor; as LSTMSequenceRegressor "
                   "otherwise.", False)
