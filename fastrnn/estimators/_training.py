"""The training loop shared by every estimator: mini-batches, clipping, the optimizer,
the learning-rate schedule, early stopping or a stop on a training-loss plateau, Ctrl-C
and divergence (both roll the model back to the last completed epoch)."""
import copy
import math
import sys
import time
import warnings

import numpy as np

from .. import _core
from ._inputs import rows_of
__all__ = ["TrainingData", "train_epochs"]


class TrainingData:
    """Inputs, target rows and sequence weights of one fit call, cut into batches of
    sequences. Per-step targets are rows in flat_rows order; `offsets[i]` is where
    sequence i's rows begin."""

    def __init__(self, seqs, Y, sw, per_step):
        self.seqs, self.Y, self.sw, self.per_step = seqs, Y, sw, per_step
        self.offsets = np.cumsum(seqs.lengths) - seqs.lengths if per_step else None

    def batch(self, b):
        """(inputs (B, T_b[, F]), lengths, target rows, row weights) of sequences b."""
        lb = self.seqs.lengths[b]
        xb = self.seqs.values[b, :lb.max()]
        if not self.per_step:
            return xb, lb, self.Y[b], self.sw[b]
        rows = rows_of(self.offsets[b], lb)
        return xb, lb, self.Y[rows], np.repeat(self.sw[b], lb)


def snapshot(est, training_state=False, into=None):
    """Copies of the weights; with training_state also of the optimizer's state and the
    sample count, so a fit rolled back to it continues as if from there. `into`: an
    earlier snapshot no longer needed, whose arrays are reused (no fresh allocation,
    and so no page faults, once per epoch)."""
    snap = {k: _copy_into(into, k, v) for k, v in est.model_.params().items()}
    if training_state:
        old = into.get("__training_state__", ({}, 0))[0] if into else {}
        state = {key: {name: _copy_into(old.get(key), name, a) if isinstance(a, np.ndarray)
                       else copy.deepcopy(a) for name, a in st.items()}
                 for key, st in est._optimizer.state.items()}
        snap["__training_state__"] = (state, est.t_)
    return snap


def _copy_into(old, key, a):
    """A copy of array `a`, written into old[key] when that array fits."""
    buf = old.get(key) if old else None
    if isinstance(buf, np.ndarray) and buf.shape == a.shape and buf.dtype == a.dtype:
        np.copyto(buf, a)
        return buf
    return a.copy()


def restore(est, snap):
    for k, v in est.model_.params().items():
        v[...] = snap[k]
    if "__training_state__" in snap:
        state, est.t_ = snap["__training_state__"]
        est._optimizer.state = copy.deepcopy(state)


def train_epochs(est, data, tr, va, epochs, incremental):
    """Up to `epochs` passes over the sequences `tr`; `va` (or None) scores early
    stopping. For the whole run only the core's threads work: scipy's BLAS is held to
    one thread and idle OpenBLAS pools (numpy's, scipy's) are stopped (_core.hold_blas);
    nothing in a training step calls numpy's BLAS."""
    _core.hold_blas()
    try:
        _train_epochs(est, data, tr, va, epochs, incremental)
    finally:
        _core.release_blas()


def _train_epochs(est, data, tr, va, epochs, incremental):
    bs = min(int(est.batch_size), len(tr))
    first_epoch = est.n_iter_
    # the initial loss (see _initial_loss); `initial`: a list the first epoch's first
    # batch puts it in, when that batch's training forward is the inference forward
    start, initial = None, None
    if not incremental:
        if est.shuffle or _dropout_acts(est):
            start = _initial_loss(est, data, tr[:bs])
        else:
            initial = []
    best = None if incremental else (start, snapshot(est), 0)   # (loss, weights, epoch)
    spare = None    # the snapshot before last_good: its arrays are reused
    for _ in range(epochs):
        t0 = time.perf_counter()
        done, last_good = est.n_iter_, None
        # Ctrl-C anywhere in the epoch (Python sees it between two core calls, which run
        # without the GIL and are never cut short) rolls the model back to the end of the
        # last completed epoch: weights, optimizer state, counters.
        try:
            last_good = snapshot(est, training_state=True, into=spare)
            epoch_loss = _run_batches(est, data, tr, bs, initial)
            if epoch_loss is None or not all(np.isfinite(v).all()
                                             for v in est.model_.params().values()):
                _diverged(est, last_good)
                return
            if initial:
                start, initial = initial[0], None
                best = (start,) + best[1:]
            est.loss_curve_.append(epoch_loss)
            est.n_iter_ += 1
            if not incremental and epoch_loss < best[0]:
                best = (epoch_loss, snapshot(est, into=best[1]), est.n_iter_)
            stop = _end_of_epoch(est, data, va, epoch_loss, incremental)
        except KeyboardInterrupt:
            _interrupted(est, done, last_good)
            return
        if est.verbose:
            _report(est, epoch_loss, time.perf_counter() - t0)
        spare = last_good
        if stop:
            break
    if est.early_stopping and not incremental and getattr(est, "_best_params", None):
        restore(est, est._best_params)
    elif not incremental and _ended_far_above(start, est.loss_curve_[first_epoch:]):
        restore(est, best[1])
        est._optimizer.reset()        # its moments come from the diverged steps
    if not incremental:
        _report_divergence(est, start, est.loss_curve_[first_epoch:], best)


DIVERGENCE_FACTOR = 2.0   # a fit whose last epoch's loss is this many times the start's


