"""Safe save/load: weights-only tensors plus JSON metadata, with a checksum.

``torch.load(..., weights_only=True)`` only rebuilds tensors and plain
containers, so loading a file never runs code from it. A pickle (``joblib``)
of an estimator is convenient between your own processes but executes code
when loaded: never unpickle a file you did not write.

Model files and training checkpoints (:mod:`kgestimator.checkpoint`) share
one container, :mod:`kgestimator._container` (atomic write, checksum). This
module never imports the estimator: :meth:`KGEmbedder.load` passes its class.
"""

import json
import os

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import _container
from ._container import digest, write_atomic  # noqa: F401  (public here before the container had its own module)
from ._utils import resolve_device
from .data import check_triples
from .models import make_model
from .samplers import SAMPLERS, make_sampler

FORMAT = "kgestimator"
FORMAT_VERSION = 1


def read_payload(path, fmt=FORMAT, version=FORMAT_VERSION, what="kgestimator model file"):
    """``(metadata dict, state)`` of a container file (see :func:`kgestimator._container.read_payload`)."""
    return _container.read_payload(path, fmt, version, what)


# ------------------------------------------------------------------ model files
def _labels_to_json(labels):
    return {"kind": "int" if labels.dtype.kind in "iu" else "str", "values": labels.tolist()}


def _labels_from_json(obj, name):
    """A vocabulary as fit builds it: valid labels, sorted and unique (encode relies on it)."""
    if obj.get("kind") not in ("int", "str") or not isinstance(obj.get("values"), list) or not obj["values"]:
        raise ValueError(f"{name} must be {{'kind': 'int' or 'str', 'values': [labels]}}")
    labels = check_triples(np.array(obj["values"], dtype=object).reshape(-1, 1).repeat(3, 1), name=name)[:, 0]
    if labels.dtype.kind != ("i" if obj["kind"] == "int" else "U"):
        raise ValueError(f"{name} are not all of kind {obj['kind']!r}")
    if labels.size > 1 and not np.all(labels[1:] > labels[:-1]):
        raise ValueError(f"{name} are not sorted and unique")
    return labels


def params_to_json(est):
    """``est.get_params(deep=False)`` as JSON-ready values (sampler objects by registry name)."""
    params = est.get_params(deep=False)
    params.pop("callbacks", None)  # run-time hooks, not part of the model (load gives None)
    sampler = params["sampler"]
    if not isinstance(sampler, str):
        name = next((k for k, cls in SAMPLERS.items() if type(sampler) is cls), None)
        if name is None:
            raise ValueError(f"Cannot save a custom sampler of type {type(sampler).__name__}.")
        params["sampler"] = {"name": name, "params": sampler.get_params()}
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None
    if params.get("checkpoint_dir") is not None:
        params["checkpoint_dir"] = os.fspath(params["checkpoint_dir"])
    return params


def save(est, path):
    """Write a fitted :class:`KGEmbedder` atomically (temporary file, then rename)."""
    check_is_fitted(est)
    state = {f"model.{k}": v.detach().cpu() for k, v in est.model_.state_dict().items()}
    state["known_ids"] = est._known_ids.detach().cpu()
    metadata = json.dumps({
        "params": params_to_json(est),
        "entities": _labels_to_json(est.entities_),
        "relations": _labels_to_json(est.relations_),
        "history": est.history_,
        "emu_params": est.emu_params_,
    })
    _container.write_container(path, FORMAT, FORMAT_VERSION, metadata, state)


def load(path, cls, device="cpu"):
    """Read a file written by :func:`save` as an instance of ``cls`` (the estimator class).

    Raises ValueError on foreign, corrupt or tampered files.
    """
    meta, state = read_payload(path)
    try:
        return _rebuild(cls, meta, state, device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        # the checksum only proves the file is as written; a crafted file can
        # carry a valid checksum, so its content is checked like user input
        raise ValueError(f"{path!s} is not a consistent kgestimator model file: "
                         f"{type(exc).__name__}: {exc}") from None


def _rebuild(cls, meta, state, device):
    params = dict(meta["params"])
    unknown = sorted(set(params) - set(cls().get_params(deep=False)))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} (written by a newer kgestimator?)")
    if isinstance(params["sampler"], dict):
        params["sampler"] = SAMPLERS[params["sampler"]["name"]](**params["sampler"]["params"])
    est = cls(**params)
    est._check_params()
    est.entities_ = _labels_from_json(meta["entities"], "entities")
    est.relations_ = _labels_from_json(meta["relations"], "relations")
    n_ent, n_rel = len(est.entities_), len(est.relations_)
    est.device_ = resolve_device(device)
    model = make_model(params["model"], n_ent, n_rel, est._sizes()["dim"], float(params["gamma"]),
                       est._check_model_params(), reciprocal=bool(params.get("reciprocal", False)))
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    known = state["known_ids"]
    if not (torch.is_tensor(known) and known.dtype == torch.long and known.ndim == 2 and known.shape[1] == 3):
        raise ValueError("known_ids must be a (n, 3) int64 tensor")
    if known.numel() and (known.min() < 0 or known[:, [0, 2]].max() >= n_ent or known[:, 1].max() >= n_rel):
        raise ValueError("known_ids refers to entities or relations that do not exist")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ValueError("the weights are not finite")
    est.model_ = model.to(est.device_)
    est._known_ids = known.to(est.device_)
    est.sampler_ = make_sampler(params["sampler"])
    est.history_ = list(meta["history"])
    est.emu_params_ = dict(meta["emu_params"])
    est.n_iter_ = len(est.history_)
    return est
