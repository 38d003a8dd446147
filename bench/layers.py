"""Layer benchmark: fastrnn against PyTorch, Keras, ONNX Runtime and OpenVINO, float32 and
bfloat16, whichever of them are installed.

    python bench/layers.py                 # all sizes, cells, modes, 1 and 2 threads
    python bench/layers.py --quick         # a short run (M size, 2 threads)
    python bench/layers.py --sizes M --cells lstm --threads 2 --rounds 7
    python bench/layers.py --modes inference --contenders torch onnxruntime openvino

Each contender runs in its own worker process (two OpenMP runtimes in one process make
each other's idle threads spin), and the driver interleaves them round by round: in every
round each contender times a few iterations of the same configuration, so noise on this
shared machine hits all of them alike. Reported: medians over rounds; "x vs <name>" is
that contender's time / fastrnn float32's time.

Contenders (each skipped with a note when its package is missing; the bf16 ones also
when the CPU lacks avx512_bf16):
  fastrnn        float32, the reference
  fastrnn-bf16   forward(X, lengths, training=False, precision="bfloat16") (skipped when
                 the installed fastrnn's forward has no `precision` argument)
  torch          PyTorch float32;  torch-bf16: under torch.autocast("cpu", torch.bfloat16)
  onnxruntime    fastrnn.onnx.to_onnx's graph (standard LSTM/GRU/RNN nodes), CPU provider
  openvino       the same ONNX graph through openvino.convert_model, compiled for "CPU"
                 with INFERENCE_PRECISION_HINT f32;  openvino-bf16: with bf16
  keras          TensorFlow's Keras
Inference: all of them, on the same weights (fastrnn's, copied in PyTorch's layout) and
the same full-length input from zero states; one call computes the top layer's full
output sequence and every layer's final hidden state (what fastrnn's forward returns).
The max abs difference of each contender's outputs (Y and h_n) from fastrnn float32's is
printed after each thread count. Training: fastrnn, torch and keras only.

Modes: "inference" (forward only, no gradient state) and "train" (forward, a linear head
on the last hidden state to 10 classes, softmax cross-entropy, backward, Adam update).
GFLOP/s counts GEMM flops only: 2*B*(I+H)*G*H per layer per step, a training step as 3x
the forward. The sgemm rate of scipy's BLAS (a large square product, same threads) is
measured in the same run and each configuration is also shown as a fraction of it.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# the sizes and the fastrnn / PyTorch training steps are the package's quick benchmark's
# (python -m fastrnn bench), so both time exactly the same thing
from fastrnn._quickbench import SIZES, _Worker, _fastrnn_steps, _torch_steps  # noqa: E402
from fastrnn.layers import _GATES as GATES  # noqa: E402  (the C core's cell table)
N_CLASSES = 10


def gemm_flops(cell, size, mode):
    B, T, I, H, L = SIZES[size]
    G = GATES[cell]
    f = sum(2.0 * B * ((I if k == 0 else H) + H) * G * H * T for k in range(L))
    return f * (3 if mode == "train" else 1)


# ------------------------------------------------------------------ contenders
#
# Inference (every contender): the same weights (a fastrnn layer stack made with
# random_state=0, its parameters copied in PyTorch's layout, which is fastrnn's) on the
# same input (full-length sequences, numpy's default_rng(0)), from zero states. What is
# timed is one call that produces the FULL output sequence of the top layer (batch,
# steps, hidden) and the final hidden state of every layer, as fastrnn's forward does.
# "outputs" returns those two (Y, h_n) as float32 arrays; the driver compares them with
# fastrnn float32's (max abs difference over both).
# Training (fastrnn, torch, keras only): the package's quick benchmark's steps.

def _shared_model(cell, size):
    """The fastrnn layer stack and input every inference contender starts from."""
    from fastrnn.layers import GRU, LSTM, RNN
    B, T, I, H, L = SIZES[size]
    rnn = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](I, H, num_layers=L, random_state=0)
    X = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
    return rnn, X


def _f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


class FastRNN:
    name = "fastrnn"
    precision = None        # float32: the reference every other output is compared with

    def __init__(self):
        import fastrnn
        self.fastrnn = fastrnn

    def threads(self, n):
        self.fastrnn.set_num_threads(n)

    def build(self, cell, size):
        rnn, X = _shared_model(cell, size)
        kw = {} if self.precision is None else {"precision": self.precision}

        def outputs():
            Y, state = rnn.forward(X, None, training=False, **kw)
            return _f32(Y), _f32(state[0] if cell == "lstm" else state)

        steps = {"inference": lambda: rnn.forward(X, None, training=False, **kw),
                 "outputs": outputs}
        if self.precision is None:
            steps["train"] = _fastrnn_steps(cell, size)["train"]
        return steps


class FastRNNBF16(FastRNN):
    """fastrnn's bfloat16 inference: forward(..., precision="bfloat16")."""
    name = "fastrnn-bf16"
    precision = "bfloat16"


