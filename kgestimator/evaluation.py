"""Filtered link-prediction ranking with realistic ties (docs/algorithms.md §6).

For every evaluation triple there are two queries, ``(h, r, ?)`` and ``(?, r, t)``.
Each batch of queries is scored against all entities at once (one matrix product
for bilinear models, entity chunks otherwise), known answers other than the
target are masked out, and the rank is the mean of the optimistic and
pessimistic ranks. A NaN target score ranks last. Metrics average over both
directions together.
"""

import hashlib
import math
import weakref
from collections import OrderedDict

import numpy as np
import torch

from . import memory
from ._utils import compiled
from .models import EmbeddingModel, is_path_based

#: elements per (Q, n_entities) score block: bounds evaluation memory (~256 MB of fp32)
BLOCK_ELEMENTS = 1 << 26
#: bytes per (query, entity) pair while ranking: the score, its filtered copy,
#: the filter mask and two comparison masks
BYTES_PER_SCORE = 16
#: elements per (rows, entities, d) temporary of distance models: a few MB stays in cache
EVAL_BLOCK = 1 << 22
#: scores per ranking sub-block. Ranking makes five passes over a block (filter,
#: target, two comparisons, counts); a block of a few MB stays in cache, a whole
#: (Q, n_entities) score block does not: ranking FB15k-237's test queries took
#: 2.7 s in blocks of 64 queries and 13.8 s in blocks of 1,154 (one CPU core)
RANK_ELEMENTS = 1 << 20


#: compiled all-entity scorers of distance models, one per model object
_SCORERS = weakref.WeakKeyDictionary()


def _compiled_scorer(model):
    """``(Q, dq), (n, de) -> (Q, n)`` scores as one fused ``torch.compile`` kernel.

    Eager distance scoring materialises ``(rows, entities, d)`` temporaries and
    makes several passes over them; fused, nothing is materialised. 512 RotatE
    queries against FB15k-237's 14,541 entities: 0.14 s compiled against 3.9 s
    eager; TransE 0.03 s against 0.27 s for ``cdist`` (2 CPU cores). A few
    seconds of compiling, once per model (dynamic in the number of queries).
    """
    scorer = _SCORERS.get(model)
    if scorer is None:
        def pairs(q, ent):
            return model.match(q.unsqueeze(1), ent.unsqueeze(0))

        scorer = _SCORERS[model] = compiled(pairs, dynamic=True)
    return scorer


