"""float32 against bfloat16 autocast (``mixed_precision=True``) for the training step.

Each configuration trains in its own process (``_common.run_child``): one warm-up
epoch, then ``--epochs`` timed epochs, then filtered test evaluation (always
float32), so the same run reports step time, peak memory and what bfloat16 did
to quality::

    python benchmarks/bench_mixed_precision.py                       # FB15k-237, DistMult and ComplEx
    python benchmarks/bench_mixed_precision.py --models transe,rotate --epochs 1

Settings: d=100, 256 uniform negatives, batch 1000, Adam lr 0.01, softmax
cross-entropy, seed 0; EMU with the 'auto' values. On a CPU, bfloat16 pays off
only where the processor multiplies bfloat16 natively (AMX, AVX512-BF16; the
JSON records which flags this machine has); on CUDA it is the usual autocast.
"""

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_bf16_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in set(flags) if "bf16" in f or f.startswith("amx"))


def run_one(args, spec):
    import torch

    from kgestimator import KGEmbedder, load_dataset

    model, emu, mp = spec.split(":")
    data = load_dataset(args.dataset)
    est = KGEmbedder(model=model, dim=100, n_negatives=256, batch_size=1000, learning_rate=0.01,
                     emu=emu == "emu", mixed_precision=mp == "bf16", n_epochs=1 + args.epochs,
                     compile=args.compile, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(data.train)
        t0 = time.perf_counter()
        test = est.evaluate(data.test, filter_triples=data.valid)
    steps = est.history_[-1]["step"] - est.history_[0]["step"]
    timed = sum(h["seconds"] for h in est.history_[1:])
    return {"model": model, "emu": emu == "emu", "precision": mp, "timed_epochs": args.epochs,
            "ms_per_step": 1000 * timed / steps, "seconds_per_epoch": timed / args.epochs,
            "triples_per_second": steps * 1000 / timed, "eval_seconds": time.perf_counter() - t0,
            "test_mrr": test["mrr"], "test_hits@10": test["hits@10"], "final_loss": est.history_[-1]["loss"],
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--models", default="distmult,complex")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--compile", type=lambda s: s == "True", default=False)
    p.add_argument("--out", default=os.path.join(HERE, "results", "mixed_precision.json"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    config = {"dataset": args.dataset, "dim": 100, "n_negatives": 256, "batch_size": 1000, "optimizer": "adam",
              "learning_rate": 0.01, "loss": "ce", "timed_epochs": args.epochs, "compile": args.compile,
              "cpu_bf16_flags": cpu_bf16_flags(), "machine": machine()}
    print(json.dumps(config, indent=1), flush=True)
    rows = []
    print(f"{'model':<9} {'EMU':<4} {'precision':<9} {'ms/step':>8} {'s/epoch':>8} {'test MRR':>9} {'H@10':>6} "
          f"{'RSS MB':>7}", flush=True)
    for model in args.models.split(","):
        for emu in ("plain", "emu"):
            pair = {}
            for mp in ("fp32", "bf16"):
                r = run_child(__file__, "--one", f"{model}:{emu}:{mp}")
                if r is None:
                    continue
                pair[mp] = r
                rows.append(r)
                print(f"{model:<9} {emu:<4} {mp:<9} {r['ms_per_step']:8.1f} {r['seconds_per_epoch']:8.2f} "
                      f"{r['test_mrr']:9.4f} {r['test_hits@10']:6.3f} {r['peak_rss_mb']:7.0f}", flush=True)
            if len(pair) == 2:
                pair["bf16"]["speedup_vs_fp32"] = pair["fp32"]["ms_per_step"] / pair["bf16"]["ms_per_step"]
                pair["bf16"]["memory_vs_fp32"] = pair["bf16"]["peak_rss_mb"] / pair["fp32"]["peak_rss_mb"]
                print(f"  bf16 / fp32: {pair['bf16']['speedup_vs_fp32']:.2f}x faster, "
                      f"{pair['bf16']['memory_vs_fp32']:.2f}x the memory, "
                      f"MRR {pair['bf16']['test_mrr'] - pair['fp32']['test_mrr']:+.4f}", flush=True)
            write_json(args.out, {"config": config, "rows": rows})


if __name__ == "__main__":
    main()
