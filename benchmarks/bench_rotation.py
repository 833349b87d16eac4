"""RotatE and HAKE steps on the fused distance against the scoring they had before (issue 21's rotation rows).

The ``rotation`` row times RotatE and HAKE, vanilla and EMU, on the scoring they had
before the fused distance (``reference``, ``'reference compiled'``: the library keeps it
as the tests' reference) and on the fused distance (``fused``: eager blocks;
``'fused native'``: the C kernels of ``compile=True``), interleaved with ComplEx's step
(FB15k-237, d=100, 256 negatives, batch 1000); ``--rotation-memory`` adds each
configuration's step memory (one process each). ``rotation_quality`` fits kinship for 2
epochs on this code and, with ``--base PATH``, on a checkout of the code before
(``git worktree add --detach PATH <commit>``):

    python benchmarks/bench_rotation.py --rows rotation --rotation-memory
    python benchmarks/bench_rotation.py --rows rotation_quality --base /tmp/rot-base

Timing conventions as in ``bench_speed_table.py`` (interleaved, medians, ``--clock``).
Writes ``benchmarks/results/speed_rotation.json``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402
from bench_speed_table import _clock, _encoded, interleaved  # noqa: E402

ROWS = ("rotation", "rotation_quality")


def _stepper(model_name, sampler_name, emu, ids, n_ent, n_rel, args, seed=0, compile=False, parts=None):
    """A function taking one training step (batch, forward, backward, Adam) of the given configuration.

    ``parts(model, compile)``, when given, returns the step's ``(pairwise, masked_distance)``
    instead of the trainer's own (the rotation row's reference path).
    """
    import torch

    from kgestimator import KGEmbedder
    from kgestimator.models import make_model
    from kgestimator.samplers import SAMPLERS
    from kgestimator.training import make_config, make_optimizer, masked_distance_fn, pairwise_fn, step_loss

    gen = torch.Generator().manual_seed(seed)
    sampler_params = {"n_random_walks": args.san_walks} if sampler_name == "san" else {}
    sampler = SAMPLERS[sampler_name](**sampler_params).fit(ids, n_ent, n_rel, generator=gen)
    gamma = 24.0 if model_name in ("distmult", "complex") else 6.0
    model = make_model(model_name, n_ent, n_rel, args.dim, gamma, generator=torch.Generator().manual_seed(seed))
    # the estimator's own resolution of every setting (EMU values, emu_resample='auto', compile)
    est = KGEmbedder(model=model_name, sampler=sampler_name, emu=emu, dim=args.dim, gamma=gamma,
                     n_negatives=args.n_negatives, batch_size=args.batch_size, compile=compile)
    cfg = make_config(est.get_params(deep=False), est._check_params(), ids.shape[0], torch.device("cpu"))
    optimizer = make_optimizer("adam", model, 0.01)
    pairwise = pairwise_fn(model, compile)
    masked = masked_distance_fn(model, compile) if emu else None
    if parts is not None:
        pairwise, masked = parts(model, compile)
    state = {"step": 0}

    def step():
        batch = ids[torch.randint(ids.shape[0], (args.batch_size,), generator=gen)]
        loss = step_loss(model, pairwise, sampler, cfg, batch, state["step"], gen, masked)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1

    return step


def reference_parts(model, compile):
    """The scoring RotatE/HAKE had before the fused distance: kept in the library as the tests' reference.

    Vanilla: ``match`` broadcast over blocks (``EmbeddingModel.pairwise``), or with
    ``compile`` ``torch.compile`` of the unblocked broadcast; EMU: the mutated
    candidates materialised in blocks (``mutation.materialised_scores``), never compiled.
    """
    import functools

    from kgestimator._utils import compiled
    from kgestimator.models import EmbeddingModel
    from kgestimator.mutation import materialised_scores

    model.mutated_pairwise = lambda q, pos, neg, mask, _=None: materialised_scores(model, q, pos, neg, mask)
    if compile:
        return compiled(model.broadcast_pairwise), None
    return functools.partial(EmbeddingModel.pairwise, model), None


#: the rotation row's paths: (label, compile, parts)
ROTATION_PATHS = (("reference", False, reference_parts), ("reference compiled", True, reference_parts),
                  ("fused", False, None), ("fused native", True, None))


def _rotation_ratios(med, path):
    """Issue 21's rotation-model ratios of one path (step medians ``med`` keyed ``'model[+emu] | path'``)."""
    def at(model, emu=False):
        return med.get(f"{model}{'+emu' if emu else ''} | {path}")

    out = {}
    if at("rotate") and at("complex"):
        out["rotate_over_complex"] = at("rotate") / at("complex")
    if at("hake") and at("rotate"):
        out["hake_over_rotate"] = at("hake") / at("rotate")
    for model in ("rotate", "hake"):
        if at(model) and at(model, True):
            out[f"{model}_emu_over_vanilla"] = at(model, True) / at(model)
    return out


