"""NBFNet with and without EMU on a real dataset: filtered test MRR / Hits@10, time per step, peak memory.

Each configuration runs in its own subprocess so that its peak memory is its own.
On a small CPU, budgets are given in optimiser steps (``--max-steps``) and the
test set can be a seeded random subset (``--test-subset``); both are recorded.

    python benchmarks/bench_nbfnet.py --dataset nations --epochs 6
    python benchmarks/bench_nbfnet.py --dataset kinship --max-steps 80
    python benchmarks/bench_nbfnet.py --dataset WN18RR --batch-size 4 --max-steps 15 --test-subset 50
    # timing only (no evaluation), e.g. to estimate FB15k-237 epochs:
    python benchmarks/bench_nbfnet.py --dataset FB15k-237 --dependent --remove-one-hop \\
        --batch-size 4 --max-steps 3 --test-subset 0 --methods uniform

Prints one line per run and writes ``benchmarks/results/nbfnet_<dataset>.json``.

``--kernel`` compares the message passing paths instead (issue 21): the step
time of the reference configuration (6 PNA layers, dim 32, batch 32, DistMult
messages, shared relation vectors, the batch's edges hidden, 32 negatives,
BCE, Adam) on kinship and WN18RR through each path of ``--kernel-paths``:
``materialised`` (the ``(E, B, d)`` messages, the first path), ``blocked``
(PyTorch over destination blocks), ``fused`` (the C kernel) and ``fused_heap``
(the C kernel with freed blocks kept in the heap whatever the memory:
``kgestimator._heap``) and ``fit`` (a ``KGEmbedder`` fit of the reference
configuration: the C kernel, a batch propagated in passes of fewer queries
where it is large, freed blocks kept where the headroom rule allows; per-step
times from the training loop). Each path runs in its own process (a warm-up step, then
``--kernel-repeats`` timed steps; ``--kernel-rounds`` processes a path, in
rotating order); CPU time is user + system (page faults are system time), one
thread. Then the 2-epoch kinship test MRR of the blocked and fused paths (same
seed, each fit in its own process). Writes ``benchmarks/results/nbfnet_kernel.json``.

    python benchmarks/bench_nbfnet.py --kernel
    python benchmarks/bench_nbfnet.py --kernel --kernel-datasets WN18RR --kernel-repeats 2 --kernel-quality 0 \\
        --kernel-paths blocked,fused,fused_heap,fit --output benchmarks/results/nbfnet_kernel_wn18rr.json
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, shared_dataset, write_json  # noqa: E402


def run_one(args, emu):
    """Train and evaluate one configuration in this process; return a result dict."""
    import numpy as np
    import torch

    from kgestimator import KGEmbedder, load_dataset

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    model_params = dict(n_layers=args.layers, aggregate=args.aggregate, dependent=args.dependent,
                        remove_one_hop=args.remove_one_hop, checkpoint=args.checkpoint)
    params = dict(model="nbfnet", emu=emu, dim=args.dim, model_params=model_params, loss="bce",
                  adversarial_temperature=args.adversarial_temperature, n_negatives=args.n_negatives,
                  batch_size=args.batch_size, n_epochs=args.epochs, max_steps=args.max_steps,
                  learning_rate=args.lr, random_state=args.seed)
    est = KGEmbedder(**params)
    t0 = time.perf_counter()
    est.fit(data.train)
    fit_s = time.perf_counter() - t0
    steps = est.history_[-1]["step"]
    train_s = sum(h["seconds"] for h in est.history_)
    steps_per_epoch = math.ceil(len(data.train) / args.batch_size)
    result = {"dataset": args.dataset, "model": "nbfnet", "method": "uniform+EMU" if emu else "uniform",
              "params": params, "emu_params": est.emu_params_, "steps": steps, "steps_per_epoch": steps_per_epoch,
              "epochs_equivalent": steps / steps_per_epoch, "fit_seconds": fit_s,
              "seconds_per_step": train_s / steps, "seconds_per_epoch": train_s / steps * steps_per_epoch,
              "n_edges": est.model_.n_edges, "threads": args.threads, "final_loss": est.history_[-1]["loss"]}
    test = np.asarray(data.test)
    if args.test_subset:
        if 0 < args.test_subset < len(test):
            pick = np.random.default_rng(args.seed).choice(len(test), args.test_subset, replace=False)
            test = test[np.sort(pick)]
        t0 = time.perf_counter()
        # the filter holds every split, also when the test set is a subset
        metrics = est.evaluate(test, filter_triples=np.concatenate([np.asarray(data.valid), np.asarray(data.test)]))
        result["eval_seconds"] = time.perf_counter() - t0
        result["test"] = {k: metrics[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "n_triples",
                                                  "n_unknown")}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _kernel_step(model, batch, n_negatives, temperature, native, optimizer, generator):
    """One reference training step on ``batch`` (B, 3) positives, tail queries (the step's costs, not its sampling)."""
    import torch

    from kgestimator.losses import binary_cross_entropy

    anchor, rel, target = batch.unbind(1)
    neg = torch.randint(model.n_entities, (batch.shape[0], n_negatives), generator=generator)
    cand = torch.cat([target.unsqueeze(1), neg], 1)
    optimizer.zero_grad()
    nodes, query = model.propagate(anchor, rel, model.training_edges(batch), native=native)
    logits = model.score_nodes(nodes[torch.arange(batch.shape[0]).unsqueeze(1), cand], query)
    loss = binary_cross_entropy(logits, temperature)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


#: message passing paths: (materialise the (E, B, d) messages, fused C kernel, freed blocks kept in the heap);
#: ``fit`` (not here) is a KGEmbedder fit: fused kernel, passes of fewer queries, the heap's headroom rule
PATHS = {"materialised": (True, False, False), "materialised_heap": (True, False, True),
         "blocked": (False, False, False), "blocked_heap": (False, False, True),
         "fused": (False, True, False), "fused_heap": (False, True, True)}


def _usage(before, after):
    """CPU (user + system), system seconds, minor faults and wall seconds between two (rusage, clock) marks."""
    (u0, w0), (u1, w1) = before, after
    return {"cpu": u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime, "sys": u1.ru_stime - u0.ru_stime,
            "minflt": u1.ru_minflt - u0.ru_minflt, "wall": w1 - w0}


def fit_steps(args, data, batch_size):
    """Per-step resources of a ``KGEmbedder`` fit of the reference configuration (the ``fit`` path):
    fused kernel, passes of fewer queries, freed blocks kept where the headroom rule allows."""
    import resource

    from kgestimator import KGEmbedder, _heap, training
    from kgestimator.models.nbfnet import REFERENCE_PARAMS

    marks = []
    real = training.apply_step

    def timed(loop, loss):
        real(loop, loss)
        marks.append(((resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()), peak_rss_mb(),
                      _heap._depth > 0))

    training.apply_step = timed
    params = {**REFERENCE_PARAMS["wn18rr"], "batch_size": batch_size, "max_steps": 1 + args.kernel_repeats,
              "early_stopping": False, "random_state": args.seed, "verbose": 0}
    est = KGEmbedder(**params).fit(data.train)
    runs = [{**_usage(a[0], b[0]), "peak_rss_mb": b[1]} for a, b in zip(marks, marks[1:])]
    return est, runs, marks[-1][2]


def path_steps(args, dataset, path):
    """Child: ``1 + --kernel-repeats`` reference steps through one path; the first is a warm-up.

    Returns CPU seconds (user + system), system seconds, minor page faults and
    wall seconds of each timed step, and the process's peak RSS.
    """
    import contextlib
    import resource

    import torch

    from kgestimator import _heap
    from kgestimator.models import NBFNet, _native
    from kgestimator.models.nbfnet import REFERENCE_PARAMS

    torch.set_num_threads(1)
    batch_size = args.kernel_batch or REFERENCE_PARAMS["wn18rr"]["batch_size"]
    data = shared_dataset(dataset)
    if path == "fit":
        est, runs, kept = fit_steps(args, data, batch_size)
        return {"dataset": dataset, "path": path, "batch": batch_size, "steps": runs, "freed_blocks_kept": kept,
                "queries_per_pass": est.model_.queries_per_pass(batch_size), "n_entities": est.model_.n_entities,
                "n_edges": est.model_.n_edges, "peak_rss_mb": peak_rss_mb()}
    materialise, native, heap = PATHS[path]
    if native and _native.library("nbf") is None:
        raise SystemExit(f"the NBFNet kernels cannot be built here: {_native.error('nbf')}")
    ref = REFERENCE_PARAMS["wn18rr"]
    ids, ent, rel = _encode(data.train)
    model = NBFNet(len(ent), len(rel), ref["dim"], generator=torch.Generator().manual_seed(0),
                   **{k: v for k, v in ref["model_params"].items() if k != "remove_one_hop"}).set_graph(ids)
    model.materialise_messages = materialise
    optimizer = torch.optim.Adam(model.parameters(), lr=ref["learning_rate"])
    gen = torch.Generator().manual_seed(args.seed)
    runs = []
    with _heap.freed_blocks_kept() if heap else contextlib.nullcontext():
        for r in range(args.kernel_repeats + 1):
            batch = ids[torch.randint(ids.shape[0], (batch_size,), generator=gen)]
            before = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            _kernel_step(model, batch, ref["n_negatives"], ref["adversarial_temperature"], native, optimizer, gen)
            after = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            runs.append({**_usage(before, after), "peak_rss_mb": peak_rss_mb()})
    return {"dataset": dataset, "path": path, "batch": batch_size, "warmup": runs[0], "steps": runs[1:],
            "n_entities": model.n_entities, "n_edges": model.n_edges, "peak_rss_mb": peak_rss_mb()}


def kernel_step_times(args):
    """``{dataset: {path: {median, min, max, ...}, ratios}}``: CPU seconds a step, each path in its own process.

    A path's freed-blocks setting is process-wide and lasts a whole fit, so each
    path runs in a fresh process (warm-up step, then ``--kernel-repeats`` timed
    steps); ``--kernel-rounds`` rounds rotate the order of the paths.
    """
    import statistics

    out = {}
    paths = args.kernel_paths.split(",")
    for dataset in args.kernel_datasets.split(","):
        results = {p: [] for p in paths}
        for r in range(args.kernel_rounds):
            for path in paths[r % len(paths):] + paths[:r % len(paths)]:
                res = run_child(__file__, "--kernel-child", json.dumps([dataset, path]))
                if res is not None:
                    results[path].append(res)
        row = {}
        for path, res in results.items():
            if not res:
                continue
            cpu = [s["cpu"] for x in res for s in x["steps"]]
            row[path] = {"median": statistics.median(cpu), "min": min(cpu), "max": max(cpu), "runs": cpu,
                         "sys_median": statistics.median(s["sys"] for x in res for s in x["steps"]),
                         "minflt_median": statistics.median(s["minflt"] for x in res for s in x["steps"]),
                         "wall_median": statistics.median(s["wall"] for x in res for s in x["steps"]),
                         "peak_rss_mb": max(x["peak_rss_mb"] for x in res), "processes": res}
            print(f"{dataset:<8} {path:<12} {row[path]['median']:8.3f} CPU s/step (system {row[path]['sys_median']:.3f}, "
                  f"{row[path]['minflt_median']:.0f} page faults)  peak {row[path]['peak_rss_mb']:.0f} MB", flush=True)
        # each path against the ones before it in PATHS (the earlier ways of computing the same step)
        order = [p for p in (*PATHS, "fit") if p in row]
        ratios = {f"{b}_over_{p}": row[b]["median"] / row[p]["median"]
                  for i, b in enumerate(order) for p in order[i + 1:]}
        for k, v in ratios.items():
            print(f"{dataset:<8} {k}: {v:.2f}x", flush=True)
        first = next(x[0] for x in results.values() if x)
        out[dataset] = {**row, **ratios, "n_entities": first["n_entities"], "n_edges": first["n_edges"],
                        "batch": first["batch"]}
    return out


def _encode(triples):
    import torch

    triples = np.asarray(triples)
    ent = {e: i for i, e in enumerate(sorted(set(triples[:, 0]) | set(triples[:, 2])))}
    rel = {r: i for i, r in enumerate(sorted(set(triples[:, 1])))}
    ids = torch.tensor([[ent[h], rel[r], ent[t]] for h, r, t in triples], dtype=torch.long)
    return ids, ent, rel


def kernel_quality(args, compile_):
    """The 2-epoch kinship fit of the reference configuration through one path: test MRR, loss, time."""
    import torch

    from kgestimator import KGEmbedder
    from kgestimator.models.nbfnet import REFERENCE_PARAMS

    torch.set_num_threads(1)
    data = shared_dataset("kinship")
    params = {**REFERENCE_PARAMS["wn18rr"], "n_epochs": 2, "max_steps": args.kernel_quality_steps, "compile": compile_,
              "random_state": args.seed}
    t0 = time.process_time()
    est = KGEmbedder(**params).fit(data.train)
    fit_cpu = time.process_time() - t0
    m = est.evaluate(data.test, filter_triples=data.valid)
    return {"compile": compile_, "path": "fused" if compile_ else "blocked", "fit_cpu_seconds": fit_cpu,
            "steps": est.history_[-1]["step"],
            "losses": [h["loss"] for h in est.history_], "test": {k: m[k] for k in ("mrr", "hits@1", "hits@10")}}


def kernel_main(args):
    print(f"NBFNet message passing paths {args.kernel_paths}: reference config (6 PNA layers, dim 32, "
          f"batch {args.kernel_batch or 32}, 32 negatives), CPU time (user + system), 1 thread, "
          f"each path in its own process", flush=True)
    steps = kernel_step_times(args)
    quality = []
    if args.kernel_quality:
        for compile_ in ("False", "True"):
            res = run_child(__file__, "--kernel-run", compile_)
            if res is not None:
                quality.append(res)
                print(f"kinship, {res['steps']} steps, {res['path']:<7}: test MRR {res['test']['mrr']:.4f}  "
                      f"H@10 {res['test']['hits@10']:.4f}  fit {res['fit_cpu_seconds']:.0f} CPU s", flush=True)
    out = args.output or os.path.join(os.path.dirname(__file__), "results", "nbfnet_kernel.json")
    write_json(out, {"machine": machine(), "note": args.note, "step_times": steps, "kinship_2_epochs": quality})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="nations")
    p.add_argument("--methods", default="uniform,emu")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--aggregate", default="pna")
    p.add_argument("--dependent", action="store_true", help="query-dependent relations (FB15k-237 config)")
    p.add_argument("--remove-one-hop", action="store_true", help="FB15k-237 config")
    p.add_argument("--checkpoint", action="store_true", help="recompute layers in backward (memory)")
    p.add_argument("--n-negatives", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--adversarial-temperature", type=float, default=1.0, help="1 / NBFNet's T")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--test-subset", type=int, default=-1,
                   help="test triples evaluated: -1 all, 0 none (timing only), k a seeded random subset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None)
    p.add_argument("--note", default="timings measured under contention (2 shared cores)",
                   help="recorded in the JSON (e.g. how the machine was shared, nice level)")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--kernel", action="store_true", help="blocked path vs fused kernel (module docstring)")
    p.add_argument("--kernel-datasets", default="kinship,WN18RR")
    p.add_argument("--kernel-repeats", type=int, default=3, help="timed steps per path and dataset")
    p.add_argument("--kernel-quality", type=int, default=1, help="1: also the 2-epoch kinship MRR of each path")
    p.add_argument("--kernel-quality-steps", type=int, default=None,
                   help="stop the quality fits after this many steps (default: the 2 epochs)")
    p.add_argument("--kernel-paths", default="blocked,fused,fit",
                   help=f"comma-separated, of {', '.join(PATHS)}, fit (a KGEmbedder fit)")
    p.add_argument("--kernel-rounds", type=int, default=1, help="processes per path (the order rotates)")
    p.add_argument("--kernel-batch", type=int, default=None, help="queries a step (default: the reference's 32)")
    p.add_argument("--kernel-run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--kernel-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.kernel_child is not None:
        print(json.dumps(path_steps(args, *json.loads(args.kernel_child))))
        return
    if args.kernel_run is not None:
        print(json.dumps(kernel_quality(args, args.kernel_run == "True")))
        return
    if args.kernel:
        kernel_main(args)
        return
    args.dataset_name = os.path.basename(os.path.normpath(args.dataset))
    if not os.path.isdir(args.dataset):
        args.dataset = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", args.dataset)

    if args.run is not None:
        print(json.dumps(run_one(args, args.run == "emu")))
        return

    print(f"NBFNet on {args.dataset_name}: dim {args.dim}, {args.layers} layers, {args.aggregate}, "
          f"dependent={args.dependent}, remove_one_hop={args.remove_one_hop}, batch {args.batch_size}, "
          f"{args.n_negatives} negatives, lr {args.lr}, epochs {args.epochs}, max_steps {args.max_steps}, "
          f"test subset {args.test_subset}, threads {args.threads}", flush=True)
    results = []
    for method in args.methods.split(","):
        res = run_child(__file__, "--run", method)
        if res is None:
            continue
        results.append(res)
        test = res.get("test", {})
        print(f"{res['method']:<12} steps {res['steps']:>5} ({res['epochs_equivalent']:.2f} ep)  "
              f"MRR {test.get('mrr', float('nan')):.4f}  H@10 {test.get('hits@10', float('nan')):.4f}  "
              f"{res['seconds_per_step']:.2f} s/step  {res['seconds_per_epoch']:.0f} s/epoch  "
              f"peak {res['peak_rss_mb']:.0f} MB", flush=True)
    out = args.output or os.path.join(os.path.dirname(__file__), "results", f"nbfnet_{args.dataset_name}.json")
    write_json(out, {"machine": machine(), "note": args.note,
                     "results": results})


if __name__ == "__main__":
    main()
