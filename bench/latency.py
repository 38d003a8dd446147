"""Batch-1 latency: one recurrent layer over a short sequence, only the final state wanted.

    python bench/latency.py                          # B1 sizes, lstm/gru/rnn, 1 and 2 threads
    python bench/latency.py --cells lstm --threads 2 --rounds 9
    python bench/latency.py --sizes B1 --contenders fastrnn onnxruntime
    python bench/latency.py --sizes B1 --threads 2 --contenders fastrnn fastrnn-bf16 onnxruntime

Sizes (batch, steps, inputs, hidden): B1 = (1, 100, 32, 128), B1h64 and B1h256 the same
with hidden 64 / 256, B4 = (4, 100, 32, 128). One layer, float32, same weights in every
contender (drawn once, PyTorch's gate order; converted to ONNX's order for the ONNX node).

Contenders, each in its own spawned worker process (two OpenMP runtimes in one process
make each other's idle threads spin), interleaved round by round:

  fastrnn      fastrnn.layers.LSTM/GRU/RNN(...).forward(X, training=False,
               return_sequences=False): the whole public call, checks included;
  fastrnn-bf16 the same call with precision="bfloat16" (AVX512_BF16 products, float32
               gate math and state; on other CPUs it runs float32 and says so): the
               table then also gives each peer's time over it ("x bf16 vs ...");
  onnxruntime  an InferenceSession on ONE standard LSTM/GRU/RNN node, only Y_h as output
               (Y is not computed into a graph output); X is handed over time-major,
               transposed once outside the timing (ONNX Runtime refuses layout=1): the
               lightest graph ONNX Runtime can run for this (no Transpose nodes);
               intra_op_num_threads = threads, inter_op 1, sequential execution,
               all graph optimisations;
  onnx-export  the same weights through fastrnn.onnx.to_onnx(layer) (X, Y and h_n batch
               first, Transposes around the node), for reference;
  torch        nn.LSTM/GRU/RNN(batch_first=True) under torch.inference_mode(),
               torch.set_num_threads(threads).

Before timing, every worker's final state is compared with fastrnn's (max |diff|
printed). Per round each worker times --iters calls one by one (perf_counter) after a
warm-up and reports their median; the table gives the median over the rounds and the
ratios other / fastrnn (above 1: fastrnn is faster), and the best round of each (on a
shared machine, the round the fewest preemptions hit).
"""
import argparse
import os
import sys
import time

import numpy as np

SIZES = {"B1": (1, 100, 32, 128), "B1h64": (1, 100, 32, 64), "B1h256": (1, 100, 32, 256),
         "B4": (4, 100, 32, 128)}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}


def make_problem(cell, size, seed=0):
    """Weights (PyTorch names and order) and the input X (B, T, I), float32."""
    B, T, I, H = SIZES[size]
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    b = 1 / np.sqrt(H)
    p = {"weight_ih_l0": rng.uniform(-b, b, (G * H, I)), "weight_hh_l0": rng.uniform(-b, b, (G * H, H)),
         "bias_ih_l0": rng.uniform(-b, b, G * H), "bias_hh_l0": rng.uniform(-b, b, G * H)}
    p = {k: v.astype(np.float32) for k, v in p.items()}
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    return p, X


# ------------------------------------------------------------------ contenders

def build_fastrnn(cell, size, threads, precision="float32"):
    import warnings
    import fastrnn
    from fastrnn.layers import GRU, LSTM, RNN
    fastrnn.set_num_threads(threads)
    p, X = make_problem(cell, size)
    _, _, I, H = SIZES[size]
    layer = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](I, H)
    layer.params.update(p)
    with warnings.catch_warnings():    # bf16 without the CPU feature: float32, once
        warnings.simplefilter("ignore")
        layer.forward(X, training=False, return_sequences=False, precision=precision)

    def run():
        _, state = layer.forward(X, training=False, return_sequences=False,
                                 precision=precision)
        return state[0] if cell == "lstm" else state
    return run, lambda: run()[0]


def build_fastrnn_bf16(cell, size, threads):
    return build_fastrnn(cell, size, threads, precision="bfloat16")


def _onnx_node_model(cell, size):
    import onnx
    from onnx import TensorProto, helper
    p, _ = make_problem(cell, size)
    _, _, I, H = SIZES[size]
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in ONNX_GATE_ORDER[cell]])
    W = p["weight_ih_l0"][order][None]
    R = p["weight_hh_l0"][order][None]
    Bb = np.concatenate([p["bias_ih_l0"][order], p["bias_hh_l0"][order]])[None]
    attrs = dict(hidden_size=H, layout=0)
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell == "rnn":
        attrs["activations"] = ["Tanh"]
    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
    node = helper.make_node(op, ["X", "W", "R", "B"], ["", "Y_h"], **attrs)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel())
             for n, a in (("W", W), ("R", R), ("B", Bb))]
    g = helper.make_graph([node], "rnn", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, ["steps", "batch", I])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "batch", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ort_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def build_onnxruntime(cell, size, threads):
    sess = _ort_session(_onnx_node_model(cell, size), threads)
    _, X = make_problem(cell, size)
    feed = {"X": np.ascontiguousarray(X.transpose(1, 0, 2))}   # time-major, given
    run = lambda: sess.run(["Y_h"], feed)          # noqa: E731
    return run, lambda: run()[0][0]


