"""Negative samplers (docs/algorithms.md §4).

A sampler decides which side of each positive is corrupted and draws the
negatives, on the device, with the estimator's seeded generator. Negatives
come in the trainer's chunked layout: ``(C, N)`` ids shared by the ``c``
positives of each chunk. Samplers whose negatives depend on the positive
(SAN, NSCaching, DANS) set ``shares_negatives = False`` and the trainer uses
``c = 1``: ``(B, N)`` ids, one row per positive.

The trainer calls, per step:

1. ``sides(batch, step, generator)`` -> list of ``(row_index or None, side)``;
2. ``sample(batch, side, n_chunks, n_ids, generator)`` -> ids ``(C, n_ids)``;
3. samplers with a ``generate`` method (DANS) also produce negative
   *embeddings*: ``generate(batch, side, model, anchor, query, generator, train)``
   -> ``(B, n_generated, de)``, appended to the looked-up ones
   (``n_ids = n_negatives - n_generated``); ``train=True`` on the first call of
   a step lets the sampler take its own optimisation step first;
4. ``update(batch, side, model, query, neg_ids, neg_scores, generator)`` with the model's
   scores of the drawn ids, for samplers that learn from the model (NSCaching).

EMU mutates whatever negatives came out of 2 and 3. Samplers are
scikit-learn ``BaseEstimator`` objects so that ``GridSearchCV`` reaches their
parameters as ``sampler__<name>``. Stateful samplers offer ``state_dict()`` /
``load_state_dict(state)`` for checkpoints.
"""

import torch
from sklearn.base import clone

from ._uniform import BernoulliSampler, UniformSampler
from .adversarial import AdversarialSampler
from .nscaching import NSCachingSampler
from .san import SANSampler

SAMPLERS = {
    "uniform": UniformSampler,
    "bernoulli": BernoulliSampler,
    "san": SANSampler,
    "nscaching": NSCachingSampler,
    "adversarial": AdversarialSampler,
}

__all__ = ["SAMPLERS", "make_sampler", "resolve_emu_resample", "n_generated", "draw_negatives", "with_generated",
           "UniformSampler", "BernoulliSampler", "SANSampler",
           "NSCachingSampler", "AdversarialSampler"]


def resolve_emu_resample(emu_resample, sampler):
    """``emu_resample`` with ``'auto'`` resolved: True, except for samplers that set ``emu_reuses_draw``
    (SAN: the EMU reference mutates the vanilla term's own SAN negatives, ``if_CE 2``)."""
    if isinstance(emu_resample, str) and emu_resample == "auto":
        cls = SAMPLERS.get(sampler) if isinstance(sampler, str) else sampler
        return not getattr(cls, "emu_reuses_draw", False)
    return bool(emu_resample)


def make_sampler(sampler):
    """Turn a sampler name or object into a fresh, unfitted sampler object."""
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"The 'sampler' parameter must be one of {sorted(SAMPLERS)} or a sampler "
                f"object; got {sampler!r}."
            )
        return SAMPLERS[sampler]()
    if not all(hasattr(sampler, name) for name in ("fit", "sides", "sample", "update")):
        raise TypeError(
            "The 'sampler' parameter must be a string or an object with fit, sides, "
            f"sample and update methods; got {type(sampler).__name__}."
        )
    return clone(sampler)


def n_generated(sampler):
    """Negative embeddings ``sampler`` generates per positive (step 3 above); 0 for id samplers."""
    return sampler.n_generated if hasattr(sampler, "generate") else 0


def generate(sampler, batch, side, model, anchor, query, generator, train):
    """The generated negative embeddings ``(B, n_generated, de)``, or None for id samplers."""
    if not n_generated(sampler):
        return None
    return sampler.generate(batch, side, model, anchor, query, generator, train=train)


def draw_negatives(model, sampler, batch, side, n_chunks, n_negatives, generator, anchor, query, train):
    """Negative ids ``(C, n_ids)`` and generated embeddings ``(C, n_gen, de)`` or None (steps 2 and 3)."""
    ids = sampler.sample(batch, side, n_chunks, n_negatives - n_generated(sampler), generator)
    return ids, generate(sampler, batch, side, model, anchor, query, generator, train)


def with_generated(neg, fake):
    """Looked-up candidate embeddings ``(C, N_ids, de)`` followed by the generated ones, if any."""
    return neg if fake is None else torch.cat([neg, fake.to(neg.dtype)], 1)
