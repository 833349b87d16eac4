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

import warnings

import torch

from . import _native
from ._base import BLOCK_ELEMENTS

#: rows per chunk from which EMU's native scoring is vectorised over rows (``_Sparse``); below, over candidates
SPARSE_MIN_ROWS = 16

_warned = set()


def use_native(native, *tensors):
    """Whether the C kernels run: requested, the tensors suit them, and the library builds (else a warning, once)."""
    if not native or not _native.supports(*tensors):
        return False
    if _native.library() is None:
        if "build" not in _warned:
            _warned.add("build")
            warnings.warn(f"The RotatE/HAKE distance kernels could not be built ({_native.error()}); "
                          "continuing with the eager distance.", RuntimeWarning, stacklevel=3)
        return False
    return True


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


class _Distance(torch.autograd.Function):
    """``P`` (HAKE: ``(P, M)``) of queries ``q`` ``(C, c, wq)`` against ``cand`` ``(C, N, wc)`` (module docstring).

    ``pos`` ``(C, c, wc)`` and a boolean ``mask`` ``(N, 2d)`` or ``(C, N, 2d)``
    (True: copied from the positive; RotatE ``[re | im]``, HAKE ``[phase | modulus]``)
    give EMU's mutated candidates.
    """

    @staticmethod
    def forward(ctx, kind, q, cand, pos, mask, native):
        q, cand = q.contiguous(), cand.contiguous()
        pos = None if pos is None else pos.contiguous()
        d = cand.shape[2] // (3 if kind == "hake" else 2)
        ctx.kind, ctx.native, ctx.d = kind, native, d
        if native:
            cand_t, mask_t, stride = _native_layout(cand, mask)
            ctx.save_for_backward(q, cand_t, pos, mask_t)
            ctx.mask_stride = stride
            out_p = q.new_empty(q.shape[0], q.shape[1], cand.shape[1])
            out_m = torch.empty_like(out_p) if kind == "hake" else None
            _native.forward(kind == "hake", q, cand_t, pos, mask_t, stride, out_p, out_m, d)
        else:
            ctx.save_for_backward(q, cand, pos, mask)
            out_p, out_m = _eager_forward(kind, q, cand, pos, mask, d)
        return (out_p, out_m) if kind == "hake" else out_p

    @staticmethod
    def backward(ctx, grad_p, grad_m=None):
        q, cand, pos, mask = ctx.saved_tensors
        grad_p = grad_p.contiguous()
        grad_m = None if grad_m is None else grad_m.contiguous()
        if ctx.native:
            g_q, g_t, g_pos = _native.backward(ctx.kind == "hake", grad_p, grad_m, q, cand, pos, mask,
                                               ctx.mask_stride, ctx.d)
            g_cand = g_t.transpose(1, 2)
        else:
            g_q, g_cand, g_pos = _eager_backward(ctx.kind, grad_p, grad_m, q, cand, pos, mask, ctx.d)
        return None, g_q, g_cand, g_pos, None, None


def _native_layout(cand, mask):
    """Candidates transposed to ``(C, wc, N)``, the mask to ``(2d, N)`` or ``(C, 2d, N)`` 0/1 values, its chunk stride."""
    cand_t = cand.transpose(1, 2).contiguous()
    if mask is None:
        return cand_t, None, 0
    mask_t = mask.transpose(-1, -2).to(cand.dtype, memory_format=torch.contiguous_format)
    return cand_t, mask_t, 0 if mask.dim() == 2 else mask_t.shape[1] * mask_t.shape[2]


def _kinds(kind, n_kinds):
    """Per candidate, its coordinates ordered by ``kind`` and the ends of the first ``n_kinds`` groups (int32)."""
    order = torch.argsort(kind, dim=1, stable=True).to(torch.int32).contiguous()
    ends = torch.stack([(kind <= k).sum(1) for k in range(n_kinds)], 1).to(torch.int32).contiguous()
    return order, ends


