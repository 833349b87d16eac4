"""fit(valid_filter=...): more known facts left out of the validation rankings (LibKGE's filter_with_test)."""

import numpy as np
import pytest

from kgestimator import KGEmbedder
from kgestimator.datasets import make_kg


@pytest.fixture(scope="module")
def splits():
    kg = make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)
    return kg.train, kg.valid, kg.test


def _fit(train, valid, **kw):
    return KGEmbedder(model="distmult", dim=16, n_epochs=2, eval_every=1, batch_size=256, n_negatives=16,
                      early_stopping=True, patience=5, random_state=0, verbose=0).fit(train, valid=valid, **kw)


def test_validation_mrr_is_the_evaluation_with_the_extra_filter(splits):
    train, valid, test = splits
    plain = _fit(train, valid)
    filtered = _fit(train, valid, valid_filter=test)
    # the filter changes the validation figure only, not the training: same weights
    assert np.allclose(plain.entity_embeddings_, filtered.entity_embeddings_)
    # early stopping restores the best epoch's weights: the best figure is the fitted model's
    best_plain, best_filtered = (max(h["valid_mrr"] for h in est.history_) for est in (plain, filtered))
    assert best_plain == pytest.approx(plain.evaluate(valid)["mrr"], abs=1e-6)
    assert best_filtered == pytest.approx(plain.evaluate(valid, filter_triples=test)["mrr"], abs=1e-6)
    # the test triples compete with validation answers on this dense graph: filtering them raises the MRR
    assert best_filtered > best_plain
    # later evaluations keep their own filter (train + valid)
    assert filtered.evaluate(valid)["mrr"] == pytest.approx(best_plain, abs=1e-6)


def test_valid_filter_without_validation_is_refused(splits):
    train, _, test = splits
    est = KGEmbedder(model="distmult", dim=8, n_epochs=1, early_stopping=False, verbose=0)
    with pytest.raises(ValueError, match="valid_filter filters the validation rankings"):
        est.fit(train, valid_filter=test)
    assert not hasattr(est, "entity_embeddings_")


def test_valid_filter_is_checked_like_any_triples(splits):
    train, valid, _ = splits
    with pytest.raises(ValueError, match="valid_filter"):
        _fit(train, valid, valid_filter=np.zeros((4, 2)))
