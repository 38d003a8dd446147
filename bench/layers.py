"""Layer benchmark: fastrnn against PyTorch (and Keras where TensorFlow is installed).

    python bench/layers.py                 # all sizes, cells, modes, 1 and 2 threads
    python bench/layers.py --quick         # a short run (M size, 2 threads)
    python bench/layers.py --sizes M --cells lstm --threads 2 --rounds 7

Each contender runs in its own worker process (two OpenMP runtimes in one process make
each other's idle threads spin), and the driver interleaves them round by round: in every
round each contender times a few iterations of the same configuration, so noise on this
shared machine hits all of them alike. Reported: medians over rounds.

Modes: "inference" (forward only, no gradient state) and "train" (forward, a linear head
on the last hidden state to 10 classes, softmax cross-entropy, backward, Adam update).
GFLOP/s counts GEMM flops only: 2*B*(I+H)*G*H per layer per step, a training step as 3x
the forward. The sgemm rate of scipy's BLAS (a large square product, same threads) is
measured in the same run and each configuration is also shown as a fraction of it.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# the sizes and the fastrnn / PyTorch training steps are the package's quick benchmark's
# (python -m fastrnn bench), so both time exactly the same thing
from fastrnn._quickbench import SIZES, _Worker, _fastrnn_steps, _torch_steps  # noqa: E402
from fastrnn.layers import _GATES as GATES  # noqa: E402  (the C core's cell table)
N_CLASSES = 10


def gemm_flops(cell, size, mode):
    B, T, I, H, L = SIZES[size]
    G = GATES[cell]
    f = sum(2.0 * B * ((I if k == 0 else H) + H) * G * H * T for k in range(L))
    return f * (3 if mode == "train" else 1)


# ------------------------------------------------------------------ contenders

class FastRNN:
    name = "fastrnn"

    def __init__(self):
        import fastrnn
        self.fastrnn = fastrnn

    def threads(self, n):
        self.fastrnn.set_num_threads(n)

    def build(self, cell, size):
        return _fastrnn_steps(cell, size)


class Torch:
    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        torch.manual_seed(0)
        # --torch-ftz: flush denormals as fastrnn and TensorFlow do (PyTorch's default is
        # not to, and its long-sequence training steps then slow down many-fold)
        torch.set_flush_denormal(os.environ.get("FASTRNN_BENCH_TORCH_FTZ") == "1")

    def threads(self, n):
        self.torch.set_num_threads(n)

    def build(self, cell, size):
        return _torch_steps(cell, size)


class Keras:
    name = "keras"

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        self.tf = tf

    def threads(self, n):
        # TensorFlow fixes its pools at first use; the worker is started per thread count
        self.n = n

    def build(self, cell, size):
        tf = self.tf
        B, T, I, H, L = SIZES[size]
        layer = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU,
                 "rnn": tf.keras.layers.SimpleRNN}[cell]
        inp = tf.keras.Input((T, I), batch_size=B)
        z = inp
        for k in range(L):
            z = layer(H, return_sequences=k < L - 1)(z)
        out = tf.keras.layers.Dense(N_CLASSES)(z)
        model = tf.keras.Model(inp, out)
        opt = tf.keras.optimizers.Adam(1e-3)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        X = tf.random.normal((B, T, I))
        y = tf.random.uniform((B,), 0, N_CLASSES, dtype=tf.int32)

        @tf.function
        def infer_step():
            return model(X, training=False)

        @tf.function
        def train_step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(X, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        return {"inference": lambda: infer_step(), "train": lambda: train_step()}


CONTENDERS = {"fastrnn": FastRNN, "torch": Torch, "keras": Keras}


def available(name):
    mod = {"fastrnn": "fastrnn", "torch": "torch", "keras": "tensorflow"}[name]
    import importlib.util
    return importlib.util.find_spec(mod) is not None


# ------------------------------------------------------------------ worker processes

def _worker(name, threads, conn):
    if name == "keras":
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    c = CONTENDERS[name]()
    c.threads(threads)
    if name == "keras":
        c.tf.config.threading.set_intra_op_parallelism_threads(threads)
        c.tf.config.threading.set_inter_op_parallelism_threads(1)
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        cell, size, mode, iters = msg
        key = (cell, size)
        if key not in built:
            built[key] = c.build(cell, size)
            for _ in range(2):                      # warm-up (allocation, tracing)
                built[key][mode]()
        fn = built[key][mode]
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        conn.send(times)


def sgemm_rate(threads, n=2048, reps=5):
    """GFLOP/s of scipy's sgemm on a large square product with `threads` BLAS threads."""
    from scipy.linalg.blas import sgemm
    try:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(threads, user_api="blas")
    except ImportError:
        ctx = None
    a = np.asfortranarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    sgemm(1.0, a, a)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sgemm(1.0, a, a)
        ts.append(time.perf_counter() - t0)
    if ctx is not None:
        ctx.restore_original_limits()
    return 2.0 * n ** 3 / np.median(ts) / 1e9


