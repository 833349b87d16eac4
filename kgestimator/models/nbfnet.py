"""NBFNet: the Neural Bellman-Ford network (Zhu et al. 2021; docs/algorithms.md §1.7).

A path-based model: it has no entity table. A query ``(u, q)`` (source node,
query relation) starts from a boundary condition that puts the query vector on
``u``; ``n_layers`` rounds of relation-specific messages over the fact graph
(training triples plus inverse edges) give every node a representation
conditioned on the query, and an MLP scores ``[h_v || Q_q]`` for each node
``v``. One propagation therefore scores every tail of a query at once, which is
what filtered ranking needs; a head query ``(?, r, t)`` is the tail query
``(t, r + n_relations, ?)``.

Tensors are node-major, ``(n_entities, B, d)`` for ``B`` queries propagated
together. Message passing never holds the ``(E, B, d)`` edge messages of a
whole layer: the edges are sorted by destination once, and each layer walks
them in blocks of whole destination nodes (:class:`_BlockedMessages`), each
block's messages a few MB that stay in cache. The forward pass aggregates a
block (sum, sum of squares, max, min) and forgets its messages; the backward
pass recomputes them block by block. A layer keeps ``O(n_entities * B * d)``
floats, as the NBFNet authors' fused ``rspmm`` kernel does, so the batch is
bounded by the nodes, not the edges. The earlier path, which materialised the
messages (:class:`_PNAAggregate`), stays as the tests' reference
(``NBFNet.materialise_messages = True``).

Where a C compiler works, the same aggregates come from a fused kernel
(``_nbf.py``, ``_nbf.c``) that walks destination-sorted edges and never
forms a message at all, forward or backward: the blocked path's elementwise
passes over message blocks were memory-bound and made most of a step
(BENCHMARKS.md §6). ``NBFNet.native_messages`` (set from ``KGEmbedder``'s
``compile``) chooses it; without a compiler the blocked path runs.
"""

import warnings

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from . import _nbf
from ..memory import nbf_queries_per_pass

AGGREGATES = ("pna", "sum")
MESSAGES = ("distmult", "transe")

#: the official configurations (docs/algorithms.md §1.7) as KGEmbedder keyword arguments;
#: NBFNet's temperature T divides the scores, ``adversarial_temperature`` multiplies: 1 / T
REFERENCE_PARAMS = {
    "fb15k237": dict(model="nbfnet", dim=32, loss="bce", n_negatives=32, batch_size=64, learning_rate=5e-3,
                     adversarial_temperature=2.0, n_epochs=20, optimizer="adam",
                     model_params=dict(n_layers=6, aggregate="pna", message="distmult", dependent=True,
                                       remove_one_hop=True)),
    "wn18rr": dict(model="nbfnet", dim=32, loss="bce", n_negatives=32, batch_size=32, learning_rate=5e-3,
                   adversarial_temperature=1.0, n_epochs=20, optimizer="adam",
                   model_params=dict(n_layers=6, aggregate="pna", message="distmult", dependent=False,
                                     remove_one_hop=False)),
}


