"""Move weights between fastrnn and PyTorch or Keras (neither is imported unless a
function is asked to make one of their objects).

fastrnn's layers keep their parameters under PyTorch's names, shapes and gate order, so
a PyTorch ``state_dict`` maps one to one; Keras stores the transposes, in another gate
order, with other biases:

=========  ==================================  ======================================
cell       PyTorch / fastrnn (per layer, dir)  Keras (``layer.get_weights()``)
=========  ==================================  ======================================
LSTM       weight_ih (4H, I), gates i,f,g,o    kernel (I, 4H), gates i,f,c,o
           weight_hh (4H, H)                   recurrent_kernel (H, 4H)
           bias_ih, bias_hh (4H,)              bias (4H,) = bias_ih + bias_hh
GRU        weight_ih (3H, I), gates r,z,n      kernel (I, 3H), gates z,r,h
           weight_hh (3H, H)                   recurrent_kernel (H, 3H)
           bias_ih, bias_hh (3H,)              bias (2, 3H) = [input, recurrent]
RNN        weight_ih (H, I), weight_hh (H, H)  kernel (I, H), recurrent_kernel (H, H)
           bias_ih, bias_hh (H,)               bias (H,) = bias_ih + bias_hh
=========  ==================================  ======================================

Keras' GRU must have ``reset_after=True`` (the Keras 3 default; it is PyTorch's
formula); ``reset_after=False`` applies the reset gate before the recurrent product and
has no fastrnn equivalent. Activations must be the defaults (tanh, sigmoid).

Layers:
    load_torch(layer, state_dict, prefix="", strict=True) -> layer
    export_torch(layer, prefix="", as_tensors=False) -> {name: array or tensor}
    layer_from_torch(module, dtype=np.float32) -> LSTM | GRU | RNN | Dense
    layer_to_torch(layer) -> torch.nn.LSTM | GRU | RNN | Linear (batch_first=True)
    load_keras(layer, weights) -> layer
    export_keras(layer) -> [kernel, recurrent_kernel, bias, ...]
    layer_from_keras(keras_layer, dtype=np.float32) -> LSTM | GRU | RNN
Estimators (the recurrent stack under ``rnn.``, the Dense head under ``head.``):
    load_torch_estimator(est, state_dict, classes=None, rnn_prefix="rnn.",
                         head_prefix="head.") -> est
    export_torch_estimator(est, rnn_prefix="rnn.", head_prefix="head.",
                           as_tensors=False) -> {name: array or tensor}
    load_keras_estimator(est, rnn_weights, head_weights, classes=None) -> est
"""
import numpy as np

from .dense import Dense
from .layers import _CELL_INFO, GRU, LSTM, RNN

__all__ = ["load_torch", "export_torch", "layer_from_torch", "layer_to_torch",
           "load_keras", "export_keras", "layer_from_keras",
           "load_torch_estimator", "export_torch_estimator", "load_keras_estimator"]

_TORCH_MODES = {"LSTM": ("lstm", None), "GRU": ("gru", None), "RNN_TANH": ("rnn", "tanh"),
                "RNN_RELU": ("rnn", "relu")}


# ---------------------------------------------------------------- helpers

