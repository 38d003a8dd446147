"""Streaming latency: one LSTM step (hidden 128, input 32, batch 1) called from Python.

    python bench/stream.py                   # 5 rounds of 100k steps per contender
    python bench/stream.py --rounds 3 --steps 20000

Contenders, each in its own worker process (two OpenMP runtimes in one process make
each other's idle threads spin), the rounds interleaved:

  fastrnn        fastrnn.layers.LSTM(32, 128).stream(1).step(x): the returned array is
                 the stream's buffer (overwritten by the next step);
  fastrnn-copy   the same with step(x, copy=True) (a new array per step);
  fastrnn-proba  LSTMClassifier(hidden_size=128) stream, 10 classes: standardisation,
                 the LSTM step, the head (C) and predict_proba's float64 softmax (numpy);
  torch          nn.LSTM(32, 128) under inference_mode, called per step with the state
                 passed explicitly: out, (h, c) = lstm(x, (h, c)); torch.set_num_threads(1)
                 (two threads are slower for one row); oneDNN (mkldnn) on, PyTorch's
                 default, which costs most of the ~100 us a call takes here;
  torch-nomkldnn the same with torch.backends.mkldnn.enabled = False;
  torch-cell     nn.LSTMCell(32, 128) per step (state passed explicitly), the lightest
                 PyTorch module for one step;
  onnxruntime    an ONNX LSTM node (built with onnx.helper from the same weights) with
                 initial_h / initial_c as inputs and Y_h / Y_c as outputs, one
                 InferenceSession.run per step feeding the previous state back
                 (intra_op_num_threads=1), when onnxruntime and onnx are installed.

Each worker times --steps steps with time.perf_counter_ns after a warm-up and reports
ns per step; the table gives the minimum and the median over the rounds. The machine
may be shared: the minimum is the better estimate of the cost, the median of the noise.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

I, H, CLASSES = 32, 128, 10


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    b = 1 / np.sqrt(H)
    return {k: rng.uniform(-b, b, s).astype(np.float32) for k, s in
            (("weight_ih_l0", (4 * H, I)), ("weight_hh_l0", (4 * H, H)),
             ("bias_ih_l0", (4 * H,)), ("bias_hh_l0", (4 * H,)))}


def _time(step, n):
    for _ in range(min(n, 2000)):
        step()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        step()
    return (time.perf_counter_ns() - t0) / n


def worker_fastrnn(n, copy=False):
    from fastrnn.layers import LSTM
    layer = LSTM(I, H)
    layer.params.update(_weights())
    s = layer.stream(1)
    x = np.random.default_rng(1).standard_normal((1, I)).astype(np.float32)
    step = s.step
    if copy:
        return _time(lambda: step(x, True), n)
    return _time(lambda: step(x), n)


def worker_fastrnn_proba(n):
    from fastrnn import LSTMClassifier
    from fastrnn.streaming import make_stream
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5, I)).astype(np.float32)
    y = np.arange(64) % CLASSES
    est = LSTMClassifier(hidden_size=H, max_epochs=1, random_state=0).fit(X, y)
    s = make_stream(est)
    x = X[0, :1].copy()
    return _time(lambda: s.step(x), n)


def worker_torch(n, mkldnn=True, cell=False):
    import torch
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = mkldnn
    if cell:
        return _worker_torch_cell(n)
    torch.set_flush_denormal(True)
    lstm = torch.nn.LSTM(I, H, batch_first=True)
    with torch.no_grad():
        for k, v in _weights().items():
            getattr(lstm, k).copy_(torch.from_numpy(v))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 1, I)).astype(np.float32))
    state = [(torch.zeros(1, 1, H), torch.zeros(1, 1, H))]

    def step():
        out, state[0] = lstm(x, state[0])
        return out

    with torch.inference_mode():
        return _time(step, n)


def _worker_torch_cell(n):
    import torch
    torch.set_flush_denormal(True)
    cell = torch.nn.LSTMCell(I, H)
    w = _weights()
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                     ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
            getattr(cell, a).copy_(torch.from_numpy(w[b]))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, I)).astype(np.float32))
    state = [(torch.zeros(1, H), torch.zeros(1, H))]

    def step():
        state[0] = cell(x, state[0])
        return state[0][0]

    with torch.inference_mode():
        return _time(step, n)


def _onnx_lstm_model():
    """One ONNX LSTM node over our weights (ONNX gate order i, o, f, c; biases [Wb, Rb])
    with the state as inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = _weights()

    def reorder(a):            # PyTorch i, f, g, o -> ONNX i, o, f, c
        i, f, g, o = np.split(a, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    W = reorder(w["weight_ih_l0"])[None]
    R = reorder(w["weight_hh_l0"])[None]
    B = np.concatenate([reorder(w["bias_ih_l0"]), reorder(w["bias_hh_l0"])])[None]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"],
                            ["Y", "Y_h", "Y_c"], hidden_size=H)
    graph = helper.make_graph(
        [node], "lstm_step",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, H]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, H])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1, 1, H]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, H]),
         helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, 1, H])],
        [numpy_helper.from_array(W.astype(np.float32), "W"),
         numpy_helper.from_array(R.astype(np.float32), "R"),
         numpy_helper.from_array(B.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def worker_onnxruntime(n):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(_onnx_lstm_model(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 1, I)).astype(np.float32)
    feed = {"X": x, "h0": np.zeros((1, 1, H), np.float32), "c0": np.zeros((1, 1, H), np.float32)}
    names = ["Y", "Y_h", "Y_c"]

    def step():
        y, feed["h0"], feed["c0"] = sess.run(names, feed)
        return y

    return _time(step, n)


def check_agreement():
    """The contenders compute the same LSTM: 50 steps of each agree to ~1e-5."""
    from fastrnn.layers import LSTM
    layer = LSTM(I, H)
    layer.params.update(_weights())
    X = np.random.default_rng(2).standard_normal((1, 50, I)).astype(np.float32)
    s = layer.stream(1)
    ours = s.step_many(X)[0]
    notes = []
    try:
        import torch
        lstm = torch.nn.LSTM(I, H, batch_first=True)
        with torch.no_grad():
            for k, v in _weights().items():
                getattr(lstm, k).copy_(torch.from_numpy(v))
            ref = lstm(torch.from_numpy(X))[0][0].numpy()
        notes.append(f"torch max |diff| {np.abs(ours - ref).max():.1e}")
    except ImportError:
        pass
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(_onnx_lstm_model(), providers=["CPUExecutionProvider"])
        h = c = np.zeros((1, 1, H), np.float32)
        ys = []
        for t in range(50):
            y, h, c = sess.run(None, {"X": X[:, t:t + 1].transpose(1, 0, 2).copy(),
                                      "h0": h, "c0": c})
            ys.append(y[0, 0, 0])
        notes.append(f"onnxruntime max |diff| {np.abs(ours - np.stack(ys)).max():.1e}")
    except ImportError:
        pass
    return notes


WORKERS = {
    "fastrnn": lambda n: worker_fastrnn(n),
    "fastrnn-copy": lambda n: worker_fastrnn(n, copy=True),
    "fastrnn-proba": worker_fastrnn_proba,
    "torch": worker_torch,
    "torch-nomkldnn": lambda n: worker_torch(n, mkldnn=False),
    "torch-cell": lambda n: worker_torch(n, cell=True),
    "onnxruntime": worker_onnxruntime,
}


def _available(name):
    mods = {"torch": ["torch"], "torch-nomkldnn": ["torch"], "torch-cell": ["torch"],
            "onnxruntime": ["onnxruntime", "onnx"]}.get(name, [])
    for m in mods:
        try:
            __import__(m)
        except ImportError:
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(WORKERS[args.worker](args.steps))
        return
    names = [n for n in WORKERS if _available(n)]
    print(f"one LSTM step, hidden {H}, input {I}, batch 1; {args.rounds} rounds x "
          f"{args.steps} steps; contenders: {', '.join(names)}")
    for note in check_agreement():
        print("  agreement:", note)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    times = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            out = subprocess.run([sys.executable, __file__, "--worker", n, "--steps",
                                  str(args.steps)], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"  {n} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            times[n].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"{'contender':<15} {'min us/step':>12} {'median us/step':>15}")
    for n in names:
        if times[n]:
            t = np.array(times[n]) / 1000
            print(f"{n:<15} {t.min():>12.2f} {np.median(t):>15.2f}")


if __name__ == "__main__":
    main()
