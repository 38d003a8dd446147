"""Faults that must be survived: Ctrl-C during a large predict, thread counts changed while
other threads predict, a fork in the middle of a threaded call, and memory that stays
flat over 100,000 layer calls of changing shapes."""
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn
from fastrnn import GRUClassifier, LSTMTagger
from fastrnn.layers import GRU, LSTM


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_ctrl_c_during_a_large_predict_returns_quickly_and_leaves_a_usable_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20, 4)).astype(np.float32)
    m = GRUClassifier(hidden_size=64, max_epochs=1, random_state=0).fit(X, np.arange(64) % 2)
    ref = m.predict_proba(X)
    big = np.broadcast_to(rng.standard_normal((1, 200, 4)).astype(np.float32),
                          (30_000, 200, 4))                # a minute of inference
    fired = {}

    def interrupt():
        fired["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.predict_proba(big)
        returned = time.perf_counter()
    finally:
        timer.cancel()
    assert returned - fired["t"] < 1.0, returned - fired["t"]
    np.testing.assert_array_equal(m.predict_proba(X), ref)


def test_set_num_threads_while_8_threads_predict_gives_the_serial_result():
    """A problem on which the core really uses several threads (each call: 256 sequences
    x 60 steps x 4 gates x 64 units x (8 + 64) = 283M multiply-adds)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 60, 8)).astype(np.float32)
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)
    m = LSTMTagger(hidden_size=64, max_epochs=1, random_state=0).fit(X[:64], y[:64])
    jobs = [X[i * 32:(i + 1) * 32 + 224] for i in range(8)]
    serial = [m.predict_proba(j) for j in jobs]
    stop = threading.Event()
    old = fastrnn.get_num_threads()

    def flip():
        k = 0
        while not stop.is_set():
            fastrnn.set_num_threads(1 + k % 3)
            k += 1
            time.sleep(0.001)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as ex:
            for _ in range(2):
                for a, b in zip(ex.map(m.predict_proba, jobs), serial):
                    np.testing.assert_array_equal(a, b)
    finally:
        stop.set()
        flipper.join()
        fastrnn.set_num_threads(old)


def test_fork_in_the_middle_of_a_threaded_call():
    """The parent forks while another of its threads is inside a multi-threaded core call;
    the child uses fastrnn (single-threaded, see layers.py) and gets the right answer."""
    script = textwrap.dedent(f"""
        import os, sys, threading, time
        sys.path.insert(0, {os.path.dirname(os.path.dirname(fastrnn.__file__))!r})
        import numpy as np
        from fastrnn.layers import LSTM
        X = np.random.default_rng(0).standard_normal((512, 200, 8)).astype(np.float32)
        layer = LSTM(8, 128, random_state=0)
        small = X[:4, :10]
        ref = layer.forward(small, n_threads=2)[0]
        busy = threading.Thread(target=lambda: [layer.forward(X, n_threads=2)
                                                for _ in range(3)])
        busy.start()
        time.sleep(0.2)                       # the busy thread is inside a parallel call
        pid = os.fork()
        if pid == 0:
            out = layer.forward(small, n_threads=2)[0]
            os._exit(0 if np.array_equal(out, ref) else 3)
        _, status = os.waitpid(pid, 0)
        busy.join()
        print("child", os.waitstatus_to_exitcode(status))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "child 0"


def test_rss_stays_flat_over_100000_layer_calls_of_changing_shapes():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((8, 12, 3)).astype(np.float32)
    layers = [LSTM(3, 8, random_state=0), GRU(3, 6, num_layers=2, bidirectional=True,
                                                random_state=0)]

    def one(i):
        layer = layers[i % 2]
        B, T = 1 + i % 8, 1 + (5 * i) % 12
        X = pool[:B, :T]
        lengths = 1 + (np.arange(B) + i) % T
        training = i % 10 == 0
        out, _ = layer.forward(X, lengths, training=training)
        if training:
            layer.backward(np.ones_like(out))

    for i in range(2_000):     # warm-up: allocator pools, per-shape scratch reuse
        one(i)
    gc.collect()
    before = rss_bytes()
    for i in range(100_000):
        one(i)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 16 << 20, f"RSS grew by {growth / 2 ** 20:.1f} MiB over 100,000 calls"
