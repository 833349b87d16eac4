"""TransE: ``s = gamma - ||h + r - t||_1`` (ALGORITHMS.md §1.2)."""

import torch

from ._base import EmbeddingModel


class TransE(EmbeddingModel):
    """Translation with an L1 distance."""

    def query(self, anchor, rel, side):
        # h + r - t = h - (t - r): the head side compares h with t - r
        return anchor + rel if side == "tail" else anchor - rel

    def match(self, q, cand):
        return self.gamma - (q - cand).abs().sum(-1)

    def pairwise(self, q, cand):
        # cdist never materialises the (C, c, N, d) difference tensor
        return self.gamma - torch.cdist(q, cand, p=1.0)
