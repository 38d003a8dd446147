"""Plain-numpy reference implementation of multi-layer (bi)directional LSTM / GRU / RNN.

This module is deliberately simple: explicit Python loops over layers, directions and
time steps; the batch dimension is vectorised with boolean "active" masks so that
variable-length (packed) sequences follow PyTorch's semantics:

* sample ``b`` only runs steps ``0 .. len_b - 1``;
* outputs at ``t >= len_b`` are exactly 0;
* ``h_n`` / ``c_n`` hold the state after the last *valid* step;
* the reverse direction of sample ``b`` starts at step ``len_b - 1`` (from ``h0``) and goes
  down to step 0; its output at step ``t`` is written at position ``t``.

Formulas and parameter layout are PyTorch's (``torch.nn.LSTM`` / ``GRU`` / ``RNN``):

LSTM (gates i, f, g, o stacked along the first weight axis)::

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)
    g = tanh   (W_ig x + b_ig + W_hg h + b_hg)
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)
    c' = f * c + i * g
    h' = o * tanh(c')

GRU (gates r, z, n)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

RNN::

    h' = act(W_ih x + b_ih + W_hh h + b_hh),  act in {tanh, relu}

The backward pass is written by hand (BPTT); no autograd and no torch are used here.
"""

import numpy as np

__all__ = ["reference_forward", "reference_backward", "gate_count", "param_names",
           "init_params", "relu_margin"]

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def gate_count(cell):
    return _GATES[cell]


def _suffix(layer, direction):
    return "_l%d%s" % (layer, "_reverse" if direction == 1 else "")


def param_names(num_layers=1, bidirectional=False):
    """PyTorch state_dict ordering of parameter names."""
    names = []
    D = 2 if bidirectional else 1
    for k in range(num_layers):
        for d in range(D):
            s = _suffix(k, d)
            names += ["weight_ih" + s, "weight_hh" + s, "bias_ih" + s, "bias_hh" + s]
    return names


def init_params(cell, input_size, hidden_size, num_layers=1, bidirectional=False,
                rng=None, dtype=np.float64, scale=None):
    """Random parameters with PyTorch names/shapes, U(-scale, scale), scale=1/sqrt(H)."""
    rng = np.random.default_rng(rng)
    G = _GATES[cell]
    H = hidden_size
    D = 2 if bidirectional else 1
    if scale is None:
        scale = 1.0 / np.sqrt(H)
    params = {}
    for k in range(num_layers):
        I_k = input_size if k == 0 else D * H
        for d in range(D):
            s = _suffix(k, d)
            params["weight_ih" + s] = rng.uniform(-scale, scale, (G * H, I_k)).astype(dtype)
            params["weight_hh" + s] = rng.uniform(-scale, scale, (G * H, H)).astype(dtype)
            params["bias_ih" + s] = rng.uniform(-scale, scale, (G * H,)).astype(dtype)
            params["bias_hh" + s] = rng.uniform(-scale, scale, (G * H,)).astype(dtype)
    return params


def _sigmoid(x):
    # numerically safe logistic function
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# ----------------------------------------------------------------------------------
# single time step, forward and backward, for a (B, ...) batch
# ----------------------------------------------------------------------------------

