"""Safe save/load: weights-only tensors plus JSON metadata, with a checksum.

``torch.load(..., weights_only=True)`` only rebuilds tensors and plain
containers, so loading a file never runs code from it. A pickle (``joblib``)
of an estimator is convenient between your own processes but executes code
when loaded: never unpickle a file you did not write.

The same container (``write_atomic`` / ``read_payload``) holds model files and
training checkpoints (:mod:`kgestimator.checkpoint`): a dict with ``format``,
``format_version``, ``metadata`` (a JSON string), ``state`` (tensors, possibly
nested in dicts and lists) and ``checksum`` (SHA-256 over metadata and state).
"""

import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings

import numpy as np
import torch

FORMAT = "kgestimator"
FORMAT_VERSION = 1


def digest(metadata, state):
    """SHA-256 of a metadata string and a (nested) dict of tensors and plain values."""
    h = hashlib.sha256(metadata.encode("utf-8"))
    _update(h, state)
    return h.hexdigest()


def _update(h, obj):
    if torch.is_tensor(obj):
        # a view of the tensor's bytes, not a copy: checkpoints of large tables stay cheap
        h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            h.update(str(key).encode("utf-8"))
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _update(h, item)
    else:
        h.update(repr(obj).encode("utf-8"))


def write_atomic(path, payload, prefix=".kgestimator-"):
    """``torch.save`` to a temporary file in the target folder, flushed to disk, then renamed.

    A crash or a kill at any moment leaves either the old file or the new one,
    never a partial file; a stray temporary file at worst.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_directory(directory):
    # makes the rename itself durable (power loss); not possible on every platform
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_payload(path, fmt=FORMAT, version=FORMAT_VERSION, what="kgestimator model file"):
    """``(metadata dict, state)`` of a file written with :func:`write_atomic`.

    Raises ValueError for anything else: a pickle with code in it, a truncated
    or corrupt file, a checksum mismatch, another format version.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about old pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # errors differ across torch versions; a truncated zip can be an OSError
        raise ValueError(_load_error(path, what, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path!s} is not a {what}.")
    found = payload.get("format_version")
    if found != version:
        if isinstance(found, int) and not isinstance(found, bool) and found > version:
            hint = "it was written by a newer kgestimator: upgrade kgestimator to read it."
        else:
            hint = ("it was written by an older kgestimator: load it with that release and save it "
                    "again, or retrain.")
        raise ValueError(f"{path!s} has format version {found!r}; this kgestimator reads version {version}, "
                         f"so {hint}")
    metadata, state = payload.get("metadata"), payload.get("state")
    if not isinstance(metadata, str) or not isinstance(state, dict):
        raise ValueError(f"{path!s} is not a {what}: its metadata or state is missing.")
    if digest(metadata, state) != payload.get("checksum"):
        raise ValueError(f"{path!s} failed its checksum: the file is corrupt or was modified.")
    try:
        meta = json.loads(metadata)
    except ValueError as exc:
        raise ValueError(f"{path!s} has unreadable metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path!s} is not a {what}: its metadata is not a JSON object.")
    return meta, state


def _load_error(path, what, exc):
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        # torch's message advises weights_only=False, which is what must not be done
        # with a file from someone else: pass on only what it found
        detail = re.search(r"(Unsupported [^\n]+|Trying to load [^\n]+)", text)
        detail = detail.group(1).strip().rstrip(".") if detail else type(exc).__name__
        return (f"{path!s} is not a {what}: it holds Python objects other than tensors and plain data, "
                f"or it is corrupt ({detail}). kgestimator refuses to unpickle it because unpickling can "
                "run arbitrary code; open it with pickle or joblib only if you trust whoever made it.")
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"{path!s} is not a {what}, or it is truncated or corrupt: {first}"


# ------------------------------------------------------------------ model files
def _labels_to_json(labels):
    return {"kind": "int" if labels.dtype.kind in "iu" else "str", "values": labels.tolist()}


def _labels_from_json(obj, name):
    """A vocabulary as fit builds it: valid labels, sorted and unique (encode relies on it)."""
    from .data import check_triples

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
    from .samplers import SAMPLERS

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
    from sklearn.utils.validation import check_is_fitted

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
    write_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": metadata,
                        "state": state, "checksum": digest(metadata, state)})


def load(path, device="cpu"):
    """Read a file written by :func:`save`; raises ValueError on foreign, corrupt or tampered files."""
    meta, state = read_payload(path)
    try:
        return _rebuild(meta, state, device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        # the checksum only proves the file is as written; a crafted file can
        # carry a valid checksum, so its content is checked like user input
        raise ValueError(f"{path!s} is not a consistent kgestimator model file: "
                         f"{type(exc).__name__}: {exc}") from None


def _rebuild(meta, state, device):
    from ._utils import resolve_device
    from .estimator import KGEmbedder
    from .models import make_model
    from .samplers import SAMPLERS, make_sampler

    params = dict(meta["params"])
    unknown = sorted(set(params) - set(KGEmbedder().get_params(deep=False)))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} (written by a newer kgestimator?)")
    if isinstance(params["sampler"], dict):
        params["sampler"] = SAMPLERS[params["sampler"]["name"]](**params["sampler"]["params"])
    est = KGEmbedder(**params)
    est._validate_params()
    est.entities_ = _labels_from_json(meta["entities"], "entities")
    est.relations_ = _labels_from_json(meta["relations"], "relations")
    n_ent, n_rel = len(est.entities_), len(est.relations_)
    est.device_ = resolve_device(device)
    model = make_model(params["model"], n_ent, n_rel, est._sizes()["dim"], float(params["gamma"]),
                       est._check_model_params())
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
