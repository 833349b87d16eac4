"""Calibrated probabilities and split-conformal answer sets."""

import math

import numpy as np
import pytest
from scipy.special import expit

from kgestimator import KGEmbedder, make_kg
from kgestimator.calibration import calibration_bins, expected_calibration_error, labelled_triples


@pytest.fixture(scope="module")
def graph():
    return make_kg(n_entities=80, n_relations=8, n_triples=3000, random_state=3)


@pytest.fixture(scope="module")
def model(graph):
    return KGEmbedder(dim=16, n_negatives=32, batch_size=256, neg_chunk_size=32, n_epochs=15,
                      learning_rate=0.02, random_state=0).fit(graph.train)


# ---------------------------------------------------------------------- ECE
def test_ece_known_values():
    y = np.array([1, 0, 1, 0])
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.ones(4)) == pytest.approx(0.5)
    # two bins: 0.2 predicted where 1/2 true, 0.9 where 1/2 true
    assert expected_calibration_error(y, np.array([0.2, 0.2, 0.9, 0.9])) == pytest.approx((0.3 + 0.4) / 2)
    conf, acc, count = calibration_bins(y, np.array([0.2, 0.2, 0.9, 0.9]), n_bins=10)
    assert count.sum() == 4 and count[2] == 2 and count[9] == 2 and acc[2] == 0.5
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error(y, np.array([0.2, 1.5, 0.1, 0.1]))


def test_labelled_triples_negatives_are_filtered_corruptions(model, graph):
    X, y = labelled_triples(model, graph.valid, n_negatives=2, random_state=0)
    n = len(graph.valid)
    assert y[:n].all() and not y[n:].any()
    known = {tuple(t) for t in np.concatenate([graph.train, graph.valid]).tolist()}
    negatives = [tuple(t) for t in X[n:].tolist()]
    assert not any(t in known for t in negatives)
    # each negative differs from its positive in exactly one of head and tail
    assert len(negatives) > 3.9 * n  # 2 per side, a few dropped at most


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_improves_ece(model, graph, method):
    X, y = labelled_triples(model, graph.test, random_state=1)
    before = expected_calibration_error(y, expit(model.score_samples(X)))
    scores = model.score_samples(X)
    model.calibrate(graph.valid, method=method, random_state=0)
    after = expected_calibration_error(y, model.predict_proba(X))
    assert after < before / 2, (before, after)
    assert after < 0.08
    np.testing.assert_array_equal(model.score_samples(X), scores)  # the model is unchanged
    # monotone in the score
    p = model.predict_proba(X)
    order = np.argsort(scores)
    assert np.all(np.diff(p[order]) >= -1e-12)


def test_predict_proba_needs_calibration(graph):
    est = KGEmbedder(dim=4, n_negatives=4, n_epochs=1, random_state=0).fit(graph.train)
    assert not hasattr(est, "predict_proba")
    # scikit-learn's available_if raises its own "has no attribute" error, chained from ours
    with pytest.raises(AttributeError, match="has no attribute 'predict_proba'") as info:
        est.predict_proba(graph.test[:3])
    assert "call calibrate(held_out_triples) first" in str(info.value.__cause__)
    with pytest.raises(ValueError, match="method"):
        est.calibrate(graph.valid, method="beta")
    assert not hasattr(est, "calibrator_")


