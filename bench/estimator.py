"""End-to-end training: fastrnn's LSTMClassifier.fit against an equivalent PyTorch loop.

    python bench/estimator.py                # both tasks, 2 threads
    python bench/estimator.py --threads 1

Same data, same model (one LSTM layer, the last hidden state into a linear head),
same optimizer (Adam, same learning rate, gradient clipping at norm 1), same batch size
and number of epochs, same shuffling scheme. Each contender runs in its own process (two
OpenMP runtimes in one process slow each other down); the two alternate for --rounds
rounds and the table gives the median fit time and the test accuracy.

Tasks: "majority" (which of 3 symbols fired most often over 150 steps, needs memory over
the whole sequence; fastrnn.datasets.make_majority) and "digits" (scikit-learn's 8x8
digits read row by row: 8 steps of 8 features).
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

TASKS = {
    # name: (hidden, epochs, batch, lr)
    "majority": (32, 30, 32, 1e-2),
    "digits": (64, 30, 32, 1e-2),
}


def load_task(name):
    if name == "majority":
        from fastrnn.datasets import make_majority
        X, y = make_majority(1900, n_steps=150, random_state=0)
        return X[:1400], y[:1400], X[1400:], y[1400:]
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    X = (d.data / 16.0).reshape(-1, 8, 8).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.25, random_state=0,
                                          stratify=d.target)
    return Xtr, ytr, Xte, yte


def fit_fastrnn(task, threads):
    from fastrnn import LSTMClassifier
    Xtr, ytr, Xte, yte = load_task(task)
    hidden, epochs, batch, lr = TASKS[task]
    m = LSTMClassifier(hidden_size=hidden, max_epochs=epochs, batch_size=batch,
                       learning_rate=lr, n_iter_no_change=epochs + 1, random_state=0,
                       n_jobs=threads)
    t0 = time.perf_counter()
    m.fit(Xtr, ytr)
    return time.perf_counter() - t0, m.score(Xte, yte)


def fit_torch(task, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = load_task(task)
    hidden, epochs, batch, lr = TASKS[task]
    classes = np.unique(ytr)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(Xtr.shape[2], hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, len(classes))

        def forward(self, x):
            _, (h, _) = self.rnn(x)
            return self.head(h[-1])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    X = torch.from_numpy(np.ascontiguousarray(Xtr, dtype=np.float32))
    y = torch.from_numpy(np.searchsorted(classes, ytr))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        pred = classes[net(torch.from_numpy(np.ascontiguousarray(Xte, np.float32))).argmax(1)]
    return fit_s, float(np.mean(pred == yte))


def _run(fn_name, task, threads, q):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    q.put(globals()[fn_name](task, threads))


def in_process(fn_name, task, threads):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run, args=(fn_name, task, threads, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import importlib.util
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("# torch not installed: only fastrnn is timed")
    print(f"threads {args.threads}, {args.rounds} rounds, medians")
    print("task | fastrnn fit s | fastrnn acc | torch fit s | torch acc | speed-up")
    for task in args.tasks:
        fr, th = [], []
        for _ in range(args.rounds):
            fr.append(in_process("fit_fastrnn", task, args.threads))
            if have_torch:
                th.append(in_process("fit_torch", task, args.threads))
        f_t, f_a = np.median([r[0] for r in fr]), np.median([r[1] for r in fr])
        if th:
            t_t, t_a = np.median([r[0] for r in th]), np.median([r[1] for r in th])
            print(f"{task} | {f_t:.2f} | {f_a:.3f} | {t_t:.2f} | {t_a:.3f} | {t_t / f_t:.2f}x",
                  flush=True)
        else:
            print(f"{task} | {f_t:.2f} | {f_a:.3f} | - | - | -", flush=True)


if __name__ == "__main__":
    sys.exit(main())
