"""Embedding tables and the query/candidate split shared by every scoring model.

Every model answers two questions:

* ``query(anchor, rel, side)``: fold the known entity and the relation into a
  query vector. ``side="tail"`` means the tail is unknown (anchor = head);
  ``side="head"`` means the head is unknown (anchor = tail).
* ``match(q, cand)``: the plausibility of candidate embeddings ``cand`` for the
  query ``q``, broadcasting over leading axes.

Keeping the candidate side a plain embedding (not an id) is what lets EMU mutate
candidates, and it lets ``pairwise`` score a block of queries against a block of
candidates with one matrix product where the interaction is bilinear.
"""

import math
import warnings

import torch
from torch import nn

from .._random import bernoulli_mask, quantised

#: elements per temporary (rows, N, d) block of elementwise scoring. Blocks of a
#: few MB stay in cache and reuse freed heap memory; one (C, c, N, d) tensor of
#: 100 MB goes through mmap and page faults on every step (6x slower measured on
#: 2 CPU cores for TransE with EMU).
BLOCK_ELEMENTS = 1 << 19


def modulus(re, im):
    """``sqrt(re^2 + im^2)`` elementwise, with a zero (not NaN) gradient where it is 0.

    ``sqrt``'s derivative is infinite at 0 and ``inf * 0`` is NaN: one coordinate
    whose query and candidate coincide (or whose squares underflow, as rows that
    only an L3 penalty touches shrink towards 0) would turn a whole step's
    gradient into NaN. Clamping the square at float's smallest normal number
    changes the value by at most 1e-19 and stops the gradient there.
    """
    sq = re * re + im * im
    return sq.clamp_min_(torch.finfo(sq.dtype).tiny).sqrt()


