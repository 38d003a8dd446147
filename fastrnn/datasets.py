"""Built-in synthetic sequence data sets, generated on the spot (nothing downloaded).

Every generator takes ``random_state`` and returns ``X`` shaped
(n_samples, n_steps, n_features) float32 and ``y``.
"""
import numpy as np

__all__ = ["make_majority", "make_adding", "make_delayed_recall", "make_periodic"]


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def _check(n_samples, n_steps, min_steps=1):
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if int(n_steps) < min_steps:
        raise ValueError(f"n_steps must be >= {min_steps}, got {n_steps}")


def make_majority(n_samples=1000, n_steps=150, n_symbols=3, event_rate=0.1, noise=0.3,
                  random_state=None):
    """Which symbol occurred most often? A classification task needing memory over
    the whole sequence.

    At each step, with probability ``event_rate``, one of ``n_symbols`` symbols fires
    (a one-hot in features 0..n_symbols-1); one favourite symbol per sequence fires half
    of the time. The label is the symbol that fired most often (ties are redrawn).
    Events are spread over all ``n_steps`` steps, so a model that sees only the last
    few dozen steps cannot do much better than chance. Feature ``n_symbols`` is
    Gaussian noise. Returns X (n_samples, n_steps, n_symbols + 1), y int (n_samples,).
    """
    _check(n_samples, n_steps)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2, got {n_symbols}")
    rng = _rng(random_state)
    n, T, k = int(n_samples), int(n_steps), int(n_symbols)
    X = np.zeros((n, T, k + 1), np.float32)
    y = np.empty(n, np.int64)
    todo = np.arange(n)
    while todo.size:
        m = todo.size
        fav = rng.integers(k, size=m)
        other = rng.integers(k - 1, size=(m, T))
        other = other + (other >= fav[:, None])                 # a symbol != fav
        sym = np.where(rng.random((m, T)) < 0.5, fav[:, None], other)
        ev = rng.random((m, T)) < event_rate
        counts = np.stack([(ev & (sym == s)).sum(axis=1) for s in range(k)], axis=1)
        unique = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
        rows = todo[unique]
        X[rows] = 0.0
        r, t = np.nonzero(ev[unique])
        X[rows[r], t, sym[unique][r, t]] = 1.0
        y[rows] = counts[unique].argmax(axis=1)
        todo = todo[~unique]
    X[:, :, k] = rng.normal(0.0, noise, size=(n, T))
    return X, y


def make_adding(n_samples=1000, n_steps=100, random_state=None):
    """The adding problem (Hochreiter & Schmidhuber 1997), a regression task.

    Feature 0 holds uniform random values in [0, 1); feature 1 marks two steps, one in
    the first half and one in the second. The target is the sum of the two marked
    values. Returns X (n_samples, n_steps, 2), y float (n_samples,).
    """
    _check(n_samples, n_steps, min_steps=2)
    rng = _rng(random_state)
    n, T = int(n_samples), int(n_steps)
    X = np.zeros((n, T, 2), np.float32)
    X[:, :, 0] = rng.random((n, T))
    a = rng.integers(0, T // 2, size=n)
    b = rng.integers(T // 2, T, size=n)
    X[np.arange(n), a, 1] = 1.0
    X[np.arange(n), b, 1] = 1.0
    y = X[np.arange(n), a, 0] + X[np.arange(n), b, 0]
    return X, y.astype(np.float64)


def make_delayed_recall(n_samples=1000, n_steps=30, n_classes=4, noise=0.3,
                        random_state=None):
    """Delayed recall: the class is shown as a one-hot at step 0, then ``n_steps - 2``
    steps of noise follow, and the last step carries a "recall now" cue (feature
    n_classes). Returns X (n_samples, n_steps, n_classes + 1), y int (n_samples,).
    """
    _check(n_samples, n_steps, min_steps=2)
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    rng = _rng(random_state)
    n, T = int(n_samples), int(n_steps)
    y = rng.integers(0, n_classes, size=n)
    X = np.zeros((n, T, n_classes + 1), np.float32)
    X[:, 1:-1, :n_classes] = rng.normal(0.0, noise, size=(n, T - 2, n_classes))
    X[np.arange(n), 0, y] = 1.0
    X[:, -1, n_classes] = 1.0
    return X, y


def make_periodic(n_samples=1000, n_steps=64, n_classes=3, noise=0.5, random_state=None):
    """Noisy periodic signals: class c is a sine making 2 (c + 1) cycles over the
    sequence, with random phase and amplitude, buried in Gaussian noise; one feature.
    The classes stay distinguishable (below the Nyquist rate) while 4 * n_classes <
    n_steps. Returns X (n_samples, n_steps, 1), y int (n_samples,).
    """
    _check(n_samples, n_steps, min_steps=4)
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if 4 * int(n_classes) >= int(n_steps):
        raise ValueError(f"n_classes={n_classes} needs n_steps > {4 * int(n_classes)} "
                         f"(class c makes 2(c+1) cycles), got n_steps={n_steps}")
    rng = _rng(random_state)
    n, T = int(n_samples), int(n_steps)
    y = rng.integers(0, n_classes, size=n)
    t = np.arange(T)[None, :]
    freq = 2.0 * (y[:, None] + 1) / T
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amp = rng.uniform(0.5, 1.5, size=(n, 1))
    X = amp * np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, noise, size=(n, T))
    return X[:, :, None].astype(np.float32), y
