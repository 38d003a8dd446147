"""Export to ONNX: a fitted estimator, a recurrent layer stack, or a scikit-learn Pipeline
ending in a fastrnn estimator, as a standard ONNX graph (default opset 17).

    from fastrnn.onnx import to_onnx
    model = to_onnx(clf, "clf.onnx")          # an onnx.ModelProto, also written to the path

This module needs the optional packages `onnx` (and `skl2onnx` for Pipelines):
``pip install fastrnn[onnx]``. The rest of fastrnn never imports it.

The graph uses the standard operators only: one ``LSTM`` / ``GRU`` / ``RNN`` node per
layer (both directions of a bidirectional layer in one node, ``direction=
"bidirectional"``), GRU with ``linear_before_reset=1`` (PyTorch's formula, fastrnn's),
RNN with ``Tanh`` or ``Relu``. Between layers the node's Y (T, D, B, H) becomes the next
layer's input (T, B, D*H), forward then reverse, as in fastrnn.

Graph inputs (batch first, as fastrnn):
  * ``X``: float32 (batch, steps, n_features), or (batch, steps) for an estimator fitted
    on a 2-D array of univariate series; int64 token ids (batch, steps) for an estimator
    with an embedding. Token ids >= vocab_size_, ids never seen in fit and negative ids
    all map to the unknown row (fastrnn itself refuses negative ids). Padding past a
    sequence's length may hold any finite value.
  * ``sequence_lens``: int32 (batch,), each in [1, steps]. Optional: its default (an
    empty tensor) means every sequence runs all steps.
  * ``h0`` (and ``c0`` for LSTM): float32 (num_layers * num_directions, batch, hidden),
    fastrnn's layout. Optional: the default (empty) means zeros.
  The defaults are initializers named like the inputs (onnxruntime warns that it will
  not constant-fold them); ``to_onnx(..., optional_inputs=False)`` makes the three
  inputs required instead, for runtimes that freeze such inputs (OpenVINO; note that
  OpenVINO 2026.4 runs every sequence for all steps whatever sequence_lens says, so
  there only batches of equal lengths agree with fastrnn).
Graph outputs:
  * layer stack: ``Y`` (batch, steps, D * hidden), zero past each length, as fastrnn;
  * classifiers and taggers: ``label`` then ``probabilities`` (batch, n_classes), or
    (batch, steps[, n_classes]) per step. ``label`` is classes_ itself (a Gather on a
    constant): int64 for integer or bool labels, double for float labels, string for
    string labels;
  * regressors: ``variable`` (batch[, n_targets]) or per step (batch, steps[, n_targets]),
    unscaled (outputs * y_scale_ + y_mean_, in float32);
  * always: ``h_n`` (and ``c_n``), the state after each sequence's last step, fastrnn's
    layout: feed them back as ``h0`` / ``c0`` to carry the state into the next call.
Per-step outputs past a sequence's length are NOT masked: they hold the head applied to
the zero features there; read only the first sequence_lens[i] steps of sequence i.

Everything is exported in float32 (parameters of a float64 model are rounded).
"""
import numbers

import numpy as np

__all__ = ["to_onnx", "register_skl2onnx_converters", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
_MIN_OPSET = 14          # LSTM/GRU/RNN with the `layout` attribute
_IR_VERSION = 8          # the IR of opset 17: loads in older runtimes as well

# fastrnn keeps PyTorch's gate order; ONNX orders the blocks differently:
# LSTM i, f, g, o -> i, o, f, c ; GRU r, z, n -> z, r, h
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}
_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _onnx():
    try:
        import onnx
    except ImportError as e:   # pragma: no cover - depends on the environment
        raise ImportError("fastrnn.onnx needs the 'onnx' package: pip install "
                          "'fastrnn[onnx]' (or pip install onnx onnxruntime)") from e
    return onnx


