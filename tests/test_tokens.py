"""Token input (embedding_dim set): the vocabulary and its unknown row, clear errors for bad
ids, the sparse embedding gradient, text classification, and a character-level language
model that learns and generates, carrying its state step by step."""
import numpy as np
import pytest

import fastrnn
from fastrnn import GRUClassifier, GRUTagger, LSTMClassifier, LSTMTagger, RNNRegressor
from fastrnn.datasets import char_sequences, load_text
from fastrnn.sparse import RowSparseGrad


def token_data(n=300, V=40, seed=0):
    """Label 1 when token 7 occurs in the sequence."""
    rng = np.random.default_rng(seed)
    X = [rng.integers(0, V, size=rng.integers(3, 25)) for _ in range(n)]
    return X, np.array([int(7 in x) for x in X])


def test_text_classification_learns_and_accepts_both_forms():
    X, y = token_data()
    m = LSTMClassifier(embedding_dim=8, hidden_size=16, max_epochs=15, random_state=0)
    m.fit(X[:240], y[:240])
    assert m.score(X[240:], y[240:]) > 0.9
    assert m.vocab_size_ == 40 and m.embedding_.params["weight"].shape == (41, 8)
    assert m.n_step_features_ == 1 and m.x_mean_ is None
    # a 2-D int array is a batch of equal-length token sequences
    A = np.stack([x[:3] for x in X[:50]])
    g = GRUClassifier(embedding_dim=4, hidden_size=8, max_epochs=2, random_state=0)
    assert g.fit(A, y[:50]).predict(A).shape == (50,)
    assert g.predict([A[0], A[1][:2]]).shape == (2,)
    # float input still works exactly as before when embedding_dim is None
    Xf = np.random.default_rng(0).normal(size=(20, 4, 2))
    assert RNNRegressor(max_epochs=1).fit(Xf, Xf.sum(axis=(1, 2))).predict(Xf).shape == (20,)


def test_unknown_ids_share_one_reserved_row():
    rng = np.random.default_rng(1)
    X = [rng.choice([1, 2, 3, 5], size=6) for _ in range(40)]    # 0 and 4 never seen
    y = [x % 2 for x in X]
    m = LSTMTagger(embedding_dim=4, hidden_size=6, max_epochs=2, random_state=0).fit(X, y)
    assert m.vocab_size_ == 6
    np.testing.assert_array_equal(m.known_tokens_, [False, True, True, True, False, True])
    rows = m._transform_inputs(m._read_X_predict([np.array([0, 1, 4, 5, 6, 10 ** 9])])).values
    np.testing.assert_array_equal(rows[0], [6, 1, 6, 5, 6, 6])       # 6 = the unknown row
    # the unknown row starts at zero and unseen ids give identical predictions
    p = m.predict_proba([np.array([1, 0, 2]), np.array([1, 4, 2]), np.array([1, 99, 2])])
    np.testing.assert_array_equal(p[0], p[1])
    np.testing.assert_array_equal(p[0], p[2])
    # vocab_size given: ids at or above it are unknown, in fit too
    m2 = LSTMTagger(embedding_dim=4, hidden_size=6, max_epochs=1, vocab_size=3,
                    random_state=0).fit(X, y)
    assert m2.embedding_.params["weight"].shape == (4, 4)
    np.testing.assert_array_equal(m2.known_tokens_, [False, True, True])


@pytest.mark.parametrize("bad, exc, match", [
    ([np.array([1, -2, 3])], ValueError, "negative token id -2"),
    ([np.array([1.5, 2.0])], TypeError, "integer token ids"),
    (np.ones((3, 4, 2), dtype=int), ValueError, "2-D"),
    ([np.array([1, 2]), np.zeros((2, 2), dtype=int)], ValueError, "1-D sequence of token ids"),
    ([np.array([], dtype=int), np.array([1])], ValueError, "empty sequence"),
    ([np.array(["a", "b"])], TypeError, "integer token ids"),
])
def test_bad_token_ids_get_clear_errors(bad, exc, match):
    X, y = token_data(n=30)
    m = LSTMClassifier(embedding_dim=4, hidden_size=4, max_epochs=1).fit(X, y)
    with pytest.raises(exc, match=match):
        m.predict(bad)
    with pytest.raises(exc, match=match):
        LSTMClassifier(embedding_dim=4, max_epochs=1).fit(bad, np.arange(len(bad)) % 2)


def test_token_parameters_are_checked():
    X, y = token_data(n=20)
    with pytest.raises(ValueError, match="needs embedding_dim"):
        LSTMClassifier(vocab_size=10).fit(X, y)
    with pytest.raises(TypeError, match="embedding_dim"):
        LSTMClassifier(embedding_dim=2.5).fit(X, y)
    with pytest.raises(ValueError, match="vocab_size"):
        LSTMClassifier(embedding_dim=4, vocab_size=0).fit(X, y)
    with pytest.raises(ValueError, match="explicit, smaller vocab_size"):
        LSTMClassifier(embedding_dim=4).fit([np.array([1, 2 ** 40]), np.array([3])], [0, 1])