def build_onnx_export(cell, size, threads):
    from fastrnn.layers import GRU, LSTM, RNN
    from fastrnn.onnx import to_onnx
    p, X = make_problem(cell, size)
    _, _, I, H = SIZES[size]
    layer = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](I, H)
    layer.params.update(p)
    sess = _ort_session(to_onnx(layer), threads)
    feed = {"X": X}
    run = lambda: sess.run(["h_n"], feed)          # noqa: E731
    return run, lambda: run()[0][0]


def build_torch(cell, size, threads):
    import torch
    torch.set_num_threads(threads)
    p, X = make_problem(cell, size)
    _, _, I, H = SIZES[size]
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        I, H, batch_first=True)
    mod.load_state_dict({k: torch.from_numpy(v) for k, v in p.items()})
    mod.eval()
    xt = torch.from_numpy(X)

    def run():
        with torch.inference_mode():
            _, state = mod(xt)
        return state[0] if cell == "lstm" else state
    return run, lambda: run()[0].numpy()


BUILDERS = {"fastrnn": build_fastrnn, "fastrnn-bf16": build_fastrnn_bf16,
            "onnxruntime": build_onnxruntime, "onnx-export": build_onnx_export,
            "torch": build_torch}
MODULES = {"fastrnn": "fastrnn", "fastrnn-bf16": "fastrnn", "onnxruntime": "onnxruntime",
           "onnx-export": "onnxruntime", "torch": "torch"}


def _worker(name, threads, conn):
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        kind, cell, size, iters = msg
        key = (cell, size)
        if key not in built:
            built[key] = BUILDERS[name](cell, size, threads)
            for _ in range(20):
                built[key][0]()
        run, result = built[key]
        if kind == "result":
            conn.send(np.asarray(result(), dtype=np.float32))
            continue
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        conn.send(float(np.median(times)))


def available(name):
    import importlib.util
    return importlib.util.find_spec(MODULES[name]) is not None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["B1", "B1h64", "B1h256", "B4"],
                    choices=list(SIZES))
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"], choices=list(GATES))
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.25,
                    help="seconds between contenders (idle OpenMP / ORT threads spin a while)")
    ap.add_argument("--contenders", nargs="+", default=["fastrnn", "onnxruntime", "torch"],
                    choices=list(BUILDERS))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fastrnn._quickbench import _Worker
    names = [n for n in args.contenders if available(n)]
    for n in args.contenders:
        if n not in names:
            print(f"# {n} not installed: skipped")
    if names[0] != "fastrnn":
        raise SystemExit("fastrnn must be the first contender (the ratios are against it)")
    print(f"# batch-1 latency, one layer, final state only; median of {args.rounds} "
          f"rounds of the median of {args.iters} calls")
    bf16 = "fastrnn-bf16" in names
    peers = [n for n in names[1:] if n != "fastrnn-bf16"]
    if bf16:
        import fastrnn
        print(f"# fastrnn-bf16: {fastrnn.layers.bf16_status()[1]}")
    cols = ["thr", "size", "cell", "fastrnn us"]
    for n in names[1:]:
        cols += [f"{n} us", f"x vs {n}"]
    if bf16:
        cols += [f"x bf16 vs {n}" for n in peers]
    cols += ["best rounds: fastrnn / " + " / ".join(names[1:]),
             "max|diff| vs fastrnn: " + " / ".join(names[1:])]
    print(" | ".join(cols), flush=True)
    for threads in args.threads:
        workers = {n: _Worker(_worker, (n, threads), threads, n) for n in names}
        try:
            for size in args.sizes:
                for cell in args.cells:
                    ref = workers["fastrnn"].ask(("result", cell, size, 0))
                    diffs = [float(np.abs(workers[n].ask(("result", cell, size, 0)) - ref).max())
                             for n in names[1:]]
                    samples = {n: [] for n in names}
                    for _ in range(args.rounds):
                        for n in names:
                            samples[n].append(workers[n].ask(("time", cell, size, args.iters)))
                            time.sleep(args.pause)
                    med = {n: float(np.median(samples[n])) for n in names}
                    row = [str(threads), size, cell, f"{med['fastrnn'] * 1e6:.1f}"]
                    for n in names[1:]:
                        row += [f"{med[n] * 1e6:.1f}", f"{med[n] / med['fastrnn']:.2f}"]
                    if bf16:
                        row += [f"{med[n] / med['fastrnn-bf16']:.2f}" for n in peers]
                    row += [" / ".join(f"{min(samples[n]) * 1e6:.1f}" for n in names)]
                    row += [" / ".join(f"{d:.1e}" for d in diffs)]
                    print(" | ".join(row), flush=True)
        finally:
            for w in workers.values():
                w.close()


if __name__ == "__main__":
    main()
