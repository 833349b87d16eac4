"""Split-conformal answer sets for link-prediction queries (Vovk et al.; Angelopoulos & Bates 2021).

Every held-out triple ``(h, r, t)`` gives two calibration queries, ``(h, r, ?)``
answered by ``t`` and ``(?, r, t)`` answered by ``h``. A nonconformity value
measures how badly the model ranks the true answer among the candidates that
are not other known facts (the filtered protocol):

``'score'``
    ``1 - p``, where ``p`` is the softmax over the filtered candidates' scores
    of the true answer (the least-ambiguous set-valued classifier of Sadinle
    et al. 2019: smallest sets on average). A query's set holds every
    candidate with ``1 - p <= q``, so confident queries get small sets.
``'rank'``
    the true answer's pessimistic filtered rank minus a uniform draw in
    ``[0, 1)``. Ranks are integers and tie often; the draw makes the values
    continuous, so coverage is exact instead of overshooting, at the price of
    a set size that varies by one at random. Every query of a group gets the
    top ``floor(q + u)`` candidates.

With ``n`` calibration values of a group, ``q`` is the ``ceil((n + 1) * coverage)``-th
smallest (infinite, i.e. every candidate, when that exceeds ``n``), which gives
``coverage <= P(true answer in set) <= coverage + 1 / (n + 1)`` for a new
query exchangeable with the calibration queries. Groups are (side, relation)
when the relation has at least ``min_queries`` calibration queries on that
side, else the side as a whole; the guarantee then holds per group too.
"""

import math

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._utils import check_choice, check_number
from .evaluation import query_batch_size, realistic_ranks, score_all

NONCONFORMITY = ("score", "rank")
SIDES = ("head", "tail")


def _block_values(scores, target, mask, nonconformity, u):
    """Nonconformity of the true answer per row; ``mask`` marks the other known answers."""
    if nonconformity == "score":
        p = torch.softmax(scores.masked_fill(mask, -torch.inf), 1)
        return 1.0 - p.gather(1, target.unsqueeze(1)).squeeze(1).double()
    _, pessimistic, _ = realistic_ranks(scores, target, mask)
    return pessimistic.double() - u


def _blocks(est, ids, known, side):
    """``(rows, scores, filter mask, target)`` per query block of one side."""
    model = est.model_
    model.eval()
    anchor_col, target_col = (0, 2) if side == "tail" else (2, 0)
    bs = query_batch_size(model)
    with torch.no_grad():
        for i in range(0, ids.shape[0], bs):
            block = ids[i:i + bs]
            anchor, rel, target = block[:, anchor_col], block[:, 1], block[:, target_col]
            scores = score_all(model, anchor, rel, side, est._compile_scoring()).float()
            mask = known.mask(anchor, rel, side)
            mask.scatter_(1, target.unsqueeze(1), False)
            yield slice(i, i + block.shape[0]), scores, mask, target


def nonconformity_values(est, ids, known, side, nonconformity, rng):
    """Nonconformity (float64 ndarray) of each triple's answer on ``side``."""
    out = np.empty(ids.shape[0])
    u = torch.as_tensor(rng.uniform(size=ids.shape[0]), dtype=torch.float64, device=ids.device)
    for rows, scores, mask, target in _blocks(est, ids, known, side):
        out[rows] = _block_values(scores, target, mask, nonconformity, u[rows]).cpu().numpy()
    return out


def fit_conformal(est, ids, known, nonconformity="score", min_queries=100, random_state=None):
    """The calibration state: sorted nonconformity values per side, and per (side, relation) group."""
    check_choice("nonconformity", nonconformity, NONCONFORMITY)
    check_number("min_queries", min_queries, 1, integer=True)
    rng = check_random_state(random_state)
    rel = ids[:, 1].cpu().numpy()
    state = {"nonconformity": nonconformity, "min_queries": int(min_queries), "n_calibration": int(ids.shape[0]),
             "side": {}, "relation": {}}
    for side in SIDES:
        values = nonconformity_values(est, ids, known, side, nonconformity, rng)
        state["side"][side] = np.sort(values)
        state["relation"][side] = {int(r): np.sort(values[rel == r]) for r in np.unique(rel)
                                   if int((rel == r).sum()) >= min_queries}
    return state


def quantile(sorted_values, coverage):
    """The conformal threshold: the ``ceil((n + 1) * coverage)``-th smallest value, or inf."""
    n = sorted_values.shape[0]
    k = math.ceil((n + 1) * coverage)
    return math.inf if k > n else float(sorted_values[k - 1])


