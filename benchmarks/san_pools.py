"""SAN's candidate pools with restarted against chained random walks (BENCHMARKS.md §8).

The EMU paper's SAN rows used the reference code's walks, which do not restart:
each walk continues from the previous walk's endpoint (``walks='chained'``); the
SANS paper restarts every walk from the entity (``walks='restarted'``). This script builds
both kinds of pool on a dataset's training graph with the sampler's defaults
(3-step walks, 1,000 walks, at most 1,000 ids a pool) and prints, for each:

* the pool sizes (distinct entities) and the mean training degree of their members;
* how often a held-out answer can be drawn as a negative: the share of the
  valid and test triples ``(h, r, t)`` whose answer ``t`` lies in the pool of the
  kept entity ``h`` (and ``h`` in the pool of ``t``, for head batches), against
  the share a uniform draw of the same pool size would give.

Usage::

    python benchmarks/san_pools.py --dataset FB15k-237 --out benchmarks/results/emu/san_pools_FB15k-237.json
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402


def encode(data):
    """Integer ids for the training entities and relations; held-out triples with unseen labels dropped."""
    from kgestimator.data import build_vocabulary, encode as encode_labels

    ents, rels = build_vocabulary(data.train)

    def ids(triples):
        columns = [encode_labels(triples[:, j], vocab) for j, vocab in enumerate((ents, rels, ents))]
        known = np.all([k for _, k in columns], axis=0)
        return np.stack([i for i, _ in columns], axis=1)[known]

    return ids(data.train), np.concatenate([ids(data.valid), ids(data.test)]), len(ents), len(rels)


def in_pool(indptr, indices, anchor, target):
    """Whether each ``target`` id lies in the pool of its ``anchor`` (CSR pools, any order within a row)."""
    n = int(max(indices.max(initial=0), target.max(initial=0))) + 1
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return np.isin(anchor * n + target, rows * n + indices)


def pool_stats(train, held_out, n_ent, n_rel, chained, seed):
    import torch

    from kgestimator.samplers import SANSampler

    t0 = time.perf_counter()
    sampler = SANSampler(walks="chained" if chained else "restarted").fit(
        torch.as_tensor(train), n_ent, n_rel, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    indptr, indices = sampler.pool_indptr_.numpy(), sampler.pool_indices_.numpy()
    size = np.diff(indptr)
    degree = np.bincount(np.r_[train[:, 0], train[:, 2]], minlength=n_ent)
    tail = in_pool(indptr, indices, held_out[:, 0], held_out[:, 2])
    head = in_pool(indptr, indices, held_out[:, 2], held_out[:, 0])
    # a pool of the same size drawn uniformly holds a given answer with probability size / n_entities
    chance = np.r_[size[held_out[:, 0]], size[held_out[:, 2]]].mean() / n_ent
    # the key of the records committed before SANSampler had `walks`
    return {"legacy_chained_walks": chained, "build_seconds": seconds,
            "pool_size_mean": float(size.mean()), "pool_size_median": float(np.median(size)),
            "member_degree_mean": float(degree[indices].mean()), "entity_degree_mean": float(degree.mean()),
            "held_out_answers_in_pool": float(np.r_[tail, head].mean()),
            "same_size_uniform_pool": float(chance)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from kgestimator import load_dataset

    train, held_out, n_ent, n_rel = encode(load_dataset(args.dataset))
    print(f"dataset {args.dataset}: {n_ent} entities, {len(train)} training triples, "
          f"{len(held_out)} valid + test triples with training labels; SANSampler defaults, seed {args.seed}")
    rows = []
    for chained in (False, True):
        r = pool_stats(train, held_out, n_ent, n_rel, chained, args.seed)
        rows.append(r)
        print(f"walks={'chained' if chained else 'restarted'}: pool {r['pool_size_mean']:.0f} entities on average "
              f"(median {r['pool_size_median']:.0f}); members' mean degree {r['member_degree_mean']:.0f} "
              f"(all entities {r['entity_degree_mean']:.0f}); held-out answers in the kept entity's pool "
              f"{r['held_out_answers_in_pool']:.1%} (a uniform pool of the same size: "
              f"{r['same_size_uniform_pool']:.1%}); built in {r['build_seconds']:.0f} s")
    if args.out:
        write_json(args.out, {"dataset": args.dataset, "seed": args.seed, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
