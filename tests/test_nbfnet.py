"""NBFNet (model='nbfnet'): message passing, edge removal, invariances, EMU, and the estimator around it."""

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from kgestimator import KGEmbedder, load_dataset, make_kg
from kgestimator.filtering import KnownTriples
from kgestimator.losses import binary_cross_entropy
from kgestimator.models import MODELS, NBFNet, make_model
from kgestimator.path_training import path_step_loss
from kgestimator.samplers import UniformSampler

from conftest import train_config

#: small NBFNet settings for estimator tests
NBF = dict(model="nbfnet", dim=8, model_params={"n_layers": 2}, loss="bce", n_negatives=8, batch_size=64,
           n_epochs=2, learning_rate=5e-3)

# a hand-made 5-node graph: 0 -r0-> 1 -r1-> 2, 3 -r0-> 4
GRAPH = torch.tensor([[0, 0, 1], [1, 1, 2], [3, 0, 4]])


@pytest.fixture(scope="module")
def small_kg():
    return make_kg(n_entities=30, n_relations=8, n_triples=400, random_state=0)


def _model(n=5, n_rel=2, dim=2, seed=0, **params):
    model = NBFNet(n, n_rel, dim, generator=torch.Generator().manual_seed(seed), **params).double()
    return model.set_graph(GRAPH if n == 5 else params.pop("graph", GRAPH))


def test_registered_and_listed():
    assert MODELS["nbfnet"] is NBFNet


