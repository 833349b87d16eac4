"""Index of known triples, on the device, for filtered ranking and top-k exclusion.

Known answers of each query key (``(h, r)`` for tail queries, ``(r, t)`` for head
queries) are stored CSR-style: keys sorted once, answers in key order. A batch
of queries is expanded into a boolean ``(Q, n_entities)`` mask with a handful of
vectorised ops; no Python loop over queries.
"""

import torch


class KnownTriples:
    """Known answers per query, for both sides.

    Parameters
    ----------
    triples : LongTensor of shape (n, 3)
        Encoded triples (duplicates allowed).
    n_entities, n_relations : int
    """

    def __init__(self, triples, n_entities, n_relations):
        self.n_entities = int(n_entities)
        self.n_relations = int(n_relations)
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        self._index = {
            "tail": self._build(h * n_relations + r, t),
            "head": self._build(t * n_relations + r, h),
        }

    @staticmethod
    def _build(keys, answers):
        order = torch.argsort(keys, stable=True)
        keys, answers = keys[order], answers[order]
        uniq, counts = torch.unique_consecutive(keys, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        return uniq, starts, counts, answers

    def pairs(self, anchor, rel, side):
        """``(rows, cols)`` of the known answers: query ``rows[i]`` knows entity ``cols[i]``.

        ``rows`` is sorted, so the pairs of a range of queries are one slice.
        For ``side="head"``, ``anchor`` is the tail and the pairs give known heads.
        """
        uniq, starts, counts, answers = self._index[side]
        none = torch.zeros(0, dtype=torch.long, device=anchor.device)
        if uniq.numel() == 0:
            return none, none
        keys = anchor * self.n_relations + rel
        pos = torch.searchsorted(uniq, keys).clamp(max=uniq.numel() - 1)
        found = uniq[pos] == keys
        lengths = torch.where(found, counts[pos], torch.zeros_like(pos))
        total = int(lengths.sum())
        if total == 0:
            return none, none
        rows = torch.repeat_interleave(torch.arange(anchor.shape[0], device=anchor.device), lengths)
        offsets = torch.arange(total, device=anchor.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths)
        cols = answers[torch.repeat_interleave(starts[pos], lengths) + offsets]
        return rows, cols

    def mask(self, anchor, rel, side):
        """Boolean ``(Q, n_entities)``: True where ``(anchor, rel, e)`` is known.

        For ``side="head"``, ``anchor`` is the tail and the mask marks known heads.
        """
        out = torch.zeros(anchor.shape[0], self.n_entities, dtype=torch.bool, device=anchor.device)
        rows, cols = self.pairs(anchor, rel, side)
        out[rows, cols] = True
        return out


class TripleSet:
    """Membership test for ``(anchor, relation, candidate)`` against known triples.

    Training-time samplers use it to drop true answers from their negatives
    (docs/algorithms.md §4.1 (a), §4.3). Each triple becomes one int64 key per side,
    sorted once; a ``(B, N)`` block of candidates is tested with one
    ``searchsorted``.
    """

    def __init__(self, triples, n_entities, n_relations):
        self.n_entities = int(n_entities)
        self.n_relations = int(n_relations)
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        self._keys = {"tail": torch.unique(self._key(h, r, t)),
                      "head": torch.unique(self._key(t, r, h))}

    def _key(self, anchor, rel, cand):
        return (anchor * self.n_relations + rel) * self.n_entities + cand

    def contains(self, anchor, rel, cand, side):
        """Boolean like ``cand``: True where ``(anchor, rel, cand)`` is known.

        ``anchor`` and ``rel`` have shape ``(B,)``, ``cand`` ``(B, N)``; for
        ``side="head"`` the anchor is the tail and the candidates are heads.
        """
        keys = self._keys[side]
        if keys.numel() == 0:
            return torch.zeros_like(cand, dtype=torch.bool)
        query = self._key(anchor.unsqueeze(1), rel.unsqueeze(1), cand)
        pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return keys[pos] == query