def blocked(fn, q, shared, per_row=(), per_chunk=()):
    """Apply ``fn`` over row blocks of the ``(C, c, ...)`` layout and reassemble ``(C, c, N)``.

    ``fn(q_block, *per_row_blocks, *per_chunk_blocks)`` sees ``(1, rows, ...)``
    slices of ``q`` and ``per_row`` tensors and the ``(1, N, ...)`` slice of the
    ``per_chunk`` tensors; ``shared`` is the ``(C, N, de)`` candidate tensor that
    sets the block size. The blocks are ``split`` views: the backward pass of a
    split concatenates the blocks' gradients once, where each sliced block's
    would write a zero tensor of the whole input (50 blocks of FB15k-237's
    per-positive EMU candidates spent 80% of a step filling zeros).
    """
    C, c = q.shape[0], q.shape[1]
    rows = max(1, BLOCK_ELEMENTS // max(1, shared.shape[1] * shared.shape[2]))
    if rows >= c * C:
        return fn(q, *per_row, *per_chunk)
    if rows >= c:
        # many small chunks (independent negatives, c = 1): blocks of whole chunks
        k = rows // c
        blocks = zip(*[t.split(k, 0) for t in (q, *per_row, *per_chunk)])
        return torch.cat([fn(*args) for args in blocks], 0)
    n_rows = 1 + len(per_row)
    out = []
    for chunk in zip(*[t.split(1, 0) for t in (q, *per_row, *per_chunk)]):
        chunk_args = chunk[n_rows:]
        parts = [fn(*args, *chunk_args) for args in zip(*[t.split(rows, 1) for t in chunk[:n_rows]])]
        out.append(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
    return torch.cat(out, 0) if len(out) > 1 else out[0]


class _Rows(torch.autograd.Function):
    """``table[ids]`` whose backward is one zero table and an ``index_add_``.

    ``embedding``'s own dense backward took 2.0 ms for 4,560 rows of FB15k-237's
    entity table on one CPU core, this one 0.76 ms; on CPU ``index_add_`` is
    deterministic, as reproducible runs need.
    """

    @staticmethod
    def forward(ctx, table, ids):
        flat = ids.reshape(-1)
        ctx.save_for_backward(flat)
        ctx.rows = table.shape[0]
        return table.index_select(0, flat).view(*ids.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad):
        (flat,) = ctx.saved_tensors
        grad = grad.reshape(flat.shape[0], -1)
        out = grad.new_zeros((ctx.rows, grad.shape[1]))
        out.index_add_(0, flat, grad)
        return out, None


def _narrow(ids, n):
    """``ids`` (values below ``n``) in the narrowest integer type that holds them, for sorting: a
    stable sort of 256k FB15k-237 ids took 2 ms as int16, 5 ms as int32, 10 ms as int64 (one CPU core)."""
    if n <= torch.iinfo(torch.int16).max:
        return ids.to(torch.int16)
    return ids.to(torch.int32) if n <= torch.iinfo(torch.int32).max else ids


class _SampledScores(torch.autograd.Function):
    """``(q @ table.T).gather(1, ids)`` without the ``(B, n_entities)`` product or its dense gradient.

    Per-positive negatives ``ids`` ``(B, N)`` of a bilinear model: the forward
    pass is a sampled dense-dense product (``torch.sparse.sampled_addmm``, one
    dot product per negative), the backward pass two sparse-dense products
    with the ``(B, n_entities)`` sparse gradient. FB15k-237, B=1000, N=256,
    d=100, one CPU core: 40 ms forward and backward against 166 ms for the
    full-table product and gather (whose backward multiplies a dense, mostly
    zero, ``(B, n_entities)`` gradient twice).
    """

    @staticmethod
    def forward(ctx, q, table, ids):
        B, N = ids.shape
        crow = torch.arange(0, B * N + 1, N, device=ids.device)
        flat = ids.reshape(-1)
        pattern = torch.sparse_csr_tensor(crow, flat, q.new_zeros(B * N), (B, table.shape[0]),
                                          check_invariants=False)
        ctx.save_for_backward(q, table, ids)
        return torch.sparse.sampled_addmm(pattern, q, table.t(), beta=0.0).values().view(B, N)

    @staticmethod
    def backward(ctx, grad):
        q, table, ids = ctx.saved_tensors
        B, N = ids.shape
        flat, g = ids.reshape(-1), grad.reshape(-1).contiguous()
        g_q = g_table = None
        if ctx.needs_input_grad[0]:
            crow = torch.arange(0, B * N + 1, N, device=ids.device)
            G = torch.sparse_csr_tensor(crow, flat, g, (B, table.shape[0]), check_invariants=False)
            g_q = torch.sparse.mm(G, table)
        if ctx.needs_input_grad[1]:
            # the transposed gradient as CSR over entities: rows of the table, columns of the batch
            order = torch.sort(_narrow(flat, table.shape[0]), stable=True).indices
            crow = torch.zeros(table.shape[0] + 1, dtype=torch.long, device=ids.device)
            crow[1:] = torch.cumsum(torch.bincount(flat, minlength=table.shape[0]), 0)
            rows_of = torch.div(order, N, rounding_mode="floor")
            Gt = torch.sparse_csr_tensor(crow, rows_of, g[order], (table.shape[0], B), check_invariants=False)
            g_table = torch.sparse.mm(Gt, q)
        return g_q, g_table, None


def sampled_scores(q, table, ids):
    """Scores ``(B, N)`` of queries ``q`` ``(B, d)`` against rows ``ids`` ``(B, N)`` of ``table`` (bilinear).

    The sparse kernels where they apply and pay (float32/float64, no autocast,
    a table of more than ``4 N`` rows: ``sampled_addmm`` refuses more samples
    per row than the table has rows, and a small table's product is cheap);
    elsewhere the full-table product and a gather.
    """
    if (table.shape[0] > 4 * ids.shape[1] and q.dtype == table.dtype and q.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(q.device.type)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
            return _SampledScores.apply(q, table, ids)
    return (q @ table.t()).gather(1, ids)


def rows(table, ids, sparse=False):
    """Rows ``ids`` (any shape) of ``table``; sparse gradients when ``sparse``."""
    if sparse:
        return nn.functional.embedding(ids, table, sparse=True)
    return _Rows.apply(table, ids)


class EmbeddingModel(nn.Module):
    """Entity and relation tables, initialised uniformly in ``[-rho, rho]``.

    ``rho = (gamma + 2) / dim`` as in the RotatE-family reference code, so
    ``gamma`` sets the initialisation scale even for models whose score does
    not contain it.

    Parameters
    ----------
    n_entities, n_relations : int
        Table sizes.
    dim : int
        Embedding dimension (complex dimensions for ComplEx/RotatE/HAKE).
    gamma : float
        Margin / initialisation constant.
    generator : torch.Generator, optional
        Seeded generator used for initialisation.
    init_scale : float, optional
        ``rho`` itself, instead of ``(gamma + 2) / dim``: bilinear models whose
        published recipes start from tiny weights (kbc's ComplEx-N3: about
        ``1e-3``) cannot reach them through ``gamma``, which must stay positive.

    Attributes
    ----------
    reciprocal : bool
        Set by :func:`~kgestimator.models.make_model`: the relation table holds
        a second row per relation for its inverse, and head queries ``(?, r, t)``
        are answered as tail queries ``(t, r^-1, ?)`` (see :meth:`orient`).
    entity_dropout, relation_dropout : float
        Dropout of looked-up rows (and of the candidate table in 1vsAll/KvsAll)
        while training; 0 outside ``fit``.
    """

    #: real columns per entity and per relation, as multiples of ``dim``
    entity_factor = 1
    relation_factor = 1
    #: True when ``match(q, c)`` is ``(q * c).sum(-1)``, so blocks of candidates
    #: score with a matrix product and EMU mixes with two of them
    bilinear = False
    #: what ``KGEmbedder`` uses for the parameters left at None
    default_params = {"dim": 100, "batch_size": 1000, "n_negatives": 256}

    reciprocal = False
    entity_dropout = 0.0
    relation_dropout = 0.0
    #: the trainer's seeded generator, so that dropout masks are reproducible
    dropout_generator = None

    def __init__(self, n_entities, n_relations, dim, gamma=24.0, generator=None, init_scale=None):
        super().__init__()
        self.n_entities = int(n_entities)
        self.n_relations = int(n_relations)
        self.dim = int(dim)
        self.register_buffer("gamma", torch.tensor(float(gamma)))
        self.rho = float(init_scale) if init_scale is not None else (float(gamma) + 2.0) / self.dim
        self.entity = nn.Parameter(self._uniform(n_entities, self.entity_factor * dim, generator))
        self.relation = nn.Parameter(
            self._uniform(n_relations, self.relation_factor * dim, generator)
        )

    def _uniform(self, rows, cols, generator):
        table = torch.empty(rows, cols)
        table.uniform_(-self.rho, self.rho, generator=generator)
        return table

    # -- lookup ---------------------------------------------------------------
    #: when True, lookups produce sparse gradients: only the rows a batch touches
    #: are written, so the step cost does not grow with the table size
    sparse = False

    def entities(self, ids):
        return self._drop(rows(self.entity, ids, self.sparse), self.entity_dropout)

    def relations(self, ids):
        return self._drop(rows(self.relation, ids, self.sparse), self.relation_dropout)

    def entity_table(self):
        """The whole entity table as candidates: with dropout while training (LibKGE's ``embed_all``)."""
        return self._drop(self.entity, self.entity_dropout)

    def _drop(self, x, p):
        if not p or not self.training:
            return x
        kept = quantised(1.0 - p)
        if kept == 0.0:  # p within 2**-17 of 1: every coordinate dropped
            return x * 0.0
        keep = bernoulli_mask(x.shape, kept, self.dropout_generator, x.device)
        # scaled by the mask's own keep probability, so the expectation stays x; the product by a
        # bool mask saves only the mask for the backward pass, so the scaling may be in place
        return (x * keep).mul_(1.0 / kept)

    def orient(self, rel, side):
        """``(relation ids, side)`` a query is computed with.

        With reciprocal relations a head query ``(?, r, t)`` is the tail query
        ``(t, r^-1, ?)``: relation ``r + n_relations / 2`` and side ``'tail'``.
        Without, the query keeps its relation and side.
        """
        if self.reciprocal and side == "head":
            return rel + self.n_relations // 2, "tail"
        return rel, side

    def oriented_query(self, anchor, rel_ids, side):
        """``query`` of anchor embeddings and relation ids, through :meth:`orient`."""
        rel_ids, side = self.orient(rel_ids, side)
        return self.query(anchor, self.relations(rel_ids), side)

    # -- interaction ----------------------------------------------------------
    def query(self, anchor, rel, side):
        raise NotImplementedError

    def match(self, q, cand):
        raise NotImplementedError

    def score(self, h, r, t):
        """Plausibility of triples given as embeddings (broadcasting)."""
        return self.match(self.query(h, r, "tail"), t)

    def pairwise(self, q, cand):
        """Scores of every query against every candidate, per block.

        Parameters
        ----------
        q : Tensor of shape (C, c, dq)
        cand : Tensor of shape (C, N, de)

        Returns
        -------
        Tensor of shape (C, c, N)
        """
        if self.bilinear:
            return torch.bmm(q, cand.transpose(1, 2))
        return blocked(self.broadcast_pairwise, q, cand, per_chunk=(cand,))

    def broadcast_pairwise(self, q, cand):
        """Unblocked ``pairwise`` through broadcasting (what ``torch.compile`` fuses)."""
        return self.match(q.unsqueeze(2), cand.unsqueeze(1))

    def n3_factors(self, h, r, t):
        """Factors penalised by the N3 regulariser (raw coordinates by default)."""
        return (h, r, t)


def _split(x, parts):
    # contiguous pieces: strided views of the last axis make every broadcast
    # elementwise kernel downstream fall off its vectorised path (~5x slower)
    return [p.contiguous() for p in torch.chunk(x, parts, dim=-1)]


def phases(x, rho):
    """Map raw parameters in ``[-rho, rho]`` to angles in ``[-pi, pi]``."""
    return x * (math.pi / rho)
