import pytest
import torch

from kgestimator import KGEmbedder, make_kg


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # the tests' tensors are tiny: one thread is as fast, and several times faster
    # than torch's default on a machine busy with other work (whole suite on a
    # loaded 2-core machine: 417 s with torch's default, 44 s with one thread)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

#: small, fast settings shared by estimator tests (a few seconds per fit at most)
FAST = dict(dim=16, n_negatives=32, batch_size=256, neg_chunk_size=32, n_epochs=5, learning_rate=0.02)


@pytest.fixture(scope="session")
def kg():
    return make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)


@pytest.fixture(scope="session")
def fitted(kg):
    return KGEmbedder(**FAST, random_state=0).fit(kg.train, valid=kg.valid)
