"""1vsAll and KvsAll training: every query scored against every entity (README, "Training regimes").

PyKEEN calls the family LCWA (local closed-world assumption), LibKGE
``1vsAll`` / ``KvsAll``, kbc scores every query against all entities too.

* ``'1vsall'``: each training triple ``(h, r, t)`` gives the tail query
  ``(h, r, ?)`` with target ``t`` and the head query ``(?, r, t)`` with target
  ``h``; the loss is a softmax cross-entropy (``loss='ce'``, LibKGE's ``kl``)
  or a binary cross-entropy summed over the entities (``'bce'``).
* ``'kvsall'``: the training rows are the distinct queries ``(h, r, ?)`` and
  ``(?, r, t)`` of the training triples; a query's target marks all of its
  known training answers (the validation and test triples never enter it).
  With ``label_smoothing = e`` the multi-hot targets ``y`` become
  ``(1 - e) y + e / n_entities``; the cross-entropy normalises them to sum 1.

Memory. A step holds ``Q x n_entities`` scores (``Q`` queries). While that is
at most ``SCORE_ELEMENTS`` the scores are one matrix product (bilinear models)
and autograd keeps them (with the softmax and the gradient: a few such blocks). Beyond it the entity axis is cut into chunks of
``SCORE_ELEMENTS / Q`` entities: a first no-grad pass gathers each row's
log-sum-exp, then each chunk's contribution to the gradient,
``(c_i softmax_ik - w_ik) * s_ik``, goes through ``torch.utils.checkpoint``, so
its scores are recomputed in the backward pass instead of stored. No more than
one chunk of scores is alive at a time, at the price of a third scoring pass.

EMU (README, "EMU in 1vsAll"). In 1vsAll every entity is a candidate, so every
candidate is mutated: candidate ``e_k`` of the query ``i`` with positive ``p_i``
becomes ``m_k * p_i + (1 - m_k) * e_k`` with a Bernoulli(``mutation_ratio``)
mask row ``m_k`` per entity, drawn afresh each step. For bilinear models the
mutated scores stay two matrix products,
``(q * p) @ M^T + q @ ((1 - M) * E)^T``; the target's own column is the positive
itself. The EMU term is the ULS cross-entropy of Eq. 12 over all entities,
divided by ``n_entities - 1`` with ``emu_normalize``, plus ``alpha`` times the
vanilla 1vsAll loss.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .filtering import KnownTriples
from .losses import regularization
from .models import is_path_based
from .mutation import emu_mask, mutated_scores

#: regimes of the ``training`` parameter
TRAININGS = ("negative_sampling", "1vsall", "kvsall")
#: most ``(query, entity)`` scores alive at once in a 1vsAll/KvsAll step
#: (64 MB of float32); larger steps score the entity axis in chunks
SCORE_ELEMENTS = 1 << 24


def kvsall_rows(triples):
    """The distinct queries of ``triples`` as rows ``(anchor, relation, side)``, side 0 tail, 1 head."""
    zeros = torch.zeros_like(triples[:, 0])
    tail = torch.stack([triples[:, 0], triples[:, 1], zeros], 1)
    head = torch.stack([triples[:, 2], triples[:, 1], zeros + 1], 1)
    return torch.unique(torch.cat([tail, head]), dim=0)


def _base_relations(model):
    return model.n_relations // 2 if getattr(model, "reciprocal", False) else model.n_relations


class LCWAStep:
    """The loss of one 1vsAll or KvsAll step (called by :func:`kgestimator.training.train`).

    Parameters
    ----------
    model : EmbeddingModel or NBFNet
    triples : LongTensor of shape (n, 3)
        The training triples (KvsAll's targets come from them only).
    cfg : TrainConfig

    Attributes
    ----------
    rows : LongTensor
        What an epoch iterates over: the triples (1vsAll) or the distinct
        queries ``(anchor, relation, side)`` (KvsAll, see :func:`kvsall_rows`).
    """

    def __init__(self, model, triples, cfg):
        self.model, self.cfg = model, cfg
        self.kvsall = cfg.training == "kvsall"
        self.known = KnownTriples(triples, model.n_entities, _base_relations(model)) if self.kvsall else None
        self.rows = kvsall_rows(triples) if self.kvsall else triples

    # ------------------------------------------------------------------ queries
    def _groups(self, batch):
        """``[(anchor, relation, side, target or None)]`` of the batch's queries."""
        if not self.kvsall:
            return [(batch[:, 0], batch[:, 1], "tail", batch[:, 2]), (batch[:, 2], batch[:, 1], "head", batch[:, 0])]
        groups = []
        for flag, side in ((0, "tail"), (1, "head")):
            rows = batch[batch[:, 2] == flag]
            if rows.shape[0]:
                groups.append((rows[:, 0], rows[:, 1], side, None))
        return groups

    def _labels(self, groups, device):
        """``labels(lo, hi) -> (Q, hi - lo)`` 0/1 targets, and the answers per row ``(Q,)``."""
        if not self.kvsall:
            target = torch.cat([g[3] for g in groups])

            def labels(lo, hi):
                y = torch.zeros(target.shape[0], hi - lo, device=device)
                inside = (target >= lo) & (target < hi)
                y[inside.nonzero().squeeze(1), target[inside] - lo] = 1.0
                return y

            return labels, torch.ones(target.shape[0], device=device)
        rows, cols, offset = [], [], 0
        for anchor, rel, side, _ in groups:
            r, c = self.known.pairs(anchor, rel, side)
            rows.append(r + offset)
            cols.append(c)
            offset += anchor.shape[0]
        rows, cols = torch.cat(rows), torch.cat(cols)
        counts = torch.bincount(rows, minlength=offset).float()

        def labels(lo, hi):
            y = torch.zeros(offset, hi - lo, device=device)
            inside = (cols >= lo) & (cols < hi)
            y[rows[inside], cols[inside] - lo] = 1.0
            return y

        return labels, counts

    # ------------------------------------------------------------------ loss
    def __call__(self, batch, step, generator):
        cfg, model = self.cfg, self.model
        groups = self._groups(batch)
        if is_path_based(model):
            score, emu_score, factors = self._path_scores(batch, groups, generator)
        else:
            score, emu_score, factors = self._embedding_scores(groups, generator)
        n = model.n_entities
        labels, counts = self._labels(groups, batch.device)
        Q = int(counts.shape[0])
        eps = cfg.label_smoothing
        if cfg.loss == "bce":
            def targets(lo, hi):
                return labels(lo, hi).mul_(1.0 - eps).add_(eps / n)

            loss = chunked_bce(score, targets, Q, n)
        else:
            norm = (1.0 - eps) * counts + eps

            def weights(lo, hi):
                return labels(lo, hi).mul_(1.0 - eps).add_(eps / n).div_(norm.unsqueeze(1))

            loss = chunked_softmax_loss(score, weights, torch.ones(Q, device=batch.device), Q, n)
        if emu_score is not None:
            beta = cfg.beta if cfg.uls else 0.0

            def uls_weights(lo, hi):
                return labels(lo, hi).mul_(1.0 - beta).add_(beta)

            emu = chunked_softmax_loss(emu_score, uls_weights,
                                       torch.full((Q,), 1.0 + beta * (n - 1), device=batch.device), Q, n)
            if cfg.emu_normalize:
                emu = emu / max(1, n - 1)
            loss = emu + cfg.alpha * loss
        return regularization(cfg, model, loss, factors, Q)

    def _embedding_scores(self, groups, generator):
        cfg, model = self.cfg, self.model
        # one lookup per table for both sides: each lookup's backward writes a dense, table-sized
        # gradient (a zero fill and an add), which cost more than the scores' products at kbc's batch of 50
        sizes = [g[0].shape[0] for g in groups]
        table = model.entity_table()
        ids = [g[0] for g in groups]
        # without entity dropout a positive's row is its table row: gathered with the anchors
        together = not self.kvsall and not (model.entity_dropout and model.training)
        if together:
            ids += [g[3] for g in groups]
        rows = model.entities(torch.cat(ids))
        anchors = rows[:sum(sizes)].split(sizes)
        pos = None
        if not self.kvsall:
            pos = rows[sum(sizes):] if together else table[torch.cat([g[3] for g in groups])]
        oriented = [model.orient(rel, side) for _, rel, side, _ in groups]
        rels = model.relations(torch.cat([o[0] for o in oriented])).split(sizes)
        qs = []
        for a, r, (_, query_side) in zip(anchors, rels, oriented):  # a loop: no comprehension frame above query
            qs.append(model.query(a, r, query_side))
        q = torch.cat(qs)

        def score(lo, hi):
            cand = table[lo:hi]
            if model.bilinear:
                return q @ cand.t()
            return model.pairwise(q.unsqueeze(0), cand.unsqueeze(0))[0]

        emu_score = None
        if cfg.emu:
            # one seed per step; each chunk's mask comes from it, so that the checkpointed
            # recomputation in the backward pass draws the same mask
            seed = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))

            def emu_score(lo, hi):
                cand = table[lo:hi]
                mask = _chunk_mask((hi - lo, cand.shape[1]), cfg.mutation_ratio, seed, lo, cand.device)
                return mutated_scores(model, q.unsqueeze(0), pos.unsqueeze(0), cand.unsqueeze(0), mask)[0]

        factors = None
        if cfg.regularizer == "n3":
            a, r = torch.cat(anchors), torch.cat(rels)
            factors = model.n3_factors(a, r, pos) if pos is not None else model.n3_factors(a, r, a)[:2]
        return score, emu_score, factors

    def _path_scores(self, batch, groups, generator):
        """NBFNet: one propagation per query, its batch's answer edges hidden; scores over all nodes."""
        cfg, model = self.cfg, self.model
        anchor = torch.cat([g[0] for g in groups])
        rel = torch.cat([model.query_relations(g[1], g[2]) for g in groups])
        if self.kvsall:
            hidden = []
            for a, r, side, _ in groups:
                rows, cols = self.known.pairs(a, r, side)
                h, t = (a[rows], cols) if side == "tail" else (cols, a[rows])
                hidden.append(torch.stack([h, r[rows], t], 1))
            keep = model.training_edges(torch.cat(hidden))
        else:
            keep = model.training_edges(batch)
        nodes, query = model.propagate(anchor, rel, keep)

        def score(lo, hi):
            return model.score_nodes(nodes[:, lo:hi], query)

        emu_score = None
        if cfg.emu:
            target = torch.cat([g[3] for g in groups])
            pos = nodes[torch.arange(anchor.shape[0], device=anchor.device), target].unsqueeze(1)
            seed = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))

            def emu_score(lo, hi):
                cand = nodes[:, lo:hi]
                mask = _chunk_mask((hi - lo, cand.shape[-1]), cfg.mutation_ratio, seed, lo, cand.device)
                return model.score_nodes(cand + mask.to(cand.dtype) * (pos - cand), query)

        return score, emu_score, None


