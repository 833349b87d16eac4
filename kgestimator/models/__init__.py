"""Scoring models: a plain registry from name to class.

``EMBEDDING_MODELS`` are the decomposable models (entity and relation tables,
``query``/``match``). NBFNet is path-based (``path_based = True``): it scores
every entity of a query by message passing over the fact graph, and the
trainer, the evaluation and the estimator take one branch for it.
"""

import inspect

from ._base import EmbeddingModel
from .complex import ComplEx
from .distmult import DistMult
from .hake import HAKE
from .nbfnet import NBFNet
from .rotate import RotatE
from .transe import TransE

EMBEDDING_MODELS = {
    "transe": TransE,
    "distmult": DistMult,
    "complex": ComplEx,
    "rotate": RotatE,
    "hake": HAKE,
}
MODELS = {**EMBEDDING_MODELS, "nbfnet": NBFNet}

#: constructor arguments every model takes; the rest are ``model_params``
_COMMON = ("self", "n_entities", "n_relations", "dim", "gamma", "generator")


def model_param_names(name):
    """The ``model_params`` keys the model ``name`` accepts."""
    return [p for p in inspect.signature(MODELS[name].__init__).parameters if p not in _COMMON]


def is_path_based(model):
    """Whether ``model`` (an instance or a class) scores by propagation (NBFNet) rather than embeddings."""
    return bool(getattr(model, "path_based", False))


def resolve_defaults(name, **params):
    """``params`` (``dim``, ``batch_size``, ``n_negatives``) with each None replaced by model ``name``'s default."""
    defaults = MODELS[name].default_params
    return {key: defaults[key] if value is None else value for key, value in params.items()}


def check_model_params(name, params):
    """Raise a ValueError naming the ``model_params`` keys that the model ``name`` does not take."""
    accepted = model_param_names(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"The 'model_params' parameter has key(s) {unknown} that model={name!r} does not take; "
                         f"it takes {accepted if accepted else 'none'}.")


def make_model(name, n_entities, n_relations, dim, gamma, model_params=None, generator=None, reciprocal=False):
    """Build the model ``name``; ``model_params`` are its own keyword arguments (checked by name).

    ``reciprocal``: embedding models get ``2 * n_relations`` relation rows, the
    second half for the inverse relations (``EmbeddingModel.orient``). NBFNet
    always answers head queries on inverse relations, so it ignores the flag.
    """
    params = dict(model_params or {})
    check_model_params(name, params)
    cls = MODELS[name]
    if reciprocal and not is_path_based(cls):
        model = cls(n_entities, 2 * n_relations, dim, gamma, generator=generator, **params)
        model.reciprocal = True
        return model
    return cls(n_entities, n_relations, dim, gamma, generator=generator, **params)


__all__ = ["MODELS", "EMBEDDING_MODELS", "EmbeddingModel", "TransE", "DistMult", "ComplEx", "RotatE", "HAKE",
           "NBFNet", "make_model", "resolve_defaults", "model_param_names", "check_model_params", "is_path_based"]
