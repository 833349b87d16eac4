"""TransE: ``s = gamma - ||h + r - t||_1`` (docs/algorithms.md §1.2)."""

import torch

from ._base import EmbeddingModel, blocked


def masked_l1(q, neg, keep):
    """``sum_k keep[j, k] * |q[i, k] - neg[j, k]|`` as ``(C, c, N)``, for ``(C, N, d)`` ``neg`` and ``keep``."""
    return ((q.unsqueeze(2) - neg.unsqueeze(1)).abs() * keep.unsqueeze(1)).sum(-1)


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

    def mutated_pairwise(self, q, pos, neg, mask, masked_distance=None):
        """EMU scores ``(C, c, N)`` without materialising the mutated candidates.

        The L1 distance is a sum over coordinates, and each coordinate of a mutated
        candidate is the positive's (mask 1) or the negative's (mask 0), so
        ``|q - (m p + (1 - m) n)|_1 = |q - p| . m + sum_k (1 - m_k) |q_k - n_k|``:
        a matrix product plus a masked distance. ``masked_distance`` replaces the
        blocked eager :func:`masked_l1` (the trainer passes a compiled one).
        """
        m = mask.to(q.dtype)
        copied = torch.matmul((q - pos).abs(), m.transpose(-1, -2))
        keep = (1.0 - m).expand(neg.shape)
        if masked_distance is None:
            kept = blocked(masked_l1, q, neg, per_chunk=(neg, keep))
        else:
            kept = masked_distance(q, neg, keep)
        return self.gamma - copied - kept
