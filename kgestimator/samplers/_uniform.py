"""Uniform and Bernoulli corruption (docs/algorithms.md §4.1 (b), §4.2)."""

import torch
from sklearn.base import BaseEstimator


#: values of ``UniformSampler(corrupt=...)``
CORRUPT = ("alternate", "both")


class UniformSampler(BaseEstimator):
    """Uniform corruption of the tail or the head, or of both.

    Negatives are i.i.d. uniform over all entities and unfiltered, as on the
    EMU reference code's cross-entropy path: a true answer can appear as a
    negative with probability about ``N * answers / n_entities`` per row.

    Parameters
    ----------
    corrupt : {'alternate', 'both'}, default='alternate'
        ``'alternate'``: a step corrupts the tails of its batch, the next the
        heads (step 0: tail), as the EMU and RotatE code do. ``'both'``: every
        step corrupts each positive's tail and its head, each against its own
        ``n_negatives``, and the loss is the mean over both sides' rows, as
        LibKGE's negative sampling does; a step then costs two.
    """

    #: chunks of positives may share one set of negatives (DGL-KE's chunked
    #: sampling); samplers whose negatives depend on the positive set this False
    shares_negatives = True

    def __init__(self, corrupt="alternate"):
        self.corrupt = corrupt

    def fit(self, triples, n_entities, n_relations, generator=None):
        corrupt = getattr(self, "corrupt", "alternate")  # subclasses have their own parameters
        if not (isinstance(corrupt, str) and corrupt in CORRUPT):
            raise ValueError(f"The 'corrupt' parameter of {type(self).__name__} must be one of {list(CORRUPT)}; "
                             f"got {corrupt!r}.")
        self.n_entities_ = int(n_entities)
        return self

    def sides(self, batch, step, generator):
        if getattr(self, "corrupt", "alternate") == "both":
            return [(None, "tail"), (None, "head")]
        return [(None, "tail" if step % 2 == 0 else "head")]

    def sample(self, batch, side, n_chunks, n_negatives, generator):
        return torch.randint(self.n_entities_, (n_chunks, n_negatives),
                             generator=generator, device=batch.device)

    def update(self, batch, side, model, query, neg_ids, neg_scores, generator):
        """Uniform sampling learns nothing from the model."""


class BernoulliSampler(UniformSampler):
    """Bernoulli corruption (Wang et al. 2014): corrupt the head with ``tph / (tph + hpt)``.

    The side is chosen per positive rather than per negative, so all the
    negatives of one positive are on one side; the expected fraction of head
    corruptions per relation is the same as in the per-negative variant.
    """

    def __init__(self):
        pass  # no parameters: the side of each positive is drawn, never alternated

    def fit(self, triples, n_entities, n_relations, generator=None):
        super().fit(triples, n_entities, n_relations)
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        pairs_hr = torch.unique(torch.stack([r, h], 1), dim=0)
        pairs_rt = torch.unique(torch.stack([r, t], 1), dim=0)
        n_triples = torch.bincount(r, minlength=n_relations).double()
        n_heads = torch.bincount(pairs_hr[:, 0], minlength=n_relations).double()
        n_tails = torch.bincount(pairs_rt[:, 0], minlength=n_relations).double()
        # distinct (h, r, t) counts stand in for distinct tails per head: duplicates are rare
        tph = n_triples / n_heads.clamp(min=1)
        hpt = n_triples / n_tails.clamp(min=1)
        self.head_prob_ = torch.where(tph + hpt > 0, tph / (tph + hpt), torch.full_like(tph, 0.5)).float()
        return self

    def sides(self, batch, step, generator):
        p = self.head_prob_.to(batch.device)[batch[:, 1]]
        head = torch.rand(p.shape, generator=generator, device=batch.device) < p
        groups = []
        for mask, side in ((~head, "tail"), (head, "head")):
            idx = mask.nonzero().squeeze(1)
            if idx.numel():
                groups.append((idx, side))
        return groups
