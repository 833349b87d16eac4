"""Data-parallel training of one model with ``torch.distributed`` (launched by ``torchrun``).

Every rank holds the whole graph (filtering and the samplers' statistics need
it) and the same initial weights; it trains on its own shard of the training
triples with its own negatives, and after each backward pass the gradients are
averaged over the ranks, so every rank takes the same optimiser step and the
weights stay identical. Rank 0 evaluates (validation MRR, broadcast so that
early stopping decides the same everywhere) and is the one that writes files.

Why an explicit all-reduce rather than ``DistributedDataParallel``: DDP hooks
into ``module.forward``, and a training step here never calls it. It calls
``entities``, ``relations``, ``query`` and ``pairwise`` of the model, and the
samplers look at the model too (NSCaching scores candidates, DANS trains on its
embeddings), some of them under ``no_grad``. Wrapping that in one ``forward``
would reshape the trainer around DDP. DDP also all-reduces sparse gradients
only on gloo. The gradient exchange here is small and explicit: dense gradients
(and the loss) travel in one flat buffer and one ``all_reduce``; sparse
gradients of the embedding tables travel as ``(row ids, rows)`` with an
``all_gather`` (works on gloo and NCCL), so a step sends only the rows the
batches touched, never the whole table.

Launch (see the README)::

    torchrun --nproc-per-node 2 -m kgestimator train nations -o model.kge --distributed

or ``KGEmbedder(distributed=True).fit(...)`` in a script started by ``torchrun``.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from sklearn.utils import check_random_state

#: environment variables that ``torchrun`` (or a cluster launcher) sets for ``init_process_group``
ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Context:
    """Where this process stands in the process group."""

    rank: int
    world_size: int
    backend: str

    @property
    def is_main(self):
        return self.rank == 0


def init(device):
    """Join the default process group (initialising it from ``torchrun``'s environment if needed).

    Parameters
    ----------
    device : torch.device
        Picks the backend when this call initialises the group: NCCL for CUDA,
        gloo otherwise.

    Returns
    -------
    context : Context

    Raises
    ------
    ValueError
        Outside ``torchrun`` (no process group and no ``RANK``/``WORLD_SIZE``/
        ``MASTER_ADDR``/``MASTER_PORT`` in the environment).
    """
    if not dist.is_available():
        raise ValueError("distributed=True needs torch.distributed, which this torch build lacks.")
    if not dist.is_initialized():
        missing = [name for name in ENV_VARS if name not in os.environ]
        if missing:
            raise ValueError(
                "The 'distributed' parameter is True but no torch.distributed process group is initialised "
                f"and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: launch the script "
                "with torchrun (e.g. torchrun --nproc-per-node 2 script.py) or call "
                "torch.distributed.init_process_group first.")
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    backend = str(dist.get_backend())
    if backend == "nccl" and torch.device(device).type != "cuda":
        raise ValueError(f"The process group uses NCCL, which needs CUDA tensors, but device is {device}; "
                         "use device='cuda' or a gloo process group.")
    return Context(dist.get_rank(), dist.get_world_size(), backend)


def local_device(device):
    """``cuda`` without an index becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL uses the current device
    return device


def _tensor_device(ctx, device):
    """Where collective tensors live: NCCL moves CUDA tensors only."""
    return torch.device(device) if ctx.backend == "nccl" else torch.device("cpu")


def shared_seed(random_state, ctx, device):
    """One int seed for every rank: rank 0 draws it from ``random_state`` and broadcasts it.

    With ``random_state=None`` each rank would otherwise draw its own, and the
    ranks would start from different weights and shards.
    """
    seed = torch.zeros(1, dtype=torch.long, device=_tensor_device(ctx, device))
    if ctx.is_main:
        seed[0] = int(check_random_state(random_state).randint(0, 2**31 - 1))
    dist.broadcast(seed, 0)
    return int(seed.item())


def rank_seed(seed, rank):
    """An independent seed per rank (different negatives and shuffles), reproducible from ``seed``."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]) & (2**31 - 1)


def shard(triples, ctx, seed):
    """This rank's share of ``triples``: a seeded permutation, cut into equal parts.

    Every rank must take the same number of steps, or a collective would wait
    forever; like ``DistributedSampler``, the permutation is padded by wrapping
    around so that the shards have equal sizes (at most ``world_size - 1``
    triples appear twice per epoch).
    """
    n = triples.shape[0]
    per_rank = -(-n // ctx.world_size)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    order = order[torch.arange(per_rank * ctx.world_size) % n]
    return triples[order[ctx.rank * per_rank:(ctx.rank + 1) * per_rank].to(triples.device)]


def broadcast_parameters(module):
    """Copy rank 0's parameters and buffers to every rank (same seeds make them equal already;
    this makes it true whatever the initialisation did)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, 0)
    # the ranks leave here together: a rank still loading data would otherwise be counted in
    # the others' first step (and in their throughput)
    dist.barrier()


