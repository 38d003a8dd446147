"""fastrnn.interop: weights from and to PyTorch and Keras, for layers and estimators.

Without torch or tensorflow the Keras layout is checked against a numpy implementation
of Keras' own formulas and every export/load pair round-trips; with them installed the
loaded layers and estimators reproduce the real modules' outputs."""
import os

import numpy as np
import pytest

import fastrnn
from fastrnn import (GRUClassifier, LSTMClassifier, LSTMRegressor, RNNClassifier, interop)
from fastrnn.dense import Dense
from fastrnn.layers import GRU, LSTM, RNN

RNG = np.random.default_rng(0)
LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def keras_weights(cell, I, H, rng, reset_after=True):
    """Random weights in Keras' layout (kernel, recurrent_kernel, bias)."""
    G = GATES[cell]
    kernel = rng.normal(scale=0.4, size=(I, G * H))
    recurrent = rng.normal(scale=0.4, size=(H, G * H))
    bias = rng.normal(scale=0.4, size=(2, G * H) if cell == "gru" and reset_after
                      else (G * H,))
    return [kernel, recurrent, bias]


def keras_forward(cell, X, weights):
    """Keras' LSTM (gates i,f,c,o), GRU (z,r,h, reset_after=True) and SimpleRNN
    recurrences, written from Keras' documentation; returns all hidden states."""
    kernel, recurrent, bias = weights
    B, T, _ = X.shape
    H = recurrent.shape[0]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    outs = []
    for t in range(T):
        x = X[:, t]
        if cell == "lstm":
            z = x @ kernel + h @ recurrent + bias
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        elif cell == "gru":
            xz, hz = x @ kernel + bias[0], h @ recurrent + bias[1]
            z = sigmoid(xz[:, :H] + hz[:, :H])
            r = sigmoid(xz[:, H:2 * H] + hz[:, H:2 * H])
            hh = np.tanh(xz[:, 2 * H:] + r * hz[:, 2 * H:])
            h = z * h + (1 - z) * hh
        else:
            h = np.tanh(x @ kernel + h @ recurrent + bias)
        outs.append(h)
    return np.stack(outs, axis=1)


