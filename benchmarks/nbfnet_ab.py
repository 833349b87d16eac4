"""Same-process A/B timing of NBFNet propagation (+ backward) between an older nbfnet.py and this checkout's.

Random graph of the given size, 6 PNA layers, dim 32; runs alternate between
the two versions and the minimum of ``reps`` runs is printed, so that a busy
machine slows both alike.

    git show ec1a452:kgestimator/models/nbfnet.py > /tmp/old_nbfnet.py
    python benchmarks/nbfnet_ab.py /tmp/old_nbfnet.py --n 104 --edges 8544 --batch 32       # kinship size
    python benchmarks/nbfnet_ab.py /tmp/old_nbfnet.py --n 40943 --edges 86835 --batch 4     # WN18RR size
"""

import argparse
import importlib.util
import time

import torch

from kgestimator.models import nbfnet as new


def load_old(path):
    """The NBFNet module of an older nbfnet.py file."""
    spec = importlib.util.spec_from_file_location("old_nbfnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model, anchor, rel, train):
    """One propagation; with ``train``, a backward pass from 33 nodes' representations too."""
    if train:
        nodes, _ = model.propagate(anchor, rel)
        nodes[:, :33].sum().backward()
    else:
        with torch.no_grad():
            model.propagate(anchor, rel)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="path of the older nbfnet.py")
    p.add_argument("--n", type=int, default=104, help="entities")
    p.add_argument("--edges", type=int, default=8544, help="fact-graph triples (twice as many directed edges)")
    p.add_argument("--relations", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    graph = torch.stack([torch.randint(args.n, (args.edges,), generator=gen),
                         torch.randint(args.relations, (args.edges,), generator=gen),
                         torch.randint(args.n, (args.edges,), generator=gen)], 1)
    models = {name: module.NBFNet(args.n, args.relations, 32, generator=torch.Generator().manual_seed(0),
                                  n_layers=6).set_graph(graph)
              for name, module in (("old", load_old(args.old)), ("new", new))}
    anchor = torch.randint(args.n, (args.batch,), generator=gen)
    rel = torch.randint(2 * args.relations, (args.batch,), generator=gen)
    for train in (True, False):
        times = {name: [] for name in models}
        for _ in range(args.reps):
            for name, model in models.items():
                t0 = time.perf_counter()
                run(model, anchor, rel, train)
                times[name].append(time.perf_counter() - t0)
        print(f"n={args.n} edges={args.edges} batch={args.batch} threads={args.threads} "
              f"{'train' if train else 'eval '}: old {min(times['old']):.3f} s, new {min(times['new']):.3f} s "
              f"(min of {args.reps})", flush=True)


if __name__ == "__main__":
    main()