def _to_numpy(value, name):
    """A numpy array from a numpy array, a torch tensor (any device, with or without
    grad) or anything array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # tf.Variable, tf.Tensor, keras Variable
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _as_state_dict(state_dict):
    if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):
        state_dict = state_dict.state_dict()          # a torch module
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of names to tensors or arrays (or a "
                        f"torch module), got {type(state_dict).__name__}")
    return state_dict


def _is_recurrent(layer):
    return isinstance(layer, (LSTM, GRU, RNN))


def _check_layer(layer):
    if not (_is_recurrent(layer) or isinstance(layer, Dense)):
        raise TypeError(f"layer must be a fastrnn LSTM, GRU, RNN or Dense, "
                        f"got {type(layer).__name__}")


def _cell(layer):
    return "lstm" if isinstance(layer, LSTM) else "gru" if isinstance(layer, GRU) else "rnn"


def _assign(layer, name, value):
    """Copy `value` into layer.params[name] in place (keeping the array object, which an
    estimator's optimizer may hold), after checking its shape."""
    shape = layer.param_shapes()[name]
    arr = _to_numpy(value, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, the {type(layer).__name__} layer "
                         f"expects {tuple(shape)}")
    cur = layer.params.get(name)
    if isinstance(cur, np.ndarray) and cur.shape == arr.shape and cur.dtype == layer.dtype \
            and cur.flags.writeable:
        cur[...] = arr
    else:
        layer.params[name] = np.array(arr, dtype=layer.dtype)


def _layer_dirs(layer):
    """(k, direction, suffix) of every layer-direction, in PyTorch's order."""
    return [(k, d, f"_l{k}" + ("_reverse" if d else ""))
            for k in range(layer.num_layers) for d in range(layer.num_directions)]


# ---------------------------------------------------------------- PyTorch, layers

def load_torch(layer, state_dict, prefix="", strict=True):
    """Copy a PyTorch ``state_dict`` (tensors or numpy arrays; or a module, whose
    ``state_dict()`` is read) into a fastrnn LSTM/GRU/RNN (from nn.LSTM/GRU/RNN) or
    Dense (from nn.Linear). Only keys starting with `prefix` are read, with the prefix
    removed (prefix="rnn." picks a submodule out of a model's state_dict).

    Sizes must match (ValueError naming the key otherwise). A module built with
    bias=False has no bias keys: the biases are set to zero. strict=True refuses keys
    the layer has no use for (e.g. ``weight_hr_l0`` of an LSTM with proj_size). The
    arrays are copied in place, converted to the layer's dtype. Returns `layer`."""
    _check_layer(layer)
    sd = _as_state_dict(state_dict)
    own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not own:
        raise ValueError(f"state_dict has no key starting with {prefix!r}"
                         + (f"; its keys: {sorted(sd)[:8]}" if sd else ""))
    shapes = layer.param_shapes()
    if strict:
        extra = sorted(set(own) - set(shapes))
        if extra:
            hint = " (LSTM proj_size is not supported)" if any("weight_hr" in k
                                                               for k in extra) else ""
            raise ValueError(f"state_dict has keys the {type(layer).__name__} layer does "
                             f"not have: {[prefix + k for k in extra]}{hint}")
    has_bias = any(k.startswith("bias") for k in own)
    for name in shapes:
        if name in own:
            _assign(layer, name, own[name])
        elif name.startswith("bias") and not has_bias:
            _assign(layer, name, np.zeros(shapes[name]))
        else:
            raise ValueError(f"state_dict is missing {prefix + name!r}")
    return layer


def export_torch(layer, prefix="", as_tensors=False):
    """The layer's parameters as a PyTorch ``state_dict``: copies under PyTorch's names
    (with `prefix` in front), numpy arrays, or torch tensors with ``as_tensors=True``
    (``module.load_state_dict(export_torch(layer, as_tensors=True))``)."""
    _check_layer(layer)
    out = {prefix + name: np.array(layer.params[name], dtype=layer.dtype)
           for name in layer.param_shapes()}
    if as_tensors:
        import torch
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def layer_from_torch(module, dtype=np.float32):
    """A new fastrnn layer equivalent to a torch nn.LSTM / nn.GRU / nn.RNN (or an
    nn.Linear -> Dense), weights included. fastrnn is batch-first whatever the module's
    ``batch_first`` says (the weights do not depend on it)."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        layer = Dense(module.in_features, module.out_features, dtype=dtype)
        return load_torch(layer, module.state_dict())
    mode = getattr(module, "mode", None)
    if mode not in _TORCH_MODES:
        raise TypeError(f"module must be a torch nn.LSTM, nn.GRU, nn.RNN or nn.Linear, "
                        f"got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size > 0 is not supported by fastrnn")
    cell, nonlinearity = _TORCH_MODES[mode]
    kw = dict(num_layers=module.num_layers, bidirectional=bool(module.bidirectional),
              dropout=float(module.dropout), dtype=dtype)
    if cell == "rnn":
        layer = RNN(module.input_size, module.hidden_size, nonlinearity=nonlinearity, **kw)
    else:
        layer = (LSTM if cell == "lstm" else GRU)(module.input_size, module.hidden_size, **kw)
    return load_torch(layer, module.state_dict())


def layer_to_torch(layer):
    """A torch module with the layer's weights: nn.LSTM / nn.GRU / nn.RNN with
    ``batch_first=True`` (fastrnn's layout), or nn.Linear for a Dense. Needs torch."""
    import torch
    _check_layer(layer)
    dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    if isinstance(layer, Dense):
        module = torch.nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
    else:
        kw = dict(num_layers=layer.num_layers, bidirectional=layer.bidirectional,
                  dropout=layer.dropout, batch_first=True, dtype=dtype)
        if isinstance(layer, RNN):
            kw["nonlinearity"] = layer.nonlinearity
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[_cell(layer)]
        module = cls(layer.input_size, layer.hidden_size, **kw)
    module.load_state_dict(export_torch(layer, as_tensors=True))
    return module


# ---------------------------------------------------------------- Keras, layers
# Keras' gate blocks, named as the C core names PyTorch's (fastrnn._core.cell_info()):
# LSTM i,f,c,o is PyTorch's i,f,g,o; GRU z,r,h is PyTorch's r,z,n taken as z,r,n. The
# GRU swap is its own inverse, so it converts in both directions.
_KERAS_GATES = {"gru": ("z", "r", "n")}
_GRU_SWAP = [_CELL_INFO["gru"]["gates"].index(g) for g in _KERAS_GATES["gru"]]


def _blocks(a, H, order, axis):
    """Reorder the gate blocks of size H along `axis`."""
    parts = [np.take(a, np.arange(g * H, (g + 1) * H), axis=axis) for g in order]
    return np.concatenate(parts, axis=axis)


def _flatten_keras(weights):
    """A flat list of arrays from a Keras layer, a list of Keras layers, or arrays."""
    if hasattr(weights, "get_weights"):
        return [np.asarray(w) for w in weights.get_weights()]
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list of arrays or a Keras layer, got "
                        f"{type(weights).__name__}")
    flat = []
    for w in weights:
        flat.extend(_flatten_keras(w) if hasattr(w, "get_weights") else [w])
    return flat


def load_keras(layer, weights):
    """Copy Keras LSTM / GRU / SimpleRNN weights into a fastrnn LSTM / GRU / RNN.

    `weights`: what ``keras_layer.get_weights()`` returns, ``[kernel, recurrent_kernel,
    bias]`` for each layer-direction in turn (a Bidirectional layer gives the forward
    three, then the backward three; for a stack of layers, concatenate their lists), or
    the Keras layer(s) themselves. Shapes, per layer-direction: kernel (I, G*H),
    recurrent_kernel (H, G*H), bias (G*H,) -- GRU (2, 3H) -- with G = 4, 3, 1. A layer
    without bias (use_bias=False) gives two arrays; its biases are set to zero.
    The Keras bias goes to bias_ih (LSTM, RNN), bias_hh is zero. Returns `layer`."""
    if not _is_recurrent(layer):
        raise TypeError(f"layer must be a fastrnn LSTM, GRU or RNN, got {type(layer).__name__}")
    flat = [_to_numpy(w, f"weights[{i}]") for i, w in enumerate(_flatten_keras(weights))]
    dirs = _layer_dirs(layer)
    per = len(flat) / len(dirs)
    if per not in (2, 3):
        raise ValueError(f"expected 3 arrays (kernel, recurrent_kernel, bias) or 2 (without "
                         f"bias) for each of the {len(dirs)} layer-directions, got "
                         f"{len(flat)} arrays")
    per = int(per)
    cell, H = _cell(layer), layer.hidden_size
    G = layer.param_shapes()["weight_ih_l0"][0] // H
    for j, (k, d, s) in enumerate(dirs):
        kernel, recurrent = flat[per * j], flat[per * j + 1]
        bias = flat[per * j + 2] if per == 3 else None
        where = f"layer {k}" + (" (backward)" if d else "")
        I = layer.input_size if k == 0 else H * layer.num_directions
        for name, arr, shape in (("kernel", kernel, (I, G * H)),
                                 ("recurrent_kernel", recurrent, (H, G * H))):
            if arr.shape != shape:
                raise ValueError(f"{where}: Keras {name} has shape {arr.shape}, expected "
                                 f"{shape} for this {type(layer).__name__}")
        if cell == "gru":
            if bias is not None and bias.shape == (G * H,):
                raise ValueError(f"{where}: a GRU bias of shape ({G * H},) comes from "
                                 f"reset_after=False, whose formula differs from PyTorch's "
                                 f"and fastrnn's; use reset_after=True (Keras 3's default)")
            b_shape = (2, G * H)
        else:
            b_shape = (G * H,)
        if bias is None:
            bias = np.zeros(b_shape)
        if bias.shape != b_shape:
            raise ValueError(f"{where}: Keras bias has shape {bias.shape}, expected {b_shape}")
        w_ih, w_hh = kernel.T, recurrent.T
        if cell == "gru":
            w_ih, w_hh = _blocks(w_ih, H, _GRU_SWAP, 0), _blocks(w_hh, H, _GRU_SWAP, 0)
            b_ih, b_hh = _blocks(bias[0], H, _GRU_SWAP, 0), _blocks(bias[1], H, _GRU_SWAP, 0)
        else:
            b_ih, b_hh = bias, np.zeros_like(bias)
        for name, value in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih),
                            ("bias_hh", b_hh)):
            _assign(layer, name + s, value)
    return layer