# ---------------------------------------------------------------------- graph building
class _Graph:
    """Nodes and constants of a graph under construction; `unique` makes the names
    (a counter on its own, skl2onnx's scope inside a Pipeline)."""

    def __init__(self, unique=None):
        self.nodes, self.consts = [], []
        self._count = {}
        self._unique = unique or self._counter

    def _counter(self, base):
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def const(self, base, array):
        name = self._unique(base)
        self.consts.append((name, np.asarray(array)))
        return name

    def op(self, op_type, inputs, n_out=1, outputs=None, **attrs):
        onnx = _onnx()
        if outputs is None:
            outputs = [self._unique(f"{op_type.lower()}_out") for _ in range(n_out)]
        inputs = list(inputs)
        while inputs and inputs[-1] == "":   # omitted optional inputs at the end
            inputs.pop()
        node = onnx.helper.make_node(op_type, inputs, list(outputs),
                                     name=self._unique(op_type), **attrs)
        self.nodes.append(node)
        return outputs[0] if len(outputs) == 1 else outputs

    def ints(self, base, values):
        return self.const(base, np.asarray(values, dtype=np.int64))


def _cell_of(rnn):
    return rnn._cell.split("_")[0]


def _onnx_weights(rnn, k):
    """W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) of layer k in ONNX's gate order."""
    cell, H = _cell_of(rnn), rnn.hidden_size
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in _GATE_ORDER[cell]])
    W, R, B = [], [], []
    for d in range(rnn.num_directions):
        s = rnn._suffix(k, d)
        p = {n: np.asarray(rnn.params[n + s], dtype=np.float32)
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        W.append(p["weight_ih"][order])
        R.append(p["weight_hh"][order])
        B.append(np.concatenate([p["bias_ih"][order], p["bias_hh"][order]]))
    return np.stack(W), np.stack(R), np.stack(B)


def _emit_stack(g, rnn, x_tm, lens, h0=None, c0=None):
    """The recurrent stack on time-major x_tm (T, B, I). Returns the top layer's Y
    (T, D, B, H) and the final states (L*D, B, H) in fastrnn's order (layer, then
    direction); h0/c0 are (L*D, B, H) names or None (zeros)."""
    cell, L, D, H = _cell_of(rnn), rnn.num_layers, rnn.num_directions, rnn.hidden_size
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward",
                 layout=0)
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell == "rnn":
        attrs["activations"] = [rnn.nonlinearity.capitalize()] * D
    inp, hs, cs, Y = x_tm, [], [], None
    for k in range(L):
        W, R, B = _onnx_weights(rnn, k)
        names = [g.const(f"W_l{k}", W), g.const(f"R_l{k}", R), g.const(f"B_l{k}", B)]
        inputs = [inp] + names + [lens]
        for state in (h0, c0) if cell == "lstm" else (h0,):
            if state is None:
                inputs.append("")
            else:
                span = [g.ints("start", [k * D]), g.ints("end", [(k + 1) * D]),
                        g.ints("axis", [0])]
                inputs.append(g.op("Slice", [state] + span))
        n_out = 3 if cell == "lstm" else 2
        outs = g.op(_OP[cell], inputs, n_out=n_out, **attrs)
        Y = outs[0]
        hs.append(outs[1])
        if cell == "lstm":
            cs.append(outs[2])
        if k < L - 1:
            tbdh = g.op("Transpose", [Y], perm=[0, 2, 1, 3])
            inp = g.op("Reshape", [tbdh, g.ints("shape", [0, 0, D * H])])
    h_n = hs[0] if L == 1 else g.op("Concat", hs, axis=0)
    c_n = None
    if cell == "lstm":
        c_n = cs[0] if L == 1 else g.op("Concat", cs, axis=0)
    return Y, h_n, c_n


def _batch_first_sequence(g, Y, D, H):
    """Y (T, D, B, H) -> (B, T, D*H), directions in fastrnn's order (forward, reverse)."""
    bt = g.op("Transpose", [Y], perm=[2, 0, 1, 3])
    return g.op("Reshape", [bt, g.ints("shape", [0, 0, D * H])])


