"""
Embeddings as features: a downstream classifier on nations
==========================================================

A knowledge-graph embedding is also a feature extractor. Here the task is a
country-pair attribute of the *nations* dataset: does country A keep an
embassy in country B? The target facts (the ``embassy`` triples) are removed
from the graph the embedder trains on, so the features cannot simply encode
the answer; the other 54 relations (treaties, trade, votes, conflicts...)
remain.

Two feature sets go through the same ``LogisticRegression`` under 5-fold
``cross_val_score``: one-hot codes of the two countries (a per-country
"sends / receives embassies" rate, nothing shared between countries), and the
countries' DistMult embeddings through
:class:`~kgestimator.features.EntityEmbeddingTransformer` in a
``ColumnTransformer``. Had the embedder seen the embassy triples, its
vectors would carry the answers of the test folds too (leakage); when the
embedder is fitted inside the pipeline, ``exclude_relations=["embassy"]`` does
what the filtering below does by hand.
"""

import os

import numpy as np

from kgestimator import KGEmbedder, load_dataset

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"
TARGET = "embassy"


def main():
    try:
        data = load_dataset("nations")
    except (FileNotFoundError, ValueError) as exc:
        print(f"the nations dataset is not available here ({exc}); nothing to run")
        return
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from kgestimator.features import EntityEmbeddingTransformer

    facts = np.concatenate([data.train, data.valid, data.test])
    countries = np.unique(facts[:, [0, 2]])
    pairs = pd.DataFrame([(a, b) for a in countries for b in countries if a != b], columns=["head", "tail"])
    positive = {(h, t) for h, r, t in facts.tolist() if r == TARGET}
    y = np.array([(h, t) in positive for h, t in pairs.itertuples(index=False)], dtype=int)
    graph = facts[facts[:, 1] != TARGET]
    print(f"{len(pairs)} country pairs, {y.sum()} with an embassy; the embedder trains on {len(graph)} "
          f"of the {len(facts)} facts ({TARGET!r} left out)")

    params = dict(model="distmult", dim=32, n_negatives=32, batch_size=256, learning_rate=0.02,
                  n_epochs=5 if FAST else 200, random_state=0, n_threads=1)
    embedder = KGEmbedder(**params).fit(graph)

    def embedding_features(est):
        emb = EntityEmbeddingTransformer(est, prefit=True)
        return ColumnTransformer([("head", emb, ["head"]), ("tail", emb, ["tail"])])

    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    candidates = {
        "one-hot countries": ColumnTransformer([("onehot", OneHotEncoder(), ["head", "tail"])]),
        "DistMult embeddings (no embassy facts)": embedding_features(embedder),
    }
    print(f"{'features':50s}  ROC AUC (5-fold, mean +- sd)")
    for name, features in candidates.items():
        pipe = make_pipeline(features, LogisticRegression(max_iter=2000, C=1.0))
        auc = cross_val_score(pipe, pairs, y, cv=cv, scoring="roc_auc")
        print(f"{name:50s}  {auc.mean():.3f} +- {auc.std():.3f}")
    # the transformer names its columns and hands pandas frames on
    frame = embedding_features(embedder).set_output(transform="pandas").fit_transform(pairs.head(3))
    print(f"feature frame: {frame.shape[1]} columns, e.g. {list(frame.columns[:2])}")


main()