def export_keras(layer):
    """The layer's weights in Keras' layout: ``[kernel, recurrent_kernel, bias]`` per
    layer-direction (layer 0 forward, layer 0 backward, layer 1 forward, ...), ready for
    ``keras_layer.set_weights`` (three per direction: a Bidirectional layer takes six).
    LSTM and RNN: bias = bias_ih + bias_hh; GRU: bias (2, 3H) (reset_after=True)."""
    if not _is_recurrent(layer):
        raise TypeError(f"layer must be a fastrnn LSTM, GRU or RNN, got {type(layer).__name__}")
    cell, H, p = _cell(layer), layer.hidden_size, layer.params
    out = []
    for _, _, s in _layer_dirs(layer):
        w_ih, w_hh = np.asarray(p["weight_ih" + s]), np.asarray(p["weight_hh" + s])
        b_ih, b_hh = np.asarray(p["bias_ih" + s]), np.asarray(p["bias_hh" + s])
        if cell == "gru":
            kernel = _blocks(w_ih, H, _GRU_SWAP, 0).T
            recurrent = _blocks(w_hh, H, _GRU_SWAP, 0).T
            bias = np.stack([_blocks(b_ih, H, _GRU_SWAP, 0), _blocks(b_hh, H, _GRU_SWAP, 0)])
        else:
            kernel, recurrent, bias = w_ih.T, w_hh.T, b_ih + b_hh
        out += [np.ascontiguousarray(a, dtype=layer.dtype) for a in (kernel, recurrent, bias)]
    return out


