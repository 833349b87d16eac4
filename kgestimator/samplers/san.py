"""SAN: structure-aware negatives from the k-hop neighbourhood (docs/algorithms.md §4.3).

Candidate pools are built once per fit from the undirected, relation-agnostic
adjacency of the training triples and stored CSR-style on the device
(``pool_indptr_``, ``pool_indices_``); sampling is a handful of vectorised ops
per batch, with no per-triple Python.

Two ways to build the pools:

* ``n_random_walks=0``: the exact ball of radius ``k_hop`` around each entity
  (the support of ``A^k + A^(k-1)`` in the reference, which through backtracking
  is every node within ``k`` hops, the entity itself included), computed with
  sparse products over blocks of rows so memory stays bounded;
* ``n_random_walks > 0`` (RW-SANS, the EMU paper's setting: k=3, 1000 walks):
  the distinct endpoints of ``n_random_walks`` walks of exactly ``k_hop`` steps.
  ``walks='chained'`` (the default) is the reference code's walker, which does not
  reset its neighbour list between walks, so from the second walk on each walk
  continues from the previous endpoint (docs/algorithms.md §7.1); it is what the
  EMU paper's SAN rows used. ``walks='restarted'`` starts every walk at the entity,
  the method as the SANS paper describes it. Restarted pools are local, so on
  sparse graphs they hold most held-out answers, which SAN (filtering against
  training only) then trains as negatives; chained pools do not, and train
  better models on every graph measured where the two pools differ (BENCHMARKS.md §4).

Pools larger than ``max_candidates`` keep a uniform random subset. Entities
without neighbours (absent from training) have empty pools and get uniform
negatives.
"""

import numpy as np
import scipy.sparse as sp
import torch

from .._utils import check_bool, check_choice, check_number, warn_at_caller
from ..filtering import TripleSet
from ._uniform import UniformSampler

#: the ``walks`` options of :class:`SANSampler`
WALKS = ("chained", "restarted")
#: nonzeros allowed in one block of the exact k-hop computation (rows x entities)
_BLOCK_CELLS = 1 << 24