def _step_forward(cell, nonlinearity, x, h, c, W_ih, W_hh, b_ih, b_hh):
    """One step for all rows. Returns h_new, c_new (or None), step cache."""
    H = h.shape[1]
    gi = x @ W_ih.T + b_ih          # (B, G*H) input contribution
    gh = h @ W_hh.T + b_hh          # (B, G*H) hidden contribution
    if cell == "lstm":
        a = gi + gh
        i = _sigmoid(a[:, 0 * H:1 * H])
        f = _sigmoid(a[:, 1 * H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = _sigmoid(a[:, 3 * H:4 * H])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        return h_new, c_new, dict(i=i, f=f, g=g, o=o, tc=tc)
    if cell == "gru":
        r = _sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
        z = _sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
        hn = gh[:, 2 * H:3 * H]       # W_hn h + b_hn
        n = np.tanh(gi[:, 2 * H:3 * H] + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, None, dict(r=r, z=z, n=n, hn=hn)
    if cell == "rnn":
        a = gi + gh
        if nonlinearity == "tanh":
            h_new = np.tanh(a)
        elif nonlinearity == "relu":
            h_new = np.maximum(a, 0.0)
        else:
            raise ValueError("nonlinearity must be 'tanh' or 'relu'")
        return h_new, None, dict(a=a, hnew=h_new)
    raise ValueError("unknown cell %r" % (cell,))


def _step_backward(cell, nonlinearity, dh, dc, x, h, c, sc, W_ih, W_hh):
    """Backward of one step.

    dh, dc: gradient w.r.t. h_new, c_new (rows of inactive samples must be 0).
    Returns dx, dh_prev, dc_prev (or None), d_gi (B,G*H), d_gh (B,G*H) where
    d_gi / d_gh are the gradients w.r.t. the pre-activation input / hidden contributions
    (so dW_ih = d_gi^T x, db_ih = sum d_gi, dW_hh = d_gh^T h, db_hh = sum d_gh).
    """
    if cell == "lstm":
        i, f, g, o, tc = sc["i"], sc["f"], sc["g"], sc["o"], sc["tc"]
        do = dh * tc
        dc_tot = dc + dh * o * (1.0 - tc * tc)
        di = dc_tot * g
        dg = dc_tot * i
        df = dc_tot * c
        dc_prev = dc_tot * f
        da = np.concatenate([di * i * (1.0 - i),
                             df * f * (1.0 - f),
                             dg * (1.0 - g * g),
                             do * o * (1.0 - o)], axis=1)
        d_gi = da
        d_gh = da
    elif cell == "gru":
        r, z, n, hn = sc["r"], sc["z"], sc["n"], sc["hn"]
        dn = dh * (1.0 - z)
        dz = dh * (h - n)
        dh_direct = dh * z
        dan = dn * (1.0 - n * n)           # grad wrt pre-tanh of n
        dr = dan * hn
        dhn = dan * r
        dar = dr * r * (1.0 - r)
        daz = dz * z * (1.0 - z)
        d_gi = np.concatenate([dar, daz, dan], axis=1)
        d_gh = np.concatenate([dar, daz, dhn], axis=1)
        dc_prev = None
    elif cell == "rnn":
        if nonlinearity == "tanh":
            da = dh * (1.0 - sc["hnew"] ** 2)
        else:
            da = dh * (sc["a"] > 0)
        d_gi = da
        d_gh = da
        dc_prev = None
    else:
        raise ValueError("unknown cell %r" % (cell,))
    dx = d_gi @ W_ih
    dh_prev = d_gh @ W_hh
    if cell == "gru":
        dh_prev = dh_prev + dh_direct
    return dx, dh_prev, dc_prev, d_gi, d_gh


# ----------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------

def _check_lengths(lengths, B, T):
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    lengths = np.asarray(lengths)
    if lengths.shape != (B,):
        raise ValueError("lengths must have shape (B,)")
    lengths = lengths.astype(np.int64)
    if np.any(lengths < 1) or np.any(lengths > T):
        raise ValueError("lengths must be in [1, T]")
    return lengths


def reference_forward(cell, params, X, lengths=None, h0=None, c0=None, *, num_layers=1,
                      bidirectional=False, nonlinearity='tanh', dropout_masks=None):
    """Forward pass; see module docstring.

    Returns ``out`` (B, T, D*H), ``h_n`` (L*D, B, H), ``c_n`` (L*D, B, H) or None, ``cache``.
    All computations are done in the dtype of ``X`` / params (use float64 for checks).
    """
    cell = cell.lower()
    if cell not in _GATES:
        raise ValueError("unknown cell %r" % (cell,))
    G = _GATES[cell]
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError("X must be (B, T, I)")
    B, T, _ = X.shape
    L = num_layers
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    dtype = np.result_type(X.dtype, params["weight_hh_l0"].dtype)
    lengths = _check_lengths(lengths, B, T)
    valid = np.arange(T)[None, :] < lengths[:, None]          # (B, T) bool

    if h0 is None:
        h0 = np.zeros((L * D, B, H), dtype=dtype)
    h0 = np.asarray(h0, dtype=dtype)
    if c0 is None:
        c0 = np.zeros((L * D, B, H), dtype=dtype)
    c0 = np.asarray(c0, dtype=dtype)
    if cell != "lstm":
        c0 = None
    if dropout_masks is not None and len(dropout_masks) != L - 1:
        raise ValueError("dropout_masks must have num_layers - 1 entries")

    h_n = np.zeros((L * D, B, H), dtype=dtype)
    c_n = np.zeros((L * D, B, H), dtype=dtype) if cell == "lstm" else None

    layer_inputs = []      # input to each layer (after dropout)
    layer_caches = []      # per layer: list over directions of per-step records
    inp = X.astype(dtype)
    out = None
    for k in range(L):
        layer_inputs.append(inp)
        out = np.zeros((B, T, D * H), dtype=dtype)
        dir_caches = []
        for d in range(D):
            s = _suffix(k, d)
            W_ih, W_hh = params["weight_ih" + s], params["weight_hh" + s]
            b_ih, b_hh = params["bias_ih" + s], params["bias_hh" + s]
            assert W_ih.shape == (G * H, inp.shape[2])
            idx = k * D + d
            h = h0[idx].copy()
            c = c0[idx].copy() if cell == "lstm" else None
            steps = range(T) if d == 0 else range(T - 1, -1, -1)
            records = []
            for t in steps:
                active = valid[:, t]                              # (B,)
                x = inp[:, t, :]
                h_new, c_new, sc = _step_forward(cell, nonlinearity, x, h, c,
                                                 W_ih, W_hh, b_ih, b_hh)
                records.append(dict(t=t, active=active, x=x, h=h, c=c, sc=sc))
                # samples past their length keep their state and emit zeros
                h = np.where(active[:, None], h_new, h)
                if cell == "lstm":
                    c = np.where(active[:, None], c_new, c)
                out[:, t, d * H:(d + 1) * H] = np.where(active[:, None], h_new, 0.0)
            h_n[idx] = h
            if cell == "lstm":
                c_n[idx] = c
            dir_caches.append(records)
        layer_caches.append(dir_caches)
        if k < L - 1:
            inp = out
            if dropout_masks is not None:
                inp = out * np.asarray(dropout_masks[k], dtype=dtype)
    cache = dict(cell=cell, nonlinearity=nonlinearity, params=params, L=L, D=D, H=H,
                 B=B, T=T, I=X.shape[2], lengths=lengths, valid=valid,
                 dropout_masks=dropout_masks, layer_inputs=layer_inputs,
                 layer_caches=layer_caches, dtype=dtype)
    return out, h_n, c_n, cache


def reference_backward(cache, d_out, d_h_n=None, d_c_n=None):
    """Manual BPTT.

    Returns ``dX`` (B, T, I) and ``grads``: dict with the keys of params plus ``'h0'``
    (and ``'c0'`` for LSTM), each ``(L*D, B, H)``. Entries of ``d_out`` at padded steps
    are ignored.
    """
    cell, nl = cache["cell"], cache["nonlinearity"]
    params = cache["params"]
    L, D, H, B, T = cache["L"], cache["D"], cache["H"], cache["B"], cache["T"]
    dtype = cache["dtype"]
    valid = cache["valid"]
    d_out = np.asarray(d_out, dtype=dtype)
    assert d_out.shape == (B, T, D * H)
    if d_h_n is None:
        d_h_n = np.zeros((L * D, B, H), dtype=dtype)
    d_h_n = np.asarray(d_h_n, dtype=dtype)
    if d_c_n is None or cell != "lstm":
        d_c_n = np.zeros((L * D, B, H), dtype=dtype)
    d_c_n = np.asarray(d_c_n, dtype=dtype)

    grads = {name: np.zeros_like(np.asarray(v, dtype=dtype)) for name, v in params.items()
             if any(name.endswith(_suffix(k, d)) for k in range(L) for d in range(D))}
    grads["h0"] = np.zeros((L * D, B, H), dtype=dtype)
    if cell == "lstm":
        grads["c0"] = np.zeros((L * D, B, H), dtype=dtype)

    # gradient flowing into the output of the current layer; padded entries ignored
    d_layer_out = np.where(valid[:, :, None], d_out, 0.0)
    dX = None
    for k in range(L - 1, -1, -1):
        inp = cache["layer_inputs"][k]
        d_inp = np.zeros_like(inp)
        for d in range(D):
            s = _suffix(k, d)
            W_ih, W_hh = params["weight_ih" + s], params["weight_hh" + s]
            idx = k * D + d
            dh = d_h_n[idx].copy()
            dc = d_c_n[idx].copy() if cell == "lstm" else None
            records = cache["layer_caches"][k][d]
            for rec in reversed(records):           # reverse of processing order
                t, active = rec["t"], rec["active"]
                am = active[:, None]
                # gradient w.r.t. h_new / c_new of this step (zero for inactive rows)
                dh_new = np.where(am, dh + d_layer_out[:, t, d * H:(d + 1) * H], 0.0)
                dc_new = np.where(am, dc, 0.0) if cell == "lstm" else None
                dx, dh_prev, dc_prev, d_gi, d_gh = _step_backward(
                    cell, nl, dh_new, dc_new, rec["x"], rec["h"], rec["c"], rec["sc"],
                    W_ih, W_hh)
                grads["weight_ih" + s] += d_gi.T @ rec["x"]
                grads["weight_hh" + s] += d_gh.T @ rec["h"]
                grads["bias_ih" + s] += d_gi.sum(axis=0)
                grads["bias_hh" + s] += d_gh.sum(axis=0)
                d_inp[:, t, :] += np.where(am, dx, 0.0)
                # inactive rows: state passed through unchanged, so carry the gradient
                dh = np.where(am, dh_prev, dh)
                if cell == "lstm":
                    dc = np.where(am, dc_prev, dc)
            grads["h0"][idx] = dh
            if cell == "lstm":
                grads["c0"][idx] = dc
        if k > 0:
            masks = cache["dropout_masks"]
            if masks is not None:
                d_inp = d_inp * np.asarray(masks[k - 1], dtype=dtype)
            d_layer_out = np.where(valid[:, :, None], d_inp, 0.0)
        else:
            dX = d_inp
    return dX, grads


def relu_margin(cache):
    """Smallest |pre-activation| over all active steps of a relu-RNN forward cache.

    Used by the tests to pick random cases that stay away from the relu kink, so that
    finite differences are valid.  Returns +inf for other cells.
    """
    if cache["cell"] != "rnn" or cache["nonlinearity"] != "relu":
        return np.inf
    m = np.inf
    for layer in cache["layer_caches"]:
        for records in layer:
            for rec in records:
                a = rec["sc"]["a"][rec["active"]]
                if a.size:
                    m = min(m, float(np.abs(a).min()))
    return m
