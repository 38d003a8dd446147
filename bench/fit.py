"""End-to-end training speed: `LSTMClassifier.fit` with a fixed number of epochs against
the equivalent PyTorch loop, on small problems of real size and the S/M layer sizes.

    python bench/fit.py                      # every case, 2 threads, 5 rounds
    python bench/fit.py --cases tiny S --rounds 3 --threads 1
    python bench/fit.py --split              # where a fastrnn batch's time goes
    python bench/fit.py --epoch-scale 0.2    # a fifth of each case's epochs (busy machine)

Same model (nn.LSTM, one layer, batch first + nn.Linear on the last step), same loss
(cross-entropy), same optimizer (Adam, lr 5e-3), same gradient clipping (global norm
1.0, fastrnn's default), same batch size, shuffling every epoch, the same fixed number
of epochs (fastrnn: max_epochs=N, no early stopping, no validation split, a plateau
patience larger than N). torch.set_num_threads(threads); fastrnn n_jobs=threads.

Each contender lives in its own process for the whole run (two OpenMP runtimes in one
process make each other's idle threads spin); the main process alternates them round by
round (fastrnn, torch, fastrnn, torch, ...), each timing one whole fit (data conversion
included, after one untimed warm-up fit per case), and prints medians and the ratio
torch time / fastrnn time.
"""
import argparse
import multiprocessing as mp
import os
import platform
import sys
import time

import numpy as np

CASES = {
    # name: (sequences, steps, features, hidden, batch, epochs, classes)
    "67x24x1": (67, 24, 1, 64, 32, 300, 2),
    "300x100x8": (300, 100, 8, 128, 32, 10, 5),
    "1348x8x8": (1348, 8, 8, 128, 32, 30, 10),
    "S": (256, 50, 16, 64, 32, 20, 10),       # fastrnn/_quickbench.py SIZES["S"]
    "M": (512, 100, 32, 128, 64, 3, 10),      # SIZES["M"] (its batch of 64)
}
LR = 5e-3
CLIP = 1.0


def make_data(case):
    n, T, F, H, B, E, C = CASES[case]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)            # every class present
    return X, y


# ------------------------------------------------------------------ contenders
def fit_fastrnn(case, threads, epochs=None):
    from fastrnn import LSTMClassifier
    X, y = make_data(case)
    n, T, F, H, B, E, C = CASES[case]
    E = epochs or E
    m = LSTMClassifier(hidden_size=H, batch_size=B, max_epochs=E, learning_rate=LR,
                       clip_grad_norm=CLIP, early_stopping=False, n_iter_no_change=E + 1,
                       random_state=0, n_jobs=threads)
    t0 = time.perf_counter()
    m.fit(X, y)
    return time.perf_counter() - t0, m.loss_curve_[-1]


