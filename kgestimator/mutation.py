"""EMU (Embedding MUtation) and the MIXUP baseline (docs/algorithms.md §5.1, §5.2, §5.5).

Negatives arrive in the chunked layout of the trainer: ``C`` chunks of ``c``
positives, each chunk sharing ``N`` negative embeddings (``c = 1`` is the
reference's independent negatives). How the EMU masks are drawn is the
``emu_masks`` parameter (:data:`EMU_MASKS`):

* ``'shared'`` (the default): one mask per negative slot, shape ``(N, de)``,
  shared by every chunk and every positive of a step, even with ``c = 1``.
  Every mutated negative still has its own independent Bernoulli coordinates,
  but negative ``j`` of two positives copies the same coordinates (the same
  trade as sharing negatives: correlated rows, unchanged expectation). Drawing
  per-positive masks costs more than the mutation itself on 2 CPU cores (1 ms a
  step for FB15k-237's shared negatives, 100 ms for per-positive ones), and a
  mask per slot lets the fast paths stay matrix products: for bilinear models

      q . (m * z_pos + (1 - m) * z_neg) = (q * z_pos) . m + q . ((1 - m) * z_neg),

  for per-positive ids the table-scored kernels (:func:`sampled_mutated_scores`),
  for TransE, RotatE and HAKE their fused ``mutated_pairwise`` distances.
* ``'independent'``: the reference's sampling (nec-research/EMU-KG draws a
  ``(B, 1 + N, d)`` mask): one Bernoulli per positive, negative and coordinate,
  a ``(C, c, N, de)`` mask. No fast path takes it, so the candidates are
  materialised in cache-sized row blocks (:func:`materialised_scores`).

``mutation_ratio`` is the paper's ``n_P / d``: the probability that a
coordinate is copied from the positive. The reference code's ``-if_EMU p`` is
``1 - mutation_ratio``.
"""

import torch

from ._random import bernoulli_mask
from .models._base import blocked, rows, sampled_scores

#: values of the ``emu_masks`` parameter: one mask per negative slot, or one per (positive, negative)
EMU_MASKS = ("shared", "independent")


def mutates(emu):
    """Whether ``emu`` (the estimator's parameter) mutates negatives with coordinate masks."""
    return bool(emu) and not (isinstance(emu, str) and emu in ("mixup", "ls_only"))


def resolve_emu_masks(emu_masks, emu):
    """``emu_masks`` as the trainer uses it: ``'shared'`` wherever no mask is drawn (``emu`` False,
    ``'mixup'``, ``'ls_only'``), so that those keep their fast paths."""
    return "independent" if emu_masks == "independent" and mutates(emu) else "shared"


