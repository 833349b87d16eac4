"""Calibrated probabilities from triple scores (Platt scaling or isotonic regression).

A score is only an order: DistMult's and TransE's scores live on unrelated
scales and neither is a probability. ``calibrate`` maps it to one with a
monotone function fitted on held-out true triples and generated negatives,
one corruption per side (head and tail) and per ``n_negatives``, filtered so
that no negative is a known fact (as Tabacof and Costabello, "Probability
Calibration for Knowledge Graph Embedding Models", ICLR 2020, do with
synthetic negatives). The probability is therefore that of a triple drawn
from that mix: true triples and their random corruptions in the ratio
``1 : 2 * n_negatives``; other base rates shift it (Bayes' rule on the odds).

The fitted calibrator is plain data (floats and arrays), so it survives a
pickle and needs no scikit-learn object at prediction time.
"""

import numpy as np
import torch
from scipy.special import expit
from sklearn.utils import check_random_state

from ._utils import check_choice, check_number
from .filtering import TripleSet

__all__ = ["expected_calibration_error", "labelled_triples"]


METHODS = ("sigmoid", "isotonic")
#: redraws of a corruption that hit a known triple, before the corruption is dropped
MAX_REDRAWS = 10


def _known_triples(est, ids, filter_triples):
    """Encoded known facts: training (and validation) triples, ``ids`` and the encodable ``filter_triples``."""
    parts = [est._known_ids.to(ids.device), ids]
    if filter_triples is not None:
        f_ids, f_known, _ = est._encode(filter_triples, 3, name="filter_triples")
        parts.append(f_ids[torch.as_tensor(f_known, device=f_ids.device)])
    return torch.cat(parts)


def corrupt(ids, n_negatives, n_entities, known, rng):
    """Negatives ``(m, 3)``: each triple with its head, then its tail, replaced ``n_negatives`` times.

    ``known`` is a :class:`~kgestimator.filtering.TripleSet`; a corruption that is
    a known fact is redrawn up to ``MAX_REDRAWS`` times, then dropped.
    """
    out = []
    for side, col in (("head", 0), ("tail", 2)):
        for _ in range(n_negatives):
            neg = ids.clone()
            todo = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
            for _ in range(MAX_REDRAWS + 1):
                n = int(todo.sum())
                if not n:
                    break
                draw = torch.as_tensor(rng.randint(0, n_entities, n), dtype=torch.long, device=ids.device)
                neg[todo, col] = draw
                anchor_col = 2 if side == "head" else 0
                hit = known.contains(neg[todo, anchor_col], neg[todo, 1], neg[todo, col].unsqueeze(1), side)[:, 0]
                idx = todo.nonzero().squeeze(1)
                todo[idx[~hit]] = False
            out.append(neg[~todo])
    return torch.cat(out)


def labelled_ids(est, X, n_negatives=1, filter_triples=None, random_state=None, name="X"):
    """``(ids (m, 3) LongTensor, y (m,) int ndarray)``: the encodable triples of ``X`` (label 1)
    followed by their filtered corruptions (label 0); rows with unseen labels are left out."""
    check_number("n_negatives", n_negatives, 1, integer=True)
    ids, ok, _ = est._encode(X, 3, name=name)
    ids = ids[torch.as_tensor(ok, device=ids.device)]
    if not ids.shape[0]:
        raise ValueError(f"{name} has no triple whose entities and relation were seen during fit.")
    known = _known_triples(est, ids, filter_triples)
    index = TripleSet(known, len(est.entities_), len(est.relations_))
    neg = corrupt(ids, int(n_negatives), len(est.entities_), index, check_random_state(random_state))
    y = np.concatenate([np.ones(ids.shape[0], dtype=int), np.zeros(neg.shape[0], dtype=int)])
    return torch.cat([ids, neg]), y


def labelled_triples(est, X, n_negatives=1, filter_triples=None, random_state=None):
    """True triples and generated negatives with their labels, for calibration and its evaluation.

    Parameters
    ----------
    est : KGEmbedder
        A fitted estimator (its training and validation triples are never drawn as negatives).
    X : array-like of shape (n_triples, 3)
        True triples; rows with labels unseen during fit are left out.
    n_negatives : int, default=1
        Corruptions per triple and per side (head, tail).
    filter_triples : array-like of shape (n_filter, 3), optional
        More known facts that a negative must not be (e.g. the other splits).
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    triples : ndarray of shape (m, 3)
        Labels: the encodable rows of ``X``, then their negatives.
    y : ndarray of shape (m,)
        1 for the rows of ``X``, 0 for the negatives.
    """
    ids, y = labelled_ids(est, X, n_negatives, filter_triples, random_state)
    ids = ids.cpu().numpy()
    labels = np.stack([est.entities_[ids[:, 0]], est.relations_[ids[:, 1]], est.entities_[ids[:, 2]]], 1)
    return labels, y


def fit_calibrator(scores, y, method="sigmoid"):
    """A calibrator (a dict of floats and arrays) fitted on ``scores`` and binary ``y``."""
    check_choice("method", method, METHODS)
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    if np.unique(y).size != 2:
        raise ValueError("Calibration needs both true triples and negatives.")
    finite = np.isfinite(scores)
    scores, y = scores[finite], y[finite]
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        # Platt scaling on the standardised score (conditioning), folded back into a * s + b
        mu, sd = scores.mean(), scores.std() or 1.0
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(((scores - mu) / sd).reshape(-1, 1), y)
        a = float(lr.coef_[0, 0]) / sd
        return {"method": "sigmoid", "a": a, "b": float(lr.intercept_[0]) - a * mu}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
    return {"method": "isotonic", "x": np.asarray(iso.X_thresholds_, dtype=np.float64),
            "y": np.asarray(iso.y_thresholds_, dtype=np.float64)}


def apply_calibrator(calibrator, scores):
    """Probabilities of ``scores`` under a calibrator of :func:`fit_calibrator`."""
    scores = np.asarray(scores, dtype=np.float64)
    if calibrator["method"] == "sigmoid":
        return expit(calibrator["a"] * scores + calibrator["b"])
    # IsotonicRegression.predict interpolates linearly between its thresholds and clips outside
    return np.interp(scores, calibrator["x"], calibrator["y"])


def calibration_bins(y_true, proba, n_bins=10):
    """Per equal-width bin of ``[0, 1]``: ``(mean probability, fraction true, count)``; empty bins are NaN."""
    check_number("n_bins", n_bins, 1, integer=True)
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    proba = np.asarray(proba, dtype=np.float64).ravel()
    if y_true.shape != proba.shape or not y_true.size:
        raise ValueError(f"y_true and proba must be non-empty and of one length; got {y_true.size} "
                         f"and {proba.size}.")
    if np.any((proba < 0) | (proba > 1)) or not np.all(np.isfinite(proba)):
        raise ValueError("proba must hold probabilities in [0, 1].")
    which = np.minimum((proba * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, proba, n_bins) / count
        acc = np.bincount(which, y_true, n_bins) / count
    return conf, acc, count


def expected_calibration_error(y_true, proba, n_bins=10):
    """Expected calibration error: ``sum_b n_b / n * |fraction true_b - mean probability_b|``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 for true triples, 0 for negatives.
    proba : array-like of shape (n,)
        Predicted probabilities.
    n_bins : int, default=10
        Equal-width bins of ``[0, 1]``.

    Returns
    -------
    ece : float
    """
    conf, acc, count = calibration_bins(y_true, proba, n_bins)
    seen = count > 0
    return float(np.sum(count[seen] * np.abs(acc[seen] - conf[seen])) / count.sum())
