"""Beyond one process: a grid search on a Dask cluster, and data-parallel training with gloo.

    python benchmarks/bench_distributed.py grid                 # 16 settings on nations: sequential vs LocalCluster
    python benchmarks/bench_distributed.py throughput           # FB15k-237: 1 vs 2 gloo processes
    python benchmarks/bench_distributed.py throughput --sparse  # the same, exchanging touched rows only
    python benchmarks/bench_distributed.py grid --quick         # tiny configurations: checks the script works
    python benchmarks/bench_distributed.py throughput --quick

``grid``: ``GridSearchCV`` over 16 settings of ``KGEmbedder`` (dim x learning_rate x
n_negatives x emu) with ``TripleKFold(--folds)`` on nations, once sequentially in this
process (torch's threads: ``--seq-threads``, default all cores, what one process gets
alone) and once under ``joblib.parallel_backend("dask")`` on a ``LocalCluster`` of
``--workers`` processes with one thread each (each fit then runs one torch thread: the
nanny sets ``OMP_NUM_THREADS=1``). Reports both wall times (cluster start-up apart),
their ratio, and whether the two searches' scores agree.

``throughput``: ``KGEmbedder(distributed=True)`` on FB15k-237 for ``--steps`` steps of
global batch ``--batch-size`` (each rank takes its share), in each layout of
``--layouts`` (``RANKSxTHREADS``: processes started with ``torch.multiprocessing.spawn``,
gloo on loopback, torch threads per process). Reports each rank's training throughput
(positive triples per second, from the training loop's own timing: set-up and
evaluation excluded) and the total. Each layout runs in fresh processes.

Writes ``benchmarks/results/distributed_<mode>[_sparse][_quick].json``.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---------------------------------------------------------------------- grid
def grid_settings(quick):
    if quick:
        return {"dim": [8, 16], "learning_rate": [0.01, 0.05], "n_negatives": [8], "emu": [False]}
    return {"dim": [32, 64], "learning_rate": [0.01, 0.05], "n_negatives": [32, 64], "emu": [False, True]}


def run_grid(args):
    import joblib
    import numpy as np
    import torch
    from distributed import Client, LocalCluster
    from sklearn.model_selection import GridSearchCV

    from kgestimator import KGEmbedder, load_dataset
    from kgestimator.model_selection import TripleKFold

    data = load_dataset(args.dataset)
    grid = grid_settings(args.quick)
    n_settings = int(np.prod([len(v) for v in grid.values()]))
    base = KGEmbedder(model=args.model, n_epochs=args.epochs, batch_size=args.batch_size, device="cpu",
                      random_state=0)
    cv = TripleKFold(args.folds, random_state=0)
    print(f"# grid: {n_settings} settings x {args.folds} folds on {args.dataset} ({len(data.train)} triples), "
          f"{args.model}, {args.epochs} epochs, batch {args.batch_size}; sequential with "
          f"{args.seq_threads or torch.get_num_threads()} torch thread(s) vs LocalCluster of "
          f"{args.workers} worker processes x 1 thread", flush=True)

    previous = torch.get_num_threads()
    if args.seq_threads:
        torch.set_num_threads(args.seq_threads)
    t0 = time.perf_counter()
    sequential = GridSearchCV(base, grid, cv=cv, n_jobs=1).fit(data.train)
    seq_s = time.perf_counter() - t0
    seq_threads = torch.get_num_threads()
    torch.set_num_threads(previous)
    print(f"sequential: {seq_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        startup_s = time.perf_counter() - t0
        client.run(lambda: __import__("kgestimator"))  # imports are start-up, not search
        t0 = time.perf_counter()
        with joblib.parallel_backend("dask"):
            parallel = GridSearchCV(base, grid, cv=cv, n_jobs=-1).fit(data.train)
        par_s = time.perf_counter() - t0
    print(f"LocalCluster ({args.workers} workers): {par_s:.1f} s (+ {startup_s:.1f} s cluster start-up)",
          flush=True)
    seq_scores = sequential.cv_results_["mean_test_score"]
    par_scores = parallel.cv_results_["mean_test_score"]
    diff = float(np.max(np.abs(seq_scores - par_scores)))
    print(f"speed-up: {seq_s / par_s:.2f}x | best: {sequential.best_params_} MRR {sequential.best_score_:.4f} | "
          f"max |score difference| sequential vs cluster: {diff:.2e}", flush=True)
    return {"n_settings": n_settings, "grid": grid, "sequential_seconds": seq_s,
            "sequential_torch_threads": seq_threads, "cluster_seconds": par_s,
            "cluster_startup_seconds": startup_s, "speedup": seq_s / par_s,
            "max_abs_score_difference": diff, "scores_identical": bool(np.array_equal(seq_scores, par_scores)),
            "best_params": sequential.best_params_, "best_score": float(sequential.best_score_),
            "mean_test_score": seq_scores.tolist(), "peak_rss_mb_client": peak_rss_mb()}


# ---------------------------------------------------------------------- throughput
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, threads, args, out):
    """One rank of a layout: fit ``--steps`` steps data-parallel; rank 0 puts the report in ``out``."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from kgestimator import KGEmbedder, load_dataset

    data = load_dataset(args.dataset)
    train = data.train[:args.max_triples] if args.max_triples else data.train
    est = KGEmbedder(model=args.model, dim=args.dim, n_negatives=args.n_negatives, batch_size=args.batch_size,
                     max_steps=args.steps, sparse=args.sparse, device="cpu", random_state=0,
                     n_threads=threads, distributed=True)
    t0 = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t0
    if rank == 0:
        out.put({**est.distributed_, "fit_seconds_incl_setup": fit_s, "torch_threads": est.n_threads_,
                 "n_train": len(train), "train_seconds": sum(r["seconds"] for r in est.history_)})
    torch.distributed.destroy_process_group()


