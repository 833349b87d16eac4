"""Each model against a hand-written formula; head-side and tail-side scoring agree."""

import math

import pytest
import torch

from kgestimator.models import EMBEDDING_MODELS as MODELS



@pytest.fixture(autouse=True)
def _float64():
    # exact comparisons with hand formulas need double precision; restore afterwards
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _tiny(name, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = MODELS[name](5, 3, dim, gamma=6.0, generator=gen).double()
    with torch.no_grad():
        # move HAKE's modulus and bias off their initial constants so every term matters
        model.relation.add_(0.3 * torch.randn(model.relation.shape, generator=gen, dtype=torch.float64))
    return model


def _reference(name, model, h, r, t):
    """Scores written out coordinate by coordinate from docs/algorithms.md §1."""
    g, d, rho = 6.0, model.dim, model.rho
    if name == "transe":
        return g - sum(abs(h[i] + r[i] - t[i]) for i in range(d))
    if name == "distmult":
        return sum(h[i] * r[i] * t[i] for i in range(d))
    if name == "complex":
        hr, hi, rr, ri, tr, ti = h[:d], h[d:], r[:d], r[d:], t[:d], t[d:]
        return sum(hr[i] * rr[i] * tr[i] + hi[i] * rr[i] * ti[i] + hr[i] * ri[i] * ti[i]
                   - hi[i] * ri[i] * tr[i] for i in range(d))
    if name == "rotate":
        total = 0.0
        for i in range(d):
            theta = r[i] * math.pi / rho
            hc, tc = complex(h[i], h[d + i]), complex(t[i], t[d + i])
            total += abs(hc * complex(math.cos(theta), math.sin(theta)) - tc)
        return g - total
    if name == "hake":
        pw, mw = float(model.phase_weight), float(model.modulus_weight)
        phase = sum(abs(math.sin((h[i] + r[i] - t[i]) * math.pi / rho / 2)) for i in range(d))
        sq = 0.0
        for i in range(d):
            mr = abs(r[d + i])
            b = max(min(r[2 * d + i], 1.0), -mr)
            sq += (h[d + i] * (mr + b) - t[d + i] * (1 - b)) ** 2
        return g - (pw * phase + mw * math.sqrt(sq))
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(MODELS))
def test_score_matches_hand_formula(name):
    model = _tiny(name)
    for h_id, r_id, t_id in [(0, 1, 2), (3, 0, 4), (1, 2, 1)]:
        h, r, t = model.entity[h_id], model.relation[r_id], model.entity[t_id]
        score = model.score(h, r, t)
        assert score.shape == (), (name, score.shape)   # one triple, one 0-d score, as for batches (B,)
        got = float(score.detach())
        want = _reference(name, model, h.tolist(), r.tolist(), t.tolist())
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", list(MODELS))
def test_head_and_tail_side_agree(name):
    model = _tiny(name)
    h = model.entity[[0, 1, 2, 3]]
    r = model.relation[[0, 1, 2, 0]]
    t = model.entity[[4, 3, 2, 1]]
    tail_side = model.match(model.query(h, r, "tail"), t)
    head_side = model.match(model.query(t, r, "head"), h)
    torch.testing.assert_close(tail_side, head_side, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("side", ["tail", "head"])
def test_pairwise_equals_broadcast_match(name, side):
    model = _tiny(name)
    anchor = model.entity[torch.tensor([[0, 1, 2], [3, 4, 0]])]          # (C=2, c=3, de)
    rel = model.relation[torch.tensor([[0, 1, 2], [2, 1, 0]])]
    cand = model.entity[torch.tensor([[1, 2, 3, 4], [0, 0, 1, 2]])]     # (C=2, N=4, de)
    q = model.query(anchor, rel, side)
    fast = model.pairwise(q, cand)
    slow = model.match(q.unsqueeze(2), cand.unsqueeze(1))
    assert fast.shape == (2, 3, 4)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


def test_rotate_phase_range_and_unit_modulus():
    model = _tiny("rotate", dim=3)
    rho = model.rho
    with torch.no_grad():
        model.relation[0] = torch.tensor([rho, -rho, 0.0])
    # rotating 1 + 0i by phase pi gives -1: distance to -1 is zero
    one = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    q = model.query(one, model.relation[0], "tail")
    torch.testing.assert_close(q[:3], torch.tensor([-1.0, -1.0, 1.0]), atol=1e-12, rtol=0)
    modulus = torch.sqrt(q[:3] ** 2 + q[3:] ** 2)
    torch.testing.assert_close(modulus, torch.ones(3))


def test_hake_bias_clamp_and_finite_gradient():
    model = _tiny("hake", dim=2)
    d = 2
    with torch.no_grad():
        model.relation[0, d:2 * d] = torch.tensor([0.5, 0.5])
        model.relation[0, 2 * d:] = torch.tensor([3.0, -2.0])   # above 1; below -|m_r|
    h, t = model.entity[0], model.entity[1]
    q = model.query(h, model.relation[0], "tail")
    # packed as [phase, y, x]: x = 1 - b with b clamped to 1 and to -0.5
    torch.testing.assert_close(q[2 * d:], torch.tensor([0.0, 1.5]))
    s = model.score(h, model.relation[0], t)
    s.backward()
    assert torch.isfinite(model.relation.grad).all()


def test_hake_initial_relation_modulus_and_bias():
    model = MODELS["hake"](4, 2, 3, gamma=6.0)
    assert torch.all(model.relation[:, 3:6] == 1.0)
    assert torch.all(model.relation[:, 6:] == 0.0)
    assert float(model.phase_weight) == pytest.approx(0.5 * model.rho)


@pytest.mark.parametrize("name", list(MODELS))
def test_initialisation_range(name):
    model = MODELS[name](50, 4, 10, gamma=8.0, generator=torch.Generator().manual_seed(1))
    rho = (8.0 + 2.0) / 10
    assert model.entity.abs().max() <= rho
    assert model.entity.shape == (50, model.entity_factor * 10)
    assert model.relation.shape == (4, model.relation_factor * 10)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5)])