def row_rotation(args, clock):
    """RotatE/HAKE steps, vanilla and EMU, on every path of :data:`ROTATION_PATHS`, interleaved with ComplEx's."""
    ids, n_ent, n_rel = _encoded(args.dataset)
    jobs = {"complex | reference": _stepper("complex", "uniform", False, ids, n_ent, n_rel, args)}
    jobs["complex+emu | reference"] = _stepper("complex", "uniform", True, ids, n_ent, n_rel, args)
    for label, compile, parts in ROTATION_PATHS:
        if label not in args.rotation_paths:
            continue
        for model in ("rotate", "hake"):
            for emu in (False, True):
                jobs[f"{model}{'+emu' if emu else ''} | {label}"] = _stepper(
                    model, "uniform", emu, ids, n_ent, n_rel, args, compile=compile, parts=parts)
    t = interleaved(jobs, args.repeats, clock, warmup=2)  # the first calls build kernels / compile
    med = {k: v["median"] for k, v in t.items()}
    for label, *_ in ROTATION_PATHS:  # ComplEx is path-independent
        med.setdefault(f"complex | {label}", med["complex | reference"])
    ratios = {label: _rotation_ratios(med, label) for label, *_ in ROTATION_PATHS if label in args.rotation_paths}
    speedups = {}
    for new, old in (("fused", "reference"), ("fused native", "reference compiled"), ("fused native", "reference")):
        for key in (k for k in med if k.endswith(f"| {new}")):
            base = key.replace(f"| {new}", f"| {old}")
            if base in med and not key.startswith("complex"):
                speedups[f"{key} vs {old}"] = med[base] / med[key]
    return {"steps_ms": {k: 1000 * v for k, v in med.items()}, "spread": t, "ratios": ratios, "speedups": speedups,
            "ranking_512_queries": _rotation_ranking(args, clock, n_ent, n_rel),
            "memory": _rotation_memory(args) if args.rotation_memory else "not measured (--rotation-memory)"}


