"""EMU (Embedding MUtation) and the MIXUP baseline (docs/algorithms.md §5.1, §5.2, §5.5).

Negatives arrive in the chunked layout of the trainer: ``C`` chunks of ``c``
positives, each chunk sharing ``N`` negative embeddings (``c = 1`` is the
reference's independent negatives). The trainer draws one mask per negative
slot, shape ``(N, de)``, and the chunks of a step share it: every mutated
negative still has its own independent Bernoulli coordinates, but negative
``j`` of two chunks copies the same coordinates (the same trade as sharing
negatives: correlated rows, unchanged expectation). Drawing ``(C, N, de)``
masks cost more than the mutation itself on 2 CPU cores (1 ms a step for
FB15k-237's shared negatives, 100 ms for per-positive ones). For bilinear models
the mutated scores are then two matrix products instead of a ``(C, c, N, de)``
tensor:

    q . (m * z_pos + (1 - m) * z_neg) = (q * z_pos) . m + q . ((1 - m) * z_neg)

``mutation_ratio`` is the paper's ``n_P / d``: the probability that a
coordinate is copied from the positive. The reference code's ``-if_EMU p`` is
``1 - mutation_ratio``.
"""

import torch

from .models._base import blocked


def emu_mask(shape, mutation_ratio, generator, device):
    """Boolean mask, True where the coordinate is copied from the positive."""
    return torch.rand(shape, generator=generator, device=device) < mutation_ratio


def mixup_weights(shape, generator, device):
    """Beta(2, 1) weights of the negative (mean 2/3), by inverse CDF ``sqrt(u)``."""
    return torch.rand(shape, generator=generator, device=device).sqrt_()


def _towards(pos, neg, weight):
    """EMU's mutation ``neg + m * (pos - neg)``: coordinates where ``m = 1`` come from the positive."""
    return neg + weight * (pos - neg)


def _mixed(pos, neg, lam):
    """MIXUP's candidate ``lam * neg + (1 - lam) * pos``."""
    return lam * neg + (1.0 - lam) * pos


def mutate(pos, neg, mask):
    """Materialise mutated candidates.

    Parameters
    ----------
    pos : Tensor of shape (C, c, de)
        Positive (true) embeddings of the corrupted side.
    neg : Tensor of shape (C, N, de)
    mask : bool Tensor of shape (C, N, de), or (N, de) shared by the chunks

    Returns
    -------
    Tensor of shape (C, c, N, de)
    """
    mask = mask.expand(neg.shape)
    return _towards(pos.unsqueeze(2), neg.unsqueeze(1), mask.to(neg.dtype).unsqueeze(1))


def mutated_scores(model, q, pos, neg, mask, masked_distance=None):
    """Scores ``(C, c, N)`` of the queries against EMU-mutated negatives.

    ``mask`` has shape ``(C, N, de)`` or ``(N, de)``. Models with a
    ``mutated_pairwise`` (TransE, whose distance is a sum over coordinates;
    RotatE and HAKE, whose fused distance never materialises the candidates)
    use it, with ``masked_distance`` (:func:`~kgestimator.training.masked_distance_fn`)
    when given; other distance models go through :func:`materialised_scores`.
    """
    if hasattr(model, "mutated_pairwise"):
        return model.mutated_pairwise(q, pos, neg, mask, masked_distance)
    if model.bilinear:
        m = mask.to(neg.dtype)
        kept = neg.masked_fill(mask, 0.0)
        return torch.bmm(q, kept.transpose(1, 2)) + torch.matmul(q * pos, m.transpose(-1, -2))
    return materialised_scores(model, q, pos, neg, mask)


def materialised_scores(model, q, pos, neg, mask):
    """``model.match`` of the queries against mutated candidates materialised in cache-sized row blocks.

    The reference form of :func:`mutated_scores` for distance models (the tests
    hold the fused RotatE/HAKE distance to it).
    """
    mask = mask.expand(neg.shape)

    def score(q, pos, neg, mask):
        return model.match(q.unsqueeze(2), mutate(pos, neg, mask))

    return blocked(score, q, neg, per_row=(pos,), per_chunk=(neg, mask))


def mixup_scores(model, q, pos, neg, neg_scores, pos_scores, lam):
    """Scores ``(C, c, N)`` against MIXUP negatives ``lam * neg + (1 - lam) * pos``.

    ``lam`` has shape ``(C, N)``. Bilinear scores are linear in the candidate,
    so they mix the already computed scores.
    """
    if model.bilinear:
        lam = lam.unsqueeze(1)
        return lam * neg_scores + (1.0 - lam) * pos_scores.unsqueeze(2)
    lam = lam[:, None, :, None]
    return model.match(q.unsqueeze(2), _mixed(pos.unsqueeze(2), neg.unsqueeze(1), lam))


def emu_scores(mode, model, q, pos, neg, neg_scores, pos_scores, mutation_ratio, generator, pairwise,
               masked_distance=None):
    """Scores ``(C, c, N)`` of the EMU term's negatives in the chunked layout, for ``emu=mode``.

    ``neg_scores`` are the scores of ``neg`` when already computed (unmutated
    negatives), else None; ``pairwise`` scores queries against shared candidates.
    """
    if mode == "mixup":
        if neg_scores is None and model.bilinear:
            neg_scores = pairwise(q, neg)
        lam = mixup_weights(neg.shape[:2], generator, neg.device)
        return mixup_scores(model, q, pos, neg, neg_scores, pos_scores, lam)
    if mode == "ls_only":
        return neg_scores if neg_scores is not None else pairwise(q, neg)
    mask = emu_mask(neg.shape[1:], mutation_ratio, generator, neg.device)
    return mutated_scores(model, q, pos, neg, mask, masked_distance)


def emu_candidates(mode, pos, neg, mutation_ratio, generator):
    """The EMU term's candidates ``(B, N, d)`` from aligned positives ``(B, 1, d)`` and negatives ``(B, N, d)``.

    The path-based models' counterpart of :func:`emu_scores`: one positive row per
    negative row, no chunks, so the candidates are materialised.
    """
    if mode == "mixup":
        lam = mixup_weights(neg.shape[:2], generator, neg.device).unsqueeze(-1)
        return _mixed(pos, neg, lam)
    if mode == "ls_only":
        return neg
    mask = emu_mask(neg.shape, mutation_ratio, generator, neg.device).to(neg.dtype)
    return _towards(pos, neg, mask)
