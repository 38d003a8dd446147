"""bench/layers.py runs: its contenders (whichever peers are installed) build, run and
agree with fastrnn float32 on a tiny size, and the driver runs end to end in worker
processes. Smoke tests, each under 20 s on a quiet machine (the XS size: batch 3, 6
steps, 5 inputs, hidden 8, 2 layers); speed is measured by the benchmark itself, never
here. Keras is left out (importing TensorFlow alone takes longer than that); it runs
through the same driver."""
import importlib.util
import inspect
import json
import os
import subprocess
import sys

import pytest

import fastrnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "layers.py")
CELLS = ["lstm", "gru", "rnn"]
F32_TOL = 1e-5          # float32 peers: the same arithmetic up to rounding
OPENVINO_CELL = {"openvino": "lstm", "openvino-bf16": "gru"}
BF16_TOL = 0.05         # bf16 (8 significant bits) on the XS size: observed up to 5e-3


def _installed(*mods):
    return all(importlib.util.find_spec(m) is not None for m in mods)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_layers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _expected_peers():
    """The float32 peers that must run where their packages are installed."""
    peers = []
    if _installed("torch"):
        peers.append("torch")
    if _installed("onnxruntime", "onnx"):
        peers.append("onnxruntime")
    if _installed("openvino", "onnx"):
        peers.append("openvino")
    return peers


def test_contenders_agree_with_fastrnn(bench):
    """Every installed contender but Keras, in this process, one thread: its outputs (Y
    and h_n) within F32_TOL of fastrnn float32's, or for bf16 ones further than that
    (bf16 really used) but within BF16_TOL."""
    names = [n for n in bench.CONTENDERS if n != "keras" and bench.why_not(n) is None]
    for n in ["fastrnn"] + _expected_peers():
        assert n in names, (n, bench.why_not(n))
    print("contenders:", names)
    for cell in CELLS:
        ref = None
        for n in names:
            if n.startswith("openvino") and cell != OPENVINO_CELL[n]:
                continue       # compiling costs ~1 s a model: one cell each
            c = bench.CONTENDERS[n]()
            c.threads(1)
            steps = c.build(cell, "XS")
            steps["inference"]()
            Y, h_n = steps["outputs"]()
            B, T, I, H, L = bench.SIZES["XS"]
            assert Y.shape == (B, T, H) and h_n.shape == (L, B, H), (n, cell)
            if ref is None:
                ref = (Y, h_n)
                continue
            d = bench.max_abs_diff((Y, h_n), ref)
            if n in bench.BF16:
                assert F32_TOL < d < BF16_TOL, (n, cell, d)  # really bf16, but close
            else:
                assert d < F32_TOL, (n, cell, d)
            if n in bench.TRAINS:
                steps["train"]()


def test_fastrnn_bf16_contender_calls_precision(bench, monkeypatch):
    """The fastrnn-bf16 contender with a stub layer whose forward takes `precision`
    (the real one is being built on another branch): it asks for bfloat16 inference on
    the shared input, and why_not() accepts such a fastrnn (on a bf16 CPU)."""
    real = bench._shared_model
    calls = []

    class Stub:
        def __init__(self, rnn):
            self.rnn = rnn

        def forward(self, X, lengths=None, training=False, precision="float32"):
            calls.append((X.shape, lengths, training, precision))
            Y, state = self.rnn.forward(X, lengths, training=training)
            return Y, state

    monkeypatch.setattr(bench, "_shared_model",
                        lambda cell, size: (Stub(real(cell, size)[0]), real(cell, size)[1]))
    c = bench.FastRNNBF16()
    steps = c.build("gru", "XS")
    steps["inference"]()
    Y, h_n = steps["outputs"]()
    X = real("gru", "XS")[1]
    assert calls == [(X.shape, None, False, "bfloat16")] * 2
    assert "train" not in steps
    rnn = real("gru", "XS")[0]
    ref = rnn.forward(X)
    assert bench.max_abs_diff((Y, h_n), (ref[0], ref[1])) == 0

    has_precision = "precision" in inspect.signature(fastrnn.layers.LSTM.forward).parameters
    if not has_precision:
        assert "precision" in bench.why_not("fastrnn-bf16")

    def forward(self, X, lengths=None, h0=None, c0=None, training=False, precision=None):
        raise AssertionError("not called")

    monkeypatch.setattr(fastrnn.layers.LSTM, "forward", forward)
    monkeypatch.setattr(bench, "_cpu_has_bf16", lambda: True)
    assert bench.why_not("fastrnn-bf16") is None
    monkeypatch.setattr(bench, "_cpu_has_bf16", lambda: False)
    assert "avx512_bf16" in bench.why_not("fastrnn-bf16")
    assert "avx512_bf16" in bench.why_not("torch-bf16") or not _installed("torch")


def test_driver_end_to_end(bench, tmp_path):
    """python bench/layers.py on the XS size, fastrnn and the installed peers that start
    fast (torch, torch-bf16, onnxruntime), both modes, two interleaved rounds, worker
    processes: the table, the difference table and the JSON rows."""
    peers = [n for n in ("torch", "onnxruntime") if n in _expected_peers()]
    bf16 = "torch" in peers and bench.why_not("torch-bf16") is None
    if bf16:                  # a contender whose outputs differ: the differences are real
        peers.insert(1, "torch-bf16")
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastrnn.__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = subprocess.run(
        [sys.executable, SCRIPT, "--sizes", "XS", "--cells", "lstm", "gru", "--threads", "1",
         "--rounds", "2", "--pause", "0", "--sgemm-n", "128", "--contenders", "fastrnn"]
        + peers + ["--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["contenders"] == ["fastrnn"] + peers
    rows = data["results"]
    assert [(r["cell"], r["mode"]) for r in rows] == [
        ("lstm", "inference"), ("lstm", "train"), ("gru", "inference"), ("gru", "train")]
    for r in rows:
        for n in ["fastrnn"] + peers:
            if r["mode"] == "inference" or n in ("fastrnn", "torch"):
                assert r["t_" + n] > 0, (n, r)
            else:
                assert "t_" + n not in r, (n, r)    # onnxruntime: inference only
            if n == "fastrnn" and r["mode"] == "inference":
                assert r["d_fastrnn"] == 0, r                  # the reference itself
            elif r["mode"] == "inference" and n in bench.BF16:
                assert F32_TOL < r["d_" + n] < BF16_TOL, (n, r)
            elif r["mode"] == "inference":
                assert 0 <= r["d_" + n] < F32_TOL, (n, r)
            else:
                assert "d_" + n not in r
    lines = res.stdout.splitlines()
    assert any(line.startswith("1 | XS | gru | train | ") for line in lines)
    assert any(line.startswith("# max |output - fastrnn float32 output|") for line in lines)
    assert sum(line.startswith("XS | ") for line in lines) == 2
