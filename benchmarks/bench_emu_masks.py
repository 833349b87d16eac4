"""The price of the reference's EMU sampling: step time with ``emu_masks='independent'`` over ``'shared'``.

Per model and ``neg_chunk_size``, one training step (batch, forward with the
EMU term, backward, Adam) of the shared-mask and of the independent-mask
configuration, alternated ``--repeats`` times in one process (after a warm-up
step each), so that load from other work hits both alike; the ratio is the
ratio of the medians. The clock is this process's CPU time with one torch
thread by default, which leaves out the time spent waiting for a core on a
shared machine. The EMU parameters are the estimator's ``'auto'`` values and
``compile='auto'`` (on for FB15k-237: RotatE's fused distances run in the C
kernels, for the vanilla term in both configurations and for the shared
masks' EMU term).

    python benchmarks/bench_emu_masks.py                 # FB15k-237, DistMult and RotatE, chunks 1 and 100
    python benchmarks/bench_emu_masks.py --repeats 3     # quicker, noisier

Writes ``benchmarks/results/emu_masks.json`` (or ``--out``).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402
from bench_speed_table import _clock, interleaved, make_step  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MASKS = ("shared", "independent")


def measure(args, clock):
    """``{model: {chunk: {...}}}``: step times of both mask modes and their ratio."""
    out = {}
    for model in args.models:
        out[model] = {}
        for chunk in args.chunks:
            specs = {m: {"dataset": args.dataset, "model": model, "sampler": "uniform", "emu": True,
                         "dim": args.dim, "n_negatives": args.n_negatives, "batch_size": args.batch_size,
                         "compile": "auto", "neg_chunk_size": chunk, "emu_masks": m} for m in MASKS}
            t0 = time.perf_counter()
            times = interleaved({m: make_step(s) for m, s in specs.items()}, args.repeats, clock)
            med = {m: times[m]["median"] for m in MASKS}
            out[model][str(chunk)] = {"ms": {m: 1000 * med[m] for m in MASKS}, "spread": times,
                                      "independent_over_shared": med["independent"] / med["shared"]}
            print(f"{model}, neg_chunk_size={chunk}: shared {1000 * med['shared']:.0f} ms, independent "
                  f"{1000 * med['independent']:.0f} ms a step, ratio {med['independent'] / med['shared']:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--models", default="distmult,rotate")
    p.add_argument("--chunks", default="1,100", help="neg_chunk_size values (100: the estimator's default)")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--out", default=os.path.join(HERE, "results", "emu_masks.json"))
    args = p.parse_args()
    args.models = args.models.split(",")
    args.chunks = [int(c) for c in args.chunks.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    print(f"config: {json.dumps(vars(args))}", flush=True)
    result = {"machine": machine(), "config": vars(args), "steps": measure(args, _clock(args.clock))}
    write_json(args.out, result)
    print(json.dumps({m: {c: r["independent_over_shared"] for c, r in per.items()}
                      for m, per in result["steps"].items()}, indent=1))


if __name__ == "__main__":
    main()
