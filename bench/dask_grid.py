"""A 12-candidate GridSearchCV on an M-size problem, three ways on this machine:

    python bench/dask_grid.py                  # all routes, 1 round
    python bench/dask_grid.py --rounds 2 --json bench/dask_grid.json

  serial   GridSearchCV(n_jobs=1): one fit at a time, fastrnn on all cores (OpenMP)
  loky     GridSearchCV(n_jobs=2) on joblib's default backend: two worker processes,
           fastrnn on one thread in each (loky sets OMP_NUM_THREADS = cores / n_jobs)
  dask     joblib.parallel_backend("dask") on a distributed.LocalCluster of two worker
           processes of one thread each (what a cluster of many machines looks like
           from scikit-learn), with X sent along with the tasks, and again with X
           scattered to the workers once beforehand (scatter=[X, y])

M is the layer benchmark's M (bench/layers.py): sequences of 100 steps of 32 features,
hidden 128 (and 64 in the grid), batch 64. It also measures what bounds the wall time:
the fits' own compute (each candidate fitted once on one thread), the bytes of X and
the time to pickle and to scatter them, the scheduler's cost per task, and the fits' and
scorings' own seconds as each route measured them (cv_results_), which shows what two
concurrent one-thread fits cost against one fit at a time.
"""
import argparse
import json
import logging
import os
import pickle
import time

import numpy as np

N, T, F = 600, 100, 32
GRID = {"hidden_size": [64, 128], "learning_rate": [2e-3, 5e-3, 1e-2],
        "batch_size": [32, 64]}                     # 12 candidates
BASE = dict(max_epochs=3, random_state=0)
CV = 3


def problem():
    """Noise in F features; the class (0, 1, 2) counts the signs of feature 0's mean over
    the last 20 steps and of feature 1's over the first 20."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, T, F)).astype(np.float32)
    y = (X[:, -20:, 0].mean(1) > 0).astype(np.int64) + (X[:, :20, 1].mean(1) > 0)
    return X, y


def search(n_jobs):
    from sklearn.model_selection import GridSearchCV
    from fastrnn import LSTMClassifier
    return GridSearchCV(LSTMClassifier(**BASE), GRID, cv=CV, n_jobs=n_jobs)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def compute_bound(X, y):
    """Seconds of one-thread compute in the search: every (candidate, split) fit and
    its scoring, one after another, fastrnn on one thread."""
    import fastrnn
    from sklearn.model_selection import ParameterGrid, StratifiedKFold
    from fastrnn import LSTMClassifier
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    total = 0.0
    try:
        for params in ParameterGrid(GRID):
            for tr, te in StratifiedKFold(CV).split(X, y):
                est = LSTMClassifier(**BASE, **params)
                total += timed(lambda: est.fit(X[tr], y[tr]).score(X[te], y[te]))[0]
    finally:
        fastrnn.set_num_threads(before)
    return total


def scheduler_cost(client, n=400):
    """Seconds per task of submitting and gathering n trivial tasks."""
    futures = client.map(abs, range(-n, 0), pure=False)
    client.gather(futures)                          # warm
    t, _ = timed(lambda: client.gather(client.map(abs, range(-n, 0), pure=False)))
    return t / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import joblib
    import distributed
    import fastrnn

    X, y = problem()
    n_fits = CV * int(np.prod([len(v) for v in GRID.values()]))
    res = {"problem": {"n": N, "steps": T, "features": F, "candidates": n_fits // CV,
                       "cv": CV, "fits": n_fits, "X_MB": X.nbytes / 1e6},
           "threads_here": fastrnn.get_num_threads(), "cores": os.cpu_count(),
           "routes": {}}
    res["pickle_X_s"] = timed(lambda: pickle.dumps(X, protocol=5))[0]
    res["compute_1thread_s"] = compute_bound(X, y)
    print(f"{n_fits} fits of LSTMClassifier on X {X.shape} ({X.nbytes / 1e6:.1f} MB); "
          f"their one-thread compute: {res['compute_1thread_s']:.1f} s", flush=True)

    def record(name, seconds, gs):
        # the 1-minute load average after the route: others' work on a shared machine
        # shows as load above the 2 this benchmark puts on it
        load = os.getloadavg()[0]
        res["routes"].setdefault(name, []).append(seconds)
        res.setdefault("load", {}).setdefault(name, []).append(load)
        res.setdefault("refit_s", {}).setdefault(name, []).append(gs.refit_time_)
        # the fits' and scorings' own seconds, as the workers measured them
        cvr = gs.cv_results_
        inside = float(CV * (cvr["mean_fit_time"] + cvr["mean_score_time"]).sum())
        res.setdefault("task_compute_s", {}).setdefault(name, []).append(inside)
        print(f"  {name:14s} {seconds:6.2f} s  (fits and scoring {inside:5.1f} s, refit "
              f"{gs.refit_time_:4.2f} s)  load {load:4.1f}", flush=True)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        client.run(fastrnn.get_num_threads)         # workers import fastrnn before timing
        res["dask_task_overhead_ms"] = 1e3 * scheduler_cost(client)
        res["scatter_X_s"] = timed(lambda: client.scatter([X, y], broadcast=True))[0]
        for _ in range(args.rounds):
            record("serial", *timed(lambda: search(1).fit(X, y)))
            record("loky n_jobs=2", *timed(lambda: search(2).fit(X, y)))
            with joblib.parallel_backend("dask"):
                record("dask", *timed(lambda: search(-1).fit(X, y)))
            with joblib.parallel_backend("dask", scatter=[X, y]):
                record("dask scatter", *timed(lambda: search(-1).fit(X, y)))
    res["best_s"] = {k: min(v) for k, v in res["routes"].items()}
    print(f"task overhead {res['dask_task_overhead_ms']:.2f} ms, pickling X "
          f"{res['pickle_X_s'] * 1e3:.1f} ms, scattering X to both workers "
          f"{res['scatter_X_s'] * 1e3:.0f} ms; ideal on 2 one-thread workers "
          f"{res['compute_1thread_s'] / 2:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
