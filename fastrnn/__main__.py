"""python -m fastrnn demo [classify | tag | lm] | bench | info"""
import argparse
import sys
import time

import numpy as np


def demo(args):
    {"classify": _demo_classify, "tag": _demo_tag, "lm": _demo_lm}[args.task](args)
    others = [t for t in ("classify", "tag", "lm") if t != args.task]
    print(f"other demos: {', '.join('fastrnn demo ' + t for t in others)}")


def _fit_verbosely(model, X, y):
    """fit with a line per epoch (the demo shows its progress); returns seconds."""
    t0 = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - t0


def _demo_classify(args):
    from . import LSTMClassifier, get_num_threads
    from .datasets import make_majority

    print(f"fastrnn demo: which of 3 symbols fired most often over {args.steps} steps "
          f"(needs memory over the whole sequence)")
    X, y = make_majority(args.samples + 500, n_steps=args.steps, random_state=0)
    Xtr, ytr, Xte, yte = X[:args.samples], y[:args.samples], X[args.samples:], y[args.samples:]
    model = LSTMClassifier(hidden_size=32, max_epochs=args.epochs, learning_rate=1e-2,
                           random_state=0, verbose=0 if args.quiet else 1)
    print(f"training an LSTMClassifier(hidden_size=32) for up to {args.epochs} epochs on "
          f"{len(Xtr)} sequences, {get_num_threads()} threads ...", flush=True)
    fit_s = _fit_verbosely(model, Xtr, ytr)
    last = Xte[:, -30:, :3].sum(axis=1).argmax(axis=1)
    print(f"test accuracy       {model.score(Xte, yte):.3f}   (chance 0.333; counting only "
          f"the last 30 steps: {np.mean(last == yte):.3f})")
    print(f"fit time            {fit_s:.2f} s for {model.n_iter_} epochs")
    print(f"training speed      {model.n_iter_ * len(Xtr) / fit_s:,.0f} sequences/s")
    t0 = time.perf_counter()
    model.predict(Xte)
    pred_s = time.perf_counter() - t0
    print(f"inference speed     {len(Xte) / pred_s:,.0f} sequences/s")


def _demo_tag(args):
    from . import LSTMTagger, RNNTagger
    from .datasets import make_marked_recall

    print("fastrnn demo: tagging. At every step a symbol is shown; some steps are marked; "
          "the label at each step is the symbol at the mark before the latest one "
          "(many steps back, a distractor at every step in between).")
    X, y = make_marked_recall(args.samples + 300, n_steps=args.steps, random_state=0)
    Xtr, ytr, Xte, yte = X[:args.samples], y[:args.samples], X[args.samples:], y[args.samples:]
    for cls in (LSTMTagger, RNNTagger):
        model = cls(hidden_size=32, max_epochs=args.epochs, learning_rate=1e-2,
                    random_state=0, verbose=0 if args.quiet else 1)
        print(f"training a {cls.__name__}(hidden_size=32) on {len(Xtr)} sequences of "
              f"{args.steps} steps ...", flush=True)
        fit_s = _fit_verbosely(model, Xtr, ytr)
        print(f"{cls.__name__:10s}  per-step test accuracy {model.score(Xte, yte):.3f} "
              f"(chance 0.25), fit {fit_s:.2f} s for {model.n_iter_} epochs")


def _demo_lm(args):
    from . import LSTMTagger
    from .datasets import char_sequences, load_text

    text = load_text()[:args.samples * 100]
    X, y, alphabet = char_sequences(text, seq_len=100)
    print(f"fastrnn demo: a character-level language model on {len(text):,} characters of "
          f"Python's help() texts ({len(alphabet)} distinct characters)")
    model = LSTMTagger(embedding_dim=32, hidden_size=128, max_epochs=args.epochs,
                       learning_rate=1e-2, random_state=0, verbose=0 if args.quiet else 1)
    print("training an LSTMTagger(embedding_dim=32, hidden_size=128) to predict the next "
          "character at every step ...", flush=True)
    fit_s = _fit_verbosely(model, X, y)
    counts = np.unique(list(text), return_counts=True)[1]
    p = counts / counts.sum()
    print(f"fit time            {fit_s:.2f} s for {model.n_iter_} epochs")
    print(f"training loss       {model.loss_curve_[-1]:.3f} nats per character "
          f"(unigram entropy of the text: {float(-(p * np.log(p)).sum()):.3f})")
    prompt = "The return statement"
    ids = char_sequences(prompt + " ", seq_len=len(prompt), alphabet=alphabet)[0][0]
    out = model.generate(ids, 300, temperature=0.6, random_state=0)
    chars = alphabet + "?"
    print("sample (temperature 0.6):")
    print(prompt + "".join(chars[i] for i in out))


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
    p = sub.add_parser("demo", help="train on built-in data and report accuracy and speed: "
                                    "classify (default), tag, or lm (a language model)")
    p.add_argument("task", nargs="?", default="classify", choices=["classify", "tag", "lm"])
    p.add_argument("--samples", type=int, default=None,
                   help="training sequences (lm: hundreds of characters)")
    p.add_argument("--steps", type=int, default=None, help="steps per sequence")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no line per epoch")
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
    if args.command == "demo":
        defaults = {"classify": (1500, 150, 30), "tag": (1200, 100, 30), "lm": (1200, 100, 10)}
        for name, value in zip(("samples", "steps", "epochs"), defaults[args.task]):
            if getattr(args, name) is None:
                setattr(args, name, value)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