class _Layer(nn.Module):
    """One Bellman-Ford iteration: messages, aggregation, combine, layer norm, ReLU, short-cut."""

    def __init__(self, dim, n_relations2, aggregate, message, dependent, layer_norm, short_cut):
        super().__init__()
        self.dim, self.n_relations2 = dim, n_relations2
        self.aggregate, self.message, self.dependent, self.short_cut = aggregate, message, dependent, short_cut
        if dependent:
            # relation vectors are a function of the query (FB15k-237 config)
            self.relation_linear = nn.Linear(dim, n_relations2 * dim)
        else:
            self.relation = nn.Embedding(n_relations2, dim)
        self.linear = nn.Linear(dim * (13 if aggregate == "pna" else 2), dim)
        self.norm = nn.LayerNorm(dim) if layer_norm else None

    #: materialise the (E, B, d) messages (the earlier path, the tests' reference)
    materialise = False

    def forward(self, h, boundary, query, src, rel, dst, degree, blocks=None):
        if self.dependent:
            w = self.relation_linear(query).view(-1, self.n_relations2, self.dim).transpose(0, 1)  # (R, B, d)
        else:
            w = self.relation.weight.unsqueeze(1)                              # (R, 1, d)
        pna = self.aggregate == "pna"
        if isinstance(blocks, _nbf.CSR) and not _nbf.supports(h, w, boundary):
            blocks = None  # e.g. another dtype under autocast: the blocked path takes any tensors
        if self.materialise:
            total, sq_total, high, low = self._materialised(h, w, boundary, src, rel, dst, pna)
        elif isinstance(blocks, _nbf.CSR):
            total, sq_total, high, low = _nbf.aggregate(h, w, boundary, blocks, pna, self.message == "distmult")
        else:
            if blocks is None:
                blocks = message_blocks(src, rel, dst, h.shape[0], h.shape[1] * h.shape[2])
            total, sq_total, high, low = _BlockedMessages.apply(h, w, boundary, blocks, pna,
                                                                self.message == "distmult")
        # each node also receives its own boundary vector as one more message
        if not pna:
            return self._combine(h, total)
        count, scale, inv_scale = degree.unbind(-1)
        mean = total / count
        std = (sq_total / count - mean * mean).clamp(min=1e-6).sqrt()
        features = torch.cat([mean, high, low, std], -1)                   # (n, B, 4d)
        # linear([h, features x (1, scale, 1 / scale)]) without materialising the (n, B, 12d)
        # scaled features: one (4d -> 3d) product, then the degree scalers on its three d-wide parts
        w_h, w_f = self.linear.weight[:, :self.dim], self.linear.weight[:, self.dim:]
        w_f = w_f.reshape(self.dim, 4 * self.dim, 3).permute(1, 2, 0).reshape(4 * self.dim, 3 * self.dim)
        y = (features @ w_f).unflatten(-1, (3, self.dim))
        out = nn.functional.linear(h, w_h, self.linear.bias) + y[..., 0, :]
        out = out + scale * y[..., 1, :] + inv_scale * y[..., 2, :]
        return self._finish(out, h)

    def _materialised(self, h, w, boundary, src, rel, dst, pna):
        """The four aggregates through ``(E, B, d)`` messages (the reference for the blocked path)."""
        # index_select, not h[src]: its backward is index_add, not the slower accumulating index_put
        x = h.index_select(0, src)
        w = w.index_select(0, rel)
        msg = x * w if self.message == "distmult" else x + w               # (E, B, d)
        if not pna:
            return torch.index_add(boundary, 0, dst, msg), None, None, None
        return _PNAAggregate.apply(msg, boundary, dst)

    def _combine(self, h, update):
        """Sum aggregation: linear([h, update]), layer norm, ReLU, short-cut."""
        return self._finish(self.linear(torch.cat([h, update], -1)), h)

    def _finish(self, out, h):
        if self.norm is not None:
            out = self.norm(out)
        out = torch.relu(out)
        return out + h if self.short_cut else out


def degree_scalers(dst, n_entities, dtype):
    """PNA's per-node ``(count, scale, 1 / scale)`` as one ``(n_entities, 1, 1, 3)`` tensor.

    ``count`` is the in-degree plus one (the boundary message); ``scale`` is
    ``log(count)`` over its mean. They depend on the graph only, so a
    propagation computes them once for all its layers.
    """
    count = (torch.bincount(dst, minlength=n_entities) + 1).to(dtype)
    scale = count.log()
    scale = scale / scale.mean().clamp(min=1e-12)  # an edge-free graph has all scales 0
    return torch.stack([count, scale, 1.0 / scale.clamp(min=1e-2)], -1).view(-1, 1, 1, 3)


