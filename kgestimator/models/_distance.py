"""Fused distances of RotatE and HAKE, for vanilla and EMU-mutated candidates, without ``(c, N, d)`` tensors.

In the chunked layout (queries ``(C, c, wq)``, candidates shared by a chunk
``(C, N, wc)``, ``d`` coordinates):

* RotatE: ``P = sum_k |q_k - x_k|`` over complex coordinates ``[re | im]``;
* HAKE: ``P = sum_k |sin(alpha_k - beta_k)|`` from the cosines and sines of the
  query's and the candidate's half phases (``[cos | sin | y | x]`` and
  ``[cos | sin | modulus]``: HAKE's ``|sin((a - b) / 2)|`` as
  ``|sin(alpha) cos(beta) - cos(alpha) sin(beta)|``, a product whose
  derivative stays exact where ``a ~ b``) and ``M = sum_k (x_mod,k q_x,k - q_y,k)^2``
  (its modulus distance is ``sqrt(M)``);

where ``x`` is the candidate or, for EMU, per coordinate the row's positive
wherever the mask is set (the mutated candidate ``m * pos + (1 - m) * neg``,
never materialised). :class:`_Distance` computes them with the closed-form
gradient, recomputed in the backward pass: natively (``_native``, C kernels
built at run time) or, where no compiler works, in eager blocks of at most
:data:`~kgestimator.models._base.BLOCK_ELEMENTS` elements, whose temporaries
autograd never keeps. With EMU's one mask per step and chunks of at least
:data:`SPARSE_MIN_ROWS` rows, the native path visits only the coordinates
whose term depends on the candidate (:func:`_sparse_masked`).
``RotatE.match``/``HAKE.match`` and ``mutation.materialised_scores`` are the
reference formulas; the tests hold every path to them.
"""


import torch

from . import _native
from ._base import BLOCK_ELEMENTS

#: rows per chunk from which EMU's native scoring is vectorised over rows (``_Sparse``); below, over candidates
SPARSE_MIN_ROWS = 16

_warned = set()


def use_native(native, *tensors):
    """Whether the C kernels run: requested, the tensors suit them, and the library builds (else a warning, once)."""
    return bool(native) and _native.usable("distance", _warned, "RotatE/HAKE distance kernels",
                                           "the eager distance", *tensors)


