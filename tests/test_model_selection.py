"""Tests for kgestimator.model_selection."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

from kgestimator.data import build_vocabulary, check_triples, encode, make_kg
from kgestimator.model_selection import TripleKFold, train_test_split_triples


@pytest.fixture(scope="module")
def triples():
    # Sparse enough that plain KFold strands a few entities.
    return make_kg(n_entities=300, n_triples=1500, random_state=0).train


@pytest.fixture(scope="module")
def path_graph():
    # Every entity has at most two triples and e0, e60 only one: plain
    # KFold is bound to strand some of them.
    return np.array([[f"e{i}", "next", f"e{i + 1}"] for i in range(60)])


def stranded(train, test):
    """Test triples holding an entity or relation absent from train."""
    entities, relations = build_vocabulary(train)
    ok = encode(test[:, [0, 2]], entities)[1].all(axis=1)
    ok &= encode(test[:, 1], relations)[1]
    return int((~ok).sum())


class CoverageEstimator(BaseEstimator):
    """Scores the share of triples whose labels were all seen in fit."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y=None):
        self.entities_, self.relations_ = build_vocabulary(check_triples(X))
        return self

    def score(self, X, y=None):
        X = check_triples(X)
        known = encode(X[:, [0, 2]], self.entities_)[1].all(axis=1)
        known &= encode(X[:, 1], self.relations_)[1]
        return known.mean()


# --------------------------------------------------------------------------
# TripleKFold
# --------------------------------------------------------------------------


def test_folds_partition_and_are_disjoint(triples):
    n = len(triples)
    cv = TripleKFold(4, random_state=0)
    splits = list(cv.split(triples))
    assert len(splits) == cv.get_n_splits() == 4
    seen = np.zeros(n, dtype=int)
    for train, test in splits:
        assert train.dtype.kind == "i" and test.dtype.kind == "i"
        assert np.intersect1d(train, test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate((train, test))), np.arange(n))
        assert len(test) >= 0.9 * n / 4
        seen[test] += 1
    assert seen.max() == 1  # test folds are disjoint
    assert seen.sum() >= 0.95 * n


def test_test_entities_in_train_fold(triples):
    plain = KFold(5, shuffle=True, random_state=1).split(triples)
    assert sum(stranded(triples[tr], triples[te]) for tr, te in plain) > 0
    for train, test in TripleKFold(5, random_state=1).split(triples):
        assert stranded(triples[train], triples[test]) == 0


def test_plain_kfold_strands_but_triple_kfold_does_not(path_graph):
    kfold = KFold(3, shuffle=True, random_state=0)
    assert sum(stranded(path_graph[tr], path_graph[te]) for tr, te in kfold.split(path_graph)) > 0
    tested = []
    for train, test in TripleKFold(3, random_state=0).split(path_graph):
        assert stranded(path_graph[train], path_graph[test]) == 0
        assert len(test) > 0
        tested.append(test)
    tested = np.concatenate(tested)
    # The only triples of e0 and e60 can never be tested.
    assert 0 not in tested and 59 not in tested


def test_deterministic_with_int_seed(triples):
    a = [test for _, test in TripleKFold(3, random_state=5).split(triples)]
    cv = TripleKFold(3, random_state=5)
    b = [test for _, test in cv.split(triples)]
    c = [test for _, test in cv.split(triples)]
    d = [test for _, test in TripleKFold(3, random_state=6).split(triples)]
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert not all(np.array_equal(x, y) for x, y in zip(a, d))


def test_random_state_instance_advances(triples):
    cv = TripleKFold(3, random_state=np.random.RandomState(0))
    first = next(iter(cv.split(triples)))[1]
    second = next(iter(cv.split(triples)))[1]
    assert not np.array_equal(first, second)


def test_no_shuffle_keeps_order(triples):
    n = len(triples)
    cv = TripleKFold(3, shuffle=False)
    folds = [test for _, test in cv.split(triples)]
    again = [test for _, test in cv.split(triples)]
    for k, (x, y) in enumerate(zip(folds, again)):
        np.testing.assert_array_equal(x, y)
        assert x.min() >= k * n // 3 and x.max() < (k + 1) * n // 3 + 1