def test_sum_message_passing_matches_hand_computation():
    model = _model(n_layers=2, aggregate="sum", layer_norm=False, short_cut=False)
    with torch.no_grad():
        model.query.weight[0] = torch.tensor([1.0, 2.0])
        for layer, (w0, w1) in zip(model.layers, ([[2.0, 3.0], [5.0, 7.0]], [[0.5, -1.0], [4.0, 0.25]])):
            layer.relation.weight.zero_()
            layer.relation.weight[0], layer.relation.weight[1] = torch.tensor(w0), torch.tensor(w1)
            # combine keeps only the aggregated messages: h' = relu(update)
            layer.linear.weight.copy_(torch.cat([torch.zeros(2, 2), torch.eye(2)], 1))
            layer.linear.bias.zero_()
    nodes, _ = model.propagate(torch.tensor([0]), torch.tensor([0]))
    # layer 1: node 0 keeps its boundary (1, 2); node 1 gets (1, 2) * (2, 3); the rest 0
    # layer 2: node 0: boundary + inverse edges (weights 0) -> (1, 2); node 1: (1, 2) * (0.5, -1)
    # = (0.5, -2); node 2: (2, 6) * (4, 0.25) = (8, 1.5); nodes 3 and 4 stay 0
    want = torch.tensor([[1.0, 2.0], [0.5, 0.0], [8.0, 1.5], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(nodes[0], want.double())  # relu clips node 1's -2


def _reference_layer(layer, h, boundary, src, rel, dst, n):
    """One PNA layer with a Python loop over nodes and their incoming messages."""
    w = layer.relation.weight
    deg = torch.zeros(n)
    for v in dst.tolist():
        deg[v] += 1
    logd = torch.log(deg + 1)
    scale = logd / logd.mean()
    out = []
    for v in range(n):
        msgs = [boundary[v]] + [h[x] * w[r] for x, r, y in zip(src.tolist(), rel.tolist(), dst.tolist()) if y == v]
        m = torch.stack(msgs)
        mean, sq = m.mean(0), (m * m).mean(0)
        std = (sq - mean * mean).clamp(min=1e-6).sqrt()
        feats = torch.cat([mean, m.max(0).values, m.min(0).values, std])
        s = scale[v].double()
        update = torch.stack([feats, feats * s, feats / s.clamp(min=1e-2)], -1).flatten()
        x = layer.linear(torch.cat([h[v], update]))
        out.append(torch.relu(layer.norm(x)) + h[v])
    return torch.stack(out)


def test_pna_layer_matches_loop_reference():
    graph = torch.tensor([[0, 0, 1], [1, 1, 2], [3, 0, 4], [2, 1, 1], [0, 1, 1], [4, 0, 0]])
    model = NBFNet(5, 2, 3, generator=torch.Generator().manual_seed(1), n_layers=1).double().set_graph(graph)
    anchor, rel = torch.tensor([2]), torch.tensor([3])  # a head query: inverse of relation 1
    nodes, query = model.propagate(anchor, rel)
    boundary = torch.zeros(5, 3, dtype=torch.double)
    boundary[2] = query[0]
    want = _reference_layer(model.layers[0], boundary, boundary, model._src, model._rel, model._dst, 5)
    torch.testing.assert_close(nodes[0], want)


def _index_reduce_layer(layer, h, boundary, query, src, rel, dst):
    """The first (autograd-differentiated) implementation of a PNA layer: the fast path's oracle."""
    import warnings

    n = h.shape[0]
    if layer.dependent:
        w = layer.relation_linear(query).view(-1, layer.n_relations2, layer.dim).transpose(0, 1)[rel]
    else:
        w = layer.relation.weight[rel].unsqueeze(1)
    x = h[src]
    msg = x * w if layer.message == "distmult" else x + w
    count = (torch.bincount(dst, minlength=n) + 1).to(h.dtype).view(-1, 1, 1)
    mean = torch.index_add(boundary, 0, dst, msg) / count
    sq_mean = torch.index_add(boundary * boundary, 0, dst, msg * msg) / count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        high = boundary.index_reduce(0, dst, msg, "amax", include_self=True)
        low = boundary.index_reduce(0, dst, msg, "amin", include_self=True)
    std = (sq_mean - mean * mean).clamp(min=1e-6).sqrt()
    features = torch.cat([mean, high, low, std], -1)
    scale = count.log()
    scale = scale / scale.mean().clamp(min=1e-12)
    scales = torch.stack([torch.ones_like(scale), scale, 1.0 / scale.clamp(min=1e-2)], -1)
    update = (features.unsqueeze(-1) * scales).flatten(-2)
    out = torch.relu(layer.norm(layer.linear(torch.cat([h, update], -1))))
    return out + h


@pytest.mark.parametrize("message, dependent, ties", [("distmult", False, True), ("distmult", True, False),
                                                      ("transe", False, True), ("transe", True, True)])
def test_fast_pna_layer_matches_index_reduce_oracle_in_value_and_gradient(message, dependent, ties):
    from kgestimator.models.nbfnet import degree_scalers

    gen = torch.Generator().manual_seed(3)
    n, n_rel, dim, B, E = 9, 3, 4, 3, 40
    src, dst = torch.randint(n, (E,), generator=gen), torch.randint(n - 1, (E,), generator=gen)  # node 8: no in-edge
    rel = torch.randint(2 * n_rel, (E,), generator=gen)
    model = NBFNet(n, n_rel, dim, generator=gen, n_layers=1, message=message, dependent=dependent).double()
    layer = model.layers[0]
    h = torch.randn(n, B, dim, generator=gen, dtype=torch.double)
    boundary = torch.zeros(n, B, dim, dtype=torch.double)
    boundary[0] = torch.randn(B, dim, generator=gen, dtype=torch.double)
    # random edges repeat some (src, rel, dst): their messages tie exactly
    if ties:
        # small integers: many messages share their node's max or min (zeros above all)
        h = torch.randint(0, 3, h.shape, generator=gen).double()
        if not dependent:
            with torch.no_grad():
                layer.relation.weight.copy_(torch.randint(-1, 2, layer.relation.weight.shape, generator=gen))
    query = torch.randn(B, dim, generator=gen, dtype=torch.double)
    weight = torch.randn(n, B, dim, generator=gen, dtype=torch.double)
    results = []
    for fast in (True, False):
        inputs = [t.clone().requires_grad_() for t in (h, boundary, query)]
        if fast:
            out = layer(*inputs, src, rel, dst, degree_scalers(dst, n, torch.double))
        else:
            out = _index_reduce_layer(layer, *inputs, src, rel, dst)
        params = list(layer.parameters())
        grads = torch.autograd.grad((out * weight).sum(), inputs + params, allow_unused=True)
        results.append((out, grads))
    (out_fast, grad_fast), (out_ref, grad_ref) = results
    torch.testing.assert_close(out_fast, out_ref)
    assert grad_fast[0].abs().sum() > 0
    for got, want in zip(grad_fast, grad_ref):
        assert (got is None) == (want is None)  # the query only matters with dependent relations
        if got is not None:
            torch.testing.assert_close(got, want)


def test_pna_aggregate_gradcheck():
    from kgestimator.models.nbfnet import _PNAAggregate

    gen = torch.Generator().manual_seed(0)
    dst = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    msg = torch.randn(7, 2, 3, generator=gen, dtype=torch.double, requires_grad=True)
    boundary = torch.randn(4, 2, 3, generator=gen, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, b: _PNAAggregate.apply(m, b, dst), (msg, boundary))


def test_layer_checkpointing_gives_the_same_gradients():
    # checkpoint=True recomputes each layer (the hand-written PNA backward included) in the backward pass
    gen = torch.Generator().manual_seed(0)
    graph = torch.stack([torch.randint(30, (300,), generator=gen), torch.randint(8, (300,), generator=gen),
                         torch.randint(30, (300,), generator=gen)], 1)
    grads = []
    for checkpoint in (False, True):
        model = NBFNet(30, 8, 4, generator=torch.Generator().manual_seed(0), n_layers=2,
                       checkpoint=checkpoint).double().set_graph(graph)
        nodes, query = model.propagate(torch.tensor([0, 5]), torch.tensor([1, 9]), keep=graph[:, 0] != 3)
        model.score_nodes(nodes, query).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    assert any(g.abs().sum() > 0 for g in grads[0])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)


def test_removing_query_edge_changes_its_representation():
    # sum aggregation: PNA's degree scalers are normalised over the whole graph,
    # so with PNA a removed edge moves every node a little
    model = _model(dim=4, n_layers=2, aggregate="sum")
    anchor, rel = torch.tensor([0]), torch.tensor([0])
    full, _ = model.propagate(anchor, rel)
    keep = model.training_edges(torch.tensor([[0, 0, 1]]))
    assert keep.tolist() == [False, True, True]
    cut, _ = model.propagate(anchor, rel, keep)
    assert not torch.allclose(full[0, 1], cut[0, 1])        # the answer lost its path
    torch.testing.assert_close(full[0, 3:], cut[0, 3:])     # another component did not move
    # remove_one_hop: every edge between the source and any candidate, both directions
    model.remove_one_hop = True
    keep = model.training_edges(torch.tensor([[1, 1, 2]]), torch.tensor([2]), torch.tensor([[4, 1]]))
    assert keep.tolist() == [True, False, True]


def test_scores_invariant_to_entity_relabelling():
    gen = torch.Generator().manual_seed(3)
    n, n_rel = 12, 3
    graph = torch.stack([torch.randint(n, (40,), generator=gen), torch.randint(n_rel, (40,), generator=gen),
                         torch.randint(n, (40,), generator=gen)], 1)
    perm = torch.randperm(n, generator=gen)                 # new id of entity i is perm[i]
    model = NBFNet(n, n_rel, 6, generator=gen, n_layers=3).double().set_graph(graph)
    anchor, rel = torch.tensor([0, 5, 7]), torch.tensor([1, 2, 0])
    scores = model.score_all(anchor, rel, "head")
    relabelled = graph.clone()
    relabelled[:, 0], relabelled[:, 2] = perm[graph[:, 0]], perm[graph[:, 2]]
    model.set_graph(relabelled)
    moved = model.score_all(perm[anchor], rel, "head")
    torch.testing.assert_close(moved[:, perm], scores)


def _step_loss(cfg, seed=0):
    gen = torch.Generator().manual_seed(1)
    n = 20
    ids = torch.stack([torch.randint(n, (120,), generator=gen), torch.randint(3, (120,), generator=gen),
                       torch.randint(n, (120,), generator=gen)], 1)
    model = NBFNet(n, 3, 4, generator=torch.Generator().manual_seed(0), n_layers=2).set_graph(ids)
    known = KnownTriples(ids, n, 3)
    sampler = UniformSampler().fit(ids, n, 3)
    gen = torch.Generator().manual_seed(seed)
    return path_step_loss(model, sampler, cfg, ids[:16], 0, gen, known), model


def test_emu_with_mutation_ratio_zero_reproduces_vanilla_loss():
    base = dict(model="nbfnet", n_negatives=6, loss="bce", adversarial_temperature=1.0)
    vanilla, _ = _step_loss(train_config(**base))
    emu, _ = _step_loss(train_config(**base, emu=True, mutation_ratio=0.0, emu_resample=False, uls=False,
                                     alpha=0.7))
    # unmutated negatives with one-hot targets: the EMU term is the vanilla loss itself
    torch.testing.assert_close(emu, 1.7 * vanilla)
    with_uls, _ = _step_loss(train_config(**base, emu=True, mutation_ratio=0.0, emu_resample=False, beta=0.25,
                                          alpha=0.7))
    assert not torch.allclose(with_uls, emu)                 # the ULS targets do change it


def test_emu_with_mutation_ratio_one_copies_the_positive(monkeypatch):
    import kgestimator.path_training as pt

    seen = {}
    real = pt.training_loss

    def spy(cfg, logits, emu_logits=None):
        seen["logits"] = emu_logits
        return real(cfg, logits, emu_logits)

    monkeypatch.setattr(pt, "training_loss", spy)
    cfg = train_config(model="nbfnet", n_negatives=5, loss="bce", emu=True, mutation_ratio=1.0, beta=0.25,
                       alpha=1.0)
    loss, _ = _step_loss(cfg)
    logits = seen["logits"]
    torch.testing.assert_close(logits, logits[:, :1].expand_as(logits))
    vanilla = (loss - binary_cross_entropy(logits, 1.0, 0.25)).item()
    assert vanilla > 0


def test_estimator_end_to_end(small_kg, tmp_path):
    est = KGEmbedder(**NBF, random_state=0).fit(small_kg.train, valid=small_kg.valid)
    assert len(est.history_) == 2 and all(np.isfinite(h["loss"]) for h in est.history_)
    metrics = est.evaluate(small_kg.test)
    assert 0 < metrics["mrr"] <= 1 and metrics["n_triples"] == len(small_kg.test)
    labels, scores = est.predict_topk(small_kg.test[:5, :2], k=3)
    assert labels.shape == (5, 3) and np.all(np.diff(scores, axis=1) <= 0)
    # score_samples and predict_topk read the same propagation
    top = np.column_stack([small_kg.test[:5, :2], labels[:, 0]])
    np.testing.assert_allclose(est.score_samples(top), scores[:, 0], rtol=1e-5, atol=1e-6)
    heads = est.predict_topk(small_kg.test[:5, 1:], k=2, direction="head")[0]
    assert heads.shape == (5, 2)
    # safe save/load and pickle give the same scores; the fact graph travels with the model
    est.save(tmp_path / "m.kge")
    loaded = KGEmbedder.load(tmp_path / "m.kge")
    np.testing.assert_array_equal(loaded.score_samples(small_kg.test), est.score_samples(small_kg.test))
    assert loaded.model_params == NBF["model_params"]
    again = pickle.loads(pickle.dumps(est))
    assert again.score(small_kg.test) == pytest.approx(metrics["mrr"])


def test_random_state_reproducible_and_emu_changes_training(small_kg):
    a = KGEmbedder(**NBF, random_state=3).fit(small_kg.train)
    b = KGEmbedder(**NBF, random_state=3).fit(small_kg.train)
    np.testing.assert_array_equal(a.score_samples(small_kg.test), b.score_samples(small_kg.test))
    c = KGEmbedder(**NBF, emu=True, random_state=3).fit(small_kg.train)
    assert c.emu_params_ == pytest.approx({"alpha": 1.0, "mutation_ratio": 0.06, "beta": 0.25})
    assert not np.array_equal(a.score_samples(small_kg.test), c.score_samples(small_kg.test))


class _StopAt(UniformSampler):
    stop_at = None

    def sides(self, batch, step, generator):
        if step == _StopAt.stop_at:
            _StopAt.stop_at = None
            raise KeyboardInterrupt
        return super().sides(batch, step, generator)


def test_checkpoint_resume_is_identical(small_kg, tmp_path):
    params = dict(NBF, sampler=_StopAt(), n_epochs=3, emu=True, random_state=4)
    reference = KGEmbedder(**params).fit(small_kg.train)
    params.update(checkpoint_dir=tmp_path, checkpoint_every=2)
    _StopAt.stop_at = 7
    with pytest.warns(UserWarning, match="interrupted"):
        KGEmbedder(**params).fit(small_kg.train)
    resumed = KGEmbedder(**params).fit(small_kg.train)
    for (k, v), w in zip(resumed.model_.state_dict().items(), reference.model_.state_dict().values()):
        assert torch.equal(v, w), k


def test_clone_and_grid_search(small_kg):
    est = KGEmbedder(**dict(NBF, n_epochs=1), random_state=0)
    assert clone(est).get_params()["model_params"] == NBF["model_params"]
    grid = GridSearchCV(est, {"model_params": [{"n_layers": 1}, {"n_layers": 1, "aggregate": "sum"}]}, cv=2)
    grid.fit(small_kg.train)
    assert set(grid.cv_results_["mean_test_score"].round(6).tolist()) != {np.nan}


def test_model_params_as_json_string(small_kg):
    est = KGEmbedder(**dict(NBF, model_params='{"n_layers": 1, "aggregate": "sum"}', n_epochs=1)).fit(
        small_kg.train[:100])
    assert len(est.model_.layers) == 1 and est.model_.layers[0].aggregate == "sum"


@pytest.mark.parametrize("params, match", [
    (dict(sampler="san"), "does not support sampler='san'"),
    (dict(sampler="nscaching"), "does not support sampler='nscaching'"),
    (dict(sparse=True), "'sparse' parameter is not supported with model='nbfnet'"),
    (dict(regularizer="n3"), "'regularizer' parameter is not supported"),
    (dict(distributed=True), "'distributed' parameter is not supported with model='nbfnet'"),
    (dict(model_params={"n_layer": 2}), r"key\(s\) \['n_layer'\] that model='nbfnet' does not take"),
    (dict(model_params={"aggregate": "mean"}), r"model_params\['aggregate'\] must be one of"),
    (dict(model_params={"n_layers": 0}), r"model_params\['n_layers'\] must be an int >= 1"),
    (dict(model_params="{not json"), r"'model_params' parameter of KGEmbedder must be an instance of 'dict', a JSON "
                                     r"object string or None\. Got '\{not json' instead"),
    (dict(model_params=[1]), r"'model_params' parameter of KGEmbedder must be an instance of 'dict', a JSON object "
                             r"string or None\. Got \[1\] instead"),
])
def test_unsupported_combinations_raise_clear_errors(small_kg, params, match):
    with pytest.raises(ValueError, match=match):
        KGEmbedder(**{**NBF, **params}).fit(small_kg.train)


def test_embedding_models_refuse_nbfnet_params(small_kg):
    with pytest.raises(ValueError, match="model='distmult' does not take; it takes \['init_scale'\]"):
        KGEmbedder(model="distmult", model_params={"n_layers": 2}).fit(small_kg.train)


DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "nations")