def fit_torch(case, threads, epochs=None):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X_np, y_np = make_data(case)
    n, T, F, H, B, E, C = CASES[case]
    E = epochs or E

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(F, H, batch_first=True)
            self.head = torch.nn.Linear(H, C)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    t0 = time.perf_counter()
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(X_np)
    y = torch.from_numpy(y_np)
    params = list(net.parameters())
    for _ in range(E):
        order = torch.randperm(n)
        total = 0.0
        for i in range(0, n, B):
            idx = order[i:i + B]
            opt.zero_grad()
            loss = loss_fn(net(X[idx]), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            total += loss.item() * len(idx)
    return time.perf_counter() - t0, total / n


# ------------------------------------------------------------------ where the time goes
def split_fastrnn(case, threads, epochs=None):
    """Per-batch time of a fastrnn fit: by C call (timers around the _core functions the
    training step calls), the Python of the batch loop (the loop's time minus its C
    calls), and the rest of fit (data checks, scaling, per-epoch snapshots and checks).
    Then "python alone": the batch loop of a second fit with those C calls replaced by
    stubs that return at once, i.e. the pure interpreter cost of a batch (the in-loop
    figure above also holds the caches the C calls left cold and the timers' own cost)."""
    import collections
    from fastrnn import _core
    from fastrnn.estimators import _training
    acc = collections.defaultdict(float)
    names = ("forward", "backward", "dense_forward", "dense_backward", "softmax_xent",
             "optim_step")
    saved = {name: getattr(_core, name) for name in names}
    loop = {"t": 0.0, "c": 0.0, "stub": False}
    run_batches = _training._run_batches

    def timed_loop(*a):
        if loop["stub"]:
            for name in names:
                setattr(_core, name, lambda *_a, **_k: 0.0)
        c0, t = sum(acc.values()), time.perf_counter()
        try:
            return run_batches(*a)
        finally:
            loop["t"] += time.perf_counter() - t
            loop["c"] += sum(acc.values()) - c0
            if loop["stub"]:
                for name in names:
                    setattr(_core, name, timers[name])
    timers = {}
    for name, f in saved.items():
        def timed(*a, _f=f, _n=name, **k):
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                acc[_n] += time.perf_counter() - t
        timers[name] = timed
        setattr(_core, name, timed)
    _training._run_batches = timed_loop
    try:
        fit_fastrnn(case, threads, 1)           # warm-up
        acc.clear()
        loop.update(t=0.0, c=0.0)
        total, _ = fit_fastrnn(case, threads, epochs)
        in_loop, c_in_loop = loop["t"], loop["c"]
        loop.update(t=0.0, c=0.0, stub=True)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_fastrnn(case, threads, epochs)
        alone = loop["t"]
    finally:
        for name, f in saved.items():
            setattr(_core, name, f)
        _training._run_batches = run_batches
    n, T, F, H, B, E, C = CASES[case]
    batches = (epochs or E) * -(-n // B)
    out = {k: v / batches for k, v in acc.items()}
    out["python in the batch loop"] = (in_loop - c_in_loop) / batches
    out["fit outside the batch loop"] = (total - in_loop) / batches
    out["total"] = total / batches
    out["python alone (C stubbed)"] = alone / batches
    return out


# ------------------------------------------------------------------ worker processes
def _worker(conn, threads, scale):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    for case, row in list(CASES.items()):
        CASES[case] = row[:5] + (max(1, round(row[5] * scale)),) + row[6:]
    warmed = set()
    while True:
        msg = conn.recv()
        if msg is None:
            break
        fn, case = msg
        f = globals()[fn]
        if (fn, case) not in warmed:
            f(case, threads, 1)
            warmed.add((fn, case))
        conn.send(f(case, threads))


class Worker:
    def __init__(self, threads, scale=1.0):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, threads, scale), daemon=True)
        self.proc.start()

    def __call__(self, fn, case):
        self.conn.send((fn, case))
        return self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.proc.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epoch-scale", type=float, default=1.0,
                    help="run this fraction of each case's epochs")
    ap.add_argument("--pause", type=float, default=0.5,
                    help="seconds of quiet before each timed fit (idle pools settle)")
    ap.add_argument("--split", action="store_true",
                    help="print the split of a fastrnn batch's time instead")
    args = ap.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"threads {args.threads}, {args.rounds} rounds, medians")
    if args.split:
        return print_split(args)
    import importlib.util
    have_torch = importlib.util.find_spec("torch") is not None
    for case, row in list(CASES.items()):
        CASES[case] = row[:5] + (max(1, round(row[5] * args.epoch_scale)),) + row[6:]
    fr = Worker(args.threads, args.epoch_scale)
    th = Worker(args.threads, args.epoch_scale) if have_torch else None
    print("| case (n x T x F, hidden, batch, epochs) | fastrnn s | torch s | x torch "
          "| fastrnn loss | torch loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in args.cases:
        a, b = [], []
        for _ in range(args.rounds):
            # a pause before each contender: the other process's idle OpenMP threads
            # (PyTorch's spin for a while after a parallel region) must not share the
            # cores with the one being timed
            time.sleep(args.pause)
            a.append(fr("fit_fastrnn", case))
            if th:
                time.sleep(args.pause)
                b.append(th("fit_torch", case))
        n, T, F, H, B, E, C = CASES[case]
        fa = np.median([r[0] for r in a])
        la = np.median([r[1] for r in a])
        if b:
            fb = np.median([r[0] for r in b])
            lb = np.median([r[1] for r in b])
            print(f"| {case} ({n}x{T}x{F}, {H}, {B}, {E}) | {fa:.3f} | {fb:.3f} "
                  f"| {fb / fa:.2f} | {la:.3f} | {lb:.3f} |", flush=True)
        else:
            print(f"| {case} | {fa:.3f} | - | - | {la:.3f} | - |", flush=True)
    fr.close()
    if th:
        th.close()


def print_split(args):
    for case, row in list(CASES.items()):
        CASES[case] = row[:5] + (max(1, round(row[5] * args.epoch_scale)),) + row[6:]
    w = Worker(args.threads, args.epoch_scale)
    for case in args.cases:
        runs = [w("split_fastrnn", case) for _ in range(args.rounds)]
        keys = list(runs[0])
        med = {k: np.median([r.get(k, 0.0) for r in runs]) for k in keys}
        print(f"{case}: ms per batch (median of {args.rounds} fits)")
        for k in keys:
            print(f"  {k:28s} {med[k] * 1e3:8.3f}  {med[k] / med['total'] * 100:5.1f}%")
    w.close()


if __name__ == "__main__":
    sys.exit(main())