def _rotation_ranking(args, clock, n_ent, n_rel, n_queries=512):
    """``evaluation.score_all`` of ``n_queries`` tail queries against every entity, per model and path (seconds).

    The reference paths run the scoring the models had before (their instance's
    ``native_scoring`` switched off: blocked broadcast, or ``torch.compile``'s kernel).
    """
    import torch

    from kgestimator.evaluation import score_all
    from kgestimator.models import make_model

    gen = torch.Generator().manual_seed(0)
    anchor, rel = torch.randint(n_ent, (n_queries,), generator=gen), torch.randint(n_rel, (n_queries,), generator=gen)
    jobs = {}
    for name in ("rotate", "hake"):
        for label, compile, parts in ROTATION_PATHS:
            if label not in args.rotation_paths:
                continue
            model = make_model(name, n_ent, n_rel, args.dim, 6.0, generator=torch.Generator().manual_seed(0)).eval()
            if parts is not None:
                model.native_scoring = False

            def job(model=model, compile=compile):
                with torch.no_grad():
                    score_all(model, anchor, rel, "tail", compile)
            jobs[f"{name} | {label}"] = job
    return {k: v["median"] for k, v in interleaved(jobs, max(3, args.repeats // 2), clock, warmup=1).items()}


def _rotation_memory(args):
    """Peak resident memory a few steps add, each configuration in its own process (``--memory-worker``).

    The children's allocator maps every block above 64 KB on its own and returns
    it when freed (``MALLOC_MMAP_THRESHOLD_``), so their resident size follows
    the live tensors and its peak is the step's (timings there are not used).
    """
    from _common import run_child

    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = {}
    for label, *_ in ROTATION_PATHS:
        if label not in args.rotation_paths:
            continue
        for model in ("rotate", "hake"):
            for emu in (False, True):
                key = f"{model}{'+emu' if emu else ''} | {label}"
                out[key] = run_child(os.path.abspath(__file__), "--memory-worker", key)
    for label, *_ in ROTATION_PATHS:
        for model in ("rotate", "hake"):
            van, emu = out.get(f"{model} | {label}"), out.get(f"{model}+emu | {label}")
            if van and emu:
                out[f"{model} emu_over_vanilla | {label}"] = {
                    "step": emu["step_peak_mb"] / van["step_peak_mb"],
                    "process_peak": emu["process_peak_mb"] / van["process_peak_mb"]}
    return out


def memory_worker(args, key):
    """One configuration's step memory: peak RSS over 3 steps minus the resident size before them (MB).

    The first step (building kernels, compiling, Adam's state) comes before.
    """
    name, label = key.split(" | ")
    model, emu = name.split("+")[0], name.endswith("+emu")
    compile, parts = next((c, p) for lab, c, p in ROTATION_PATHS if lab == label)
    ids, n_ent, n_rel = _encoded(args.dataset)
    step = _stepper(model, "uniform", emu, ids, n_ent, n_rel, args, compile=compile, parts=parts)
    step()  # builds kernels, compiles, allocates Adam's state
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak to the current resident size
        f.write("5")
    before = _status_kb("VmRSS")
    for _ in range(3):
        step()
    peak = _status_kb("VmHWM")
    return {"step_peak_mb": (peak - before) / 1024, "resident_before_mb": before / 1024, "process_peak_mb": peak / 1024}


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def row_rotation_quality(args, clock):
    """Filtered test MRR after ``--quality-epochs`` (2) on kinship, RotatE/HAKE, vanilla and EMU, same seeds, on
    this code and on ``--base`` (a checkout of the code before the fused distance), eager and compiled; one
    process per fit (defaults otherwise)."""
    import subprocess

    out = {}
    trees = {"after": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    if args.base:
        trees["before"] = os.path.abspath(args.base)
    code = ("import json, sys; from kgestimator import KGEmbedder, load_dataset; "
            "m, emu, comp, seed, ep = sys.argv[1], sys.argv[2] == '1', sys.argv[3] == '1', int(sys.argv[4]), "
            "int(sys.argv[5]); "
            "d = load_dataset('kinship'); "
            "est = KGEmbedder(model=m, emu=emu, compile=comp, n_epochs=ep, random_state=seed).fit(d.train); "
            "r = est.evaluate(d.test, filter_triples=d.valid); "
            "print(json.dumps({'mrr': r['mrr'], 'hits@10': r['hits@10'], 'loss': est.history_[-1]['loss']}))")
    for seed in range(args.quality_seeds):
        for model in ("rotate", "hake"):
            for emu in (False, True):
                for comp in (False, True):
                    for tree, root in trees.items():
                        env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": str(args.threads)}
                        done = subprocess.run([sys.executable, "-c", code, model, str(int(emu)), str(int(comp)),
                                               str(seed), str(args.quality_epochs)],
                                              capture_output=True, text=True, env=env, cwd=root)
                        key = f"{model}{'+emu' if emu else ''}{' compiled' if comp else ''} | {tree}"
                        out.setdefault(key, []).append(json.loads(done.stdout.strip().splitlines()[-1])
                                                       if done.returncode == 0 else done.stderr[-500:])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--dataset", default="FB15k-237")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--san-walks", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--rotation-paths", default=",".join(label for label, *_ in ROTATION_PATHS),
                   help="paths of the rotation row: reference (the scoring before the fused distance), "
                        "'reference compiled', fused (eager), 'fused native' (compile=True)")
    p.add_argument("--rotation-memory", action="store_true", help="rotation row: step memory, one process each")
    p.add_argument("--base", default=None, help="rotation_quality: a checkout of the code before (its root)")
    p.add_argument("--quality-seeds", type=int, default=3)
    p.add_argument("--quality-epochs", type=int, default=2)
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--short", action="store_true", help="few repeats (a smoke run, noisy)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "speed_rotation.json"))
    args = p.parse_args()
    if args.short:
        args.repeats = 3
    args.rotation_paths = args.rotation_paths.split(",")
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(args, args.memory_worker)))
        return
    clock = _clock(args.clock)
    result = {"machine": machine(), "config": vars(args), "rows": {}}
    for row in args.rows.split(","):
        t0 = time.perf_counter()
        result["rows"][row] = globals()[f"row_{row}"](args, clock)
        print(f"{row}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        write_json(args.out, result)
    print(json.dumps({row: value.get("ratios", value) if isinstance(value, dict) else value
                      for row, value in result["rows"].items()}, indent=1, default=str))


if __name__ == "__main__":
    main()