def _keras_cell_config(keras_layer):
    """(cell, nonlinearity, hidden, config) of a Keras LSTM / GRU / SimpleRNN layer, after
    checking it computes what fastrnn computes."""
    name = type(keras_layer).__name__
    cells = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
    if name not in cells:
        raise TypeError(f"expected a Keras LSTM, GRU, SimpleRNN or Bidirectional layer, "
                        f"got {name}")
    cfg = keras_layer.get_config()
    act = cfg.get("activation", "tanh")
    if cells[name] == "rnn":
        if act not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNN activation {act!r} is not supported (tanh, relu)")
    elif act != "tanh" or cfg.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise ValueError(f"{name}: only activation='tanh' with recurrent_activation="
                         f"'sigmoid' matches fastrnn, got {act!r}, "
                         f"{cfg.get('recurrent_activation')!r}")
    if cells[name] == "gru" and not cfg.get("reset_after", True):
        raise ValueError("GRU(reset_after=False) has no fastrnn equivalent; use "
                         "reset_after=True (Keras 3's default, PyTorch's formula)")
    return cells[name], act, int(cfg["units"]), cfg


def layer_from_keras(keras_layer, dtype=np.float32):
    """A new fastrnn layer equivalent to a built Keras LSTM / GRU / SimpleRNN, a
    Bidirectional(...) of one (merge_mode='concat'), or a list of them stacked (each but
    the last with return_sequences=True), weights included."""
    stack = list(keras_layer) if isinstance(keras_layer, (list, tuple)) else [keras_layer]
    if not stack:
        raise ValueError("keras_layer is an empty list")
    kinds = []
    for kl in stack:
        bidir = type(kl).__name__ == "Bidirectional"
        if bidir:
            if kl.get_config().get("merge_mode", "concat") != "concat":
                raise ValueError("Bidirectional layers must use merge_mode='concat'")
            inner = kl.forward_layer
        else:
            inner = kl
        kinds.append(_keras_cell_config(inner)[:3] + (bidir,))
    if len({k for k in kinds}) != 1:
        raise ValueError(f"all layers of the stack must share cell, activation, units and "
                         f"direction, got {kinds}")
    cell, act, H, bidir = kinds[0]
    weights = _flatten_keras(stack)
    if not weights:
        raise ValueError("the Keras layer has no weights yet; build it first (call it on "
                         "an input or give it an input shape)")
    I = np.asarray(weights[0]).shape[0]
    kw = dict(num_layers=len(stack), bidirectional=bidir, dtype=dtype)
    if cell == "rnn":
        layer = RNN(I, H, nonlinearity=act, **kw)
    else:
        layer = (LSTM if cell == "lstm" else GRU)(I, H, **kw)
    return load_keras(layer, weights)