def _last_features(g, h_n, L, D, H):
    """The top layer's final hidden state, both directions: (B, D*H) as fastrnn's head
    reads it."""
    top = h_n
    if L > 1:
        top = g.op("Slice", [h_n, g.ints("start", [(L - 1) * D]), g.ints("end", [L * D]),
                             g.ints("axis", [0])])
    bdh = g.op("Transpose", [top], perm=[1, 0, 2])
    return g.op("Reshape", [bdh, g.ints("shape", [0, D * H])])


def _dense(g, dense, x):
    W = np.asarray(dense.params["weight"], dtype=np.float32)
    b = np.asarray(dense.params["bias"], dtype=np.float32)
    y = g.op("MatMul", [x, g.const("head_weight_T", np.ascontiguousarray(W.T))])
    return g.op("Add", [y, g.const("head_bias", b)])


def _batch_and_steps(g, x):
    """1-D int64 tensors [B] and [T] from the shape of x (B, T, ...)."""
    shape = g.op("Shape", [x])
    B = g.op("Slice", [shape, g.ints("start", [0]), g.ints("end", [1])])
    T = g.op("Slice", [shape, g.ints("start", [1]), g.ints("end", [2])])
    return B, T


def _with_default(g, given, default, axis, B):
    """`given` when it was fed, else `default`: optional inputs have an empty default,
    so the first B entries along `axis` of concat(given, default) are the answer."""
    both = g.op("Concat", [given, default], axis=axis)
    return g.op("Slice", [both, g.ints("start", [0]), B, g.ints("axis", [axis])])


def _lengths_and_states(g, rnn, B, T, lens_in, h0_in, c0_in):
    """sequence_lens (default: all T) and initial states (default: zeros)."""
    full = g.op("Cast", [g.op("Expand", [T, B])], to=_onnx().TensorProto.INT32)
    lens = full if lens_in is None else _with_default(g, lens_in, full, 0, B)
    LD, H = rnn.num_layers * rnn.num_directions, rnn.hidden_size
    states = []
    for given in (h0_in, c0_in):
        if given is None:
            states.append(None)
            continue
        shape = g.op("Concat", [g.ints("LD", [LD]), B, g.ints("H", [H])], axis=0)
        zeros = g.op("Expand", [g.const("zero", np.zeros((), np.float32)), shape])
        states.append(_with_default(g, given, zeros, 1, B))
    return lens, states[0], states[1]


def _model_inputs(g, est, x):
    """The estimator's input as time-major features (T, B, I): token ids through the
    vocabulary and the embedding, or floats scaled as in fit."""
    if est.embedding_dim is not None:
        V = int(est.vocab_size_)
        # the row of every id below V (known ids keep theirs, unseen ones get the
        # unknown row V); ids outside [0, V) get row V too
        table = np.where(np.asarray(est.known_tokens_, bool), np.arange(V), V)
        inside = g.op("And", [g.op("GreaterOrEqual", [x, g.const("zero_id",
                                                                  np.array(0, np.int64))]),
                              g.op("Less", [x, g.const("vocab_size", np.array(V, np.int64))])])
        clipped = g.op("Clip", [x, g.const("lo", np.array(0, np.int64)),
                                g.const("hi", np.array(V - 1, np.int64))])
        known = g.op("Gather", [g.const("token_rows", table.astype(np.int64)), clipped])
        rows = g.op("Where", [inside, known, g.const("unknown_row", np.array(V, np.int64))])
        emb = np.asarray(est.model_.embedding.params["weight"], dtype=np.float32)
        feats = g.op("Gather", [g.const("embedding_weight", emb), rows], axis=0)
    else:
        feats = x
        if est._input_kind_ == "2d":
            feats = g.op("Unsqueeze", [feats, g.ints("axis", [2])])
        if est.x_mean_ is not None:
            # the same float32 operations, in the same order, as _transform_inputs
            dtype = np.dtype(est.dtype)
            mean = est.x_mean_.astype(dtype).astype(np.float32)
            scale = est.x_scale_.astype(dtype).astype(np.float32)
            feats = g.op("Div", [g.op("Sub", [feats, g.const("x_mean", mean)]),
                                 g.const("x_scale", scale)])
    return g.op("Transpose", [feats], perm=[1, 0, 2])


