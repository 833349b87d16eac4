"""HAKE: phase (half-angle sine) plus modulus with a clamped mixture bias (docs/algorithms.md §1.6)."""

import math

import torch
from torch import nn

from ._base import EmbeddingModel, _split, phases
from ._distance import hake_distance


class HAKE(EmbeddingModel):
    """Hierarchy-aware embedding in polar coordinates.

    Entity rows are ``[phase (d) | modulus (d)]``, relation rows
    ``[phase (d) | modulus (d) | bias (d)]``. The relation modulus starts at 1 and
    the bias at 0; ``phase_weight`` and ``modulus_weight`` are trainable scalars.

    Both sides reduce to one form: with the query packed as ``[phase, y, x]``
    the modulus distance is ``|| m_cand * x - y ||_2``. Tail side:
    ``y = m_h (|m_r| + b)``, ``x = 1 - b``; head side: ``y = m_t (1 - b)``,
    ``x = |m_r| + b`` with ``b`` clamped into ``[-|m_r|, 1]``.
    """

    entity_factor = 2
    relation_factor = 3
    #: ``pairwise`` and ``mutated_pairwise`` take ``native=``: the fused distance of ``_distance``
    native_scoring = True

    def __init__(self, n_entities, n_relations, dim, gamma=24.0, generator=None,
                 phase_weight=0.5, modulus_weight=1.0, init_scale=None):
        super().__init__(n_entities, n_relations, dim, gamma, generator, init_scale)
        with torch.no_grad():
            self.relation[:, dim:2 * dim] = 1.0
            self.relation[:, 2 * dim:] = 0.0
        self.phase_weight = nn.Parameter(torch.tensor([phase_weight * self.rho]))
        self.modulus_weight = nn.Parameter(torch.tensor([float(modulus_weight)]))

    def query(self, anchor, rel, side):
        a_phase, a_mod = _split(anchor, 2)
        r_phase, r_mod, r_bias = _split(rel, 3)
        r_mod = r_mod.abs()
        # clamp into [-|m_r|, 1] without in-place masking, so autograd stays clean
        bias = torch.maximum(torch.clamp(r_bias, max=1.0), -r_mod)
        if side == "tail":
            phase, y, x = a_phase + r_phase, a_mod * (r_mod + bias), 1.0 - bias
        else:
            phase, y, x = a_phase - r_phase, a_mod * (1.0 - bias), r_mod + bias
        return torch.cat([phase, y, x.expand(y.shape)], dim=-1)

    def match(self, q, cand):
        q_phase, y, x = _split(q, 3)
        c_phase, c_mod = _split(cand, 2)
        phase_dist = torch.sin(phases(q_phase - c_phase, self.rho) / 2).abs().sum(-1)
        mod_dist = torch.linalg.vector_norm(c_mod * x - y, dim=-1)
        # the weights are stored as (1,) tensors (checkpoint layout); index them so a single
        # triple scores as a 0-d tensor like every other model, not as (1,)
        return self.gamma - (self.phase_weight[0] * phase_dist + self.modulus_weight[0] * mod_dist)

    def pairwise(self, q, cand, native=False):
        """Scores ``(C, c, N)`` of queries ``(C, c, 3d)`` against candidates ``(C, N, 2d)``, fused.

        The phase distance ``|sin((a - b) / 2)|`` is computed as
        ``|sin(alpha) cos(beta) - cos(alpha) sin(beta)|`` of the half phases, so
        the kernels need no sine of their own. ``native``: the C kernels where
        they can be built (``compile``), else eager blocks.
        """
        return self.gamma - hake_distance(q, cand, self._weights(), math.pi / self.rho / 2, native=native)

    def mutated_pairwise(self, q, pos, neg, mask, native=False):
        """EMU scores ``(C, c, N)`` against ``neg`` with the coordinates ``mask`` ``(N, 2d)`` copied from ``pos``."""
        return self.gamma - hake_distance(q, neg, self._weights(), math.pi / self.rho / 2, pos, mask, native=native)

    def _weights(self):
        return torch.cat([self.phase_weight, self.modulus_weight])
