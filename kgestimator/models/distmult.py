"""DistMult: ``s = sum_i h_i r_i t_i`` (docs/algorithms.md §1.3)."""

from ._base import EmbeddingModel


class DistMult(EmbeddingModel):
    """Trilinear product; symmetric in head and tail."""

    bilinear = True

    def query(self, anchor, rel, side):
        return anchor * rel

    def match(self, q, cand):
        return (q * cand).sum(-1)
