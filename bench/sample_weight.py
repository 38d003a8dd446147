"""What treating integer sample weights as repetitions costs fit: the canonical order
of the training samples (a 64-bit hash of each sequence's contents, then a sort) and the
input statistics computed over the virtual copies in fixed chunks, against the single
weighted np.average fit used before, and against one training epoch (defaults).

    PYTHONPATH=. python bench/sample_weight.py --rounds 5

Rounds alternate the contenders; the table gives medians in milliseconds."""
import argparse
import time

import numpy as np

from fastrnn import LSTMClassifier
from fastrnn.estimators._inputs import canonical_order, read_X, row_moments, virtual_index


def old_stats(seqs, sw):
    valid = np.arange(seqs.steps) < seqs.lengths[:, None]
    vals = seqs.values[valid].astype(np.float64)
    w = np.repeat(sw.astype(np.float64), seqs.lengths)
    mean = np.average(vals, axis=0, weights=w)
    return mean, np.sqrt(np.average((vals - mean) ** 2, axis=0, weights=w))


def new_stats(seqs, index):
    def steps_of(idx):
        lb = seqs.lengths[idx]
        v = seqs.values[idx]
        return v[np.arange(seqs.steps) < lb[:, None]].astype(np.float64), lb
    return row_moments(steps_of, index)


def timed(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for n, T, F in ((1000, 50, 8), (10000, 50, 8), (10000, 200, 32)):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, T, F)).astype(np.float32)
        y = rng.integers(0, 2, size=n)
        seqs = read_X(X, np.float32)
        ones = np.ones(n)
        w3 = rng.integers(1, 4, size=n).astype(np.float64)
        idx1, idx3 = virtual_index(ones), virtual_index(w3)
        est = LSTMClassifier(max_epochs=1, random_state=0)
        res = {k: [] for k in ("order", "old stats", "new stats w=1", "new stats w<=3",
                               "epoch")}
        for _ in range(args.rounds):
            res["order"].append(timed(lambda: canonical_order(seqs, y, False)))
            res["old stats"].append(timed(lambda: old_stats(seqs, ones)))
            res["new stats w=1"].append(timed(lambda: new_stats(seqs, idx1)))
            res["new stats w<=3"].append(timed(lambda: new_stats(seqs, idx3)))
            if T * F <= 400:
                res["epoch"].append(timed(lambda: est.fit(X, y)))
        rows.append(((n, T, F), {k: np.median(v) if v else np.nan for k, v in res.items()}))
    cols = list(rows[0][1])
    print(f"| n, T, F | {' | '.join(cols)} |")
    print("|---|" + "---:|" * len(cols))
    for shape, r in rows:
        print(f"| {shape} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    print("(ms, medians; 'epoch' = LSTMClassifier(max_epochs=1).fit, defaults, "
          "for reference; the sum of the weights w<=3 is about 2n)")


if __name__ == "__main__":
    main()
