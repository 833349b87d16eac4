"""EMU mutation, ULS, the combined loss and self-adversarial weights (docs/algorithms.md §2.2, §5)."""

import math

import pytest
import torch

from kgestimator import losses
from kgestimator.models import EMBEDDING_MODELS as MODELS
from kgestimator.mutation import emu_mask, mixup_scores, mixup_weights, mutate, mutated_scores


def _model(name, seed=0):
    return MODELS[name](20, 3, 6, gamma=6.0, generator=torch.Generator().manual_seed(seed))


def _block(model, C=2, c=3, N=5, side="tail"):
    g = torch.Generator().manual_seed(1)
    anchor = model.entity[torch.randint(20, (C, c), generator=g)]
    rel = model.relation[torch.randint(3, (C, c), generator=g)]
    pos = model.entity[torch.randint(20, (C, c), generator=g)]
    neg = model.entity[torch.randint(20, (C, N), generator=g)]
    return model.query(anchor, rel, side), pos, neg


def test_mask_fraction_matches_mutation_ratio():
    g = torch.Generator().manual_seed(0)
    mask = emu_mask((50, 256, 100), 0.61, g, "cpu")
    assert mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(0.61, abs=0.005)


def test_mutate_copies_positive_where_mask_is_true():
    pos = torch.arange(6.0).view(1, 2, 3)                  # two positives
    neg = -torch.ones(1, 4, 3)
    mask = torch.zeros(1, 4, 3, dtype=torch.bool)
    mask[0, 1, 0] = True
    mask[0, 3] = True
    out = mutate(pos, neg, mask)
    assert out.shape == (1, 2, 4, 3)
    assert torch.equal(out[0, :, 0], -torch.ones(2, 3))                     # untouched negative
    assert torch.equal(out[0, 1, 1], torch.tensor([3.0, -1.0, -1.0]))       # one coordinate copied
    assert torch.equal(out[0, 0, 3], pos[0, 0]) and torch.equal(out[0, 1, 3], pos[0, 1])


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-chunk-mask", "shared-mask"])
def test_mutated_scores_fast_path_equals_materialised(name, side, shared):
    model = _model(name)
    q, pos, neg = _block(model, side=side)
    shape = neg.shape[1:] if shared else neg.shape
    mask = emu_mask(shape, 0.5, torch.Generator().manual_seed(3), "cpu")
    got = mutated_scores(model, q, pos, neg, mask)
    full = mask.expand(neg.shape)
    # written out by hand: candidate (C, c, N, de) = positive where masked, else negative
    cand = torch.where(full.unsqueeze(1), pos.unsqueeze(2), neg.unsqueeze(1))
    torch.testing.assert_close(got, model.match(q.unsqueeze(2), cand), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mutate(pos, neg, mask), cand)


def test_a_shared_mask_is_the_same_for_every_chunk_and_differs_between_negatives():
    model = _model("distmult")
    q, pos, neg = _block(model, C=2, c=1, N=2)
    neg = neg[:1, :1].expand(2, 2, -1)                    # one negative in both slots of both chunks
    q, pos = torch.stack([q[0], q[0]]), torch.stack([pos[0], pos[0]])
    mask = torch.tensor([[True, False] * 3, [False, True] * 3])
    got = mutated_scores(model, q, pos, neg, mask)
    torch.testing.assert_close(got[0], got[1])
    assert not torch.allclose(got[0, 0, 0], got[0, 0, 1])


@pytest.mark.parametrize("name", list(MODELS))
def test_ratio_zero_keeps_negatives_and_ratio_one_gives_positive(name):
    model = _model(name)
    q, pos, neg = _block(model)
    none = torch.zeros(neg.shape, dtype=torch.bool)
    torch.testing.assert_close(mutated_scores(model, q, pos, neg, none), model.pairwise(q, neg))
    full = ~none
    pos_scores = model.match(q, pos)
    got = mutated_scores(model, q, pos, neg, full)
    torch.testing.assert_close(got, pos_scores.unsqueeze(-1).expand_as(got), rtol=1e-5, atol=1e-5)