def _chunk_mask(shape, ratio, seed, lo, device):
    gen = torch.Generator(device=device).manual_seed((seed + lo) % (2 ** 63))
    return emu_mask(shape, ratio, gen, device)


def _chunks(n, n_rows, budget=None):
    size = max(1, (budget or SCORE_ELEMENTS) // max(1, n_rows))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def chunked_softmax_loss(score, weights, scale, n_rows, n):
    """``mean_i (scale_i * logsumexp_k s_ik - sum_k w_ik s_ik)`` over entity chunks.

    Parameters
    ----------
    score : callable
        ``score(lo, hi) -> (n_rows, hi - lo)`` scores of entities ``lo:hi``, with gradient.
    weights : callable
        ``weights(lo, hi) -> (n_rows, hi - lo)`` target weights, constants.
    scale : Tensor of shape (n_rows,)
        The weight of each row's log-sum-exp (1 for a cross-entropy whose
        targets sum to 1; ``1 + beta (n - 1)`` for the ULS term).
    n_rows, n : int
        Queries and entities.

    Within ``SCORE_ELEMENTS`` scores this is one autograd expression; beyond,
    see the module docstring (the value is the same, the gradient too up to
    rounding).
    """
    chunks = _chunks(n, n_rows)
    if len(chunks) == 1:
        s = score(0, n)
        return (scale * torch.logsumexp(s, 1) - (weights(0, n) * s).sum(1)).mean()
    with torch.no_grad():
        lse = None
        weighted = 0.0
        for lo, hi in chunks:
            s = score(lo, hi)
            part = torch.logsumexp(s.float(), 1)
            lse = part if lse is None else torch.logaddexp(lse, part)
            weighted = weighted + (weights(lo, hi).mul_(s)).sum(1)
        value = (scale * lse - weighted).mean()

    def contribution(lo, hi):
        s = score(lo, hi)
        # d loss / d s, built in place: a chunk holds its scores and this one more block
        grad = s.detach().float() - lse.unsqueeze(1)
        grad.exp_().mul_(scale.unsqueeze(1)).sub_(weights(lo, hi))
        return torch.dot(grad.view(-1), s.float().reshape(-1)) / n_rows

    surrogate = sum(checkpoint(contribution, lo, hi, use_reentrant=False) for lo, hi in chunks)
    return value + surrogate - surrogate.detach()


def chunked_bce(score, targets, n_rows, n):
    """``mean_i sum_k BCE(s_ik, y_ik)``, chunked over entities like :func:`chunked_softmax_loss`."""
    chunks = _chunks(n, n_rows)

    def part(lo, hi):
        return F.binary_cross_entropy_with_logits(score(lo, hi).float(), targets(lo, hi), reduction="sum") / n_rows

    if len(chunks) == 1:
        return part(0, n)
    return sum(checkpoint(part, lo, hi, use_reentrant=False) for lo, hi in chunks)