def thresholds(state, rel, side, coverage):
    """Per-query threshold ``q`` (float64 ndarray) for relation ids ``rel`` on ``side``."""
    check_number("coverage", coverage, 0.0, 1.0, low_open=True)
    if coverage >= 1.0:
        return np.full(len(rel), math.inf)
    default = quantile(state["side"][side], coverage)
    per_rel = {r: quantile(v, coverage) for r, v in state["relation"][side].items()}
    return np.array([per_rel.get(int(r), default) for r in rel], dtype=np.float64)


def _members(scores, mask, q, nonconformity, u):
    """Boolean ``(Q, n_entities)``: the candidates in each query's set (known answers never are)."""
    q = torch.as_tensor(q, dtype=torch.float64, device=scores.device).unsqueeze(1)
    if nonconformity == "score":
        p = torch.softmax(scores.masked_fill(mask, -torch.inf), 1).double()
        return ((1.0 - p) <= q) & ~mask
    # the top floor(q + u) candidates by score: position j (1-based) is in when j - u <= q
    order = torch.sort(scores.masked_fill(mask, -torch.inf), dim=1, descending=True, stable=True).indices
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order))
    return (position.double() - u.unsqueeze(1) <= q) & ~mask


def predict_sets(est, anchor, rel, side, known, coverage, random_state=None):
    """``(member ids, member scores)`` per query, best score first, as lists of ndarrays."""
    state = est.conformal_
    q = thresholds(state, rel.cpu().numpy(), side, coverage)
    rng = check_random_state(random_state)
    u = torch.as_tensor(rng.uniform(size=anchor.shape[0]), dtype=torch.float64, device=anchor.device)
    model = est.model_
    model.eval()
    ids, vals = [], []
    bs = query_batch_size(model)
    with torch.no_grad():
        for i in range(0, anchor.shape[0], bs):
            a, r = anchor[i:i + bs], rel[i:i + bs]
            scores = score_all(model, a, r, side, est._compile_scoring()).float()
            mask = known.mask(a, r, side)
            members = _members(scores, mask, q[i:i + bs], state["nonconformity"], u[i:i + bs])
            for row in range(a.shape[0]):
                cand = members[row].nonzero().squeeze(1)
                s = scores[row, cand]
                order = torch.sort(s, descending=True, stable=True).indices
                ids.append(cand[order].cpu().numpy())
                vals.append(s[order].double().cpu().numpy())
    return ids, vals


def evaluate_sets(est, ids, known, coverage, n_missing=0, random_state=None):
    """Empirical coverage and set sizes on both sides of the triples ``ids`` (filtered protocol).

    ``n_missing`` triples with unseen labels count as uncovered on both sides
    (and are left out of the set sizes).
    """
    state = est.conformal_
    rng = check_random_state(random_state)
    rel = ids[:, 1].cpu().numpy()
    report = {"target_coverage": float(coverage), "nonconformity": state["nonconformity"]}
    covered_all, sizes_all = [], []
    for side in SIDES:
        q = thresholds(state, rel, side, coverage)
        u = torch.as_tensor(rng.uniform(size=ids.shape[0]), dtype=torch.float64, device=ids.device)
        covered = np.zeros(ids.shape[0], dtype=bool)
        sizes = np.zeros(ids.shape[0], dtype=np.int64)
        for rows, scores, mask, target in _blocks(est, ids, known, side):
            members = _members(scores, mask, q[rows], state["nonconformity"], u[rows])
            covered[rows] = members.gather(1, target.unsqueeze(1)).squeeze(1).cpu().numpy()
            sizes[rows] = members.sum(1).cpu().numpy()
        covered = np.concatenate([covered, np.zeros(int(n_missing), dtype=bool)])
        report[side] = _summary(covered, sizes)
        covered_all.append(covered)
        sizes_all.append(sizes)
    report.update(_summary(np.concatenate(covered_all), np.concatenate(sizes_all)))
    report["n_triples"] = int(ids.shape[0] + n_missing)
    report["n_unknown"] = int(n_missing)
    report["n_relation_groups"] = {side: len(state["relation"][side]) for side in SIDES}
    return report


def _summary(covered, sizes):
    return {"coverage": float(np.mean(covered)) if covered.size else math.nan,
            "mean_set_size": float(np.mean(sizes)) if sizes.size else math.nan,
            "median_set_size": float(np.median(sizes)) if sizes.size else math.nan,
            "n_queries": int(covered.size)}