def test_emu_loss_when_every_negative_equals_the_positive():
    # all logits in a row identical: L_emu = (1 + N beta) log(1 + N)
    N, beta = 8, 0.25
    logits = torch.full((3, N + 1), 2.5)
    got = losses.soft_cross_entropy(logits, beta)
    assert got.item() == pytest.approx((1 + N * beta) * math.log(1 + N), rel=1e-6)


def test_uls_optimum_margin_is_log_one_over_beta():
    beta, N = 0.25, 6
    logits = torch.zeros(1, N + 1, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = losses.soft_cross_entropy(logits, beta)
        loss.backward()
        return loss

    opt.step(closure)
    gaps = (logits[0, 0] - logits[0, 1:]).detach()
    torch.testing.assert_close(gaps, torch.full((N,), math.log(1 / beta)), atol=1e-4, rtol=0)


def test_uls_gradient_formula():
    beta = 0.53
    logits = torch.randn(1, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    losses.soft_cross_entropy(logits, beta).backward()
    y = torch.tensor([1.0] + [beta] * 4)
    want = y.sum() * torch.softmax(logits.detach(), -1) - y
    torch.testing.assert_close(logits.grad, want)


def test_combined_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    van = torch.randn(4, 257, generator=g)
    emu = torch.randn(4, 257, generator=g)
    l_van = losses.soft_cross_entropy(van)
    got = losses.emu_combined_loss(l_van, emu, alpha=0.11, beta=0.53, n_negatives=256)
    logp = torch.log_softmax(emu, -1)
    l_emu = (-(logp[:, 0] + 0.53 * logp[:, 1:].sum(-1))).mean()
    torch.testing.assert_close(got, l_emu / 256 + 0.11 * torch.nn.functional.cross_entropy(van, torch.zeros(4, dtype=torch.long)))
    unnormalised = losses.emu_combined_loss(l_van, emu, alpha=0.11, beta=0.53, n_negatives=256, normalize=False)
    torch.testing.assert_close(unnormalised, l_emu + 0.11 * l_van)


def test_self_adversarial_weights_carry_no_gradient():
    logits = torch.tensor([[1.0, 0.5, -0.3, 2.0]], requires_grad=True)
    losses.logistic_loss(logits, adversarial_temperature=1.0).backward()
    neg = logits.detach()[0, 1:]
    w = torch.softmax(neg, -1)
    # d/ds_k of -w_k log sigmoid(-s_k) with w constant = w_k * sigmoid(s_k), halved
    torch.testing.assert_close(logits.grad[0, 1:], 0.5 * w * torch.sigmoid(neg))
    uniform = torch.tensor([[1.0, 0.5, -0.3, 2.0]])
    plain = losses.logistic_loss(uniform)
    want = 0.5 * (-torch.nn.functional.logsigmoid(uniform[0, 0]) - torch.nn.functional.logsigmoid(-uniform[0, 1:]).mean())
    torch.testing.assert_close(plain, want)


def test_mixup_weights_mean_and_scores():
    lam = mixup_weights((200_000,), torch.Generator().manual_seed(0), "cpu")
    assert lam.mean().item() == pytest.approx(2 / 3, abs=0.005)
    model = _model("distmult")
    q, pos, neg = _block(model)
    lam = mixup_weights(neg.shape[:2], torch.Generator().manual_seed(1), "cpu")
    fast = mixup_scores(model, q, pos, neg, model.pairwise(q, neg), model.match(q, pos), lam)
    mixed = lam[:, None, :, None] * neg.unsqueeze(1) + (1 - lam[:, None, :, None]) * pos.unsqueeze(2)
    torch.testing.assert_close(fast, model.match(q.unsqueeze(2), mixed), rtol=1e-5, atol=1e-5)


def test_n3_on_batch_factors():
    f = (torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[-1.0, 0.0]]))
    assert losses.n3(f, 1).item() == pytest.approx(1 + 8 + 0.125 + 0.125 + 1)
