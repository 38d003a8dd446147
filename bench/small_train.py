"""Training forward and backward of one LSTM layer at the shapes of bench/fit.py's small
cases (what LSTMClassifier.fit runs per batch: return_sequences=False, d_h_n given, no
d_out, no dX where the tree can skip it), timed per call in microseconds (median of the
rounds).

    PYTHONPATH=. python bench/small_train.py --threads 1 2
    python bench/small_train.py --trees /tmp/base /work/wt-x --threads 1 2   # A/B builds

With --trees each tree runs in its own worker process (PYTHONPATH=tree) and the workers
take turns round by round (A, B, A, B...), so machine noise hits both alike.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# name: (input, hidden, batch, steps), from bench/fit.py's CASES
SHAPES = {
    "1348x8x8": (8, 128, 32, 8),
    "300x100x8": (8, 128, 32, 100),
    "S": (16, 64, 32, 50),
    "M": (32, 128, 64, 100),
}


def _budget(shape):
    I, H, B, T = shape
    work = T * B * 4 * H * (I + H)
    return max(3, min(200, int(4e8 / work)))     # calls per timing, ~0.1-0.2 s


class Runner:
    """Holds one layer and batch per shape; time(case, threads) -> (fwd_us, bwd_us)."""

    def __init__(self):
        import fastrnn
        self.fastrnn = fastrnn
        self.state = {}
        for case, (I, H, B, T) in SHAPES.items():
            rng = np.random.default_rng(0)
            layer = fastrnn.LSTM(I, H, random_state=0)
            X = rng.normal(size=(B, T, I)).astype(np.float32)
            lengths = np.full(B, T, dtype=np.int32)
            d_h_n = rng.normal(size=(1, B, H)).astype(np.float32)
            self.state[case] = (layer, X, lengths, d_h_n)
        import inspect
        from fastrnn.layers import _Recurrent
        # as fit runs it: no dX for a first layer (where the tree can skip it)
        params = inspect.signature(_Recurrent._train_backward).parameters
        self.kw = {"need_dx": False} if "need_dx" in params else {}

    def time(self, case, threads, reps):
        self.fastrnn.set_num_threads(threads)
        layer, X, lengths, d_h_n = self.state[case]
        fwd = bwd = 0.0
        layer._train_forward(X, lengths, threads, return_sequences=False)
        layer._train_backward(None, d_h_n, threads, **self.kw)
        for _ in range(reps):
            t0 = time.perf_counter()
            layer._train_forward(X, lengths, threads, return_sequences=False)
            t1 = time.perf_counter()
            layer._train_backward(None, d_h_n, threads, **self.kw)
            t2 = time.perf_counter()
            fwd += t1 - t0
            bwd += t2 - t1
        return fwd / reps * 1e6, bwd / reps * 1e6


def _worker():
    r = Runner()
    for line in sys.stdin:
        case, threads, reps = line.split()
        f, b = r.time(case, int(threads), int(reps))
        print(f"{f} {b}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="of the rounds (min: what the code can do, for a busy machine)")
    ap.add_argument("--reps", type=int, default=None, help="calls per round (default: "
                    "~0.1-0.2 s of work)")
    ap.add_argument("--trees", nargs="+", default=None,
                    help="source trees to compare (default: the importable fastrnn)")
    args = ap.parse_args(argv)
    if args.trees:
        trees = args.trees
        procs = []
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                           "--worker"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, env=env))

        def run(k, case, nt):
            procs[k].stdin.write(f"{case} {nt} {args.reps or _budget(SHAPES[case])}\n")
            procs[k].stdin.flush()
            return tuple(map(float, procs[k].stdout.readline().split()))
    else:
        trees = ["."]
        runner = Runner()

        def run(k, case, nt):
            return runner.time(case, nt, args.reps or _budget(SHAPES[case]))
    res = {}
    for _ in range(args.rounds):
        for case in args.cases:
            for nt in args.threads:
                for k in range(len(trees)):
                    res.setdefault((case, nt, k), []).append(run(k, case, nt))
    stat = statistics.median if args.stat == "median" else min
    print(f"LSTM layer training step, {args.stat} of {args.rounds} rounds (us per call)")
    head = f"{'case':>10} {'thr':>3} " + " ".join(
        f"{'fwd' + str(k):>8} {'bwd' + str(k):>8}" for k in range(len(trees)))
    if len(trees) == 2:
        head += f" {'bwd1/bwd0':>9} {'tot1/tot0':>9}"
    print(head)
    for case in args.cases:
        for nt in args.threads:
            cols = []
            meds = []
            for k in range(len(trees)):
                f = stat(v[0] for v in res[(case, nt, k)])
                b = stat(v[1] for v in res[(case, nt, k)])
                meds.append((f, b))
                cols.append(f"{f:8.1f} {b:8.1f}")
            line = f"{case:>10} {nt:>3} " + " ".join(cols)
            if len(trees) == 2:
                (f0, b0), (f1, b1) = meds
                line += f" {b1 / b0:9.3f} {(f1 + b1) / (f0 + b0):9.3f}"
            print(line)
    if args.trees:
        for k, tree in enumerate(trees):
            print(f"  tree {k}: {tree}")
        for p in procs:
            p.stdin.close()
            p.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        main()