def test_row_lookup_matches_embedding_in_value_and_gradient(shape):
    from kgestimator.models._base import rows

    g = torch.Generator().manual_seed(0)
    table = torch.randn(11, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(11, shape, generator=g)          # repeated ids must accumulate
    out = rows(table, ids)
    want = torch.nn.functional.embedding(ids, table)
    torch.testing.assert_close(out, want)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grad, = torch.autograd.grad((out * weights).sum(), table)
    grad_want, = torch.autograd.grad((want * weights).sum(), table)
    torch.testing.assert_close(grad, grad_want)
    assert torch.autograd.gradcheck(lambda t: rows(t, ids), (table,))
    sparse = rows(table, ids, sparse=True)
    sparse_grad, = torch.autograd.grad((sparse * weights).sum(), table)
    assert sparse_grad.is_sparse
    torch.testing.assert_close(sparse_grad.to_dense(), grad_want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_is_finite_where_query_and_candidate_coincide(name, dtype):
    # a coordinate at distance 0 (or one whose square underflows) once made RotatE's
    # sqrt return an infinite derivative, and inf * 0 turned the whole step into NaN
    model = _tiny(name).to(dtype)
    h, r = model.entity[:2].detach(), model.relation[:2].detach()
    q = model.query(h, r, "tail").detach()
    zero_q, zero_c = torch.zeros_like(q), torch.zeros_like(h)
    # every distance is 0; a distance of 1e-23 whose square underflows in float32
    pairs = [(zero_q, zero_c), (zero_q + 1e-23, zero_c)]
    if q.shape == h.shape:
        pairs.append((q, q))  # the query itself as the candidate (TransE, RotatE: distance 0)
    for qq, cand in pairs:
        qq, cand = qq.clone().requires_grad_(True), cand.clone().requires_grad_(True)
        model.match(qq, cand).sum().backward()
        assert torch.isfinite(qq.grad).all() and torch.isfinite(cand.grad).all()
    if name == "rotate":
        # at distance 0 the score is gamma, up to the clamp (at most 1e-19 per coordinate)
        assert model.match(q, q).sub(6.0).abs().max() < 1e-18


def test_complex_n3_factors_have_finite_gradients_at_zero():
    model = _tiny("complex")
    x = torch.zeros(3, model.entity.shape[1], requires_grad=True)
    sum(f.sum() for f in model.n3_factors(x, x, x)).backward()
    assert torch.isfinite(x.grad).all()


def test_sampled_scores_match_full_table_product_in_value_and_gradient():
    # per-positive negatives of bilinear models: sparse sampled product and sparse backward
    # against the full-table product and gather, with repeated ids in a row
    from kgestimator.models._base import sampled_scores

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(7, 5, generator=gen, dtype=torch.double, requires_grad=True)
    table = torch.randn(40, 5, generator=gen, dtype=torch.double, requires_grad=True)
    ids = torch.randint(40, (7, 9), generator=gen)
    ids[0, :3] = 4
    weight = torch.randn(7, 9, generator=gen, dtype=torch.double)
    got = sampled_scores(q, table, ids)
    want = (q @ table.t()).gather(1, ids)
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad((got * weight).sum(), (q, table))
    g_want = torch.autograd.grad((want * weight).sum(), (q, table))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b: sampled_scores(a, b, ids), (q, table))
    # more negatives than entities (a small graph): the dense product, same values
    many = torch.randint(40, (7, 60), generator=gen)
    torch.testing.assert_close(sampled_scores(q, table, many), (q @ table.t()).gather(1, many))
