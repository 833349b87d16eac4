"""
Plots: learning curves, negative hardness and embedding maps
============================================================

:mod:`kgestimator.plotting` draws four views of fitted estimators (install
matplotlib with ``pip install 'kgestimator[plot]'``); each function takes an
optional ``ax`` and returns the matplotlib Axes.

- :func:`~kgestimator.plotting.plot_learning_curves`: loss and validation MRR
  per epoch, from ``history_``;
- :func:`~kgestimator.plotting.plot_negative_hardness`: cosine similarity of
  uniform and EMU negatives to their positives (Fig. 3 of the EMU paper);
- :func:`~kgestimator.plotting.plot_negatives_pca`: true tails and negatives
  in one PCA plane (Fig. 4);
- :func:`~kgestimator.plotting.plot_embedding_map`: all entities in 2-D.
"""

import os
from collections import Counter

import matplotlib.pyplot as plt
import torch

from kgestimator import KGEmbedder, make_kg
from kgestimator.plotting import (plot_embedding_map, plot_learning_curves, plot_negative_hardness,
                                  plot_negatives_pca, show_or_save)

# set KGESTIMATOR_EXAMPLE_FAST=1 for a smoke run of a few seconds
FAST = os.environ.get("KGESTIMATOR_EXAMPLE_FAST") == "1"

# a graph this small gains nothing from more CPU threads, and on a busy machine
# torch's default (one per core) made these fits several times slower
torch.set_num_threads(1)

kg = make_kg(random_state=0)
common = dict(model="distmult", dim=32, n_negatives=64, batch_size=500, learning_rate=0.02,
              n_epochs=3 if FAST else 40, eval_every=1 if FAST else 5, random_state=0)
uniform = KGEmbedder(**common).fit(kg.train, valid=kg.valid)
# a large mutation ratio makes the EMU negatives visibly harder in the plots below
emu = KGEmbedder(emu=True, mutation_ratio=0.5, beta=0.25, alpha=0.7, **common).fit(kg.train, valid=kg.valid)
print(f"test MRR: uniform {uniform.score(kg.test):.3f}, EMU {emu.score(kg.test):.3f}")

# %%
# Learning curves
# ---------------
# One colour per run: the training loss (solid, left axis) and the filtered
# validation MRR every ``eval_every`` epochs (dashed, right axis). The EMU loss
# has an extra term, so the two losses are not on the same scale; the MRR is.
fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
plot_learning_curves({"uniform": uniform, "EMU": emu}, ax=ax)

# %%
# How hard are the negatives?
# ---------------------------
# For 300 test triples, 64 negatives each: uniform entities, and the same
# entities with half of their coordinates copied from the true tail (EMU,
# ``mutation_ratio=0.5``). EMU negatives are much closer to the positive, so
# they still carry gradient when uniform negatives are already easy.
ax = plot_negative_hardness(emu, kg.test[:300], n_negatives=64)
for line in [t.get_text() for t in ax.get_legend().get_texts()]:
    print(line)

# %%
# True tails and negatives in one plane
# -------------------------------------
# The test triples of one relation: their true tails (stars), and ten uniform
# and ten EMU negatives per triple, projected on the first two principal
# components of all the points. Uniform negatives spread over the whole
# entity space; EMU negatives gather around the true tails.
relation = kg.test[0, 1]
ax = plot_negatives_pca(emu, kg.test[kg.test[:, 1] == relation][:40], n_negatives=10)
ax.set_title(f"True tails and negatives, relation {relation}")

# %%
# An embedding map
# ----------------
# Every entity, coloured by the relation it takes part in most often (a proxy
# for the latent entity types of the generated graph). Entities of one type
# share neighbours, and DistMult places them together.
counts = {}
for h, r, t in kg.train:
    counts.setdefault(h, Counter())[r] += 1
    counts.setdefault(t, Counter())[r] += 1
main_relation = {entity: c.most_common(1)[0][0] for entity, c in counts.items()}
fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
plot_embedding_map(emu, hue=main_relation, annotate=emu.entities_[:8], ax=ax)
groups = Counter(main_relation.values())
print("entities per colour: " + ", ".join(f"{r}: {n}" for r, n in sorted(groups.items())))
show_or_save("plot_visualising")  # without a display: saved as PNGs, and the paths printed