# ---------------------------------------------------------------- estimators

def _split_state_dict(sd, rnn_prefix, head_prefix):
    rnn = {k[len(rnn_prefix):]: v for k, v in sd.items() if k.startswith(rnn_prefix)}
    head = {k[len(head_prefix):]: v for k, v in sd.items() if k.startswith(head_prefix)}
    if not rnn or not head:
        raise ValueError(f"state_dict must hold the recurrent layer under {rnn_prefix!r} and "
                         f"the output layer under {head_prefix!r}; its keys: {sorted(sd)[:8]}")
    return rnn, head


def _check_architecture(est, n_features, H, num_layers, bidirectional, n_out):
    """ValueError unless the estimator's hyperparameters fit the imported weights."""
    want = dict(hidden_size=H, num_layers=num_layers, bidirectional=bidirectional)
    wrong = {k: v for k, v in want.items() if getattr(est, k) != v}
    if wrong:
        have = {k: getattr(est, k) for k in wrong}
        raise ValueError(f"the weights are for {wrong}, the estimator has {have}; "
                         f"set_params({', '.join(f'{k}={v!r}' for k, v in wrong.items())}) "
                         f"first")
    if hasattr(est, "rnn_"):
        if est.n_step_features_ != n_features:
            raise ValueError(f"the weights take {n_features} features per step, the "
                             f"estimator was fitted with {est.n_step_features_}")
        fitted_out = est.head_.out_features
        if fitted_out != n_out:
            raise ValueError(f"the weights have {n_out} outputs, the estimator "
                             f"{fitted_out}")


def _initialise(est, n_features, n_out, classes):
    """Give an unfitted estimator its fitted state through its own partial_fit, on a
    dummy batch of one step (the weights are overwritten right after; counters and
    optimizer state are reset). A regressor gets y_mean_ = 0, y_scale_ = 1: predictions
    are the network's raw outputs, as in the model the weights come from."""
    verbose = est.verbose
    est.set_params(verbose=0)
    try:
        if est._is_classifier:
            classes = np.arange(n_out) if classes is None else np.asarray(classes)
            if classes.ndim != 1 or len(classes) != n_out or len(np.unique(classes)) != n_out:
                raise ValueError(f"classes must be {n_out} distinct labels (one per output "
                                 f"of the head), got {classes!r}")
            X = np.zeros((n_out, 1, n_features), np.float32)
            est.partial_fit(X, classes, classes=classes)
        else:
            if classes is not None:
                raise ValueError("classes is for classifiers only")
            X = np.zeros((2, 1, n_features), np.float32)
            y = np.zeros(2) if n_out == 1 else np.zeros((2, n_out))
            est.partial_fit(X, y)
            est.y_mean_ = np.zeros(n_out)
            est.y_scale_ = np.ones(n_out)
    finally:
        est.set_params(verbose=verbose)
    est.n_iter_, est.t_, est.loss_curve_ = 0, 0, []
    est.best_loss_ = np.inf
    opt = getattr(est, "_optimizer", None)
    if opt is not None and hasattr(opt, "reset"):
        opt.reset()


def _load_into_estimator(est, n_features, H, num_layers, bidirectional, n_out, classes,
                         load_rnn, head_weight, head_bias):
    _check_architecture(est, n_features, H, num_layers, bidirectional, n_out)
    if est._is_classifier and hasattr(est, "rnn_") and classes is not None \
            and not np.array_equal(np.asarray(classes), est.classes_):
        raise ValueError(f"classes {classes!r} differ from the fitted classes_ "
                         f"{est.classes_!r}")
    # load into stand-alone layers first: a bad array then leaves the estimator untouched
    dtype = np.dtype(est.dtype)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, dtype=dtype)
    cell = est._cell
    if cell == "rnn":
        rnn = RNN(n_features, H, nonlinearity=est.nonlinearity, **kw)
    else:
        rnn = (LSTM if cell == "lstm" else GRU)(n_features, H, **kw)
    load_rnn(rnn)
    head = Dense(H * (2 if bidirectional else 1), n_out, dtype=dtype)
    _assign(head, "weight", head_weight)
    _assign(head, "bias", head_bias)
    if not hasattr(est, "rnn_"):
        _initialise(est, n_features, n_out, classes)
    for target, source in ((est.rnn_, rnn), (est.head_, head)):
        for name, value in source.params.items():
            _assign(target, name, value)
    return est


