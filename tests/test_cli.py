"""The command line (python -m fastrnn demo | bench | info), show_config() and the
version."""
import io
import os
import subprocess
import sys
from contextlib import redirect_stdout

import pytest

import fastrnn
from fastrnn.__main__ import main


def run_cli(*argv):
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(list(argv)) == 0
    return buf.getvalue()


def test_version():
    assert isinstance(fastrnn.__version__, str) and fastrnn.__version__[0].isdigit()
    from importlib import metadata
    try:
        dist = metadata.distribution("fastrnn")
    except metadata.PackageNotFoundError:
        pytest.skip("fastrnn is not installed as a distribution")
    if os.path.realpath(dist.locate_file("fastrnn/__init__.py")) != \
            os.path.realpath(fastrnn.__file__):
        pytest.skip("the installed distribution is not the fastrnn under test")
    assert dist.version == fastrnn.__version__


def test_show_config():
    cfg = fastrnn.get_config()
    assert cfg["fastrnn"] == fastrnn.__version__
    # the build's record and the loaded core agree, and a build meant to be parallel is
    # (only FASTRNN_OPENMP=0 or a compiler without OpenMP builds without it)
    assert cfg["openmp"]["enabled"] is bool(cfg["build"]["openmp"])
    assert cfg["openmp"]["enabled"] or os.environ.get("FASTRNN_OPENMP") == "0"
    assert cfg["threads"]["fastrnn"] == fastrnn.get_num_threads()
    flags = cfg["build"]["cflags"]
    assert flags, "fastrnn/_build_info.py missing: rebuild with setup.py"
    assert not any(f.startswith("-march") or f == "-ffast-math" for f in flags)
    buf = io.StringIO()
    fastrnn.show_config(file=buf)
    text = buf.getvalue()
    for word in ("fastrnn " + fastrnn.__version__, "BLAS", "OpenMP", "threads", "cflags",
                 "-O3"):
        assert word in text


def test_info_prints_show_config():
    buf = io.StringIO()
    fastrnn.show_config(file=buf)
    assert run_cli("info") == buf.getvalue()


def test_demo_reports_accuracy_and_speed():
    out = run_cli("demo", "--samples", "64", "--steps", "20", "--epochs", "2")
    for word in ("test accuracy", "fit time", "training speed", "inference speed",
                 "sequences/s"):
        assert word in out


def test_demo_shows_progress_and_the_other_demos():
    out = run_cli("demo", "tag", "--samples", "64", "--steps", "20", "--epochs", "2")
    assert out.count("epoch 1: train loss") == 2          # LSTM, then RNN
    assert "per-step test accuracy" in out and "fastrnn demo lm" in out
    out = run_cli("demo", "lm", "--samples", "40", "--epochs", "1", "--quiet")
    assert "epoch 1:" not in out
    assert "nats per character" in out and "sample (temperature 0.6):" in out
    sample = out.split("sample (temperature 0.6):\n")[1].split("other demos:")[0]
    assert sample.startswith("The return statement") and len(sample) > 300


def test_bench_runs_quickly():
    out = run_cli("bench", "--sizes", "S", "--cells", "rnn", "--modes", "inference",
                  "--rounds", "1", "--no-torch")
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0].startswith("size | cell | mode | fastrnn ms")
    assert lines[1].startswith("S | rnn | inference | ")


def test_bench_returns_rows():
    from fastrnn._quickbench import run
    rows = run(sizes=["S"], cells=["gru"], modes=["train"], rounds=1, compare=False,
               min_seconds=0.0, file=io.StringIO())
    assert len(rows) == 1 and rows[0]["fastrnn"] > 0


def test_module_entry_point(tmp_path):
    # the fastrnn under test, whichever way it was put on the path
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastrnn.__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = subprocess.run([sys.executable, "-m", "fastrnn", "info"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"fastrnn {fastrnn.__version__}" in res.stdout
    res = subprocess.run([sys.executable, "-m", "fastrnn"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "demo" in res.stderr
