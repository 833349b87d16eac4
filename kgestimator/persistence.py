"""Safe save/load: weights-only tensors plus JSON metadata, with a checksum.

``torch.load(..., weights_only=True)`` only rebuilds tensors and plain
containers, so loading a file never runs code from it. A pickle (``joblib``)
of an estimator is convenient between your own processes but executes code
when loaded: never unpickle a file you did not write.
"""

import hashlib
import json
import os
import tempfile

import numpy as np
import torch

FORMAT = "kgestimator"
FORMAT_VERSION = 1


def _checksum(metadata, state):
    digest = hashlib.sha256(metadata.encode("utf-8"))
    for key in sorted(state):
        digest.update(key.encode("utf-8"))
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _labels_to_json(labels):
    return {"kind": "int" if labels.dtype.kind in "iu" else "str", "values": labels.tolist()}


def _labels_from_json(obj):
    return np.asarray(obj["values"], dtype=np.int64 if obj["kind"] == "int" else str)


def _params_to_json(est):
    from .samplers import SAMPLERS

    params = est.get_params(deep=False)
    sampler = params["sampler"]
    if not isinstance(sampler, str):
        name = next((k for k, cls in SAMPLERS.items() if type(sampler) is cls), None)
        if name is None:
            raise ValueError(f"Cannot save a custom sampler of type {type(sampler).__name__}.")
        params["sampler"] = {"name": name, "params": sampler.get_params()}
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None
    return params


def save(est, path):
    """Write a fitted :class:`KGEmbedder` atomically (temporary file, then rename)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    state = {f"model.{k}": v.detach().cpu() for k, v in est.model_.state_dict().items()}
    state["known_ids"] = est._known_ids.detach().cpu()
    metadata = json.dumps({
        "params": _params_to_json(est),
        "entities": _labels_to_json(est.entities_),
        "relations": _labels_to_json(est.relations_),
        "history": est.history_,
        "emu_params": est.emu_params_,
    })
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": metadata,
               "state": state, "checksum": _checksum(metadata, state)}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kgestimator-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, device="cpu"):
    """Read a file written by :func:`save`; raises ValueError on foreign, corrupt or tampered files."""
    from .estimator import KGEmbedder
    from .models import MODELS
    from .samplers import SAMPLERS, make_sampler
    from ._utils import resolve_device

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # unpickling errors differ across torch versions
        raise ValueError(
            f"{path!s} is not a kgestimator model file, or it is truncated or unsafe "
            f"(only tensors and JSON are accepted): {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!s} is not a kgestimator model file.")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path!s} has format version {version}; this kgestimator reads version "
                         f"{FORMAT_VERSION}. Use the kgestimator release that wrote it.")
    metadata, state = payload["metadata"], payload["state"]
    if _checksum(metadata, state) != payload.get("checksum"):
        raise ValueError(f"{path!s} failed its checksum: the file is corrupt or was modified.")
    meta = json.loads(metadata)
    params = dict(meta["params"])
    if isinstance(params["sampler"], dict):
        params["sampler"] = SAMPLERS[params["sampler"]["name"]](**params["sampler"]["params"])
    est = KGEmbedder(**params)
    est.entities_ = _labels_from_json(meta["entities"])
    est.relations_ = _labels_from_json(meta["relations"])
    est.device_ = resolve_device(device)
    model = MODELS[params["model"]](len(est.entities_), len(est.relations_), params["dim"],
                                    float(params["gamma"]))
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    est.model_ = model.to(est.device_)
    est._known_ids = state["known_ids"].to(est.device_)
    est.sampler_ = make_sampler(params["sampler"])
    est.history_ = meta["history"]
    est.emu_params_ = meta["emu_params"]
    est.n_iter_ = len(est.history_)
    return est