def _initial_loss(est, data, b):
    """The loss of the model as the fit starts, on the first batch of its training
    sequences, b = tr[:batch_size] (inference mode: no dropout, no random draw).

    Without shuffling that is the first batch the first epoch trains on, and without
    dropout between layers its training forward is this inference forward, bit for bit:
    then _run_batches hands over that batch's loss instead (no forward of its own)."""
    xb, lb, yb, wb = data.batch(b)
    nt = est._n_threads()
    with np.errstate(over="ignore", invalid="ignore"):
        loss = est._loss(est.model_.forward(xb, lb, False, nt), yb, wb, nt)[0]
    return float(loss) if np.isfinite(loss) else np.inf


def _dropout_acts(est):
    """Whether a training forward draws dropout masks (between recurrent layers)."""
    rnn = est.model_.rnn
    return rnn.dropout > 0 and rnn.num_layers > 1


def _ended_far_above(start, losses):
    return start is not None and len(losses) >= 1 and losses[-1] > DIVERGENCE_FACTOR * start


def _report_divergence(est, start, losses, best):
    """A loss that ends far above where it started is reported, naming the likely cause
    and the parameters to change; the weights of the best epoch were kept (or, with
    early_stopping, those of the best validation score)."""
    if not _ended_far_above(start, losses):
        return
    if est.early_stopping:
        kept = "the weights of the best validation score were kept"
    elif best[2] == 0:
        kept = "no epoch improved on the initial weights, which were kept"
    else:
        kept = f"the weights of epoch {best[2]} (loss {best[0]:.4g}) were kept"
    warnings.warn(f"fit diverged: the training loss rose from {start:.4g} at the start to "
                  f"{losses[-1]:.4g} in the last epoch; {kept}. The step size is likely "
                  f"too large for this data: lower learning_rate (now {est.learning_rate}) "
                  f"or clip gradients harder (clip_grad_norm, now {est.clip_grad_norm}).",
                  RuntimeWarning, stacklevel=7)


def _run_batches(est, data, tr, bs, initial=None):
    """One pass over the sequences `tr` in mini-batches: their mean loss (weighted by
    the rows' weights), or None as soon as the loss of a batch is NaN or infinite (that
    batch is not applied). `initial`: None, or a list to which the loss of the first
    batch is appended (before it is applied): the initial loss when the caller knows
    that batch's training forward to be the inference forward of _initial_loss."""
    order = est._rng_.permutation(tr) if est.shuffle else tr
    params = est.model_.params()
    clip = None if est.clip_grad_norm is None else float(est.clip_grad_norm)
    total, wsum = 0.0, 0.0
    n_batches = (len(order) + bs - 1) // bs
    # a diverging fit is reported by the caller, by name and epoch
    with np.errstate(over="ignore", invalid="ignore"):
        for bi in range(n_batches):
            nt = est._n_threads()
            b = order[bi * bs:(bi + 1) * bs]
            xb, lb, yb, wb = data.batch(b)
            out = est.model_.forward(xb, lb, True, nt)
            loss, d_out = est._loss(out, yb, wb, nt)
            if initial is not None and not initial:
                initial.append(float(loss) if math.isfinite(loss) else math.inf)
            if not math.isfinite(loss):
                return None
            grads = est._backward_batch(d_out, nt)
            # clipping and the update of every dense parameter: one call into the core
            est._optimizer.step(params, grads, max_norm=clip, n_threads=nt)
            est.t_ += len(b)
            w = float(wb.sum())
            total += loss * w
            wsum += w
            if est.verbose >= 2:
                _progress(bi + 1, n_batches, total / max(wsum, 1e-12))
    return total / wsum if wsum > 0 else 0.0


def _end_of_epoch(est, data, va, epoch_loss, incremental):
    """Bookkeeping after an epoch; True when training should stop."""
    if est.early_stopping and va is not None:
        score = est._validation_score(data, va)
        est.validation_scores_.append(score)
        if score > est.best_validation_score_ + est.tol:
            est._no_improve = 0
        else:
            est._no_improve += 1
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = snapshot(est)
        metric = -score
    else:
        if epoch_loss < est.best_loss_ - est.tol:
            est._no_improve = 0
        else:
            est._no_improve += 1
        est.best_loss_ = min(est.best_loss_, epoch_loss)
        metric = epoch_loss
    est._scheduler.step(metric)
    return (not incremental) and est._no_improve >= est.n_iter_no_change


def _interrupted(est, done, last_good):
    if est.n_iter_ == done and last_good is not None:   # the epoch was not complete
        restore(est, last_good)
    del est.loss_curve_[est.n_iter_:]
    if est.validation_scores_ is not None:
        del est.validation_scores_[est.n_iter_:]
    warnings.warn(f"fit interrupted (KeyboardInterrupt) in epoch {done + 1}; the model "
                  f"keeps the weights of the last completed epoch ({est.n_iter_}) and "
                  f"can be used or trained further.", RuntimeWarning, stacklevel=7)


def _diverged(est, last_good):
    restore(est, last_good)
    warnings.warn(f"fit stopped in epoch {est.n_iter_ + 1}: the loss became NaN or "
                  f"infinite; the weights after epoch {est.n_iter_} were kept. Try a "
                  f"lower learning_rate or clip_grad_norm.", RuntimeWarning, stacklevel=7)


def _progress(done, total, loss):
    width = 30
    fill = int(width * done / total)
    sys.stdout.write(f"\r  [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                     f"loss {loss:.4f}")
    if done == total:
        sys.stdout.write("\r" + " " * (width + 40) + "\r")
    sys.stdout.flush()


def _report(est, loss, seconds):
    val = ""
    if est.validation_scores_:
        val = f", validation score {est.validation_scores_[-1]:.4f}"
    print(f"epoch {est.n_iter_}: train loss {loss:.6f}{val}, {seconds:.2f} s", flush=True)