def _seed_from(generator):
    """A NumPy seed drawn from the torch generator, so pools follow ``random_state``."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(2**31 - 1, (1,), generator=generator, device=device))


def undirected_adjacency(triples, n_entities):
    """Symmetric 0/1 CSR adjacency of the training graph, without self-loops."""
    h, t = triples[:, 0].cpu().numpy(), triples[:, 2].cpu().numpy()
    keep = h != t
    rows = np.concatenate([h[keep], t[keep]])
    cols = np.concatenate([t[keep], h[keep]])
    adj = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)),
                        shape=(n_entities, n_entities))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    return adj


def _cap_rows(indptr, indices, cap, rng):
    """Keep at most ``cap`` entries per CSR row, a uniform random subset of each row."""
    counts = np.diff(indptr)
    if cap is None or counts.max(initial=0) <= cap:
        return indptr, indices
    row = np.repeat(np.arange(counts.size), counts)
    order = np.lexsort((rng.random(indices.size), row))
    rank = np.arange(indices.size) - np.repeat(indptr[:-1], counts)
    keep = np.sort(order[rank < cap])
    new_counts = np.minimum(counts, cap)
    return np.concatenate([[0], np.cumsum(new_counts)]), indices[keep]


def khop_pools(adj, k, cap, rng):
    """CSR pools: every node within ``k`` hops of each entity (itself included)."""
    n = adj.shape[0]
    block = max(1, _BLOCK_CELLS // max(1, n))
    indptrs, parts = [np.zeros(1, dtype=np.int64)], []
    offset = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        eye = sp.csr_matrix((np.ones(stop - start, dtype=np.float32),
                             (np.arange(stop - start), np.arange(start, stop))), shape=(stop - start, n))
        reach, frontier = eye, eye
        for _ in range(k):
            frontier = frontier @ adj
            frontier.data[:] = 1.0  # walk counts would overflow; only the support matters
            reach = reach + frontier
            reach.data[:] = 1.0
        # a node with no neighbours reaches only itself: leave its pool empty (uniform fallback)
        isolated = np.diff(adj.indptr)[start:stop] == 0
        reach = sp.csr_matrix(sp.diags((~isolated).astype(np.float32)) @ reach)
        reach.eliminate_zeros()
        reach.sort_indices()
        ip, ix = _cap_rows(reach.indptr.astype(np.int64), reach.indices.astype(np.int64), cap, rng)
        indptrs.append(ip[1:] + offset)
        parts.append(ix)
        offset += ix.size
    return np.concatenate(indptrs), np.concatenate(parts) if parts else np.zeros(0, np.int64)


def random_walk_pools(adj, k, n_walks, cap, generator, chained=False):
    """CSR pools: distinct endpoints of ``n_walks`` walks of ``k`` steps from each entity."""
    n = adj.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    indptr = torch.as_tensor(adj.indptr.astype(np.int64), device=device)
    indices = torch.as_tensor(adj.indices.astype(np.int64), device=device)
    degree = indptr[1:] - indptr[:-1]
    block = max(1, _BLOCK_CELLS // max(1, n_walks))
    out_ptr, out_idx, offset = [torch.zeros(1, dtype=torch.long, device=device)], [], 0
    for start in range(0, n, block):
        nodes = torch.arange(start, min(n, start + block), device=device)
        ends = torch.empty(nodes.numel(), n_walks, dtype=torch.long, device=device)
        origin = nodes
        # a graph of self-loops only has no edges: every pool stays empty (uniform)
        for w in range(n_walks if indices.numel() else 0):
            pos = origin
            for _ in range(k):
                deg = degree[pos]
                step = (torch.rand(pos.shape, generator=generator, device=device) * deg).long()
                nxt = indices[(indptr[pos] + step).clamp(max=max(0, indices.numel() - 1))]
                pos = torch.where(deg > 0, nxt, pos)
            ends[:, w] = pos
            if chained:
                origin = pos  # the reference's bug: the next walk continues from here
        if not indices.numel():
            ends.copy_(nodes.unsqueeze(1).expand_as(ends))
        ends, _ = torch.sort(ends, dim=1)
        distinct = torch.ones_like(ends, dtype=torch.bool)
        distinct[:, 1:] = ends[:, 1:] != ends[:, :-1]
        distinct &= (degree[nodes] > 0).unsqueeze(1)
        counts = distinct.sum(1)
        out_idx.append(ends[distinct])
        out_ptr.append(torch.cumsum(counts, 0) + offset)
        offset += int(counts.sum())
    ip = torch.cat(out_ptr).cpu().numpy()
    ix = torch.cat(out_idx).cpu().numpy() if out_idx else np.zeros(0, np.int64)
    rng = np.random.default_rng(_seed_from(generator))
    return _cap_rows(ip, ix, cap, rng)


class SANSampler(UniformSampler):
    """Structure-aware negative sampling (Ahrabian et al. 2020), filtered against training.

    For a tail batch the negatives of ``(h, r, t)`` are drawn uniformly, with
    replacement, from the pool of ``h`` (the kept entity); candidates that form
    a known training triple are redrawn. A row whose pool yields no valid
    candidate in its first round switches to uniform negatives, as in the reference.
    Head batches are symmetric. Sides alternate per step like ``'uniform'``.

    Parameters
    ----------
    k_hop : int, default=3
        Neighbourhood radius (walk length with random walks).
    n_random_walks : int, default=1000
        Walks per entity; 0 builds the exact k-hop ball instead.
    max_candidates : int or None, default=1000
        Cap on each pool, so memory is at most ``n_entities * max_candidates``
        ids; larger pools keep a uniform random subset.
    max_rounds : int, default=10
        Redraw rounds for candidates that are known triples; what is left after
        them (a pool of true answers only, and unlucky uniform draws) is kept.
    walks : {'chained', 'restarted'}, default='chained'
        How the random walks of a pool start: each from the previous walk's endpoint
        (``'chained'``, the reference code's walker and the EMU paper's setting) or each
        from the entity (``'restarted'``, the SANS paper's description). See the module notes.
    legacy_chained_walks : bool, default=None
        Deprecated, use ``walks``: ``True`` is ``walks='chained'``, ``False`` is
        ``walks='restarted'``. When set it overrides ``walks``.
    """

    shares_negatives = False
    #: the EMU term mutates the vanilla term's negatives under ``emu_resample='auto'``,
    #: as the EMU reference does for SAN (``if_CE 2``)
    emu_reuses_draw = True

    def __init__(self, k_hop=3, n_random_walks=1000, max_candidates=1000, max_rounds=10,
                 walks="chained", legacy_chained_walks=None):
        self.k_hop = k_hop
        self.n_random_walks = n_random_walks
        self.max_candidates = max_candidates
        self.max_rounds = max_rounds
        self.walks = walks
        self.legacy_chained_walks = legacy_chained_walks

    def _chained(self):
        """Whether the walks chain, from ``walks`` or the deprecated ``legacy_chained_walks``."""
        if self.legacy_chained_walks is not None:
            check_bool("legacy_chained_walks", self.legacy_chained_walks, owner=type(self).__name__)
            warn_at_caller("SANSampler(legacy_chained_walks=...) is deprecated; use walks='chained' or "
                           "walks='restarted'.", FutureWarning)
            return bool(self.legacy_chained_walks)
        check_choice("walks", self.walks, WALKS, owner=type(self).__name__)
        return self.walks == "chained"

    def _validate(self):
        owner = type(self).__name__
        for name, low in (("k_hop", 1), ("n_random_walks", 0), ("max_rounds", 1)):
            check_number(name, getattr(self, name), low, integer=True, owner=owner)
        if self.max_candidates is not None:
            check_number("max_candidates", self.max_candidates, 1, integer=True, owner=owner)

    def fit(self, triples, n_entities, n_relations, generator=None):
        self._validate()
        chained = self._chained()
        super().fit(triples, n_entities, n_relations)
        adj = undirected_adjacency(triples, self.n_entities_)
        if self.n_random_walks > 0:
            indptr, indices = random_walk_pools(adj, self.k_hop, self.n_random_walks, self.max_candidates,
                                                generator, chained=chained)
        else:
            rng = np.random.default_rng(_seed_from(generator))
            indptr, indices = khop_pools(adj, self.k_hop, self.max_candidates, rng)
        device = triples.device
        self.pool_indptr_ = torch.as_tensor(indptr, dtype=torch.long, device=device)
        self.pool_indices_ = torch.as_tensor(indices, dtype=torch.long, device=device)
        self.known_ = TripleSet(triples, n_entities, n_relations)
        return self

    def pool(self, entity):
        """The candidate pool of one entity, as a LongTensor (for inspection)."""
        return self.pool_indices_[self.pool_indptr_[entity]:self.pool_indptr_[entity + 1]]

    def sample(self, batch, side, n_chunks, n_negatives, generator):
        device = batch.device
        anchor = batch[:, 0] if side == "tail" else batch[:, 2]
        rel = batch[:, 1]
        start = self.pool_indptr_[anchor]
        size = self.pool_indptr_[anchor + 1] - start
        last = max(0, self.pool_indices_.numel() - 1)
        use_pool = size > 0                                     # (B,)
        B = batch.shape[0]
        shape = (B, n_negatives)

        def draw(n_slots, size, start, use_pool):
            offset = (torch.rand(n_slots, generator=generator, device=device) * size).long()
            uniform = torch.randint(self.n_entities_, n_slots, generator=generator, device=device)
            from_pool = self.pool_indices_[(start + offset).clamp(max=last)] \
                if self.pool_indices_.numel() else uniform
            return torch.where(use_pool, from_pool, uniform)

        # round one draws every slot by broadcasting; later rounds redraw only the slots
        # still holding a known triple (a few percent), gathering their rows' values
        ids = draw(shape, size.unsqueeze(1), start.unsqueeze(1), use_pool.unsqueeze(1))
        with self.known_.queries(anchor, rel, side, n_tests=ids.numel()) as known:   # built once, every round
            bad = known(torch.arange(B, device=device), ids)
            # a pool whose first N draws are all true answers is given up for uniform
            # (the reference decides this on rounds of 2N fresh draws)
            use_pool &= ~bad.all(1)
            ids = ids.view(-1)
            todo = bad.view(-1).nonzero().squeeze(1)
            for _ in range(self.max_rounds - 1):
                if not todo.numel():
                    break
                row = torch.div(todo, n_negatives, rounding_mode="floor")
                drawn = draw(todo.shape, size[row], start[row], use_pool[row])
                ids[todo] = drawn
                bad = known(row, drawn)
                todo = todo[bad]
        return ids.view(shape)

    def state_dict(self):
        return {"pool_indptr": self.pool_indptr_, "pool_indices": self.pool_indices_}

    def load_state_dict(self, state):
        self.pool_indptr_ = state["pool_indptr"]
        self.pool_indices_ = state["pool_indices"]
