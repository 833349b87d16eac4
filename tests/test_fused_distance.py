"""The fused RotatE/HAKE distances (models/_distance.py) against the reference scoring they replace.

References: ``EmbeddingModel.pairwise`` (``match`` broadcast over blocks) for
vanilla negatives and ``mutation.materialised_scores`` (mutated candidates
materialised, then ``match``) for EMU's. Both paths are checked: the eager
blocks and the C kernels (``native=True``; skipped with the reason where this
machine cannot build them), the latter in both of its loop orders (chunks of
fewer and of at least ``SPARSE_MIN_ROWS`` rows).
"""

import warnings

import pytest
import torch

from kgestimator import KGEmbedder
from kgestimator.models import EmbeddingModel, make_model
from kgestimator.models import _distance, _native
from kgestimator.mutation import emu_mask, materialised_scores, mutated_scores

MODELS = ["rotate", "hake"]


def _native_or_skip():
    if _native.library() is None:
        pytest.skip(f"the C distance kernels cannot be built here: {_native.error()}")


def _problem(name, dtype, C=2, c=5, N=7, dim=6, seed=0):
    """A model and random queries, candidates, positives and an EMU mask in the chunked layout."""
    gen = torch.Generator().manual_seed(seed)
    model = make_model(name, 40, 4, dim, 6.0, generator=gen).to(dtype)
    with torch.no_grad():  # move HAKE's modulus and bias off their initial constants
        model.relation.add_(0.3 * torch.randn(model.relation.shape, generator=gen, dtype=dtype))
    width = model.entity.shape[1]
    anchor = torch.randn(C, c, width, generator=gen, dtype=dtype)
    rel = model.relation[torch.randint(4, (C, c), generator=gen)].detach()
    q = model.query(anchor, rel, "tail").detach()
    cand = torch.randn(C, N, width, generator=gen, dtype=dtype)
    pos = torch.randn(C, c, width, generator=gen, dtype=dtype)
    mask = emu_mask((N, width), 0.6, gen, "cpu")
    return model, q, cand, pos, mask


def _value_and_grads(model, fn, tensors, weight):
    """Scores and the gradients of ``(scores * weight).sum()`` with respect to ``tensors`` and the model's parameters."""
    tensors = [t.clone().requires_grad_(True) for t in tensors]
    params = [p for p in model.parameters() if p.dim() == 1]  # HAKE's phase and modulus weights
    out = fn(*tensors)
    grads = torch.autograd.grad((out * weight).sum(), tensors + params, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(t) if g is None else g for t, g in zip(tensors + params, grads)]


def _assert_close_relative(got, want, rtol):
    for g, w in zip(got, want):
        scale = w.abs().max().clamp_min(1.0)
        assert (g - w).abs().max() <= rtol * scale, float((g - w).abs().max() / scale)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("c", [1, 5, 20])
@pytest.mark.parametrize("name", MODELS)
def test_vanilla_scores_and_gradients_match_the_reference(name, c, native, dtype, rtol):
    if native:
        _native_or_skip()
    model, q, cand, _, _ = _problem(name, dtype, c=c)
    # seeded: with the global stream the weights (hence the float32 rounding of the summed
    # parameter gradients) would depend on which tests ran before
    weight = torch.randn(q.shape[0], c, cand.shape[1], dtype=dtype, generator=torch.Generator().manual_seed(1))
    want = _value_and_grads(model, lambda q, n: EmbeddingModel.pairwise(model, q, n), [q, cand], weight)
    got = _value_and_grads(model, lambda q, n: model.pairwise(q, n, native=native), [q, cand], weight)
    _assert_close_relative(got, want, rtol)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("c, per_chunk_mask", [(1, False), (5, False), (20, False), (20, True)])
