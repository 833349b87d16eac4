"""Relation prediction: score every relation between a head and a tail, filtered like entity queries.

A ``(head, tail)`` pair is scored against all relations at once by broadcasting
the relation table through the model's own ``score`` (embedding models), or by
one propagation per relation (NBFNet, which has no relation table to broadcast:
``n_relations`` times the cost of a tail query). Known relations of a pair are
filtered with the entity-query index (:class:`~kgestimator.filtering.KnownTriples`)
built on ``(head, tail, relation)`` columns, so the "answers" of a key are relations.
"""

import torch

from .evaluation import EVAL_BLOCK, filtered_realistic_ranks, metrics_from_ranks, query_batch_size
from .filtering import KnownTriples
from .models import is_path_based


def relation_index(known_ids, n_entities, n_relations):
    """Known relations per ``(head, tail)`` pair: ``mask(head, tail, 'tail')`` is ``(Q, n_relations)``."""
    return KnownTriples(known_ids[:, [0, 2, 1]], n_relations, n_entities)


@torch.no_grad()
def score_relations(model, head, tail):
    """Scores ``(Q, n_relations)`` of every relation between ``head[i]`` and ``tail[i]`` (id tensors)."""
    model.eval()
    if is_path_based(model):
        cols = []
        for r in range(model.n_relations):
            rel = torch.full_like(head, r)
            cols.append(model.score_all(head, rel, "tail").gather(1, tail.unsqueeze(1)))
        return torch.cat(cols, 1)
    rel = model.relation.unsqueeze(0)
    rows = max(1, EVAL_BLOCK // max(1, rel.shape[1] * rel.shape[2]))
    out = []
    for i in range(0, head.shape[0], rows):
        h = model.entities(head[i:i + rows]).unsqueeze(1)
        t = model.entities(tail[i:i + rows]).unsqueeze(1)
        out.append(model.score(h, rel, t))
    return torch.cat(out) if out else torch.zeros(0, model.n_relations, device=head.device)


@torch.no_grad()
def rank_relations(model, triples, known, batch_size=None):
    """Filtered realistic ranks (float64, CPU) of each triple's relation among all relations.

    ``known`` is a :func:`relation_index`; the triple's own relation is never filtered.
    """
    bs = query_batch_size(model, batch_size)
    out = []
    for i in range(0, triples.shape[0], bs):
        block = triples[i:i + bs]
        scores = score_relations(model, block[:, 0], block[:, 2])
        rows, cols = known.pairs(block[:, 0], block[:, 2], "tail")
        out.append(filtered_realistic_ranks(scores, block[:, 1], rows, cols).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def relation_metrics(model, triples, known, n_missing=0, batch_size=None):
    """MRR, MR and Hits@k of relation prediction; unseen triples count as misses (worst rank)."""
    import numpy as np

    ranks = rank_relations(model, triples, known, batch_size).numpy()
    ranks = np.concatenate([ranks, np.full(int(n_missing), float(model.n_relations))])
    return metrics_from_ranks(ranks)
