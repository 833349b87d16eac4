"""
Top-k link predictions: tails, heads, known facts, and a curation list
======================================================================

``predict_topk`` ranks every entity for each query and returns the ``k`` best
labels with their scores. Tail queries are ``(head, relation)`` pairs; with
``direction="head"`` the queries are ``(relation, tail)`` pairs. By default
answers already known from training (and validation) are left out, so the
list holds new predictions; ``exclude_known=False`` keeps them.

The model is TransE on a generated graph whose held-out facts follow planted
patterns (an inverse relation, a symmetric relation, compositions and a class
hierarchy), so good predictions are checkable. The last sections use the
predictions for an application, knowledge-base completion: a ranked list of
likely missing facts for a curator to review, as a pandas DataFrame and from
the command line.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from kgestimator import KGEmbedder, cli, make_kg

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"

# a graph this small gains nothing from more CPU threads, and on a busy machine
# torch's default (one per core) made these fits several times slower
torch.set_num_threads(1)

kg = make_kg(random_state=0)
est = KGEmbedder(model="transe", dim=32, gamma=6.0, n_negatives=64, batch_size=500,
                 learning_rate=0.01, n_epochs=3 if FAST else 40, random_state=0)
est.fit(kg.train, valid=kg.valid)
print(f"TransE test MRR {est.score(kg.test):.3f}")

# the held-out answers of each query, to mark correct predictions
test_tails, test_heads = {}, {}
for h, r, t in kg.test:
    test_tails.setdefault((h, r), set()).add(t)
    test_heads.setdefault((r, t), set()).add(h)

# %%
# Tail prediction
# ---------------
# One query per pattern; ``*`` marks an answer held out in the test split.
# TransE can only model a symmetric relation with a translation close to zero,
# so for the symmetric query the head itself tends to rank first: a known
# limitation of translation models (RotatE rotates by pi instead).
queries = [next(tr[:2] for tr in kg.test if kg.patterns[tr[1]] == p)
           for p in ("symmetric", "inverse", "compositional", "hierarchical")]
labels, scores = est.predict_topk(queries, k=5)
for (h, r), top, s in zip(queries, labels, scores):
    answers = test_tails[(h, r)]
    shown = ", ".join(f"{e}{'*' if e in answers else ''} ({v:.1f})" for e, v in zip(top, s))
    print(f"({h}, {r}, ?): {shown}")

# %%
# Head prediction
# ---------------
# ``direction="head"`` takes ``(relation, tail)`` pairs (or full triples, whose
# head column is ignored).
pairs = [(r, t) for h, r, t in kg.test[:3]]
labels, _ = est.predict_topk(pairs, k=5, direction="head")
for (r, t), top in zip(pairs, labels):
    answers = test_heads[(r, t)]
    print(f"(?, {r}, {t}): " + ", ".join(f"{e}{'*' if e in answers else ''}" for e in top))

# %%
# Known facts excluded, or not
# ----------------------------
# A hub of the hierarchy has many known ``is_a`` children in train. With
# ``exclude_known=False`` they fill the top of the list; by default only new
# candidates remain.
rel = next(r for r in kg.relations if kg.patterns[r] == "hierarchical")
tails, counts = np.unique(kg.train[kg.train[:, 1] == rel, 2], return_counts=True)
hub = tails[counts.argmax()]
train_heads = set(kg.train[(kg.train[:, 1] == rel) & (kg.train[:, 2] == hub), 0])
for exclude in (False, True):
    top = est.predict_topk([(rel, hub)], k=8, direction="head", exclude_known=exclude)[0][0]
    n_known = sum(e in train_heads for e in top)
    print(f"exclude_known={exclude!s:5}: {n_known} of 8 are training facts: {', '.join(top)}")

# %%
# ``predict``: the single best answer
# -----------------------------------
# How often is the best new tail one of the held-out answers of its query?
queries = np.array(list(test_tails))
best = est.predict(queries)
hit = np.mean([b in test_tails[(h, r)] for (h, r), b in zip(queries, best)])
print(f"best tail is a held-out answer for {hit:.1%} of {len(queries)} test queries")

# %%
# Unknown labels
# --------------
# An entity that was not in the training triples has no embedding, so
# prediction refuses it with a message naming it.
try:
    est.predict([("no_such_entity", kg.relations[0])])
except ValueError as exc:
    print(f"ValueError: {exc}")

# %%
# Application: a review list of likely missing facts
# --------------------------------------------------
# A curator wants the most plausible facts missing from the graph for one
# relation. Ask for the best 3 new tails of every head that has this relation
# in train; ``as_frame=True`` returns one tidy row per (query, answer) with the
# columns ``query, head, relation, rank, label, score, known``. Sorting by score
# across queries gives the review list. Because the held-out test facts are
# true but missing from train, they measure the list's precision.
rel = next(r for r in kg.relations if kg.patterns[r] == "inverse")
heads = np.unique(kg.train[kg.train[:, 1] == rel, 0])
frame = est.predict_topk([(h, rel) for h in heads], k=3, as_frame=True)
review = frame.sort_values("score", ascending=False).head(20).reset_index(drop=True)
review["held_out_fact"] = [t in test_tails.get((h, r), ()) for h, r, t in
                           zip(review["head"], review["relation"], review["label"])]
print(review[["head", "relation", "label", "score", "held_out_fact"]].to_string(float_format="%.2f"))
n_true = sum(len(v) for (h, r), v in test_tails.items() if r == rel)
n_candidates = len(heads) * len(est.entities_)
print(f"precision of the 20 suggestions: {review['held_out_fact'].mean():.0%} "
      f"(a random pick: about {n_true / n_candidates:.1%})")

# %%
# The same from the command line
# ------------------------------
# ``kgestimator train`` writes a model file; ``kgestimator predict`` answers
# queries given with ``--query HEAD RELATION`` or in a tab-separated file, as a
# table, TSV or JSON. Here the commands run in-process through ``cli.main``
# with the model saved above; in a shell it reads::
#
#     kgestimator predict model.kge --queries queries.tsv -k 3 --format tsv > review.tsv
with tempfile.TemporaryDirectory() as tmp:
    model = Path(tmp) / "model.kge"
    est.save(model)
    queries = Path(tmp) / "queries.tsv"
    queries.write_text("".join(f"{h}\t{rel}\n" for h in heads[:2]))
    cli.main(["predict", str(model), "--queries", str(queries), "-k", "3"])
