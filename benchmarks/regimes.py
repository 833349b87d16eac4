"""Training regimes (issue 16): 1vsAll / KvsAll, reciprocal relations, N3, dropout, schedules, EMU on top.

One command per cell (a table row is one or two cells); every cell is resumable:

    python benchmarks/regimes.py list                      # the cells and their parameters
    python benchmarks/regimes.py run CELL [CELL ...]       # train + evaluate; skips finished cells
    python benchmarks/regimes.py run CELL --epochs 3 --tag short   # a short check, own JSON/checkpoint
    python benchmarks/regimes.py run CELL --max-steps 1000 --tag s1000
    python benchmarks/regimes.py report                    # the table from the JSON files
    python benchmarks/regimes.py memory                    # 1vsAll step memory at 1e5 and 1e6 entities
    python benchmarks/regimes.py throughput                # 1vsAll vs sampled epoch, ComplEx, FB15k-237
    python benchmarks/regimes.py precision --rounds 2      # bfloat16 autocast in 1vsAll: step times, quality

Each cell trains with ``checkpoint_dir=<results>/ckpt/<cell>`` and
``checkpoint_every`` steps (``--checkpoint-steps``), so a killed run loses at
most that many steps: rerunning the same command resumes it. A finished cell
writes ``<results>/<cell>.json`` (parameters, per-epoch history, filtered test
metrics, wall time) and is skipped afterwards. Test metrics: filtered by
train + valid + test, realistic ranks, both directions (ALGORITHMS.md §6).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import benchmark_graph, machine, peak_rss_mb, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "regimes")


def _cells():
    from kgestimator import PRESETS

    # BENCHMARKS.md §1 protocol for the small graphs: dim 100, batch 500, <= 200 epochs,
    # validation every 10 epochs, patience 3, Adam lr 0.01
    small = dict(dim=100, batch_size=500, n_epochs=200, eval_every=10, patience=3, early_stopping=True,
                 learning_rate=0.01, reciprocal=True, training="1vsall")
    cells = {}
    # the generated graphs check the small-graph findings on graphs no choice was made on
    for ds in ("nations", "kinship", "kg-check", "kg-check-2"):
        for model in ("distmult", "complex"):
            cells[f"{ds}-{model}-1vsall"] = (ds, dict(small, model=model))
            cells[f"{ds}-{model}-1vsall-emu"] = (ds, dict(small, model=model, emu=True))
            cells[f"{ds}-{model}-kvsall"] = (ds, dict(small, model=model, training="kvsall", label_smoothing=0.1))
            # today's regime under the same protocol: the baseline of each row, with and without EMU
            sampled = dict(small, model=model, training="negative_sampling", reciprocal=False)
            cells[f"{ds}-{model}-ns"] = (ds, sampled)
            cells[f"{ds}-{model}-ns-emu"] = (ds, dict(sampled, emu=True))
    kbc_fb = PRESETS["kbc-fb15k237-complex-n3"]
    kbc_wn = PRESETS["kbc-wn18rr-complex-n3"]
    for ds, kbc in (("FB15k-237", kbc_fb), ("WN18RR", kbc_wn)):
        key = ds.lower().replace("-", "")
        for model in ("distmult", "complex"):
            cells[f"{key}-{model}-kbc"] = (ds, dict(kbc, model=model))
            cells[f"{key}-{model}-kbc-emu"] = (ds, dict(kbc, model=model, emu=True))
        cells[f"{key}-complex-kbc-d500"] = (ds, dict(kbc, dim=500))
        for model in ("distmult", "complex"):
            preset = f"libkge-{key}-{model}"
            cells[preset] = (ds, dict(PRESETS[preset]))
    # TransE in 1vsAll: the blocked (non-matrix-product) path; lr and batch as today's TransE runs
    cells["fb15k237-transe-1vsall"] = ("FB15k-237", dict(model="transe", dim=100, training="1vsall",
                                                         reciprocal=True, learning_rate=0.001, batch_size=500,
                                                         n_epochs=50, eval_every=5, early_stopping=True,
                                                         patience=2))
    return cells


def _path(results, name, tag):
    return os.path.join(results, f"{name}{'@' + tag if tag else ''}.json")


def run_cell(name, results, epochs=None, tag=None, checkpoint_steps=2000, seed=0, eval_every=None,
             max_steps=None, valid_filter_test=False, overrides=None):
    """Train and record one cell; ``overrides`` replace cell parameters (``--set``, ``--mixed-precision``, ...)."""
    from kgestimator import KGEmbedder

    out = _path(results, name, tag)
    if os.path.exists(out):
        print(f"{name}{'@' + tag if tag else ''}: done already ({out})", flush=True)
        return
    dataset, params = _cells()[name]
    params = dict(params, random_state=seed, verbose=0)
    if epochs is not None:
        params["n_epochs"] = epochs
        params["eval_every"] = min(params.get("eval_every", 5), epochs)
    if eval_every is not None:
        params["eval_every"] = eval_every
    if max_steps is not None:
        params["max_steps"] = max_steps
    params.update(overrides or {})
    ckpt = os.path.join(results, "ckpt", f"{name}{'@' + tag if tag else ''}")
    data = benchmark_graph(dataset)
    est = KGEmbedder(**params, checkpoint_dir=ckpt, checkpoint_every=checkpoint_steps)
    print(f"# {name}: {dataset} {json.dumps({k: v for k, v in params.items()}, default=str)}", flush=True)
    t0 = time.perf_counter()
    # LibKGE and kbc select on validation MRR filtered with the test triples too
    est.fit(data.train, valid=data.valid, valid_filter=data.test if valid_filter_test else None)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = est.evaluate(data.test, filter_triples=data.valid)
    eval_s = time.perf_counter() - t0
    # the fitted model's validation MRR both ways: how far the figure the fit selects on reads
    # from LibKGE's (filtered with test), on this graph
    valid_mrr = {"train+valid": est.evaluate(data.valid)["mrr"],
                 "train+valid+test": est.evaluate(data.valid, filter_triples=data.test)["mrr"]}
    history = est.history_
    record = {
        "cell": name, "tag": tag, "dataset": dataset, "params": params, "emu_params": est.emu_params_,
        "machine": machine(),
        "steps": history[-1]["step"] if history else 0, "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history), "fit_seconds_this_process": fit_s,
        "eval_seconds": eval_s, "peak_rss_mb": peak_rss_mb(), "history": history,
        "best_valid_mrr": max((h["valid_mrr"] for h in history if "valid_mrr" in h), default=None),
        "valid_filter": "test" if valid_filter_test else None, "final_valid_mrr_filtered_by": valid_mrr,
        "test": {k: metrics[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "n_triples")},
    }
    print(f"{name}: test MRR {metrics['mrr']:.4f} H@10 {metrics['hits@10']:.4f}, {record['steps']} steps, "
          f"{record['train_seconds']:.0f} s training", flush=True)
    write_json(out, record)


#: today's best filtered test MRR per dataset and model (BENCHMARKS.md §1 and §8, issue 16's table)
TODAY = {("nations", "distmult"): 0.714, ("nations", "complex"): 0.677, ("kinship", "distmult"): 0.506,
         ("kinship", "complex"): 0.794, ("FB15k-237", "distmult"): 0.317, ("FB15k-237", "complex"): 0.324,
         ("FB15k-237", "transe"): 0.303, ("WN18RR", "distmult"): 0.439, ("WN18RR", "complex"): 0.462}


def _seed_group(r):
    """Rows that differ only in the seed: seed 0 untagged, the others tagged ``seedN``."""
    tag = r.get("tag")
    if tag is None or (tag.startswith("seed") and tag[4:].isdigit()):
        return r["cell"]
    return None


#: the columns of the small-graph regime table: cell suffix -> heading
REGIME_COLUMNS = {"ns": "sampled", "ns-emu": "sampled + EMU", "1vsall": "1vsAll", "1vsall-emu": "1vsAll + EMU",
                  "kvsall": "KvsAll"}


def _regime_table(groups):
    """Test MRR per graph and model (rows) and regime (columns), mean ± sd over the seeds run."""
    cells = {}
    for cell, rs in groups.items():
        for suffix in REGIME_COLUMNS:
            ds, model = rs[0]["dataset"], rs[0]["params"]["model"]
            if cell == f"{ds}-{model}-{suffix}":
                cells[(ds, model, suffix)] = np.array([r["test"]["mrr"] for r in rs])
    rows = sorted({(ds, model) for ds, model, _ in cells})
    if not rows:
        return
    print("\nRegimes on the small graphs (test MRR, mean ± sd over seeds, n seeds):\n")
    print("| graph | model | " + " | ".join(REGIME_COLUMNS.values()) + " |")
    print("|---|---|" + "---|" * len(REGIME_COLUMNS))
    for ds, model in rows:
        out = []
        for suffix in REGIME_COLUMNS:
            v = cells.get((ds, model, suffix))
            out.append("–" if v is None else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f} ({v.size})" if v.size > 1
                                                                  else " (1)"))
        print(f"| {ds} | {model} | " + " | ".join(out) + " |")


def report(results):
    rows = []
    for fname in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        if fname.endswith(".json"):
            with open(os.path.join(results, fname)) as fh:
                r = json.load(fh)
            if "params" in r and "test" in r:  # memory.json, stopped runs and other records share the folder
                rows.append(r)
    print("| cell | dataset | model | dim | regime | test MRR | H@10 | today's best | steps | epochs | "
          "training time | seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups = {}
    for r in rows:
        p = r["params"]
        regime = p.get("training", "negative_sampling") + (" + reciprocal" if p.get("reciprocal") else "") + (
            " + EMU" if p.get("emu") else "")
        name = r["cell"] + (f" @{r['tag']}" if r.get("tag") else "")
        today = TODAY.get((r["dataset"], p["model"]))
        print(f"| {name} | {r['dataset']} | {p['model']} | {p['dim']} | {regime} | {r['test']['mrr']:.3f} | "
              f"{r['test']['hits@10']:.3f} | {today if today is not None else '–'} | {r['steps']} | "
              f"{r['epochs']} | {r['train_seconds'] / 60:.1f} min | {p['random_state']} |")
        if _seed_group(r) is not None:
            groups.setdefault(_seed_group(r), []).append(r)
    _regime_table(groups)
    several = {k: v for k, v in groups.items() if len(v) > 1}
    if several:
        print("\nOver seeds (mean ± sample standard deviation of the test MRR):\n")
        print("| cell | seeds | test MRR | H@10 | EMU values |")
        print("|---|---|---|---|---|")
        for cell, rs in sorted(several.items()):
            mrr = np.array([r["test"]["mrr"] for r in rs])
            h10 = np.array([r["test"]["hits@10"] for r in rs])
            values = "–"
            if rs[0]["params"].get("emu"):  # emu_params_ holds the resolved values with emu=False too
                emu = rs[0].get("emu_params") or {}
                values = ", ".join(f"{k} {v}" for k, v in emu.items() if k in ("alpha", "mutation_ratio", "beta"))
                values = values or "'auto' (not recorded)"
            print(f"| {cell} | {','.join(str(r['params']['random_state']) for r in rs)} | "
                  f"{mrr.mean():.3f} ± {mrr.std(ddof=1):.3f} | {h10.mean():.3f} ± {h10.std(ddof=1):.3f} | "
                  f"{values} |")


# ---------------------------------------------------------------------- memory
def _memory_child(n_entities, dim, batch):
    """One 1vsAll DistMult step (forward + backward) at ``n_entities``: extra peak memory over the baseline."""
    import torch

    from kgestimator import lcwa
    from kgestimator.models import make_model
    from kgestimator.training import TrainConfig

    g = torch.Generator().manual_seed(0)
    model = make_model("distmult", n_entities, 10, dim, 24.0, generator=g, reciprocal=True)
    triples = torch.stack([torch.randint(n_entities, (batch,), generator=g), torch.randint(10, (batch,), generator=g),
                           torch.randint(n_entities, (batch,), generator=g)], 1)
    step = lcwa.LCWAStep(model, triples, TrainConfig(training="1vsall"))
    # the gradient buffers exist before the step in any training run: count them in the baseline
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with open("/proc/self/statm") as fh:
        base_mb = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    t0 = time.perf_counter()
    loss = step(triples, 0, g)
    loss.backward()
    seconds = time.perf_counter() - t0
    queries = 2 * batch
    return {"n_entities": n_entities, "dim": dim, "batch_triples": batch, "queries": queries,
            "score_elements_budget": lcwa.SCORE_ELEMENTS, "chunks": -(-n_entities // max(1, lcwa.SCORE_ELEMENTS // queries)),
            "baseline_rss_mb": base_mb, "peak_rss_mb": peak_rss_mb(), "step_extra_mb": peak_rss_mb() - base_mb,
            "unchunked_scores_mb": queries * n_entities * 4 / 2 ** 20,
            "table_mb": n_entities * dim * 4 / 2 ** 20, "step_seconds": seconds, "loss": float(loss)}


def memory(results, dim, batch):
    rows = []
    for n in (100_000, 1_000_000):
        out = subprocess.run([sys.executable, __file__, "_memory", str(n), str(dim), str(batch)],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{n:>9} entities: {r['queries']} queries x {n} = {r['unchunked_scores_mb']:.0f} MB of scores "
              f"unchunked; {r['chunks']} chunks; step peak {r['step_extra_mb']:.0f} MB over a baseline of "
              f"{r['baseline_rss_mb']:.0f} MB (table {r['table_mb']:.0f} MB); {r['step_seconds']:.1f} s", flush=True)
    write_json(os.path.join(results, "memory.json"), {"machine": machine(), "rows": rows})


# ---------------------------------------------------------------------- throughput
_THROUGHPUT_CHILD = """
import json, sys
from kgestimator import KGEmbedder, load_dataset
kind, steps = sys.argv[1], int(sys.argv[2])
train = load_dataset("FB15k-237").train
kw = dict(model="complex", dim=100, batch_size=1000, learning_rate=0.01, random_state=0)
if kind == "1vsall":
    kw.update(training="1vsall", reciprocal=True)