class GradientAverager:
    """Average gradients (and the loss) over the ranks after ``backward``.

    Called as ``loss = averager(model, loss)`` between ``loss.backward()`` and
    ``optimizer.step()``; returns the mean loss, the same on every rank, so that
    the non-finite check stops every rank at the same step.
    """

    def __init__(self, ctx, device):
        self.ctx = ctx
        self.device = _tensor_device(ctx, device)

    def __call__(self, model, loss):
        world = self.ctx.world_size
        params = [p for p in model.parameters() if p.grad is not None]
        dense = [p for p in params if not p.grad.is_sparse]
        pieces = [loss.detach().reshape(1).to(self.device, torch.float32)]
        pieces += [p.grad.reshape(-1).to(self.device, torch.float32) for p in dense]
        flat = torch.cat(pieces)
        dist.all_reduce(flat)
        flat /= world
        offset = 1
        for p in dense:
            k = p.grad.numel()
            p.grad.copy_(flat[offset:offset + k].view_as(p.grad))
            offset += k
        for p in params:
            if p.grad.is_sparse:
                p.grad = self._sparse_mean(p.grad)
        return flat[0].to(loss.device)

    def _sparse_mean(self, grad):
        """Mean of a row-sparse gradient over the ranks, exchanging only the touched rows."""
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        counts = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.ctx.world_size)]
        dist.all_gather(counts, torch.tensor([rows.numel()], dtype=torch.long, device=self.device))
        counts = [int(c.item()) for c in counts]
        most = max(counts)
        # all_gather needs equal shapes: pad with row 0 and zero rows, dropped below
        pad_rows = torch.zeros(most, dtype=torch.long, device=self.device)
        pad_rows[:rows.numel()] = rows.to(self.device)
        pad_values = torch.zeros((most,) + tuple(values.shape[1:]), dtype=values.dtype, device=self.device)
        pad_values[:rows.numel()] = values.to(self.device)
        all_rows = [torch.empty_like(pad_rows) for _ in counts]
        all_values = [torch.empty_like(pad_values) for _ in counts]
        dist.all_gather(all_rows, pad_rows)
        dist.all_gather(all_values, pad_values)
        rows = torch.cat([r[:c] for r, c in zip(all_rows, counts)]).to(grad.device)
        values = torch.cat([v[:c] for v, c in zip(all_values, counts)]).to(grad.device)
        return torch.sparse_coo_tensor(rows.unsqueeze(0), values / self.ctx.world_size, grad.shape,
                                       check_invariants=False).coalesce()


def main_validates(validate, ctx, device):
    """``validate`` run by rank 0 only, its score broadcast so every rank takes the same decisions."""
    if validate is None:
        return None

    def run():
        score = torch.zeros(1, dtype=torch.float64, device=_tensor_device(ctx, device))
        if ctx.is_main:
            score[0] = float(validate())
        dist.broadcast(score, 0)
        return float(score.item())

    return run


def gather_floats(values, ctx, device):
    """``values`` (a list of floats, the same length on every rank) from every rank: ``[rank][i]``."""
    local = torch.tensor(values, dtype=torch.float64, device=_tensor_device(ctx, device))
    out = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(out, local)
    return [o.tolist() for o in out]


def throughput(history, batch_size):
    """Triples per second of each epoch of this rank's ``history`` (positives, not counting negatives)."""
    rates, previous = [], 0
    for record in history:
        steps, previous = record["step"] - previous, record["step"]
        rates.append(steps * batch_size / record["seconds"] if record["seconds"] > 0 else 0.0)
    return rates
