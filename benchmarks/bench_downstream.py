"""Calibrated probabilities and conformal answer sets on FB15k-237 and WN18RR (issue 17).

Two steps, each resumable (a model file or result file that exists is not made again)::

    nice -n 10 python benchmarks/bench_downstream.py train    # one model at a time, 10,000 steps each
    nice -n 10 python benchmarks/bench_downstream.py measure  # ECE and conformal coverage per model
    python benchmarks/bench_downstream.py report              # the Markdown tables of BENCHMARKS.md

``train`` fits each model with the EMU reproduction's baseline settings
(``reproduce_emu.estimator_params`` of the ``uni`` cell: d=100, 256 negatives,
batch 1000, softmax cross-entropy, Adagrad then Adam, L3) for ``--steps``
steps, keeping the checkpoint with the best filtered MRR on the *early-stopping
part* of the validation set. The validation triples are shuffled once (seed 0)
and split in two: the first third (at most 2,000) selects the checkpoint, the
rest is never seen by training and holds the calibration triples of both
``calibrate`` (probabilities) and ``calibrate_sets`` (conformal sets).

``measure`` then reports, on the whole test set:

* expected calibration error (10 equal-width bins) of the raw score through a
  logistic sigmoid (uncalibrated), and after ``calibrate(method='sigmoid')``
  and ``calibrate(method='isotonic')``; the test set holds every test triple
  and one generated negative per corruption side (filtered), the mix the
  calibration used;
* filtered MRR for reference, and for ``calibrate_sets`` with each
  nonconformity score (``'score'``, ``'rank'``) at coverage 0.9: the empirical
  coverage on both query sides of every test triple, and the mean and median
  set size.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, peak_rss_mb, write_json  # noqa: E402
from reproduce_emu import cell, estimator_params  # noqa: E402

RESULTS = os.path.join(HERE, "results", "downstream")
MODELS_DIR = os.path.join(RESULTS, "models")  # not committed (.gitignore)
DATASETS = ("FB15k-237", "WN18RR")


def split_valid(valid):
    """``(early-stopping part, calibration part)`` of the validation triples (fixed seed)."""
    order = np.random.default_rng(0).permutation(len(valid))
    n_es = min(2000, len(valid) // 3)
    return valid[order[:n_es]], valid[order[n_es:]]


def model_file(dataset, model, steps):
    return os.path.join(MODELS_DIR, f"{dataset}__{model}__{steps}steps.kge")


def train(args):
    from kgestimator import KGEmbedder, load_dataset

    os.makedirs(MODELS_DIR, exist_ok=True)
    for dataset in args.datasets:
        data = load_dataset(dataset)
        es, _ = split_valid(data.valid)
        for model in args.models:
            path = model_file(dataset, model, args.steps)
            if os.path.exists(path):
                print(f"{path}: exists, skipped", flush=True)
                continue
            params = estimator_params(cell(dataset, model, "uni", steps=args.steps))
            steps_per_epoch = -(-len(data.train) // params["batch_size"])
            params.update(early_stopping=True, eval_every=max(1, round(1000 / steps_per_epoch)),
                          patience=10**6)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = KGEmbedder(**params).fit(data.train, valid=es)
            seconds = time.perf_counter() - t0
            est.save(path)
            best = max((h for h in est.history_ if "valid_mrr" in h), key=lambda h: h["valid_mrr"])
            print(f"{path}: fit {seconds:.0f} s, best early-stopping MRR {best['valid_mrr']:.4f} "
                  f"at step {best.get('step')}", flush=True)
            with open(path + ".json", "w") as fh:
                json.dump({"params": params, "fit_seconds": seconds, "best_valid_mrr": best["valid_mrr"],
                           "best_step": best.get("step"), "machine": machine()}, fh, indent=2, default=str)


def measure(args):
    from kgestimator import KGEmbedder, load_dataset
    from kgestimator.calibration import expected_calibration_error, labelled_triples

    for dataset in args.datasets:
        data = load_dataset(dataset)
        _, cal = split_valid(data.valid)
        for model in args.models:
            out = os.path.join(RESULTS, f"{dataset}__{model}__{args.steps}steps.json")
            if os.path.exists(out) and not args.force:
                print(f"{out}: exists, skipped", flush=True)
                continue
            path = model_file(dataset, model, args.steps)
            if not os.path.exists(path):
                print(f"{path}: missing, run 'train' first", file=sys.stderr, flush=True)
                continue
            est = KGEmbedder.load(path)
            with open(path + ".json") as fh:
                trained = json.load(fh)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # test triples with labels unseen in training
                record = _measure_one(est, data, cal, args, expected_calibration_error, labelled_triples)
            record.update(dataset=dataset, model=model, steps=args.steps, trained=trained,
                          n_calibration=len(cal), peak_rss_mb=peak_rss_mb(), machine=machine())
            write_json(out, record)
            print(json.dumps({k: record[k] for k in ("dataset", "model", "ece", "conformal")}), flush=True)


def _measure_one(est, data, cal, args, ece, labelled):
    from scipy.special import expit

    known = np.concatenate([data.valid, data.test])
    t0 = time.perf_counter()
    test = est.evaluate(data.test, filter_triples=data.valid)
    record = {"test": {k: test[k] for k in ("mrr", "hits@1", "hits@10", "n_unknown")}}
    X_test, y_test = labelled(est, data.test, n_negatives=1, filter_triples=known, random_state=1)
    raw = est.score_samples(X_test)
    record["ece"] = {"uncalibrated_sigmoid": ece(y_test, expit(raw), n_bins=10),
                     "n_test_triples": int(len(y_test)), "positive_rate": float(np.mean(y_test))}
    for method in ("sigmoid", "isotonic"):
        est.calibrate(cal, method=method, filter_triples=known, random_state=0)
        record["ece"][method] = ece(y_test, est.predict_proba(X_test), n_bins=10)
    record["conformal"] = {}
    for nonconformity in ("score", "rank"):
        t1 = time.perf_counter()
        est.calibrate_sets(cal, nonconformity=nonconformity, filter_triples=known, random_state=0)
        rep = est.evaluate_sets(data.test, coverage=args.coverage, filter_triples=data.valid)
        rep["seconds"] = time.perf_counter() - t1
        record["conformal"][nonconformity] = rep
    record["seconds"] = time.perf_counter() - t0
    return record


def report(args):
    import glob

    rows = []
    for path in sorted(glob.glob(os.path.join(RESULTS, f"*__{args.steps}steps.json"))):
        with open(path) as fh:
            rows.append(json.load(fh))
    print("| dataset | model | test MRR | ECE raw sigmoid | ECE Platt | ECE isotonic |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        e = r["ece"]
        print(f"| {r['dataset']} | {r['model']} | {r['test']['mrr']:.3f} | {e['uncalibrated_sigmoid']:.3f} | "
              f"{e['sigmoid']:.3f} | {e['isotonic']:.3f} |")
    print()
    print("| dataset | model | nonconformity | coverage (both / head / tail) | mean set size (head / tail) "
          "| median set size | relation groups (head / tail) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for name, c in r["conformal"].items():
            print(f"| {r['dataset']} | {r['model']} | {name} | {c['coverage']:.4f} / {c['head']['coverage']:.4f} / "
                  f"{c['tail']['coverage']:.4f} | {c['mean_set_size']:.0f} ({c['head']['mean_set_size']:.0f} / "
                  f"{c['tail']['mean_set_size']:.0f}) | {c['median_set_size']:.0f} | "
                  f"{c['n_relation_groups']['head']} / {c['n_relation_groups']['tail']} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("train", "measure", "report"))
    parser.add_argument("--datasets", default=",".join(DATASETS), type=lambda s: s.split(","))
    parser.add_argument("--models", default="distmult,complex", type=lambda s: s.split(","))
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--force", action="store_true", help="measure again even when the result file exists")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    print(f"config: {vars(args)}", flush=True)
    {"train": train, "measure": measure, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