def score_all(model, anchor, rel, side, compile=False):
    """Scores ``(Q, n_entities)`` of every entity as the missing ``side``.

    Bilinear models take one matrix product. RotatE and HAKE score through
    their fused distance (C kernels with ``compile``, on CPU). Other distance
    models score ``(rows, entities, d)`` blocks of about ``EVAL_BLOCK`` elements,
    or, with ``compile``, through one compiled kernel (:func:`_compiled_scorer`).
    Path-based models (NBFNet) score all entities of a query with one propagation
    (its messages aggregated in a fused C kernel with ``compile``).
    """
    if is_path_based(model):
        return model.score_all(anchor, rel, side, native=compile)
    ent = model.entity
    q = model.oriented_query(model.entities(anchor), rel, side)
    if model.bilinear:
        return q @ ent.T
    native = getattr(model, "native_scoring", False)
    if native and not (compile and q.device.type != "cpu"):
        # RotatE/HAKE: the fused distance (C kernels with compile) builds no (rows, entities, d) temporary
        return model.pairwise(q.unsqueeze(0), ent.unsqueeze(0), native=compile)[0]
    if compile:
        return _compiled_scorer(model)(q, ent)
    n_q, width = q.shape[0], ent.shape[1]
    ent_chunk = min(ent.shape[0], 4096)
    rows = max(1, EVAL_BLOCK // (ent_chunk * width))
    pairwise = model.broadcast_pairwise
    if type(model).pairwise is not EmbeddingModel.pairwise:
        # a model's own pairwise (TransE's cdist) builds no (rows, chunk, d) temporary
        pairwise, rows = model.pairwise, n_q
    out = torch.empty(n_q, ent.shape[0], dtype=q.dtype, device=q.device)
    for j in range(0, ent.shape[0], ent_chunk):
        cand = ent[j:j + ent_chunk].unsqueeze(0)
        for i in range(0, n_q, rows):
            out[i:i + rows, j:j + ent_chunk] = pairwise(q[i:i + rows].unsqueeze(0), cand)[0]
    return out


def query_batch_size(model, requested=None):
    """Queries per block so that ``(Q, n_entities)`` score blocks stay bounded.

    At most ``BLOCK_ELEMENTS / 4`` scores, and at most a quarter of the memory
    free on the model's device: on a graph too large for one score matrix,
    evaluation and top-k prediction go query by query instead of failing.
    """
    if requested:
        return int(requested)
    n = max(1, model.n_entities)
    rows = min(4096, BLOCK_ELEMENTS // (4 * n))
    per_query = BYTES_PER_SCORE * n
    if is_path_based(model):
        # a propagation holds (E, Q, d) messages: far more than the scores
        per_query += 4 * model.elements_per_query()
        rows = min(rows, max(1, BLOCK_ELEMENTS // model.elements_per_query()))
    free = memory.available_bytes(next(model.parameters()).device)
    if free is not None:
        rows = min(rows, free // 4 // per_query)
    return int(max(1, rows))


def realistic_ranks(scores, target, filter_mask):
    """Optimistic, pessimistic and realistic ranks of ``target`` per row.

    ``filter_mask`` marks candidates to ignore (other known answers); the
    target is never filtered. NaN candidates never outrank the target; a NaN
    target score gets the worst rank.
    """
    target = target.unsqueeze(1)
    target_score = scores.gather(1, target)
    # ignored candidates (and the target itself) drop to -inf, so two counting
    # passes over the block suffice; boolean and-masks with .sum() cost 3x more
    others = scores.masked_fill(filter_mask, -torch.inf).scatter_(1, target, -torch.inf)
    optimistic = 1 + torch.count_nonzero(others > target_score, dim=1)
    pessimistic = 1 + torch.count_nonzero(others >= target_score, dim=1)
    odd = ~torch.isfinite(target_score.squeeze(1))
    if odd.any():
        # -inf or NaN targets: -inf fillers would tie with them; count explicitly
        rows = odd.nonzero().squeeze(1)
        ignore = filter_mask[rows].clone()
        ignore.scatter_(1, target[rows], True)
        sub, ts = scores[rows], target_score[rows]
        opt = 1 + ((sub > ts) & ~ignore).sum(1)
        pess = opt + ((sub == ts) & ~ignore).sum(1)
        worst = (~ignore).sum(1) + 1
        nan = torch.isnan(ts.squeeze(1))
        optimistic[rows] = torch.where(nan, worst, opt)
        pessimistic[rows] = torch.where(nan, worst, pess)
    return optimistic, pessimistic, (optimistic + pessimistic).double() / 2.0


@torch.no_grad()
def rank_triples(model, triples, known, side, batch_size=None, compile=False):
    """Realistic ranks (float64 tensor on CPU) of one side of ``triples``.

    Parameters
    ----------
    triples : LongTensor of shape (n, 3) on the model's device
    known : KnownTriples
        Filter index; its ``mask`` for the query gives the answers to ignore.
    side : {'tail', 'head'}
    """
    anchor_col, target_col = (0, 2) if side == "tail" else (2, 0)
    bs = query_batch_size(model, batch_size)
    # large score blocks keep the product efficient (each block reads the whole
    # entity table); ranking then goes through cache-sized sub-blocks
    sub = max(1, RANK_ELEMENTS // max(1, model.n_entities))
    out = []
    for i in range(0, triples.shape[0], bs):
        block = triples[i:i + bs]
        anchor, rel, target = block[:, anchor_col], block[:, 1], block[:, target_col]
        scores = score_all(model, anchor, rel, side, compile)
        rows, cols = known.pairs(anchor, rel, side)
        bounds = torch.searchsorted(rows, torch.arange(0, block.shape[0] + sub, sub, device=rows.device)).tolist()
        for k, j in enumerate(range(0, block.shape[0], sub)):
            lo, hi = bounds[k], bounds[k + 1]
            ranks = filtered_realistic_ranks(scores[j:j + sub], target[j:j + sub], rows[lo:hi] - j, cols[lo:hi])
            out.append(ranks.cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def filtered_realistic_ranks(scores, target, rows, cols):
    """Realistic ranks (float64) of ``target`` per row, ignoring the known ``(rows, cols)``.

    Same result as ``realistic_ranks(scores, target, mask)[2]`` with the mask
    those pairs mark, in one counting pass: with the ignored candidates and the
    target set to ``-inf``, ``sum(sign(s - s_target)) = greater - lower`` and
    ``n_entities = greater + equal + lower``, so the realistic rank
    ``1 + greater + equal / 2`` is ``1 + (sum + n_entities) / 2``. Rows with a
    non-finite score take the exact path: ``sign`` maps NaN to 0, a tie, so rows
    with any non-finite score are found first by their plain sum (NaN or inf).
    ``scores`` is overwritten.
    """
    odd = ~torch.isfinite(scores.sum(1))
    target = target.unsqueeze(1)
    target_score = scores.gather(1, target)
    scores[rows, cols] = -torch.inf
    scores.scatter_(1, target, -torch.inf)
    # float64 sums of +-1 stay exact beyond float32's 2**24
    total = torch.sign(scores - target_score).sum(1, dtype=torch.float64)
    ranks = 1.0 + (total + scores.shape[1]) / 2.0
    if odd.any():
        idx = odd.nonzero().squeeze(1)
        scores.scatter_(1, target, target_score)
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        mask[rows, cols] = True
        ranks[idx] = realistic_ranks(scores[idx], target[idx, 0], mask[idx])[2]
    return ranks


def metrics_from_ranks(ranks, ks=(1, 3, 10)):
    """MRR, MR and Hits@k (realistic ranks; Hits@k counts ``rank <= k``)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return {"mrr": math.nan, "mr": math.nan, **{f"hits@{k}": math.nan for k in ks}}
    out = {"mrr": float(np.mean(1.0 / ranks)), "mr": float(np.mean(ranks))}
    for k in ks:
        out[f"hits@{k}"] = float(np.mean(ranks <= k))
    return out


def evaluate_ranks(model, triples, known, n_missing=0, batch_size=None, compile=False):
    """Metrics for both sides and together.

    ``n_missing`` triples that could not be encoded (unseen entity or relation)
    count as misses with the worst rank in every direction. ``compile``: score
    distance models with a compiled kernel (see :func:`score_all`).
    """
    model.eval()
    worst = float(model.n_entities)
    miss = np.full(int(n_missing), worst)
    result = {}
    all_ranks = []
    for side in ("head", "tail"):
        ranks = np.concatenate([rank_triples(model, triples, known, side, batch_size, compile).numpy(), miss])
        all_ranks.append(ranks)
        result[side] = metrics_from_ranks(ranks)
    result.update(metrics_from_ranks(np.concatenate(all_ranks)))
    result["n_triples"] = int(triples.shape[0] + n_missing)
    result["n_unknown"] = int(n_missing)
    return result


class EvaluationCache:
    """Fixed costs of an evaluation, kept on a fitted estimator between calls.

    Encoding labels (a string search per label) and building the filter index
    (a sort of every known triple) cost more than ranking a few thousand
    triples. Both are kept here under a digest of their input (labels or ids,
    with dtype and shape), for the last ``size`` inputs: the same test and
    filter arrays evaluated again, by a model-selection loop, a benchmark, or
    a notebook, pay only for the ranking. The estimator drops its cache when
    it is fitted again, since the vocabulary and the known triples change.
    """

    def __init__(self, size=4):
        self.size = size
        self._entries = OrderedDict()

    def get(self, kind, key, build):
        """``build()`` the first time ``(kind, key)`` is asked for, the kept value afterwards."""
        entry = (kind, key)
        if entry in self._entries:
            self._entries.move_to_end(entry)
            return self._entries[entry]
        value = build()
        self._entries[entry] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


def digest(array):
    """A content key of an ndarray or tensor (its bytes, dtype and shape), or None for object arrays."""
    if torch.is_tensor(array):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array)
    if array.dtype == object:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    if array.size:  # an empty view cannot be cast to bytes
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()