def torch_params(layer, rng):
    """Random values for every parameter of `layer`, as a PyTorch-named dict."""
    return {k: rng.normal(scale=0.4, size=s) for k, s in layer.param_shapes().items()}


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- Keras layout, numpy only

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_keras_layout_matches_keras_formulas(cell):
    I, H = 3, 5
    X = RNG.normal(size=(4, 7, I))
    w = keras_weights(cell, I, H, RNG)
    layer = interop.load_keras(LAYERS[cell](I, H, dtype=np.float64), w)
    out, _ = layer.forward(X)
    np.testing.assert_allclose(out, keras_forward(cell, X, w), atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_keras_stacked_layers_match_formulas(cell):
    I, H = 3, 4
    X = RNG.normal(size=(2, 5, I))
    w0, w1 = keras_weights(cell, I, H, RNG), keras_weights(cell, H, H, RNG)
    layer = interop.load_keras(LAYERS[cell](I, H, num_layers=2, dtype=np.float64), w0 + w1)
    out, _ = layer.forward(X)
    expected = keras_forward(cell, keras_forward(cell, X, w0), w1)
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_keras_round_trip(cell, bidirectional):
    layer = LAYERS[cell](3, 4, num_layers=2, bidirectional=bidirectional, dtype=np.float64,
                         random_state=1)
    w = interop.export_keras(layer)
    assert len(w) == 3 * 2 * (2 if bidirectional else 1)
    G = GATES[cell]
    assert w[0].shape == (3, G * 4) and w[1].shape == (4, G * 4)
    assert w[2].shape == ((2, 12) if cell == "gru" else (G * 4,))
    other = LAYERS[cell](3, 4, num_layers=2, bidirectional=bidirectional, dtype=np.float64,
                         random_state=2)
    interop.load_keras(other, w)
    for a, b in zip(interop.export_keras(other), w):
        np.testing.assert_array_equal(a, b)
    X = RNG.normal(size=(3, 6, 3))
    np.testing.assert_allclose(other.forward(X)[0], layer.forward(X)[0], atol=1e-12)


def test_keras_without_bias_gives_zero_biases():
    k, r, _ = keras_weights("lstm", 3, 4, RNG)
    layer = interop.load_keras(LSTM(3, 4), [k, r])
    assert not layer.params["bias_ih_l0"].any() and not layer.params["bias_hh_l0"].any()


def test_keras_errors():
    with pytest.raises(ValueError, match="reset_after"):
        interop.load_keras(GRU(3, 4), keras_weights("gru", 3, 4, RNG, reset_after=False))
    with pytest.raises(ValueError, match="kernel has shape"):
        interop.load_keras(LSTM(3, 5), keras_weights("lstm", 3, 4, RNG))
    with pytest.raises(ValueError, match="layer-directions"):
        interop.load_keras(LSTM(3, 4, bidirectional=True), keras_weights("lstm", 3, 4, RNG))
    bad = keras_weights("lstm", 3, 4, RNG)
    bad[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        interop.load_keras(LSTM(3, 4), bad)
    with pytest.raises(TypeError):
        interop.load_keras(Dense(3, 4), keras_weights("lstm", 3, 4, RNG))


# ---------------------------------------------------------------- PyTorch layout, numpy only

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_state_dict_round_trip(cell):
    a = LAYERS[cell](3, 4, num_layers=2, bidirectional=True, random_state=0)
    sd = interop.export_torch(a, prefix="rnn.")
    assert set(sd) == {"rnn." + k for k in a.params}
    b = LAYERS[cell](3, 4, num_layers=2, bidirectional=True, random_state=1)
    arrays = {k: v for k, v in b.params.items()}
    interop.load_torch(b, sd, prefix="rnn.")
    for k in a.params:
        np.testing.assert_array_equal(b.params[k], a.params[k])
        assert b.params[k] is arrays[k]           # copied in place
    sd["rnn.weight_hh_l0"][:] = 0                 # the export is a copy
    assert a.params["weight_hh_l0"].any()


def test_torch_load_converts_dtype_and_fills_missing_biases():
    layer = GRU(3, 4, dtype=np.float32)
    sd = {k: v for k, v in torch_params(layer, RNG).items() if k.startswith("weight")}
    interop.load_torch(layer, sd)
    assert layer.params["weight_ih_l0"].dtype == np.float32
    assert not layer.params["bias_ih_l0"].any()


def test_torch_load_errors():
    layer = LSTM(3, 4)
    sd = torch_params(layer, RNG)
    with pytest.raises(ValueError, match="weight_hh_l0"):
        interop.load_torch(layer, {**sd, "weight_hh_l0": np.zeros((16, 5))})
    with pytest.raises(ValueError, match="missing 'weight_ih_l0'"):
        interop.load_torch(layer, {k: v for k, v in sd.items() if k != "weight_ih_l0"})
    with pytest.raises(ValueError, match="proj_size"):
        interop.load_torch(layer, {**sd, "weight_hr_l0": np.zeros((2, 4))})
    interop.load_torch(layer, {**sd, "weight_hr_l0": np.zeros((2, 4))}, strict=False)
    with pytest.raises(ValueError, match="no key starting"):
        interop.load_torch(layer, sd, prefix="encoder.")
    with pytest.raises(TypeError):
        interop.load_torch(layer, [1, 2, 3])


# ---------------------------------------------------------------- estimators, numpy only

def _net_state_dict(cell, I, H, n_out, rng, bidirectional=False):
    layer = LAYERS[cell](I, H, bidirectional=bidirectional, dtype=np.float64)
    sd = {"rnn." + k: v for k, v in torch_params(layer, rng).items()}
    D = 2 if bidirectional else 1
    sd["head.weight"] = rng.normal(size=(n_out, D * H))
    sd["head.bias"] = rng.normal(size=n_out)
    return sd


def _reference_outputs(cell, sd, X, bidirectional=False):
    layer = LAYERS[cell](X.shape[2], sd["rnn.weight_hh_l0"].shape[1],
                         bidirectional=bidirectional, dtype=np.float64)
    interop.load_torch(layer, sd, prefix="rnn.")
    _, state = layer.forward(X)
    h_n = state[0] if cell == "lstm" else state
    feats = np.concatenate(list(h_n[-2:]), axis=1) if bidirectional else h_n[-1]
    return feats @ sd["head.weight"].T + sd["head.bias"]


@pytest.mark.parametrize("Est,cell,bidirectional",
                         [(LSTMClassifier, "lstm", False), (GRUClassifier, "gru", True),
                          (RNNClassifier, "rnn", False)])
def test_unfitted_classifier_takes_torch_weights(Est, cell, bidirectional):
    sd = _net_state_dict(cell, 3, 5, 4, RNG, bidirectional)
    est = Est(hidden_size=5, bidirectional=bidirectional, dtype="float64")
    assert interop.load_torch_estimator(est, sd, classes=list("abcd")) is est
    X = RNG.normal(size=(6, 7, 3))
    np.testing.assert_allclose(est.predict_proba(X),
                               softmax(_reference_outputs(cell, sd, X, bidirectional)),
                               atol=1e-10)
    assert list(est.classes_) == list("abcd") and est.n_iter_ == 0
    exported = interop.export_torch_estimator(est)
    assert set(exported) == set(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k])


def test_unfitted_regressor_predicts_raw_outputs():
    sd = _net_state_dict("lstm", 2, 4, 1, RNG)
    est = interop.load_torch_estimator(LSTMRegressor(hidden_size=4, dtype="float64"), sd)
    X = RNG.normal(size=(5, 6, 2))
    pred = est.predict(X)
    assert pred.shape == (5,)
    np.testing.assert_allclose(pred, _reference_outputs("lstm", sd, X)[:, 0], atol=1e-10)


def test_fitted_estimator_round_trip_and_keeps_working(tmp_path):
    X = RNG.normal(size=(40, 5, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    a = LSTMClassifier(hidden_size=6, max_epochs=3, random_state=0).fit(X, y)
    b = LSTMClassifier(hidden_size=6, max_epochs=3, random_state=1).fit(X, y)
    interop.load_torch_estimator(b, interop.export_torch_estimator(a))
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), atol=1e-6)
    b.save(tmp_path / "m.npz")
    np.testing.assert_allclose(fastrnn.load(tmp_path / "m.npz").predict_proba(X),
                               a.predict_proba(X), atol=1e-6)
    b.set_params(warm_start=True, max_epochs=1).fit(X, y)    # trains on from the import
    c = interop.load_torch_estimator(LSTMClassifier(hidden_size=6),
                                     interop.export_torch_estimator(a), classes=[0, 1])
    c.partial_fit(X, y)
    assert c.n_iter_ == 1


def test_estimator_errors():
    sd = _net_state_dict("lstm", 3, 5, 2, RNG)
    with pytest.raises(ValueError, match="hidden_size"):
        interop.load_torch_estimator(LSTMClassifier(hidden_size=8), sd)
    with pytest.raises(ValueError, match="classes"):
        interop.load_torch_estimator(LSTMClassifier(hidden_size=5), sd, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="head"):
        interop.load_torch_estimator(LSTMClassifier(hidden_size=5),
                                     {k: v for k, v in sd.items() if k.startswith("rnn.")})
    X = RNG.normal(size=(20, 4, 3)).astype(np.float32)
    fitted = LSTMClassifier(hidden_size=5, max_epochs=1).fit(X, np.arange(20) % 2)
    before = interop.export_torch_estimator(fitted)
    bad = dict(sd, **{"rnn.weight_hh_l0": np.zeros((20, 4))})
    with pytest.raises(ValueError):
        interop.load_torch_estimator(fitted, bad)
    for k, v in interop.export_torch_estimator(fitted).items():   # left untouched
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="features"):
        interop.load_torch_estimator(fitted, _net_state_dict("lstm", 4, 5, 2, RNG))
    with pytest.raises(ValueError, match="not fitted"):
        interop.export_torch_estimator(LSTMClassifier())


