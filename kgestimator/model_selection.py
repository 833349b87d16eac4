"""Splitting triples without stranding entities.

Plain ``KFold`` over triples puts some entities (or relations) only in a
test fold; an embedding model never saw them while training and cannot rank
them.  The splitters here move just enough test triples back into training
that every entity and relation of a test fold also occurs in its training
fold.
"""

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator

from ._splitting import check_rng, keep_covered
from .data import check_triples, factorize_triples

__all__ = ["TripleKFold", "train_test_split_triples"]


class TripleKFold(BaseCrossValidator):
    """K-fold cross-validation over triples that keeps test entities in train.

    Triples are assigned to ``n_splits`` folds as in ``KFold``.  Then, for
    each fold, whenever an entity or relation of the test fold occurs in no
    training triple, one of the test triples holding it is taken out of the
    test fold; such triples stay in the training part of every split.  Test
    folds are therefore disjoint and every entity and relation of a test
    fold occurs in the matching training fold, but together the test folds
    may miss a few triples (those needed to introduce rare entities).

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=True
        Whether to shuffle the triples before assigning folds (and to pick
        at random which test triple goes back to training).
    random_state : int, RandomState instance, Generator or None, default=None
        Controls the shuffling; only used when ``shuffle=True``.  Pass an
        int for the same folds on every call to :meth:`split`.

    Examples
    --------
    >>> from kgestimator.datasets import make_kg
    >>> kg = make_kg(n_entities=60, n_triples=800, random_state=0)
    >>> cv = TripleKFold(3, random_state=0)
    >>> for train, test in cv.split(kg.train):
    ...     pass
    """

    def __init__(self, n_splits=5, *, shuffle=True, random_state=None):
        if not isinstance(n_splits, numbers.Integral) or isinstance(n_splits, bool):
            raise ValueError(f"n_splits must be an int, got {n_splits!r}")
        if n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {n_splits}")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if not shuffle and random_state is not None:
            raise ValueError(
                "Setting a random_state has no effect since shuffle is False; "
                "leave random_state at None or set shuffle=True"
            )
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of splitting iterations.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate train and test indices for each fold.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)
            Triples of labels, accepted by :func:`~kgestimator.data.check_triples`.
        y, groups : object
            Ignored, present for API compatibility.

        Yields
        ------
        train : ndarray of int64
            Indices of the training triples of the fold.
        test : ndarray of int64
            Indices of the test triples of the fold.
        """
        triples = check_triples(X)
        n = len(triples)
        if self.n_splits > n:
            raise ValueError(
                f"Cannot have n_splits={self.n_splits} greater than the number "
                f"of triples n_triples={n}"
            )
        ids, n_entities, n_relations = factorize_triples(triples)
        if self.shuffle:
            order = check_rng(self.random_state).permutation(n)
        else:
            order = np.arange(n)
        priority = np.empty(n, dtype=np.int64)
        priority[order] = np.arange(n)
        # Contiguous runs of `order` as in KFold: sizes differ by at most one.
        fold = np.arange(n) * self.n_splits // n
        fold = fold[priority]
        everything = np.ones(n, dtype=bool)
        for k in range(self.n_splits):
            test = fold == k
            kept = keep_covered(ids, test, everything, priority, n_entities, n_relations)
            # Out of every test fold: the triple trains in all splits.
            fold[test & ~kept] = -1
        indices = np.arange(n)
        for k in range(self.n_splits):
            test = fold == k
            yield indices[~test], indices[test]


def train_test_split_triples(X, test_size=0.1, random_state=None):
    """Split triples so every test entity and relation also occurs in train.

    Test triples are drawn at random; those that would introduce an entity
    or relation missing from train go back to train and are replaced by
    further draws, for a few rounds.

    Parameters
    ----------
    X : array-like of shape (n_triples, 3)
        Triples of labels, accepted by :func:`~kgestimator.data.check_triples`.
    test_size : float or int, default=0.1
        Fraction of the triples (in (0, 1)) or number of triples to put in
        the test set.  In a very sparse graph the test set can end up
        smaller than asked.
    random_state : int, RandomState instance, Generator or None, default=None
        Seed for a reproducible split.

    Returns
    -------
    train : ndarray of shape (n_train, 3)
    test : ndarray of shape (n_test, 3)
        Checked triples (int64 or unicode, see
        :func:`~kgestimator.data.check_triples`), each in the order of `X`.

    Examples
    --------
    >>> train, test = train_test_split_triples(
    ...     [["a", "r", "b"], ["b", "r", "c"], ["a", "r", "c"]],
    ...     test_size=1, random_state=0)
    >>> len(train), len(test)
    (2, 1)
    """
    triples = check_triples(X)
    n = len(triples)
    n_test = _resolve_test_size(test_size, n)
    ids, n_entities, n_relations = factorize_triples(triples)
    order = check_rng(random_state).permutation(n)
    priority = np.empty(n, dtype=np.int64)
    priority[order] = np.arange(n)
    test = np.zeros(n, dtype=bool)
    everything = np.ones(n, dtype=bool)
    drawn = 0
    for _ in range(20):
        missing = n_test - int(test.sum())
        if missing <= 0 or drawn >= n:
            break
        test[order[drawn : drawn + missing]] = True
        drawn += missing
        # Triples sent back are never drawn again: `drawn` only moves on.
        test = keep_covered(ids, test, everything, priority, n_entities, n_relations)
    return triples[~test], triples[test]


def _resolve_test_size(test_size, n):
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(
            f"test_size must be a float in (0, 1) or an int, got {test_size!r}"
        )
    if isinstance(test_size, numbers.Integral):
        if not 0 < test_size < n:
            raise ValueError(
                f"test_size={test_size} must be between 1 and n_triples - 1 = {n - 1}"
            )
        return int(test_size)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must be a fraction in (0, 1)")
    n_test = int(np.ceil(test_size * n))
    if n_test >= n:
        raise ValueError(
            f"test_size={test_size} leaves no training triple out of n_triples={n}"
        )
    return n_test