@pytest.mark.parametrize("name", MODELS)
def test_mutated_scores_and_gradients_match_the_materialised_reference(name, c, per_chunk_mask, native, dtype, rtol):
    if native:
        _native_or_skip()
    model, q, cand, pos, mask = _problem(name, dtype, c=c)
    if per_chunk_mask:  # (C, N, de): one mask per chunk (the native paths' other layout)
        mask = torch.stack([mask, ~mask])
    # seeded: with the global stream the weights (hence the float32 rounding of the summed
    # parameter gradients) would depend on which tests ran before
    weight = torch.randn(q.shape[0], c, cand.shape[1], dtype=dtype, generator=torch.Generator().manual_seed(1))
    want = _value_and_grads(model, lambda q, p, n: materialised_scores(model, q, p, n, mask), [q, pos, cand], weight)
    got = _value_and_grads(model, lambda q, p, n: model.mutated_pairwise(q, p, n, mask, native), [q, pos, cand],
                           weight)
    _assert_close_relative(got, want, rtol)


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("emu, c", [(False, 3), (True, 3), (True, 17)])
@pytest.mark.parametrize("name", MODELS)
def test_gradcheck_on_small_double_inputs(name, emu, c, native):
    if native:
        _native_or_skip()
    model, q, cand, pos, mask = _problem(name, torch.float64, c=c, N=4, dim=3)
    if emu:
        assert torch.autograd.gradcheck(lambda q, p, n: model.mutated_pairwise(q, p, n, mask, native),
                                        [t.requires_grad_(True) for t in (q, pos, cand)])
    else:
        assert torch.autograd.gradcheck(lambda q, n: model.pairwise(q, n, native=native),
                                        [t.requires_grad_(True) for t in (q, cand)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_zero_distance_gives_the_reference_finite_gradient(name, native, dtype):
    # a candidate equal to the query (or to the positive) once made sqrt's derivative inf and the step NaN;
    # every path must give the reference's zero-distance gradient, and RotatE's score there is gamma.
    # Values on a 1/8 grid, so that the reference's materialised neg + m (pos - neg) is exactly pos.
    if native:
        _native_or_skip()
    model, q, cand, pos, mask = _problem(name, dtype, c=17)
    q, cand = (q * 8).round() / 8, (cand * 8).round() / 8
    d = model.dim
    if name == "hake":
        q[..., 2 * d:] = 1.0  # x = 1: a candidate modulus equal to y is at modulus distance exactly 0
    cand[:, :3] = q[:, :3, :cand.shape[-1]]  # candidates j < 3 coincide with rows i < 3
    pos = q[..., :cand.shape[-1]].clone()    # every copied coordinate is at distance 0
    weight = torch.ones(q.shape[0], q.shape[1], cand.shape[1], dtype=dtype)
    rtol = 1e-5 if dtype == torch.float32 else 1e-9
    for fn, ref in ((lambda q, p, n: model.pairwise(q, n, native=native),
                     lambda q, p, n: EmbeddingModel.pairwise(model, q, n)),
                    (lambda q, p, n: model.mutated_pairwise(q, p, n, mask, native),
                     lambda q, p, n: materialised_scores(model, q, p, n, mask))):
        got = _value_and_grads(model, fn, [q, pos, cand], weight)
        assert all(torch.isfinite(g).all() for g in got)
        _assert_close_relative(got, _value_and_grads(model, ref, [q, pos, cand], weight), rtol)
    if name == "rotate":
        score = model.pairwise(q, cand, native=native)
        assert (score[:, :3, :3].diagonal(dim1=1, dim2=2) - 6.0).abs().max() < 1e-17 * d


def test_nan_propagates_through_the_native_kernels():
    # the trainer stops on a non-finite loss: a NaN embedding must not come out as a finite distance
    _native_or_skip()
    for name in MODELS:
        model, q, cand, pos, mask = _problem(name, torch.float32, c=17)
        cand[0, 2, 0] = float("nan")
        vanilla = model.pairwise(q, cand, native=True)
        mutated = model.mutated_pairwise(q, pos, cand, mask, native=True)
        assert vanilla[0, :, 2].isnan().all() and not vanilla[0, :, 3].isnan().any()
        assert mutated[0, :, 2].isnan().all() == (not mask[2, 0])


def test_native_threads_are_reproducible_and_agree_with_one_thread():
    _native_or_skip()
    model, q, cand, pos, mask = _problem("rotate", torch.float32, C=1, c=40, N=600, dim=50)
    weight = torch.randn(1, 40, 600)
    previous = torch.get_num_threads()
    try:
        runs = {}
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            for label, fn in (("vanilla", lambda q, p, n: model.pairwise(q, n, native=True)),
                              ("emu", lambda q, p, n: model.mutated_pairwise(q, p, n, mask, True))):
                runs.setdefault((label, threads), []).append(_value_and_grads(model, fn, [q, pos, cand], weight))
    finally:
        torch.set_num_threads(previous)
    for label in ("vanilla", "emu"):
        first, second = runs[(label, 2)]
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        _assert_close_relative(first, runs[(label, 1)][0], 1e-5)


def test_without_a_compiler_the_eager_path_runs_with_a_warning(monkeypatch):
    model, q, cand, pos, mask = _problem("hake", torch.float32, c=17)
    monkeypatch.setattr(_native, "_state", {"libs": {}, "pool": None, "pid": None,
                                            "errors": {"distance": "RuntimeError: no C compiler found (set CC)"}})
    monkeypatch.setattr(_distance, "_warned", set())
    with pytest.warns(RuntimeWarning, match="could not be built.*no C compiler"):
        fallback = model.mutated_pairwise(q, pos, cand, mask, native=True)
    torch.testing.assert_close(fallback, model.mutated_pairwise(q, pos, cand, mask, native=False))


def test_the_trainer_routes_emu_through_the_fused_distance():
    # mutation.mutated_scores hands RotatE/HAKE their own mutated_pairwise, never the materialised path
    model, q, cand, pos, _ = _problem("rotate", torch.float64, c=4)
    mask = emu_mask(cand.shape[1:], 0.5, torch.Generator().manual_seed(1), "cpu")
    calls = []
    original = type(model).mutated_pairwise
    model.mutated_pairwise = lambda *a: calls.append(len(a)) or original(model, *a)
    out = mutated_scores(model, q, pos, cand, mask, None)
    assert calls == [5]
    torch.testing.assert_close(out, materialised_scores(model, q, pos, cand, mask))


@pytest.mark.parametrize("name", MODELS)
def test_native_training_is_reproducible_and_matches_eager(kg, name):
    _native_or_skip()
    common = dict(model=name, emu=True, dim=16, n_negatives=32, batch_size=256, neg_chunk_size=32, n_epochs=2,
                  learning_rate=0.02, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the kernels must build here, not fall back
        first = KGEmbedder(**common, compile=True).fit(kg.train)
        second = KGEmbedder(**common, compile=True).fit(kg.train)
    eager = KGEmbedder(**common, compile=False).fit(kg.train)
    torch.testing.assert_close(first.model_.entity, second.model_.entity, rtol=0, atol=0)
    assert [h["loss"] for h in first.history_] == [h["loss"] for h in second.history_]
    assert first.history_[0]["loss"] == pytest.approx(eager.history_[0]["loss"], rel=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_auto_compile_uses_the_c_kernels_on_a_small_graph(kg, name, monkeypatch):
    # the kernels are built once per machine, so 'auto' needs no size threshold for them
    _native_or_skip()
    calls = []
    forward = _native.forward
    monkeypatch.setattr(_native, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    common = dict(model=name, emu=True, dim=8, n_negatives=8, batch_size=256, max_steps=2, random_state=0)
    auto = KGEmbedder(**common).fit(kg.train)
    assert kg.train.shape[0] < 50_000 and calls
    calls.clear()
    auto.evaluate(kg.test[:20])
    assert calls, "ranking after an 'auto' fit scores through the kernels too"
    calls.clear()
    KGEmbedder(**common, compile=False).fit(kg.train)
    assert not calls


def test_auto_compile_keeps_the_size_threshold_for_torch_compile():
    from kgestimator.training import COMPILE_MIN_TRIPLES, resolve_compile

    assert resolve_compile("auto", "transe", COMPILE_MIN_TRIPLES - 1, "cpu") is False
    assert resolve_compile("auto", "transe", COMPILE_MIN_TRIPLES, "cpu") is True
    assert resolve_compile("auto", "rotate", 10, "cpu") is True
    # off the CPU RotatE's compile means torch.compile: the threshold again
    assert resolve_compile("auto", "rotate", 10, "meta") is False
    assert resolve_compile(False, "hake", 10 ** 7, "cpu") is False
