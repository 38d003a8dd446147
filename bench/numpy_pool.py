"""Does fastrnn's speed depend on what numpy did just before?

    python bench/numpy_pool.py [--rounds 15] [--threads 2]

numpy bundles its own OpenBLAS (separate from scipy's, which the core calls). After a
multithreaded numpy product its worker threads busy-wait for more work for a while
before they sleep, and while they spin they share the cores with fastrnn's OpenMP
threads. The core therefore stops idle OpenBLAS pools (numpy's and scipy's) before each
call that uses BLAS (`_core.stop_idle_blas_pools`, OpenBLAS' `blas_thread_shutdown_`);
the pools restart on the next threaded numpy/scipy call.

Timed, in one process, alternating in every round:
  * "quiet": the call after 0.3 s of sleep (any pool has gone to sleep);
  * "after np.dot": the call right after np.dot of two 1000x1000 float32 matrices;
each with the pool stopping on (fastrnn as shipped) and off (`_core._set_pool_control(False)`,
the behaviour before), and, for comparison, with numpy's thread count set to 1 right
after the product instead (threads already spinning keep spinning).
Calls: an LSTM layer forward+backward at the M size (batch 64, 100 steps, 32 inputs,
128 hidden), one epoch of LSTMClassifier.fit on 256 sequences of the S size, and (on
CPUs with AVX512_BF16) the M layer's bf16 inference forward, which calls no BLAS but
stops idle pools all the same.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np


def numpy_openblas():
    """ctypes handle of numpy's own OpenBLAS (found in /proc/self/maps), or None."""
    np.dot(np.ones((2, 2)), np.ones((2, 2)))
    root = os.path.dirname(os.path.dirname(np.__file__))
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    for path in sorted(paths):
        if path.startswith(os.path.join(root, "numpy")):
            return ctypes.CDLL(path)
    return None


def set_threads_fn(lib):
    for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads"):
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import fastrnn
    from fastrnn import _core
    from fastrnn.layers import LSTM
    fastrnn.set_num_threads(args.threads)
    lib = numpy_openblas()
    set_np_threads = set_threads_fn(lib) if lib is not None else None
    print(f"# numpy {np.__version__}, its OpenBLAS: {lib._name if lib else None}")
    print(f"# pools the core stops: {_core.OPENBLAS_POOLS}")
    print(f"# fastrnn threads {args.threads}, {args.rounds} rounds, medians in ms")

    A = np.random.default_rng(0).normal(size=(1000, 1000)).astype(np.float32)
    rng = np.random.default_rng(1)
    rnn = LSTM(32, 128, random_state=0)
    Xm = rng.normal(size=(64, 100, 32)).astype(np.float32)
    Xs = rng.normal(size=(256, 50, 16)).astype(np.float32)
    ys = rng.integers(0, 10, 256)

    def layer():
        _, (h, _) = rnn.forward(Xm, training=True, return_sequences=False)
        rnn.backward(None, (np.ones_like(h), None))

    def epoch():
        fastrnn.LSTMClassifier(hidden_size=64, max_epochs=1, random_state=0).fit(Xs, ys)

    def bf16():
        rnn.forward(Xm, precision="bfloat16")

    calls = {"layer M fwd+bwd": layer, "fit epoch S": epoch}
    if _core.bf16_available():   # no BLAS in the call, but the cores are shared
        calls["layer M bf16 inference"] = bf16
    variants = {   # name: (pool stopping on, numpy product first, numpy threads -> 1)
        "quiet, stopping on": (True, False, False),
        "after np.dot, stopping on": (True, True, False),
        "quiet, stopping off": (False, False, False),
        "after np.dot, stopping off": (False, True, False),
        "after np.dot, numpy threads 1": (False, True, True),
    }
    for f in calls.values():
        f()
    times = {(c, v): [] for c in calls for v in variants}
    for _ in range(args.rounds):
        for c, f in calls.items():
            for v, (stop, product, one) in variants.items():
                _core._set_pool_control(stop)
                if product:
                    np.dot(A, A)
                    if one and set_np_threads is not None:
                        set_np_threads(1)
                else:
                    time.sleep(0.3)
                t0 = time.perf_counter()
                f()
                times[(c, v)].append(time.perf_counter() - t0)
                if one and set_np_threads is not None:
                    set_np_threads(os.cpu_count())
    _core._set_pool_control(True)
    print("| call | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for c in calls:
        quiet = {True: np.median(times[(c, "quiet, stopping on")]),
                 False: np.median(times[(c, "quiet, stopping off")])}
        cells = []
        for v, (stop, product, one) in variants.items():
            t = np.median(times[(c, v)])
            cells.append(f"{t * 1e3:.2f}" + (f" ({t / quiet[stop]:.2f}x)" if product else ""))
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("(x): time after np.dot / the quiet time with the same setting")


if __name__ == "__main__":
    sys.exit(main())
