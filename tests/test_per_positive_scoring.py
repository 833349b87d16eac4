"""Per-positive negatives (SAN, NSCaching, DANS) scored from the entity table: the EMU term without
gathered candidates, the batch membership test, and DANS's batched GAN steps, each against the
materialised computation it replaces (same negatives, same masks, same generator state)."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from kgestimator import KGEmbedder, make_kg, mutation, training
from kgestimator.data import factorize_triples
from kgestimator.filtering import TripleSet
from kgestimator.models import MODELS
from kgestimator.models._base import rows, sampled_scores
from kgestimator.mutation import emu_mask, emu_scores, mutated_scores, sampled_emu_scores, sampled_mutated_scores
from kgestimator.samplers import SAMPLERS, AdversarialSampler
from kgestimator.training import pairwise_fn, step_loss

from conftest import train_config

TOL = dict(rtol=1e-5, atol=1e-5)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _leaves(*shapes, seed=0):
    g = _gen(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def _grads(out, weights, leaves):
    return torch.autograd.grad((out * weights).sum(), leaves, retain_graph=True)


@pytest.mark.parametrize("ratio", [0.0, 0.06, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("blocks", [False, True], ids=["one-block", "many-blocks"])
def test_sampled_mutated_scores_equal_the_gathered_formula(ratio, blocks, monkeypatch):
    if blocks:  # blocks of 3 masked coordinates: every block boundary is crossed
        monkeypatch.setattr(mutation, "MASKED_BLOCK_ELEMENTS", 3 * 7)
    B, N, d, E = 7, 5, 6, 40
    q, table, pos = _leaves((B, 1, d), (E, d), (B, 1, d))
    ids = torch.randint(E, (B, N), generator=_gen(1))
    mask = emu_mask((N, d), ratio, _gen(2), "cpu")
    w = torch.randn(B, 1, N, generator=_gen(3), dtype=torch.float64)
    got = sampled_mutated_scores(q, table, ids, pos, mask)
    # today's computation: the gathered candidates, mutated, scored by the model's bilinear form
    want = mutated_scores(MODELS["distmult"](E, 2, d), q, pos, rows(table, ids), mask)
    torch.testing.assert_close(got, want, **TOL)
    for a, b in zip(_grads(got, w, [q, table, pos]), _grads(want, w, [q, table, pos])):
        torch.testing.assert_close(a, b, **TOL)
    # the plain scores handed in by the vanilla term give the same result
    plain = sampled_scores(q.view(B, d), table, ids).unsqueeze(1)
    torch.testing.assert_close(sampled_mutated_scores(q, table, ids, pos, mask, plain), want, **TOL)


def test_masked_kernel_backward_is_deterministic():
    q, table, pos = [t.float().detach().requires_grad_() for t in _leaves((50, 1, 8), (300, 8), (50, 1, 8))]
    ids = torch.randint(300, (50, 40), generator=_gen(1))
    mask = emu_mask((40, 8), 0.1, _gen(2), "cpu")

    def grads():
        return torch.autograd.grad(sampled_mutated_scores(q, table, ids, pos, mask).sum(), [q, table, pos])
    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)


def _block(model, B=6, n_ids=5, n_fake=2, seed=0):
    g = _gen(seed)
    anchor = model.entity[torch.randint(model.n_entities, (B, 1), generator=g)]
    rel = model.relation[torch.randint(model.n_relations, (B, 1), generator=g)]
    pos = model.entity[torch.randint(model.n_entities, (B, 1), generator=g)]
    ids = torch.randint(model.n_entities, (B, n_ids), generator=g)
    fake = torch.randn(B, n_fake, model.entity.shape[1], generator=g) if n_fake else None
    return model.query(anchor, rel, "tail"), pos, ids, fake


@pytest.mark.parametrize("model_name", ["distmult", "complex"])
@pytest.mark.parametrize("mode", [True, "mixup", "ls_only"])
@pytest.mark.parametrize("reuse", [False, True], ids=["fresh-draw", "reused-draw"])
@pytest.mark.parametrize("n_fake", [0, 2])
def test_sampled_emu_scores_equal_emu_scores_on_gathered_candidates(model_name, mode, reuse, n_fake):
    model = MODELS[model_name](60, 4, 6, 6.0, generator=_gen(0))
    q, pos, ids, fake = _block(model, n_fake=n_fake)
    pairwise = pairwise_fn(model)
    cand = rows(model.entity, ids)
    if fake is not None:
        cand = torch.cat([cand, fake], 1)
    pos_scores = model.match(q, pos)
    neg_scores = pairwise(q, cand) if reuse else None
    got = sampled_emu_scores(mode, model, q, pos, ids, fake, neg_scores, pos_scores, 0.3, _gen(5), pairwise)
    want = emu_scores(mode, model, q, pos, cand, neg_scores, pos_scores, 0.3, _gen(5), pairwise)
    torch.testing.assert_close(got, want, **TOL)
    w = torch.randn(want.shape, generator=_gen(6))
    for a, b in zip(_grads(got, w, list(model.parameters())), _grads(want, w, list(model.parameters()))):
        torch.testing.assert_close(a, b, **TOL)


def _steps(model_name, sampler_name, emu, full_table, monkeypatch, n_steps=2, **params):
    """Losses and gradients of ``n_steps`` steps with per-positive negatives scored from the table
    (``full_table``) or gathered, as the EMU term did before."""
    monkeypatch.setattr(training, "FULL_TABLE_ELEMENTS", training.FULL_TABLE_ELEMENTS if full_table else 0)
    kg = make_kg(n_entities=120, n_relations=8, n_triples=1200, random_state=0)
    ids, n_ent, n_rel = factorize_triples(kg.train)
    ids = torch.as_tensor(ids)
    gen = _gen(1)
    sampler = SAMPLERS[sampler_name](**({"n_random_walks": 10} if sampler_name == "san" else {})).fit(
        ids, n_ent, n_rel, generator=gen)
    model = MODELS[model_name](n_ent, n_rel, 8, 6.0, generator=_gen(2))
    cfg = train_config(model=model_name, sampler=sampler_name, emu=emu, dim=8, n_negatives=24, batch_size=64,
                       **params)
    out = []
    for step in range(n_steps):
        batch = ids[torch.randint(ids.shape[0], (64,), generator=gen)]
        loss = step_loss(model, pairwise_fn(model), sampler, cfg, batch, step, gen)
        out.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
        with torch.no_grad():
            for p, g in zip(model.parameters(), out[-1][1]):
                p -= 0.5 * g
    return out


@pytest.mark.parametrize("model_name", ["distmult", "complex"])
@pytest.mark.parametrize("sampler", ["san", "nscaching", "adversarial"])
@pytest.mark.parametrize("emu, ratio", [(True, 0.06), (True, 0.7), ("mixup", "auto"), ("ls_only", "auto")])
def test_step_from_the_table_equals_the_gathered_step(model_name, sampler, emu, ratio, monkeypatch):
    fast = _steps(model_name, sampler, emu, True, monkeypatch, mutation_ratio=ratio)
    gathered = _steps(model_name, sampler, emu, False, monkeypatch, mutation_ratio=ratio)
    for (la, ga), (lb, gb) in zip(fast, gathered):
        torch.testing.assert_close(la, lb, **TOL)
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("sampler", ["san", "nscaching", "adversarial"])
def test_emu_fit_with_per_positive_negatives_is_reproducible(sampler):
    kg = make_kg(n_entities=150, n_relations=8, n_triples=1500, random_state=1)
    params = dict(sampler=sampler, emu=True, dim=8, n_negatives=24, batch_size=128, n_epochs=2, random_state=3)
    a, b = KGEmbedder(**params).fit(kg.train), KGEmbedder(**params).fit(kg.train)
    assert torch.equal(a.model_.entity, b.model_.entity)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]


# ----------------------------------------------------------------------------- membership tests
def _brute(triples, anchor, rel, cand, side):
    known = set(map(tuple, triples.tolist()))
    return torch.tensor([[((a, r, c) if side == "tail" else (c, r, a)) in known for c in row]
                         for a, r, row in zip(anchor.tolist(), rel.tolist(), cand.tolist())])


@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("n_tests", [None, 1], ids=["bitmap", "binary-search"])
def test_triple_set_queries_match_the_known_triples(side, n_tests):
    g = _gen(0)
    triples = torch.stack([torch.randint(30, (300,), generator=g), torch.randint(3, (300,), generator=g),
                           torch.randint(30, (300,), generator=g)], 1)
    index = TripleSet(triples, 30, 3)
    for seed in range(3):  # the kept bitmap is cleared between calls
        g = _gen(seed + 1)
        anchor, rel = torch.randint(30, (20,), generator=g), torch.randint(3, (20,), generator=g)
        cand = torch.randint(30, (20, 30), generator=g)
        want = _brute(triples, anchor, rel, cand, side)
        with index.queries(anchor, rel, side, n_tests=n_tests) as known:
            assert torch.equal(known(torch.arange(20), cand), want)
            rows_ = torch.tensor([4, 4, 11])
            assert torch.equal(known(rows_, cand[rows_, 0]), want[rows_, 0])
        assert torch.equal(index.contains(anchor, rel, cand, side), want)
    if n_tests is None:
        assert hasattr(index, "_bitmap") and not index._bitmap.any()
        assert "_bitmap" not in pickle.loads(pickle.dumps(index)).__dict__


# ----------------------------------------------------------------------------- DANS
def test_generator_groups_give_the_fakes_of_every_row():
    s = AdversarialSampler(n_fake=3).fit(torch.zeros(1, 3, dtype=torch.long), 10, 2, generator=_gen())
    s._build(6, 6, torch.device("cpu"), _gen(1))
    x = torch.randn(4, 6, generator=_gen(2)).repeat(3, 1).requires_grad_()   # 12 rows, 4 conditions
    noise = torch.randn(12, 3, 6, generator=_gen(3))
    inverse = torch.arange(4).repeat(3)
    plain, pen_a = s.g_entity_(x, noise)
    grouped, pen_b = s.g_entity_(x, noise, (torch.arange(4), inverse))
    torch.testing.assert_close(grouped, plain, **TOL)
    torch.testing.assert_close(pen_b, pen_a, **TOL)
    ga = torch.autograd.grad(plain.sum(), x)[0].view(3, 4, 6).sum(0)
    gb = torch.autograd.grad(grouped.sum(), x)[0].view(3, 4, 6).sum(0)
    torch.testing.assert_close(gb, ga, **TOL)   # the same gradient per distinct condition


def _reference_discriminator_steps(s, real, fakes):
    """The discriminator steps as written before: real rows, fake tails, fake heads in three passes."""
    bce = F.binary_cross_entropy_with_logits
    for _ in range(s.d_steps):
        adv_real, _ = s.discriminator_(real)
        loss = bce(adv_real, torch.ones_like(adv_real)) / 2
        for side in range(2):
            f = torch.cat([fakes[0][side], fakes[1][side]])
            origin = torch.cat([torch.ones(fakes[0][side].shape[0]), torch.zeros(fakes[1][side].shape[0])])
            adv, aux = s.discriminator_(f)
            loss = loss + (bce(adv, torch.zeros_like(adv)) + s.aux_weight * bce(aux, origin)) / 8
        s.d_optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        s.d_optimizer_.step()


def test_batched_discriminator_steps_equal_the_three_pass_steps():
    g = _gen(0)
    real = torch.randn(8, 6, generator=g)[torch.randint(8, (40,), generator=g)]   # 40 rows, 8 distinct
    fakes = [[torch.randn(20, 6, generator=g) for _ in range(2)] for _ in range(2)]
    states = []
    for batched in (False, True):
        s = AdversarialSampler(d_steps=3).fit(torch.zeros(1, 3, dtype=torch.long), 10, 2, generator=_gen())
        s._build(6, 6, torch.device("cpu"), _gen(1))
        if batched:
            uniq, inverse, counts = torch.unique(real, dim=0, return_inverse=True, return_counts=True)
            s._train_discriminator(uniq, counts, fakes)
        else:
            _reference_discriminator_steps(s, real, fakes)
        states.append(s.discriminator_.state_dict())
    for name in states[0]:
        torch.testing.assert_close(states[1][name], states[0][name], **TOL)


def test_dans_generation_trains_no_generator_weights_but_reaches_the_anchors():
    kg = make_kg(n_entities=40, n_relations=8, n_triples=400, random_state=0)
    est = KGEmbedder(sampler="adversarial", dim=8, n_negatives=16, batch_size=64, max_steps=2, random_state=0)
    est.fit(kg.train)
    s, model = est.sampler_, est.model_
    batch = torch.tensor([[0, 0, 1], [2, 1, 3], [0, 0, 4]])
    anchor = model.entities(batch[:, 0]).detach().requires_grad_()
    query = model.query(anchor, model.relations(batch[:, 1]), "tail")
    for net in (s.g_entity_, s.g_relation_):
        net.zero_grad(set_to_none=True)
    s.generate(batch, "tail", model, anchor.unsqueeze(1), query.unsqueeze(1), _gen(), train=False).sum().backward()
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0
    assert all(p.grad is None for net in (s.g_entity_, s.g_relation_) for p in net.parameters())
    assert all(p.requires_grad for net in (s.g_entity_, s.g_relation_) for p in net.parameters())


def test_discriminator_heads_composed_equal_the_layers_applied_in_turn():
    from kgestimator.samplers.adversarial import Discriminator

    torch.manual_seed(0)
    d = Discriminator(6).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    adv, aux = d(x)
    z = d.trunk(x)
    want_adv, want_aux = d.adv(z).squeeze(-1), d.aux(z).squeeze(-1)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(aux, want_aux)
    w = torch.randn(2, 9, generator=_gen(1), dtype=torch.float64)
    params = list(d.parameters())
    got = torch.autograd.grad((adv * w[0] + aux * w[1]).sum(), params)
    want = torch.autograd.grad((want_adv * w[0] + want_aux * w[1]).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
