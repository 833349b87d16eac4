"""Negative samplers (ALGORITHMS.md §4).

A sampler decides which side of each positive is corrupted and draws the
negative ids, on the device, with the estimator's seeded generator. Negatives
come in the trainer's chunked layout: ``(C, N)`` ids shared by the ``c``
positives of each chunk (``c = 1``: independent negatives per positive).

The trainer calls, per step:

1. ``sides(batch, step, generator)`` -> list of ``(row_index or None, side)``;
2. ``sample(batch, side, n_chunks, n_negatives, generator, model, query)`` -> ids;
3. ``update(batch, side, neg_ids, neg_scores)`` with the model's scores of the
   negatives, for samplers that learn from the model (NSCaching, DANS).

Samplers are scikit-learn ``BaseEstimator`` objects so that ``GridSearchCV``
reaches their parameters as ``sampler__<name>``.

Checkpoints (``checkpoint_dir``). A sampler whose state changes during
training (NSCaching caches, DANS networks) defines two optional methods:

* ``state_dict()`` -> dict of tensors and plain Python values (int, float,
  str, bool, None, and lists/tuples/dicts of them; nothing that needs pickle),
  saved with each checkpoint;
* ``load_state_dict(state)``, called on resume after ``fit(...)`` and before
  the next step, with tensors already on the device of the training triples.

Together they must restore the sampler exactly, so that a resumed run draws
what the uninterrupted run would have. Samplers without these methods (uniform,
Bernoulli: everything they hold is rebuilt by ``fit``) are not saved.
"""

import torch
from sklearn.base import BaseEstimator


class UniformSampler(BaseEstimator):
    """Uniform corruption, alternating tail and head batches (step 0: tail).

    Negatives are i.i.d. uniform over all entities and unfiltered, as on the
    EMU reference code's cross-entropy path: a true answer can appear as a
    negative with probability about ``N * answers / n_entities`` per row.
    """

    def fit(self, triples, n_entities, n_relations):
        self.n_entities_ = int(n_entities)
        return self

    def sides(self, batch, step, generator):
        return [(None, "tail" if step % 2 == 0 else "head")]

    def sample(self, batch, side, n_chunks, n_negatives, generator, model=None, query=None):
        return torch.randint(self.n_entities_, (n_chunks, n_negatives),
                             generator=generator, device=batch.device)

    def update(self, batch, side, neg_ids, neg_scores):
        """Uniform sampling learns nothing from the model."""


class BernoulliSampler(UniformSampler):
    """Bernoulli corruption (Wang et al. 2014): corrupt the head with ``tph / (tph + hpt)``.

    The side is chosen per positive rather than per negative, so all the
    negatives of one positive are on one side; the expected fraction of head
    corruptions per relation is the same as in the per-negative variant.
    """

    def fit(self, triples, n_entities, n_relations):
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


SAMPLERS = {"uniform": UniformSampler, "bernoulli": BernoulliSampler}


def make_sampler(sampler):
    """Turn a sampler name or object into a fresh, unfitted sampler object."""
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"The 'sampler' parameter must be one of {sorted(SAMPLERS)} or a sampler "
                f"object; got {sampler!r}."
            )
        return SAMPLERS[sampler]()
    if not all(hasattr(sampler, name) for name in ("fit", "sides", "sample", "update")):
        raise TypeError(
            "The 'sampler' parameter must be a string or an object with fit, sides, "
            f"sample and update methods; got {type(sampler).__name__}."
        )
    from sklearn.base import clone

    return clone(sampler)
