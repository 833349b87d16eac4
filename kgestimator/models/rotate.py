"""RotatE: ``s = gamma - sum_i |h_i r_i - t_i|`` with ``|r_i| = 1`` (docs/algorithms.md §1.5)."""

import torch

from ._base import EmbeddingModel, _split, modulus, phases


class RotatE(EmbeddingModel):
    """Rotation in the complex plane; the relation row holds ``d`` raw phases."""

    entity_factor = 2
    relation_factor = 1

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
