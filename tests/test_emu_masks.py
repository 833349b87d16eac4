"""``emu_masks``: EMU masks per negative slot (``'shared'``) or per positive and negative (``'independent'``).

docs/algorithms.md §5.10. The masks are read back from scores: with a zero
negative, a DistMult query of ones and a positive whose coordinate ``k`` is
``2 ** k``, the mutated score is ``sum_k m_k 2 ** k``, the mask's bits.
"""

import inspect

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from kgestimator import KGEmbedder
from kgestimator import mutation
from kgestimator.checkpoint import ADDED_PARAMS, fingerprint
from kgestimator.models import EMBEDDING_MODELS, make_model
from kgestimator.models import _base

from conftest import FAST

D = 8  # coordinates of the probe: the scores hold the mask's bits exactly in float64


def _probe(C, c, N):
    """``(model, q, pos, neg)`` whose EMU scores are the masks' bits (see the module docstring)."""
    model = make_model("distmult", 4, 1, D, 6.0).double()
    q = torch.ones(C, c, D, dtype=torch.float64)
    pos = (2.0 ** torch.arange(D, dtype=torch.float64)).expand(C, c, D)
    neg = torch.zeros(C, N, D, dtype=torch.float64)
    return model, q, pos, neg


def _masks(masks, C=3, c=4, N=5, ratio=0.3, seed=0):
    """The masks ``(C, c, N, D)`` one :func:`mutation.emu_scores` call drew, decoded from its scores."""
    model, q, pos, neg = _probe(C, c, N)
    scores = mutation.emu_scores(True, model, q, pos, neg, None, model.match(q, pos), ratio,
                                 torch.Generator().manual_seed(seed), model.pairwise, masks=masks)
    bits = scores.round().long()
    return ((bits.unsqueeze(-1) >> torch.arange(D)) & 1).bool()


def test_independent_masks_copy_each_coordinate_with_probability_mutation_ratio():
    masks = torch.cat([_masks("independent", C=20, c=5, N=50, ratio=0.3, seed=s) for s in range(5)])
    per_coordinate = masks.double().mean(dim=(0, 1, 2))          # 25,000 draws per coordinate
    assert per_coordinate.shape == (D,)
    assert torch.all((per_coordinate - 0.3).abs() < 0.015), per_coordinate


def test_independent_masks_differ_between_positives_and_chunks_shared_ones_do_not():
    ind, shared = _masks("independent"), _masks("shared")
    # the same negative slot j: two positives of one chunk, and the same row of two chunks
    assert not torch.equal(ind[0, 0], ind[0, 1]) and not torch.equal(ind[0, 0], ind[1, 0])
    assert torch.equal(shared, shared[:1, :1].expand_as(shared))  # one (N, D) mask for the whole step
    # slots still differ from each other in both modes
    assert not torch.equal(shared[0, 0, 0], shared[0, 0, 1]) and not torch.equal(ind[0, 0, 0], ind[0, 0, 1])


@pytest.mark.parametrize("name", list(EMBEDDING_MODELS))
@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("block", [1 << 19, 40, 1], ids=["one-block", "chunk-blocks", "row-blocks"])
def test_independent_scores_are_the_hand_formula_with_the_drawn_mask(name, side, block, monkeypatch):
    monkeypatch.setattr(_base, "BLOCK_ELEMENTS", block)  # every branch of models._base.blocked
    model = EMBEDDING_MODELS[name](20, 3, 4, gamma=6.0, generator=torch.Generator().manual_seed(0))
    C, c, N = 2, 3, 5
    g = torch.Generator().manual_seed(1)
    q = model.query(model.entity[torch.randint(20, (C, c), generator=g)],
                    model.relation[torch.randint(3, (C, c), generator=g)], side)
    pos = model.entity[torch.randint(20, (C, c), generator=g)]
    neg = model.entity[torch.randint(20, (C, N), generator=g)]
    got = mutation.emu_scores(True, model, q, pos, neg, None, model.match(q, pos), 0.4,
                              torch.Generator().manual_seed(7), model.pairwise, masks="independent")
    # the mask emu_scores draws: one Bernoulli per (chunk, positive, negative, coordinate)
    m = mutation.emu_mask((C, c, N, pos.shape[-1]), 0.4, torch.Generator().manual_seed(7), "cpu").to(pos.dtype)
    want = torch.stack([torch.stack([torch.stack([
        model.match(q[i, r], m[i, r, j] * pos[i, r] + (1 - m[i, r, j]) * neg[i, j]) for j in range(N)])
        for r in range(c)]) for i in range(C)]).reshape(got.shape)  # HAKE's match keeps a trailing 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the gradients reach the query, the positive and the negatives as through the formula
    grads = torch.autograd.grad(got.sum(), [model.entity, model.relation], retain_graph=True)
    want_grads = torch.autograd.grad(want.sum(), [model.entity, model.relation])
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["distmult", "transe"])
@pytest.mark.parametrize("chunk", [1, 8])
def test_the_trainer_draws_one_mask_per_positive_and_negative_only_when_asked(kg, model, chunk, monkeypatch):
    shapes = []
    draw = mutation.emu_mask

    def recording(shape, *args):
        shapes.append(tuple(shape))
        return draw(shape, *args)

    monkeypatch.setattr(mutation, "emu_mask", recording)
    params = dict(model=model, neg_chunk_size=chunk, batch_size=64, n_negatives=16, max_steps=2)
    _est(**params, emu_masks="independent").fit(kg.train)
    C = 64 // chunk
    assert shapes == [(C, chunk, 16, 16)] * 2
    shapes.clear()
    _est(**params).fit(kg.train)  # the default
    # per-positive DistMult ids (chunk 1) are scored from the table: one (N, d) mask a step either way
    assert shapes == [(16, 16)] * 2


