"""A/B of one recurrent layer's float32 training step between two builds of fastrnn:
forward(X, training=True) + backward(d_out, d_h_n), per call in milliseconds.

    python bench/train_step_ab.py --trees /work/main /work/wt-x --cell gru --pairs 7

Each round starts a FRESH process per tree (PYTHONPATH=tree), in the order A, B, A, B...,
so slow phases of this shared machine hit both alike; a process times every size (its
median over --reps calls after a warm-up). Printed: over the rounds, the median and the
25th percentile (p25) of those per-process medians, total and backward alone, and B/A.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# name: (batch, steps, input, hidden)
SIZES = {"S": (32, 50, 16, 64), "M": (64, 100, 32, 128),
         "300x100x8": (32, 100, 8, 128)}   # a batch of bench/fit.py's 300x100x8 case


def _worker(cell, threads, reps, sizes):
    import fastrnn
    from fastrnn import _core
    fastrnn.set_num_threads(threads)
    cls = {"gru": fastrnn.GRU, "lstm": fastrnn.LSTM, "rnn": fastrnn.RNN}[cell]
    out = {}
    for name in sizes:
        B, T, I, H = SIZES[name]
        rng = np.random.default_rng(0)
        layer = cls(I, H, random_state=0)
        X = rng.standard_normal((B, T, I)).astype(np.float32)
        d_out = rng.standard_normal((B, T, H)).astype(np.float32)
        d_h_n = rng.standard_normal((1, B, H)).astype(np.float32)
        tot, bwd = [], []
        _core.reset_threads_used()
        for i in range(reps + 3):                  # 3 warm-up calls
            t0 = time.perf_counter()
            layer.forward(X, training=True, n_threads=threads)
            t1 = time.perf_counter()
            layer.backward(d_out, d_h_n, n_threads=threads)
            t2 = time.perf_counter()
            if i >= 3:
                tot.append((t2 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
        out[name] = dict(tot=statistics.median(tot), bwd=statistics.median(bwd),
                         threads=_core.threads_used()[1])
    out["file"] = fastrnn.__file__
    print(json.dumps(out))


def _p25(v):
    return float(np.percentile(v, 25))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", nargs=2, metavar=("A", "B"))
    ap.add_argument("--cell", default="gru", choices=["gru", "lstm", "rnn"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--sizes", nargs="+", default=["M", "S"], choices=list(SIZES))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.cell, args.threads, args.reps, args.sizes)
    if not args.trees:
        ap.error("--trees A B is required")
    res = {0: [], 1: []}
    for _ in range(args.pairs):
        for k, tree in enumerate(args.trees):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--cell", args.cell,
                   "--threads", str(args.threads), "--reps", str(args.reps), "--sizes",
                   *args.sizes]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"worker for {tree} failed:\n{proc.stderr}")
            res[k].append(json.loads(proc.stdout))
    print(f"{args.cell.upper()} training step (forward training=True + backward), float32, "
          f"{args.threads} threads; {args.pairs} A/B pairs of fresh processes, each the "
          f"median of {args.reps} calls; ms")
    for k, name in enumerate("AB"):
        print(f"{name} = {args.trees[k]} (imported {res[k][0]['file']})")
    print(f"{'size':>4} {'(B,T,I,H)':>16} {'part':>5} {'A med':>8} {'A p25':>8} "
          f"{'B med':>8} {'B p25':>8} {'B/A med':>8} {'B/A p25':>8} {'thr':>4}")
    for name in args.sizes:
        for part in ("tot", "bwd"):
            a = [r[name][part] for r in res[0]]
            b = [r[name][part] for r in res[1]]
            am, bm, ap25, bp25 = statistics.median(a), statistics.median(b), _p25(a), _p25(b)
            thr = {r[name]["threads"] for k in res for r in res[k]}
            print(f"{name:>4} {str(SIZES[name]):>16} {part:>5} {am:8.2f} {ap25:8.2f} "
                  f"{bm:8.2f} {bp25:8.2f} {bm / am:8.3f} {bp25 / ap25:8.3f} "
                  f"{'/'.join(map(str, sorted(thr))):>4}")


if __name__ == "__main__":
    main()