# ------------------------------------------------------------------ driver

def iters_for(size, mode):
    return {"S": 20, "M": 8, "L": 2, "B1": 50}[size] * (1 if mode == "train" else 2)


def run(args):
    names = [n for n in ("fastrnn", "torch", "keras") if available(n) and n in args.contenders]
    missing = [n for n in ("torch", "keras") if n in args.contenders and not available(n)]
    for n in missing:
        print(f"# {n} not installed: skipped")
    results = []
    for threads in args.threads:
        rate = sgemm_rate(threads)
        print(f"# scipy sgemm (2048^3, {threads} thread(s)): {rate:.1f} GFLOP/s", flush=True)
        workers = {n: _Worker(_worker, (n, threads), threads, n) for n in names}
        try:
            for size in args.sizes:
                for cell in args.cells:
                    for mode in args.modes:
                        med = {}
                        samples = {n: [] for n in names}
                        for _ in range(args.rounds):
                            for n in names:
                                ts = workers[n].ask((cell, size, mode, iters_for(size, mode)))
                                samples[n].append(float(np.median(ts)))
                                time.sleep(args.pause)  # let the other's idle threads sleep
                        for n in names:
                            med[n] = float(np.median(samples[n]))
                        results.append(dict(threads=threads, size=size, cell=cell, mode=mode,
                                            sgemm=rate, **{f"t_{n}": med[n] for n in names}))
                        print_row(results[-1], names, flush=True)
        finally:
            for w in workers.values():
                w.close()
    return results, names


HEADER_PRINTED = []


def print_row(r, names, flush=False):
    if not HEADER_PRINTED:
        cols = ["thr", "size", "cell", "mode", "fastrnn ms", "seq/s", "GFLOP/s", "of sgemm"]
        for n in names[1:]:
            cols += [f"{n} ms", f"x vs {n}"]
        print(" | ".join(cols))
        HEADER_PRINTED.append(True)
    B = SIZES[r["size"]][0]
    t = r["t_fastrnn"]
    gf = gemm_flops(r["cell"], r["size"], r["mode"]) / t / 1e9
    row = [str(r["threads"]), r["size"], r["cell"], r["mode"], f"{t * 1e3:.2f}",
           f"{B / t:,.0f}", f"{gf:.1f}", f"{gf / r['sgemm']:.0%}"]
    for n in names[1:]:
        row += [f"{r['t_' + n] * 1e3:.2f}", f"{r['t_' + n] / t:.2f}"]
    print(" | ".join(row), flush=flush)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["S", "M", "L"], choices=list(SIZES))
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"], choices=list(GATES))
    p.add_argument("--modes", nargs="+", default=["inference", "train"],
                   choices=["inference", "train"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds between contenders (idle OpenMP/Eigen threads spin a while)")
    p.add_argument("--contenders", nargs="+", default=["fastrnn", "torch", "keras"])
    p.add_argument("--torch-ftz", action="store_true",
                   help="run PyTorch with torch.set_flush_denormal(True)")
    p.add_argument("--quick", action="store_true", help="M size, 2 threads, 3 rounds")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    os.environ["FASTRNN_BENCH_TORCH_FTZ"] = "1" if args.torch_ftz else "0"
    if args.quick:
        args.sizes, args.threads, args.rounds = ["M"], [2], 3
    results, names = run(args)
    if args.json:
        import json
        import platform
        meta = {"machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "contenders": names, "command": " ".join(sys.argv)}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
