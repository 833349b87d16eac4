"""The training step of path-based models (NBFNet; docs/algorithms.md §1.7, §5.7).

One step: the sampler picks the side of each positive (head queries become
tail queries on inverse relations) -> strict negatives, uniform over the
entities that are not known training answers of the query -> the batch's own
edges are hidden from the graph -> one propagation for all queries of the
batch -> the MLP scores the ``[positive, negatives]`` node representations ->
loss. EMU mutates the negatives' final node representations ``(B, N, d)``
towards the positive's with the mask embedding models use, before the MLP.

The query relation is the same for a positive and its negatives, so mutating
the MLP input ``[h_v || Q_q]`` instead would change nothing but the mask's
width: the query half is identical on both sides.
"""

import torch

from .losses import training_loss
from .mutation import emu_candidates


def strict_negatives(known, anchor, rel, side, n_negatives, generator):
    """Negatives ``(B, n_negatives)``, uniform over the entities that do not answer the query in ``known``.

    As torchdrug's strict negatives: drawn with replacement; a query that every
    entity answers falls back to uniform over all entities.
    """
    allowed = (~known.mask(anchor, rel, side)).float()
    empty = allowed.sum(1) == 0
    if bool(empty.any()):
        allowed[empty] = 1.0
    return torch.multinomial(allowed, n_negatives, replacement=True, generator=generator)


def path_step_loss(model, sampler, cfg, batch, step, generator, known):
    """The scalar training loss of one batch of positives ``(B, 3)`` for a path-based model.

    ``known`` is the :class:`~kgestimator.filtering.KnownTriples` of the
    training triples (the strict negatives' filter).
    """
    anchors, rels, targets, negs, emu_negs = [], [], [], [], []
    for idx, side in sampler.sides(batch, step, generator):
        b = batch if idx is None else batch[idx]
        anchor, rel, target = (b[:, 0], b[:, 1], b[:, 2]) if side == "tail" else (b[:, 2], b[:, 1], b[:, 0])
        negs.append(strict_negatives(known, anchor, rel, side, cfg.n_negatives, generator))
        if cfg.emu and cfg.emu_resample:
            emu_negs.append(strict_negatives(known, anchor, rel, side, cfg.n_negatives, generator))
        anchors.append(anchor)
        rels.append(model.query_relations(rel, side))
        targets.append(target)
    anchor, rel, target = torch.cat(anchors), torch.cat(rels), torch.cat(targets)
    cand = torch.cat([target.unsqueeze(1), torch.cat(negs)], 1)                  # (B, 1 + N)
    emu_neg = torch.cat(emu_negs) if emu_negs else None
    hidden = cand if emu_neg is None else torch.cat([cand, emu_neg], 1)
    keep = model.training_edges(batch, anchor, hidden)

    nodes, query = model.propagate(anchor, rel, keep)                            # (B, n, d)
    rows = torch.arange(anchor.shape[0], device=anchor.device).unsqueeze(1)
    reps = nodes[rows, cand]                                                     # (B, 1 + N, d)
    logits = model.score_nodes(reps, query)
    if not cfg.emu:
        return training_loss(cfg, logits)

    pos = reps[:, :1]
    neg = reps[:, 1:] if emu_neg is None else nodes[rows, emu_neg]
    mutated = emu_candidates(cfg.emu, pos, neg, cfg.mutation_ratio, generator)
    emu_logits = torch.cat([logits[:, :1], model.score_nodes(mutated, query)], 1)
    return training_loss(cfg, logits, emu_logits)
