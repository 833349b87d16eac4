"""Scorer callables for ``scoring=`` in scikit-learn searches and ``cross_validate``.

A scorer is ``scorer(estimator, X, y=None) -> float``, higher is better.
"""

import warnings


def _metric(estimator, X, key):
    with warnings.catch_warnings():
        # unseen entities in a fold count as misses; the warning would flood a search
        warnings.simplefilter("ignore")
        return estimator.evaluate(X)[key]


def mrr_scorer(estimator, X, y=None):
    """Filtered MRR over both directions."""
    return _metric(estimator, X, "mrr")


def make_hits_scorer(k=10):
    """A scorer for filtered Hits@k (k in 1, 3, 10)."""
    if k not in (1, 3, 10):
        raise ValueError(f"k must be 1, 3 or 10; got {k!r}.")

    def hits_scorer(estimator, X, y=None):
        return _metric(estimator, X, f"hits@{k}")

    hits_scorer.__name__ = f"hits_at_{k}_scorer"
    return hits_scorer


SCORERS = {"mrr": mrr_scorer, "hits@1": make_hits_scorer(1), "hits@3": make_hits_scorer(3),
           "hits@10": make_hits_scorer(10)}
