"""How training and evaluation cost grow with the graph: random graphs of 10^4..10^6 entities.

    python benchmarks/bench_scaling.py                      # DistMult, three sizes
    python benchmarks/bench_scaling.py --model rotate --sizes 1e4:1e5,1e5:1e6

Each size runs in its own subprocess (peak memory per size). Triples are uniform random
integer ids (100 relations): timing does not depend on the graph's structure. Training
runs ``--steps`` steps of batch 1000 with 256 negatives (d=100) and reports the mean
step time, including the first steps' warm-up, and the implied time per epoch;
evaluation ranks ``--eval-triples`` test triples in both directions against all
entities, filtered by every known triple, and reports queries per second and the
implied time for a 20,000-triple test set. Writes ``benchmarks/results/scaling_<model>.json``.
"""

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, run_child, write_json  # noqa: E402


def run_size(args, n_entities, n_triples):
    import numpy as np

    from kgestimator import KGEmbedder

    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, n_entities, n_triples), rng.integers(0, 100, n_triples),
                  rng.integers(0, n_entities, n_triples)], 1)
    # make every entity appear so the table has n_entities rows
    X[: n_entities, 0] = np.arange(n_entities)
    test = X[rng.choice(n_triples, args.eval_triples, replace=False)]
    est = KGEmbedder(model=args.model, dim=100, n_negatives=256, batch_size=1000, max_steps=args.steps, sparse=args.sparse,
                     random_state=0)
    t0 = time.perf_counter()
    est.fit(X)
    fit_s = time.perf_counter() - t0
    step_s = est.history_[0]["seconds"] / args.steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est.evaluate(test)
        eval_s = time.perf_counter() - t0
    queries = 2 * len(test)
    return {"n_entities": n_entities, "n_triples": n_triples, "steps": args.steps, "step_ms": 1000 * step_s,
            "epoch_seconds_implied": step_s * n_triples / 1000, "fit_seconds_incl_setup": fit_s,
            "eval_triples": len(test), "eval_seconds": eval_s, "queries_per_s": queries / eval_s,
            "eval_20k_triples_implied_s": 40000 / (queries / eval_s), "peak_rss_mb": peak_rss_mb()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="distmult")
    p.add_argument("--sizes", default="1e4:1e5,1e5:1e6,1e6:1e7", help="entities:triples,...")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-triples", type=int, default=1000)
    p.add_argument("--sparse", action="store_true", help="row-wise (sparse) optimiser updates")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        e, t = (int(float(v)) for v in args.one.split(":"))
        print(json.dumps(run_size(args, e, t)))
        return
    print(f"# {args.model} d=100 N=256 B=1000 sparse={args.sparse}, {args.steps} steps timed, "
          f"eval {args.eval_triples} triples", flush=True)
    rows = []
    for size in args.sizes.split(","):
        r = run_child(__file__, "--one", size)
        if r is None:
            rows.append({"size": size, "failed": True})
            continue
        rows.append(r)
        print(f"entities {r['n_entities']:>9,d} triples {r['n_triples']:>11,d}: step {r['step_ms']:7.1f} ms "
              f"-> epoch {r['epoch_seconds_implied']:8.1f} s | eval {r['queries_per_s']:8.0f} queries/s "
              f"-> 20k test triples {r['eval_20k_triples_implied_s']:7.1f} s | peak RSS {r['peak_rss_mb']:6.0f} MB",
              flush=True)
    write_json(os.path.join(os.path.dirname(__file__), "results", f"scaling_{args.model}{'_sparse' if args.sparse else ''}.json"),
               {"config": vars(args), "machine": machine(), "results": rows})


if __name__ == "__main__":
    main()