def run_throughput(args):
    import torch.multiprocessing as mp

    layouts = [tuple(int(v) for v in layout.split("x")) for layout in args.layouts.split(",")]
    print(f"# throughput: {args.model} d={args.dim} N={args.n_negatives} global batch {args.batch_size}, "
          f"sparse={args.sparse}, "
          f"{args.steps} steps on {args.dataset}, gloo on loopback; layouts (ranks x threads): "
          f"{', '.join(f'{r}x{t}' for r, t in layouts)}; {os.cpu_count()} CPU(s)", flush=True)
    rows = []
    ctx = mp.get_context("spawn")
    for world, threads in layouts:
        queue = ctx.SimpleQueue()
        mp.spawn(_rank, args=(world, _free_port(), threads, args, queue), nprocs=world)
        r = {"ranks": world, "threads_per_rank": threads, **queue.get()}
        rows.append(r)
        per_rank = ", ".join(f"{v:,.0f}" for v in r["triples_per_second"])
        print(f"{world} rank(s) x {threads} thread(s): {per_rank} triples/s per rank, "
              f"{r['total_triples_per_second']:,.0f} in all ({r['train_seconds']:.1f} s training, "
              f"{r['fit_seconds_incl_setup']:.1f} s fit incl. set-up)", flush=True)
    base = rows[0]["total_triples_per_second"]
    for r in rows:
        r["speedup_vs_first"] = r["total_triples_per_second"] / base
    print("total throughput relative to the first layout: "
          + ", ".join(f"{r['ranks']}x{r['threads_per_rank']} {r['speedup_vs_first']:.2f}x" for r in rows))
    return {"layouts": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("grid", "throughput"))
    p.add_argument("--quick", action="store_true", help="tiny configuration: checks that the script works")
    p.add_argument("--model", default="distmult")
    p.add_argument("--dataset", default=None, help="default: nations (grid), FB15k-237 (throughput)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 500 (grid), 1000 (throughput)")
    g = p.add_argument_group("grid")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--folds", type=int, default=3)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--seq-threads", type=int, default=None,
                   help="torch threads of the sequential search (default: torch's default, all cores)")
    t = p.add_argument_group("throughput")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--dim", type=int, default=100)
    t.add_argument("--n-negatives", type=int, default=256)
    cores = os.cpu_count() or 1
    t.add_argument("--layouts", default=f"1x{cores},2x{max(1, cores // 2)},1x1",
                   help="comma-separated RANKSxTHREADS (default: 1x{cores},2x{cores/2},1x1: the same cores "
                        "in one or two processes, and one core alone)")
    t.add_argument("--max-triples", type=int, default=None, help="train on the first N triples only")
    t.add_argument("--sparse", action="store_true",
                   help="row-wise updates: the ranks exchange only the embedding rows a step touched, "
                        "instead of the whole entity table's gradient")
    args = p.parse_args()
    if args.dataset is None:
        args.dataset = "nations" if args.mode == "grid" else "FB15k-237"
    if args.batch_size is None:
        args.batch_size = 500 if args.mode == "grid" else 1000
    if args.quick:
        args.epochs, args.folds, args.steps, args.dim, args.n_negatives = 2, 2, 5, 16, 16
        if args.mode == "throughput":
            args.max_triples = args.max_triples or 20_000
    result = run_grid(args) if args.mode == "grid" else run_throughput(args)
    sparse = "_sparse" if args.mode == "throughput" and args.sparse else ""
    name = f"distributed_{args.mode}{sparse}{'_quick' if args.quick else ''}.json"
    write_json(os.path.join(RESULTS, name), {"config": vars(args), "machine": machine(), "results": result})


if __name__ == "__main__":
    main()