elif kind == "ns-chunk1":
    kw.update(neg_chunk_size=1)
KGEmbedder(max_steps=3, **kw).fit(train)                       # warm-up: allocator, threads
est = KGEmbedder(max_steps=steps, **kw).fit(train)
print(json.dumps({"step_s": est.history_[-1]["seconds"] / steps, "steps_per_epoch": -(-len(train) // 1000)}))
"""


def throughput(results, rounds, steps_ns, steps_all):
    """Seconds per epoch of ComplEx on FB15k-237, interleaved: sampled negatives vs 1vsAll."""
    kinds = [("ns", steps_ns), ("ns-chunk1", steps_ns), ("1vsall", steps_all)]
    measured = {k: [] for k, _ in kinds}
    for i in range(rounds):
        for kind, steps in kinds:
            out = subprocess.run([sys.executable, "-c", _THROUGHPUT_CHILD, kind, str(steps)], capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            measured[kind].append(r["step_s"] * r["steps_per_epoch"])
            print(f"round {i}: {kind}: {measured[kind][-1]:.1f} s / epoch", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in measured.items() if v}
    ratios = {f"1vsall/{k}": med["1vsall"] / med[k] for k in ("ns", "ns-chunk1") if k in med and "1vsall" in med}
    print(json.dumps({"median_epoch_seconds": med, "ratios": ratios}, indent=1))
    write_json(os.path.join(results, "throughput.json"),
               {"machine": machine(), "epoch_seconds": measured, "median": med, "ratios": ratios,
                "settings": "ComplEx dim 100, batch 1000 triples, lr 0.01 Adam; ns: 256 negatives, "
                            "neg_chunk_size 100; ns-chunk1: neg_chunk_size 1; 1vsall: reciprocal, both directions"})


def precision(results, rounds, steps, seeds):
    """bfloat16 autocast in 1vsAll: kbc ComplEx step times on FB15k-237, and small-graph quality pairs."""
    import torch

    from kgestimator import PRESETS, KGEmbedder

    torch.set_num_threads(1)
    train = benchmark_graph("FB15k-237").train
    timing = {}
    for i in range(rounds):
        for emu in (False, True):
            for mp in (False, True):
                est = KGEmbedder(**dict(PRESETS["kbc-fb15k237-complex-n3"], emu=emu, mixed_precision=mp,
                                        max_steps=steps, random_state=0, verbose=0, n_threads=1)).fit(train)
                ms = sum(h["seconds"] for h in est.history_) / est.history_[-1]["step"] * 1e3
                timing.setdefault(f"emu={emu} bf16={mp}", []).append(ms)
                print(f"round {i}: kbc ComplEx emu={emu} mixed_precision={mp}: {ms:.1f} ms/step", flush=True)
    quality = []
    for cell in ("nations-distmult-1vsall", "kinship-complex-1vsall", "kinship-complex-1vsall-emu",
                 "kg-check-2-complex-1vsall-emu"):
        dataset, params = _cells()[cell]
        data = benchmark_graph(dataset)
        for seed in seeds:
            row = {"cell": cell, "seed": seed}
            for mp in (False, True):
                est = KGEmbedder(**dict(params, random_state=seed, verbose=0, mixed_precision=mp, n_threads=1))
                est.fit(data.train, valid=data.valid)
                row["bf16" if mp else "fp32"] = est.evaluate(data.test, filter_triples=data.valid)["mrr"]
            quality.append(row)
            print(f"{cell} seed {seed}: test MRR fp32 {row['fp32']:.4f}, bf16 {row['bf16']:.4f}", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in timing.items()}
    write_json(os.path.join(results, "precision.json"),
               {"machine": machine(), "steps": steps, "rounds": rounds, "ms_per_step": timing,
                "median_ms_per_step": med, "quality": quality,
                "settings": "kbc-fb15k237-complex-n3 preset, max_steps fits, one thread; quality: the small-graph "
                            "protocol cells, fp32 vs mixed_precision=True"})


def _override(text):
    """``'alpha=0.5'`` -> ``('alpha', 0.5)``; a value that is not JSON stays a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes PARAM=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "run", "report", "memory", "throughput", "precision", "_memory"])
    p.add_argument("cells", nargs="*")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--epochs", type=int, default=None, help="override n_epochs (a short check)")
    p.add_argument("--tag", default=None, help="suffix of the JSON and checkpoint names (e.g. 'short')")
    p.add_argument("--checkpoint-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=None, help="override eval_every (epochs)")
    p.add_argument("--max-steps", type=int, default=None, help="a step budget instead of the epochs (a short check)")
    p.add_argument("--neg-chunk-size", type=int, default=None, help="override neg_chunk_size (use with --tag)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bfloat16 autocast (mixed_precision=True; use with --tag)")
    p.add_argument("--valid-filter-test", action="store_true",
                   help="select on validation MRR filtered with the test triples too (LibKGE, kbc; use with --tag)")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", type=_override,
                   help="override one KGEmbedder parameter of the cell (VALUE read as JSON, else a string; "
                        "repeatable; use with --tag), e.g. --set alpha=1.0")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps-ns", type=int, default=40)
    p.add_argument("--steps-all", type=int, default=10)
    p.add_argument("--steps-precision", type=int, default=30,
                   help="steps timed in each precision round (the kbc ComplEx step)")
    args = p.parse_args()
    if args.command == "list":
        for name, (ds, params) in _cells().items():
            print(f"{name}: {ds} {json.dumps(params, default=str)}")
    elif args.command == "run":
        # the older flags are shorthands of --set
        overrides = dict(args.set)
        if args.neg_chunk_size is not None:
            overrides.setdefault("neg_chunk_size", args.neg_chunk_size)
        if args.mixed_precision:
            overrides.setdefault("mixed_precision", True)
        unknown = sorted(set(args.cells) - set(_cells()))
        if unknown or not args.cells:
            sys.exit(f"unknown or no cells {unknown}; see `python {sys.argv[0]} list`")
        for name in args.cells:
            run_cell(name, args.results, args.epochs, args.tag, args.checkpoint_steps, args.seed, args.eval_every,
                     args.max_steps, args.valid_filter_test, overrides)
    elif args.command == "report":
        report(args.results)
    elif args.command == "memory":
        memory(args.results, args.dim, args.batch)
    elif args.command == "throughput":
        throughput(args.results, args.rounds, args.steps_ns, args.steps_all)
    elif args.command == "precision":
        precision(args.results, args.rounds, args.steps_precision, [0, 1, 2])
    else:
        n, dim, batch = (int(x) for x in args.cells)
        print(json.dumps(_memory_child(n, dim, batch)))


if __name__ == "__main__":
    main()