def emu_mask(shape, mutation_ratio, generator, device):
    """Boolean mask, True where the coordinate is copied from the positive (``mutation_ratio`` to 2**-16)."""
    return bernoulli_mask(shape, mutation_ratio, generator, device)


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
    mask : bool Tensor of shape (C, c, N, de) (one per positive and negative), (C, N, de) or (N, de)
        (shared by the positives of a chunk, and by the chunks)

    Returns
    -------
    Tensor of shape (C, c, N, de)
    """
    mask = mask if mask.dim() == 4 else mask.expand(neg.shape).unsqueeze(1)
    return _towards(pos.unsqueeze(2), neg.unsqueeze(1), mask.to(neg.dtype))


def _bilinear_mutated(q, pos, neg, mask):
    """Bilinear scores ``(C, c, N)`` against mutated candidates: ``q . ((1 - m) * neg) + (q * pos) . m``."""
    # a product with the bool mask: one pass forward and one backward, where masked_fill copies and
    # then fills (and again for its gradient): 25-33 against 63-70 ms on 1vsAll's (14,505, 200) table
    kept = neg * ~mask
    return torch.bmm(q, kept.transpose(1, 2)) + torch.matmul(q * pos, mask.to(neg.dtype).transpose(-1, -2))


def mutated_scores(model, q, pos, neg, mask, masked_distance=None):
    """Scores ``(C, c, N)`` of the queries against EMU-mutated negatives.

    ``mask`` has shape ``(C, N, de)`` or ``(N, de)`` (one per negative slot), or
    ``(C, c, N, de)`` (one per positive and negative, ``emu_masks='independent'``).
    Slot masks take the fast paths: models with a ``mutated_pairwise`` (TransE,
    whose distance is a sum over coordinates; RotatE and HAKE, whose fused
    distance never materialises the candidates) use it, with ``masked_distance``
    (:func:`~kgestimator.training.masked_distance_fn`) when given; bilinear
    models two matrix products; other distance models, and every per-positive
    mask, go through :func:`materialised_scores`.
    """
    if mask.dim() == 4:
        # a mask per positive breaks the factorisations the fast paths rest on
        return materialised_scores(model, q, pos, neg, mask)
    if hasattr(model, "mutated_pairwise"):
        return model.mutated_pairwise(q, pos, neg, mask, masked_distance)
    if model.bilinear:
        return _bilinear_mutated(q, pos, neg, mask)
    return materialised_scores(model, q, pos, neg, mask)


def materialised_scores(model, q, pos, neg, mask):
    """``model.match`` of the queries against mutated candidates materialised in cache-sized row blocks.

    The reference form of :func:`mutated_scores` for distance models (the tests
    hold the fused RotatE/HAKE distance to it), and the only form that takes a
    per-positive mask ``(C, c, N, de)``, which is then cut into row blocks with
    the queries and positives; a slot mask ``(C, N, de)`` or ``(N, de)`` goes with
    the chunk's negatives.
    """
    if mask.dim() == 4:
        def per_positive(q, pos, mask, neg):
            return model.match(q.unsqueeze(2), mutate(pos, neg, mask))

        return blocked(per_positive, q, neg, per_row=(pos, mask), per_chunk=(neg,))

    def per_slot(q, pos, neg, mask):
        return model.match(q.unsqueeze(2), mutate(pos, neg, mask))

    return blocked(per_slot, q, neg, per_row=(pos,), per_chunk=(neg, mask.expand(neg.shape)))


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
               masked_distance=None, masks="shared"):
    """Scores ``(C, c, N)`` of the EMU term's negatives in the chunked layout, for ``emu=mode``.

    ``neg_scores`` are the scores of ``neg`` when already computed (unmutated
    negatives), else None; ``pairwise`` scores queries against shared candidates.
    ``masks`` (:data:`EMU_MASKS`): ``'shared'`` draws one ``(N, de)`` mask for the
    step, ``'independent'`` one ``(C, c, N, de)`` mask, a Bernoulli per positive,
    negative and coordinate.
    """
    if mode == "mixup":
        if neg_scores is None and model.bilinear:
            neg_scores = pairwise(q, neg)
        lam = mixup_weights(neg.shape[:2], generator, neg.device)
        return mixup_scores(model, q, pos, neg, neg_scores, pos_scores, lam)
    if mode == "ls_only":
        return neg_scores if neg_scores is not None else pairwise(q, neg)
    shape = neg.shape[1:] if masks == "shared" else (*q.shape[:2], *neg.shape[1:])
    mask = emu_mask(shape, mutation_ratio, generator, neg.device)
    return mutated_scores(model, q, pos, neg, mask, masked_distance)


def emu_candidates(mode, pos, neg, mutation_ratio, generator):
    """The EMU term's candidates ``(B, N, d)`` from aligned positives ``(B, 1, d)`` and negatives ``(B, N, d)``.

    The path-based models' counterpart of :func:`emu_scores`: one positive row per
    negative row, no chunks, so the candidates are materialised.
    """
    return candidates_with(mode, pos, neg, candidate_noise(mode, neg.shape, mutation_ratio, generator, neg.device))


def candidate_noise(mode, shape, mutation_ratio, generator, device):
    """The random part of :func:`emu_candidates` for negatives of ``shape``: a mask, MIXUP weights or None.

    Drawn once per step, so a step that scores its queries in several passes
    slices one draw (:func:`candidates_with`) and mutates as one pass would.
    """
    if mode == "mixup":
        return mixup_weights(shape[:2], generator, device).unsqueeze(-1)
    if mode == "ls_only":
        return None
    return emu_mask(shape, mutation_ratio, generator, device)


def candidates_with(mode, pos, neg, noise):
    """:func:`emu_candidates` with its ``noise`` (:func:`candidate_noise`, sliced like ``neg``) given."""
    if mode == "mixup":
        return _mixed(pos, neg, noise)
    if mode == "ls_only":
        return neg
    return _towards(pos, neg, noise.to(neg.dtype))


#: elements of one ``(coordinates, B)`` block of :class:`_MaskedTableScores` (4 MB of float32)
MASKED_BLOCK_ELEMENTS = 1 << 20


def _masked_positions(table, ids, k, j):
    """Blocks ``(k, j, positions)`` of the masked entries ``(k[p], j[p])``.

    ``positions[p, b]`` is where coordinate ``k[p]`` of row ``ids[b, j[p]]`` sits in the
    flattened transposed table: the entries are sorted by coordinate, so one coordinate's
    column of ``n_entities`` values stays in cache while the ``B`` positives read it (a
    row-major gather of the same values took 3x longer). Positions are int32 where they fit.
    """
    n_entities = table.shape[0]
    narrow = table.numel() <= torch.iinfo(torch.int32).max
    ids_t = ids.t().to(torch.int32 if narrow else torch.int64).contiguous()
    step = max(1, MASKED_BLOCK_ELEMENTS // max(1, ids.shape[0]))
    return [(k[s:s + step], j[s:s + step],
             ids_t.index_select(0, j[s:s + step]).add_(k[s:s + step].to(ids_t.dtype).unsqueeze(1) * n_entities))
            for s in range(0, k.shape[0], step)]


class _MaskedTableScores(torch.autograd.Function):
    """``out[b, j] = sum_k M[j, k] q[b, k] table[ids[b, j], k]`` for a 0/1 mask ``M`` ``(N, d)``.

    ``M`` comes as its entries' coordinates ``k`` and slots ``j``, sorted by ``k``. The
    ``(B, N, d)`` candidate rows are never gathered: each masked entry reads one value of
    the transposed table per positive, so a sparse mask (EMU's copied coordinates at
    DistMult's 6%) costs a fraction of a dense product. The backward pass accumulates
    with ``index_add_``, which is deterministic on CPU.
    """

    @staticmethod
    def forward(ctx, q, table, ids, k, j):
        table_t, q_t = table.t().contiguous().view(-1), q.t().contiguous()
        blocks = _masked_positions(table, ids, k, j)
        out = q.new_zeros(ids.shape[1], ids.shape[0])
        for kb, jb, at in blocks:
            out.index_add_(0, jb, table_t.index_select(0, at.view(-1)).view(at.shape) * q_t.index_select(0, kb))
        ctx.save_for_backward(table_t, q_t)
        ctx.blocks, ctx.shape = blocks, table.shape
        return out.t()

    @staticmethod
    def backward(ctx, grad):
        table_t, q_t = ctx.saved_tensors
        grad_t = grad.t().contiguous()
        g_q = torch.zeros_like(q_t) if ctx.needs_input_grad[0] else None
        g_table = torch.zeros_like(table_t) if ctx.needs_input_grad[1] else None
        for kb, jb, at in ctx.blocks:
            g = grad_t.index_select(0, jb)
            if g_q is not None:
                g_q.index_add_(0, kb, g * table_t.index_select(0, at.view(-1)).view(at.shape))
            if g_table is not None:
                g_table.index_add_(0, at.view(-1), (g * q_t.index_select(0, kb)).view(-1))
        g_q = None if g_q is None else g_q.t()
        g_table = None if g_table is None else g_table.view(ctx.shape[1], ctx.shape[0]).t()
        return g_q, g_table, None, None, None


def sampled_mutated_scores(q, table, ids, pos, mask, plain=None):
    """EMU scores ``(B, 1, N)`` of per-positive negative ids of a bilinear model, from the table.

    ``q . (m * z_pos + (1 - m) * z_neg)`` is ``q . z_neg - sum_{m = 1} q z_neg + (q * z_pos) . m``:
    the plain scores (``plain``, ``(B, 1, N)``, when the vanilla term already has them),
    minus the copied coordinates' share, plus a ``(B, d) x (d, N)`` product. Where more
    than half the coordinates are copied, the kept ones are summed instead. Either way
    no ``(B, N, d)`` candidate tensor exists (FB15k-237, B=1000, N=256, d=100: 100 MB).

    Parameters
    ----------
    q, pos : Tensor of shape (B, 1, d)
    table : Tensor of shape (n_entities, d)
    ids : LongTensor of shape (B, N)
    mask : bool Tensor of shape (N, d), True where the coordinate is copied from the positive
    plain : Tensor of shape (B, 1, N), optional
    """
    flat = q.reshape(ids.shape[0], -1)
    if (q.dtype not in (torch.float32, torch.float64) or table.dtype != q.dtype
            or torch.is_autocast_enabled(q.device.type)):
        return _bilinear_mutated(q, pos, rows(table, ids), mask)  # the sparse kernels' dtypes only
    copied = torch.matmul(q * pos, mask.to(q.dtype).t())
    if 2 * int(mask.sum()) <= mask.numel():
        if plain is None:
            plain = sampled_scores(flat, table, ids).unsqueeze(1)
        k, j = mask.t().nonzero(as_tuple=True)
        return plain - _MaskedTableScores.apply(flat, table, ids, k, j).unsqueeze(1) + copied
    k, j = (~mask).t().nonzero(as_tuple=True)
    return _MaskedTableScores.apply(flat, table, ids, k, j).unsqueeze(1) + copied


def sampled_emu_scores(mode, model, q, pos, ids, fake, neg_scores, pos_scores, mutation_ratio, generator,
                       pairwise, plain=None):
    """:func:`emu_scores` for per-positive negative ``ids`` ``(B, n_ids)`` of a bilinear model, followed
    by the generated ``fake`` embeddings ``(B, n_gen, de)`` or None, without gathering the ids' rows.

    ``neg_scores`` ``(B, 1, N)`` are the vanilla scores of exactly these negatives when the
    draw is reused, else None; ``plain`` ``(B, 1, n_ids)`` the plain scores of ``ids`` when
    the caller already has them. The random draws (mask, MIXUP weights) are those of
    :func:`emu_scores` on the gathered candidates, in the same order and shapes, so both
    give the same scores for the same generator state.
    """
    table, n = model.entity_table(), ids.shape[1]
    if fake is not None:
        fake = fake.to(q.dtype)
    n_all = n + (0 if fake is None else fake.shape[1])
    if neg_scores is not None:
        plain = neg_scores[..., :n]
    if mode in ("mixup", "ls_only"):
        if neg_scores is None:
            neg_scores = plain if plain is not None else sampled_scores(
                q.reshape(ids.shape[0], -1), table, ids).unsqueeze(1)
            if fake is not None:
                neg_scores = torch.cat([neg_scores, pairwise(q, fake)], -1)
        if mode == "ls_only":
            return neg_scores
        lam = mixup_weights((ids.shape[0], n_all), generator, q.device)
        return mixup_scores(model, q, pos, None, neg_scores, pos_scores, lam)
    mask = emu_mask((n_all, table.shape[1]), mutation_ratio, generator, q.device)
    scores = sampled_mutated_scores(q, table, ids, pos, mask[:n], plain)
    if fake is None:
        return scores
    return torch.cat([scores, _bilinear_mutated(q, pos, fake, mask[n:])], -1)
