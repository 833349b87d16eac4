"""Filtered ranking with realistic ties (docs/algorithms.md §6)."""

import math

import numpy as np
import pytest
import torch

from kgestimator.evaluation import metrics_from_ranks, rank_triples, realistic_ranks
from kgestimator.filtering import KnownTriples
from kgestimator.models import EMBEDDING_MODELS as MODELS


def test_ties_give_realistic_rank():
    scores = torch.tensor([[5.0, 5.0, 5.0]])
    opt, pess, real = realistic_ranks(scores, torch.tensor([0]), torch.zeros(1, 3, dtype=torch.bool))
    assert (opt.item(), pess.item(), real.item()) == (1, 3, 2.0)


def test_filtered_candidates_never_affect_rank():
    scores = torch.tensor([[1.0, 9.0, 8.0, 0.5]])
    filt = torch.tensor([[False, True, False, False]])
    *_, real = realistic_ranks(scores, torch.tensor([0]), filt)
    assert real.item() == 2.0
    # filtering the target itself is ignored: it always stays in the ranking
    filt_target = torch.tensor([[True, True, False, False]])
    *_, real = realistic_ranks(scores, torch.tensor([0]), filt_target)
    assert real.item() == 2.0


def test_nan_target_ranks_last():
    scores = torch.tensor([[math.nan, 1.0, 2.0, 3.0]])
    *_, real = realistic_ranks(scores, torch.tensor([0]), torch.zeros(1, 4, dtype=torch.bool))
    assert real.item() == 4.0


def test_known_triples_mask():
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 2], [0, 1, 4]])
    known = KnownTriples(triples, 5, 2)
    m = known.mask(torch.tensor([0, 3, 2]), torch.tensor([0, 1, 0]), "tail")
    assert m.tolist() == [[False, True, True, False, False],
                          [False, False, True, False, False],
                          [False] * 5]
    mh = known.mask(torch.tensor([2]), torch.tensor([0]), "head")
    assert mh.tolist() == [[True, False, False, False, False]]


def test_rank_triples_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    for name in MODELS:
        model = MODELS[name](30, 4, 8, generator=gen)
        triples = torch.stack([torch.randint(30, (40,), generator=gen), torch.randint(4, (40,), generator=gen),
                               torch.randint(30, (40,), generator=gen)], 1)
        known = KnownTriples(triples, 30, 4)
        for side in ("tail", "head"):
            got = rank_triples(model, triples, known, side, batch_size=7)
            want = []
            with torch.no_grad():
                for h, r, t in triples.tolist():
                    ents = torch.arange(30)
                    if side == "tail":
                        s = model.score(model.entity[h], model.relation[r], model.entity[ents])
                        target, others = t, {e for hh, rr, e in triples.tolist() if hh == h and rr == r}
                    else:
                        s = model.score(model.entity[ents], model.relation[r], model.entity[t])
                        target, others = h, {e for e, rr, tt in triples.tolist() if tt == t and rr == r}
                    keep = [e for e in range(30) if e == target or e not in others]
                    st = s[target]
                    higher = sum(1 for e in keep if e != target and s[e] > st)
                    ties = sum(1 for e in keep if e != target and s[e] == st)
                    want.append(1 + higher + ties / 2)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, err_msg=f"{name} {side}")


def test_metrics_from_ranks():
    m = metrics_from_ranks([1, 2, 4, 20])
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.05) / 4)
    assert m["hits@1"] == 0.25 and m["hits@3"] == 0.5 and m["hits@10"] == 0.75
    assert m["mr"] == pytest.approx(6.75)


def test_minus_inf_target_ties_with_minus_inf_candidates_only():
    scores = torch.tensor([[-math.inf, -math.inf, 1.0, -math.inf]])
    filt = torch.tensor([[False, False, False, True]])
    opt, pess, real = realistic_ranks(scores, torch.tensor([0]), filt)
    # candidate 2 is higher, candidate 1 ties, candidate 3 is filtered
    assert (opt.item(), pess.item(), real.item()) == (2, 3, 2.5)


def test_nan_candidates_never_outrank():
    scores = torch.tensor([[0.5, math.nan, 0.2, 0.9]])
    opt, pess, _ = realistic_ranks(scores, torch.tensor([0]), torch.zeros(1, 4, dtype=torch.bool))
    assert (opt.item(), pess.item()) == (2, 2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_ranks_equal_the_counting_ranks(seed, dtype):
    from kgestimator.evaluation import filtered_realistic_ranks

    g = torch.Generator().manual_seed(seed)
    Q, n = 9, 13
    # few distinct values, so ties are common; then the special values
    scores = torch.randint(4, (Q, n), generator=g).to(dtype)
    specials = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    where = torch.rand(Q, n, generator=g) < 0.15
    scores[where] = specials[torch.randint(3, (int(where.sum()),), generator=g)]
    target = torch.randint(n, (Q,), generator=g)
    rows = torch.randint(Q, (20,), generator=g).sort().values   # duplicates and the target itself included
    cols = torch.randint(n, (20,), generator=g)
    mask = torch.zeros(Q, n, dtype=torch.bool)
    mask[rows, cols] = True
    want = realistic_ranks(scores.clone(), target, mask)[2]
    got = filtered_realistic_ranks(scores.clone(), target, rows, cols)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


def test_repeated_evaluation_reuses_encoding_and_filter_index_and_refit_drops_them(monkeypatch):
    import kgestimator.estimator as estimator_module
    from kgestimator import KGEmbedder, make_kg

    kg = make_kg(n_entities=40, n_relations=8, n_triples=600, random_state=0)
    est = KGEmbedder(dim=8, n_negatives=8, batch_size=128, n_epochs=2, random_state=0).fit(kg.train)
    built, encoded = [], []
    real_index, real_encode = estimator_module.KnownTriples, estimator_module._encode
    monkeypatch.setattr(estimator_module, "KnownTriples", lambda *a: built.append(1) or real_index(*a))
    monkeypatch.setattr(estimator_module, "_encode", lambda *a, **k: encoded.append(1) or real_encode(*a, **k))
    first = est.evaluate(kg.test, filter_triples=kg.valid)
    assert len(built) == 1 and len(encoded) == 2
    assert est.evaluate(kg.test.copy(), filter_triples=kg.valid.copy()) == first  # same content: no rebuild
    assert len(built) == 1 and len(encoded) == 2
    other = est.evaluate(kg.test[:50], filter_triples=kg.valid)                   # new X: its own filter
    assert len(built) == 2 and len(encoded) == 3
    assert other == KGEmbedder(dim=8, n_negatives=8, batch_size=128, n_epochs=2, random_state=0).fit(
        kg.train).evaluate(kg.test[:50], filter_triples=kg.valid)
    # a refit on other triples changes the vocabulary and the known triples: nothing is reused
    est.set_params(n_epochs=1).fit(kg.train[:300])
    n_built = len(built)
    refit = est.evaluate(kg.test, filter_triples=kg.valid)
    assert len(built) == n_built + 1
    fresh = KGEmbedder(dim=8, n_negatives=8, batch_size=128, n_epochs=1, random_state=0).fit(kg.train[:300])
    assert refit == fresh.evaluate(kg.test, filter_triples=kg.valid)
