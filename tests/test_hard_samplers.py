"""SAN, NSCaching and DANS: each sampler's defining behaviour, reproducibility, EMU."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.model_selection import GridSearchCV

from kgestimator import KGEmbedder
from kgestimator.filtering import TripleSet
from kgestimator.models import MODELS
from kgestimator.samplers import (SAMPLERS, AdversarialSampler, NSCachingSampler, SANSampler,
                                  make_sampler)
from kgestimator.training import group_logits

from conftest import FAST, train_config

HARD = ["san", "nscaching", "adversarial"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _path(n=12):
    """A path graph 0 - 1 - ... - (n-1), one relation."""
    return torch.tensor([[i, 0, i + 1] for i in range(n - 1)])


# ----------------------------------------------------------------------------- SAN
@pytest.mark.parametrize("k", [1, 2, 3])
def test_san_exact_pools_are_the_k_hop_ball(k):
    s = SANSampler(k_hop=k, n_random_walks=0).fit(_path(), 12, 1, generator=_gen())
    for e in range(12):
        expected = set(range(max(0, e - k), min(11, e + k) + 1))
        assert set(s.pool(e).tolist()) == expected


def test_san_random_walks_restart_from_the_entity():
    # on a path graph a k-step walk from e ends at distance k, k-2, ... from e
    # (same parity as k); with proper restarts nothing lies further than k away
    k = 2
    s = SANSampler(k_hop=k, n_random_walks=200, walks="restarted").fit(_path(30), 30, 1, generator=_gen())
    for e in range(30):
        pool = set(s.pool(e).tolist())
        reachable = {v for v in range(30) if abs(v - e) <= k and (abs(v - e) - k) % 2 == 0}
        if e in (0, 29):  # an end of the path: every walk first steps inwards
            reachable = {v for v in reachable if abs(v - e) <= k}
        assert pool and pool <= reachable
    assert set(s.pool(15).tolist()) == {13, 15, 17}


def test_san_chained_walks_are_the_default_and_drift_beyond_k():
    k = 2
    s = SANSampler(k_hop=k, n_random_walks=200).fit(_path(30), 30, 1, generator=_gen())
    far = max(max(abs(v - e) for v in s.pool(e).tolist()) for e in range(30))
    assert far > 3 * k


@pytest.mark.parametrize("legacy, walks", [(True, "chained"), (False, "restarted")])
def test_san_deprecated_legacy_flag_overrides_walks_with_a_warning(legacy, walks):
    other = {"chained": "restarted", "restarted": "chained"}[walks]
    with pytest.warns(FutureWarning, match="legacy_chained_walks.*deprecated.*walks="):
        old = SANSampler(k_hop=2, n_random_walks=50, walks=other, legacy_chained_walks=legacy).fit(
            _path(30), 30, 1, generator=_gen())
    new = SANSampler(k_hop=2, n_random_walks=50, walks=walks).fit(_path(30), 30, 1, generator=_gen())
    assert torch.equal(old.pool_indptr_, new.pool_indptr_) and torch.equal(old.pool_indices_, new.pool_indices_)


def test_san_pools_are_capped():
    full = torch.tensor([[i, 0, j] for i in range(20) for j in range(20) if i != j])
    s = SANSampler(k_hop=1, n_random_walks=0, max_candidates=5).fit(full, 20, 1, generator=_gen())
    sizes = (s.pool_indptr_[1:] - s.pool_indptr_[:-1])
    assert int(sizes.max()) == 5 and int(sizes.min()) == 5
    assert len(set(s.pool(3).tolist())) == 5


def test_san_negatives_come_from_the_pool_and_skip_true_answers():
    triples = _path()
    s = SANSampler(k_hop=2, n_random_walks=0).fit(triples, 12, 1, generator=_gen())
    batch = torch.tensor([[5, 0, 6]])
    tails = s.sample(batch, "tail", 1, 400, _gen(1))
    assert set(tails.flatten().tolist()) == {3, 4, 5, 7}      # pool {3..7} minus the true tail 6
    heads = s.sample(batch, "head", 1, 400, _gen(2))
    assert set(heads.flatten().tolist()) == {4, 6, 7, 8}      # pool of 6 {4..8} minus the true head 5


def test_san_falls_back_to_uniform_when_the_pool_holds_only_answers():
    # entity 0's 1-hop pool is {0, 1}; both are known tails of (0, r0)
    triples = torch.tensor([[0, 0, 1], [0, 0, 0], [2, 0, 3], [3, 0, 4], [4, 0, 5]])
    s = SANSampler(k_hop=1, n_random_walks=0).fit(triples, 40, 1, generator=_gen())
    ids = s.sample(torch.tensor([[0, 0, 1]]), "tail", 1, 500, _gen())
    assert not ({0, 1} & set(ids.flatten().tolist()))
    assert len(set(ids.flatten().tolist())) > 30


def test_san_isolated_anchor_gets_uniform_negatives():
    s = SANSampler(k_hop=2, n_random_walks=50).fit(_path(), 50, 1, generator=_gen())
    assert s.pool(40).numel() == 0
    ids = s.sample(torch.tensor([[40, 0, 41]]), "tail", 1, 500, _gen())
    assert ids.max() >= 12  # beyond the path: uniform over all 50 entities


@pytest.mark.parametrize("params, name", [
    (dict(k_hop=0), "k_hop"), (dict(n_random_walks=-1), "n_random_walks"),
    (dict(max_candidates=0), "max_candidates"), (dict(k_hop=2.5), "k_hop"),
    (dict(walks="restart"), "walks"), (dict(walks=True), "walks"),
    (dict(legacy_chained_walks="yes"), "legacy_chained_walks"),
])
def test_san_validates_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        SANSampler(**params).fit(_path(), 12, 1)


# ------------------------------------------------------------------------ NSCaching
def _scoring_setup(n_entities=20, star=7):
    """DistMult where entity ``star`` scores far above every other tail of every query."""
    triples = torch.tensor([[0, 0, 1], [2, 0, 3], [4, 1, 5], [0, 1, 6]])
    model = MODELS["distmult"](n_entities, 2, 8, generator=_gen())
    with torch.no_grad():
        model.relation.fill_(1.0)
        model.entity[:6].fill_(1.0)
        model.entity[star].fill_(50.0)
    return triples, model


@pytest.mark.parametrize("update", ["importance", "top"])
def test_nscaching_admits_the_top_scored_entity_and_keeps_its_shape(update):
    triples, model = _scoring_setup()
    s = NSCachingSampler(cache_size=4, candidate_size=300, cache_update=update).fit(
        triples, 20, 2, generator=_gen())
    shapes = {side: tuple(c.shape) for side, c in s.caches_.items()}
    assert shapes == {"tail": (4, 4), "head": (4, 4)}    # distinct (h, r) and (r, t) keys
    s.caches_["tail"][s.caches_["tail"] == 7] = 8  # start from caches without the star
    q = model.query(model.entities(triples[:, 0]), model.relations(triples[:, 1]), "tail").unsqueeze(1)
    s.update(triples, "tail", model, q, None, None, _gen(1))
    assert {side: tuple(c.shape) for side, c in s.caches_.items()} == shapes
    assert bool((s.caches_["tail"] == 7).any(1).all())   # every row now holds the star
    assert s.caches_["tail"].min() >= 0 and s.caches_["tail"].max() < 20


def test_nscaching_samples_from_the_cache_rows():
    triples, _ = _scoring_setup()
    s = NSCachingSampler(cache_size=3).fit(triples, 20, 2, generator=_gen())
    ids = s.sample(triples, "head", len(triples), 50, _gen())
    rows = s.rows(triples, "head")
    for i in range(len(triples)):
        assert set(ids[i].tolist()) <= set(s.caches_["head"][rows[i]].tolist())


def test_nscaching_keeps_known_answers_out_of_the_cache(kg):
    est = KGEmbedder(sampler=NSCachingSampler(cache_size=10), **FAST, random_state=0).fit(kg.train)
    s, ids = est.sampler_, est._known_ids
    known = TripleSet(ids, len(est.entities_), len(est.relations_))
    for side, col in (("tail", 0), ("head", 2)):
        rows = s.rows(ids, side)
        cached = s.caches_[side][rows]
        touched = known.contains(ids[:, col], ids[:, 1], cached, side)
        assert not bool(touched.any())


def test_nscaching_rejects_unknown_keys():
    triples, _ = _scoring_setup()
    s = NSCachingSampler().fit(triples, 20, 2, generator=_gen())
    with pytest.raises(ValueError, match="no cache row"):
        s.sample(torch.tensor([[9, 1, 9]]), "tail", 1, 5, _gen())


@pytest.mark.parametrize("params, name", [
    (dict(cache_size=0), "cache_size"), (dict(temperature=0.0), "temperature"),
    (dict(cache_update="best"), "cache_update"), (dict(candidate_size=-1), "candidate_size"),
])
def test_nscaching_validates_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        NSCachingSampler(**params).fit(_path(), 12, 1)


# ----------------------------------------------------------------------------- DANS
def _dans_inputs(model_name="distmult", n=64, seed=0):
    g = _gen(seed)
    triples = torch.stack([torch.randint(30, (n,), generator=g), torch.randint(3, (n,), generator=g),
                           torch.randint(30, (n,), generator=g)], 1)
    model = MODELS[model_name](30, 3, 8, gamma=6.0, generator=g)
    anchor = model.entities(triples[:, 0]).unsqueeze(1)
    q = model.query(anchor, model.relations(triples[:, 1]).unsqueeze(1), "tail")
    return triples, model, anchor, q


def _params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


@pytest.mark.parametrize("model_name", ["distmult", "rotate", "hake"])
def test_dans_generates_candidate_embeddings(model_name):
    triples, model, anchor, q = _dans_inputs(model_name)
    s = AdversarialSampler(n_fake=3).fit(triples, 30, 3, generator=_gen())
    fakes = s.generate(triples, "tail", model, anchor, q, _gen(), train=True)
    assert fakes.shape == (64, 6, model.entity.shape[1])
    assert fakes.abs().max() <= 1.0
    fakes.sum().backward()  # the base loss reaches the anchors through the generators
    assert model.entity.grad is not None and model.entity.grad.abs().sum() > 0


def test_dans_trains_generators_film_and_both_discriminator_heads():
    triples, model, anchor, q = _dans_inputs()
    s = AdversarialSampler().fit(triples, 30, 3, generator=_gen())
    s.generate(triples, "tail", model, anchor, q, _gen())           # builds the networks
    nets = {"g_entity": s.g_entity_, "g_relation": s.g_relation_, "discriminator": s.discriminator_}
    before = {k: _params(v) for k, v in nets.items()}
    for _ in range(3):
        s.generate(triples, "tail", model, anchor, q, _gen(), train=True)
    for key, net in nets.items():
        assert _changed(before[key], net) == set(before[key]), key
    assert {"film.first.weight", "film.second"} <= _changed(before["g_entity"], s.g_entity_)


def test_dans_legacy_flags_reproduce_the_reference_bugs():
    triples, model, anchor, q = _dans_inputs()
    s = AdversarialSampler(legacy_frozen_film=True, aux_weight=0.0).fit(triples, 30, 3, generator=_gen())
    s.generate(triples, "tail", model, anchor, q, _gen())
    before_g, before_d = _params(s.g_relation_), _params(s.discriminator_)
    for _ in range(3):
        s.generate(triples, "tail", model, anchor, q, _gen(), train=True)
    changed = _changed(before_g, s.g_relation_)
    assert not any(name.startswith("film.") for name in changed) and "lin1.weight" in changed
    # with the auxiliary loss at 0 (the reference's effective value) its head never learns
    assert not any(name.startswith("aux.") for name in _changed(before_d, s.discriminator_))


@pytest.mark.parametrize("aliasing", [False, True])
def test_dans_entity_pathway_reaches_the_loss_unless_aliased(aliasing):
    triples, model, anchor, q = _dans_inputs()
    s = AdversarialSampler(n_fake=2, legacy_aliasing=aliasing).fit(triples, 30, 3, generator=_gen())
    with torch.no_grad():
        s.generate(triples, "tail", model, anchor, q, _gen())  # builds the networks
        a = s.generate(triples, "tail", model, anchor, q, _gen(5))
        b = s.generate(triples, "tail", model, anchor, q + 1.0, _gen(5))
    entity_half_unchanged = torch.equal(a[:, :2], b[:, :2])
    # G_E sees only the anchor: a different query leaves its half alone, unless the
    # reference's aliasing feeds G_R into both halves
    assert entity_half_unchanged is (not aliasing)
    assert not torch.equal(a[:, 2:], b[:, 2:])


def test_dans_negatives_move_towards_the_positives(kg):
    def cosine(est):
        m, ids = est.model_, est._known_ids[:400]
        with torch.no_grad():
            h, r, t = m.entities(ids[:, 0]), m.relations(ids[:, 1]), m.entities(ids[:, 2])
            fakes = est.sampler_.generate(ids, "tail", m, h.unsqueeze(1), m.query(h, r, "tail").unsqueeze(1),
                                          _gen(1))
        return F.cosine_similarity(fakes, t.unsqueeze(1), dim=-1).mean().item()

    settings = dict(model="rotate", gamma=6.0, dim=16, n_negatives=32, batch_size=500, learning_rate=0.02,
                    random_state=0)
    early = cosine(KGEmbedder(sampler="adversarial", n_epochs=1, **settings).fit(kg.train))
    late = cosine(KGEmbedder(sampler="adversarial", n_epochs=10, **settings).fit(kg.train))
    assert late > early + 0.1


def test_dans_needs_room_for_sampled_negatives(kg):
    est = KGEmbedder(sampler=AdversarialSampler(n_fake=8), **{**FAST, "n_negatives": 16})
    with pytest.raises(ValueError, match="n_negatives"):
        est.fit(kg.train)


# --------------------------------------------------------------- every hard sampler
@pytest.mark.parametrize("sampler", HARD)
@pytest.mark.parametrize("emu", [False, True])
def test_sampler_fits_with_and_without_emu(kg, sampler, emu):
    est = KGEmbedder(sampler=sampler, emu=emu, **FAST, random_state=0).fit(kg.train)
    assert np.isfinite([h["loss"] for h in est.history_]).all()
    assert est.score(kg.test) > 2.0 / 60  # above chance on a 60-entity graph


@pytest.mark.parametrize("sampler", HARD)
def test_sampler_is_reproducible(kg, sampler):
    fits = [KGEmbedder(sampler=sampler, emu=True, **FAST, random_state=0).fit(kg.train) for _ in range(2)]
    assert [h["loss"] for h in fits[0].history_] == [h["loss"] for h in fits[1].history_]
    assert torch.equal(fits[0].model_.entity, fits[1].model_.entity)


@pytest.mark.parametrize("sampler", HARD)
def test_sampler_composes_with_self_adversarial_loss(kg, sampler):
    est = KGEmbedder(sampler=sampler, loss="self_adversarial", **FAST, random_state=0).fit(kg.train)
    assert np.isfinite(est.history_[-1]["loss"])


@pytest.mark.parametrize("model_name", ["distmult", "transe", "rotate"])
@pytest.mark.parametrize("sampler", HARD)
def test_emu_mutates_the_samplers_negatives(sampler, model_name):
    triples = torch.randint(60, (40, 3), generator=_gen())
    triples[:, 1] %= 8
    model = MODELS[model_name](60, 8, 8, gamma=6.0, generator=_gen())
    s = make_sampler(sampler).fit(triples, 60, 8, generator=_gen())
    cfg = train_config(n_negatives=16, emu=True, emu_resample=False, mutation_ratio=1.0)
    logits, emu_logits, _ = group_logits(model, model.pairwise, s, cfg, triples, "tail", _gen())
    assert logits.shape == emu_logits.shape == (40, 17)
    # mutation_ratio=1 copies every coordinate from the positive: each mutated
    # negative, generated ones included, scores exactly like the positive
    torch.testing.assert_close(emu_logits[:, 1:], emu_logits[:, :1].expand(-1, 16), rtol=1e-5, atol=1e-5)


def test_grid_search_reaches_sampler_parameters(kg):
    est = KGEmbedder(sampler=NSCachingSampler(), **FAST, random_state=0)
    search = GridSearchCV(est, {"sampler__cache_size": [5, 20]}, cv=2).fit(kg.train)
    assert search.best_params_["sampler__cache_size"] in (5, 20)
    assert search.best_estimator_.sampler_.caches_["tail"].shape[1] == search.best_params_["sampler__cache_size"]


def test_registry_lists_every_sampler():
    assert set(SAMPLERS) == {"uniform", "bernoulli", "san", "nscaching", "adversarial"}


@pytest.mark.parametrize("params, name", [
    (dict(n_fake=0), "n_fake"), (dict(noise_std=-1.0), "noise_std"),
    (dict(d_steps=1.5), "d_steps"), (dict(legacy_aliasing=1), "legacy_aliasing"),
])
def test_dans_validates_parameters(params, name):
    with pytest.raises(ValueError, match=f"AdversarialSampler: the '{name}'"):
        AdversarialSampler(**params).fit(_path(), 12, 1)


@pytest.mark.parametrize("walks", [0, 5])
def test_san_graph_without_edges_samples_uniformly(walks):
    loops = torch.tensor([[0, 0, 0], [1, 0, 1]])  # self-loops only: no neighbours anywhere
    s = SANSampler(k_hop=2, n_random_walks=walks).fit(loops, 10, 1, generator=_gen())
    assert s.pool_indices_.numel() == 0
    ids = s.sample(loops, "tail", 2, 50, _gen())
    assert not bool((ids[0] == 0).any()) and ids.max() < 10


def test_too_many_generated_negatives_are_refused_before_anything_is_built(kg, monkeypatch):
    import kgestimator.estimator as estimator

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built before the parameters were checked")

    monkeypatch.setattr(estimator, "make_model", no_build)
    with pytest.raises(ValueError, match=r"generates 4 negatives per positive.*n_negatives=4"):
        KGEmbedder(**{**FAST, "n_negatives": 4}, sampler=AdversarialSampler(n_fake=2)).fit(kg.train)
