"""Probes into a running fit, shared by the estimator tests."""
import numpy as np


def record_snapshots(monkeypatch):
    """Records a copy of every weight snapshot the training loop takes (the first one:
    the weights fit starts from). Copies, since the loop reuses a snapshot's arrays
    for a later one."""
    from fastrnn.estimators import _training
    seen = []
    orig = _training.snapshot

    def recording(est, training_state=False, into=None):
        snap = orig(est, training_state, into=into)
        seen.append({k: v.copy() for k, v in snap.items() if isinstance(v, np.ndarray)})
        return snap
    monkeypatch.setattr(_training, "snapshot", recording)
    return seen