def _est(**params):
    """A small estimator: ``FAST`` with EMU and seed 0, updated with ``params``."""
    return KGEmbedder(**{**FAST, "emu": True, "random_state": 0, **params})


def _first_step(kg, **params):
    est = _est(max_steps=1, **params).fit(kg.train)
    return est.history_[0]["loss"], est.model_.entity.detach().clone()


@pytest.mark.parametrize("chunk", [1, 8])
def test_mutation_ratio_zero_gives_the_plain_negatives_in_both_modes(kg, chunk):
    shared, w_shared = _first_step(kg, neg_chunk_size=chunk, mutation_ratio=0.0)
    ind, w_ind = _first_step(kg, neg_chunk_size=chunk, mutation_ratio=0.0, emu_masks="independent")
    # nothing is copied, so the EMU term is ULS on the unmutated negatives ('ls_only')
    plain, _ = _first_step(kg, neg_chunk_size=chunk, emu="ls_only")
    assert shared == pytest.approx(ind, rel=1e-6) and shared == pytest.approx(plain, rel=1e-6)
    torch.testing.assert_close(w_shared, w_ind)
    # with copied coordinates the two samplings differ
    assert _first_step(kg, neg_chunk_size=chunk, mutation_ratio=0.5)[0] != \
        _first_step(kg, neg_chunk_size=chunk, mutation_ratio=0.5, emu_masks="independent")[0]


def test_the_default_is_the_shared_masks():
    assert inspect.signature(KGEmbedder).parameters["emu_masks"].default == "shared"


def test_the_default_fit_is_the_shared_fit(kg):
    a = _est(n_epochs=2).fit(kg.train)
    b = _est(n_epochs=2, emu_masks="shared").fit(kg.train)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    assert torch.equal(a.model_.entity, b.model_.entity)


@pytest.mark.parametrize("model", list(EMBEDDING_MODELS))
def test_every_model_fits_with_independent_masks(kg, model):
    est = _est(n_epochs=2, max_steps=6, model=model, emu_masks="independent", neg_chunk_size=1).fit(kg.train)
    losses = [h["loss"] for h in est.history_]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert np.isfinite(est.evaluate(kg.test)["mrr"])


@pytest.mark.parametrize("sampler", ["uniform", "san"])
def test_independent_masks_are_reproducible(kg, sampler):
    def fit():
        return _est(n_epochs=2, max_steps=6, emu_masks="independent", sampler=sampler,
                    random_state=3).fit(kg.train)

    a, b = fit(), fit()
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    assert torch.equal(a.model_.entity, b.model_.entity)


def test_masks_are_ignored_where_none_are_drawn(kg):
    for emu in (False, "mixup", "ls_only"):
        a = _est(n_epochs=1, emu=emu).fit(kg.train)
        b = _est(n_epochs=1, emu=emu, emu_masks="independent").fit(kg.train)
        assert a.history_[0]["loss"] == b.history_[0]["loss"], emu
    assert mutation.resolve_emu_masks("independent", "mixup") == "shared"
    assert mutation.resolve_emu_masks("independent", np.True_) == "independent"


def test_1vsall_refuses_independent_masks_and_bad_values_are_named(kg):
    with pytest.raises(ValueError, match="emu_masks='independent' is available with training='negative_sampling'"):
        _est(training="1vsall", emu_masks="independent").fit(kg.train)
    _est(n_epochs=1, training="1vsall", emu=False, emu_masks="independent").fit(kg.train)  # no masks: ignored
    with pytest.raises(ValueError, match="emu_masks"):
        _est(emu_masks="per_positive").fit(kg.train)


def test_clone_get_params_and_grid_search(kg):
    est = _est(n_epochs=1, max_steps=2, emu_masks="independent")
    assert est.get_params()["emu_masks"] == "independent" and clone(est).emu_masks == "independent"
    search = GridSearchCV(est, {"emu_masks": ["shared", "independent"]}, cv=2).fit(kg.train)
    assert [p["emu_masks"] for p in search.cv_results_["params"]] == ["shared", "independent"]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_checkpoints_written_before_the_parameter_existed_keep_their_fingerprint():
    params = KGEmbedder().get_params(deep=False)
    before = {k: v for k, v in params.items() if k not in ADDED_PARAMS}
    assert fingerprint(params, "cpu", []) == fingerprint(before, "cpu", [])
    assert fingerprint({**params, "emu_masks": "independent"}, "cpu", []) != fingerprint(params, "cpu", [])
    defaults = inspect.signature(KGEmbedder).parameters
    assert ADDED_PARAMS == {name: defaults[name].default for name in ADDED_PARAMS}