def _label_constant(classes):
    """classes_ as an ONNX-storable array (int64, double, bool or strings)."""
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if kind in "iu":
        return classes.astype(np.int64)
    if kind == "f":
        return classes.astype(np.float64)
    if kind == "b":
        return classes
    return np.array([str(c) for c in classes], dtype=object)


def _emit_estimator(g, est, x, lens_in=None, h0_in=None, c0_in=None):
    """Graph of a fitted estimator from input name x. Returns (outputs dict name ->
    tensor name, state outputs)."""
    model = est.model_
    rnn, lstm = model.rnn, _cell_of(model.rnn) == "lstm"
    L, D, H = rnn.num_layers, rnn.num_directions, rnn.hidden_size
    x_tm = _model_inputs(g, est, x)
    B, T = _batch_and_steps(g, x)
    lens, h0, c0 = _lengths_and_states(g, rnn, B, T, lens_in, h0_in,
                                       c0_in if lstm else None)
    Y, h_n, c_n = _emit_stack(g, rnn, x_tm, lens, h0, c0)
    if est._per_step:
        feats = _batch_first_sequence(g, Y, D, H)
    else:
        feats = _last_features(g, h_n, L, D, H)
    out = _dense(g, model.head, feats)
    if est._is_classifier:
        proba = g.op("Softmax", [out], axis=-1)
        idx = g.op("ArgMax", [out], axis=-1, keepdims=0)    # on logits, as predict
        label = g.op("Gather", [g.const("classes", _label_constant(est.classes_)), idx],
                     axis=0)
        outputs = {"label": label, "probabilities": proba}
    else:
        y = g.op("Add", [g.op("Mul", [out, g.const("y_scale",
                                                   est.y_scale_.astype(np.float32))]),
                         g.const("y_mean", est.y_mean_.astype(np.float32))])
        if est._y_ndim_ == 1:
            y = g.op("Squeeze", [y, g.ints("axis", [-1])])
        outputs = {"variable": y}
    return outputs, h_n, c_n


# ---------------------------------------------------------------------- whole models
def _tensor_type(array):
    onnx = _onnx()
    if array.dtype == object:
        return onnx.TensorProto.STRING
    return onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


def _initializer(name, array):
    onnx = _onnx()
    if array.dtype == object:
        return onnx.helper.make_tensor(name, onnx.TensorProto.STRING, array.shape,
                                       [s.encode("utf-8") for s in array.ravel()])
    return onnx.numpy_helper.from_array(array, name)


def _optional_inputs(rnn, optional=True):
    """sequence_lens, h0[, c0] as graph inputs, optional through empty initializers of
    the same names (their defaults) unless `optional` is False; returns (value_infos,
    initializers, names)."""
    onnx = _onnx()
    helper, TP = onnx.helper, onnx.TensorProto
    LD, H = rnn.num_layers * rnn.num_directions, rnn.hidden_size
    specs = [("sequence_lens", np.zeros(0, np.int32), TP.INT32, ["batch"])]
    specs.append(("h0", np.zeros((LD, 0, H), np.float32), TP.FLOAT, [LD, "batch", H]))
    if _cell_of(rnn) == "lstm":
        specs.append(("c0", np.zeros((LD, 0, H), np.float32), TP.FLOAT, [LD, "batch", H]))
    infos = [helper.make_tensor_value_info(n, t, s) for n, _, t, s in specs]
    inits = [onnx.numpy_helper.from_array(a, n) for n, a, _, _ in specs] if optional else []
    return infos, inits, {n: n for n, _, _, _ in specs}


def _finish(g, name, inputs, outputs, extra_inits, opset, doc):
    onnx = _onnx()
    helper = onnx.helper
    inits = list(extra_inits) + [_initializer(n, a) for n, a in g.consts]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastrnn", ir_version=_IR_VERSION,
                              doc_string=doc)
    from . import __version__
    model.producer_version = __version__
    return model


