"""Hyperparameter search on a Dask cluster; pickling; torch threads per fit; GPU memory release."""

import os
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from conftest import FAST
from kgestimator import KGEmbedder
from kgestimator import _threads
from kgestimator.model_selection import TripleKFold

SMALL = {**FAST, "n_epochs": 3, "device": "cpu", "random_state": 0}


# ---------------------------------------------------------------------- pickling
def test_unfitted_estimator_pickles_small():
    # GridSearchCV sends one clone per fit to the workers: it must be parameters only
    blob = pickle.dumps(KGEmbedder(**SMALL, emu=True))
    assert len(blob) < 2048, len(blob)
    assert not hasattr(pickle.loads(blob), "model_")


def _tensors(obj, seen=None):
    """Every tensor reachable from ``obj`` (attributes, containers, modules, optimisers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, seen)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _tensors(value, seen)
    elif isinstance(obj, torch.optim.Optimizer):
        yield from _tensors(obj.state_dict(), seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("kgestimator", "torch")):
        yield from _tensors(vars(obj), seen)


@pytest.mark.parametrize("sampler", ["uniform", "nscaching", "adversarial"])
def test_fitted_estimator_pickles_with_cpu_tensors_and_predicts_the_same(kg, sampler):
    est = KGEmbedder(**SMALL, sampler=sampler).fit(kg.train)
    state = est.__getstate__()
    # the pickled state holds copies, never the live (possibly CUDA) objects
    assert state["model_"] is not est.model_ and state["sampler_"] is not est.sampler_
    found = list(_tensors(state))
    assert found and all(t.device.type == "cpu" for t in found)
    back = pickle.loads(pickle.dumps(est))
    assert back.device_ == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in _tensors(vars(back.sampler_)))
    np.testing.assert_array_equal(back.score_samples(kg.test), est.score_samples(kg.test))
    assert back.score(kg.test) == est.score(kg.test)


# ---------------------------------------------------------------------- threads
def test_n_threads_is_used_during_fit_and_the_callers_setting_restored(kg):
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        before = torch.get_num_threads()
        est = KGEmbedder(**SMALL, n_threads=1).fit(kg.train)
        assert est.n_threads_ == 1
        assert torch.get_num_threads() == before
        # None leaves torch's setting alone outside a Dask worker
        assert KGEmbedder(**SMALL).fit(kg.train).n_threads_ == before
    finally:
        torch.set_num_threads(previous)


def test_n_threads_above_the_cores_is_clipped():
    assert _threads.fit_threads(10_000) == _threads.usable_cores()
    assert _threads.fit_threads(None) is None  # not inside a Dask worker


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_bad_n_threads_is_refused(kg, value):
    with pytest.raises(ValueError, match="'n_threads' parameter"):
        KGEmbedder(**SMALL, n_threads=value).fit(kg.train)


class _Worker:
    nthreads = 1


def test_worker_share_follows_the_clusters_declaration(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _threads.worker_share(_Worker()) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(_threads, "usable_cores", lambda: 16)
    worker = _Worker()
    worker.nthreads = 4  # a threaded worker running four tasks at once on 16 cores
    assert _threads.worker_share(worker) == 4
    worker.nthreads = 32
    assert _threads.worker_share(worker) == 1


def test_cuda_cache_is_released_at_the_end_of_fit(kg, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    KGEmbedder(**SMALL).fit(kg.train)
    assert calls == [1]
    with pytest.raises(ValueError, match=r"shape \(n_triples, 3\)"):  # also when fit fails
        KGEmbedder(**SMALL).fit(kg.train[:, :2])
    assert calls == [1, 1]


# ---------------------------------------------------------------------- Dask
GRID = {"dim": [8, 16], "learning_rate": [0.01, 0.05]}


def _fit_in_worker(triples, before):
    """Run inside a Dask worker: the threads a fit used there, and torch's setting after it."""
    torch.set_num_threads(before)
    est = KGEmbedder(**SMALL).fit(triples)
    return est.n_threads_, torch.get_num_threads()


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_workers_import_this_kgestimator(cluster_client):
    import kgestimator

    # worker processes get this process's environment (PYTHONPATH included): the same package
    paths = cluster_client.run(lambda: __import__("kgestimator").__file__)
    assert set(paths.values()) == {kgestimator.__file__}


def test_grid_search_on_a_local_cluster_equals_the_sequential_run(kg, cluster_client):
    est = KGEmbedder(**SMALL)
    cv = TripleKFold(2, random_state=0)
    sequential = GridSearchCV(est, GRID, cv=cv).fit(kg.train)
    from distributed import get_task_stream

    with joblib.parallel_backend("dask"), get_task_stream(cluster_client) as stream:
        on_cluster = GridSearchCV(clone(est), GRID, cv=cv, n_jobs=-1).fit(kg.train)
    assert len(on_cluster.cv_results_["params"]) == 4
    for key in ("split0_test_score", "split1_test_score", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(on_cluster.cv_results_[key], sequential.cv_results_[key])
    assert on_cluster.best_params_ == sequential.best_params_
    # the fits ran on the workers, both of them
    assert len({task["worker"] for task in stream.data}) == 2


def test_fit_in_a_dask_worker_uses_the_workers_share_of_threads(kg, cluster_client):
    # the nanny declares OMP_NUM_THREADS=1 in its workers by default; torch's setting in the
    # worker is raised first so that following it is visible, and must be back after the fit
    before = min(2, os.cpu_count() or 1)
    used, after = cluster_client.submit(_fit_in_worker, kg.train, before, pure=False).result()
    assert used == 1
    assert after == before
