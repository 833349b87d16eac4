"""Memory: evaluation and top-k chunk to the memory there is; impossible models fail before training."""

import os
import time

import numpy as np
import pytest

import kgestimator.estimator
import kgestimator.evaluation
from conftest import FAST
from kgestimator import KGEmbedder, memory
from kgestimator.memory import InsufficientMemoryError


def test_impossible_model_fails_fast_with_the_estimate(kg):
    t0 = time.perf_counter()
    with pytest.raises(InsufficientMemoryError, match=r"needs at least [\d.]+ (GiB|TiB) on cpu, but [\d.]+ \w+ "
                                                      r"is available.*Lower 'dim', use sparse=True") as info:
        KGEmbedder(**{**FAST, "dim": 10**9}).fit(kg.train)
    assert time.perf_counter() - t0 < 10
    # the CLI and scikit-learn expect ValueError for bad requests; it is a MemoryError too
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemoryError)


def test_estimate_against_a_small_budget(kg, monkeypatch):
    est = KGEmbedder(**FAST, random_state=0)
    n_ent, n_rel = 60, 8
    # DistMult, Adam, dense: weights + gradients + 2 moments, plus the known-triple index, plus the
    # step's (B, 1 + N) scores, softmax and gradients
    need = 4 * (n_ent + n_rel) * FAST["dim"] * 4 + 48 * len(kg.train) + 24 * min(256, len(kg.train)) * 33
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    # here the step's scores outweigh the tiny tables, so the message names them
    with pytest.raises(InsufficientMemoryError, match=r"activations \(batch_size=256 x \(1 \+ n_negatives=32\) "
                                                      r"scores\) and the weights, optimiser state and triple index"):
        est.fit(kg.train)
    monkeypatch.setattr(memory, "available_bytes", lambda device: need)
    est.fit(kg.train)
    # sparse updates need no dense gradients: one copy less
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 4 * (n_ent + n_rel) * FAST["dim"])
    KGEmbedder(**FAST, sparse=True).fit(kg.train)


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="reads /proc/meminfo (Linux)")
def test_available_memory_is_read():
    free = memory.available_bytes("cpu")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert isinstance(free, int) and 0 < free <= total


@pytest.mark.parametrize("model", ["distmult", "transe"])
def test_ranking_and_topk_chunk_to_a_small_budget(kg, monkeypatch, model):
    est = KGEmbedder(**FAST, model=model, random_state=0).fit(kg.train, valid=kg.valid)
    metrics = est.evaluate(kg.test)
    top = est.predict_topk(kg.test[:, :2], k=5)
    head = est.predict_topk(kg.test[:, 1:], k=5, direction="head")
    assert kgestimator.evaluation.query_batch_size(est.model_) >= len(kg.test)  # one block before

    rows = []
    real = kgestimator.evaluation.score_all

    def spy(model, anchor, rel, side, *rest):
        rows.append(anchor.shape[0])
        return real(model, anchor, rel, side, *rest)

    monkeypatch.setattr(kgestimator.evaluation, "score_all", spy)
    monkeypatch.setattr(kgestimator.estimator, "score_all", spy)
    # room for 3 query rows of 60 entities at 16 bytes each, with the 4x margin
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * 16 * 60 * 3)
    assert est.evaluate(kg.test) == metrics
    np.testing.assert_array_equal(est.predict_topk(kg.test[:, :2], k=5)[0], top[0])
    np.testing.assert_array_equal(est.predict_topk(kg.test[:, 1:], k=5, direction="head")[0], head[0])
    assert max(rows) == 3 and sum(rows) == 2 * len(kg.test) + 2 * len(kg.test)
    rows.clear()
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)  # less than one row: still one at a time
    assert est.evaluate(kg.test[:4]) == est.evaluate(kg.test[:4], batch_size=100)
    assert set(rows[:8]) == {1}


def test_nbfnet_activations_are_estimated_and_refused_up_front(kg, monkeypatch):
    # NBFNet has no tables: what cannot fit is the step's O(layers x nodes x batch x dim) activations
    from kgestimator.models import NBFNet
    from types import SimpleNamespace

    params = dict(model="nbfnet", model_params={"n_layers": 2}, n_epochs=1, loss="bce")
    cfg = SimpleNamespace(batch_size=32, n_negatives=32, emu=False, emu_resample=True)
    need = memory.activation_estimate(NBFNet, 60, 8, len(kg.train), cfg, 32, {"n_layers": 2})[0]
    assert need >= 4 * 2 * memory.NBF_FLOATS_PER_NODE * 60 * 32 * 32
    monkeypatch.setattr(memory, "available_bytes", lambda device: need // 2)
    with pytest.raises(InsufficientMemoryError, match=r"activations \(2 layers x 12 x 60 nodes x batch_size=32 "
                                                      r"x dim=32.*Lower 'batch_size' or 'dim', or set model_params"):
        KGEmbedder(**params).fit(kg.train)
    # checkpointing keeps one layer's internals alive (and every layer's input): less, and it fits
    checkpointed = {"n_layers": 2, "checkpoint": True}
    small = memory.activation_estimate(NBFNet, 60, 8, len(kg.train), cfg, 32, checkpointed)[0]
    assert small < need
    monkeypatch.setattr(memory, "available_bytes", lambda device: small + (need - small) // 2 + 10**6)
    est = KGEmbedder(**{**params, "model_params": checkpointed}).fit(kg.train)
    # the model's defaults filled the sizes left at None, and get_params still says None
    assert est.model_.dim == 32 and est.get_params()["dim"] is None and est.get_params()["batch_size"] is None
