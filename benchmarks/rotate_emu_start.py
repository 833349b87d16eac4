"""Why do RotatE's EMU cells start below their baseline? Short paired cells, one hypothesis each (issue 15).

In the 10,000-step reproduction (BENCHMARKS.md §8) the RotatE + EMU cells'
first validation MRR was far below the baseline's (FB15k-237 0.201 against
0.241), while TransE with the same EMU setting started level. Each variant
below changes one thing against the ``emu`` cell (the reproduction's RotatE +
EMU settings: the released scripts' EMU values, lr 0.05, no L3), and ``uni``
is the reproduction's baseline (L3 1e-3). Every cell trains the reproduction's
first phase, Adagrad, for ``--steps`` steps and records the filtered MRR on a
fixed validation subset at every ``--eval-epochs`` epochs, so two variants
compare as curves, seed by seed::

    python benchmarks/rotate_emu_start.py run --seeds 0,1        # resumable: existing cells are skipped
    python benchmarks/rotate_emu_start.py report

Hypotheses (the variant that tests each):

* the baseline's L3 term, not EMU, makes the difference: ``uni_noreg``, ``emu_reg``;
* the learning rate is too high for the EMU loss: ``emu_lr_half``;
* Adagrad (the first half of the reference's schedule) is what starts slow: ``emu_adam``
  (Adam from the first step, at the reference's Adam rate, lr / 10) against ``uni_adam``;
* the mutation, not ULS, costs the start: ``ls_only`` (ULS targets on unmutated negatives);
* masks that copy a real part without its imaginary part build off-manifold candidates:
  ``emu_complex_mask`` (one mask per complex coordinate, both parts copied together);
* the shared per-slot masks (one mask per negative slot for a whole step): ``emu_independent``
  (an independent mask per positive, negative and coordinate), when the estimator has ``emu_masks``.

Writes one JSON file per cell under ``results/rotate_start/``.
"""

import argparse
import contextlib
import glob
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "rotate_start")

#: variant -> (reproduce_emu method it starts from, parameter overrides, patch name or None)
VARIANTS = {
    "uni": ("uni", {}, None),
    "uni_noreg": ("uni", {"regularizer": None, "reg_weight": 0.0}, None),
    "uni_adam": ("uni", {"optimizer": "adam", "learning_rate": 0.005}, None),
    "emu": ("uni_emu", {}, None),
    "emu_reg": ("uni_emu", {"regularizer": "l3", "reg_weight": 1e-3}, None),
    "emu_lr_half": ("uni_emu", {"learning_rate": 0.025}, None),
    "emu_adam": ("uni_emu", {"optimizer": "adam", "learning_rate": 0.005}, None),
    "ls_only": ("uni_emu", {"emu": "ls_only"}, None),
    "emu_complex_mask": ("uni_emu", {}, "complex_mask"),
    "emu_independent": ("uni_emu", {"emu_masks": "independent", "neg_chunk_size": 1}, None),
}


@contextlib.contextmanager
def complex_masks():
    """EMU masks drawn per complex coordinate: a ``(.., 2d)`` mask's imaginary half repeats its real half.

    A study patch, not a library option: it swaps ``mutation.emu_mask`` for the fit."""
    import torch

    from kgestimator import mutation

    original = mutation.emu_mask

    def paired(shape, mutation_ratio, generator, device):
        shape = tuple(shape)
        half = original(shape[:-1] + (shape[-1] // 2,), mutation_ratio, generator, device)
        return torch.cat([half, half], -1)

    mutation.emu_mask = paired
    try:
        yield
    finally:
        mutation.emu_mask = original


def cell_path(variant, seed, steps):
    return os.path.join(RESULTS, f"FB15k-237__rotate__{variant}__seed{seed}__{steps}steps.json")


def run_cell(variant, seed, args, data):
    import numpy as np

    import reproduce_emu
    from kgestimator import KGEmbedder

    method, overrides, patch = VARIANTS[variant]
    c = reproduce_emu.cell("FB15k-237", "rotate", method, 100, seed, args.steps)
    params = reproduce_emu.estimator_params(c)
    params.update(optimizer="adagrad")
    params.update(overrides)
    params.update(max_steps=args.steps, early_stopping=False, eval_every=args.eval_epochs, n_threads=1)
    est = KGEmbedder()
    if any(k not in est.get_params() for k in params):
        return None  # a variant this version of the estimator cannot express (e.g. emu_masks)
    rng = np.random.default_rng(0)  # the same validation subset for every cell
    valid = data.valid[rng.choice(len(data.valid), args.valid_size, replace=False)]
    est = KGEmbedder(**params)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), (complex_masks() if patch == "complex_mask" else contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        est.fit(data.train, valid=valid)
    curve = [(h["step"] if "step" in h else h["epoch"], h["valid_mrr"]) for h in est.history_ if "valid_mrr" in h]
    return {"variant": variant, "seed": seed, "steps": args.steps, "params": params, "patch": patch,
            "valid_size": args.valid_size, "curve": curve, "fit_seconds": time.perf_counter() - t0,
            "loss": [h.get("loss") for h in est.history_], "machine": machine()}


def run(args):
    from kgestimator import load_dataset

    data = load_dataset("FB15k-237")
    for seed in args.seeds:
        for variant in args.variants:
            path = cell_path(variant, seed, args.steps)
            if os.path.exists(path):
                continue
            record = run_cell(variant, seed, args, data)
            if record is None:
                print(f"{variant}: not expressible with this estimator, skipped", flush=True)
                continue
            write_json(path, record)
            print(f"{variant} seed {seed}: valid MRR " + " ".join(f"{m:.3f}" for _, m in record["curve"])
                  + f" ({record['fit_seconds']:.0f} s)", flush=True)


def report(args):
    import numpy as np

    cells = {}
    for f in glob.glob(os.path.join(RESULTS, f"*__{args.steps}steps.json")):
        r = json.load(open(f))
        cells[(r["variant"], r["seed"])] = r
    seeds = sorted({s for _, s in cells})
    base = {s: cells[("emu", s)] for s in seeds if ("emu", s) in cells}
    steps = next(iter(cells.values()))["curve"] if cells else []
    print(f"evaluations at steps {', '.join(str(step) for step, _ in steps)}; validation subset of {args.valid_size}")
    print("| variant | validation MRR at each evaluation (mean over seeds) | last, minus `emu` (per seed) | seeds |")
    print("|---|---|---|---|")
    for v in VARIANTS:
        runs = [cells[(v, s)] for s in seeds if (v, s) in cells]
        if not runs:
            continue
        curve = np.mean([[m for _, m in r["curve"]] for r in runs], 0)
        diffs = [r["curve"][-1][1] - base[r["seed"]]["curve"][-1][1] for r in runs if r["seed"] in base]
        print(f"| {v} | " + " / ".join(f"{m:.3f}" for m in curve) + " | "
              + ", ".join(f"{d:+.3f}" for d in diffs) + f" | {len(runs)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=2176, help="8 epochs of FB15k-237 at batch 1000")
    p.add_argument("--eval-epochs", type=int, default=2)
    p.add_argument("--valid-size", type=int, default=2000)
    args = p.parse_args()
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
