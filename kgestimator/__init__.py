"""kgestimator: knowledge-graph embedding as scikit-learn estimators, with EMU negatives.

The public names are imported on first use (PEP 562), so that ``import
kgestimator.cli`` and ``kgestimator --help`` do not pay for importing torch and
scikit-learn (about 3.5 s) before a command needs them.
"""

import importlib

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_PUBLIC = {
    "KGEmbedder": "estimator",
    "load_dataset": "datasets",
    "load_triples": "datasets",
    "make_kg": "datasets",
    "mrr_scorer": "metrics",
    "make_hits_scorer": "metrics",
    "SCORERS": "metrics",
    "TripleKFold": "model_selection",
    "train_test_split_triples": "model_selection",
    "PRESETS": "presets",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        # ``kgestimator.models`` after a bare ``import kgestimator`` worked when the package
        # imported everything eagerly: a submodule is imported on first access too
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
