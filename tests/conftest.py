import pytest

from kgestimator import KGEmbedder, make_kg

#: small, fast settings shared by estimator tests (a few seconds per fit at most)
FAST = dict(dim=16, n_negatives=32, batch_size=256, neg_chunk_size=32, n_epochs=5, learning_rate=0.02)


@pytest.fixture(scope="session")
def kg():
    return make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)


@pytest.fixture(scope="session")
def fitted(kg):
    return KGEmbedder(**FAST, random_state=0).fit(kg.train, valid=kg.valid)
