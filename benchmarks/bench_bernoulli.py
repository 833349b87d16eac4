"""Bernoulli masks from 16-bit lanes against one float per element (``torch.rand(shape) < p``), and EMU's kept table.

EMU's mutation masks and embedding dropout draw a Bernoulli mask; ``kgestimator._random``
takes three 16-bit uniforms from each 64-bit draw. This script times the masks
themselves and the training steps they sit in, against the float masks of
earlier versions, interleaved in one process (``--rounds`` rounds, the median
of each), so the ratio holds even on a busy machine::

    python benchmarks/bench_bernoulli.py                       # masks + steps, FB15k-237
    python benchmarks/bench_bernoulli.py --steps 0             # the masks only (no dataset)

Steps (one CPU thread, ``max_steps`` fits, training seconds from ``history_``):

* ``libkge-dropout``: the ``libkge-fb15k237-distmult`` preset (dropout 0.42 / 0.41, 402 negatives);
* ``1vsall-emu``: ComplEx, kbc recipe, 1vsAll + EMU ('auto'): one mask row per entity a step;
* ``independent-emu``: DistMult + EMU with ``emu_masks='independent'`` ((B, N, d) masks);
* ``kept``: the ``1vsall-emu`` step with the kept coordinates of the table as a product by the
  bool mask (today) against ``masked_fill`` (earlier).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, shared_dataset, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def float_mask(shape, prob, generator=None, device=None):
    """The earlier masks: one float uniform per element."""
    device = device if device is not None else (generator.device if generator is not None else "cpu")
    return torch.rand(shape, generator=generator, device=device) < prob


def use_masks(kind):
    """Point the library's mask calls at the lane masks (``'lanes'``) or the float masks."""
    from kgestimator import _random, mutation
    from kgestimator.models import _base

    fn = _random.bernoulli_mask if kind == "lanes" else float_mask
    mutation.bernoulli_mask = fn
    _base.bernoulli_mask = fn


def _masked_fill_mutated(q, pos, neg, mask):
    """The earlier bilinear EMU scores: the kept coordinates by ``masked_fill`` (a copy, then a fill)."""
    kept = neg.masked_fill(mask, 0.0)
    return torch.bmm(q, kept.transpose(1, 2)) + torch.matmul(q * pos, mask.to(neg.dtype).transpose(-1, -2))


def time_kept(train, steps, rounds):
    """The 1vsAll ComplEx + EMU step with the kept table by a bool product (today) and by masked_fill."""
    from kgestimator import PRESETS, KGEmbedder, mutation

    today = mutation._bilinear_mutated
    per = {"product": [], "masked_fill": []}
    for _ in range(rounds):
        for kind, fn in (("product", today), ("masked_fill", _masked_fill_mutated)):
            mutation._bilinear_mutated = fn
            est = KGEmbedder(**dict(PRESETS["kbc-fb15k237-complex-n3"], emu=True, max_steps=steps, random_state=0,
                                    verbose=0, n_threads=1)).fit(train)
            per[kind].append(sum(h["seconds"] for h in est.history_) / est.history_[-1]["step"] * 1e3)
    mutation._bilinear_mutated = today
    new, old = statistics.median(per["product"]), statistics.median(per["masked_fill"])
    print(f"1vsall-emu kept table: bool product {new:7.1f} ms/step, masked_fill {old:7.1f} ms/step, "
          f"{old / new:.2f}x", flush=True)
    return {"product_ms_per_step": new, "masked_fill_ms_per_step": old, "speedup": old / new, "rounds": per}


def time_masks(sizes, rounds):
    from kgestimator._random import bernoulli_mask

    rows = []
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        per = {"lanes": [], "float": []}
        for _ in range(rounds):
            for kind, fn in (("lanes", bernoulli_mask), ("float", float_mask)):
                fn((n,), 0.4, g)
                t0 = time.perf_counter()
                for _ in range(5):
                    fn((n,), 0.4, g)
                per[kind].append((time.perf_counter() - t0) / 5 * 1e3)
        lanes, flt = statistics.median(per["lanes"]), statistics.median(per["float"])
        rows.append({"elements": n, "lanes_ms": lanes, "float_ms": flt, "speedup": flt / lanes})
        print(f"mask of {n:>10,} elements: lanes {lanes:7.2f} ms, float {flt:7.2f} ms, {flt / lanes:.2f}x", flush=True)
    return rows


def step_configs():
    from kgestimator import PRESETS

    return {
        "libkge-dropout": dict(PRESETS["libkge-fb15k237-distmult"], lr_scheduler=None, lr_scheduler_params=None,
                               early_stopping=False),
        "1vsall-emu": dict(PRESETS["kbc-fb15k237-complex-n3"], emu=True),
        "independent-emu": dict(model="distmult", emu=True, emu_masks="independent"),
    }


def time_steps(train, steps, rounds):
    from kgestimator import KGEmbedder

    rows = []
    for name, params in step_configs().items():
        per = {"lanes": [], "float": []}
        for _ in range(rounds):
            for kind in ("lanes", "float"):
                use_masks(kind)
                est = KGEmbedder(**dict(params, max_steps=steps, random_state=0, verbose=0, n_threads=1))
                est.fit(train)
                per[kind].append(sum(h["seconds"] for h in est.history_) / est.history_[-1]["step"] * 1e3)
        use_masks("lanes")
        lanes, flt = statistics.median(per["lanes"]), statistics.median(per["float"])
        rows.append({"config": name, "lanes_ms_per_step": lanes, "float_ms_per_step": flt, "speedup": flt / lanes,
                     "rounds": per})
        print(f"{name:>16}: lanes {lanes:7.1f} ms/step, float masks {flt:7.1f} ms/step, {flt / lanes:.2f}x", flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="steps per timed fit (0: masks only)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "bernoulli.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    config = {"rounds": args.rounds, "steps": args.steps, "threads": 1, "dataset": "FB15k-237"}
    print("config:", config, flush=True)
    out = {"machine": machine(), "config": config,
           "masks": time_masks([25_600, 1_656_320, 2_908_200, 25_600_000], args.rounds)}
    if args.steps:
        train = shared_dataset("FB15k-237").train
        out["steps"] = time_steps(train, args.steps, args.rounds)
        out["kept"] = time_kept(train, args.steps, args.rounds)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
