"""Scoring models: a plain registry from name to class."""

from ._base import EmbeddingModel
from .complex import ComplEx
from .distmult import DistMult
from .hake import HAKE
from .rotate import RotatE
from .transe import TransE

MODELS = {
    "transe": TransE,
    "distmult": DistMult,
    "complex": ComplEx,
    "rotate": RotatE,
    "hake": HAKE,
}

__all__ = ["MODELS", "EmbeddingModel", "TransE", "DistMult", "ComplEx", "RotatE", "HAKE"]
