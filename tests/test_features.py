"""Embeddings as features: fitted tables, transform, the entity transformer, relation prediction."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import FAST
from kgestimator import KGEmbedder, make_kg
from kgestimator.features import EntityEmbeddingTransformer

#: entity and relation widths per model, as multiples of dim
WIDTHS = {"distmult": (1, 1), "transe": (1, 1), "complex": (2, 2), "rotate": (2, 1), "hake": (2, 3)}


@pytest.fixture(scope="module")
def small_kg():
    return make_kg(n_entities=40, n_relations=8, n_triples=800, random_state=1)


@pytest.fixture(scope="module")
def fitted_small(small_kg):
    return KGEmbedder(**FAST, random_state=0).fit(small_kg.train, valid=small_kg.valid)


@pytest.mark.parametrize("model", sorted(WIDTHS))
def test_embedding_tables_shapes_and_alignment(small_kg, model):
    est = KGEmbedder(model=model, dim=6, n_negatives=8, n_epochs=1, batch_size=256, random_state=0)
    assert not hasattr(est, "entity_embeddings_")
    est.fit(small_kg.train)
    ent, rel = est.entity_embeddings_, est.relation_embeddings_
    fe, fr = WIDTHS[model]
    assert isinstance(ent, np.ndarray) and ent.shape == (len(est.entities_), fe * 6)
    assert rel.shape == (len(est.relations_), fr * 6)
    np.testing.assert_array_equal(ent, est.model_.entity.detach().numpy())
    np.testing.assert_array_equal(rel, est.model_.relation.detach().numpy())
    ent[:] = 0  # a copy: the model is untouched
    assert est.model_.entity.detach().abs().sum() > 0


def test_nbfnet_has_no_entity_table(small_kg):
    est = KGEmbedder(model="nbfnet", dim=4, n_negatives=4, n_epochs=1, batch_size=64,
                     model_params={"n_layers": 1}, random_state=0).fit(small_kg.train[:200])
    with pytest.raises(AttributeError, match="no entity embeddings"):
        est.entity_embeddings_
    assert est.relation_embeddings_.shape == (len(est.relations_), 4)
    with pytest.raises(ValueError, match="nbfnet"):
        est.transform(small_kg.train[:3])


def test_unfitted_tables_raise_not_fitted():
    with pytest.raises(NotFittedError):
        KGEmbedder().entity_embeddings_


def test_transform_per_triple_features(fitted_small, small_kg):
    X = small_kg.test[:7]
    F = fitted_small.transform(X)
    d = fitted_small.entity_embeddings_.shape[1]
    dr = fitted_small.relation_embeddings_.shape[1]
    assert F.shape == (7, 2 * d + dr + 1)
    ids = fitted_small._encode_strict(X).numpy()
    np.testing.assert_allclose(F[:, :d], fitted_small.entity_embeddings_[ids[:, 0]])
    np.testing.assert_allclose(F[:, d:d + dr], fitted_small.relation_embeddings_[ids[:, 1]])
    np.testing.assert_allclose(F[:, d + dr:2 * d + dr], fitted_small.entity_embeddings_[ids[:, 2]])
    np.testing.assert_allclose(F[:, -1], fitted_small.score_samples(X))
    names = fitted_small.get_feature_names_out()
    assert len(names) == F.shape[1] and names[0] == "head0" and names[-1] == "score"


# ---------------------------------------------------------------------- relation prediction
def _brute_relation_scores(est, pairs):
    rels = est.relations_
    rows = [[h, r, t] for h, t in pairs for r in rels]
    return est.score_samples(np.array(rows, dtype=object)).reshape(len(pairs), len(rels))


@pytest.mark.parametrize("model", ["distmult", "complex", "rotate", "transe", "hake"])
def test_relation_topk_matches_brute_force(small_kg, model):
    est = KGEmbedder(model=model, dim=8, n_negatives=8, n_epochs=2, batch_size=256, random_state=0)
    est.fit(small_kg.train, valid=small_kg.valid)
    pairs = small_kg.test[:6][:, [0, 2]]
    brute = _brute_relation_scores(est, pairs)
    labels, scores = est.predict_topk(pairs, k=3, direction="relation", exclude_known=False)
    order = np.argsort(-brute, axis=1, kind="stable")[:, :3]
    np.testing.assert_allclose(scores, np.take_along_axis(brute, order, 1), rtol=1e-5, atol=1e-5)
    # filtered: relations already known between the pair are left out
    known = {(h, r, t) for h, r, t in np.concatenate([small_kg.train, small_kg.valid]).tolist()}
    labels, _ = est.predict_topk(pairs, k=2, direction="relation")
    for (h, t), row in zip(pairs.tolist(), labels.tolist()):
        assert not any((h, r, t) in known for r in row)
    frame = est.predict_topk(small_kg.test[:2], k=2, direction="relation", as_frame=True)
    assert list(frame.columns[:3]) == ["query", "head", "tail"]
    assert frame["head"].tolist()[0] == small_kg.test[0, 0] and frame["tail"].tolist()[0] == small_kg.test[0, 2]


def test_relation_ranks_match_brute_force(fitted_small, small_kg):
    est = fitted_small
    test = small_kg.test
    m = est.evaluate(test, relation=True)
    known = {tuple(t) for t in np.concatenate([small_kg.train, small_kg.valid, test]).tolist()}
    brute = _brute_relation_scores(est, test[:, [0, 2]])
    ranks = []
    for (h, r, t), row in zip(test.tolist(), brute):
        j = list(est.relations_).index(r)
        others = [s for k, (s, rel) in enumerate(zip(row, est.relations_)) if k != j and (h, rel, t) not in known]
        others = np.array(others)
        ranks.append(1 + np.sum(others > row[j]) + np.sum(others == row[j]) / 2)
    ranks = np.array(ranks)
    assert m["relation"]["mrr"] == pytest.approx(np.mean(1 / ranks), rel=1e-6)
    assert m["relation"]["hits@1"] == pytest.approx(np.mean(ranks <= 1))
    # the entity metrics are unchanged by relation=True
    assert m["mrr"] == pytest.approx(est.evaluate(test)["mrr"])


def test_relation_queries_refuse_bad_k(fitted_small, small_kg):
    with pytest.raises(ValueError, match="number of relations"):
        fitted_small.predict_topk(small_kg.test[:2, [0, 2]], k=len(fitted_small.relations_) + 1,
                                  direction="relation", exclude_known=False)


# ---------------------------------------------------------------------- the transformer
def test_transformer_prefit_values_names_and_pandas(fitted_small, small_kg):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame({"person": small_kg.test[:5, 0], "other": small_kg.test[:5, 2]})
    t = EntityEmbeddingTransformer(fitted_small, prefit=True).fit(X)
    F = t.transform(X)
    d = fitted_small.entity_embeddings_.shape[1]
    ids = fitted_small._encode_strict(small_kg.test[:5]).numpy()
    np.testing.assert_allclose(F[:, :d], fitted_small.entity_embeddings_[ids[:, 0]])
    np.testing.assert_allclose(F[:, d:], fitted_small.entity_embeddings_[ids[:, 2]])
    names = t.get_feature_names_out()
    assert names[0] == "person_emb0" and names[d] == "other_emb0" and len(names) == 2 * d
    out = t.set_output(transform="pandas").transform(X)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(names)
    assert list(out.index) == list(X.index)


def test_transformer_in_column_transformer_pipeline_cross_val(fitted_small, small_kg):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    ents = fitted_small.entities_
    X = pd.DataFrame({"entity": rng.choice(ents, 60), "age": rng.normal(size=60)})
    y = (X["age"] > 0).astype(int).to_numpy()
    ct = ColumnTransformer([("emb", EntityEmbeddingTransformer(fitted_small, prefit=True), ["entity"]),
                            ("num", "passthrough", ["age"])])
    pipe = make_pipeline(ct, LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8  # the passthrough column carries the target
    assert ct.fit(X).transform(X).shape == (60, fitted_small.entity_embeddings_.shape[1] + 1)


def test_transformer_handle_unknown(fitted_small, small_kg):
    a, b = fitted_small.entities_[:2]
    X = np.array([[a], ["brand-new"], ["lonely"]], dtype=object)
    with pytest.raises(ValueError, match="brand-new"):
        EntityEmbeddingTransformer(fitted_small, prefit=True).fit(X).transform(X)
    zeros = EntityEmbeddingTransformer(fitted_small, prefit=True, handle_unknown="zeros").fit(X).transform(X)
    np.testing.assert_allclose(zeros[0], fitted_small.entity_embeddings_[0])
    assert not zeros[1:].any()
    context = np.array([["brand-new", "r_new", a], [b, "r_new", "brand-new"]], dtype=object)
    with pytest.raises(ValueError, match="needs graph"):
        EntityEmbeddingTransformer(fitted_small, prefit=True, handle_unknown="neighbours").fit(X)
    near = EntityEmbeddingTransformer(fitted_small, graph=context, prefit=True,
                                      handle_unknown="neighbours").fit(X).transform(X)
    np.testing.assert_allclose(near[1], fitted_small.entity_embeddings_[:2].mean(0), rtol=1e-6)
    assert not near[2].any()  # no known neighbour: zeros
    with pytest.raises(ValueError, match="handle_unknown"):
        EntityEmbeddingTransformer(fitted_small, prefit=True, handle_unknown="ignore").fit(X)


def test_transformer_fitted_on_graph_drops_target_relations(small_kg):
    # the target of each row is a fact of the graph under relation 'target_of'
    ents = np.unique(small_kg.train[:, [0, 2]])
    rows = ents[:20]
    targets = np.where(np.arange(20) % 2 == 0, "group_a", "group_b")
    target_facts = np.stack([rows, np.full(20, "target_of"), targets], 1)
    graph = np.concatenate([small_kg.train.astype(str), target_facts])
    emb = KGEmbedder(**FAST, random_state=0)
    X = rows.reshape(-1, 1)
    with pytest.warns(UserWarning, match="target_of") as caught:
        t = EntityEmbeddingTransformer(emb, graph=graph).fit(X, targets)
    assert list(t.dropped_relations_) == ["target_of"]
    # attributed to the caller's line whichever entry point reached the check
    with pytest.warns(UserWarning, match="target_of") as caught_too:
        EntityEmbeddingTransformer(emb, graph=graph).fit_transform(X, targets)
    for record in (caught, caught_too):
        assert [w.filename for w in record if "target_of" in str(w.message)] == [__file__]
    assert "target_of" not in set(t.embedder_.relations_)
    assert "group_a" not in set(t.embedder_.entities_)
    assert t.transform(X).shape == (20, FAST["dim"])
    ex = EntityEmbeddingTransformer(emb, graph=graph, exclude_relations=[small_kg.train[0, 1]]).fit(X)
    assert small_kg.train[0, 1] not in set(ex.embedder_.relations_)
    assert "target_of" in set(ex.embedder_.relations_)  # no y: nothing detected


def test_transformer_cross_fitting(small_kg):
    ents = np.unique(small_kg.train[:, [0, 2]])
    rows = ents[:12]
    targets = np.where(np.arange(12) % 2 == 0, "group_a", "group_b")
    graph = np.concatenate([small_kg.train.astype(str), np.stack([rows, np.full(12, "target_of"), targets], 1)])
    emb = KGEmbedder(**FAST, random_state=0)
    t = EntityEmbeddingTransformer(emb, graph=graph, cv=3)
    with pytest.warns(UserWarning):
        F = t.fit_transform(rows.reshape(-1, 1), targets)
    assert F.shape == (12, FAST["dim"])
    # out-of-fold features come from other embedders than the final one
    assert not np.allclose(F, t.transform(rows.reshape(-1, 1)))
    with pytest.raises(ValueError, match="target facts"):
        EntityEmbeddingTransformer(emb, graph=small_kg.train, cv=3).fit_transform(rows.reshape(-1, 1))
    with pytest.raises(ValueError, match="prefit"):
        EntityEmbeddingTransformer(emb.fit(small_kg.train), prefit=True, cv=3).fit_transform(rows.reshape(-1, 1))


def test_transformer_leaves_prefit_embedder_alone(fitted_small, small_kg):
    before = {k: v.clone() for k, v in fitted_small.model_.state_dict().items()}
    params = fitted_small.get_params()
    X = small_kg.test[:5, :1]
    t = EntityEmbeddingTransformer(fitted_small, prefit=True)
    t.fit(X).transform(X)
    from sklearn.base import clone

    assert clone(t).embedder is fitted_small  # a clone keeps the fitted embedder
    assert fitted_small.get_params() == params
    for k, v in fitted_small.model_.state_dict().items():
        assert torch.equal(v, before[k])


def test_transformer_requires_graph_or_prefit():
    with pytest.raises(ValueError, match="graph"):
        EntityEmbeddingTransformer().fit(np.array([["a"]]))
    with pytest.raises(NotFittedError):
        EntityEmbeddingTransformer(KGEmbedder(), prefit=True).fit(np.array([["a"]]))


# ---------------------------------------------------------------------- scikit-learn's checks
def _check_instance():
    # integer labels 0..29, so that the checks' numeric matrices hit known entities
    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 30, 300), rng.integers(0, 3, 300), rng.integers(0, 30, 300)], 1)
    est = KGEmbedder(dim=4, n_negatives=4, n_epochs=1, batch_size=64, neg_chunk_size=8, random_state=0)
    return EntityEmbeddingTransformer(est.fit(triples), prefit=True, handle_unknown="zeros")


#: checks expected to fail, and why
TRANSFORMER_EXPECTED_FAILED = {
    "check_estimators_overwrite_params": (
        "the check compares joblib.hash of each parameter before and after fit; the hash of a fitted "
        "KGEmbedder (the embedder parameter) differs between two calls even with no fit in between, because "
        "its pickle goes through torch.save, whose bytes are not deterministic; the transformer never "
        "modifies a prefit embedder (test_transformer_leaves_prefit_embedder_alone)"),
}


@parametrize_with_checks([_check_instance()], expected_failed_checks=lambda est: TRANSFORMER_EXPECTED_FAILED)
def test_transformer_sklearn_checks(estimator, check):
    check(estimator)
