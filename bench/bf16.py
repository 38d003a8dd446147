"""bfloat16 inference: fastrnn's bf16 mode against its own float32, PyTorch bf16 autocast
and OpenVINO bf16.

    python bench/bf16.py                          # M and L, lstm/gru/rnn, 2 threads
    python bench/bf16.py --sizes M --cells lstm --rounds 9

Contenders (each in its own worker process: two OpenMP runtimes in one process make
each other's idle threads spin), all on the SAME weights and input:
  fastrnn       layer.forward(X) in float32 (fastrnn's own float32 inference)
  fastrnn-bf16  layer.forward(X, precision="bfloat16")
  torch-bf16    nn.LSTM/GRU/RNN forward under torch.autocast("cpu", dtype=bfloat16),
                torch.inference_mode(), torch.set_num_threads(threads)
  openvino-bf16 the torch module through openvino.convert_model, compiled for CPU with
                {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
The driver interleaves them round by round (each round: every contender times a few
calls of the same configuration and keeps its fastest, the call least disturbed by the
other jobs of a shared machine), so noise hits all alike; the table shows the medians
over rounds, and a second table each contender's best round. "err" is the max abs difference of the full output
sequence (every step of the last layer) from fastrnn's float32 output on the same
weights (PyTorch float32 agrees with it to ~1e-6).
"""
import argparse
import os
import sys
import time

import numpy as np

from fastrnn._quickbench import SIZES, _Worker  # noqa: E402

NAMES = ("fastrnn", "fastrnn-bf16", "torch-bf16", "openvino-bf16")


def make_problem(cell, size, seed=0):
    """Weights (PyTorch names, its default init) and X, float32, from one seed."""
    B, T, I, H, L = SIZES[size]
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(H)
    params = {}
    for k in range(L):
        Ik = I if k == 0 else H
        params[f"weight_ih_l{k}"] = rng.uniform(-bound, bound, (G * H, Ik)).astype(np.float32)
        params[f"weight_hh_l{k}"] = rng.uniform(-bound, bound, (G * H, H)).astype(np.float32)
        params[f"bias_ih_l{k}"] = rng.uniform(-bound, bound, G * H).astype(np.float32)
        params[f"bias_hh_l{k}"] = rng.uniform(-bound, bound, G * H).astype(np.float32)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    return params, X


def _fastrnn_fn(cell, size, params, X, precision):
    from fastrnn.layers import GRU, LSTM, RNN
    B, T, I, H, L = SIZES[size]
    layer = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](I, H, num_layers=L, random_state=0)
    for k, v in params.items():
        layer.params[k][...] = v
    return lambda: layer.forward(X, precision=precision)[0]


def _torch_module(cell, size, params):
    import torch
    B, T, I, H, L = SIZES[size]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    m = cls(I, H, num_layers=L, batch_first=True).eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    return m


def _torch_fn(cell, size, params, X):
    import torch
    m = _torch_module(cell, size, params)
    Xt = torch.from_numpy(X)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m(Xt)[0].float().numpy()
    return run


def _openvino_fn(cell, size, params, X, threads):
    import openvino as ov
    import torch
    m = _torch_module(cell, size, params)
    model = ov.convert_model(m, example_input=torch.from_numpy(X))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                      "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def run():
        return request.infer([X])[0]
    return run


def _worker(name, threads, clock, conn):
    if name.startswith("fastrnn"):
        import fastrnn
        fastrnn.set_num_threads(threads)
    else:
        import torch
        torch.set_num_threads(threads)
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        kind, cell, size, arg = msg
        if (cell, size) not in built:
            params, X = make_problem(cell, size)
            if name == "fastrnn":
                fn = _fastrnn_fn(cell, size, params, X, "float32")
            elif name == "fastrnn-bf16":
                fn = _fastrnn_fn(cell, size, params, X, "bfloat16")
            elif name == "torch-bf16":
                fn = _torch_fn(cell, size, params, X)
            else:
                fn = _openvino_fn(cell, size, params, X, threads)
            for _ in range(2):           # warm-up: allocation, first touch, compilation
                fn()
            built[cell, size] = fn
        fn = built[cell, size]
        if kind == "output":
            conn.send(np.asarray(fn(), dtype=np.float32))
            continue
        now = time.process_time if clock == "cpu" else time.perf_counter
        times = []
        for _ in range(arg):
            t0 = now()
            fn()
            times.append(now() - t0)
        conn.send(times)