class _PNAAggregate(torch.autograd.Function):
    """Sum, sum of squares, max and min of the messages ``(E, B, d)`` arriving at each node.

    Every node's own ``boundary`` vector counts as one more message. The
    forward pass is ``index_add`` / ``index_reduce`` as before; the backward
    pass is written out by hand, because autograd's dominated a training step:
    it gathers ``(E, B, d)`` tensors from the destinations six times and builds
    dense float masks and products for the max and min, then sums the four
    contributions; this gathers the two sums' gradients in one go and adds
    the extremes' in place (:func:`_extreme_backward`). A max or min shared
    by several messages (frequent: ReLU makes many exact zeros) splits its
    gradient evenly among them, as ``index_reduce``'s own backward does, so
    gradients equal autograd's up to float rounding.
    """

    @staticmethod
    def forward(ctx, msg, boundary, dst):
        total = torch.index_add(boundary, 0, dst, msg)
        sq_total = torch.index_add(boundary * boundary, 0, dst, msg * msg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "index_reduce() is in beta"
            high = boundary.index_reduce(0, dst, msg, "amax", include_self=True)
            low = boundary.index_reduce(0, dst, msg, "amin", include_self=True)
        ctx.save_for_backward(msg, boundary, dst, high, low)
        return total, sq_total, high, low

    @staticmethod
    def backward(ctx, g_total, g_sq, g_high, g_low):
        msg, boundary, dst, high, low = ctx.saved_tensors
        at_dst = torch.stack([g_total, 2.0 * g_sq], -2).index_select(0, dst)       # (E, B, 2, d)
        g_msg = torch.addcmul(at_dst[..., 0, :], msg, at_dst[..., 1, :])
        g_boundary = torch.addcmul(g_total, boundary, 2.0 * g_sq)
        for extreme, grad in ((high, g_high), (low, g_low)):
            _extreme_backward(msg, boundary, dst, extreme, grad, g_msg, g_boundary)
        return g_msg, g_boundary, None


def _extreme_backward(msg, boundary, dst, extreme, grad, g_msg, g_boundary):
    """Add a max's (or min's) gradient to ``g_msg`` and ``g_boundary`` in place, ties sharing it evenly.

    (Listing the attaining messages sparsely, with ``nonzero``, was tried for
    kinship's dense graph and was no faster: ``nonzero`` is a slow pass.)
    """
    hit = (msg == extreme.index_select(0, dst)).to(msg.dtype)
    self_hit = boundary == extreme
    share = grad / self_hit.to(msg.dtype).index_add_(0, dst, hit)
    g_msg.addcmul_(hit, share.index_select(0, dst))
    g_boundary.add_(torch.where(self_hit, share, 0.0))


#: elements (padded edges x queries x dim) of one block of messages: a few MB, so
#: that a block's gathers, products and reductions stay in cache (the whole-layer
#: tensors of the materialised path are tens of MB to GB)
MESSAGE_BLOCK = 1 << 20
#: padding allowed in a block of nodes of unequal in-degree, as a fraction of its slots
MAX_PADDING = 0.25


def message_blocks(src, rel, dst, n_nodes, width, block=None):
    """Blocks of destination nodes of similar in-degree, with their in-edges as a padded dense layout.

    Each block is a tuple ``(nodes, D, src_pad, rel_pad, pad_pos, pad_node, n_pad)``:
    ``nodes`` (nb,) receive exactly their in-edges at rows ``[k * D, (k + 1) * D)``
    of ``src_pad`` / ``rel_pad`` (nb * D,), node ``k``'s first edge repeated as
    padding; ``pad_pos`` lists the padded rows, ``pad_node`` their node (local
    index) and ``n_pad`` (nb, 1, 1) each node's count of them. Nodes are sorted
    by in-degree, so a block wastes at most ``MAX_PADDING`` of its slots (or
    holds nodes of one degree), and holds about ``block / width`` slots
    (``width``: the floats of one message, ``B * d``). Nodes without in-edges
    are in no block.
    """
    per_block = max(1, (block or MESSAGE_BLOCK) // max(1, width))
    order = torch.argsort(dst, stable=True)
    src, rel, dst = src[order], rel[order], dst[order]
    counts = torch.bincount(dst, minlength=n_nodes)
    start = torch.cumsum(counts, 0) - counts
    perm = torch.argsort(counts, stable=True)
    degrees, sizes = torch.unique_consecutive(counts[perm], return_counts=True)
    groups, first = [], 0
    for deg, size in zip(degrees.tolist(), sizes.tolist()):
        if deg:
            groups.append((first, first + size, deg))
        first += size
    # greedy over ascending degrees: a block takes the next nodes while it stays
    # within per_block slots and MAX_PADDING of padding at the new, larger degree
    spans, cur = [], None                                   # cur: [first, end, edges, degree]
    for lo, hi, deg in groups:
        cap = max(1, per_block // deg)
        while lo < hi:
            if cur is not None:
                take = min(hi - lo, cap - (cur[1] - cur[0]))
                if take > 0 and cur[2] + take * deg >= (1 - MAX_PADDING) * (cur[1] - cur[0] + take) * deg:
                    cur = [cur[0], cur[1] + take, cur[2] + take * deg, deg]
                    lo += take
                    continue
                spans.append((cur[0], cur[1], cur[3]))
            take = min(hi - lo, cap)
            cur = [lo, lo + take, take * deg, deg]
            lo += take
    if cur is not None:
        spans.append((cur[0], cur[1], cur[3]))
    blocks = []
    for lo, hi, D in spans:
        nodes = perm[lo:hi]
        c = counts[nodes].unsqueeze(1)
        j = torch.arange(D, device=dst.device).unsqueeze(0)
        valid = j < c
        idx = (start[nodes].unsqueeze(1) + torch.where(valid, j, 0)).reshape(-1)
        pad_pos = (~valid).reshape(-1).nonzero().squeeze(1)
        blocks.append((nodes, D, src[idx], rel[idx], pad_pos, torch.div(pad_pos, D, rounding_mode="floor"),
                       (D - c).view(-1, 1, 1)))
    return blocks


def _block_messages(h, w, bnd, blk, distmult):
    """``(x, w_e, msg)`` of a block, the padded slots' messages replaced by their node's boundary."""
    nodes, D, src, rel, pad_pos, pad_node, _ = blk
    x = h.index_select(0, src)
    wb = w.index_select(0, rel)
    msg = x * wb if distmult else x + wb
    if pad_pos.numel():
        msg.index_copy_(0, pad_pos, bnd.index_select(0, pad_node))
    return x, wb, msg.view(nodes.shape[0], D, *msg.shape[1:])


class _BlockedMessages(torch.autograd.Function):
    """Sum, sum of squares, max and min of the messages ``h[src] (*|+) w[rel]`` at each node, by blocks.

    ``h`` and ``boundary`` are ``(n, B, d)``; ``w`` is ``(R, B, d)`` (relation
    vectors per query) or ``(R, 1, d)``. Every node's own ``boundary`` vector
    counts as one more message. ``blocks`` (:func:`message_blocks`) lay each
    block's in-edges out as a dense ``(nb, D, B, d)`` tensor, so the
    aggregates are plain reductions over its second axis and the values
    gathered from the destinations in the backward pass are broadcasts. A
    padded slot carries a copy of its node's boundary message, which changes
    no max or min; the sums and tie counts subtract the copies. With
    ``pna=False`` only the sum is computed (the others are None).

    Saved for the backward pass: ``h``, ``w``, ``boundary`` and the extremes,
    ``O(n B d)``; the backward pass recomputes each block's messages and
    counts the messages attaining each max and min, whose gradient ties share
    evenly, as ``index_reduce``'s backward (and :class:`_PNAAggregate`) do.
    """

    @staticmethod
    def forward(ctx, h, w, boundary, blocks, pna, distmult):
        total = boundary.clone()
        if pna:
            sq_total, high, low = boundary * boundary, boundary.clone(), boundary.clone()
        for blk in blocks:
            nodes, n_pad = blk[0], blk[6]
            bnd = boundary.index_select(0, nodes)
            _, _, msg = _block_messages(h, w, bnd, blk, distmult)
            keep = (1 - n_pad).to(msg.dtype)                  # the boundary once, not its padded copies
            total.index_copy_(0, nodes, torch.addcmul(msg.sum(1), keep, bnd))
            if pna:
                sq_total.index_copy_(0, nodes, torch.addcmul((msg * msg).sum(1), keep, bnd * bnd))
                lo, hi = torch.aminmax(msg, dim=1)
                high.index_copy_(0, nodes, torch.maximum(hi, bnd))
                low.index_copy_(0, nodes, torch.minimum(lo, bnd))
        ctx.blocks, ctx.pna, ctx.distmult = blocks, pna, distmult
        if pna:
            ctx.save_for_backward(h, w, boundary, high, low)
            return total, sq_total, high, low
        ctx.save_for_backward(h, w, boundary)
        return total, None, None, None

    @staticmethod
    def backward(ctx, g_total, g_sq=None, g_high=None, g_low=None):
        pna, distmult = ctx.pna, ctx.distmult
        h, w, boundary, *extremes = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        zeros = torch.zeros_like(boundary)
        g_total = zeros if g_total is None else g_total
        pairs = []
        if pna:
            g_sq2 = zeros if g_sq is None else 2.0 * g_sq
            pairs = [(ext, zeros if g is None else g) for ext, g in zip(extremes, (g_high, g_low))]
        # nodes without in-edges: the boundary is their only message, its own max and min
        g_boundary = g_total.clone()
        if pna:
            g_boundary.addcmul_(boundary, g_sq2)
            for _, g in pairs:
                g_boundary.add_(g)
        g_h = torch.zeros_like(h) if need_h else None
        g_w = torch.zeros(w.shape, dtype=w.dtype, device=w.device) if need_w else None
        per_query_w = w.shape[1] == h.shape[1]
        for blk in ctx.blocks:
            nodes, pad_pos, n_pad = blk[0], blk[4], blk[6]
            bnd = boundary.index_select(0, nodes)
            x, wb, msg = _block_messages(h, w, bnd, blk, distmult)
            g_tot = g_total.index_select(0, nodes)
            g_bnd = g_tot.clone()
            if pna:
                g2 = g_sq2.index_select(0, nodes)
                g_msg = torch.addcmul(g_tot.unsqueeze(1), msg, g2.unsqueeze(1))
                g_bnd.addcmul_(bnd, g2)
                keep = (1 - n_pad).to(msg.dtype)
                for ext, g in pairs:
                    ext_b = ext.index_select(0, nodes)
                    hit = msg == ext_b.unsqueeze(1)
                    self_hit = bnd == ext_b
                    share = g.index_select(0, nodes) / torch.addcmul(hit.sum(1, dtype=msg.dtype), keep,
                                                                     self_hit.to(msg.dtype))
                    g_msg.add_(torch.where(hit, share.unsqueeze(1), 0.0))
                    g_bnd.add_(torch.where(self_hit, share, 0.0))
            else:
                g_msg = g_tot.unsqueeze(1).expand(msg.shape).contiguous()
            g_boundary.index_copy_(0, nodes, g_bnd)
            if not (need_h or need_w):
                continue
            g_msg = g_msg.view(-1, *g_msg.shape[2:])
            if pad_pos.numel():
                g_msg.index_fill_(0, pad_pos, 0.0)            # padded slots are no edges
            if need_h:
                g_h.index_add_(0, blk[2], g_msg * wb if distmult else g_msg)
            if need_w:
                g_wb = g_msg * x if distmult else g_msg
                g_w.index_add_(0, blk[3], g_wb if per_query_w else g_wb.sum(1, keepdim=True))
        return g_h, g_w, g_boundary if need_b else None, None, None, None


class NBFNet(nn.Module):
    """NBFNet: query-conditioned Bellman-Ford message passing over the fact graph, then an MLP scorer.

    Parameters
    ----------
    n_entities, n_relations : int
        Graph sizes; inverse edges add ``n_relations`` more relation types.
    dim : int
        Width of the query embedding and of every layer (reference: 32).
    gamma : float, optional
        Unused (the common model signature); NBFNet scores are raw logits.
    generator : torch.Generator, optional
        Seeds the initialisation (PyTorch's default initialisers).
    n_layers : int, default=6
    aggregate : {'pna', 'sum'}, default='pna'
        PNA (mean, max, min, std with degree scalers) or a plain sum.
    message : {'distmult', 'transe'}, default='distmult'
        Edge message ``h_x * w_r`` or ``h_x + w_r``.
    dependent : bool, default=False
        Relation vectors computed from the query by a linear map (FB15k-237
        config) instead of one free table per layer (WN18RR config).
    layer_norm : bool, default=True
    short_cut : bool, default=True
        Residual connection around each layer.
    remove_one_hop : bool, default=False
        During training, remove every edge between a query's source and its
        candidates (both directions, any relation; FB15k-237 config) instead of
        only the batch's own triples (WN18RR config).
    checkpoint : bool, default=False
        Recompute each layer in the backward pass instead of storing its
        ``(E, B, d)`` messages: less memory, about one more forward pass of time.

    Notes
    -----
    :meth:`set_graph` gives the fact graph (encoded training triples) after
    construction; it is kept in the state dict (buffer ``graph``), so saved
    models and checkpoints carry it.
    """

    #: scores come from propagation over a graph, not from entity embeddings
    path_based = True
    #: no entity or relation tables (the memory check of ``fit`` reads these)
    entity_factor = 0
    relation_factor = 0
    #: what ``KGEmbedder`` uses for the parameters left at None: the reference's width and
    #: negatives; a batch of 32 queries keeps a FB15k-237 step within a few GB (O(n B d) a layer)
    default_params = {"dim": 32, "batch_size": 32, "n_negatives": 32}
    #: materialise each layer's (E, B, d) messages: the earlier, memory-bound path,
    #: kept as the reference of the blocked one in tests and benchmarks
    materialise_messages = False
    #: activations one training propagation may hold on the CPU; a larger batch propagates in
    #: passes of fewer queries, each backpropagated at once. 256 MB keeps every tensor of a pass on
    #: WN18RR (one query: 5-21 MB) below glibc's largest mmap threshold, so passes reuse heap pages
    pass_bytes = 256 * 2**20
    #: aggregate messages in the fused C kernel (``_nbf``) where it builds and takes the tensors;
    #: False: the blocked PyTorch path. The trainer sets it from ``KGEmbedder``'s ``compile``
    native_messages = True

    def __init__(self, n_entities, n_relations, dim=32, gamma=None, generator=None, n_layers=6,
                 aggregate="pna", message="distmult", dependent=False, layer_norm=True, short_cut=True,
                 remove_one_hop=False, checkpoint=False):
        super().__init__()
        _check_params(n_layers=n_layers, aggregate=aggregate, message=message, dependent=dependent,
                      layer_norm=layer_norm, short_cut=short_cut, remove_one_hop=remove_one_hop,
                      checkpoint=checkpoint)
        self.n_entities, self.n_relations, self.dim = int(n_entities), int(n_relations), int(dim)
        self.remove_one_hop, self.use_checkpoint = bool(remove_one_hop), bool(checkpoint)
        seed = int(torch.randint(2 ** 62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.query = nn.Embedding(2 * self.n_relations, self.dim)
            self.layers = nn.ModuleList(
                _Layer(self.dim, 2 * self.n_relations, aggregate, message, bool(dependent), bool(layer_norm),
                       bool(short_cut)) for _ in range(int(n_layers)))
            self.mlp = nn.Sequential(nn.Linear(2 * self.dim, 2 * self.dim), nn.ReLU(),
                                     nn.Linear(2 * self.dim, 1))
        self.register_buffer("graph", torch.zeros(0, 3, dtype=torch.long))
        self._index_graph()

    # -- the fact graph -------------------------------------------------------
    def set_graph(self, triples):
        """Use ``triples`` (LongTensor ``(E, 3)`` of encoded ``(h, r, t)``) as the fact graph."""
        triples = torch.as_tensor(triples)
        if triples.dtype != torch.long or triples.ndim != 2 or triples.shape[1] != 3:
            raise ValueError("The graph must be a (n_edges, 3) int64 tensor of (head, relation, tail) ids.")
        if triples.numel() and (triples.min() < 0 or triples[:, [0, 2]].max() >= self.n_entities
                                or triples[:, 1].max() >= self.n_relations):
            raise ValueError("The graph refers to entities or relations that do not exist.")
        self.graph = triples.to(self.graph.device).contiguous()
        self._index_graph()
        return self

    def _index_graph(self):
        h, r, t = self.graph.unbind(1)
        # every edge (h, r, t) also runs backwards as (t, r + n_relations, h); edges are kept
        # sorted by destination (blocked message passing), _order maps them to [graph; inverse]
        src, rel, dst = torch.cat([h, t]), torch.cat([r, r + self.n_relations]), torch.cat([t, h])
        self._order = torch.argsort(dst, stable=True)
        self._src, self._rel, self._dst = src[self._order], rel[self._order], dst[self._order]
        self._triple_keys = (h * self.n_relations + r) * self.n_entities + t
        self._pair_keys = h * self.n_entities + t

    def _apply(self, fn, *args, **kwargs):
        # .to(device) moves the graph; the derived index tensors follow it
        out = super()._apply(fn, *args, **kwargs)
        self._index_graph()
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the graph's size is the loaded model's, not the freshly built one's
        key = prefix + "graph"
        if key in state_dict:
            self.set_graph(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def n_edges(self):
        """Directed edges message passing runs over (twice the fact graph: inverse edges)."""
        return 2 * self.graph.shape[0]

    def training_edges(self, triples, anchor=None, candidates=None):
        """Boolean mask over the fact graph's triples: False for the edges hidden in this step.

        ``triples`` are the batch's positives ``(B, 3)``: their edges (and so
        their inverse edges) are removed, so the model cannot read the answer.
        With ``remove_one_hop``, every edge between an ``anchor`` ``(B,)`` and
        any of its ``candidates`` ``(B, K)`` goes too, in both directions and
        of any relation.
        """
        if self.remove_one_hop and anchor is not None:
            a = anchor.unsqueeze(1).expand_as(candidates)
            pairs = torch.cat([a * self.n_entities + candidates, candidates * self.n_entities + a]).reshape(-1)
            return ~torch.isin(self._pair_keys, pairs)
        h, r, t = triples.unbind(1)
        return ~torch.isin(self._triple_keys, (h * self.n_relations + r) * self.n_entities + t)

    # -- propagation and scoring ------------------------------------------------
    def propagate(self, anchor, rel, keep=None, native=None):
        """Final node representations for tail queries ``(anchor, rel)``.

        Parameters
        ----------
        anchor : LongTensor of shape (B,)
            Source nodes.
        rel : LongTensor of shape (B,)
            Query relations in ``[0, 2 * n_relations)`` (inverse relations for head queries).
        keep : bool Tensor of shape (n_graph_triples,), optional
            Fact-graph triples to use (see :meth:`training_edges`); all by default.
        native : bool, optional
            Aggregate in the fused C kernel where it builds (else the blocked
            path); None: :attr:`native_messages`.

        Returns
        -------
        nodes : Tensor of shape (B, n_entities, d)
        query : Tensor of shape (B, d)
        """
        src, rel_e, dst = self._src, self._rel, self._dst
        if keep is not None:
            keep2 = torch.cat([keep, keep])[self._order]
            src, rel_e, dst = src[keep2], rel_e[keep2], dst[keep2]
        query = self.query(rel)
        B = anchor.shape[0]
        boundary = torch.zeros(self.n_entities, B, self.dim, dtype=query.dtype, device=query.device)
        boundary = boundary.index_put((anchor, torch.arange(B, device=anchor.device)), query)
        degree = degree_scalers(dst, self.n_entities, query.dtype)
        native = self.native_messages if native is None else native
        if self.materialise_messages:
            blocks = None
        elif native and _nbf.available(boundary):
            blocks = _nbf.csr(src, rel_e, dst, self.n_entities)
        else:
            blocks = message_blocks(src, rel_e, dst, self.n_entities, B * self.dim)
        h = boundary
        for layer in self.layers:
            layer.materialise = self.materialise_messages
            args = (h, boundary, query, src, rel_e, dst, degree, blocks)
            if self.use_checkpoint and torch.is_grad_enabled():
                h = _checkpoint(layer, *args, use_reentrant=False)
            else:
                h = layer(*args)
        return h.transpose(0, 1), query

    def score_nodes(self, nodes, query):
        """MLP logits ``(B, K)`` of node representations ``(B, K, d)`` for queries ``(B, d)``."""
        q = query.unsqueeze(1).expand(-1, nodes.shape[1], -1)
        return self.mlp(torch.cat([nodes, q], -1)).squeeze(-1)

    def query_relations(self, rel, side):
        """Relations of tail queries: ``rel`` itself, or its inverse for head queries."""
        return rel if side == "tail" else rel + self.n_relations

    def score_all(self, anchor, rel, side, native=None):
        """Scores ``(Q, n_entities)`` of every entity as the missing ``side`` (no edge removal).

        ``native``: as in :meth:`propagate`.
        """
        nodes, query = self.propagate(anchor, self.query_relations(rel, side), native=native)
        return self.score_nodes(nodes, query)

    def queries_per_pass(self, n_queries):
        """Queries one training propagation takes on the CPU (:func:`kgestimator.memory.nbf_queries_per_pass`)."""
        return nbf_queries_per_pass(n_queries, self.n_entities, self.dim, len(self.layers), self.pass_bytes)

    def elements_per_query(self):
        """Floats alive per query in an inference propagation (edge messages and PNA features)."""
        return self.dim * (3 * max(1, self.n_edges) + 16 * self.n_entities)


def _check_params(n_layers, aggregate, message, dependent, layer_norm, short_cut, remove_one_hop, checkpoint):
    import numbers

    if not isinstance(n_layers, numbers.Integral) or isinstance(n_layers, bool) or n_layers < 1:
        raise ValueError(f"model_params['n_layers'] must be an int >= 1; got {n_layers!r}.")
    if aggregate not in AGGREGATES:
        raise ValueError(f"model_params['aggregate'] must be one of {list(AGGREGATES)}; got {aggregate!r}.")
    if message not in MESSAGES:
        raise ValueError(f"model_params['message'] must be one of {list(MESSAGES)}; got {message!r}.")
    for name, value in (("dependent", dependent), ("layer_norm", layer_norm), ("short_cut", short_cut),
                        ("remove_one_hop", remove_one_hop), ("checkpoint", checkpoint)):
        if not isinstance(value, bool):
            raise ValueError(f"model_params[{name!r}] must be a bool; got {value!r}.")
