"""ComplEx: ``s = Re(sum_i h_i r_i conj(t_i))`` (docs/algorithms.md §1.4).

Rows are laid out ``[real (d) | imaginary (d)]``, split by chunking, not
interleaved, as in the reference code.
"""

import torch

from ._base import EmbeddingModel, _split, modulus


class ComplEx(EmbeddingModel):
    """Complex bilinear model; the score is linear in either entity."""

    entity_factor = 2
    relation_factor = 2
    bilinear = True

    def query(self, anchor, rel, side):
        a_re, a_im = _split(anchor, 2)
        r_re, r_im = _split(rel, 2)
        if side == "tail":
            # q = h * r, then s = Re(q * conj(t)) = q_re . t_re + q_im . t_im
            return torch.cat([a_re * r_re - a_im * r_im, a_re * r_im + a_im * r_re], dim=-1)
        # p = r * conj(t), then s = Re(h * p) = h_re . p_re - h_im . p_im
        return torch.cat([r_re * a_re + r_im * a_im, r_re * a_im - r_im * a_re], dim=-1)

    def match(self, q, cand):
        return (q * cand).sum(-1)

    def n3_factors(self, h, r, t):
        return tuple(modulus(*_split(x, 2)) for x in (h, r, t))
