"""Inference latency of small batches (1-4 sequences): the unit-split path on and off.

    python bench/small_batch.py                       # lstm/gru/rnn, batch 1-4, 2 threads
    python bench/small_batch.py --cells lstm --batches 1 2 --rounds 9

One layer, 32 inputs, hidden 128, 100 steps, final state only (return_sequences=False),
float32 and precision="bfloat16" (where the CPU has AVX512_BF16). Variants, toggled in
ONE process and alternating round by round (so that a noisy phase of the shared machine
hits all alike):
  split    fastrnn as shipped: a batch of 1-3 is one chunk (fastrnn.layers.
           _ONE_CHUNK_INFERENCE) whose hidden units the core splits over the threads;
  chunks   batches of 2-3 cut into two chunks, one per thread (the rule before);
  nosplit  FASTRNN_NO_SPLIT=1 (read by the core at every call): one chunk runs on one
           thread (batch 1 before the bf16 split existed, but with the packed-weight
           cache).
Each cell of the table: the median over rounds of the p10 of --iters calls, in us.
"""
import argparse
import os
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import warnings

    import fastrnn
    import fastrnn.layers as FL
    from fastrnn import _core
    fastrnn.set_num_threads(args.threads)
    precisions = ["float32"] + (["bfloat16"] if _core.bf16_available() else [])
    variants = {"split": (FL._ONE_CHUNK_INFERENCE, False), "chunks": (0, False),
                "nosplit": (FL._ONE_CHUNK_INFERENCE, True)}
    print(f"# fastrnn from {os.path.dirname(fastrnn.__file__)}; {args.threads} threads; "
          f"precisions {precisions}; median of {args.rounds} rounds of the p10 of "
          f"{args.iters} calls, us")
    cols = ["cell", "batch"] + [f"{p[:4]} {v}" for p in precisions for v in variants]
    print(" | ".join(cols))
    cells = {"lstm": FL.LSTM, "gru": FL.GRU, "rnn": FL.RNN}
    for cell in args.cells:
        layer = cells[cell](32, 128, random_state=0)
        for B in args.batches:
            X = np.random.default_rng(B).standard_normal((B, 100, 32)).astype(np.float32)
            times = {(p, v): [] for p in precisions for v in variants}
            for _ in range(args.rounds):
                for p in precisions:
                    for v, (limit, nosplit) in variants.items():
                        FL._ONE_CHUNK_INFERENCE = limit
                        layer._plan_cache = None
                        if nosplit:
                            os.environ["FASTRNN_NO_SPLIT"] = "1"
                        ts = []
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            for i in range(args.iters + 30):
                                t0 = time.perf_counter()
                                layer.forward(X, return_sequences=False, precision=p)
                                if i >= 30:
                                    ts.append(time.perf_counter() - t0)
                        os.environ.pop("FASTRNN_NO_SPLIT", None)
                        times[(p, v)].append(np.percentile(ts, 10) * 1e6)
            FL._ONE_CHUNK_INFERENCE = variants["split"][0]
            row = [cell, str(B)] + [f"{np.median(times[k]):.1f}" for k in times]
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