def _torch_module(torch, cell, size):
    rnn, X = _shared_model(cell, size)
    B, T, I, H, L = SIZES[size]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    m = cls(I, H, num_layers=L, batch_first=True)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(rnn.params[name], dtype=np.float32)))
    m.eval()
    return m, torch.from_numpy(X)


class Torch:
    name = "torch"
    autocast = False

    def __init__(self):
        import torch
        self.torch = torch
        torch.manual_seed(0)
        # --torch-ftz: flush denormals as fastrnn and TensorFlow do (PyTorch's default is
        # not to, and its long-sequence training steps then slow down many-fold)
        torch.set_flush_denormal(os.environ.get("FASTRNN_BENCH_TORCH_FTZ") == "1")

    def threads(self, n):
        self.torch.set_num_threads(n)

    def build(self, cell, size):
        torch = self.torch
        m, X = _torch_module(torch, cell, size)

        def call():
            with torch.inference_mode():
                if self.autocast:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return m(X)
                return m(X)

        def outputs():
            Y, state = call()
            h_n = state[0] if cell == "lstm" else state
            return _f32(Y.float().numpy()), _f32(h_n.float().numpy())

        steps = {"inference": call, "outputs": outputs}
        if not self.autocast:
            steps["train"] = _torch_steps(cell, size)["train"]
        return steps


class TorchBF16(Torch):
    """PyTorch under torch.autocast("cpu", dtype=torch.bfloat16)."""
    name = "torch-bf16"
    autocast = True


def _onnx_feeds(cell, size, X):
    B, T, I, H, L = SIZES[size]
    feeds = {"X": X, "sequence_lens": np.full(B, T, dtype=np.int32),
             "h0": np.zeros((L, B, H), dtype=np.float32)}
    if cell == "lstm":
        feeds["c0"] = np.zeros((L, B, H), dtype=np.float32)
    return feeds


def _onnx_model(cell, size):
    """fastrnn.onnx.to_onnx of the shared stack: one standard LSTM/GRU/RNN node per layer.
    optional_inputs=False: sequence_lens, h0 (and c0) are plain inputs, fed here with full
    lengths and zeros (OpenVINO would freeze initializer defaults and ignores
    sequence_lens; onnxruntime would warn)."""
    from fastrnn.onnx import to_onnx
    rnn, X = _shared_model(cell, size)
    return to_onnx(rnn, optional_inputs=False), _onnx_feeds(cell, size, X)


class ORT:
    name = "onnxruntime"

    def __init__(self):
        import onnxruntime
        self.ort = onnxruntime

    def threads(self, n):
        self.n = n

    def build(self, cell, size):
        ort = self.ort
        model, feeds = _onnx_model(cell, size)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.n
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        names = ["Y", "h_n"]

        def outputs():
            Y, h_n = sess.run(names, feeds)
            return _f32(Y), _f32(h_n)

        return {"inference": lambda: sess.run(names, feeds), "outputs": outputs}


