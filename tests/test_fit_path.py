"""The path of a fit stays short (ARCHITECTURE.md): from ``fit`` to a scoring function in four frames.

A profiler hook records, for every call of a scoring function (a model's
``query`` / ``match`` / ``pairwise`` / ``sampled_scores`` / ``propagate``, EMU's mutated scores in
``kgestimator/mutation.py``) made while training, the frames between ``fit`` and
that call. Lookups of embedding rows are not scores; calls made inside a scoring
function are the model's own business, as are a sampler's own scores (NSCaching's
cache refresh), and calls made by the backward pass
(autograd's engine running a custom Function's backward) are not the fit's path.
"""

import os
import sys

import pytest

import kgestimator
from kgestimator import KGEmbedder, make_kg

ROOT = os.path.dirname(kgestimator.__file__)
SCORING = (os.path.join(ROOT, "models") + os.sep, os.path.join(ROOT, "mutation.py"))
SAMPLERS = os.path.join(ROOT, "samplers") + os.sep
SCORES = {"query", "match", "pairwise", "sampled_scores", "mutated_pairwise", "emu_scores", "score_all", "propagate"}
MAX_FRAMES = 4


def fit_paths(**params):
    """``{callee: frames from fit to its caller, fit included}`` of the training path, longest per callee."""
    paths = {}

    def hook(frame, event, arg):
        if event != "call" or frame.f_code.co_name not in SCORES \
                or not frame.f_code.co_filename.startswith(SCORING):
            return
        chain, caller = [], frame.f_back
        while caller is not None and caller.f_code.co_name != "fit":
            if caller.f_code.co_name in SCORES and caller.f_code.co_filename.startswith(SCORING):
                return  # inside a scoring function already: the model's own business
            if caller.f_code.co_filename.startswith(SAMPLERS):
                return  # a sampler scoring its candidates (NSCaching's cache), not the loss's scores
            chain.append(caller.f_code.co_name)
            caller = caller.f_back
        if caller is None or "train" not in chain or "apply_step" in chain:
            return  # set-up, evaluation or the backward pass
        chain = ["fit"] + chain[::-1]
        name = frame.f_code.co_name
        if len(chain) > len(paths.get(name, ())):
            paths[name] = chain

    data = make_kg(n_entities=40, n_relations=8, n_triples=400, random_state=0).train
    sys.setprofile(hook)
    try:
        KGEmbedder(max_steps=2, batch_size=64, random_state=0, compile=False, **params).fit(data)
    finally:
        sys.setprofile(None)
    return paths


@pytest.mark.parametrize("params", [
    dict(model="distmult"), dict(model="transe", n_negatives=8, neg_chunk_size=1),
    dict(model="rotate", emu=True), dict(model="hake"), dict(model="complex", sampler="nscaching"),
    dict(model="distmult", emu=True, sampler="san"), dict(model="complex", training="1vsall", reciprocal=True),
    dict(model="nbfnet", dim=8, n_negatives=4),
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_fit_reaches_every_score_within_four_frames(params):
    paths = fit_paths(**params)
    assert paths, "the hook saw no scoring call: the check would pass vacuously"
    too_deep = {name: " -> ".join(chain) for name, chain in paths.items() if len(chain) > MAX_FRAMES}
    assert not too_deep, f"scoring reached deeper than {MAX_FRAMES} frames from fit: {too_deep}"


def test_the_positive_and_negative_scores_are_where_architecture_says():
    paths = fit_paths(model="transe", n_negatives=8)
    assert paths["match"] == ["fit", "train", "step_loss", "group_logits"]
    assert paths["pairwise"] == ["fit", "train", "step_loss", "group_logits"]