def available(name):
    import importlib.util
    mod = {"fastrnn": "fastrnn", "fastrnn-bf16": "fastrnn", "torch-bf16": "torch",
           "openvino-bf16": "openvino"}[name]
    return importlib.util.find_spec(mod) is not None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["M", "L"], choices=sorted(SIZES))
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"],
                    choices=["lstm", "gru", "rnn"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--contenders", nargs="+", default=list(NAMES), choices=NAMES)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the worker process's CPU time (time.process_time), which "
                         "a busy machine's other jobs do not inflate; a fair measure with "
                         "--threads 1 only (with more, idle threads' spinning counts)")
    args = ap.parse_args(argv)

    import fastrnn
    from fastrnn.layers import bf16_status
    names = [n for n in args.contenders if available(n)]
    for n in args.contenders:
        if n not in names:
            print(f"# {n}: not installed, skipped")
    on, why = bf16_status()
    print(f"# fastrnn {fastrnn.__version__}: bf16 {'on' if on else 'OFF'} ({why}); "
          f"{args.threads} thread(s); median of {args.rounds} interleaved rounds "
          f"(shared machine); {'CPU' if args.clock == 'cpu' else 'wall-clock'} time")
    print(f"# fastrnn imported from {os.path.dirname(fastrnn.__file__)} (the installed "
          f"package unless PYTHONPATH names a tree built in place)")
    for size in args.sizes:
        B, T, I, H, L = SIZES[size]
        print(f"# size {size}: batch {B}, {T} steps, {I} inputs, hidden {H}, {L} layer(s)")
    if "torch-bf16" in names or "openvino-bf16" in names:
        import importlib.metadata as md
        vers = []
        for pkg in ("torch", "openvino"):
            try:
                vers.append(f"{pkg} {md.version(pkg)}")
            except md.PackageNotFoundError:
                pass
        print("# " + ", ".join(vers))
    header = ["size", "cell"] + [f"{n} ms" for n in names]
    if "fastrnn-bf16" in names:
        header += [f"{n}/fastrnn-bf16" for n in names if n != "fastrnn-bf16"]
        header += [f"err {n}" for n in names if n != "fastrnn"]
    print(" | ".join(header), flush=True)
    workers = {n: _Worker(_worker, (n, args.threads, args.clock), args.threads, n)
               for n in names}
    iters = {"S": 10, "M": 6, "L": 1, "B1": 20}
    rows = []
    try:
        for size in args.sizes:
            for cell in args.cells:
                outs = {n: workers[n].ask(("output", cell, size, None)) for n in names}
                samples = {n: [] for n in names}
                for _ in range(args.rounds):
                    for n in names:
                        samples[n].append(float(np.min(
                            workers[n].ask(("time", cell, size, iters[size])))))
                        time.sleep(0.05)   # let the other's idle threads go to sleep
                med = {n: float(np.median(samples[n])) for n in names}
                row = dict(size=size, cell=cell, threads=args.threads, **med,
                           best={n: float(np.min(samples[n])) for n in names})
                cols = [size, cell] + [f"{med[n] * 1e3:.2f}" for n in names]
                if "fastrnn-bf16" in names:
                    ours = med["fastrnn-bf16"]
                    cols += [f"{med[n] / ours:.2f}x" for n in names if n != "fastrnn-bf16"]
                    ref = outs.get("fastrnn")
                    for n in names:
                        if n == "fastrnn":
                            continue
                        err = float(np.abs(outs[n] - ref).max()) if ref is not None else np.nan
                        row["err " + n] = err
                        cols.append(f"{err:.2e}")
                rows.append(row)
                print(" | ".join(cols), flush=True)
    finally:
        for w in workers.values():
            w.close()
    if "fastrnn-bf16" in names and rows:
        # the best round of each contender: on a busy machine the closest to its time alone
        print("# best round of each (ms), and the others' best over fastrnn-bf16's best")
        print(" | ".join(["size", "cell"] + [f"{n} best" for n in names]
                         + [f"{n}/fastrnn-bf16" for n in names if n != "fastrnn-bf16"]))
        for row in rows:
            best = row["best"]
            print(" | ".join([row["size"], row["cell"]]
                             + [f"{best[n] * 1e3:.2f}" for n in names]
                             + [f"{best[n] / best['fastrnn-bf16']:.2f}x" for n in names
                                if n != "fastrnn-bf16"]), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
