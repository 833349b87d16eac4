import os

import pytest
import torch
from hypothesis import HealthCheck, settings

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
def train_config(**params):
    """The training configuration ``fit`` builds from ``KGEmbedder(**params)`` (for step-level tests).

    Goes through the estimator's own path, so these tests follow its defaults
    and need no change when the configuration's fields do.
    """
    from kgestimator.training import make_config

    est = KGEmbedder(**params)
    return make_config(est.get_params(deep=False), est._check_params(), 0, torch.device("cpu"))


FAST = dict(dim=16, n_negatives=32, batch_size=256, neg_chunk_size=32, n_epochs=5, learning_rate=0.02)

# Fuzz tests (tests/test_fuzz*.py) run a few hundred generated cases per API by
# default, derandomised so CI is repeatable; KGESTIMATOR_FUZZ=thorough runs
# FUZZ_SCALE times as many, freshly random, for a deliberate search.
FUZZ_PROFILE = os.environ.get("KGESTIMATOR_FUZZ", "default")
FUZZ_SCALE = {"default": 1, "thorough": 20}
if FUZZ_PROFILE not in FUZZ_SCALE:
    raise ValueError(f"KGESTIMATOR_FUZZ must be one of {sorted(FUZZ_SCALE)}; got {FUZZ_PROFILE!r}")
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("default", deadline=None, derandomize=True, database=None,
                          suppress_health_check=_SLOW_OK)
settings.register_profile("thorough", deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(FUZZ_PROFILE)


def fuzz_examples(n):
    """Generated cases for a fuzz test: ``n`` by default, more when thorough."""
    return n * FUZZ_SCALE[FUZZ_PROFILE]


@pytest.fixture(scope="session")
def kg():
    return make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)


@pytest.fixture(scope="session")
def fitted(kg):
    return KGEmbedder(**FAST, random_state=0).fit(kg.train, valid=kg.valid)