class OpenVINO:
    name = "openvino"
    precision = "f32"

    def __init__(self):
        import openvino
        self.ov = openvino

    def threads(self, n):
        self.n = n
        self.core = self.ov.Core()

    def build(self, cell, size):
        import tempfile
        ov = self.ov
        model, feeds = _onnx_model(cell, size)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.onnx")
            with open(path, "wb") as f:
                f.write(model.SerializeToString())
            ov_model = ov.convert_model(path)
        compiled = self.core.compile_model(ov_model, "CPU", {
            "INFERENCE_PRECISION_HINT": self.precision,
            "INFERENCE_NUM_THREADS": self.n, "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        for k, v in feeds.items():   # shares v's memory: `feeds` must outlive `req`
            req.set_tensor(k, ov.Tensor(v, shared_memory=True))

        def infer():
            req.infer()
            return feeds             # (the closure keeps the inputs alive)

        def outputs():
            infer()
            return _f32(req.get_tensor("Y").data), _f32(req.get_tensor("h_n").data)

        return {"inference": infer, "outputs": outputs}


class OpenVINOBF16(OpenVINO):
    """OpenVINO with INFERENCE_PRECISION_HINT bf16."""
    name = "openvino-bf16"
    precision = "bf16"


class Keras:
    name = "keras"

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        self.tf = tf

    def threads(self, n):
        # TensorFlow fixes its pools at first use; the worker is started per thread count
        self.n = n

    def build(self, cell, size):
        tf = self.tf
        B, T, I, H, L = SIZES[size]
        layer = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU,
                 "rnn": tf.keras.layers.SimpleRNN}[cell]
        inp = tf.keras.Input((T, I), batch_size=B)
        z = inp
        for k in range(L):
            z = layer(H, return_sequences=k < L - 1)(z)
        out = tf.keras.layers.Dense(N_CLASSES)(z)
        model = tf.keras.Model(inp, out)
        opt = tf.keras.optimizers.Adam(1e-3)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        X = tf.random.normal((B, T, I))
        y = tf.random.uniform((B,), 0, N_CLASSES, dtype=tf.int32)

        @tf.function
        def train_step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(X, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        infer_model, Xs = self._inference_model(cell, size)

        @tf.function
        def infer_step():
            return infer_model(Xs, training=False)

        def outputs():
            Y, *hs = infer_step()
            return _f32(Y.numpy()), _f32(np.stack([h.numpy() for h in hs]))

        return {"inference": lambda: infer_step(), "train": lambda: train_step(),
                "outputs": outputs}

    def _inference_model(self, cell, size):
        """The shared stack in Keras: every layer returns its sequence and its state;
        PyTorch's gate blocks reordered (GRU: r, z, n -> z, r, n, reset_after=True)."""
        tf = self.tf
        rnn, X = _shared_model(cell, size)
        B, T, I, H, L = SIZES[size]
        inp = tf.keras.Input((T, I), batch_size=B)
        z, hs = inp, []
        for k in range(L):
            p = {n: np.asarray(rnn.params[f"{n}_l{k}"], dtype=np.float32)
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            if cell == "gru":
                order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
                lay = tf.keras.layers.GRU(H, return_sequences=True, return_state=True,
                                          reset_after=True)
                out = lay(z)
                lay.set_weights([p["weight_ih"][order].T, p["weight_hh"][order].T,
                                 np.stack([p["bias_ih"][order], p["bias_hh"][order]])])
            else:
                cls = tf.keras.layers.LSTM if cell == "lstm" else tf.keras.layers.SimpleRNN
                lay = cls(H, return_sequences=True, return_state=True)
                out = lay(z)
                lay.set_weights([p["weight_ih"].T, p["weight_hh"].T,
                                 p["bias_ih"] + p["bias_hh"]])
            z, hs = out[0], hs + [out[1]]
        return tf.keras.Model(inp, [z] + hs), tf.constant(X)


CONTENDERS = {c.name: c for c in (FastRNN, FastRNNBF16, Torch, TorchBF16, ORT, OpenVINO,
                                  OpenVINOBF16, Keras)}
BF16 = ("fastrnn-bf16", "torch-bf16", "openvino-bf16")
TRAINS = ("fastrnn", "torch", "keras")     # contenders with a training step


def _cpu_has_bf16():
    """True when /proc/cpuinfo lists avx512_bf16 (or amx_bf16); None when it cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def why_not(name):
    """None when the contender can run here, else the reason it is skipped."""
    import importlib.util
    need = {"fastrnn": ["fastrnn"], "fastrnn-bf16": ["fastrnn"], "torch": ["torch"],
            "torch-bf16": ["torch"], "onnxruntime": ["onnxruntime", "onnx"],
            "openvino": ["openvino", "onnx"], "openvino-bf16": ["openvino", "onnx"],
            "keras": ["tensorflow"]}[name]
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    if name in BF16:
        has = _cpu_has_bf16()
        if not has:
            return ("the CPU lacks avx512_bf16" if has is False
                    else "cannot tell whether the CPU has avx512_bf16 (no /proc/cpuinfo)")
    if name == "fastrnn-bf16":
        import inspect
        from fastrnn.layers import LSTM
        if "precision" not in inspect.signature(LSTM.forward).parameters:
            return "the installed fastrnn's forward has no precision argument"
    return None


def available(name):
    return why_not(name) is None


# ------------------------------------------------------------------ worker processes

def _worker(name, threads, conn):
    """Answers ("time", cell, size, mode, iters) with ("ok", [seconds per call]) and
    ("outputs", cell, size) with ("ok", (Y, h_n)); ("error", text) when the contender
    fails on that configuration."""
    if name == "keras":
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    c = CONTENDERS[name]()
    c.threads(threads)
    if name == "keras":
        c.tf.config.threading.set_intra_op_parallelism_threads(threads)
        c.tf.config.threading.set_inter_op_parallelism_threads(1)
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        try:
            if msg[0] == "outputs":
                conn.send(("ok", built[msg[1], msg[2]]["outputs"]()))
                continue
            _, cell, size, mode, iters = msg
            key = (cell, size)
            if key not in built:
                built[key] = c.build(cell, size)
                for _ in range(2):                      # warm-up (allocation, tracing)
                    built[key][mode]()
            fn = built[key][mode]
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            conn.send(("ok", times))
        except Exception as e:   # reported by the driver, which drops the contender there
            conn.send(("error", f"{type(e).__name__}: {e}"))


def sgemm_rate(threads, n=2048, reps=5):
    """GFLOP/s of scipy's sgemm on a large square product with `threads` BLAS threads."""
    from scipy.linalg.blas import sgemm
    try:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(threads, user_api="blas")
    except ImportError:
        ctx = None
    a = np.asfortranarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    sgemm(1.0, a, a)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sgemm(1.0, a, a)
        ts.append(time.perf_counter() - t0)
    if ctx is not None:
        ctx.restore_original_limits()
    return 2.0 * n ** 3 / np.median(ts) / 1e9


# ------------------------------------------------------------------ driver

def iters_for(size, mode):
    return {"S": 20, "M": 8, "L": 2, "B1": 50, "XS": 5}[size] * (1 if mode == "train" else 2)


def contenders(wanted):
    """The contenders of `wanted` that can run here (fastrnn float32 always: it is the
    reference), in table order; prints a note for each one skipped."""
    names = []
    for n in CONTENDERS:
        if n != "fastrnn" and n not in wanted:
            continue
        reason = why_not(n)
        if reason is None:
            names.append(n)
        else:
            print(f"# {n} skipped: {reason}", flush=True)
    if "fastrnn" not in names:
        raise SystemExit("fastrnn itself cannot run")
    return names


def run(args):
    names = contenders(args.contenders)
    import fastrnn
    print(f"# fastrnn imported from {os.path.dirname(fastrnn.__file__)} (the installed "
          f"package unless PYTHONPATH names a tree built in place)")
    results = []
    for threads in args.threads:
        rate = sgemm_rate(threads, n=args.sgemm_n)
        print(f"# scipy sgemm ({args.sgemm_n}^3, {threads} thread(s)): {rate:.1f} GFLOP/s",
              flush=True)
        workers = {n: _Worker(_worker, (n, threads), threads, n, wait=False) for n in names}
        try:
            for w in workers.values():
                w.wait_ready()
            for size in args.sizes:
                for cell in args.cells:
                    for mode in args.modes:
                        results.append(_one(workers, names, threads, size, cell, mode, rate,
                                            args))
                        print_row(results[-1], names, flush=True)
        finally:
            for w in workers.values():
                w.close()
        print_diffs([r for r in results if r["threads"] == threads], names)
    return results, names


def _one(workers, names, threads, size, cell, mode, rate, args):
    """One configuration: rounds of every contender in turn; medians; output differences."""
    alive = [n for n in names if mode == "inference" or n in TRAINS]
    samples = {n: [] for n in alive}
    for _ in range(args.rounds):
        for n in list(alive):
            status, got = workers[n].ask(("time", cell, size, mode, iters_for(size, mode)))
            if status != "ok":
                if n == "fastrnn":
                    raise RuntimeError(f"fastrnn failed on {size} {cell} {mode}: {got}")
                print(f"# {n} failed on {size} {cell} {mode}, left out there: {got}",
                      flush=True)
                alive.remove(n)
                continue
            samples[n].append(float(np.median(got)))
            time.sleep(args.pause)  # let the other's idle threads sleep
    row = dict(threads=threads, size=size, cell=cell, mode=mode, sgemm=rate,
               **{f"t_{n}": float(np.median(samples[n])) for n in alive})
    if mode == "inference":
        ref = None
        for n in alive:             # fastrnn first: the float32 reference
            status, got = workers[n].ask(("outputs", cell, size))
            if status != "ok":
                print(f"# {n}: no outputs on {size} {cell}: {got}", flush=True)
                continue
            if ref is None:
                ref = got
            row[f"d_{n}"] = max_abs_diff(got, ref)
    return row


def max_abs_diff(got, ref):
    """max |got - ref| over the output sequence Y and the final hidden states h_n."""
    d = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            raise ValueError(f"output shape {g.shape}, fastrnn's {r.shape}")
        d = max(d, float(np.max(np.abs(g.astype(np.float64) - r))))
    return d


HEADER_PRINTED = []


def print_row(r, names, flush=False):
    if not HEADER_PRINTED:
        cols = ["thr", "size", "cell", "mode", "fastrnn ms", "seq/s", "GFLOP/s", "of sgemm"]
        for n in names[1:]:
            cols += [f"{n} ms", f"x vs {n}"]
        print(" | ".join(cols))
        HEADER_PRINTED.append(True)
    B = SIZES[r["size"]][0]
    t = r["t_fastrnn"]
    gf = gemm_flops(r["cell"], r["size"], r["mode"]) / t / 1e9
    row = [str(r["threads"]), r["size"], r["cell"], r["mode"], f"{t * 1e3:.2f}",
           f"{B / t:,.0f}", f"{gf:.1f}", f"{gf / r['sgemm']:.0%}"]
    for n in names[1:]:
        tn = r.get("t_" + n)
        row += ["-", "-"] if tn is None else [f"{tn * 1e3:.2f}", f"{tn / t:.2f}"]
    print(" | ".join(row), flush=flush)


def print_diffs(rows, names):
    """The max abs difference of each contender's inference outputs (Y and h_n) from
    fastrnn float32's, one line per configuration."""
    rows = [r for r in rows if r["mode"] == "inference"]
    if not rows:
        return
    print(f"# max |output - fastrnn float32 output| (Y and h_n), {rows[0]['threads']} "
          f"thread(s)")
    print(" | ".join(["size", "cell"] + names[1:]))
    for r in rows:
        print(" | ".join([r["size"], r["cell"]] + [
            "-" if r.get("d_" + n) is None else f"{r['d_' + n]:.1e}" for n in names[1:]]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["S", "M", "L"], choices=list(SIZES))
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"], choices=list(GATES))
    p.add_argument("--modes", nargs="+", default=["inference", "train"],
                   choices=["inference", "train"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds between contenders (idle OpenMP/Eigen threads spin a while)")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS),
                   choices=list(CONTENDERS),
                   help="default: all that are installed (fastrnn float32 always runs)")
    p.add_argument("--sgemm-n", type=int, default=2048,
                   help="size of the square sgemm measured as the machine's GEMM rate")
    p.add_argument("--torch-ftz", action="store_true",
                   help="run PyTorch with torch.set_flush_denormal(True)")
    p.add_argument("--quick", action="store_true", help="M size, 2 threads, 3 rounds")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    os.environ["FASTRNN_BENCH_TORCH_FTZ"] = "1" if args.torch_ftz else "0"
    if args.quick:
        args.sizes, args.threads, args.rounds = ["M"], [2], 3
    results, names = run(args)
    if args.json:
        import json
        import platform
        meta = {"machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "contenders": names, "command": " ".join(sys.argv)}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
