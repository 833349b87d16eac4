"""Rank functions for tests/test_distributed.py, run by ``torch.multiprocessing.spawn``.

They live outside the test module so that each spawned process imports only
this small module (and kgestimator), not pytest's test module and fixtures.
"""

import hashlib
import json
import os

import torch
import torch.distributed as dist

from kgestimator import KGEmbedder, make_kg
from kgestimator import distributed as kgdist

#: the generated graph of the MRR comparison (about 2,400 training triples)
GRAPH = dict(n_entities=100, n_relations=8, n_triples=3000, random_state=0)


def leave():
    """Tear the group down together: a rank that destroys its group while a peer still
    computes can abort in gloo's worker threads (SIGABRT, seen once in CI)."""
    dist.barrier()
    dist.destroy_process_group()


def join(rank, world, port):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def fit_rank(rank, world, port, configs, out_dir):
    """Fit each ``{name: params}`` with ``distributed=True``, one after the other in one process
    group (a spawn costs seconds of imports); write what the tests check to ``<name>.rank<r>.json``."""
    join(rank, world, port)
    kg = make_kg(**GRAPH)
    for name, params in configs.items():
        est = KGEmbedder(**params, distributed=True).fit(kg.train, valid=kg.valid)
        weights = b"".join(t.detach().cpu().numpy().tobytes() for t in est.model_.state_dict().values())
        result = {"distributed": est.distributed_, "history": est.history_,
                  "weights": hashlib.sha256(weights).hexdigest(),
                  "mrr": est.score(kg.test) if rank == 0 else None}
        with open(os.path.join(out_dir, f"{name}.rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
    leave()


def gradient_rank(rank, world, port):
    """Averaged per-rank gradients must equal the full batch's gradient, dense and sparse
    (raises otherwise, which fails ``spawn``)."""
    join(rank, world, port)
    ctx = kgdist.init(torch.device("cpu"))
    for sparse in (False, True):
        _check_gradients(ctx, rank, world, sparse)
    leave()


def _check_gradients(ctx, rank, world, sparse):
    from kgestimator.models import MODELS

    model = MODELS["complex"](50, 5, 8, 6.0, generator=torch.Generator().manual_seed(0))
    model.sparse = sparse
    g = torch.Generator().manual_seed(1)
    triples = torch.stack([torch.randint(0, 50, (40,), generator=g), torch.randint(0, 5, (40,), generator=g),
                           torch.randint(0, 50, (40,), generator=g)], 1)

    def loss_of(t):
        q = model.query(model.entities(t[:, 0]), model.relations(t[:, 1]), "tail")
        return (model.match(q, model.entities(t[:, 2])) ** 2).mean()

    full = loss_of(triples)
    full.backward()
    expected = [p.grad.to_dense().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    half = triples.shape[0] // world
    loss = loss_of(triples[rank * half:(rank + 1) * half])
    loss.backward()
    loss = kgdist.GradientAverager(ctx, "cpu")(model, loss)
    for (name, p), e in zip(model.named_parameters(), expected, strict=True):
        assert p.grad.is_sparse == sparse, (name, p.grad.layout)
        assert torch.allclose(p.grad.to_dense(), e, atol=1e-6), (name, float((p.grad.to_dense() - e).abs().max()))
    assert torch.allclose(loss, full.detach(), atol=1e-6), (float(loss), float(full))
