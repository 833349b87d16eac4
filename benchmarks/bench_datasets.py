"""Filtered test MRR / Hits@10 of each model, uniform vs uniform + EMU, on a real dataset.

Each configuration runs in its own subprocess so that its peak memory is its own.

    python benchmarks/bench_datasets.py --dataset nations --models all
    python benchmarks/bench_datasets.py --dataset FB15k-237 --models distmult --epochs 30 \\
        --n-negatives 256 --batch-size 1000 --no-early-stopping

Prints one line per run and writes ``benchmarks/results/<dataset>.json``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, write_json  # noqa: E402

MODELS = ["distmult", "complex", "transe", "rotate", "hake"]


def run_one(args, model, emu):
    """Train and evaluate one configuration in this process; return a result dict."""
    from kgestimator import KGEmbedder, load_dataset

    data = load_dataset(args.dataset)
    params = dict(model=model, emu=emu, dim=args.dim, n_negatives=args.n_negatives,
                  batch_size=args.batch_size, neg_chunk_size=args.neg_chunk_size,
                  n_epochs=args.epochs, learning_rate=args.lr, random_state=args.seed,
                  early_stopping=args.early_stopping, eval_every=args.eval_every, patience=args.patience)
    est = KGEmbedder(**params)
    t0 = time.perf_counter()
    est.fit(data.train, valid=data.valid if args.early_stopping else None)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = est.evaluate(data.test, filter_triples=data.valid)
    eval_s = time.perf_counter() - t0
    train_epochs = [h["seconds"] for h in est.history_]
    return {"dataset": args.dataset, "model": model, "method": "uniform+EMU" if emu else "uniform",
            "params": params, "emu_params": est.emu_params_, "epochs_run": len(est.history_),
            "fit_seconds": fit_s, "seconds_per_epoch": sum(train_epochs) / len(train_epochs),
            "eval_seconds": eval_s, "peak_rss_mb": peak_rss_mb(),
            "test": {k: metrics[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "n_triples", "n_unknown")},
            "final_loss": est.history_[-1]["loss"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="nations")
    p.add_argument("--models", default="all")
    p.add_argument("--methods", default="uniform,emu")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n-negatives", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--neg-chunk-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false")
    p.add_argument("--out", default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.one:  # child process: one configuration, JSON on stdout
        model, method = args.one.split(":")
        print(json.dumps(run_one(args, model, method == "emu")))
        return

    models = MODELS if args.models == "all" else args.models.split(",")
    methods = args.methods.split(",")
    print(f"# {args.dataset}: dim={args.dim} N={args.n_negatives} B={args.batch_size} "
          f"chunk={args.neg_chunk_size} epochs<={args.epochs} lr={args.lr} seed={args.seed} "
          f"early_stopping={args.early_stopping}", flush=True)
    results = []
    for model in models:
        for method in methods:
            r = run_child(__file__, "--one", f"{model}:{method}")
            if r is None:
                raise SystemExit(f"{model}:{method} failed")
            results.append(r)
            t = r["test"]
            print(f"{model:9s} {r['method']:12s} MRR {t['mrr']:.4f} H@1 {t['hits@1']:.4f} "
                  f"H@10 {t['hits@10']:.4f} epochs {r['epochs_run']:4d} fit {r['fit_seconds']:7.1f}s "
                  f"({r['seconds_per_epoch']:.2f} s/epoch) eval {r['eval_seconds']:.2f}s "
                  f"peak {r['peak_rss_mb']:.0f} MB", flush=True)
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"{args.dataset}.json")
    write_json(out, {"config": vars(args), "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