def load_torch_estimator(est, state_dict, classes=None, rnn_prefix="rnn.",
                         head_prefix="head."):
    """Put PyTorch weights into a fastrnn estimator: the recurrent stack (nn.LSTM /
    GRU / RNN) under `rnn_prefix` and the output layer (nn.Linear on the last layer's
    final hidden state, both directions concatenated [forward, backward]) under
    `head_prefix` -- the state_dict of::

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.LSTM(n_features, hidden_size, batch_first=True)
                self.head = torch.nn.Linear(hidden_size, n_outputs)
            def forward(self, x):
                return self.head(self.rnn(x)[1][0][-1])     # logits

    A fitted estimator keeps everything but the weights (sizes must agree). An unfitted
    one must have matching hidden_size / num_layers / bidirectional (and nonlinearity
    for RNN*) and becomes fitted: a classifier's head outputs are the logits of
    `classes` (default 0..n_outputs-1); a regressor predicts the head's raw outputs.
    Returns `est`."""
    sd = _as_state_dict(state_dict)
    rnn_sd, head_sd = _split_state_dict(sd, rnn_prefix, head_prefix)
    num_layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in rnn_sd
                         if k.startswith("weight_ih_l"))
    bidirectional = any(k.endswith("_reverse") for k in rnn_sd)
    w_hh = _to_numpy(rnn_sd["weight_hh_l0"], rnn_prefix + "weight_hh_l0")
    n_features = _to_numpy(rnn_sd["weight_ih_l0"], rnn_prefix + "weight_ih_l0").shape[1]
    head_w = _to_numpy(head_sd["weight"], head_prefix + "weight")
    return _load_into_estimator(
        est, n_features, w_hh.shape[1], num_layers, bidirectional, head_w.shape[0], classes,
        lambda layer: load_torch(layer, rnn_sd), head_w, head_sd.get("bias", np.zeros(
            head_w.shape[0])))


def export_torch_estimator(est, rnn_prefix="rnn.", head_prefix="head.", as_tensors=False):
    """A fitted estimator's weights as a PyTorch state_dict, the layout
    load_torch_estimator reads (``Net().load_state_dict(...)`` with the Net above)."""
    if not hasattr(est, "rnn_"):
        raise ValueError(f"This {type(est).__name__} instance is not fitted yet")
    out = export_torch(est.rnn_, rnn_prefix, as_tensors)
    out.update(export_torch(est.head_, head_prefix, as_tensors))
    return out


def load_keras_estimator(est, rnn_weights, head_weights, classes=None):
    """Put Keras weights into a fastrnn estimator. `rnn_weights`: as for load_keras (the
    recurrent layer(s), or their get_weights() lists concatenated); `head_weights`: the
    final Dense layer or its ``[kernel (D*H, n_outputs), bias]`` (a softmax activation
    on it is what predict_proba applies). As load_torch_estimator otherwise."""
    flat = [np.asarray(w) for w in _flatten_keras(rnn_weights)]
    head = [_to_numpy(w, "head_weights") for w in _flatten_keras(head_weights)]
    if len(head) not in (1, 2) or head[0].ndim != 2:
        raise ValueError("head_weights must be [kernel (D*H, n_outputs), bias] of a Dense "
                         "layer")
    kernel = head[0]
    bias = head[1] if len(head) == 2 else np.zeros(kernel.shape[1])
    if len(flat) < 2:
        raise ValueError("rnn_weights must hold kernel, recurrent_kernel[, bias] for each "
                         "layer-direction")
    H = flat[1].shape[0]
    # with a bias, every third array is one: 1-D, or (2, 3H) for a GRU
    per = 3 if len(flat) % 3 == 0 and (flat[2].ndim == 1 or flat[2].shape == (
        2, flat[1].shape[1])) else 2
    D = 2 if kernel.shape[0] == 2 * H else 1
    n_dirs = len(flat) // per
    if n_dirs % D:
        raise ValueError(f"{len(flat)} recurrent arrays do not make whole layers of {D} "
                         f"direction(s)")
    return _load_into_estimator(
        est, flat[0].shape[0], H, n_dirs // D, D == 2, kernel.shape[1], classes,
        lambda layer: load_keras(layer, flat), kernel.T, bias)
