"""Largest relative error of fastrnn against PyTorch, per cell and dtype.

    python bench/agreement.py

For each cell (LSTM, GRU, RNN tanh, RNN relu) and dtype, random configurations (1-2
layers, one or two directions, equal or packed variable lengths) run forward and
backward in both libraries with the same weights. The error of a tensor is
max|fastrnn - torch| / max|torch|; reported is the largest over outputs, final states,
dX, every parameter gradient and the initial-state gradients.
"""
import numpy as np
import torch

from fastrnn.layers import GRU, LSTM, RNN

CELLS = {"lstm": (LSTM, torch.nn.LSTM, {}), "gru": (GRU, torch.nn.GRU, {}),
         "rnn_tanh": (RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
         "rnn_relu": (RNN, torch.nn.RNN, {"nonlinearity": "relu"})}


def rel(a, b):
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def one(cell, dtype, rng):
    ours, theirs, kw = CELLS[cell]
    B, T, I, H = (int(v) for v in (rng.integers(1, 40), rng.integers(1, 60), rng.integers(1, 40), rng.integers(1, 70)))
    L, bidir, var = int(rng.integers(1, 3)), bool(rng.integers(2)), bool(rng.integers(2))
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    m = theirs(I, H, num_layers=L, bidirectional=bidir, batch_first=True, **kw).to(tdt)
    f = ours(I, H, num_layers=L, bidirectional=bidir, dtype=dtype, **kw)
    f.params = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if var else np.full(B, T)
    D = 2 if bidir else 1
    h0 = rng.normal(size=(L * D, B, H)).astype(dtype)
    c0 = rng.normal(size=(L * D, B, H)).astype(dtype)
    lstm = cell == "lstm"
    out, st = f.forward(X, lengths, h0=h0, c0=c0 if lstm else None, training=True)
    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    o, s = m(packed, (h0t, c0t) if lstm else h0t)
    o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=T)
    R = rng.normal(size=o.shape).astype(dtype)
    R2 = rng.normal(size=(L * D, B, H)).astype(dtype)
    hn_t = s[0] if lstm else s
    loss = (o * torch.tensor(R)).sum() + (hn_t * torch.tensor(R2)).sum()
    loss.backward()
    hn = st[0] if lstm else st
    dX, g = f.backward(R, (R2, None) if lstm else R2)
    errs = [rel(out, o.detach()), rel(hn, hn_t.detach()), rel(dX, Xt.grad), rel(g["h0"], h0t.grad)]
    if lstm:
        errs += [rel(st[1], s[1].detach()), rel(g["c0"], c0t.grad)]
    errs += [rel(g[k], p.grad) for k, p in m.named_parameters()]
    return max(errs)


def main():
    rng = np.random.default_rng(0)
    print("cell | float32 max rel err | float64 max rel err  (30 random configurations each)")
    for cell in CELLS:
        r32 = max(one(cell, np.float32, rng) for _ in range(30))
        r64 = max(one(cell, np.float64, rng) for _ in range(30))
        print(f"{cell} | {r32:.2e} | {r64:.2e}")


if __name__ == "__main__":
    main()