def _rename(g, tensor, name):
    g.op("Identity", [tensor], outputs=[name])


def _layer_model(rnn, opset, optional):
    onnx = _onnx()
    helper, TP = onnx.helper, onnx.TensorProto
    L, D, H = rnn.num_layers, rnn.num_directions, rnn.hidden_size
    LD, lstm = L * D, _cell_of(rnn) == "lstm"
    g = _Graph()
    for reserved in ("X", "sequence_lens", "h0", "c0", "Y", "h_n", "c_n"):
        g._unique(reserved)
    opt_infos, opt_inits, names = _optional_inputs(rnn, optional)
    x_tm = g.op("Transpose", ["X"], perm=[1, 0, 2])
    B, T = _batch_and_steps(g, "X")
    lens, h0, c0 = _lengths_and_states(g, rnn, B, T, names["sequence_lens"], names["h0"],
                                       names.get("c0"))
    Y, h_n, c_n = _emit_stack(g, rnn, x_tm, lens, h0, c0)
    _rename(g, _batch_first_sequence(g, Y, D, H), "Y")
    _rename(g, h_n, "h_n")
    outputs = [helper.make_tensor_value_info("Y", TP.FLOAT, ["batch", "steps", D * H]),
               helper.make_tensor_value_info("h_n", TP.FLOAT, [LD, "batch", H])]
    if lstm:
        _rename(g, c_n, "c_n")
        outputs.append(helper.make_tensor_value_info("c_n", TP.FLOAT, [LD, "batch", H]))
    x_info = helper.make_tensor_value_info("X", TP.FLOAT, ["batch", "steps", rnn.input_size])
    return _finish(g, type(rnn).__name__, [x_info] + opt_infos, outputs, opt_inits, opset,
                   f"fastrnn {rnn!r}")


def _estimator_model(est, opset, optional=True):
    onnx = _onnx()
    helper, TP = onnx.helper, onnx.TensorProto
    rnn = est.model_.rnn
    LD, H, lstm = rnn.num_layers * rnn.num_directions, rnn.hidden_size, _cell_of(rnn) == "lstm"
    g = _Graph()
    for reserved in ("X", "sequence_lens", "h0", "c0", "label", "probabilities",
                     "variable", "h_n", "c_n"):
        g._unique(reserved)
    opt_infos, opt_inits, names = _optional_inputs(rnn, optional)
    outs, h_n, c_n = _emit_estimator(g, est, "X", names["sequence_lens"], names["h0"],
                                     names.get("c0"))
    per_step = ["steps"] if est._per_step else []
    infos = []
    for name, tensor in outs.items():
        _rename(g, tensor, name)
        if name == "label":
            kind = _tensor_type(_label_constant(est.classes_))
            infos.append(helper.make_tensor_value_info(name, kind, ["batch"] + per_step))
        elif name == "probabilities":
            infos.append(helper.make_tensor_value_info(
                name, TP.FLOAT, ["batch"] + per_step + [len(est.classes_)]))
        else:
            k = [] if est._y_ndim_ == 1 else [len(est.y_mean_)]
            infos.append(helper.make_tensor_value_info(name, TP.FLOAT,
                                                       ["batch"] + per_step + k))
    _rename(g, h_n, "h_n")
    infos.append(helper.make_tensor_value_info("h_n", TP.FLOAT, [LD, "batch", H]))
    if lstm:
        _rename(g, c_n, "c_n")
        infos.append(helper.make_tensor_value_info("c_n", TP.FLOAT, [LD, "batch", H]))
    if est.embedding_dim is not None:
        x_info = helper.make_tensor_value_info("X", TP.INT64, ["batch", "steps"])
    elif est._input_kind_ == "2d":
        x_info = helper.make_tensor_value_info("X", TP.FLOAT, ["batch", "steps"])
    else:
        x_info = helper.make_tensor_value_info("X", TP.FLOAT,
                                               ["batch", "steps", est.n_step_features_])
    return _finish(g, type(est).__name__, [x_info] + opt_infos, infos, opt_inits, opset,
                   f"fastrnn {type(est).__name__}")


