"""
Comparing scoring models
========================

The scoring model is one parameter, ``model``: ``'transe'``, ``'distmult'``,
``'complex'``, ``'rotate'`` or ``'hake'`` (``kgestimator list`` prints them).
Each has its own inductive bias, and a generated graph with planted patterns
makes them visible:

- DistMult scores ``(h, r, t)`` and ``(t, r, h)`` alike: it fits symmetric
  relations (and a pair of inverse relations, by giving both the same
  embedding) but no antisymmetric one;
- TransE translates (``h + r ~ t``): inverse and compositional relations are
  natural, symmetric ones force ``r ~ 0``;
- ComplEx and RotatE, in the complex plane, handle all four patterns;
- HAKE adds a modulus for hierarchy levels to RotatE's phases.

Every model is trained with EMU on the same graph, with the same seed and a
budget of a few seconds each; scores on a graph this small move with the seed,
so read the table for its broad strokes.
"""

import os
import time

import numpy as np
import torch

from kgestimator import KGEmbedder, make_kg

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"

# a graph this small gains nothing from more CPU threads, and on a busy machine
# torch's default (one per core) made these fits several times slower
torch.set_num_threads(1)

kg = make_kg(random_state=0)
common = dict(n_negatives=32, batch_size=500, learning_rate=0.01, emu=True,
              n_epochs=2 if FAST else 30, random_state=0)
# distance models (TransE, RotatE, HAKE) want a small margin on a graph this size;
# the complex-valued models get half the dimensions (each one is two reals)
configs = {
    "transe": dict(dim=64, gamma=6.0),
    "distmult": dict(dim=64),
    "complex": dict(dim=32),
    "rotate": dict(dim=32, gamma=6.0),
    "hake": dict(dim=32, gamma=6.0),
}

# %%
# Fit every model
# ---------------
fitted, seconds = {}, {}
for name, config in configs.items():
    t0 = time.perf_counter()
    fitted[name] = KGEmbedder(model=name, **config, **common).fit(kg.train, valid=kg.valid)
    seconds[name] = time.perf_counter() - t0
    emu = ", ".join(f"{k}={v:.2f}" for k, v in fitted[name].emu_params_.items())
    print(f"{name:>8}: {seconds[name]:.1f} s ('auto' EMU parameters: {emu})")

# %%
# Filtered test metrics, overall and per relational pattern
# ---------------------------------------------------------
# ``filter_triples=kg.test`` keeps every test fact filtered while a subset of
# the test triples is scored.
pattern_of = np.array([kg.patterns[r] for r in kg.test[:, 1]])
patterns = sorted(set(pattern_of))
print(f"{'model':>8}  {'MRR':>5}  {'Hits@10':>7}  " + "  ".join(f"{p[:13]:>13}" for p in patterns))
for name, est in fitted.items():
    m = est.evaluate(kg.test)
    per_pattern = [est.evaluate(kg.test[pattern_of == p], filter_triples=kg.test)["mrr"] for p in patterns]
    print(f"{name:>8}  {m['mrr']:5.3f}  {m['hits@10']:7.3f}  " + "  ".join(f"{v:13.3f}" for v in per_pattern))

# %%
# Symmetry, checked directly
# --------------------------
# For a symmetric relation, a model should score ``(h, r, t)`` and ``(t, r, h)``
# about the same; for an inverse relation it should not have to. DistMult's
# scores are exactly symmetric whatever the relation.
sym = kg.test[pattern_of == "symmetric"][:100]
inv = kg.test[pattern_of == "inverse"][:100]
print(f"{'model':>8}  mean |s(h,r,t) - s(t,r,h)|: symmetric / inverse relations")
for name, est in fitted.items():
    gap = [np.abs(est.score_samples(x) - est.score_samples(x[:, ::-1])).mean() for x in (sym, inv)]
    print(f"{name:>8}  {gap[0]:.3f} / {gap[1]:.3f}")

# %%
# Learning curves
# ---------------
# Drawn with :func:`kgestimator.plotting.plot_learning_curves` when matplotlib
# is installed (``pip install 'kgestimator[plot]'``).
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    from kgestimator.plotting import plot_learning_curves, show_or_save

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    plot_learning_curves(fitted, ax=ax)
    ax.set_title("Five models with EMU on make_kg(random_state=0)")
    show_or_save("plot_compare_models")  # without a display: saved as PNG, and the path printed