def test_keras_estimator_numpy():
    w = keras_weights("gru", 3, 4, RNG)
    kernel, bias = RNG.normal(size=(4, 3)), RNG.normal(size=3)
    est = interop.load_keras_estimator(GRUClassifier(hidden_size=4, dtype="float64"), w,
                                       [kernel, bias])
    X = RNG.normal(size=(5, 6, 3))
    h = keras_forward("gru", X, w)[:, -1]
    np.testing.assert_allclose(est.predict_proba(X), softmax(h @ kernel + bias), atol=1e-10)


# ---------------------------------------------------------------- against PyTorch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_relu"])
def test_layer_from_torch_matches_torch(torch, kind):
    torch.manual_seed(0)
    name, _, act = kind.partition("_")
    kw = {"nonlinearity": act} if act else {}
    module = getattr(torch.nn, name)(4, 6, num_layers=2, bidirectional=True, **kw)
    layer = interop.layer_from_torch(module)
    X = RNG.normal(size=(3, 5, 4)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(X.transpose(1, 0, 2)))[0].numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(layer.forward(X)[0], ref, atol=2e-5)
    back = interop.layer_to_torch(layer)
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(X))[0].numpy(), ref, atol=2e-5)
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy())


def test_load_torch_accepts_tensors_with_grad(torch):
    module = torch.nn.GRU(3, 4, batch_first=True)
    layer = interop.load_torch(GRU(3, 4), dict(module.named_parameters()))
    np.testing.assert_array_equal(layer.params["weight_hh_l0"],
                                  module.weight_hh_l0.detach().numpy())
    interop.load_torch(GRU(3, 4), module)                     # the module itself
    with pytest.raises(ValueError, match="proj_size"):
        interop.layer_from_torch(torch.nn.LSTM(3, 4, proj_size=2))


