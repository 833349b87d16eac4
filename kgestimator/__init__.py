"""kgestimator: knowledge-graph embedding as scikit-learn estimators, with EMU negatives."""

from .datasets import load_dataset, load_triples, make_kg
from .estimator import KGEmbedder
from .metrics import SCORERS, make_hits_scorer, mrr_scorer
from .model_selection import TripleKFold, train_test_split_triples

__version__ = "0.1.0"

__all__ = [
    "KGEmbedder", "load_dataset", "load_triples", "make_kg", "mrr_scorer", "make_hits_scorer",
    "SCORERS", "TripleKFold", "train_test_split_triples", "__version__",
]
