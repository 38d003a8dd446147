"""Built-in sequence data sets, generated on the spot or read from Python's own files
(nothing downloaded).

Every generator takes ``random_state`` and returns ``X`` shaped
(n_samples, n_steps, n_features) float32 and ``y`` (one label per sequence, or one per
step for ``make_marked_recall``). ``load_text`` returns English text that ships with
Python, and ``char_sequences`` cuts a text into token-id windows for a language model.
"""
import numpy as np

__all__ = ["make_majority", "make_adding", "make_delayed_recall", "make_periodic",
           "make_marked_recall", "load_text", "char_sequences"]


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


def make_marked_recall(n_samples=1000, n_steps=100, n_symbols=4, mark_rate=0.05,
                       random_state=None):
    """A tagging task (a label at every step) that needs gated memory.

    At every step one of ``n_symbols`` symbols is shown (a one-hot); some steps are also
    marked (feature ``n_symbols``; steps 0 and 1 always, later ones with probability
    ``mark_rate``). The label at each step is the symbol shown at the mark BEFORE the most
    recent one, so every label depends on an input many steps back (about 1 / mark_rate)
    with a fresh distractor symbol at every step in between, and no label can be read off
    recent inputs: a model must store a symbol when a mark comes, hold it through the
    distractors, and move it to a second slot at the next mark. An LSTM learns this; a
    plain tanh RNN trained the same way stays near chance (1 / n_symbols).
    Returns X (n_samples, n_steps, n_symbols + 1) float32, y int (n_samples, n_steps).
    """
    _check(n_samples, n_steps, min_steps=2)
    if int(n_symbols) < 2:
        raise ValueError(f"n_symbols must be >= 2, got {n_symbols}")
    if not 0.0 <= float(mark_rate) <= 1.0:
        raise ValueError(f"mark_rate must lie in [0, 1], got {mark_rate}")
    rng = _rng(random_state)
    n, T, k = int(n_samples), int(n_steps), int(n_symbols)
    sym = rng.integers(k, size=(n, T))
    mark = rng.random((n, T)) < mark_rate
    mark[:, :2] = True
    X = np.zeros((n, T, k + 1), np.float32)
    X[np.arange(n)[:, None], np.arange(T)[None, :], sym] = 1.0
    X[:, :, k] = mark
    steps = np.arange(T)[None, :]
    last = np.maximum.accumulate(np.where(mark, steps, 0), axis=1)     # latest mark <= t
    # the mark before it: the latest mark at or before last - 1
    before = np.concatenate([np.zeros((n, 1), np.int64), last[:, :-1]], axis=1)
    prev = np.take_along_axis(before, last, axis=1)
    return X, np.take_along_axis(sym, prev, axis=1)


def load_text():
    """About 0.5 MB of English prose that ships with every CPython: the topic texts of
    ``help()`` (module ``pydoc_data.topics``), joined in a fixed order. Plain ASCII
    mostly; returned as one str."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions split it off
        raise OSError("this Python has no pydoc_data package (the help() topics); "
                      "load_text needs it") from e
    return "\n\n".join(topics[k] for k in sorted(topics))


def char_sequences(text, seq_len=64, stride=None, alphabet=None):
    """Windows of a text for a character-level language model.

    Each window of ``seq_len`` + 1 characters gives an input X[i] (the first seq_len
    character ids) and a target y[i] (the next character at every step: the window
    shifted by one). Windows start every ``stride`` characters (default seq_len).
    Characters are numbered by ``alphabet`` (default: the sorted characters of the text);
    characters outside it get id len(alphabet).
    Returns X (n, seq_len) int64, y (n, seq_len) int64, alphabet (str)."""
    if not isinstance(text, str) or len(text) < 2:
        raise ValueError("text must be a str of at least 2 characters")
    seq_len = int(seq_len)
    stride = seq_len if stride is None else int(stride)
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
    if alphabet is None:
        alphabet = "".join(sorted(set(text)))
    lookup = np.full(0x110000, len(alphabet), dtype=np.int64)
    lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    starts = np.arange(0, len(ids) - seq_len, stride)
    if len(starts) == 0:
        raise ValueError(f"text of {len(text)} characters is too short for seq_len={seq_len}")
    win = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return ids[win[:, :-1]], ids[win[:, 1:]], alphabet