def test_torch_estimator_round_trip(torch):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 8, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            h = self.rnn(x)[1][0]
            return self.head(torch.cat([h[-2], h[-1]], dim=1))

    torch.manual_seed(0)
    net = Net()
    est = interop.load_torch_estimator(LSTMClassifier(hidden_size=8, bidirectional=True),
                                       net.state_dict(), classes=["x", "y", "z"])
    X = RNG.normal(size=(9, 6, 3)).astype(np.float32)
    with torch.no_grad():
        proba = torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(est.predict_proba(X), proba, atol=1e-5)
    other = Net()
    other.load_state_dict(interop.export_torch_estimator(est, as_tensors=True))
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(other(torch.from_numpy(X)), dim=1).numpy(),
                                   proba, atol=1e-6)


# ---------------------------------------------------------------- against tf.keras

@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    return tf.keras


def _randomise_biases(keras_layer, rng):
    """Keras initialises biases to 0 (and LSTM forget gates to 1): perturb them so the
    bias mapping is tested too."""
    keras_layer.set_weights([w + rng.normal(scale=0.3, size=w.shape).astype(w.dtype)
                             if w.ndim == 1 or w.shape[0] == 2 else w
                             for w in keras_layer.get_weights()])


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_from_keras_matches_keras(keras, kind, bidirectional):
    X = RNG.normal(size=(3, 6, 4)).astype(np.float32)
    stack = []
    for _ in range(2):
        kl = getattr(keras.layers, kind)(5, return_sequences=True)
        stack.append(keras.layers.Bidirectional(kl) if bidirectional else kl)
    z = X
    for kl in stack:
        kl(z)
        _randomise_biases(kl, RNG)
        z = kl(z)
    ref = np.asarray(z)
    layer = interop.layer_from_keras(stack)
    assert layer.num_layers == 2 and layer.bidirectional == bidirectional
    np.testing.assert_allclose(layer.forward(X)[0], ref, atol=2e-5)
    exported = interop.export_keras(layer)
    per = 6 if bidirectional else 3
    for j, kl in enumerate(stack):
        kl.set_weights(exported[per * j:per * (j + 1)])
    z = X
    for kl in stack:
        z = kl(z)
    np.testing.assert_allclose(np.asarray(z), ref, atol=1e-6)


def test_keras_refusals(keras):
    X = np.zeros((1, 2, 3), np.float32)
    gru = keras.layers.GRU(4, reset_after=False)
    gru(X)
    with pytest.raises(ValueError, match="reset_after"):
        interop.layer_from_keras(gru)
    lstm = keras.layers.LSTM(4, activation="relu")
    lstm(X)
    with pytest.raises(ValueError, match="activation"):
        interop.layer_from_keras(lstm)


def test_keras_model_into_estimator(keras):
    inp = keras.Input((6, 3))
    rnn = keras.layers.LSTM(8)
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inp, dense(rnn(inp)))
    _randomise_biases(rnn, RNG)
    est = interop.load_keras_estimator(LSTMClassifier(hidden_size=8), rnn, dense,
                                       classes=[10, 20, 30])
    X = RNG.normal(size=(7, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(est.predict_proba(X), np.asarray(model(X)), atol=1e-5)
