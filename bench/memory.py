"""Peak memory of one training step (and of inference), fastrnn against PyTorch.

    python bench/memory.py                   # L size, all cells, training and inference
    python bench/memory.py --sizes M L --steps 100 400

Each measurement runs in a fresh process: it builds the model and data, records its
resident set size (RSS), runs two calls (the second reuses what the first allocated),
and reports the peak RSS (ru_maxrss) and the growth over the RSS before the first call.
Sizes and the training step (forward, linear head on the last hidden state, softmax
cross-entropy, backward, Adam) are those of bench/layers.py. With --steps the inference
of the given size is also measured at other sequence lengths: fastrnn's inference keeps
only the running state, so its memory beyond the output should not grow with the steps.
"""
import argparse
import multiprocessing as mp
import os
import resource
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(contender, cell, size, mode, steps, threads, queue):
    from fastrnn import _quickbench as qb
    if steps:
        B, _, I, H, L = qb.SIZES[size]
        qb.SIZES[size] = (B, steps, I, H, L)
    if contender == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        fn = qb._torch_steps(cell, size)[mode]
    else:
        import fastrnn
        fastrnn.set_num_threads(threads)
        fn = qb._fastrnn_steps(cell, size)[mode]
    before = _rss_bytes()
    fn()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put((before, peak))


def measure(contender, cell, size, mode, steps=None, threads=2):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(contender, cell, size, mode, steps, threads, q))
    p.start()
    before, peak = q.get(timeout=600)
    p.join()
    return before, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["L"])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    ap.add_argument("--modes", nargs="+", default=["train", "inference"])
    ap.add_argument("--steps", nargs="*", type=int, default=[],
                    help="also run inference at these sequence lengths")
    ap.add_argument("--contenders", nargs="+", default=["fastrnn", "torch"])
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        args.contenders = [c for c in args.contenders if c != "torch"]
        print("# torch not installed: skipped")
    mb = 1 << 20
    print("size | steps | cell | mode | " + " | ".join(
        f"{c} peak MB | {c} growth MB" for c in args.contenders))
    runs = [(s, None, c, m) for s in args.sizes for c in args.cells for m in args.modes]
    runs += [(s, n, c, "inference") for s in args.sizes for n in args.steps for c in args.cells]
    for size, steps, cell, mode in runs:
        row = [size, str(steps or "default"), cell, mode]
        for c in args.contenders:
            before, peak = measure(c, cell, size, mode, steps)
            row += [f"{peak / mb:.0f}", f"{(peak - before) / mb:.0f}"]
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