@pytest.mark.skipif(not os.path.isdir(DATA), reason="shared nations dataset not present")
def test_learns_nations_quickly():
    data = load_dataset(DATA)
    est = KGEmbedder(**dict(NBF, dim=16, n_epochs=1, batch_size=32, n_negatives=16), random_state=0)
    est.fit(data.train)
    # chance level on 14 entities is an MRR of about 0.25
    assert est.evaluate(data.test, filter_triples=data.valid)["mrr"] > 0.4


@pytest.mark.parametrize("aggregate, message, dependent, ties, block", [
    ("pna", "distmult", False, True, 64), ("pna", "distmult", True, False, 1 << 20), ("pna", "transe", False, True, 7),
    ("pna", "transe", True, True, 64), ("sum", "distmult", False, False, 64), ("sum", "transe", True, False, 5)])
def test_blocked_message_passing_matches_materialised_path(monkeypatch, aggregate, message, dependent, ties, block):
    # the blocked path (the default) against the earlier one that materialises (E, B, d) messages:
    # same node representations and the same gradients of every parameter, through 3 layers, with
    # hidden edges, nodes of very different in-degrees (padding), blocks of one node or many, and ties
    import kgestimator.models.nbfnet as nbf

    monkeypatch.setattr(nbf, "MESSAGE_BLOCK", block)
    gen = torch.Generator().manual_seed(5)
    n, n_rel, E = 23, 4, 160
    hub = torch.randint(3, (E // 2,), generator=gen)          # three hubs receive half the edges
    dst = torch.cat([hub, torch.randint(n - 2, (E - E // 2,), generator=gen)])  # two nodes: no in-edge
    graph = torch.stack([torch.randint(n, (E,), generator=gen), torch.randint(n_rel, (E,), generator=gen), dst], 1)
    anchor, rel = torch.tensor([0, 4, 9]), torch.tensor([1, 6, 2])
    keep = torch.rand(E, generator=gen) > 0.1
    results = []
    for materialise in (True, False):
        model = NBFNet(n, n_rel, 5, generator=torch.Generator().manual_seed(0), n_layers=3, aggregate=aggregate,
                       message=message, dependent=dependent).double().set_graph(graph)
        if ties:
            with torch.no_grad():  # small integers: many messages share their node's max or min
                model.query.weight.copy_(torch.randint(-1, 2, model.query.weight.shape, generator=gen.manual_seed(1)))
                for layer in model.layers:
                    if not dependent:
                        layer.relation.weight.copy_(torch.randint(-1, 2, layer.relation.weight.shape,
                                                                  generator=gen))
        model.materialise_messages = materialise
        nodes, query = model.propagate(anchor, rel, keep, native=False)  # the fused kernel: test_nbf_kernel.py
        loss = (model.score_nodes(nodes, query) * torch.linspace(-1, 1, n, dtype=torch.double)).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        results.append((nodes, grads))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert sum(float(g.abs().sum()) for g in got_grads if g is not None) > 0
    for g, w in zip(got_grads, want_grads):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_blocked_messages_float32_and_gradcheck():
    from kgestimator.models.nbfnet import _BlockedMessages, message_blocks

    gen = torch.Generator().manual_seed(0)
    n, E, R = 6, 15, 3
    src, rel = torch.randint(n, (E,), generator=gen), torch.randint(R, (E,), generator=gen)
    dst = torch.randint(n - 1, (E,), generator=gen)
    blocks = message_blocks(src, rel, dst, n, 4, block=12)
    assert len(blocks) > 1
    # every in-edge appears once among the blocks' unpadded slots
    seen = sorted(int(b[0][k // b[1]]) for b in blocks for k in range(b[0].shape[0] * b[1])
                  if k not in set(b[4].tolist()))
    assert seen == sorted(dst.tolist())
    h = torch.randn(n, 2, 2, generator=gen, dtype=torch.double, requires_grad=True)
    w = torch.randn(R, 1, 2, generator=gen, dtype=torch.double, requires_grad=True)
    boundary = torch.randn(n, 2, 2, generator=gen, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: _BlockedMessages.apply(a, b, c, blocks, True, True),
                                    (h, w, boundary))
