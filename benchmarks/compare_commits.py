"""Training step time of two checkouts of kgestimator, measured interleaved on the same machine.

For refactors that must not change speed: each (model, EMU) configuration runs
in a fresh process for the old tree and the new tree, alternately (the order
flips every repetition), ``--reps`` times, so load from other work on a shared
machine hits both sides alike. Settings are those of ``bench_vs_pykeen.py``
(FB15k-237, d=100, 256 negatives, batch 1000, neg_chunk_size 100, Adam,
lr 0.01); each process warms up with a short fit, then times ``--steps``
steps of a second fit (the ``seconds`` of its history, setup excluded).

    git worktree add /tmp/old <commit>
    python benchmarks/compare_commits.py --old /tmp/old --new .

Prints, per configuration, the median step time of each side and the ratio
new/old: the median of the per-repetition ratios, with their min and max.
Writes ``benchmarks/results/compare_commits.json``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402

CHILD = """
import json, sys
from kgestimator import KGEmbedder, load_dataset
import kgestimator
model, emu, steps, dataset = sys.argv[1], sys.argv[2] == 'emu', int(sys.argv[3]), sys.argv[4]
train = load_dataset(dataset).train
kw = dict(model=model, dim=100, n_negatives=256, batch_size=1000, neg_chunk_size=100, learning_rate=0.01,
          emu=emu, random_state=0)
KGEmbedder(max_steps=10, **kw).fit(train)
est = KGEmbedder(max_steps=steps, **kw).fit(train)
print(json.dumps({"file": kgestimator.__file__, "step_ms": 1000 * est.history_[-1]["seconds"] / steps}))
"""


def _time(root, model, emu, steps, dataset, data_dir):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root), KGESTIMATOR_DATA=data_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, model, emu, str(steps), dataset], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["file"].startswith(os.path.abspath(root)):
        raise RuntimeError(f"{root}: imported {result['file']} instead")
    return result["step_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="root of the baseline checkout")
    p.add_argument("--new", default=".", help="root of the checkout under test")
    p.add_argument("--configs", default="distmult:vanilla,complex:vanilla,transe:vanilla,rotate:vanilla,"
                                        "distmult:emu,rotate:emu")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "compare_commits.json"))
    args = p.parse_args()
    print(f"# {args.dataset} d=100 N=256 B=1000 chunk=100 lr=0.01; {args.steps} timed steps after a 10-step "
          f"warm-up fit; {args.reps} interleaved repetitions; old={args.old} new={args.new}", flush=True)
    # the children run inside their own tree, so the datasets folder is resolved here, once
    data_dir = os.environ.get("KGESTIMATOR_DATA") or os.path.join(os.path.abspath(args.new), "..", "shared",
                                                                   "datasets")
    rows = {}
    for config in args.configs.split(","):
        model, emu = config.split(":")
        old, new = [], []
        for rep in range(args.reps):
            sides = [("old", args.old, old), ("new", args.new, new)]
            for _, root, times in (sides if rep % 2 == 0 else sides[::-1]):
                times.append(_time(root, model, emu, args.steps, args.dataset, data_dir))
        ratios = [n / o for n, o in zip(new, old)]
        rows[config] = {"old_step_ms": old, "new_step_ms": new, "ratio_median": statistics.median(ratios),
                        "ratio_min": min(ratios), "ratio_max": max(ratios)}
        print(f"{config:18s} old {statistics.median(old):7.1f} ms  new {statistics.median(new):7.1f} ms  "
              f"new/old {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})", flush=True)
    write_json(args.out, {"config": vars(args), "machine": machine(), "results": rows})


if __name__ == "__main__":
    main()