def test_embedding_gradient_touches_only_the_batch_rows(monkeypatch):
    """Every embedding gradient handed to the optimizer is row-sparse, with exactly the
    distinct (mapped) ids of the batch's valid steps."""
    X, y = token_data(n=64, V=500)
    m = LSTMClassifier(embedding_dim=4, hidden_size=4, max_epochs=1, batch_size=16,
                       random_state=0)
    seen = []
    from fastrnn.estimators import _network

    orig = _network.SequenceModel.backward

    def spy(self, d_rows, n_threads):
        grads = orig(self, d_rows, n_threads)
        seen.append((self._cache, grads["embedding.weight"]))
        return grads

    monkeypatch.setattr(_network.SequenceModel, "backward", spy)
    m.fit(X, y)
    assert len(seen) == 4
    for _, g in seen:
        assert isinstance(g, RowSparseGrad) and g.shape == (501, 4)
        assert len(np.unique(g.rows)) == len(g.rows) < 400


def test_save_load_and_pickle_keep_the_vocabulary(tmp_path):
    X, y = token_data(n=60)
    m = GRUTagger(embedding_dim=4, hidden_size=6, max_epochs=2, random_state=0)
    m.fit(X, [x % 3 for x in X])
    m.save(tmp_path / "t.npz")
    m2 = fastrnn.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(m2.known_tokens_, m.known_tokens_)
    probe = [np.array([1, 2, 999]), np.array([7])]
    for a, b in zip(m.predict_proba(probe), m2.predict_proba(probe)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- a language model

@pytest.fixture(scope="module")
def char_lm():
    text = load_text()[:120_000]
    X, y, alphabet = char_sequences(text, seq_len=64)
    n_train = int(0.9 * len(X))
    lm = LSTMTagger(embedding_dim=32, hidden_size=128, max_epochs=8, random_state=0)
    lm.fit(X[:n_train], y[:n_train])
    return lm, X[n_train:], y[n_train:], text, alphabet


def test_char_language_model_beats_the_unigram_entropy(char_lm):
    lm, Xte, yte, text, alphabet = char_lm
    counts = np.unique(list(text), return_counts=True)[1]
    p = counts / counts.sum()
    unigram = float(-(p * np.log(p)).sum())                    # nats per character
    proba = lm.predict_proba(Xte)                              # (n, T, C)
    idx = np.searchsorted(lm.classes_, yte)
    nll = float(-np.log(np.take_along_axis(proba, idx[..., None], axis=2)).mean())
    assert nll < unigram - 1.0, (nll, unigram)


def test_generation_carries_the_state_one_step_at_a_time(char_lm, monkeypatch):
    lm, Xte, _, _, alphabet = char_lm
    prefix = Xte[0, :20]
    calls = []
    orig = lm.model_.run

    def spy(xb, lengths, state=None, n_threads=None):
        calls.append(xb.shape[1])
        return orig(xb, lengths, state, n_threads)

    monkeypatch.setattr(lm.model_, "run", spy)
    out = lm.generate(prefix, 30, temperature=0.8, random_state=0)
    assert out.shape == (30,) and set(out) <= set(lm.classes_)
    assert calls == [20] + [1] * 29            # the prefix once, then one step per token
    monkeypatch.undo()
    np.testing.assert_array_equal(out, lm.generate(prefix, 30, temperature=0.8,
                                                   random_state=0))
    # greedy generation equals the argmax of predict on the growing sequence
    greedy = lm.generate(prefix, 5, temperature=0)
    seq = list(prefix)
    for tok in greedy:
        step = lm.predict_proba([np.array(seq)])[0][-1]
        assert lm.classes_[np.argmax(step)] == tok
        seq.append(tok)
    several = lm.generate([prefix, Xte[1, :7]], 4, temperature=0)
    assert several.shape == (2, 4)
    np.testing.assert_array_equal(several[0], greedy[:4])


def test_generate_refuses_what_cannot_generate(char_lm):
    lm = char_lm[0]
    with pytest.raises(ValueError, match="temperature"):
        lm.generate([1, 2], 3, temperature=-1)
    with pytest.raises(ValueError, match="n_steps"):
        lm.generate([1, 2], -1)
    X, y = token_data(n=20)
    float_tagger = LSTMTagger(max_epochs=1).fit(np.zeros((4, 3, 1)), np.zeros((4, 3), int) +
                                                np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="embedding_dim"):
        float_tagger.generate([1], 2)
    bi = LSTMTagger(embedding_dim=2, bidirectional=True, max_epochs=1).fit(
        X, [x % 2 for x in X])
    with pytest.raises(ValueError, match="bidirectional"):
        bi.generate(X[0], 2)
