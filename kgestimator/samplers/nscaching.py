"""NSCaching: caches of high-scoring negatives per query (docs/algorithms.md §4.4).

One cache row of ``cache_size`` (N1) entity ids per distinct ``(h, r)`` key
(tail negatives) and per distinct ``(r, t)`` key (head negatives), on the
device. Per step and side:

* **sample**: ``N`` ids per positive drawn uniformly, with replacement, from
  its cache row (the reference's ``unif`` draw, extended from one to ``N``
  negatives as docs/algorithms.md §4.4 describes for the EMU setting);
* **update**, before the gradient step, with the current parameters: for the
  distinct keys of the batch, the row plus ``candidate_size`` (N2) uniform
  entities are scored, and the new row is drawn from ``softmax(score / T)``
  without replacement (importance sampling, by the Gumbel top-k trick) or is
  the top N1 (``cache_update='top'``).

All keys of a batch update together with a few gathers and one batched score;
there is no Python loop over keys. With ``exclude_known=True`` (default) a
candidate that forms a known training triple never enters a row, so the
positive itself is never cached as its own negative; the reference instead
offers an end-of-epoch clean-up (``--remove``, off by default).
"""

import numpy as np
import torch

from .._utils import check_choice, check_number
from ..filtering import TripleSet
from ..models._base import sampled_scores
from ._uniform import UniformSampler

_CACHE_UPDATES = ("importance", "top")


def _key_index(h_or_t, rel, n_relations):
    return h_or_t * n_relations + rel


def _scores(model, q, cand):
    """Scores ``(U, K)`` of queries ``q`` ``(U, 1, dq)`` against the entity ids ``cand`` ``(U, K)``.

    Bilinear models score straight from the table (a sampled product) instead of
    gathering a ``(U, K, d)`` candidate tensor: FB15k-237, 1000 keys x 60 candidates,
    about 2 ms instead of 10 on one CPU core. Entity dropout keeps the gather, whose
    rows draw their own dropout masks.
    """
    if model.bilinear and not model.entity_dropout:
        return sampled_scores(q.squeeze(1), model.entity_table(), cand)
    return model.pairwise(q, model.entities(cand)).squeeze(1)


class NSCachingSampler(UniformSampler):
    """Cache-based hard negatives (Zhang et al. 2019), on the device.

    Parameters
    ----------
    cache_size : int, default=30
        N1, entity ids kept per cache row.
    candidate_size : int, default=30
        N2, uniform random entities added to a row's candidates at each update.
    temperature : float, default=2.0
        Softmax temperature of the importance sampling (scores are divided by it).
    cache_update : {'importance', 'top'}, default='importance'
        Draw the new row from the softmax without replacement, or keep the top N1.
    exclude_known : bool, default=True
        Keep known training answers of a key out of its cache row.
    """

    shares_negatives = False

    def __init__(self, cache_size=30, candidate_size=30, temperature=2.0, cache_update="importance",
                 exclude_known=True):
        self.cache_size = cache_size
        self.candidate_size = candidate_size
        self.temperature = temperature
        self.cache_update = cache_update
        self.exclude_known = exclude_known

    def _validate(self):
        owner = type(self).__name__
        check_number("cache_size", self.cache_size, 1, integer=True, owner=owner)
        check_number("candidate_size", self.candidate_size, 0, integer=True, owner=owner)
        check_number("temperature", self.temperature, 0, np.finfo(float).max, low_open=True, owner=owner)
        check_choice("cache_update", self.cache_update, _CACHE_UPDATES, owner=owner)

    def fit(self, triples, n_entities, n_relations, generator=None):
        self._validate()
        super().fit(triples, n_entities, n_relations)
        self.n_relations_ = int(n_relations)
        device = triples.device
        self.keys_, self.caches_ = {}, {}
        for side, anchor_col in (("tail", 0), ("head", 2)):
            keys = torch.unique(_key_index(triples[:, anchor_col], triples[:, 1], n_relations))
            self.keys_[side] = keys
            self.caches_[side] = torch.randint(self.n_entities_, (keys.numel(), self.cache_size),
                                               generator=generator, device=device)
        self.known_ = TripleSet(triples, n_entities, n_relations) if self.exclude_known else None
        return self

    def rows(self, batch, side):
        """Cache rows of the positives' keys (every training key has one)."""
        anchor = batch[:, 0] if side == "tail" else batch[:, 2]
        keys = self.keys_[side]
        query = _key_index(anchor, batch[:, 1], self.n_relations_)
        pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        if not bool((keys[pos] == query).all()):
            raise ValueError("NSCachingSampler: a positive's query key has no cache row; "
                             "sample only triples the sampler was fitted on.")
        return pos

    def sample(self, batch, side, n_chunks, n_negatives, generator):
        rows = self.rows(batch, side)
        pick = torch.randint(self.cache_size, (batch.shape[0], n_negatives),
                             generator=generator, device=batch.device)
        return self.caches_[side][rows].gather(1, pick)  # two small gathers beat one broadcast index

    @torch.no_grad()
    def update(self, batch, side, model, query, neg_ids, neg_scores, generator):
        """Refresh the cache rows of the batch's distinct keys from the model's scores."""
        rows = self.rows(batch, side)
        uniq, inverse = torch.unique(rows, return_inverse=True)
        n = batch.shape[0]
        # the first positive of each key supplies its query vector (as in the reference)
        first = torch.full((uniq.numel(),), n, dtype=torch.long, device=rows.device)
        first.scatter_reduce_(0, inverse, torch.arange(n, device=rows.device), reduce="amin")
        cache = self.caches_[side]
        random = torch.randint(self.n_entities_, (uniq.numel(), self.candidate_size),
                               generator=generator, device=rows.device)
        cand = torch.cat([cache[uniq], random], 1)
        q = query.reshape(n, -1)[first].detach().unsqueeze(1)            # (U, 1, dq)
        logits = _scores(model, q, cand) / float(self.temperature)
        if self.known_ is not None:
            anchor = batch[first, 0] if side == "tail" else batch[first, 2]
            logits = logits.masked_fill(self.known_.contains(anchor, batch[first, 1], cand, side), -torch.inf)
        if self.cache_update == "importance":
            # Gumbel top-k draws cache_size ids from softmax(logits) without replacement
            u = torch.rand(logits.shape, generator=generator, device=logits.device)
            logits = logits - torch.log(-torch.log(u.clamp_min(1e-20)))
        chosen = torch.topk(logits, self.cache_size, dim=1).indices
        cache[uniq] = cand.gather(1, chosen)

    def state_dict(self):
        return {f"{side}_cache": cache for side, cache in self.caches_.items()}

    def load_state_dict(self, state):
        for side in self.caches_:
            self.caches_[side] = state[f"{side}_cache"].to(self.caches_[side].device)
