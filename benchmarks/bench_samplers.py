"""Negative samplers compared at one fixed budget: quality and time per epoch relative to uniform.

Each (dataset, sampler, EMU) configuration runs in its own subprocess. The
budget is a fixed number of epochs per dataset, identical for every sampler.

    python benchmarks/bench_samplers.py --datasets FB15k-237,WN18RR --epochs 3,6
    python benchmarks/bench_samplers.py --datasets nations --epochs 50 --n-negatives 64  # quick look
    python benchmarks/bench_samplers.py --timing-steps 20 --out benchmarks/results/samplers_timing.json

Prints one line per run, a table with time per epoch as a ratio to uniform
(same dataset, same EMU setting), and writes ``benchmarks/results/samplers.json``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, write_json  # noqa: E402

SAMPLERS = ["uniform", "san", "nscaching", "adversarial"]


def run_one(args, dataset, epochs, sampler, emu):
    import torch

    from kgestimator import KGEmbedder, load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(dataset)
    params = dict(model=args.model, sampler=sampler, emu=emu, dim=args.dim, n_negatives=args.n_negatives,
                  batch_size=args.batch_size, n_epochs=epochs, learning_rate=args.lr,
                  random_state=args.seed, max_steps=args.timing_steps)
    est = KGEmbedder(**params)
    t0 = time.perf_counter()
    est.fit(data.train)
    fit_s = time.perf_counter() - t0
    timing = bool(args.timing_steps)  # a step-time probe: no evaluation
    metrics = {"mrr": float("nan"), "hits@1": float("nan"), "hits@10": float("nan")} if timing else \
        est.evaluate(data.test, filter_triples=data.valid)
    epoch_s = [h["seconds"] for h in est.history_]
    return {"dataset": dataset, "sampler": sampler, "emu": bool(emu), "params": params,
            "sampler_params": est.sampler_.get_params(), "emu_params": est.emu_params_,
            "epochs": len(epoch_s), "fit_seconds": fit_s,
            # the first epoch carries one-off costs (SAN pools, DANS networks); report both
            "setup_seconds": fit_s - sum(epoch_s),
            "seconds_per_epoch": sum(epoch_s) / len(epoch_s), "peak_rss_mb": peak_rss_mb(),
            "test": {k: metrics[k] for k in ("mrr", "hits@1", "hits@10")},
            "ms_per_step": 1000 * sum(epoch_s) / est.history_[-1]["step"],
            "final_loss": est.history_[-1]["loss"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="FB15k-237,WN18RR")
    p.add_argument("--epochs", default="3,6", help="epochs per dataset (one value or one per dataset)")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--methods", default="plain,emu")
    p.add_argument("--model", default="distmult")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--timing-steps", type=int, default=None,
                   help="only time this many steps per configuration (no evaluation)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each run (default: torch's)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    datasets = args.datasets.split(",")
    epochs = [int(e) for e in args.epochs.split(",")]
    epochs = dict(zip(datasets, epochs if len(epochs) == len(datasets) else epochs * len(datasets)))

    if args.one:
        dataset, sampler, method = args.one.split(":")
        print(json.dumps(run_one(args, dataset, epochs[dataset], sampler, method == "emu")))
        return

    out = args.out or os.path.join(os.path.dirname(__file__), "results", "samplers.json")
    print(f"# {args.model} d={args.dim} N={args.n_negatives} B={args.batch_size} lr={args.lr} "
          f"seed={args.seed} epochs={epochs}", flush=True)
    results = []
    for dataset in datasets:
        for method in args.methods.split(","):
            for sampler in args.samplers.split(","):
                r = run_child(__file__, "--one", f"{dataset}:{sampler}:{method}")
                if r is None:
                    continue
                results.append(r)
                print(f"{dataset:10s} {sampler:12s} {method:6s} MRR {r['test']['mrr']:.4f} "
                      f"H@10 {r['test']['hits@10']:.4f}  {r['seconds_per_epoch']:7.1f} s/epoch "
                      f"(setup {r['setup_seconds']:.1f} s)  peak {r['peak_rss_mb']:.0f} MB", flush=True)
                write_json(out, {"machine": machine(), "config": vars(args), "epochs": epochs,
                                 "results": results, "complete": False})
    for r in results:
        base = next((u for u in results if u["sampler"] == "uniform" and u["dataset"] == r["dataset"]
                     and u["emu"] == r["emu"]), None)
        r["epoch_time_vs_uniform"] = r["seconds_per_epoch"] / base["seconds_per_epoch"] if base else None
    print("\n| dataset | sampler | EMU | test MRR | Hits@10 | s/epoch | vs uniform |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r['epoch_time_vs_uniform']:.2f}x" if r["epoch_time_vs_uniform"] else "-"
        print(f"| {r['dataset']} | {r['sampler']} | {'yes' if r['emu'] else 'no'} | {r['test']['mrr']:.4f} | "
              f"{r['test']['hits@10']:.4f} | {r['seconds_per_epoch']:.1f} | {ratio} |")
    write_json(out, {"machine": machine(), "config": vars(args), "epochs": epochs, "results": results,
                     "complete": True})


if __name__ == "__main__":
    main()
