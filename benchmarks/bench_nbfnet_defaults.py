"""``KGEmbedder(model='nbfnet', emu=...)`` with every other parameter at its default, on kinship (issue 21).

The issue's row: with version 0.1's defaults this fit was killed for lack of
memory within its first two steps; the per-model defaults (``NBFNet.default_params``)
should fit a CPU and finish 20 epochs in minutes. Each setting (EMU on, off)
fits in its own process, one thread, with validation as the estimator's
defaults schedule it, and reports fit wall and CPU time, peak resident memory,
filtered test MRR and the per-epoch history.

    python benchmarks/bench_nbfnet_defaults.py
    python benchmarks/bench_nbfnet_defaults.py --settings emu --epochs 5

Writes ``benchmarks/results/nbfnet_defaults.json`` (or ``--out``).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, shared_dataset, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"emu": True, "off": False}
#: the resolved parameters worth printing beside the figures
SHOWN = ("dim", "batch_size", "n_negatives", "n_epochs", "learning_rate", "loss", "compile", "early_stopping",
         "eval_every")


def child(args, setting):
    import torch

    from kgestimator import KGEmbedder
    from kgestimator.models import resolve_defaults

    torch.set_num_threads(1)
    data = shared_dataset(args.dataset)
    est = KGEmbedder(model="nbfnet", emu=SETTINGS[setting], n_epochs=args.epochs, random_state=0, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    est.fit(data.train, valid=data.valid)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test = est.evaluate(data.test)
    params = est.get_params()
    sizes = resolve_defaults("nbfnet", **{k: params[k] for k in ("dim", "batch_size", "n_negatives")})
    return {"setting": setting, "params": {k: sizes.get(k, params[k]) for k in SHOWN},
            "epochs_run": len(est.history_), "fit_wall_s": wall, "fit_cpu_s": cpu,
            "test_mrr": test["mrr"], "test_hits@10": test["hits@10"], "peak_rss_mb": peak_rss_mb(),
            "history": [{k: h.get(k) for k in ("epoch", "loss", "valid_mrr")} for h in est.history_]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="kinship")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--settings", default="emu,off", help="comma-separated, from " + ",".join(SETTINGS))
    p.add_argument("--out", default=os.path.join(HERE, "results", "nbfnet_defaults.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child), default=str))
        return
    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {sorted(SETTINGS)}")
    print(f"KGEmbedder(model='nbfnet', emu=...) at its defaults on {args.dataset}, {args.epochs} epochs, "
          "one thread, each fit in its own process", flush=True)
    results = []
    for setting in settings:
        r = run_child(os.path.abspath(__file__), "--child", setting)
        if r is None:
            continue
        results.append(r)
        print(f"{setting:4s} {r['params']}\n     fit {r['fit_wall_s']:.0f} s wall ({r['fit_cpu_s']:.0f} s CPU), "
              f"{r['epochs_run']} epochs, peak {r['peak_rss_mb']:.0f} MB, test MRR {r['test_mrr']:.3f}, "
              f"Hits@10 {r['test_hits@10']:.3f}", flush=True)
    write_json(args.out, {"dataset": args.dataset, "epochs": args.epochs, "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
