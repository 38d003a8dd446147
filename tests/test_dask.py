"""fastrnn on Dask (the `dask` extra): what a scikit-learn user runs once a search, a data
set or a scoring job outgrows one machine, here against a LocalCluster of two worker
processes of one thread each (started and closed by the `client` fixture):

  * GridSearchCV under joblib.parallel_backend("dask") gives the local cv_results_, for
    3-D arrays and for ragged lists;
  * dask_ml.wrappers.ParallelPostFit predicts from Dask arrays like the local model;
  * dask_ml.wrappers.Incremental over a 2-D Dask array equals partial_fit over the same
    blocks locally, univariate and (with n_features) multivariate;
  * a one-thread worker runs fastrnn on one thread;
  * HyperbandSearchCV: dask-ml 2025.1.0 fails against current distributed (an upstream
    break that hits scikit-learn's SGDClassifier alike); the test skips with that
    reason on exactly that error and runs the day it is fixed.

Every test, and the cluster's start, is bounded by an alarm.
"""
import contextlib
import logging
import os
import signal

import numpy as np
import pytest

import fastrnn
from fastrnn import LSTMClassifier, LSTMRegressor

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")
joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV  # noqa: E402

N, T, F, BLOCK = 60, 10, 3, 20
SMALL = dict(hidden_size=8, max_epochs=3, batch_size=16, random_state=0)
UPSTREAM_HYPERBAND = "Attempting to use an asynchronous Client in a synchronous context"


@contextlib.contextmanager
def time_limit(seconds, what):
    def expire(signum, frame):
        raise TimeoutError(f"{what} took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def bounded(request):
    with time_limit(60, request.node.name):
        yield


@pytest.fixture(scope="module")
def client():
    with time_limit(90, "starting the LocalCluster"):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        client.wait_for_workers(2, timeout=60)
    try:
        yield client
    finally:
        with time_limit(60, "closing the LocalCluster"):
            client.close()
            cluster.close()


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, F)).astype(np.float32)
    return X, (X[:, :, 0].sum(1) > 0).astype(np.int64), X[:, :, 1].sum(1)


@contextlib.contextmanager
def on_the_cluster(client):
    """Asserts that the block ran tasks on the cluster's workers."""
    with distributed.get_task_stream(client=client) as stream:
        yield
    workers = {t["worker"] for t in stream.data}
    assert workers and workers <= set(client.scheduler_info()["workers"]), workers


def test_workers_are_processes_running_fastrnn_on_one_thread(client):
    assert sorted(client.nthreads().values()) == [1, 1]
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert set(client.run(fastrnn.get_num_threads).values()) == {1}
    # threadpoolctl in a worker sees fastrnn's pool, at one thread
    import threadpoolctl
    for info in client.run(threadpoolctl.threadpool_info).values():
        assert [i["num_threads"] for i in info if i["internal_api"] == "fastrnn"] == [1]
    # a fit on a worker (one thread) is the fit here (two): results never depend on it
    X, y, _ = data()
    remote = client.submit(LSTMClassifier(**SMALL).fit, X, y).result(timeout=50)
    np.testing.assert_array_equal(remote.predict_proba(X),
                                  LSTMClassifier(**SMALL).fit(X, y).predict_proba(X))


@pytest.mark.parametrize("form", ["3d", "ragged"])
def test_grid_search_on_dask_equals_local(client, form):
    X, y, _ = data()
    if form == "ragged":
        lengths = np.random.default_rng(1).integers(3, T + 1, size=N)
        X = [x[:n] for x, n in zip(X, lengths)]
    grid = {"hidden_size": [4, 8], "learning_rate": [5e-3, 2e-2]}
    local = GridSearchCV(LSTMClassifier(**SMALL), grid, cv=3).fit(X, y)
    with joblib.parallel_backend("dask"), on_the_cluster(client):
        remote = GridSearchCV(LSTMClassifier(**SMALL), grid, cv=3, n_jobs=-1).fit(X, y)
    assert remote.cv_results_["params"] == local.cv_results_["params"]
    for key in ["split0_test_score", "split1_test_score", "split2_test_score",
                "mean_test_score", "rank_test_score"]:
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.predict_proba(X), local.predict_proba(X))


