"""Wall time of filtered evaluation (both directions, realistic ranks) on a dataset's test set.

    python benchmarks/bench_eval.py --dataset FB15k-237 --model distmult

The model is trained for two steps only: evaluation cost does not depend on the
weights. Times include label encoding and building the filter index (train ∪
valid ∪ test). Writes ``benchmarks/results/eval_<dataset>_<model>.json``.
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, write_json  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--model", default="distmult")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from kgestimator import KGEmbedder, load_dataset

    data = load_dataset(args.dataset)
    est = KGEmbedder(model=args.model, dim=args.dim, max_steps=2, random_state=0).fit(data.train)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unseen test entities are reported in the result
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics = est.evaluate(data.test, filter_triples=data.valid)
            times.append(time.perf_counter() - t0)
    queries = 2 * metrics["n_triples"]
    print(f"{args.dataset} {args.model} d={args.dim}: {metrics['n_triples']} test triples "
          f"({metrics['n_unknown']} with unseen labels) -> {queries} queries; "
          f"best {min(times):.2f} s, all {[round(t, 2) for t in times]}; "
          f"{queries / min(times):.0f} queries/s; peak RSS {peak_rss_mb():.0f} MB")
    write_json(os.path.join(os.path.dirname(__file__), "results", f"eval_{args.dataset}_{args.model}.json"),
               {"config": vars(args), "machine": machine(), "seconds": times, "n_triples": metrics["n_triples"],
                "n_unknown": metrics["n_unknown"], "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