# ---------------------------------------------------------------------- skl2onnx
def _is_estimator(obj):
    from .estimators._base import RecurrentEstimator
    return isinstance(obj, RecurrentEstimator)


def _skl2onnx_parser(scope, model, inputs, custom_parsers=None):
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType,
                                            BooleanTensorType)
    from skl2onnx import get_model_alias
    op = scope.declare_local_operator(get_model_alias(type(model)), model)
    op.inputs = list(inputs)
    if model._is_classifier:
        label_type = {"iu": Int64TensorType, "f": DoubleTensorType, "b": BooleanTensorType}
        kind = np.asarray(model.classes_).dtype.kind
        cls = next((t for k, t in label_type.items() if kind in k), StringTensorType)
        op.outputs.append(scope.declare_local_variable("label", cls()))
        op.outputs.append(scope.declare_local_variable("probabilities", FloatTensorType()))
    else:
        op.outputs.append(scope.declare_local_variable("variable", FloatTensorType()))
    return list(op.outputs)


def _skl2onnx_shapes(operator):
    """Shapes of the outputs the parser declared: batch (and steps) dynamic."""
    est = operator.raw_operator
    lead = [None, None] if est._per_step else [None]
    if est._is_classifier:
        operator.outputs[0].type.shape = list(lead)
        operator.outputs[1].type.shape = lead + [len(est.classes_)]
    else:
        k = [] if est._y_ndim_ == 1 else [len(est.y_mean_)]
        operator.outputs[0].type.shape = lead + k


def _skl2onnx_convert(scope, operator, container):
    est = operator.raw_operator
    g = _Graph(unique=scope.get_unique_variable_name)
    outs, _, _ = _emit_estimator(g, est, operator.inputs[0].full_name)
    onnx = _onnx()
    for name, array in g.consts:
        if array.dtype == object:   # strings: skl2onnx's initializers copy raw data only
            container.add_node("Constant", [], [name], name=scope.get_unique_operator_name(
                "Constant"), value=_initializer(name, array))
        else:
            container.add_initializer(name, _tensor_type(array), list(array.shape),
                                      onnx.numpy_helper.from_array(array, name))
    for node in g.nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else
                     [s.decode() if isinstance(s, bytes) else s for s in v]
                     if isinstance(v, list) else v) for k, v in attrs.items()}
        container.add_node(node.op_type, list(node.input), list(node.output),
                           name=scope.get_unique_operator_name(node.op_type), **attrs)
    for var, key in zip(operator.outputs, outs):
        container.add_node("Identity", [outs[key]], [var.full_name],
                           name=scope.get_unique_operator_name("Identity"))


def register_skl2onnx_converters():
    """Register every fastrnn estimator with skl2onnx (its convention for third-party
    models), so ``skl2onnx.convert_sklearn`` converts Pipelines that end in one. The
    estimator must have been fitted on a 2-D X (univariate series): that is what the
    steps before it pass on. Called by to_onnx for a Pipeline."""
    from skl2onnx import update_registered_converter
    from .estimators import ESTIMATORS
    for name, cls in ESTIMATORS.items():
        update_registered_converter(cls, f"Fastrnn{name}", _skl2onnx_shapes,
                                    _skl2onnx_convert, parser=_skl2onnx_parser)


