"""python -m fastrnn demo | bench | info"""
import argparse
import sys
import time

import numpy as np


def demo(args):
    from . import LSTMClassifier, get_num_threads
    from .datasets import make_majority

    print(f"fastrnn demo: which of 3 symbols fired most often over {args.steps} steps "
          f"(needs memory over the whole sequence)")
    X, y = make_majority(args.samples + 500, n_steps=args.steps, random_state=0)
    Xtr, ytr, Xte, yte = X[:args.samples], y[:args.samples], X[args.samples:], y[args.samples:]
    model = LSTMClassifier(hidden_size=32, max_epochs=args.epochs, learning_rate=1e-2,
                           random_state=0, verbose=int(args.verbose))
    print(f"training an LSTMClassifier(hidden_size=32) for {args.epochs} epochs on "
          f"{len(Xtr)} sequences, {get_num_threads()} threads ...", flush=True)
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


def bench(args):
    from ._quickbench import run
    run(sizes=args.sizes, cells=args.cells, modes=args.modes, threads=args.threads,
        rounds=args.rounds, compare=not args.no_torch)


def info(args):
    from ._config import show_config
    show_config()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn",
                                     description="fastrnn: LSTM, GRU and RNN for the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train an LSTMClassifier on built-in data, report "
                                    "accuracy and speed")
    p.add_argument("--samples", type=int, default=1500)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--verbose", action="store_true", help="a line per epoch")
    p.set_defaults(func=demo)
    p = sub.add_parser("bench", help="quick layer benchmark against PyTorch if installed "
                                     "(under a minute)")
    p.add_argument("--sizes", nargs="+", default=["M"], choices=["S", "M", "L"])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"],
                   choices=["lstm", "gru", "rnn"])
    p.add_argument("--modes", nargs="+", default=["inference", "train"],
                   choices=["inference", "train"])
    p.add_argument("--threads", type=int, default=None,
                   help="default: fastrnn.get_num_threads()")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="time fastrnn alone")
    p.set_defaults(func=bench)
    sub.add_parser("info", help="version, BLAS, OpenMP, threads, compiler flags "
                                "(fastrnn.show_config())").set_defaults(func=info)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
