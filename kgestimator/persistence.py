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

import numpy as np
import torch
from sklearn.base import clone
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


def params_to_json(params):
    """Estimator parameters as JSON-ready values (sampler objects by registry name).

    ``checkpoint_dir`` and ``checkpoint_every`` are written as None: a path of
    the saving machine has no meaning where the file is loaded.
    """
    params = dict(params, checkpoint_dir=None, checkpoint_every=None)
    params.pop("callbacks", None)  # run-time hooks, not part of the model (load gives None)
    sampler = params["sampler"]
    if not isinstance(sampler, str):
        name = next((k for k, cls in SAMPLERS.items() if type(sampler) is cls), None)
        if name is None:
            raise ValueError(f"Cannot save a custom sampler of type {type(sampler).__name__}.")
        params["sampler"] = {"name": name, "params": sampler.get_params()}
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None
    return params


#: parameters that shape neither the weights nor their scores: saved as they are now (a model trained
#: with a progress bar on a terminal, then set back to verbose=0, saves verbose=0)
CURRENT_PARAMS = ("verbose", "n_threads")


def save(est, path):
    """Write a fitted :class:`KGEmbedder` atomically (temporary file, then rename)."""
    _container.check_path(path)
    check_is_fitted(est)
    if "_fit_params" not in est.__dict__:
        raise ValueError("This estimator was fitted by an older kgestimator, which did not keep the parameters "
                         "it was fitted with; fit it again to save it.")
    state = {f"model.{k}": v.detach().cpu() for k, v in est.model_.state_dict().items()}
    state["known_ids"] = est._known_ids.detach().cpu()
    metadata = json.dumps({
        # the parameters the weights were trained with, not the current ones (set_params after fit)
        "params": params_to_json({**est._fit_params, **{k: getattr(est, k) for k in CURRENT_PARAMS}}),
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
    except RecursionError:
        raise ValueError(f"{path!s} is not a consistent kgestimator model file: its metadata is nested "
                         "too deeply.") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        # the checksum only proves the file is as written; a crafted file can
        # carry a valid checksum, so its content is checked like user input
        raise ValueError(f"{path!s} is not a consistent kgestimator model file: "
                         f"{type(exc).__name__}: {exc}") from None


def _rebuild(cls, meta, state, device):
    if not isinstance(meta.get("params"), dict):
        raise ValueError("params must be a JSON object")
    # a path of the saving machine (older files kept it) is not carried into the loaded model
    params = dict(meta["params"], checkpoint_dir=None, checkpoint_every=None)
    unknown = sorted(set(params) - set(cls().get_params(deep=False)))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} (written by a newer kgestimator?)")
    if isinstance(params["sampler"], dict):
        name, sampler_params = params["sampler"]["name"], dict(params["sampler"]["params"])
        legacy = sampler_params.pop("legacy_chained_walks", None) if name == "san" else None
        if legacy is not None:
            # written before SANSampler had `walks`: the deprecated flag was always stored, and
            # the walks it trained with are kept, without the deprecation warning
            sampler_params["walks"] = "chained" if legacy else "restarted"
        params["sampler"] = SAMPLERS[name](**sampler_params)
    est = cls(**params)
    est._check_params()
    est.entities_ = _labels_from_json(meta["entities"], "entities")
    est.relations_ = _labels_from_json(meta["relations"], "relations")
    n_ent, n_rel = len(est.entities_), len(est.relations_)
    est.device_ = resolve_device(device)
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    # built without memory first: a crafted file cannot make load allocate for its metadata's sizes
    reciprocal = bool(params.get("reciprocal", False))
    with torch.device("meta"):
        shapes = make_model(params["model"], n_ent, n_rel, est._sizes()["dim"], float(params["gamma"]),
                            est._check_model_params(), reciprocal=reciprocal).state_dict()
    _check_shapes(shapes, weights)
    model = make_model(params["model"], n_ent, n_rel, est._sizes()["dim"], float(params["gamma"]),
                       est._check_model_params(), reciprocal=reciprocal)
    model.load_state_dict(weights)
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
    est.checkpoint_path_ = None
    est._fit_params = {k: clone(v, safe=False) for k, v in est.get_params(deep=False).items()}
    return est


def _check_shapes(expected, weights):
    """The file's weights have the names, dtypes and shapes the metadata's model has.

    A built size of 0 (NBFNet's fact graph) takes the file's size.
    """
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"the weights do not match the parameters: missing {missing[:5]}, unexpected "
                         f"{extra[:5]}")
    for name, want in expected.items():
        got = weights[name]
        ok = got.dtype == want.dtype and got.ndim == want.ndim and all(
            w == 0 or g == w for g, w in zip(got.shape, want.shape))
        if not ok:
            raise ValueError(f"weight {name!r} is {got.dtype} of shape {tuple(got.shape)}, but the parameters "
                             f"(model, dim, labels) need {want.dtype} of shape {tuple(want.shape)}")