def _blocks(C, c, N, d):
    """``(chunks, rows, candidates)`` slices covering ``(C, c, N)`` in blocks of about ``BLOCK_ELEMENTS`` x ``d``."""
    tile = min(N, max(1, BLOCK_ELEMENTS // d))
    rows = max(1, BLOCK_ELEMENTS // (tile * d))
    for j in range(0, N, tile):
        js = slice(j, j + tile)
        if rows >= c:  # several whole chunks per block (independent negatives: c = 1)
            step = rows // c
            for i in range(0, C, step):
                yield slice(i, i + step), slice(None), js
        else:
            for i in range(C):
                for r in range(0, c, rows):
                    yield slice(i, i + 1), slice(r, r + rows), js


class _Block:
    """One block's candidate coordinates ``(k, rows | 1, n, d)`` per part, with EMU's positives where masked.

    ``parts`` are ``(candidate columns, mask columns)``; the mask never depends
    on the row, so it broadcasts as ``(k | 1, 1, n, d)``.
    """

    def __init__(self, cand, pos, mask, cs, rs, js):
        self.cand, self.pos, self.mask, self.cs, self.rs, self.js = cand, pos, mask, cs, rs, js

    def mask_of(self, cols):
        m = self.mask[self.js, cols] if self.mask.dim() == 2 else self.mask[self.cs, self.js, cols]
        return m.unsqueeze(-3)

    def coords(self, cols, mask_cols):
        x = self.cand[self.cs, self.js, cols].unsqueeze(1)
        if self.mask is None:
            return x
        return torch.where(self.mask_of(mask_cols), self.pos[self.cs, self.rs, cols].unsqueeze(2), x)

    def add_grad(self, grad, g_cand, g_pos, cols, mask_cols):
        """Add ``grad`` ``(k, rows, n, d)`` of these coordinates: to the candidates, and to the positives where masked."""
        g = grad.sum(1)
        if self.mask is None:
            g_cand[self.cs, self.js, cols] += g
            return
        m = self.mask_of(mask_cols).to(grad.dtype)
        g_pos[self.cs, self.rs, cols] += (grad * m).sum(2)
        g_cand[self.cs, self.js, cols] += g.mul_(1.0 - m.squeeze(-3))


def _parts(hake, d):
    """Column slices: the two phase/complex parts, HAKE's modulus; and the mask columns of each."""
    one, two, three = slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d)
    return (one, two, three), ((one, one, two) if hake else (one, two, None))


def _terms(kind, q, blk, d):
    """One block's per-coordinate terms: RotatE ``(dr, di, |.|^2)``, HAKE ``(sin(alpha - beta), (x, e))``."""
    qb = q[blk.cs, blk.rs].unsqueeze(2)
    cols, mcols = _parts(kind == "hake", d)
    u, v = blk.coords(cols[0], mcols[0]), blk.coords(cols[1], mcols[1])
    if kind == "hake":
        x = blk.coords(cols[2], mcols[2])
        return qb[..., d:2 * d] * u - qb[..., :d] * v, (x, x * qb[..., 3 * d:] - qb[..., 2 * d:3 * d]), (u, v)
    dr, di = qb[..., :d] - u, qb[..., d:2 * d] - v
    sq = dr * dr
    sq.addcmul_(di, di).clamp_min_(torch.finfo(sq.dtype).tiny)
    return (dr, di), sq, None


def _eager_forward(kind, q, cand, pos, mask, d):
    C, c, N = q.shape[0], q.shape[1], cand.shape[1]
    out_p = q.new_empty(C, c, N)
    out_m = q.new_empty(C, c, N) if kind == "hake" else None
    for cs, rs, js in _blocks(C, c, N, d):
        first, second, _ = _terms(kind, q, _Block(cand, pos, mask, cs, rs, js), d)
        if kind == "hake":
            out_p[cs, rs, js] = first.abs_().sum(-1)
            out_m[cs, rs, js] = second[1].square_().sum(-1)
        else:
            out_p[cs, rs, js] = second.sqrt_().sum(-1)
    return out_p, out_m


def _eager_backward(kind, grad_p, grad_m, q, cand, pos, mask, d):
    C, c, N = q.shape[0], q.shape[1], cand.shape[1]
    g_q, g_cand = torch.zeros_like(q), torch.zeros_like(cand)
    g_pos = None if pos is None else torch.zeros_like(pos)
    cols, mcols = _parts(kind == "hake", d)
    for cs, rs, js in _blocks(C, c, N, d):
        blk = _Block(cand, pos, mask, cs, rs, js)
        first, second, uv = _terms(kind, q, blk, d)
        g = grad_p[cs, rs, js].unsqueeze(-1)
        if kind == "hake":
            sg = first.sign_().mul_(g)
            qb = q[cs, rs].unsqueeze(2)
            g_q[cs, rs, :d] -= (sg * uv[1]).sum(2)
            g_q[cs, rs, d:2 * d] += (sg * uv[0]).sum(2)
            grads = (sg * qb[..., d:2 * d], sg.mul_(qb[..., :d]).neg_())
        else:
            w = second.rsqrt_().mul_(g)
            grads = (first[0].mul_(w), first[1].mul_(w))
            g_q[cs, rs, :d] += grads[0].sum(2)
            g_q[cs, rs, d:2 * d] += grads[1].sum(2)
            grads = (grads[0].neg_(), grads[1].neg_())
        for grad, col, mcol in zip(grads, cols, mcols):
            blk.add_grad(grad, g_cand, g_pos, col, mcol)
        if kind == "hake":
            x, e = second
            h = e.mul_(grad_m[cs, rs, js].unsqueeze(-1) * 2)
            g_q[cs, rs, 2 * d:3 * d] -= h.sum(2)
            g_q[cs, rs, 3 * d:] += (h * x).sum(2)
            blk.add_grad(h.mul_(q[cs, rs, 3 * d:].unsqueeze(2)), g_cand, g_pos, cols[2], mcols[2])
    return g_q, g_cand, g_pos


def _native_layout(cand, mask):
    """Candidates transposed to ``(C, wc, N)``, the mask to ``(2d, N)`` or ``(C, 2d, N)`` 0/1 values, its chunk stride."""
    cand_t = cand.transpose(1, 2).contiguous()
    if mask is None:
        return cand_t, None, 0
    mask_t = mask.transpose(-1, -2).to(cand.dtype, memory_format=torch.contiguous_format)
    return cand_t, mask_t, 0 if mask.dim() == 2 else mask_t.shape[1] * mask_t.shape[2]


def _dense_native(kind, q, cand, pos, mask, d):
    """``distance_forward`` of ``_distance.c`` (vectorised over candidates), and its backward as a closure."""
    hake = kind == "hake"
    cand_t, mask_t, stride = _native_layout(cand, mask)
    out_p = q.new_empty(q.shape[0], q.shape[1], cand.shape[1])
    out_m = torch.empty_like(out_p) if hake else None
    _native.forward(hake, q, cand_t, pos, mask_t, stride, out_p, out_m, d)

    def backward(grad_p, grad_m):
        g_q, g_t, g_pos = _native.backward(hake, grad_p, grad_m, q, cand_t, pos, mask_t, stride, d)
        return g_q, g_t.transpose(1, 2), g_pos

    return out_p, out_m, backward


def _kinds(kind, n_kinds):
    """Per candidate, its coordinates ordered by ``kind`` and the ends of the first ``n_kinds`` groups (int32)."""
    order = torch.argsort(kind, dim=1, stable=True).to(torch.int32).contiguous()
    ends = torch.stack([(kind <= k).sum(1) for k in range(n_kinds)], 1).to(torch.int32).contiguous()
    return order, ends


def _rows_last(x, width):
    """``x`` ``(C, a, b)`` as ``(C, b, width)``, zero-padded: the row-vectorised kernels take whole vectors of rows."""
    out = x.new_zeros(x.shape[0], x.shape[2], width)
    out[..., :x.shape[1]] = x.transpose(1, 2)
    return out


def _sparse_lists(kind, mask, d):
    first, second = mask[:, :d].to(torch.int8), mask[:, d:].to(torch.int8)
    if kind == "hake":
        order, ends = _kinds(first, 1)
        order2, ends2 = _kinds(second, 1)
        return order, ends.expand(-1, 3).contiguous(), order2, ends2[:, 0].contiguous()
    return _kinds(first + 2 * second, 3) + (None, None)


def _sparse_native(kind, q, cand, pos, mask, d):
    """``sparse_forward`` of ``_distance.c``: EMU's candidate-dependent terms, vectorised over rows, and its backward."""
    hake, (C, c), N = kind == "hake", q.shape[:2], cand.shape[1]
    width = -(-c // 16) * 16
    q_t, cand = _rows_last(q, width), cand.contiguous()
    dp_t = None if hake else _rows_last(q - pos, width)
    lists = _sparse_lists(kind, mask, d)
    out_p = q.new_empty(C, N, width)
    out_m = torch.empty_like(out_p) if hake else None
    _native.sparse_forward(hake, q_t, dp_t, cand, lists, out_p, out_m, d)

    def backward(grad_p, grad_m):
        g_p_t, g_m_t = _rows_last(grad_p, width), None if grad_m is None else _rows_last(grad_m, width)
        g_q, g_dp, g_cand = _native.sparse_backward(hake, g_p_t, g_m_t, q_t, dp_t, cand, lists, d)
        g_q = g_q[..., :c].transpose(1, 2)
        if hake:
            return g_q, g_cand, torch.zeros_like(pos)
        g_dp = g_dp[..., :c].transpose(1, 2)
        return g_q + g_dp, g_cand, -g_dp

    out_p = out_p[..., :c].transpose(1, 2)
    return out_p, None if out_m is None else out_m[..., :c].transpose(1, 2), backward


def _copied_terms(kind, q, pos, d):
    """Terms of coordinates copied whole from the positive, ``(C, c, d)`` each, and their backward.

    RotatE ``|q_k - p_k|``; HAKE ``|sin(alpha_k - beta_k)|`` and ``(p_k x_k - y_k)^2``.
    """
    if kind == "hake":
        ca, sa, y, x = q[..., :d], q[..., d:2 * d], q[..., 2 * d:3 * d], q[..., 3 * d:]
        cp, sp, pm = pos[..., :d], pos[..., d:2 * d], pos[..., 2 * d:]
        val, e = sa * cp - ca * sp, pm * x - y

        def backward(g_phase, g_mod):
            sg, h = val.sign().mul_(g_phase), e.mul(g_mod).mul_(2)
            g_q = torch.cat([-sg * sp, sg * cp, -h, h * pm], -1)
            return g_q, torch.cat([sg * sa, -sg * ca, h * x], -1)

        return val.abs(), e.square(), backward
    dp = q - pos
    whole = (dp[..., :d].square() + dp[..., d:].square()).clamp_min_(torch.finfo(q.dtype).tiny).sqrt_()

    def backward(g_whole, _):
        w = (g_whole / whole).repeat(1, 1, 2).mul_(dp)
        return w, -w

    return whole, None, backward


def _sparse_run(kind, q, cand, pos, mask, d):
    """EMU's distances: visited coordinates natively, coordinates copied whole by ``(C, c, d) x (d, N)`` products.

    At HAKE's mutation ratio (0.87) the kernels visit an eighth of the coordinates.
    """
    out_p, out_m, kernel_backward = _sparse_native(kind, q, cand, pos, mask, d)
    first, second = mask[:, :d], mask[:, d:]
    both = (first if kind == "hake" else first & second).to(q.dtype)
    copied_p, copied_m, copied_backward = _copied_terms(kind, q, pos, d)
    out_p = out_p + copied_p @ both.t()
    mod = second.to(q.dtype) if kind == "hake" else None
    if kind == "hake":
        out_m = out_m + copied_m @ mod.t()

    def backward(grad_p, grad_m):
        g_q, g_cand, g_pos = kernel_backward(grad_p, grad_m)
        c_q, c_pos = copied_backward(grad_p @ both, None if mod is None else grad_m @ mod)
        return g_q + c_q, g_cand, g_pos + c_pos

    return out_p, out_m, backward


def _run(kind, q, cand, pos, mask, native):
    """``(P, M or None, backward)`` of packed inputs (module docstring); ``backward(gP, gM) -> (g_q, g_cand, g_pos)``."""
    q, cand = q.contiguous(), cand.contiguous()
    pos = None if pos is None else pos.contiguous()
    d = cand.shape[2] // (3 if kind == "hake" else 2)
    if native and mask is not None and mask.dim() == 2 and q.shape[1] >= SPARSE_MIN_ROWS:
        return _sparse_run(kind, q, cand, pos, mask, d)
    if native:
        return _dense_native(kind, q, cand, pos, mask, d)
    out_p, out_m = _eager_forward(kind, q, cand, pos, mask, d)

    def backward(grad_p, grad_m):
        return _eager_backward(kind, grad_p, grad_m, q, cand, pos, mask, d)

    return out_p, out_m, backward


class _RotatE(torch.autograd.Function):
    """RotatE's ``P`` ``(C, c, N)`` of queries ``(C, c, 2d)`` against candidates ``(C, N, 2d)`` (EMU: ``pos``, ``mask``)."""

    @staticmethod
    def forward(ctx, q, cand, pos, mask, native):
        with torch.autocast(q.device.type, enabled=False):  # distances stay in the inputs' precision
            out, _, ctx.run_backward = _run("rotate", q, cand, pos, mask, native)
        return out

    @staticmethod
    def backward(ctx, grad):
        g_q, g_cand, g_pos = ctx.run_backward(grad.contiguous(), None)
        return g_q, g_cand, g_pos, None, None


class _HAKE(torch.autograd.Function):
    """HAKE's distance ``w_p P + w_m sqrt(M)`` ``(C, c, N)`` from the model's own rows.

    Queries ``(C, c, 3d)`` ``[phase | y | x]``, candidates and positives
    ``(C, ., 2d)`` ``[phase | modulus]``; ``weights`` ``(2,)`` the phase and
    modulus weights, ``scale`` the factor from raw phase to half angle. The
    half-angle cosines and sines and the weighting happen inside, so autograd
    records one node.
    """

    @staticmethod
    def forward(ctx, q, cand, pos, mask, weights, scale, native):
        d = cand.shape[-1] // 2
        packs = [_pack_half(x, d, scale) for x in (q, cand, pos) if x is not None]
        with torch.autocast(q.device.type, enabled=False):  # distances stay in the inputs' precision
            out_p, out_m, ctx.run_backward = _run("hake", *packs[:2], packs[2] if pos is not None else None, mask,
                                                  native)
        root = out_m.clamp_min_(torch.finfo(out_m.dtype).tiny).sqrt_()
        ctx.save_for_backward(weights)
        ctx.parts, ctx.packs, ctx.d, ctx.scale = (out_p, root), packs, d, scale
        return torch.addcmul(out_p * weights[0], root, weights[1])

    @staticmethod
    def backward(ctx, grad):
        (weights,), (out_p, root), d = ctx.saved_tensors, ctx.parts, ctx.d
        flat = grad.reshape(-1)
        g_weights = torch.stack([flat.dot(out_p.reshape(-1)), flat.dot(root.reshape(-1))])
        # d sqrt(M) / dM, zero where M was clamped (a zero modulus distance: vector_norm's convention)
        g_m = torch.div(grad, root).mul_(weights[1] * 0.5).masked_fill_(root <= torch.finfo(root.dtype).tiny ** 0.5, 0)
        grads = ctx.run_backward((grad * weights[0]).contiguous(), g_m)
        raw = [None if g is None else _unpack_half(g, p, d, ctx.scale) for g, p in zip(grads, ctx.packs + [None])]
        return raw[0], raw[1], raw[2] if len(ctx.packs) == 3 else None, None, g_weights.view_as(weights), None, None


def _pack_half(x, d, scale):
    """Rows ``[phase (d) | rest]`` -> ``[cos | sin | rest]`` of the half angles ``phase * scale`` (no autograd)."""
    out = x.new_empty(*x.shape[:-1], x.shape[-1] + d)
    half = x[..., :d] * scale
    torch.cos(half, out=out[..., :d])
    torch.sin(half, out=out[..., d:2 * d])
    out[..., 2 * d:] = x[..., d:]
    return out


def _unpack_half(grad, pack, d, scale):
    """The gradient of raw rows ``[phase | rest]`` from that of their pack ``[cos | sin | rest]``."""
    out = grad.new_empty(*grad.shape[:-1], grad.shape[-1] - d)
    phase = torch.mul(pack[..., :d], grad[..., d:2 * d], out=out[..., :d])
    phase.addcmul_(pack[..., d:2 * d], grad[..., :d], value=-1).mul_(scale)
    out[..., d:] = grad[..., 2 * d:]
    return out


def _prepared(native, mask, *tensors):
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.bool()
    return use_native(native, *(t for t in tensors if t is not None)), mask


def rotate_distance(q, cand, pos=None, mask=None, native=False):
    """RotatE's ``P = sum_k |q_k - x_k|`` ``(C, c, N)`` (module docstring).

    Parameters
    ----------
    q : Tensor of shape (C, c, 2d)
    cand : Tensor of shape (C, N, 2d)
    pos, mask : Tensors of shapes (C, c, 2d) and (N, 2d) or (C, N, 2d), optional
        EMU: the positives and where (True) a coordinate is copied from them.
    native : bool
        Use the C kernels where they can be built and take the tensors; else eager blocks.
    """
    native, mask = _prepared(native, mask, q, cand, pos)
    return _RotatE.apply(q, cand, pos, mask, native)


def hake_distance(q, cand, weights, scale, pos=None, mask=None, native=False):
    """HAKE's ``w_p sum_k |sin((a_k - b_k) / 2)| + w_m ||x_mod q_x - q_y||`` ``(C, c, N)``.

    Parameters
    ----------
    q : Tensor of shape (C, c, 3d)
        ``[phase | y | x]`` (``HAKE.query``).
    cand : Tensor of shape (C, N, 2d)
        ``[phase | modulus]``.
    weights : Tensor of shape (2,)
        The phase and modulus weights.
    scale : float
        Raw phase to half angle (``pi / rho / 2``).
    pos, mask : Tensors of shapes (C, c, 2d) and (N, 2d) or (C, N, 2d), optional
        EMU: the positives and where (True) a coordinate is copied from them.
    native : bool
        Use the C kernels where they can be built and take the tensors; else eager blocks.
    """
    native, mask = _prepared(native, mask, q, cand, pos)
    return _HAKE.apply(q, cand, pos, mask, weights, scale, native)
