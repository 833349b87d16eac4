"""Fits with and without freed large blocks kept in glibc's heap (``kgestimator._heap``).

Each configuration trains in a fresh process twice per round, once with
``KGESTIMATOR_KEEP_FREED_MEMORY=0`` (glibc's defaults) and once without (the
library's default), the order flipping every round. A callback times the
training from ``on_fit_begin`` to ``on_fit_end`` (setup excluded); the child also
reports the system time and minor page faults of that span, whether the fit
kept freed blocks (the headroom rule), and the process's peak resident memory.

    python benchmarks/bench_heap.py
    python benchmarks/bench_heap.py --configs nbfnet_wn18rr_b8 --rounds 1

Writes ``benchmarks/results/heap.json`` (or ``--out``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, shared_dataset, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

#: name -> (dataset, estimator parameters); every fit is one thread, no early stopping
CONFIGS = {
    "complex_1vsall_fb15k237": ("FB15k-237", dict(model="complex", dim=100, training="1vsall", reciprocal=True,
                                                  batch_size=1000, max_steps=20)),
    "distmult_fb15k237": ("FB15k-237", dict(model="distmult", dim=100, batch_size=1000, max_steps=300)),
    "distmult_emu_fb15k237": ("FB15k-237", dict(model="distmult", dim=100, batch_size=1000, max_steps=300,
                                                emu=True)),
    "distmult_san_fb15k237": ("FB15k-237", dict(model="distmult", dim=100, batch_size=1000, max_steps=40,
                                                sampler="san")),
    "nbfnet_wn18rr_b8": ("WN18RR", dict(model="nbfnet", batch_size=8, max_steps=4)),
    "nbfnet_kinship": ("kinship", dict(model="nbfnet", max_steps=20)),
}


def child(name):
    import resource
    import time

    import torch

    from kgestimator import KGEmbedder, _heap

    torch.set_num_threads(1)
    dataset, params = CONFIGS[name]
    data = shared_dataset(dataset)
    marks = {}

    class Clock:
        def on_fit_begin(self, est):
            marks["begin"] = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), _heap._depth > 0)

        def on_fit_end(self, est):
            marks["end"] = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF))

    KGEmbedder(**params, early_stopping=False, random_state=0, verbose=0, callbacks=[Clock()]).fit(data.train)
    (w0, r0, kept), (w1, r1) = marks["begin"], marks["end"]
    return {"config": name, "kept": kept, "wall": w1 - w0,
            "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, "sys": r1.ru_stime - r0.ru_stime,
            "minflt": r1.ru_minflt - r0.ru_minflt, "peak_rss_mb": r1.ru_maxrss / 1024}


def run(name, keep):
    env = dict(os.environ, KGESTIMATOR_KEEP_FREED_MEMORY="1" if keep else "0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, env=env)
    if out.returncode:
        print(f"{name} keep={keep}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if "--child" in sys.argv:
        print(json.dumps(child(sys.argv[sys.argv.index("--child") + 1])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--note", default="", help="recorded in the JSON (how the machine was shared)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "heap.json"))
    args = p.parse_args()
    print("fits with glibc's defaults (off) and with freed blocks kept (on, the library's default): "
          "CPU seconds of training (user + system), one thread, each fit in its own process", flush=True)
    rows = {}
    for name in args.configs.split(","):
        runs = {"off": [], "on": []}
        for r in range(args.rounds):
            for keep in ((False, True) if r % 2 == 0 else (True, False)):
                res = run(name, keep)
                if res is not None:
                    runs["on" if keep else "off"].append(res)
        if not (runs["off"] and runs["on"]):
            continue
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("cpu", "wall", "sys", "minflt", "peak_rss_mb")}
               for k, v in runs.items()}
        rows[name] = {"params": CONFIGS[name][1], "dataset": CONFIGS[name][0], "off": med["off"], "on": med["on"],
                      "kept": runs["on"][0]["kept"], "off_over_on_cpu": med["off"]["cpu"] / med["on"]["cpu"],
                      "on_over_off_peak_rss": med["on"]["peak_rss_mb"] / med["off"]["peak_rss_mb"], "runs": runs}
        print(f"{name:<26} off {med['off']['cpu']:8.2f} s (system {med['off']['sys']:6.2f})  "
              f"on {med['on']['cpu']:8.2f} s (system {med['on']['sys']:6.2f}, kept={rows[name]['kept']})  "
              f"speed-up {rows[name]['off_over_on_cpu']:.2f}x  peak {med['off']['peak_rss_mb']:.0f} -> "
              f"{med['on']['peak_rss_mb']:.0f} MB", flush=True)
    write_json(args.out, {"machine": machine(), "note": args.note, "rounds": args.rounds, "results": rows})


if __name__ == "__main__":
    main()
