"""fastrnn and the idle OpenBLAS thread pools of numpy and scipy (see _core.pyx, "idle
OpenBLAS pools"): a core call stops numpy's, fit stops both and calls no numpy BLAS in
a training step. Each check runs in a fresh process, where the test controls every
Python thread (pools are only stopped when the caller is the only one)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastrnn import _core

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="threads are counted in /proc/self/task (Linux)")


def run(code):
    # in a fresh process that imports the fastrnn under test: `python -c` puts the
    # working directory first on sys.path, so run where that package lives
    import fastrnn
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


PRELUDE = """
import os, numpy as np, fastrnn
from fastrnn import _core
def threads():
    return len(os.listdir('/proc/self/task'))
A = np.ones((600, 600), np.float32)
"""


def numpy_pool_threads():
    """Whether numpy's own OpenBLAS (separate from scipy's) is loaded and may thread."""
    return (os.cpu_count() or 1) > 1 and any("numpy" in p for p in _core.OPENBLAS_POOLS)


def test_openblas_pools_are_found():
    if not any("openblas" in p.lower() for p in _core.OPENBLAS_POOLS):
        pytest.skip("numpy/scipy here are not linked to OpenBLAS")
    assert len(_core.OPENBLAS_POOLS) >= 1


@pytest.mark.parametrize("precision", [
    "float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
        not _core.bf16_available(), reason="needs a CPU with AVX512_BF16"))])
def test_a_core_call_stops_numpys_spinning_pool(precision):
    """float32, and bf16 inference (which calls no BLAS at all, but shares the cores
    with a spinning pool all the same: an M-size bf16 LSTM call took 7.5 ms instead of
    3.3 after numpy products before it stopped them)."""
    if not numpy_pool_threads():
        pytest.skip("numpy has no OpenBLAS of its own here, or there is one core")
    before, after_dot, after_call, after_dot2 = run(PRELUDE + f"""
from fastrnn.layers import LSTM
fastrnn.set_num_threads(1)              # no OpenMP threads in the count
rnn = LSTM(4, 8, random_state=0); X = np.ones((2, 3, 4), np.float32)
kw = dict(precision={precision!r})
_core.stop_idle_blas_pools(); rnn.forward(X, **kw)
a = threads(); np.dot(A, A); b = threads(); rnn.forward(X, **kw); c = threads()
B = np.dot(A, A); d = threads()
assert B[0, 0] == 600                  # numpy's BLAS still works (pool restarted)
print(a, b, c, d)
""").split()
    assert int(after_dot) > int(before)          # numpy's pool is up after its product
    assert int(after_call) == int(before)        # and stopped by the core call
    assert int(after_dot2) == int(after_dot)     # numpy restarts it when it needs it


def test_fit_runs_no_other_pool_and_calls_no_numpy_blas():
    """At every training step of a fit started right after a numpy product, numpy's
    and scipy's pools are down (stopping them again ends no thread): the fit stopped
    them, and no numpy BLAS call in a step restarted numpy's."""
    if not numpy_pool_threads():
        pytest.skip("numpy has no OpenBLAS of its own here, or there is one core")
    counts = run(PRELUDE + """
fastrnn.set_num_threads(2)
rng = np.random.default_rng(0)
X = rng.normal(size=(96, 30, 4)).astype(np.float32); y = rng.integers(0, 3, 96)
est = fastrnn.LSTMClassifier(hidden_size=64, max_epochs=2, random_state=0)
est.fit(X, y)                           # OpenMP's threads now exist
seen = []
class Spy(type(est._optimizer)):
    def step(self, *a, **k):
        alive = threads(); _core.hold_blas()     # nested in fit's: stops every pool
        seen.append(alive - threads())      # pool threads that were running
        _core.release_blas()
        return super().step(*a, **k)
est2 = fastrnn.LSTMClassifier(hidden_size=64, max_epochs=2, random_state=0)
import fastrnn.estimators._base as base
orig = base.RecurrentEstimator._new_optimizer
def new_opt(self):
    orig(self); self._optimizer.__class__ = type("Spy", (Spy,), {})
base.RecurrentEstimator._new_optimizer = new_opt
np.dot(A, A)                            # numpy's pool spins now
est2.fit(X, y)
print(" ".join(map(str, seen)))
""").split()
    counts = [int(c) for c in counts]
    assert counts == [0] * (2 * 3)
