"""RotatE: ``s = gamma - sum_i |h_i r_i - t_i|`` with ``|r_i| = 1`` (docs/algorithms.md §1.5)."""

import torch

from ._base import EmbeddingModel, _split, modulus, phases
from ._distance import rotate_distance


class RotatE(EmbeddingModel):
    """Rotation in the complex plane; the relation row holds ``d`` raw phases."""

    entity_factor = 2
    relation_factor = 1
    #: ``pairwise`` and ``mutated_pairwise`` take ``native=``: the fused distance of ``_distance``
    native_scoring = True

    def query(self, anchor, rel, side):
        a_re, a_im = _split(anchor, 2)
        theta = phases(rel, self.rho)
        c, s = torch.cos(theta), torch.sin(theta)
        if side == "head":
            # |h r - t| = |h - conj(r) t| because |r| = 1
            s = -s
        return torch.cat([a_re * c - a_im * s, a_re * s + a_im * c], dim=-1)

    def match(self, q, cand):
        q_re, q_im = _split(q, 2)
        c_re, c_im = _split(cand, 2)
        return self.gamma - modulus(q_re - c_re, q_im - c_im).sum(-1)

    def pairwise(self, q, cand, native=False):
        """Scores ``(C, c, N)`` of queries ``(C, c, 2d)`` against candidates ``(C, N, 2d)``, fused.

        ``native``: the C kernels where they can be built (``compile``), else eager blocks.
        """
        return self.gamma - rotate_distance(q, cand, native=native)

    def mutated_pairwise(self, q, pos, neg, mask, native=False):
        """EMU scores ``(C, c, N)`` against ``neg`` with the coordinates ``mask`` copied from ``pos``.

        Real and imaginary parts are masked independently (``mask`` ``(N, 2d)``
        or ``(C, N, 2d)``), as in the reference; the mutated candidates are never
        materialised.
        """
        return self.gamma - rotate_distance(q, neg, pos, mask, native=native)
