"""Every ratio of issue 21's speed table in one run, as JSON (measurements interleaved).

Rows: hard samplers against uniform (FB15k-237 steps, with and without EMU), the
EMU step against the vanilla step per model, the steps' peak memory with and
without EMU (``memory``, each configuration in a fresh process), the distance
models against ComplEx / RotatE, NBFNet's blocked message passing against the
materialised path it replaced, NBFNet's default configuration on kinship, the
hard samplers' epochs on nations, the fixed costs of a small filtered evaluation
(first call against a repeated one), and a 2-epoch filtered MRR per sampler and
model on kinship (``quality``).

Each timing alternates the configurations it compares, ``--repeats`` times, and
reports the median and the spread (min, max) of each; a ratio is the ratio of
medians. ``--clock cpu`` measures each process's CPU time instead of wall time:
on a shared machine, with one torch thread, that removes the time spent waiting
for a core (the default on a busy machine; use ``--clock wall --threads 2`` on a
quiet one). The workers run their steps as ``fit`` does, with freed large blocks
kept in the heap (``kgestimator._heap``; a reference checkout from before it
runs without).

``--reference PATH`` (a checkout of the code to compare with, e.g.
``git worktree add /tmp/base main``) measures the rows ``samplers``, ``models``,
``memory``, ``small_graph``, ``evaluation`` and ``quality`` in two worker processes, one
importing this checkout's ``kgestimator`` and one the reference's, alternating
between them job by job, so that load from other work hits both alike; each row
then reports both versions and the ratio after/before.

``--profile`` writes, instead of the table, where the time of a training step
goes, per configuration: CPU time per part of the step (sampling, sampler update,
lookups, DANS's GAN training and generation, scoring the negatives, the EMU term,
loss, backward, optimiser), the top operators by self CPU time (torch.profiler),
and the step's matrix-product FLOPs against this machine's measured single-thread
matrix-product rate (the compute bound).

    python benchmarks/bench_speed_table.py                       # full settings (long)
    python benchmarks/bench_speed_table.py --short               # a few steps per row
    python benchmarks/bench_speed_table.py --rows samplers,models --reference /tmp/base
    python benchmarks/bench_speed_table.py --profile             # -> results/speed_profile.json

Writes ``benchmarks/results/speed_table.json`` (or ``--out``).
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_json  # noqa: E402

ROWS = ("samplers", "models", "memory", "nbfnet", "nbfnet_defaults", "small_graph", "evaluation", "quality")
#: rows measured in worker processes, against ``--reference`` when given
VERSIONED = ("samplers", "models", "memory", "small_graph", "evaluation", "quality")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _clock(kind):
    return time.process_time if kind == "cpu" else time.perf_counter


def _spread(t):
    return {"median": statistics.median(t), "min": min(t), "max": max(t), "runs": t}


def interleaved(jobs, repeats, clock, warmup=1):
    """``{name: {median, min, max, runs}}`` (seconds) of in-process ``jobs`` ``{name: fn}``, run alternately."""
    for fn in jobs.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: _spread(t) for name, t in times.items()}


# -- what the workers run: everything below imports the worker's own kgestimator --------------------

_DATA = {}


def _encoded(dataset, n=None):
    import torch

    from kgestimator import data as kgdata
    from kgestimator import load_dataset
    from kgestimator.estimator import _encode_strict

    if (dataset, n) not in _DATA:
        d = load_dataset(dataset)
        train = d.train if n is None else d.train[:n]
        ents, rels = kgdata.build_vocabulary(train)
        _DATA[dataset, n] = _encode_strict(train, ents, rels, torch.device("cpu")), len(ents), len(rels)
    return _DATA[dataset, n]


def _step_parts(spec):
    """``(model, sampler, cfg, optimizer, pairwise, masked, gen, ids)`` of one step configuration."""
    import torch

    from kgestimator import KGEmbedder
    from kgestimator.models import make_model
    from kgestimator.samplers import SAMPLERS
    from kgestimator.training import make_config, make_optimizer, masked_distance_fn, pairwise_fn

    ids, n_ent, n_rel = _encoded(spec["dataset"])
    model_name, sampler_name, emu = spec["model"], spec["sampler"], spec["emu"]
    gen = torch.Generator().manual_seed(spec.get("seed", 0))
    sampler_params = {"n_random_walks": spec["san_walks"]} if sampler_name == "san" else {}
    sampler = SAMPLERS[sampler_name](**sampler_params).fit(ids, n_ent, n_rel, generator=gen)
    gamma = 24.0 if model_name in ("distmult", "complex") else 6.0
    model = make_model(model_name, n_ent, n_rel, spec["dim"], gamma,
                       generator=torch.Generator().manual_seed(spec.get("seed", 0)))
    # the estimator's own resolution of every setting (EMU values, emu_resample='auto', compile)
    # neg_chunk_size and emu_masks: the estimator's defaults unless the spec sets them (bench_emu_masks.py)
    est = KGEmbedder(model=model_name, sampler=sampler_name, emu=emu, dim=spec["dim"], gamma=gamma,
                     n_negatives=spec["n_negatives"], batch_size=spec["batch_size"], compile=spec["compile"],
                     **{k: spec[k] for k in ("neg_chunk_size", "emu_masks") if k in spec})
    cfg = make_config(est.get_params(deep=False), est._check_params(), ids.shape[0], torch.device("cpu"))
    optimizer = make_optimizer("adam", model, 0.01)
    pairwise = pairwise_fn(model, cfg.compile)   # compile='auto' resolved as a fit resolves it
    masked = masked_distance_fn(model, cfg.compile) if emu else None
    return model, sampler, cfg, optimizer, pairwise, masked, gen, ids


def make_step(spec, timer=None):
    """A function taking one training step (batch, forward, backward, Adam) of the configuration ``spec``.

    ``timer`` (the profile's :class:`Parts`) times the backward pass and the optimiser step.
    """
    import contextlib

    import torch

    from kgestimator.training import step_loss

    model, sampler, cfg, optimizer, pairwise, masked, gen, ids = _step_parts(spec)
    part = timer.part if timer is not None else (lambda name: contextlib.nullcontext())
    state = {"step": 0}

    def step():
        batch = ids[torch.randint(ids.shape[0], (spec["batch_size"],), generator=gen)]
        loss = step_loss(model, pairwise, sampler, cfg, batch, state["step"], gen, masked)
        optimizer.zero_grad(set_to_none=True)
        with part("backward"):
            loss.backward()
        with part("optimiser"):
            optimizer.step()
        state["step"] += 1

    step.sampler = sampler
    return step


def run_epochs(spec):
    """CPU seconds of each epoch of a ``KGEmbedder`` fit (its callbacks' clock), the first one dropped."""
    from kgestimator import KGEmbedder, load_dataset

    class Clock:
        def on_fit_begin(self, est):
            self.marks = [time.process_time()]

        def on_epoch_end(self, est, record):
            self.marks.append(time.process_time())

    clock = Clock()
    d = load_dataset(spec["dataset"])
    KGEmbedder(sampler=spec["sampler"], emu=spec["emu"], n_epochs=spec["epochs"], random_state=0,
               callbacks=[clock]).fit(d.train)
    per_epoch = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    return per_epoch[1:]  # the first epoch builds DANS's networks and warms up


def run_evaluation(spec):
    """CPU seconds of a first filtered evaluation of 2,000 FB15k-237 test triples and of a repeated one."""
    import numpy as np

    from kgestimator import KGEmbedder, load_dataset

    d = load_dataset("FB15k-237")
    key = ("evaluation",)
    if key not in _DATA:
        _DATA[key] = KGEmbedder(n_epochs=1, random_state=0).fit(d.train[:30000])
    est = _DATA[key]
    test = np.asarray(d.test)[:2000]
    filt = np.concatenate([np.asarray(d.valid), np.asarray(d.test)])
    est._eval_cache = None  # what every call paid before the cache
    t0 = time.process_time()
    est.evaluate(test, filter_triples=filt)
    first = time.process_time() - t0
    t0 = time.process_time()
    est.evaluate(test, filter_triples=filt)
    return [first, time.process_time() - t0]


def run_quality(spec):
    """Filtered test MRR and Hits@10 after ``epochs`` epochs of ``spec``'s configuration on ``dataset``."""
    from kgestimator import KGEmbedder, load_dataset

    d = load_dataset(spec["dataset"])
    t0 = time.process_time()
    est = KGEmbedder(model=spec["model"], sampler=spec["sampler"], emu=spec["emu"], n_epochs=spec["epochs"],
                     random_state=spec.get("seed", 0)).fit(d.train)
    seconds = time.process_time() - t0
    import numpy as np

    res = est.evaluate(d.test, filter_triples=np.concatenate([np.asarray(d.valid), np.asarray(d.test)]))
    return {"mrr": float(res["mrr"]), "hits@10": float(res["hits@10"]), "fit_cpu_seconds": seconds}


def _status_mb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def run_memory(spec):
    """Peak RSS (MB) of ``steps`` training steps of ``spec`` in a fresh process: the peak is reset
    (Linux ``/proc/self/clear_refs``) once the data is loaded and the first step taken, so that it is
    the steps' own and not loading's; also the RSS before the steps and the whole process's peak."""
    import gc

    step = make_step(spec)
    step()  # the first step allocates what every step reuses (optimiser state, gradients)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status_mb("VmRSS")
    for _ in range(spec["steps"]):
        step()
    return {"rss_before_steps_mb": before, "steps_peak_rss_mb": _status_mb("VmHWM"),
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


ONCE = {"epochs": run_epochs, "evaluation": run_evaluation, "quality": run_quality, "memory": run_memory}


def worker_main():
    """Serve the parent's requests, one JSON line each, on the original stdout (prints go to stderr)."""
    import torch

    out = sys.stdout
    sys.stdout = sys.stderr
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    clock = _clock(os.environ.get("BENCH_CLOCK", "cpu"))
    import kgestimator

    try:
        from kgestimator._heap import freed_blocks_kept
    except ImportError:  # a --reference checkout from before it
        freed_blocks_kept = contextlib.nullcontext
    jobs = {}
    # the steps run as fit runs them: with freed large blocks kept in the heap (kgestimator._heap)
    with freed_blocks_kept():
        for line in sys.stdin:
            msg = json.loads(line)
            try:
                if msg["op"] == "hello":
                    reply = {"file": kgestimator.__file__}
                elif msg["op"] == "make":
                    jobs[msg["name"]] = make_step(msg["spec"])
                    reply = {}
                elif msg["op"] == "run":
                    t0 = clock()
                    jobs[msg["name"]]()
                    reply = {"seconds": clock() - t0}
                elif msg["op"] == "drop":
                    jobs.pop(msg["name"], None)
                    reply = {}
                else:
                    reply = {"result": ONCE[msg["op"]](msg["spec"])}
            except Exception as exc:  # reported to the parent, which raises
                import traceback

                reply = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()


class Worker:
    """A worker process importing the ``kgestimator`` of checkout ``root``."""

    def __init__(self, root, args):
        from kgestimator.datasets import dataset_dir

        env = dict(os.environ, PYTHONPATH=os.path.abspath(root), KGESTIMATOR_DATA=str(dataset_dir()),
                   BENCH_THREADS=str(args.threads), BENCH_CLOCK=args.clock, OMP_NUM_THREADS=str(args.threads))
        self.root = os.path.abspath(root)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], cwd=self.root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        imported = self.call("hello")["file"]
        if not imported.startswith(self.root + os.sep):
            raise RuntimeError(f"the worker for {root} imported {imported}")

    def call(self, op, **msg):
        self.proc.stdin.write(json.dumps({"op": op, **msg}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"worker {self.root}: {reply['error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def _versions(args):
    """``{'after': root, 'before': reference root}`` (only 'after' without ``--reference``)."""
    return {"after": ROOT, **({"before": args.reference} if args.reference else {})}


def _workers(args):
    return {v: Worker(root, args) for v, root in _versions(args).items()}


def timed(workers, specs, repeats, warmup=1):
    """Step times ``{version: {name: spread}}`` of ``specs`` ``{name: spec}``, alternating configurations and
    versions (the order of the versions flips every repeat)."""
    for w in workers.values():
        for name, spec in specs.items():
            w.call("make", name=name, spec=spec)
            for _ in range(warmup):
                w.call("run", name=name)
    times = {v: {name: [] for name in specs} for v in workers}
    order = list(workers)
    for r in range(repeats):
        for name in specs:
            for v in (order if r % 2 == 0 else order[::-1]):
                times[v][name].append(workers[v].call("run", name=name)["seconds"])
    for w in workers.values():
        for name in specs:
            w.call("drop", name=name)
    return {v: {name: _spread(t) for name, t in per.items()} for v, per in times.items()}


def _step_spec(args, model, sampler, emu):
    return {"dataset": args.dataset, "model": model, "sampler": sampler, "emu": emu, "dim": args.dim,
            "n_negatives": args.n_negatives, "batch_size": args.batch_size, "san_walks": args.san_walks,
            "compile": args.compile}


def _after_over_before(after, before):
    return None if before in (None, 0) else after / before


def row_samplers(args, clock, workers):
    out = {}
    for emu in (False, True):
        specs = {s: _step_spec(args, "distmult", s, emu) for s in args.samplers}
        # the hard samplers draw negatives per positive; uniform ids drawn per positive too
        # (neg_chunk_size=1) is the same scoring work without the sampler's own: the bound it meets
        specs["uniform_per_positive"] = dict(_step_spec(args, "distmult", "uniform", emu), neg_chunk_size=1)
        t = timed(workers, specs, args.repeats)
        per = {}
        for v, times in t.items():
            base, pp = times["uniform"]["median"], times["uniform_per_positive"]["median"]
            per[v] = {s: {**x, "ms": 1000 * x["median"], "vs_uniform": x["median"] / base,
                          "vs_uniform_per_positive": x["median"] / pp} for s, x in times.items()}
        if "before" in per:
            per["after_over_before"] = {s: _after_over_before(per["after"][s]["median"], per["before"][s]["median"])
                                        for s in specs}
        out["emu" if emu else "plain"] = per
    return out


def row_models(args, clock, workers):
    specs = {}
    for model in args.models:
        for emu in (False, True):
            specs[f"{model}{'+emu' if emu else ''}"] = _step_spec(args, model, "uniform", emu)
    t = timed(workers, specs, args.repeats)
    out = {}
    for v, times in t.items():
        med = {k: x["median"] for k, x in times.items()}
        ratios = {f"{m}_emu_over_vanilla": med[f"{m}+emu"] / med[m] for m in args.models}
        if "rotate" in med and "complex" in med:
            ratios["rotate_over_complex"] = med["rotate"] / med["complex"]
        if "hake" in med and "rotate" in med:
            ratios["hake_over_rotate"] = med["hake"] / med["rotate"]
        out[v] = {"steps_ms": {k: 1000 * x for k, x in med.items()}, "spread": times, "ratios": ratios}
    return out


def row_memory(args, clock, workers):
    """Peak RSS of vanilla and EMU steps per model (uniform sampler) and per hard sampler (DistMult),
    each configuration in a fresh worker of each version."""
    configs = [(m, "uniform") for m in args.memory_models] + [("distmult", s) for s in args.samplers
                                                              if s != "uniform"]
    out = {}
    for v, root in _versions(args).items():
        per = {}
        for model, sampler in configs:
            for emu in (False, True):
                w = Worker(root, args)
                per[f"{model}/{sampler}{'+emu' if emu else ''}"] = w.call(
                    "memory", spec={**_step_spec(args, model, sampler, emu), "steps": 3})["result"]
                w.close()
        ratios = {}
        for model, sampler in configs:
            a, b = per[f"{model}/{sampler}+emu"], per[f"{model}/{sampler}"]
            ratios[f"{model}/{sampler}_emu_over_vanilla_steps_peak"] = a["steps_peak_rss_mb"] / b["steps_peak_rss_mb"]
            ratios[f"{model}/{sampler}_emu_over_vanilla_steps_increment"] = (
                (a["steps_peak_rss_mb"] - a["rss_before_steps_mb"])
                / max(1e-9, b["steps_peak_rss_mb"] - b["rss_before_steps_mb"]))
        out[v] = {"runs": per, "ratios": ratios}
    return out


def _nbfnet_job(model, anchor, rel, materialise):
    def run():
        model.materialise_messages = materialise
        nodes, query = model.propagate(anchor, rel)
        model.score_nodes(nodes[:, :33], query).sum().backward()
    return run


def row_nbfnet(args, clock):
    import torch

    from kgestimator import memory
    from kgestimator.models import NBFNet
    from types import SimpleNamespace

    out = {}
    for dataset, batch in (("kinship", 32), ("WN18RR", 4)):
        ids, n_ent, n_rel = _encoded(dataset)
        model = NBFNet(n_ent, n_rel, 32, generator=torch.Generator().manual_seed(0), n_layers=6).set_graph(ids)
        gen = torch.Generator().manual_seed(0)
        anchor = torch.randint(n_ent, (batch,), generator=gen)
        rel = torch.randint(2 * n_rel, (batch,), generator=gen)
        t = interleaved({"materialised": _nbfnet_job(model, anchor, rel, True),
                         "blocked": _nbfnet_job(model, anchor, rel, False)}, args.nbf_repeats, clock, warmup=0)
        out[dataset] = {"batch": batch, **t, "speedup": t["materialised"]["median"] / t["blocked"]["median"]}
    # FB15k-237 at the reference batch: the activations the memory check estimates (no run)
    ids, n_ent, n_rel = _encoded("FB15k-237")
    cfg = SimpleNamespace(batch_size=64, n_negatives=32, emu=False, emu_resample=True)
    need = memory.activation_estimate(NBFNet, n_ent, n_rel, ids.shape[0], cfg, 32,
                                      {"n_layers": 6, "dependent": True})[0]
    out["FB15k-237_batch64_activation_estimate_GB"] = need / 2 ** 30
    out["FB15k-237_batch64_materialised_messages_GB"] = 4 * 3 * 6 * 2 * ids.shape[0] * 64 * 32 / 2 ** 30
    return out


def row_nbfnet_defaults(args, clock):
    from kgestimator import KGEmbedder, load_dataset

    d = load_dataset("kinship")
    est = KGEmbedder(model="nbfnet", emu=True, max_steps=args.nbf_steps, random_state=0).fit(d.train)
    per_step = sum(h["seconds"] for h in est.history_) / est.history_[-1]["step"]
    steps = -(-len(d.train) // est.model_.default_params["batch_size"])
    return {"seconds_per_step_wall": per_step, "steps_per_epoch": steps,
            "implied_minutes_for_20_epochs": 20 * steps * per_step / 60, "steps_timed": est.history_[-1]["step"]}


def row_small_graph(args, clock, workers):
    configs = (("uniform", True), ("san", True), ("nscaching", True), ("adversarial", False), ("adversarial", True))
    epochs = {v: {} for v in workers}
    order = list(workers)
    for r in range(args.repeats):  # alternating configurations and versions; set-up (SAN pools) apart
        for sampler, emu in configs:
            for v in (order if r % 2 == 0 else order[::-1]):
                spec = {"dataset": "nations", "sampler": sampler, "emu": emu, "epochs": args.small_epochs}
                per_epoch = workers[v].call("epochs", spec=spec)["result"]
                epochs[v].setdefault(f"{sampler}{'+emu' if emu else ''}", []).append(statistics.median(per_epoch))
    out = {}
    for v, per in epochs.items():
        base = statistics.median(per["uniform+emu"])
        out[v] = {k: {"seconds_per_epoch": statistics.median(t), "min": min(t), "max": max(t), "runs": t,
                      "vs_uniform_emu": statistics.median(t) / base, "clock": "CPU (epoch-end callbacks)"}
                  for k, t in per.items()}
    if "before" in out:
        out["after_over_before"] = {k: _after_over_before(out["after"][k]["seconds_per_epoch"],
                                                          out["before"][k]["seconds_per_epoch"]) for k in out["after"]}
    return out


def row_evaluation(args, clock, workers):
    runs = {v: [] for v in workers}
    order = list(workers)
    for r in range(args.repeats):
        for v in (order if r % 2 == 0 else order[::-1]):
            runs[v].append(workers[v].call("evaluation", spec={})["result"])
    out = {}
    for v, pairs in runs.items():
        first = statistics.median(p[0] for p in pairs)
        again = statistics.median(p[1] for p in pairs)
        out[v] = {"first_call_s": [p[0] for p in pairs], "repeated_call_s": [p[1] for p in pairs],
                  "speedup": first / again, "fixed_cost_share_of_first_call": (first - again) / first,
                  "note": "the repeated call still ranks everything: its time is the ranking (plus digests)"}
    return out


def row_quality(args, clock, workers):
    out = {v: {} for v in workers}
    for model in args.quality_models:
        for sampler in args.samplers:
            for emu in (False, True):
                spec = {"dataset": args.quality_dataset, "model": model, "sampler": sampler, "emu": emu,
                        "epochs": args.quality_epochs, "seed": 0}
                for v, w in workers.items():
                    out[v][f"{model}/{sampler}/{'emu' if emu else 'vanilla'}"] = w.call("quality", spec=spec)["result"]
                print(f"quality {model}/{sampler}/emu={emu}: " + ", ".join(
                    f"{v} {out[v][f'{model}/{sampler}/' + ('emu' if emu else 'vanilla')]['mrr']:.4f}"
                    for v in workers), flush=True)
    if "before" in out:
        out["mrr_after_minus_before"] = {k: out["after"][k]["mrr"] - out["before"][k]["mrr"] for k in out["after"]}
    return out


# -- the profile: where a step's time goes (this checkout only, in this process) ---------------------

class Parts:
    """CPU time per named part of a step, exclusive of the parts nested in it."""

    def __init__(self, clock):
        self.clock, self.totals, self.stack = clock, {}, []

    def part(self, name):
        import contextlib

        @contextlib.contextmanager
        def timing():
            self.stack.append(0.0)
            t0 = self.clock()
            try:
                yield
            finally:
                spent = self.clock() - t0
                nested = self.stack.pop()
                self.totals[name] = self.totals.get(name, 0.0) + spent - nested
                if self.stack:
                    self.stack[-1] += spent
        return timing()

    def wrap(self, owner, attr, name):
        fn = getattr(owner, attr)

        def timed_fn(*a, **kw):
            with self.part(name):
                return fn(*a, **kw)
        setattr(owner, attr, timed_fn)
        return fn


#: (module, function, part) timed by the profile; the step functions look them up at call time
PROFILED = (("kgestimator.training", "_lookup", "lookups"),
            ("kgestimator.training", "_score_negatives", "scoring negatives"),
            ("kgestimator.training", "emu_scores", "EMU term"),
            ("kgestimator.training", "sampled_emu_scores", "EMU term"),
            ("kgestimator.training", "training_loss", "loss"),
            ("kgestimator.training", "regularization", "loss"))
SAMPLER_PARTS = (("sample", "sampling"), ("update", "sampler update"), ("generate", "DANS generation"),
                 ("_train_gan", "DANS GAN training"))


def _gemm_rate(clock):
    """Single-process float32 matrix-product rate (FLOP/s) of this machine: 1024^2 x 1024 products."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0, n = clock(), 10
    for _ in range(n):
        a @ b
    return n * 2 * 1024 ** 3 / (clock() - t0)


def profile_config(args, clock, spec):
    import importlib

    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    parts = Parts(clock)
    originals = []
    for module, attr, name in PROFILED:
        mod = importlib.import_module(module)
        if hasattr(mod, attr):
            originals.append((mod, attr, parts.wrap(mod, attr, name)))
    try:
        step = make_step(spec, parts)
        for attr, name in SAMPLER_PARTS:
            if hasattr(step.sampler, attr):
                parts.wrap(step.sampler, attr, name)
        for _ in range(2):
            step()
        parts.totals.clear()
        t0 = clock()
        for _ in range(args.profile_steps):
            step()
        total = clock() - t0
        per_part = {k: 1000 * v / args.profile_steps for k, v in sorted(parts.totals.items(), key=lambda kv: -kv[1])}
        per_part["other (queries, positives' scores, logits, glue)"] = 1000 * total / args.profile_steps - sum(
            per_part.values())
        with FlopCounterMode(display=False) as flops:
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile_steps):
                step()
    finally:
        for mod, attr, fn in originals:
            setattr(mod, attr, fn)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.profile_top]
    top = [{"op": e.key, "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / args.profile_steps,
            "calls_per_step": e.count / args.profile_steps} for e in events]
    return {"step_ms": 1000 * total / args.profile_steps, "parts_ms": per_part,
            "matmul_gflop_per_step": flops.get_total_flops() / 1e9, "top_ops": top}


def run_profile(args, clock):
    rate = _gemm_rate(clock)
    result = {"machine": machine(), "config": vars(args), "matmul_gflops_measured": rate / 1e9, "configs": {}}
    for cfg in args.profile_configs:
        model, sampler, emu = cfg.split(":")
        spec = _step_spec(args, model, sampler, emu == "emu")
        t0 = time.perf_counter()
        res = profile_config(args, clock, spec)
        res["matmul_bound_ms"] = 1000 * res["matmul_gflop_per_step"] * 1e9 / rate
        result["configs"][cfg] = res
        print(f"{cfg}: {res['step_ms']:.1f} ms/step, matmul bound {res['matmul_bound_ms']:.1f} ms "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        print("   " + ", ".join(f"{k} {v:.1f}" for k, v in res["parts_ms"].items()), flush=True)
        write_json(args.profile_out, result)
    return result


def main():
    if "--worker" in sys.argv:
        return worker_main()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--reference", default=None,
                   help="root of a checkout to compare with (rows: " + ", ".join(VERSIONED) + ")")
    p.add_argument("--dataset", default="FB15k-237", help="dataset of the sampler and model step rows")
    p.add_argument("--samplers", default="uniform,san,nscaching,adversarial")
    p.add_argument("--models", default="distmult,complex,transe,rotate,hake")
    p.add_argument("--memory-models", default="distmult,complex,transe",
                   help="models whose EMU step's peak memory the memory row measures (uniform sampler)")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--n-negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--san-walks", type=int, default=1000, help="SAN random walks per entity (pool building)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--nbf-repeats", type=int, default=3)
    p.add_argument("--nbf-steps", type=int, default=20, help="steps of the default NBFNet fit on kinship")
    p.add_argument("--small-epochs", type=int, default=20)
    p.add_argument("--quality-dataset", default="kinship")
    p.add_argument("--quality-models", default="distmult,complex,transe")
    p.add_argument("--quality-epochs", type=int, default=2)
    p.add_argument("--compile", default="auto", type=lambda v: {"true": True, "false": False}.get(v.lower(), v),
                   help="the estimator's compile parameter for the step rows: auto (a fit's default: on from "
                        "50,000 training triples, so on for FB15k-237), True or False")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--short", action="store_true", help="few repeats and steps (a smoke run, noisy)")
    p.add_argument("--profile", action="store_true", help="profile the step configurations instead (JSON)")
    p.add_argument("--profile-configs", default="distmult:uniform:vanilla,distmult:san:vanilla,"
                   "distmult:nscaching:vanilla,distmult:adversarial:vanilla,distmult:uniform:emu,distmult:san:emu,"
                   "distmult:nscaching:emu,distmult:adversarial:emu,complex:uniform:vanilla,complex:uniform:emu,"
                   "transe:uniform:vanilla,transe:uniform:emu", help="model:sampler:vanilla|emu, comma-separated")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--profile-out", default=os.path.join(HERE, "results", "speed_profile.json"))
    p.add_argument("--out", default=os.path.join(HERE, "results", "speed_table.json"))
    args = p.parse_args()
    if args.short:
        args.repeats, args.nbf_repeats, args.nbf_steps, args.small_epochs = 3, 2, 3, 4
        args.san_walks = min(args.san_walks, 50)
    args.samplers, args.models = args.samplers.split(","), args.models.split(",")
    args.memory_models = [m for m in args.memory_models.split(",") if m]
    args.quality_models = args.quality_models.split(",")
    args.profile_configs = args.profile_configs.split(",")
    import torch

    torch.set_num_threads(args.threads)
    clock = _clock(args.clock)
    if args.profile:
        run_profile(args, clock)
        return
    result = {"machine": machine(), "config": vars(args), "rows": {}}
    workers = None
    try:
        for row in args.rows.split(","):
            t0 = time.perf_counter()
            if row in VERSIONED:
                workers = workers or _workers(args)
                result["rows"][row] = globals()[f"row_{row}"](args, clock, workers)
            else:
                result["rows"][row] = globals()[f"row_{row}"](args, clock)
            print(f"{row}: done in {time.perf_counter() - t0:.0f} s", flush=True)
            write_json(args.out, result)
    finally:
        for w in (workers or {}).values():
            w.close()
    print(json.dumps(summary(result), indent=1))


def summary(result):
    """The ratios of the issue's table, per version."""
    rows, out = result["rows"], {}
    for key in ("plain", "emu"):
        for v, per in rows.get("samplers", {}).get(key, {}).items():
            if v != "after_over_before":
                out[f"samplers/{key}/{v}"] = {s: round(x["vs_uniform"], 2) for s, x in per.items()}
                out[f"samplers/{key}/{v}/vs_uniform_per_positive"] = {
                    s: round(x["vs_uniform_per_positive"], 2) for s, x in per.items()}
    for v, per in rows.get("models", {}).items():
        if v in ("after", "before"):
            out[f"models/{v}"] = {k: round(x, 2) for k, x in per["ratios"].items()}
    for v, per in rows.get("memory", {}).items():
        out[f"memory/{v}"] = {k: round(x, 2) for k, x in per["ratios"].items()}
    for v, per in rows.get("small_graph", {}).items():
        if v != "after_over_before":
            out[f"small_graph/{v}"] = {k: round(x["vs_uniform_emu"], 2) for k, x in per.items()}
    for v, per in rows.get("evaluation", {}).items():
        out[f"evaluation/{v}"] = round(per["fixed_cost_share_of_first_call"], 3)
    return out


if __name__ == "__main__":
    main()