def _check_step_converts(skl2onnx, FloatTensorType, name, step, opset):
    """A clear error naming the Pipeline step that skl2onnx cannot convert."""
    try:
        skl2onnx.get_model_alias(type(step))
    except RuntimeError:
        raise ValueError(f"cannot export the Pipeline: step {name!r} ({type(step).__name__})"
                         f" has no ONNX converter registered with skl2onnx; register one "
                         f"(skl2onnx.update_registered_converter) or drop the step") from None
    n_in = getattr(step, "n_features_in_", None)
    try:
        skl2onnx.convert_sklearn(step, initial_types=[("X", FloatTensorType([None, n_in]))],
                                 target_opset={"": opset, "ai.onnx.ml": 3})
    except Exception as e:
        raise ValueError(f"cannot export the Pipeline: skl2onnx fails to convert step "
                         f"{name!r} ({type(step).__name__}): {e}") from e


def _pipeline_model(pipe, opset):
    steps = [(n, s) for n, s in pipe.steps if s is not None and s != "passthrough"]
    name, last = steps[-1]
    if not _is_estimator(last):
        raise TypeError(f"to_onnx exports a Pipeline that ends in a fastrnn estimator; its "
                        f"last step {name!r} is a {type(last).__name__}")
    _check_fitted(last)
    if len(steps) == 1:
        return _estimator_model(last, opset)
    if last.embedding_dim is not None or last._input_kind_ != "2d":
        raise ValueError(f"the Pipeline's last step {name!r} must have been fitted on a "
                         f"2-D float X (n_samples, n_timesteps) to follow other steps "
                         f"(scikit-learn transformers pass 2-D arrays on)")
    try:
        import skl2onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as e:
        raise ImportError("exporting a Pipeline needs skl2onnx: pip install "
                          "'fastrnn[onnx]' (or pip install skl2onnx)") from e
    for step_name, step in steps[:-1]:
        _check_step_converts(skl2onnx, FloatTensorType, step_name, step, opset)
    register_skl2onnx_converters()
    n_in = getattr(steps[0][1], "n_features_in_", None)
    try:
        model = skl2onnx.convert_sklearn(
            pipe, initial_types=[("X", FloatTensorType([None, n_in]))],
            target_opset={"": opset, "ai.onnx.ml": 3})
    except Exception as e:
        raise ValueError(f"skl2onnx could not convert the Pipeline "
                         f"({' -> '.join(n for n, _ in steps)}): {e}") from e
    return model


# ---------------------------------------------------------------------- public
def _check_fitted(est):
    if not hasattr(est, "model_"):
        raise ValueError(f"this {type(est).__name__} is not fitted: call fit before "
                         f"exporting it to ONNX")


def to_onnx(est_or_layer, path=None, *, opset=DEFAULT_OPSET, optional_inputs=True):
    """The standard ONNX graph of a fitted estimator, a recurrent layer stack
    (fastrnn.layers.LSTM / GRU / RNN), or a scikit-learn Pipeline ending in a fastrnn
    estimator. Returns the ``onnx.ModelProto``; with ``path`` also writes it there.
    See the module docstring for the graph's inputs and outputs.

    opset: the ONNX opset (default 17). optional_inputs: True gives ``sequence_lens``,
    ``h0`` and ``c0`` empty defaults (initializers of the same names), so a caller may
    leave them out; False makes them required inputs, for runtimes that turn inputs
    with a default into constants (OpenVINO does). A Pipeline's graph has the single
    input X."""
    onnx = _onnx()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) \
            or not _MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be an integer in [{_MIN_OPSET}, "
                         f"{onnx.defs.onnx_opset_version()}], got {opset!r}")
    from .layers import _Recurrent
    obj = est_or_layer
    if isinstance(obj, _Recurrent):
        model = _layer_model(obj, int(opset), bool(optional_inputs))
    elif _is_estimator(obj):
        _check_fitted(obj)
        model = _estimator_model(obj, int(opset), bool(optional_inputs))
    elif hasattr(obj, "steps") and type(obj).__name__ == "Pipeline":
        model = _pipeline_model(obj, int(opset))
    else:
        raise TypeError(f"to_onnx exports a fastrnn estimator, a fastrnn.layers LSTM, GRU "
                        f"or RNN, or a Pipeline ending in a fastrnn estimator; got "
                        f"{type(obj).__name__}")
    if path is not None:
        onnx.save_model(model, str(path))
    return model
