"""Which random walks should ``sampler='san'`` use by default? Restarted against chained, on graphs
that did not inform the question (BENCHMARKS.md §4).

On FB15k-237 and WN18RR the reference code's chained walks (``walks='chained'``)
reproduce the EMU paper's SAN rows and beat the library's restarted walks, whose pools hold
57-64% of the held-out answers (``san_pools.py``). A default is not chosen on two datasets, so
this script repeats the comparison on the small graphs: ``nations``, ``kinship`` and the
generated graphs of ``_common.GENERATED_GRAPHS``. Every cell fits
``KGEmbedder(model=..., sampler=SANSampler(walks=...), emu=...)`` with every
other parameter at the library's default, exactly as ``emu_defaults.py`` does for the uniform
sampler (whose cells give the uniform reference). One JSON file per cell under
``results/san_walks/``; a cell whose file exists is skipped, so an interrupted command resumes::

    python benchmarks/san_walks.py run --models distmult
    python benchmarks/san_walks.py report

Each dataset also gets one ``pools`` record (the held-out share of each kind of pool, as
``san_pools.py`` prints it for the large graphs). Test MRR is filtered over train, valid and test.
"""

import argparse
import glob
import json
import os
import re
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import benchmark_graph, machine, write_json  # noqa: E402
import san_pools  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "san_walks")
WALKS = ("restarted", "chained")
EMU = {"off": {"emu": False}, "auto": {"emu": True}}


def cell_path(dataset, model, walks, emu, seed):
    return os.path.join(RESULTS, f"{dataset}__{model}__{walks}__emu-{emu}__seed{seed}.json")


def run_cell(dataset, model, walks, emu, seed, data):
    from kgestimator import KGEmbedder
    from kgestimator.samplers import SANSampler

    est = KGEmbedder(model=model, sampler=SANSampler(walks=walks),
                     random_state=seed, n_threads=1, **EMU[emu])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(data.train, valid=data.valid)
        seconds = time.perf_counter() - t0
        m = est.evaluate(data.test, filter_triples=data.valid)
    return {"dataset": dataset, "model": model, "walks": walks, "emu": emu, "seed": seed,
            "walks_trained": est.sampler_.walks,
            "emu_params": est.emu_params_ if est.emu else None, "fit_seconds": seconds,
            "test": {k: m[k] for k in ("mrr", "hits@1", "hits@10")},
            "history": est.history_, "machine": machine()}


def pools_record(dataset, data, seed=0):
    train, held_out, n_ent, n_rel = san_pools.encode(data)
    rows = [san_pools.pool_stats(train, held_out, n_ent, n_rel, chained, seed) for chained in (False, True)]
    return {"dataset": dataset, "seed": seed, "n_entities": n_ent, "rows": rows, "machine": machine()}


def run(args):
    for dataset in args.datasets:
        data = benchmark_graph(dataset)
        path = os.path.join(RESULTS, f"{dataset}__pools.json")
        if not os.path.exists(path):
            write_json(path, pools_record(dataset, data))
        for model in args.models:
            for emu in args.emu:
                for walks in WALKS:
                    for seed in args.seeds:
                        path = cell_path(dataset, model, walks, emu, seed)
                        if os.path.exists(path):
                            continue
                        record = run_cell(dataset, model, walks, emu, seed, data)
                        write_json(path, record)
                        print(f"{dataset} {model} {walks} emu={emu} seed {seed}: test MRR "
                              f"{record['test']['mrr']:.4f} ({record['fit_seconds']:.0f} s)", flush=True)


def _uniform_reference(dataset, model, emu):
    """Test MRRs of the uniform sampler's cells at the same defaults (``emu_defaults.py``), if run.

    An ``'auto'`` cell may be stored under the named setting it resolves to (``scripts``, ...).
    """
    import emu_defaults

    twins = [s for s in emu_defaults.SETTINGS if emu_defaults.concrete(model, s) == emu_defaults.concrete(model, emu)]
    for setting in [emu] + [s for s in twins if s != emu]:
        pattern = os.path.join(HERE, "results", "emu_defaults", f"{dataset}__{model}__{setting}__seed*.json")
        # the library's defaults only: other configurations carry a suffix after the seed
        found = [json.load(open(f))["test"]["mrr"] for f in sorted(glob.glob(pattern))
                 if re.search(r"__seed\d+\.json$", f)]
        if found:
            return found
    return []


def _fmt(values):
    if not values:
        return "–"
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f} (n={len(values)})"


def report(args):
    cells = {}
    for f in glob.glob(os.path.join(RESULTS, "*__seed*.json")):
        r = json.load(open(f))
        cells.setdefault((r["dataset"], r["model"], r["emu"], r["walks"]), []).append(r["test"]["mrr"])
    print("| dataset | held-out answers in pool: restarted / chained | model | EMU | restarted | chained "
          "| chained − restarted | uniform (emu_defaults) |")
    print("|---|---|---|---|---|---|---|---|")
    wins = total = 0
    for dataset in sorted({k[0] for k in cells}):
        pools_path = os.path.join(RESULTS, f"{dataset}__pools.json")
        share = "–"
        if os.path.exists(pools_path):
            rows = json.load(open(pools_path))["rows"]
            share = " / ".join(f"{r['held_out_answers_in_pool']:.1%}" for r in rows)
        for model in sorted({k[1] for k in cells if k[0] == dataset}):
            for emu in EMU:
                restarted, chained = cells.get((dataset, model, emu, "restarted")), cells.get((dataset, model, emu, "chained"))
                if not restarted and not chained:
                    continue
                gap = f"{np.mean(chained) - np.mean(restarted):+.3f}" if restarted and chained else "–"
                if restarted and chained:
                    total += 1
                    wins += np.mean(chained) > np.mean(restarted)
                print(f"| {dataset} | {share} | {model} | {emu} | {_fmt(restarted)} | {_fmt(chained)} | {gap} "
                      f"| {_fmt(_uniform_reference(dataset, model, emu))} |")
    print(f"chained above restarted in {wins} of {total} (dataset, model, EMU) rows")


def main():
    global RESULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--datasets", default="kg-sparse,kg-unseen,kg-check-2,kinship")
    p.add_argument("--models", default="distmult,rotate")
    p.add_argument("--emu", default="off,auto")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--results", default=RESULTS)
    args = p.parse_args()
    RESULTS = os.path.abspath(args.results)
    args.datasets, args.models = args.datasets.split(","), args.models.split(",")
    args.emu, args.seeds = args.emu.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = sorted(set(args.emu) - set(EMU))
    if unknown:
        p.error(f"unknown --emu value(s) {unknown}; choose from {sorted(EMU)}")
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
