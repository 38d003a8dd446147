"""Text classification with embeddings: fastrnn's LSTMClassifier(embedding_dim=64) fit
against an equivalent PyTorch loop.

    python bench/text.py                     # 2 threads, 3 rounds, 3 epochs
    python bench/text.py --rounds 1 --epochs 1

Data (synthetic, the same in every process): token ids 0..19,999 drawn from a Zipf
distribution (p(rank k) ~ 1/k), lengths uniform 20-200, 5,000 training and 1,000 test
sequences. The label depends on the text: 1 when the "positive" tokens (the 20 even ids
10, 12, ..., 48) outnumber the "negative" ones (the 20 odd ids 11, ..., 49), else 0;
sequences with a tie are redrawn. Each set carries ~8% of the tokens.

Model: Embedding (20,000 ids + fastrnn's unknown row = 20,001 x 64) -> LSTM (128) ->
the last valid hidden state -> Linear to 2 classes. Training: Adam lr 1e-2 (fastrnn's
default), batch 32 (its default), gradient clipping at global norm 1.0 (its default),
a new random order every epoch, a fixed number of epochs.

  fastrnn  LSTMClassifier(embedding_dim=64, hidden_size=128, max_epochs=E,
           n_iter_no_change > E): the wall time of fit(X_list, y) on the list of 1-D id
           arrays (reading and padding the list included), then score on the test list;
  torch    nn.Embedding(20001, 64) on the batch padded to its longest sequence,
           pack_padded_sequence(enforce_sorted=False), nn.LSTM, Linear on h_n,
           cross_entropy, clip_grad_norm_(1.0), Adam(lr 1e-2): the wall time of the
           epochs (the padded id tensor is built before the clock starts).

One difference is inherent: fastrnn's embedding gradient is row-sparse and its Adam
updates only the rows a batch used (lazily, as torch.optim.SparseAdam does); PyTorch's
nn.Embedding (sparse=False, the usual choice) gets a dense 20,001 x 64 gradient and Adam
updates every row every step.

Each fit runs in a fresh process, fastrnn and PyTorch alternate for --rounds rounds;
the table gives the median wall time and the median test accuracy.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

VOCAB = 20_000
EMB, HIDDEN = 64, 128
LENGTHS = (20, 200)
N_TRAIN, N_TEST = 5_000, 1_000
BATCH, LR, CLIP = 32, 1e-2, 1.0
POS = np.arange(10, 50, 2)
NEG = np.arange(11, 50, 2)


def make_data(seed=0):
    """(X_train list, y_train, X_test list, y_test): Zipf ids, ragged, balanced-ish."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1)
    p /= p.sum()
    is_pos = np.zeros(VOCAB, bool)
    is_pos[POS] = True
    is_neg = np.zeros(VOCAB, bool)
    is_neg[NEG] = True
    X, y = [], []
    while len(X) < N_TRAIN + N_TEST:
        n = int(rng.integers(LENGTHS[0], LENGTHS[1] + 1))
        ids = rng.choice(VOCAB, size=n, p=p)
        d = int(is_pos[ids].sum()) - int(is_neg[ids].sum())
        if d == 0:
            continue
        X.append(ids.astype(np.int64))
        y.append(int(d > 0))
    y = np.array(y)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


def fit_fastrnn(epochs, threads):
    import fastrnn
    from fastrnn import LSTMClassifier
    fastrnn.set_num_threads(threads)
    Xtr, ytr, Xte, yte = make_data()
    m = LSTMClassifier(embedding_dim=EMB, hidden_size=HIDDEN, max_epochs=epochs,
                       batch_size=BATCH, learning_rate=LR, clip_grad_norm=CLIP,
                       n_iter_no_change=epochs + 100, random_state=0, n_jobs=threads)
    t0 = time.perf_counter()
    m.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    return fit_s, m.score(Xte, yte)


def _padded(X):
    import torch
    lengths = np.array([len(x) for x in X])
    out = np.zeros((len(X), lengths.max()), dtype=np.int64)
    for i, x in enumerate(X):
        out[i, :len(x)] = x
    return torch.from_numpy(out), torch.from_numpy(lengths)


def fit_torch(epochs, threads):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = make_data()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB + 1, EMB)
            self.rnn = torch.nn.LSTM(EMB, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, 2)

        def forward(self, ids, lengths):
            packed = pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                          enforce_sorted=False)
            _, (h, _) = self.rnn(packed)
            return self.head(h[-1])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    X, L = _padded(Xtr)
    y = torch.from_numpy(ytr)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for i in range(0, len(X), BATCH):
            idx = order[i:i + BATCH]
            lb = L[idx]
            xb = X[idx, :int(lb.max())]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xb, lb), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
            opt.step()
    fit_s = time.perf_counter() - t0
    Xt, Lt = _padded(Xte)
    with torch.no_grad():
        pred = net(Xt, Lt).argmax(1).numpy()
    return fit_s, float(np.mean(pred == yte))


def _run(fn_name, epochs, threads, q):
    q.put(globals()[fn_name](epochs, threads))


def in_process(fn_name, epochs, threads):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        p = ctx.Process(target=_run, args=(fn_name, epochs, threads, q))
        p.start()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    out = q.get()
    p.join()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from per_step import machine_line
    print(machine_line())
    print(f"# command: python {' '.join(sys.argv)}")
    Xtr, ytr, _, yte = make_data()
    lens = np.array([len(x) for x in Xtr])
    print(f"# {N_TRAIN} train / {N_TEST} test sequences, lengths {lens.min()}-{lens.max()} "
          f"(mean {lens.mean():.0f}), vocabulary {VOCAB}, label 1 in "
          f"{ytr.mean():.0%} (train) / {yte.mean():.0%} (test); embedding {EMB}, LSTM "
          f"{HIDDEN}, batch {BATCH}, Adam lr {LR}, clip {CLIP}, {args.epochs} epochs, "
          f"{args.threads} threads, {args.rounds} rounds (alternating), medians", flush=True)
    fr, th = [], []
    for r in range(args.rounds):
        fr.append(in_process("fit_fastrnn", args.epochs, args.threads))
        th.append(in_process("fit_torch", args.epochs, args.threads))
        print(f"round {r + 1}: fastrnn {fr[-1][0]:.2f} s (acc {fr[-1][1]:.3f}), "
              f"torch {th[-1][0]:.2f} s (acc {th[-1][1]:.3f})", flush=True)
    f_t, f_a = np.median([x[0] for x in fr]), np.median([x[1] for x in fr])
    t_t, t_a = np.median([x[0] for x in th]), np.median([x[1] for x in th])
    print("fastrnn fit s | fastrnn test acc | torch fit s | torch test acc | speed-up")
    print(f"{f_t:.2f} | {f_a:.3f} | {t_t:.2f} | {t_a:.3f} | {t_t / f_t:.2f}x "
          f"(target >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
