"""``python -m fastrnn bench``: a quick layer benchmark, under a minute.

A short form of bench/layers.py (which lives in the source tree, not in the wheel): the
same model sizes and modes, fastrnn against PyTorch when it is installed. Each contender
runs in its own process (two OpenMP runtimes in one process make each other's idle
threads spin), and the rounds alternate between them so noise on a shared machine hits
both alike. Reported: the median time per call over the rounds.

Modes: "inference" (forward only) and "train" (forward, a linear head on the last
hidden state to 10 classes, softmax cross-entropy, backward, Adam update).
"""
import multiprocessing as mp
import os
import sys
import time

import numpy as np

SIZES = {  # batch, steps, inputs, hidden, layers
    "S": (32, 50, 16, 64, 1),
    "M": (64, 100, 32, 128, 1),
    "L": (128, 200, 64, 256, 2),
    "B1": (1, 100, 32, 128, 1),     # single-sequence latency
    "XS": (3, 6, 5, 8, 2),          # a smoke size for tests/test_bench.py, not a benchmark
}
N_CLASSES = 10


def _fastrnn_steps(cell, size):
    from .dense import Dense
    from .layers import GRU, LSTM, RNN
    from .losses import softmax_cross_entropy
    from .optim import Adam
    B, T, I, H, L = SIZES[size]
    rnn = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](I, H, num_layers=L, random_state=0)
    head = Dense(H, N_CLASSES, random_state=0)
    opt = Adam(lr=1e-3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=B)
    params = {"rnn." + k: v for k, v in rnn.params.items()}
    params.update({"head." + k: v for k, v in head.params.items()})
    lstm = cell == "lstm"

    def inference():
        rnn.forward(X)

    def train():
        _, state = rnn.forward(X, training=True)
        h_n = state[0] if lstm else state
        _, d_logits = softmax_cross_entropy(head.forward(h_n[-1], training=True), y)
        d_last, g_head = head.backward(d_logits)
        d_h_n = np.zeros_like(h_n)
        d_h_n[-1] = d_last
        _, g_rnn = rnn.backward(None, (d_h_n, None) if lstm else d_h_n)
        grads = {"rnn." + k: v for k, v in g_rnn.items() if k in rnn.params}
        grads.update({"head." + k: v for k, v in g_head.items()})
        opt.step(params, grads)

    return {"inference": inference, "train": train}


def _torch_steps(cell, size):
    import torch
    torch.manual_seed(0)
    B, T, I, H, L = SIZES[size]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    rnn = cls(I, H, num_layers=L, batch_first=True)
    head = torch.nn.Linear(H, N_CLASSES)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    X = torch.randn(B, T, I)
    y = torch.randint(0, N_CLASSES, (B,))
    lstm = cell == "lstm"

    def inference():
        with torch.inference_mode():
            rnn(X)

    def train():
        opt.zero_grad()
        _, state = rnn(X)
        h_n = state[0] if lstm else state
        torch.nn.functional.cross_entropy(head(h_n[-1]), y).backward()
        opt.step()

    return {"inference": inference, "train": train}


def _worker(name, threads, min_seconds, conn):
    if name == "torch":
        import torch
        torch.set_num_threads(threads)
        build = _torch_steps
    else:
        from . import set_num_threads
        set_num_threads(threads)
        build = _fastrnn_steps
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        cell, size, mode = msg
        if (cell, size) not in built:
            built[cell, size] = build(cell, size)
        fn = built[cell, size][mode]
        fn()                                     # warm-up: allocation, first-touch
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        conn.send(float(np.median(times)))


class _Worker:
    """A contender in its own spawned process. target(*args, conn) sends "ready", then
    answers every message with one reply until it receives None. OMP_NUM_THREADS is
    set for the child only. (bench/layers.py runs its contenders through this too.) With
    wait=False the constructor returns once the process is started; wait_ready() then
    waits for it (so several workers can import their packages at the same time)."""

    def __init__(self, target, args, threads, label, wait=True):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.proc = ctx.Process(target=target, args=tuple(args) + (child,), daemon=True)
            self.proc.start()
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
        self.label = label
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=120):
        if not self.conn.poll(timeout) or self.conn.recv() != "ready":
            raise RuntimeError(f"the {self.label} benchmark worker did not start")

    def ask(self, msg):
        self.conn.send(msg)
        return self.conn.recv()

    def close(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


def _torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def run(sizes=("M",), cells=("lstm", "gru", "rnn"), modes=("inference", "train"),
        threads=None, rounds=3, compare=True, min_seconds=0.15, file=None):
    """Time fastrnn (and PyTorch when `compare` and installed); print a table to `file`
    (default stdout) and return the rows as dicts (times in seconds per call)."""
    from . import __version__, get_num_threads
    file = sys.stdout if file is None else file
    threads = get_num_threads() if threads is None else int(threads)
    names = ["fastrnn"]
    if compare and _torch_available():
        names.append("torch")
    elif compare:
        print("# torch not installed: fastrnn alone", file=file)
    print(f"# fastrnn {__version__} quick benchmark, float32, {threads} thread(s); "
          f"median of {rounds} rounds; the full one: bench/layers.py in the source tree",
          file=file)
    for size in sizes:
        B, T, I, H, L = SIZES[size]
        print(f"# size {size}: batch {B}, {T} steps, {I} inputs, hidden {H}, {L} layer(s)",
              file=file)
    header = ["size", "cell", "mode", "fastrnn ms", "seq/s"]
    if "torch" in names:
        header += ["torch ms", "torch/fastrnn"]
    print(" | ".join(header), file=file, flush=True)
    workers = {n: _Worker(_worker, (n, threads, min_seconds), threads, n) for n in names}
    rows = []
    try:
        for size in sizes:
            for cell in cells:
                for mode in modes:
                    samples = {n: [] for n in names}
                    for _ in range(rounds):
                        for n in names:
                            samples[n].append(workers[n].ask((cell, size, mode)))
                            time.sleep(0.05)  # let the other's idle OpenMP threads sleep
                    row = dict(size=size, cell=cell, mode=mode, threads=threads,
                               **{n: float(np.median(samples[n])) for n in names})
                    rows.append(row)
                    t = row["fastrnn"]
                    cols = [size, cell, mode, f"{t * 1e3:.2f}", f"{SIZES[size][0] / t:,.0f}"]
                    if "torch" in names:
                        cols += [f"{row['torch'] * 1e3:.2f}", f"{row['torch'] / t:.2f}x"]
                    print(" | ".join(cols), file=file, flush=True)
    finally:
        for w in workers.values():
            w.close()
    return rows
