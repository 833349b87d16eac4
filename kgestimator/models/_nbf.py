"""NBFNet's fused message passing: the C kernels of ``_nbf.c`` as an autograd Function.

:class:`FusedMessages` computes what :class:`~kgestimator.models.nbfnet._BlockedMessages`
computes, each node's sum, sum of squares, max and min of its messages
``h[src] (*|+) w[rel]`` with its boundary vector as one more message, in one
pass over destination-sorted edges (:class:`CSR`) that never stores a message
(see ``_nbf.c``). The blocked path made about 20 memory-bound passes over
``(block, in-degree, B, d)`` message tensors per layer; this one reads each
edge's ``h[src]`` and ``w[rel]`` rows once forward and once backward. Where
no C compiler works, :func:`available` says so (with a warning, once) and
NBFNet keeps the blocked path.
"""

from typing import NamedTuple

import torch

from . import _native

_warned = set()


class CSR(NamedTuple):
    """In-edges by destination: node ``v`` receives edges ``[rowptr[v], rowptr[v + 1])`` of ``src`` / ``rel``."""

    rowptr: torch.Tensor
    src: torch.Tensor
    rel: torch.Tensor


def csr(src, rel, dst, n_nodes):
    """The :class:`CSR` of edges ``(src, rel, dst)`` already sorted by ``dst`` (as ``NBFNet`` keeps them)."""
    rowptr = torch.zeros(n_nodes + 1, dtype=torch.long, device=dst.device)
    torch.cumsum(torch.bincount(dst, minlength=n_nodes), 0, out=rowptr[1:])
    return CSR(rowptr, src.long().contiguous(), rel.long().contiguous())


def supports(*tensors):
    """Whether the kernels take these tensors (CPU, float32 or float64, one dtype); no build."""
    return _native.supports(*tensors)


def available(*tensors):
    """Whether the kernels run for these tensors: they suit them and the library builds (else a warning, once)."""
    return _native.usable("nbf", _warned, "NBFNet message-passing kernels", "the blocked PyTorch path", *tensors)


def _query_ranges(B, work):
    # a thread takes whole queries (its writes to g_h[:, b] and g_w[:, b] are then its own);
    # below about 200k message coordinates per thread a thread costs more than it saves
    return _native.split(B, min(torch.get_num_threads(), max(1, work // 200_000)))


def _ptr(t):
    return 0 if t is None else t.data_ptr()


class FusedMessages(torch.autograd.Function):
    """``(total, sq_total, high, low)`` ``(n, B, d)`` of the messages at each node; ``pna=False``: total only.

    Inputs as :class:`~kgestimator.models.nbfnet._BlockedMessages`: ``h`` and
    ``boundary`` ``(n, B, d)``, ``w`` ``(R, B, d)`` or ``(R, 1, d)``, ``graph``
    a :class:`CSR`, ``distmult`` the message (else TransE's ``+``). Saved for
    the backward pass: the inputs, the extremes and their tie counts, all
    ``O(n B d)``.
    """

    @staticmethod
    def forward(ctx, h, w, boundary, graph, pna, distmult):
        h, w, boundary = h.contiguous(), w.contiguous(), boundary.contiguous()
        n, B, d = h.shape
        per_query = int(w.shape[1] == B and B > 1)
        outs = [torch.empty_like(boundary) for _ in range(6 if pna else 1)]
        total, sq, high, low, cnt_hi, cnt_lo = outs + [None] * (6 - len(outs))
        fn = getattr(_native.library("nbf"), f"nbf_forward_{_native._SUFFIX[h.dtype]}")
        head = [*map(_ptr, graph), _ptr(h), _ptr(w), _ptr(boundary), *map(_ptr, outs + [None] * (6 - len(outs)))]
        flags = [B, d, int(pna), int(distmult), per_query, 0, n]
        _native.run_parts(lambda b0, b1: fn(*head, *flags, b0, b1), _query_ranges(B, graph.src.numel() * B * d))
        ctx.graph, ctx.pna, ctx.distmult, ctx.per_query = graph, pna, distmult, per_query
        if pna:
            ctx.save_for_backward(h, w, boundary, high, low, cnt_hi, cnt_lo)
            return total, sq, high, low
        ctx.save_for_backward(h, w, boundary)
        return total, None, None, None

    @staticmethod
    def backward(ctx, g_total, g_sq=None, g_high=None, g_low=None):
        h, w, boundary, *extremes = ctx.saved_tensors
        n, B, d = h.shape
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        zeros = None

        def given(g):
            nonlocal zeros
            if g is None:
                zeros = torch.zeros_like(boundary) if zeros is None else zeros
                return zeros
            return g.contiguous()

        g_total = given(g_total)
        g_sq2 = s_hi = s_lo = high = low = None
        if ctx.pna:
            high, low, cnt_hi, cnt_lo = extremes
            # each tied message (and the boundary) gets an even share of the extreme's gradient
            g_sq2, s_hi, s_lo = 2.0 * given(g_sq), given(g_high) / cnt_hi, given(g_low) / cnt_lo
        g_h = torch.zeros_like(h) if need_h else None
        g_boundary = torch.empty_like(boundary)
        ranges = _query_ranges(B, ctx.graph.src.numel() * B * d)
        # per-query relation vectors: query ranges write disjoint slices of one buffer; shared
        # ones: a buffer per range, summed in a fixed order (reproducible at a thread count)
        g_ws = [torch.zeros_like(w) for _ in (ranges if not ctx.per_query else ranges[:1])] if need_w else None
        fn = getattr(_native.library("nbf"), f"nbf_backward_{_native._SUFFIX[h.dtype]}")
        head = [*map(_ptr, ctx.graph), _ptr(h), _ptr(w), _ptr(boundary), _ptr(high), _ptr(low), _ptr(g_total),
                _ptr(g_sq2), _ptr(s_hi), _ptr(s_lo), _ptr(g_h)]
        flags = [B, d, int(ctx.pna), int(ctx.distmult), ctx.per_query, 0, n]

        def call(p, b0, b1):
            g_w = None if g_ws is None else g_ws[0 if ctx.per_query else p]
            fn(*head, _ptr(g_w), _ptr(g_boundary), *flags, b0, b1)

        _native.run_parts(call, [(p, b0, b1) for p, (b0, b1) in enumerate(ranges)])
        g_w = None if g_ws is None else sum(g_ws[1:], g_ws[0])
        return g_h, g_w, g_boundary if need_b else None, None, None, None


def aggregate(h, w, boundary, graph, pna, distmult):
    """:class:`FusedMessages` of a layer (callers check :func:`available` first)."""
    return FusedMessages.apply(h, w, boundary, graph, pna, distmult)