class _Sparse(torch.autograd.Function):
    """The candidate-dependent part of EMU's distances (``sparse_forward`` in ``_distance.c``), ``(C, c, N)``.

    ``dp = q - pos`` over RotatE's coordinates (None for HAKE) and the mask's
    coordinate lists (:func:`_sparse_masked`); coordinates copied whole from
    the positive are left to the caller.
    """

    @staticmethod
    def forward(ctx, kind, q, dp, cand, lists):
        hake = kind == "hake"
        q_t, cand = q.transpose(1, 2).contiguous(), cand.contiguous()
        dp_t = None if dp is None else dp.transpose(1, 2).contiguous()
        C, c, N, d = q.shape[0], q.shape[1], cand.shape[1], cand.shape[2] // (3 if hake else 2)
        out_p = q.new_empty(C, N, c)
        out_m = torch.empty_like(out_p) if hake else None
        _native.sparse_forward(hake, q_t, dp_t, cand, lists, out_p, out_m, d)
        ctx.save_for_backward(q_t, dp_t, cand, *lists)
        ctx.hake, ctx.d = hake, d
        return (out_p.transpose(1, 2), out_m.transpose(1, 2)) if hake else out_p.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_p, grad_m=None):
        q_t, dp_t, cand, *lists = ctx.saved_tensors
        grad_p = grad_p.transpose(1, 2).contiguous()
        grad_m = grad_m.transpose(1, 2).contiguous() if ctx.hake else None
        g_q, g_dp, g_cand = _native.sparse_backward(ctx.hake, grad_p, grad_m, q_t, dp_t, cand, lists, ctx.d)
        return None, g_q.transpose(1, 2), None if g_dp is None else g_dp.transpose(1, 2), g_cand, None


def _sparse_masked(kind, q, cand, pos, mask):
    """EMU's distances as :func:`distance` returns them: visited coordinates natively, whole-copied ones by products.

    A coordinate copied whole from the positive contributes a term of the row
    alone (RotatE ``|q_k - p_k|``; HAKE ``|sin(alpha_k - beta_k)|`` and
    ``(p_k x_k - y_k)^2``), so those terms sum with one ``(C, c, d) x (d, N)``
    product per part; at HAKE's mutation ratio (0.87) the kernels visit an
    eighth of the coordinates.
    """
    d = mask.shape[1] // 2
    first, second = mask[:, :d], mask[:, d:]
    tiny = torch.finfo(q.dtype).tiny
    if kind == "hake":
        lists = _kinds(first.to(torch.int8), 1) + _kinds(second.to(torch.int8), 1)
        lists = (lists[0], lists[1].expand(-1, 3).contiguous(), lists[2], lists[3][:, 0].contiguous())
        p_dist, m_dist = _Sparse.apply(kind, q, None, cand, lists)
        copied_phase = (q[..., d:2 * d] * pos[..., :d] - q[..., :d] * pos[..., d:2 * d]).abs()
        copied_mod = (pos[..., 2 * d:] * q[..., 3 * d:] - q[..., 2 * d:3 * d]).square()
        return (p_dist + copied_phase @ first.to(q.dtype).t(), m_dist + copied_mod @ second.to(q.dtype).t())
    dp = q - pos
    lists = _kinds(first.to(torch.int8) + 2 * second.to(torch.int8), 3) + (None, None)
    rest = _Sparse.apply(kind, q, dp, cand, lists)
    whole = (dp[..., :d] * dp[..., :d] + dp[..., d:] * dp[..., d:]).clamp_min(tiny).sqrt()
    return rest + whole @ (first & second).to(q.dtype).t()


def distance(kind, q, cand, pos=None, mask=None, native=False):
    """``P`` (HAKE: ``(P, M)``) ``(C, c, N)``: the fused distances of the module docstring.

    Parameters
    ----------
    kind : {'rotate', 'hake'}
    q : Tensor of shape (C, c, wq)
        RotatE ``[re | im]``; HAKE ``[cos | sin | y | x]`` of the half phases.
    cand : Tensor of shape (C, N, wc)
        RotatE ``[re | im]``; HAKE ``[cos | sin | modulus]``.
    pos, mask : Tensors of shapes (C, c, wc) and (N, 2d) or (C, N, 2d), optional
        EMU: the positives and where (True) a coordinate is copied from them.
    native : bool
        Use the C kernels where they can be built and take the tensors; else eager blocks.
    """
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.bool()
    native = use_native(native, *((q, cand) if pos is None else (q, cand, pos)))
    if native and mask is not None and mask.dim() == 2 and q.shape[1] >= SPARSE_MIN_ROWS:
        return _sparse_masked(kind, q, cand, pos, mask)
    return _Distance.apply(kind, q, cand, pos, mask, native)
