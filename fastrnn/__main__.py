"""python -m fastrnn demo | info"""
import argparse
import sys
import time

import numpy as np


def demo(args):
    from . import LSTMClassifier, get_num_threads
    from .datasets import make_majority

    print(f"fastrnn demo: which of 3 symbols fired most often over {args.steps} steps "
          f"(needs memory over the whole sequence); {get_num_threads()} threads")
    X, y = make_majority(args.samples + 500, n_steps=args.steps, random_state=0)
    Xtr, ytr, Xte, yte = X[:args.samples], y[:args.samples], X[args.samples:], y[args.samples:]
    model = LSTMClassifier(hidden_size=32, max_epochs=args.epochs, learning_rate=1e-2,
                           random_state=0, verbose=1)
    t0 = time.perf_counter()
    model.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    last = Xte[:, -30:, :3].sum(axis=1).argmax(axis=1)
    print(f"test accuracy       {model.score(Xte, yte):.3f}   (chance 0.333; counting only "
          f"the last 30 steps: {np.mean(last == yte):.3f})")
    print(f"fit time            {fit_s:.2f} s for {model.n_iter_} epochs")
    print(f"training speed      {model.n_iter_ * len(Xtr) / fit_s:,.0f} sequences/s")
    t0 = time.perf_counter()
    model.predict(Xte)
    pred_s = time.perf_counter() - t0
    print(f"inference speed     {len(Xte) / pred_s:,.0f} sequences/s")


def info(args):
    from . import _core, __version__, get_num_threads
    import scipy
    print(f"fastrnn {__version__}")
    print(f"OpenMP: {'on' if _core.openmp_enabled() else 'off'}, threads {get_num_threads()}")
    print(f"BLAS: scipy {scipy.__version__} cython_blas; thread control "
          f"{_core.BLAS_THREADS_SYMBOL or 'unavailable'}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train an LSTMClassifier on built-in data")
    p.add_argument("--samples", type=int, default=1500)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--epochs", type=int, default=30)
    p.set_defaults(func=demo)
    sub.add_parser("info", help="version, OpenMP, threads, BLAS").set_defaults(func=info)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
