"""Published training configurations as ``KGEmbedder`` parameters: ``KGEmbedder(**PRESETS[name])``.

Read from the published configuration files (facts only; the code is ours):

* LibKGE (Ruffinelli et al., ICLR 2020), ``uma-pi1/kge`` ``best_models/<dataset>/<model>/config.yaml``:
  FB15k-237 DistMult and ComplEx are negative sampling with the ``kl`` (softmax
  cross-entropy) loss, WN18RR DistMult is KvsAll and WN18RR ComplEx 1vsAll; all
  use Adagrad, embedding dropout and ``ReduceLROnPlateau`` (factor 0.95) on
  validation MRR every 5 epochs, at most 400 epochs, early stopping after 10
  evaluations without improvement.
* kbc (Lacroix et al., ICML 2018), ``facebookresearch/kbc``: ComplEx with
  reciprocal relations, every query scored against all entities, N3 weight 5e-2
  (FB15k-237) / 1e-1 (WN18RR), Adagrad lr 0.1, batch 100 queries, init scale
  1e-3, 100 epochs; here at rank 100 (``dim=100``), which kbc reports at 0.35
  (FB15k-237) and 0.47 (WN18RR).

Translations, and where they are approximate:

* LibKGE's ``dim`` counts real numbers; ComplEx's ``dim`` here counts complex
  ones, so LibKGE ComplEx 256 is ``dim=128``. Its uniform init ``[a, -a]`` is
  ``init_scale=|a|`` (``model_params``).
* LibKGE's weighted L3 with separate entity / relation weights (1e-9 to 1e-15)
  becomes ``regularizer='n3'`` with the entity weight divided by 3 (LibKGE divides
  by ``p``) for both; WN18RR ComplEx's unweighted L2 (entity 4.5e-6, relation
  4.2e-10) becomes ``'l2'`` with the entity weight / 2. Our N3 on ComplEx
  penalises moduli, LibKGE's L3 raw coordinates; at these weights the penalty
  is negligible either way.
* LibKGE's FB15k-237 negative sampling draws 255 (DistMult) / 529 (ComplEx)
  heads and 402 / 1000 tails for every triple: here
  ``sampler=UniformSampler(corrupt='both')`` corrupts both sides of every triple
  in every step, with the larger count for both. (Before 2026-12-02 these
  presets corrupted one side per step, half of LibKGE's training signal an
  epoch; BENCHMARKS.md §10 has both.) LibKGE draws negatives per positive; ours
  are shared by chunks of ``neg_chunk_size`` positives.
* kbc's batch of 100 queries is 50 triples here: 1vsAll asks both directions of
  each triple in the same step.
* kbc's normal init of std 1e-3 becomes uniform with the same std (``init_scale = 1e-3 * sqrt(3)``).
"""

import math

from .samplers import UniformSampler

_PLATEAU = {"factor": 0.95, "threshold": 1e-4}
_LIBKGE = dict(optimizer="adagrad", lr_scheduler="plateau", eval_every=5, early_stopping=True, patience=10,
               n_epochs=400)

PRESETS = {
    "libkge-fb15k237-distmult": dict(
        _LIBKGE, model="distmult", dim=256, reciprocal=True, training="negative_sampling", loss="ce",
        sampler=UniformSampler(corrupt="both"),
        n_negatives=402, batch_size=1024, learning_rate=0.15953749294870845,
        lr_scheduler_params={**_PLATEAU, "patience": 6}, dropout=(0.4196834675552332, 0.40971036404279193),
        regularizer="n3", reg_weight=1.408318976944572e-09 / 3, model_params={"init_scale": 0.9352212163936202}),
    "libkge-fb15k237-complex": dict(
        _LIBKGE, model="complex", dim=128, reciprocal=True, training="negative_sampling", loss="ce",
        sampler=UniformSampler(corrupt="both"),
        n_negatives=1000, batch_size=1024, learning_rate=0.18255429345236635,
        lr_scheduler_params={**_PLATEAU, "patience": 7}, dropout=(0.5, 0.22684140529516872),
        regularizer="n3", reg_weight=6.7041002019034085e-09 / 3, model_params={"init_scale": 0.8328168489829233}),
    "libkge-wn18rr-distmult": dict(
        _LIBKGE, model="distmult", dim=512, reciprocal=True, training="kvsall", loss="ce",
        label_smoothing=0.07398311105554728, batch_size=1024, learning_rate=0.3312683797847912,
        lr_scheduler_params={**_PLATEAU, "patience": 7}, dropout=(0.3667933782666931, 0.5),
        regularizer="n3", reg_weight=1.2523719363956436e-12 / 3, model_params={"init_scale": 0.7226369686094678}),
    "libkge-wn18rr-complex": dict(
        _LIBKGE, model="complex", dim=64, reciprocal=False, training="1vsall", loss="ce", batch_size=512,
        learning_rate=0.5255808623927111, lr_scheduler_params={**_PLATEAU, "patience": 5},
        dropout=(0.3592749142853321, 0.3112283826796357), regularizer="l2",
        reg_weight=4.5230047706178325e-06 / 2, model_params={"init_scale": 0.28148249060722197}),
    "kbc-fb15k237-complex-n3": dict(
        model="complex", dim=100, reciprocal=True, training="1vsall", loss="ce", optimizer="adagrad",
        learning_rate=0.1, batch_size=50, n_epochs=100, regularizer="n3", reg_weight=5e-2, eval_every=5,
        model_params={"init_scale": 1e-3 * math.sqrt(3)}),
    "kbc-wn18rr-complex-n3": dict(
        model="complex", dim=100, reciprocal=True, training="1vsall", loss="ce", optimizer="adagrad",
        learning_rate=0.1, batch_size=50, n_epochs=100, regularizer="n3", reg_weight=1e-1, eval_every=5,
        model_params={"init_scale": 1e-3 * math.sqrt(3)}),
}
"""Preset name -> ``KGEmbedder`` keyword arguments (copy before editing: ``dict(PRESETS[name], ...)``)."""
