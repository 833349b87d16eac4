"""
Quickstart: fit, evaluate and query a knowledge-graph embedding
===============================================================

:class:`~kgestimator.KGEmbedder` is a scikit-learn estimator. ``fit`` takes an
``(n, 3)`` array of ``(head, relation, tail)`` labels; ``score`` is the
filtered mean reciprocal rank (MRR) of held-out triples, ranked against every
entity in both directions; ``predict_topk`` answers ``(head, relation, ?)``
queries.

The graph comes from :func:`~kgestimator.make_kg`, a generator of small graphs
with planted relational patterns, so nothing is downloaded.
"""

import os
import tempfile

import numpy as np
import torch

from kgestimator import KGEmbedder, make_kg

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"

# a graph this small gains nothing from more CPU threads, and on a busy machine
# torch's default (one per core) made these fits several times slower
torch.set_num_threads(1)

# %%
# A generated graph
# -----------------
# 300 entities, 8 relations (symmetric, inverse, compositional, hierarchical);
# every valid or test triple can be inferred from training triples.
kg = make_kg(random_state=0)
print(f"{len(kg.entities)} entities, {len(kg.relations)} relations")
print(f"train {kg.train.shape}, valid {kg.valid.shape}, test {kg.test.shape}")
print(kg.train[:3])

# %%
# Fit
# ---
# DistMult with 64 uniform negatives per positive. ``valid`` is only used as
# known facts for filtering here (``early_stopping=True`` would also use it to
# stop training).
est = KGEmbedder(model="distmult", dim=32, n_negatives=64, batch_size=500,
                 learning_rate=0.02, n_epochs=3 if FAST else 40, random_state=0)
est.fit(kg.train, valid=kg.valid)
print(f"trained {est.n_iter_} epochs, last loss {est.history_[-1]['loss']:.3f}")

# %%
# Evaluate
# --------
# ``score`` is the filtered MRR over head and tail prediction; ``evaluate``
# gives MR and Hits@k too, overall and per side. Ranks are "realistic": a tie
# with the true answer counts half.
print(f"test MRR: {est.score(kg.test):.3f}")
metrics = est.evaluate(kg.test)
for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
    print(f"{key:>8}: {metrics[key]:.3f}   (head {metrics['head'][key]:.3f}, "
          f"tail {metrics['tail'][key]:.3f})")

# %%
# Query
# -----
# The five best tails for two test queries. Facts already known from training
# (and validation) are left out, so the answers are new predictions.
queries = kg.test[:2, :2]
labels, scores = est.predict_topk(queries, k=5)
for (head, rel), top, truth in zip(queries, labels, kg.test[:2, 2]):
    print(f"({head}, {rel}, ?) -> {', '.join(top)}   (held-out answer: {truth})")

# ``score_samples`` rates whole triples: true test triples against the same
# triples with a random tail.
rng = np.random.default_rng(0)
corrupted = kg.test[:200].copy()
corrupted[:, 2] = rng.choice(kg.entities, size=len(corrupted))
print(f"mean score, true triples:      {est.score_samples(kg.test[:200]).mean():.3f}")
print(f"mean score, corrupted triples: {est.score_samples(corrupted).mean():.3f}")

# %%
# Save and load
# -------------
# ``save`` writes weights-only tensors plus JSON metadata with a checksum;
# loading such a file never runs code (unlike unpickling).
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "distmult.kge")
    est.save(path)
    loaded = KGEmbedder.load(path)
    print(f"reloaded model, test MRR {loaded.score(kg.test):.3f}")
