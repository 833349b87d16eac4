"""
Tuning the EMU parameters with GridSearchCV
===========================================

:class:`~kgestimator.KGEmbedder` follows the scikit-learn estimator rules, so
``GridSearchCV`` tunes it like any other estimator. The EMU knobs are plain
parameters:

- ``alpha``: weight of the vanilla (unmutated, one-hot) loss in Eq. 12;
- ``mutation_ratio``: fraction of a negative's coordinates copied from the
  positive (the paper's ``n_P / d``);
- ``beta``: the ULS label of mutated negatives, which the EMU term places
  ``log(1 / beta)`` below the positive.

Cross-validation splits triples with :class:`~kgestimator.TripleKFold`, which
keeps every entity of a test fold in its training fold (an embedding model
cannot rank an entity it never saw). The default score is the filtered MRR of
the held-out fold.
"""

import os

import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from kgestimator import KGEmbedder, TripleKFold, make_kg, mrr_scorer

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"

# a graph this small gains nothing from more CPU threads, and on a busy machine
# torch's default (one per core) made these fits several times slower
torch.set_num_threads(1)

kg = make_kg(random_state=0)
base = dict(model="distmult", dim=32, n_negatives=32, batch_size=500, learning_rate=0.05,
            n_epochs=2 if FAST else 50, random_state=0)

# %%
# A 2 x 2 x 1 grid over the EMU parameters
# ----------------------------------------
# Two folds and four candidates: eight fits, plus one refit of the best
# candidate on all training triples. Real searches use more folds, a wider
# grid and longer training.
param_grid = {"alpha": [0.1, 0.7], "mutation_ratio": [0.1, 0.6], "beta": [0.25]}
search = GridSearchCV(KGEmbedder(emu=True, **base), param_grid,
                      cv=TripleKFold(2, random_state=0), scoring=mrr_scorer)
search.fit(kg.train)

res = search.cv_results_
print("alpha  mutation_ratio  beta  CV MRR (mean +- std)  fit s  rank")
for i in res["rank_test_score"].argsort():
    print(f"{res['param_alpha'][i]:5}  {res['param_mutation_ratio'][i]:14}  {res['param_beta'][i]:4}  "
          f"{res['mean_test_score'][i]:.3f} +- {res['std_test_score'][i]:.3f}        "
          f"{res['mean_fit_time'][i]:5.1f}  {res['rank_test_score'][i]:4}")
print(f"best: {search.best_params_}, CV MRR {search.best_score_:.3f}")

# %%
# CV scores are lower than the test score below: each fold trains on half of
# the triples, so many held-out facts lose the premises they could be inferred
# from. Only the ranking of the candidates matters here.

# %%
# The refitted best model on the test triples
# -------------------------------------------
# ``search.best_estimator_`` was refitted on all of ``kg.train``. Its test MRR
# filters the known training triples and the test triples themselves.
print(f"test MRR of the best candidate: {search.score(kg.test):.3f}")

# %%
# Inside a Pipeline
# -----------------
# Nested parameters use the usual ``step__parameter`` names. Here the search
# only varies ``alpha``. ``n_jobs=-1`` would run the fits in parallel processes
# (the estimator pickles cheaply before ``fit``); with fits this short, starting
# the worker processes would cost more than it saves.
pipe = Pipeline([("kge", KGEmbedder(emu=True, mutation_ratio=0.6, beta=0.25, **base))])
pipe_search = GridSearchCV(pipe, {"kge__alpha": [0.1, 0.7]}, cv=TripleKFold(2, random_state=0))
pipe_search.fit(kg.train)
for alpha, score in zip(pipe_search.cv_results_["param_kge__alpha"],
                        pipe_search.cv_results_["mean_test_score"]):
    print(f"kge__alpha={alpha}: CV MRR {score:.3f}")
print(f"best: {pipe_search.best_params_}")
