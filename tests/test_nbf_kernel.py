"""NBFNet's fused message-passing kernel (models/_nbf.c): the same aggregates and gradients as the PyTorch paths."""

import warnings

import numpy as np
import pytest
import torch

from kgestimator import KGEmbedder, make_kg
from kgestimator.models import NBFNet, _native, _nbf
from kgestimator.models.nbfnet import _BlockedMessages, _PNAAggregate, message_blocks


def _kernel_or_skip():
    if _native.library("nbf") is None:
        pytest.skip(f"the C NBFNet kernels cannot be built here (no working C compiler?): {_native.error('nbf')}")


def _graph(gen, n=24, R=4, E=170):
    """Destination-sorted edges: three hubs take half of them, the last 4 nodes receive none, the last 2 are isolated."""
    hub = torch.randint(3, (E // 2,), generator=gen)
    dst = torch.cat([hub, torch.randint(n - 4, (E - E // 2,), generator=gen)])
    src = torch.randint(n - 2, (E,), generator=gen)
    rel = torch.randint(R, (E,), generator=gen)
    order = torch.argsort(dst, stable=True)
    return src[order], rel[order], dst[order]


def _inputs(gen, n, R, B, d, shared, dtype, ties):
    def draw(*shape):
        if ties:  # small integers, a third of them 0 (as after a ReLU): many messages tie for a max or min
            return torch.randint(-1, 2, shape, generator=gen).to(dtype).requires_grad_()
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
    return draw(n, B, d), draw(R, 1 if shared else B, d), draw(n, B, d)


def _materialised(h, w, boundary, src, rel, dst, pna, distmult):
    """The reference: every message formed, ``index_add`` and ``_PNAAggregate`` (index_reduce's forward)."""
    x, wr = h.index_select(0, src), w.index_select(0, rel)
    msg = x * wr if distmult else x + wr
    if not pna:
        return torch.index_add(boundary, 0, dst, msg), None, None, None
    return _PNAAggregate.apply(msg, boundary, dst)


def _outputs_and_grads(fn, h, w, boundary, grads_out):
    out = [o for o in fn(h, w, boundary) if o is not None]
    loss = sum((o * g).sum() for o, g in zip(out, grads_out))
    return out, list(torch.autograd.grad(loss, (h, w, boundary)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pna", [True, False])
@pytest.mark.parametrize("distmult", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("ties", [True, False])
def test_fused_aggregates_and_gradients_equal_the_materialised_and_blocked_paths(dtype, pna, distmult, shared, ties):
    _kernel_or_skip()
    gen = torch.Generator().manual_seed(3)
    n, R, B, d = 24, 4, 3, 5
    src, rel, dst = _graph(gen, n, R)
    h, w, boundary = _inputs(gen, n, R, B, d, shared, dtype, ties)
    grads_out = [torch.randn(n, B, d, generator=gen, dtype=dtype) for _ in range(4)]
    graph = _nbf.csr(src, rel, dst, n)
    fused = _outputs_and_grads(lambda *a: _nbf.aggregate(*a, graph, pna, distmult), h, w, boundary, grads_out)
    blocks = message_blocks(src, rel, dst, n, B * d, block=64)  # many small blocks, padded
    blocked = _outputs_and_grads(lambda *a: _BlockedMessages.apply(*a, blocks, pna, distmult), h, w, boundary,
                                 grads_out)
    reference = _outputs_and_grads(lambda *a: _materialised(*a, src, rel, dst, pna, distmult), h, w, boundary,
                                   grads_out)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for want in (reference, blocked):
        assert len(fused[0]) == len(want[0]) == (4 if pna else 1)
        for got, exp in zip(fused[0] + fused[1], want[0] + want[1]):
            assert got.dtype == dtype
            torch.testing.assert_close(got, exp, **tol)
    # nodes without in-edges: their boundary is their only message (count 1), so it gets all the gradient
    g_boundary = fused[1][2]
    if pna:
        expected = grads_out[0] + 2 * grads_out[1] * boundary + grads_out[2] + grads_out[3]
    else:
        expected = grads_out[0]
    torch.testing.assert_close(g_boundary[-4:], expected[-4:].detach(), **tol)
    # isolated nodes send nothing: no gradient reaches their h
    assert not fused[1][0][-2:].any()
    if ties and pna:  # there were ties to share: maxima attained by two messages or more
        x, wr = h.index_select(0, src), w.index_select(0, rel)
        hit = ((x * wr if distmult else x + wr) == fused[0][2].index_select(0, dst)).to(dtype)
        assert int((torch.zeros_like(boundary).index_add_(0, dst, hit) >= 2).sum()) > 20


@pytest.mark.parametrize("pna, distmult, shared", [(True, True, True), (True, False, False), (False, True, False),
                                                   (False, False, True)])
def test_fused_messages_gradcheck(pna, distmult, shared):
    _kernel_or_skip()
    gen = torch.Generator().manual_seed(0)
    n, R, B, d = 6, 3, 2, 2
    src, rel, dst = _graph(gen, n, R, E=14)
    graph = _nbf.csr(src, rel, dst, n)
    # continuous values: gradcheck's finite differences must not cross a max/min switch
    h, w, boundary = _inputs(gen, n, R, B, d, shared, torch.float64, ties=False)
    def fn(a, b, c):
        return tuple(o for o in _nbf.aggregate(a, b, c, graph, pna, distmult) if o is not None)

    assert torch.autograd.gradcheck(fn, (h, w, boundary))


def test_threads_split_queries_reproducibly():
    # queries split across threads: the same result at a thread count run to run, and the one-thread result
    # up to the summation order of shared relation gradients
    _kernel_or_skip()
    gen = torch.Generator().manual_seed(1)
    n, R, B, d = 200, 6, 8, 64
    src, rel, dst = _graph(gen, n, R, E=4000)
    graph = _nbf.csr(src, rel, dst, n)
    # float64: the shared relation gradient sums some 30k terms, whose order the threads change
    h, w, boundary = _inputs(gen, n, R, B, d, True, torch.float64, ties=True)
    grads_out = [torch.randn(n, B, d, generator=gen, dtype=torch.float64) for _ in range(4)]
    previous, runs = torch.get_num_threads(), {}
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            assert len(_nbf._query_ranges(B, src.numel() * B * d)) == threads
            out, grads = _outputs_and_grads(lambda *a: _nbf.aggregate(*a, graph, True, True), h, w, boundary,
                                            grads_out)
            runs.setdefault(threads, []).append(out + grads)
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(a, b) for a, b in zip(*runs[2]))
    for a, b in zip(runs[1][0], runs[2][0]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("aggregate, message, dependent", [("pna", "distmult", False), ("pna", "transe", True),
                                                           ("sum", "distmult", True), ("sum", "transe", False)])
def test_model_propagation_through_the_kernel_matches_the_materialised_path(aggregate, message, dependent):
    # three layers, hidden edges, two nodes without in-edges, ties from small-integer weights
    _kernel_or_skip()
    gen = torch.Generator().manual_seed(5)
    n, n_rel, E = 23, 4, 160
    hub = torch.randint(3, (E // 2,), generator=gen)
    dst = torch.cat([hub, torch.randint(n - 2, (E - E // 2,), generator=gen)])
    graph = torch.stack([torch.randint(n, (E,), generator=gen), torch.randint(n_rel, (E,), generator=gen), dst], 1)
    anchor, rel = torch.tensor([0, 4, 9]), torch.tensor([1, 6, 2])
    keep = torch.rand(E, generator=gen) > 0.1
    results = []
    for path in ("materialised", "fused"):
        model = NBFNet(n, n_rel, 5, generator=torch.Generator().manual_seed(0), n_layers=3, aggregate=aggregate,
                       message=message, dependent=dependent).double().set_graph(graph)
        with torch.no_grad():
            model.query.weight.copy_(torch.randint(-1, 2, model.query.weight.shape, generator=gen.manual_seed(1)))
            for layer in model.layers:
                if not dependent:
                    layer.relation.weight.copy_(torch.randint(-1, 2, layer.relation.weight.shape, generator=gen))
        model.materialise_messages = path == "materialised"
        calls = []
        original = _nbf.FusedMessages.apply
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_nbf.FusedMessages, "apply", lambda *a: calls.append(1) or original(*a))
            nodes, query = model.propagate(anchor, rel, keep, native=True)
        assert len(calls) == (0 if path == "materialised" else 3)
        loss = (model.score_nodes(nodes, query) * torch.linspace(-1, 1, n, dtype=torch.double)).sum()
        results.append((nodes, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert sum(float(g.abs().sum()) for g in got_grads if g is not None) > 0
    for g, w in zip(got_grads, want_grads):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def small_kg():
    return make_kg(n_entities=40, n_relations=8, n_triples=500, random_state=0)


NBF = dict(model="nbfnet", dim=8, model_params={"n_layers": 2}, loss="bce", n_negatives=8, batch_size=32,
           n_epochs=2, learning_rate=5e-3, random_state=0)


def test_fit_with_the_kernel_equals_fit_without(small_kg):
    # the public switch: compile=True / 'auto' run the kernel, compile=False the blocked path; same training
    _kernel_or_skip()
    calls = []
    original = _nbf.FusedMessages.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_nbf.FusedMessages, "apply", lambda *a: calls.append(1) or original(*a))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the kernel must build here, not fall back
            fused = KGEmbedder(**NBF).fit(small_kg.train)  # compile='auto'
        n_fused = len(calls)
        eager = KGEmbedder(**NBF, compile=False).fit(small_kg.train)
        assert len(calls) == n_fused > 0
        test = small_kg.test[:40]
        m_fused = fused.evaluate(test)
        n_eval = len(calls)
        m_eager = eager.evaluate(test)
        assert len(calls) == n_eval > n_fused  # evaluation follows compile too
    assert [h["step"] for h in fused.history_] == [h["step"] for h in eager.history_]
    np.testing.assert_allclose([h["loss"] for h in fused.history_], [h["loss"] for h in eager.history_], rtol=1e-4)
    for a, b in zip(fused.model_.parameters(), eager.model_.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert abs(m_fused["mrr"] - m_eager["mrr"]) < 1e-3


def test_without_a_compiler_nbfnet_keeps_the_blocked_path(small_kg, monkeypatch):
    monkeypatch.setattr(_native, "_state", {"libs": {}, "pool": None, "pid": None,
                                            "errors": {"nbf": "RuntimeError: no C compiler found (set CC)"}})
    monkeypatch.setattr(_nbf, "_warned", set())
    monkeypatch.setattr(_nbf.FusedMessages, "apply", lambda *a: pytest.fail("the kernel ran without a library"))
    with pytest.warns(RuntimeWarning, match="NBFNet message-passing kernels could not be built.*no C compiler"):
        fallback = KGEmbedder(**NBF, compile=True).fit(small_kg.train)
    eager = KGEmbedder(**NBF, compile=False).fit(small_kg.train)
    assert [h["loss"] for h in fallback.history_] == [h["loss"] for h in eager.history_]
    assert np.isfinite(fallback.evaluate(small_kg.test[:20])["mrr"])


def test_compile_auto_turns_the_kernel_on_for_nbfnet_on_the_cpu():
    from kgestimator.training import resolve_compile

    assert resolve_compile("auto", "nbfnet", 10, "cpu") is True  # any graph size: nothing to amortise
    assert resolve_compile("auto", "nbfnet", 10, "meta") is False  # the kernel is CPU-only
    assert resolve_compile(False, "nbfnet", 10 ** 7, "cpu") is False
