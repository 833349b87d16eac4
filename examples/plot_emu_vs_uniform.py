"""
EMU negatives versus plain uniform negatives
============================================

EMU (Embedding MUtation; Takamoto et al., TMLR 2025) turns each uniform negative
into a harder one: a random fraction ``mutation_ratio`` of its embedding
coordinates is copied from the positive. A second cross-entropy term with
Unbounded Label Smoothing (label ``beta`` for the mutated negatives) asks the
model to keep them a soft margin ``log(1 / beta)`` below the positive, and
``alpha`` weighs the ordinary loss on unmutated negatives (Eq. 12 of the paper).

This example trains DistMult four ways on the same generated graph, with the
same seed and budget:

- ``emu=False``: uniform negatives only;
- ``emu=True``: uniform + EMU, with the ``'auto'`` parameters (for DistMult the
  released EMU scripts' mutation and label with ``alpha=0.25``);
- ``emu="mixup"``: the paper's comparison, mixing whole embeddings with a
  Beta(2, 1) weight instead of mutating coordinates;
- ``emu="ls_only"``: ULS on unmutated negatives (the "w/o Emb.Mut." ablation).

On a graph this small the differences are of the order of the seed-to-seed
spread; the point is how to switch the methods on. Test MRR is then broken
down by the relational pattern each relation was generated with.
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
# the library's default sizes (d=100, 256 negatives, batch 1000), which the 'auto' EMU values were chosen at
common = dict(model="distmult", n_epochs=3 if FAST else 50, eval_every=5, random_state=0)

# %%
# Train the four variants
# -----------------------
# Passing ``valid`` records the validation MRR every ``eval_every`` epochs in
# ``history_`` (and adds the validation triples to the evaluation filter).
# MIXUP and "ULS only" use ``beta`` (and ``alpha``) too; ``mutation_ratio``
# only matters for ``emu=True``.
variants = {"uniform": False, "EMU": True, "MIXUP": "mixup", "ULS only": "ls_only"}
fitted = {}
for name, emu in variants.items():
    t0 = time.perf_counter()
    fitted[name] = KGEmbedder(emu=emu, **common).fit(kg.train, valid=kg.valid)
    p = fitted[name].emu_params_
    print(f"{name:>9}: fit in {time.perf_counter() - t0:.1f} s"
          + (f"  (alpha={p['alpha']:.2f}, mutation_ratio={p['mutation_ratio']:.2f}, "
             f"beta={p['beta']:.2f})" if emu else ""))

# %%
# Test metrics
# ------------
# Filtered ranking against all 300 entities, both directions.
print(f"{'method':>9}  {'MRR':>6}  {'Hits@1':>6}  {'Hits@10':>7}")
test_mrr = {}
for name, est in fitted.items():
    m = est.evaluate(kg.test)
    test_mrr[name] = m["mrr"]
    print(f"{name:>9}  {m['mrr']:6.3f}  {m['hits@1']:6.3f}  {m['hits@10']:7.3f}")

# %%
# What EMU did on this graph
# --------------------------
# The ``'auto'`` values were chosen at the library's default sizes on other
# graphs; whether they help depends on the graph and the
# configuration (BENCHMARKS.md section 8), so the example says which way it went
# instead of assuming.
gain = test_mrr["EMU"] - test_mrr["uniform"]
if gain > 0.005:
    print(f"EMU raised test MRR by {gain:.3f} here ({test_mrr['uniform']:.3f} -> {test_mrr['EMU']:.3f}).")
else:
    print(f"EMU did not help here ({test_mrr['uniform']:.3f} uniform, {test_mrr['EMU']:.3f} EMU): its 'auto' "
          "values were chosen on other graphs, and EMU, a regulariser, costs MRR when the model is small for "
          "its graph; plot_grid_search_emu.py tunes alpha, mutation_ratio and beta for a graph.")

# %%
# MRR per relational pattern
# --------------------------
# ``kg.patterns`` maps each relation to the pattern it was generated with.
# DistMult scores ``(h, r, t)`` and ``(t, r, h)`` alike, which suits symmetric
# relations; compositional ones need two hops of reasoning and are the hardest.
# ``filter_triples=kg.test`` keeps every test fact filtered when scoring a subset.
pattern_of = np.array([kg.patterns[r] for r in kg.test[:, 1]])
patterns = sorted(set(pattern_of))
print(f"{'method':>9}  " + "  ".join(f"{p:>13}" for p in patterns))
for name, est in fitted.items():
    row = [est.evaluate(kg.test[pattern_of == p], filter_triples=kg.test)["mrr"] for p in patterns]
    print(f"{name:>9}  " + "  ".join(f"{v:13.3f}" for v in row))

# %%
# Validation MRR during training
# ------------------------------
# Drawn when matplotlib is installed; printed otherwise.
curves = {name: [(r["epoch"], r["valid_mrr"]) for r in est.history_ if "valid_mrr" in r]
          for name, est in fitted.items()}
try:
    import matplotlib.pyplot as plt
except ImportError:
    for name, points in curves.items():
        print(f"{name:>9}: " + ", ".join(f"epoch {e}: {v:.3f}" for e, v in points))
else:
    from kgestimator.plotting import show_or_save

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, points in curves.items():
        epochs, values = zip(*points)
        ax.plot(epochs, values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("filtered validation MRR")
    ax.set_title("DistMult on make_kg(random_state=0)")
    ax.legend(loc="lower right")  # the curves rise from the lower left
    show_or_save("plot_emu_vs_uniform")  # without a display: saved as PNG, and the path printed