def test_accepts_dataframes_lists_and_ints(triples):
    expected = [test for _, test in TripleKFold(3, random_state=0).split(triples)]
    for X in (pd.DataFrame(triples, columns=["h", "r", "t"]), triples.tolist()):
        got = [test for _, test in TripleKFold(3, random_state=0).split(X)]
        for x, y in zip(expected, got):
            np.testing.assert_array_equal(x, y)
    ids = np.random.default_rng(0).integers(50, size=(400, 3))
    for train, test in TripleKFold(4, random_state=0).split(ids):
        assert stranded(ids[train], ids[test]) == 0


def test_grid_search_and_cross_validate(triples, path_graph):
    search = GridSearchCV(CoverageEstimator(), {"alpha": [1.0, 2.0]}, cv=TripleKFold(3, random_state=0))
    search.fit(triples)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], [1.0, 1.0])
    result = cross_validate(CoverageEstimator(), path_graph, cv=TripleKFold(3, random_state=0))
    np.testing.assert_array_equal(result["test_score"], 1.0)
    plain = cross_validate(CoverageEstimator(), path_graph, cv=KFold(3, shuffle=True, random_state=0))
    assert plain["test_score"].mean() < 1.0


def test_repr_and_params():
    cv = TripleKFold(3, random_state=0)
    assert repr(cv) == "TripleKFold(n_splits=3, random_state=0, shuffle=True)"
    assert cv.get_n_splits(np.zeros((10, 3))) == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_splits": 1}, ValueError, "n_splits must be at least 2, got 1"),
        ({"n_splits": 2.5}, ValueError, "n_splits must be an int"),
        ({"n_splits": True}, ValueError, "n_splits must be an int"),
        ({"shuffle": False, "random_state": 0}, ValueError, "no effect since shuffle is False"),
        ({"shuffle": "yes"}, TypeError, "shuffle must be True or False"),
    ],
)
def test_invalid_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        TripleKFold(**kwargs)


def test_split_errors():
    with pytest.raises(ValueError, match="n_splits=5 greater than the number of triples n_triples=3"):
        list(TripleKFold(5).split([["a", "r", "b"]] * 3))
    with pytest.raises(ValueError, match=r"missing value.*row 1, column 0"):
        list(TripleKFold(2).split([["a", "r", "b"], [None, "r", "c"]]))
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        list(TripleKFold(2).split([["a", "r"], ["b", "r"]]))


# --------------------------------------------------------------------------
# train_test_split_triples
# --------------------------------------------------------------------------


def test_train_test_split_sizes_and_coverage(triples):
    train, test = train_test_split_triples(triples, test_size=0.2, random_state=0)
    assert train.dtype == triples.dtype and test.dtype == triples.dtype
    assert len(test) == int(np.ceil(0.2 * len(triples)))
    assert len(train) + len(test) == len(triples)
    rows = lambda a: set(map(tuple, a.tolist()))  # noqa: E731
    assert rows(train) | rows(test) == rows(triples)
    assert not rows(train) & rows(test)
    assert stranded(train, test) == 0


def test_train_test_split_int_size_and_determinism(triples):
    a = train_test_split_triples(triples, test_size=100, random_state=3)
    b = train_test_split_triples(triples, test_size=100, random_state=3)
    c = train_test_split_triples(triples, test_size=100, random_state=4)
    assert len(a[1]) == 100
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_train_test_split_sparse_graph(path_graph):
    train, test = train_test_split_triples(path_graph, test_size=0.5, random_state=0)
    assert stranded(train, test) == 0
    assert 0 < len(test) <= 30
    assert len(train) + len(test) == len(path_graph)


def test_train_test_split_int_labels():
    ids = np.random.default_rng(1).integers(40, size=(300, 3))
    train, test = train_test_split_triples(ids, random_state=0)
    assert train.dtype == np.int64 and len(test) == 30
    assert stranded(train, test) == 0


@pytest.mark.parametrize(
    "test_size, match",
    [
        (0, "between 1 and n_triples - 1"),
        (10, "between 1 and n_triples - 1 = 9"),
        (0.0, r"fraction in \(0, 1\)"),
        (1.0, r"fraction in \(0, 1\)"),
        ("0.1", "test_size must be a float"),
        (True, "test_size must be a float"),
    ],
)
def test_train_test_split_errors(test_size, match):
    X = [[f"e{i}", "r", f"e{i + 1}"] for i in range(10)]
    with pytest.raises(ValueError, match=match):
        train_test_split_triples(X, test_size=test_size)
