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

On the CPU, a batch whose propagation would hold more activations than
``NBFNet.pass_bytes`` runs in passes of fewer queries, each backpropagated as
soon as it is scored (:class:`Backpropagated`): the gradient is the same sum
(every loss is a mean over the batch's rows, and every query shares the step's
hidden edges, negatives and EMU noise), and activations never exceed one pass.
On WN18RR at the reference batch of 32 a pass is one query: its tensors fit
in glibc's heap instead of being mapped and faulted in afresh at every step.
"""

from dataclasses import dataclass

import torch

from .losses import training_loss
from .mutation import candidate_noise, candidates_with


@dataclass
class Backpropagated:
    """A step's loss whose backward pass the step function already ran (gradients accumulated)."""

    loss: torch.Tensor


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
    B = anchor.shape[0]
    noise = None
    if cfg.emu:
        noise = candidate_noise(cfg.emu, (B, cfg.n_negatives, model.dim), cfg.mutation_ratio, generator,
                                anchor.device)
    per_pass = model.queries_per_pass(B) if anchor.device.type == "cpu" else B
    if per_pass >= B:
        return _pass_loss(model, cfg, anchor, rel, cand, emu_neg, noise, keep)
    total = 0.0
    for lo in range(0, B, per_pass):
        part = slice(lo, min(B, lo + per_pass))
        loss = _pass_loss(model, cfg, anchor[part], rel[part], cand[part],
                          None if emu_neg is None else emu_neg[part], None if noise is None else noise[part], keep)
        loss = loss.float() * ((part.stop - part.start) / B)
        loss.backward()
        total = total + loss.detach()
    return Backpropagated(total)


def _pass_loss(model, cfg, anchor, rel, cand, emu_neg, noise, keep):
    """The loss of one propagation over queries ``(anchor, rel)`` with candidates ``cand`` (positive first)."""
    nodes, query = model.propagate(anchor, rel, keep)                            # (B, n, d)
    rows = torch.arange(anchor.shape[0], device=anchor.device).unsqueeze(1)
    reps = nodes[rows, cand]                                                     # (B, 1 + N, d)
    logits = model.score_nodes(reps, query)
    if not cfg.emu:
        return training_loss(cfg, logits)

    pos = reps[:, :1]
    neg = reps[:, 1:] if emu_neg is None else nodes[rows, emu_neg]
    mutated = candidates_with(cfg.emu, pos, neg, noise)
    emu_logits = torch.cat([logits[:, :1], model.score_nodes(mutated, query)], 1)
    return training_loss(cfg, logits, emu_logits)