# ---------------------------------------------------------------------- conformal sets
@pytest.mark.parametrize("nonconformity,min_queries", [("score", 10**6), ("rank", 10**6), ("score", 100)])
def test_conformal_coverage_within_binomial_error_over_20_seeds(model, graph, nonconformity, min_queries):
    pool = np.concatenate([graph.valid, graph.test])
    target = 0.9
    coverages, sizes = [], []
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(len(pool))
        cal, test = pool[order[:len(pool) // 2]], pool[order[len(pool) // 2:]]
        model.calibrate_sets(cal, nonconformity=nonconformity, min_queries=min_queries, random_state=seed)
        rep = model.evaluate_sets(test, coverage=target, random_state=seed)
        coverages.append(rep["coverage"])
        sizes.append(rep["mean_set_size"])
        assert rep["n_queries"] == 2 * len(test)
    n_cal = len(pool) // 2  # calibration queries per side
    n_test = 2 * (len(pool) - n_cal)
    # per split, coverage varies with the calibration draw (Beta) and the test draw (binomial)
    sd_split = math.sqrt(target * (1 - target) * (1 / n_cal + 1 / n_test))
    mean = float(np.mean(coverages))
    slack = 1 / (n_cal + 1) if min_queries > n_cal else 1 / 101  # the guarantee's upper end
    assert target - 3 * sd_split / math.sqrt(20) <= mean <= target + slack + 3 * sd_split / math.sqrt(20), \
        coverages
    assert all(abs(c - target) <= 4 * sd_split + slack for c in coverages), coverages
    assert 1 <= np.mean(sizes) < len(model.entities_) / 2  # far smaller than "every entity"


def test_conformal_sets_shrink_with_coverage_and_skip_known(model, graph):
    model.calibrate_sets(graph.valid, random_state=0)
    queries = graph.test[:20, :2]
    small = model.predict_set(queries, coverage=0.5)
    large = model.predict_set(queries, coverage=0.95)
    assert all(set(s) <= set(l) for s, l in zip(small, large))
    assert sum(map(len, large)) > sum(map(len, small))
    known = {tuple(t) for t in np.concatenate([graph.train]).tolist()}
    for (h, r), s in zip(queries.tolist(), large):
        assert not any((h, r, t) in known for t in s.tolist())
    everything = model.predict_set(queries[:2], coverage=1.0)
    n_known = [sum((h, r, t) in known for t in model.entities_.tolist()) for h, r in queries[:2].tolist()]
    assert [len(s) for s in everything] == [len(model.entities_) - k for k in n_known]
    heads = model.predict_set(graph.test[:5, 1:], coverage=0.9, direction="head")
    assert len(heads) == 5


def test_conformal_rank_sets_are_group_sizes(model, graph):
    model.calibrate_sets(graph.valid, nonconformity="rank", min_queries=10**6, random_state=0)
    values = model.conformal_["side"]["tail"]
    assert len(values) == len(graph.valid)
    q = values[math.ceil((len(values) + 1) * 0.9) - 1]
    sets = model.predict_set(graph.test[:50, :2], coverage=0.9, random_state=0)
    # one group: every query gets its top floor(q + u) candidates, u uniform in [0, 1)
    assert {len(s) for s in sets} <= {math.floor(q), math.floor(q) + 1}
    assert len({len(s) for s in sets}) == 2 or float(q).is_integer()


def test_conformal_needs_calibration_and_valid_coverage(graph):
    est = KGEmbedder(dim=4, n_negatives=4, n_epochs=1, random_state=0).fit(graph.train)
    with pytest.raises(ValueError, match="calibrate_sets"):
        est.predict_set(graph.test[:2, :2])
    est.calibrate_sets(graph.valid)
    for bad in (0.0, 1.5, "0.9"):
        with pytest.raises(ValueError, match="coverage"):
            est.evaluate_sets(graph.test, coverage=bad)
    with pytest.raises(ValueError, match="nonconformity"):
        est.calibrate_sets(graph.valid, nonconformity="aps")


def test_reliability_diagram_plots_each_curve_with_its_ece(model, graph):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kgestimator.plotting import plot_reliability_diagram

    X, y = labelled_triples(model, graph.test, random_state=1)
    raw = expit(model.score_samples(X))
    model.calibrate(graph.valid, method="isotonic", random_state=0)
    ax = plot_reliability_diagram(y, {"raw": raw, "isotonic": model.predict_proba(X)})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1] == f"raw: ECE {expected_calibration_error(y, raw):.3f}"
    assert labels[2].startswith("isotonic: ECE")
    assert len(ax.lines) == 3
    plt.close("all")


def test_refit_drops_the_previous_calibrations(graph):
    est = KGEmbedder(dim=4, n_negatives=4, n_epochs=1, random_state=0).fit(graph.train)
    est.calibrate(graph.valid).calibrate_sets(graph.valid)
    est.fit(graph.train)
    assert not hasattr(est, "calibrator_") and not hasattr(est, "conformal_")
