"""fastrnn's thread pool under threadpoolctl (how joblib, Dask and scikit-learn users hold
thread pools back): threadpool_info() lists it, threadpool_limits sets it, whichever of
fastrnn and threadpoolctl is imported first, and `import fastrnn` imports neither
threadpoolctl nor Dask."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

threadpoolctl = pytest.importorskip("threadpoolctl")

CORE = os.path.realpath(fastrnn._core.__file__)


def run_python(code):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    # from the folder of the fastrnn under test (`python -c` puts the working directory
    # first on sys.path, and a source checkout there has no compiled core)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env,
                         cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    assert out.returncode == 0, out.stderr
    return out.stdout


def fastrnn_entries():
    return [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fastrnn"]


def test_threadpool_info_lists_fastrnn_once():
    import scipy.optimize  # noqa: F401  (scipy ships a `_core` extension of its own too)
    entries = fastrnn_entries()
    assert len(entries) == 1, entries
    info = entries[0]
    assert os.path.realpath(info["filepath"]) == CORE
    assert info["user_api"] == "openmp"
    assert info["version"] == fastrnn.__version__
    assert info["num_threads"] == fastrnn.get_num_threads()


def test_threadpool_limits_sets_and_restores_fastrnn_threads():
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        with threadpoolctl.threadpool_limits(1):
            assert fastrnn.get_num_threads() == 1
            assert fastrnn_entries()[0]["num_threads"] == 1
            assert fastrnn.get_config()["threads"]["fastrnn"] == 1
            buf = io.StringIO()
            fastrnn.show_config(file=buf)
            assert "threads     1 in force" in buf.getvalue()
        assert fastrnn.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):    # the pool's kind
            assert fastrnn.get_num_threads() == 1
        with threadpoolctl.ThreadpoolController().select(internal_api="fastrnn").limit(
                limits=1):                                            # fastrnn alone
            assert fastrnn.get_num_threads() == 1
        with threadpoolctl.threadpool_limits(1, user_api="blas"):      # not ours
            assert fastrnn.get_num_threads() == 2
        assert fastrnn.get_config()["threads"]["threadpoolctl"] == "registered"
    finally:
        fastrnn.set_num_threads(before)


def test_estimator_runs_under_threadpool_limits():
    from fastrnn.datasets import make_adding
    X, y = make_adding(64, 12, random_state=0)
    est = fastrnn.LSTMRegressor(hidden_size=8, max_epochs=2, random_state=0)
    ref = est.fit(X, y).predict(X)
    with threadpoolctl.threadpool_limits(1):
        assert est._n_threads() == 1
        limited = est.fit(X, y).predict(X)
    np.testing.assert_array_equal(limited, ref)   # the thread count never changes results


_CHECK_LIMITS = """
import fastrnn, threadpoolctl
fastrnn.set_num_threads(2)
[info] = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fastrnn"]
assert info["num_threads"] == 2, info
with threadpoolctl.threadpool_limits(1):
    assert fastrnn.get_num_threads() == 1
assert fastrnn.get_num_threads() == 2
print("ok")
"""


def test_import_fastrnn_imports_neither_threadpoolctl_nor_dask():
    out = run_python("import sys, fastrnn; print(sorted(m for m in sys.modules if "
                     "m.split('.')[0] in ('threadpoolctl', 'dask', 'distributed', "
                     "'dask_ml', 'sklearn', 'joblib')))")
    assert out.strip() == "[]"


@pytest.mark.parametrize("first", ["fastrnn", "threadpoolctl"])
def test_registration_whatever_the_import_order(first):
    # fastrnn first: the import hook registers once threadpoolctl is imported;
    # threadpoolctl first: fastrnn registers at its own import
    assert run_python(f"import {first}\n" + _CHECK_LIMITS).strip() == "ok"


def test_registration_when_sklearn_imports_threadpoolctl():
    pytest.importorskip("sklearn")
    code = ("import fastrnn, sys\nassert 'threadpoolctl' not in sys.modules\n"
            "import sklearn.utils\n" + _CHECK_LIMITS)
    assert run_python(code).strip() == "ok"


def test_register_threadpoolctl_by_hand_is_idempotent():
    assert fastrnn.register_threadpoolctl() is True
    assert fastrnn.register_threadpoolctl() is True
    assert len(fastrnn_entries()) == 1