@pytest.mark.parametrize("cls, n_features", [(LSTMClassifier, F), (LSTMClassifier, None),
                                             (LSTMRegressor, F)])
def test_parallel_post_fit_predicts_like_the_local_model(client, cls, n_features):
    X, y_cls, y_reg = data()
    y = y_cls if cls is LSTMClassifier else y_reg
    flat = X.reshape(N, -1) if n_features else X[:, :, 0]
    wrapped = dask_ml_wrappers.ParallelPostFit(cls(n_features=n_features, **SMALL))
    wrapped.fit(flat, y)                       # in memory: an ordinary fit
    Xd = da.from_array(flat, chunks=(BLOCK, -1))
    with on_the_cluster(client):
        got = wrapped.predict(Xd).compute()
    np.testing.assert_array_equal(got, wrapped.estimator.predict(flat))
    if n_features:                              # the flat model is the 3-D model
        np.testing.assert_array_equal(got, cls(**SMALL).fit(X, y).predict(X))
    if cls is LSTMClassifier:
        proba = wrapped.predict_proba(Xd).compute()
        np.testing.assert_array_equal(proba, wrapped.estimator.predict_proba(flat))
        assert wrapped.score(Xd, da.from_array(y, chunks=BLOCK)) == \
            wrapped.estimator.score(flat, y)


@pytest.mark.parametrize("n_features", [F, None])
def test_incremental_equals_partial_fit_over_the_same_blocks(client, n_features):
    X, y, _ = data()
    flat = X.reshape(N, -1) if n_features else X[:, :, 0]
    Xd = da.from_array(flat, chunks=(BLOCK, -1))
    yd = da.from_array(y, chunks=BLOCK)
    inc = dask_ml_wrappers.Incremental(LSTMClassifier(n_features=n_features, **SMALL),
                                       shuffle_blocks=False)
    with on_the_cluster(client):
        inc.fit(Xd, yd, classes=[0, 1])
    local = LSTMClassifier(**SMALL)
    local_X = X if n_features else flat        # multivariate blocks locally in 3-D
    for start in range(0, N, BLOCK):
        part = slice(start, start + BLOCK)
        local.partial_fit(local_X[part], y[part], classes=[0, 1])
    assert inc.estimator_.n_iter_ == local.n_iter_ == N // BLOCK
    np.testing.assert_array_equal(inc.estimator_.predict_proba(flat),
                                  local.predict_proba(local_X))
    np.testing.assert_array_equal(inc.predict(Xd).compute(), local.predict(local_X))


def test_hyperband_search(client):
    from dask_ml.model_selection import HyperbandSearchCV
    X, y, _ = data()
    Xd = da.from_array(X.reshape(N, -1), chunks=(BLOCK, -1))
    yd = da.from_array(y, chunks=BLOCK)
    search = HyperbandSearchCV(LSTMClassifier(n_features=F, **SMALL),
                               {"learning_rate": [5e-3, 2e-2], "hidden_size": [4, 8]},
                               max_iter=3, random_state=0)
    try:
        search.fit(Xd, yd, classes=[0, 1])
    except Exception as e:
        if UPSTREAM_HYPERBAND in str(e):
            pytest.skip(f"dask-ml's HyperbandSearchCV fails against this distributed "
                        f"(upstream, scikit-learn's SGDClassifier too): {e}")
        raise
    assert set(search.best_params_) == {"learning_rate", "hidden_size"}
    assert 0 <= search.best_score_ <= 1
    assert search.best_estimator_.n_features == F
    np.testing.assert_array_equal(search.predict(Xd).compute(),
                                  search.best_estimator_.predict(X.reshape(N, -1)))
