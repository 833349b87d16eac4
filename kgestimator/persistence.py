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
#: deepest nesting of dicts and lists a file's state may have (optimiser states need about 5)
MAX_DEPTH = 32
#: plain values a file's state may hold besides tensors
_PLAIN = (bool, int, float, str, type(None))


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
        if hasattr(os, "fchmod"):
            # mkstemp makes the file 0600; the user's file gets the umask's mode like any other
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    """The process's umask, read without changing it where the OS allows (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_path(path, what="path"):
    """Raise a TypeError unless ``path`` is a str or a path-like object naming a str path."""
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"The {what} must be a str or a path-like object (pathlib.Path); "
                        f"got {type(path).__name__}: {path!r}.")


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
    or corrupt file, a checksum mismatch, another format version, tensors that
    are not plain dense CPU tensors, nesting deeper than ``MAX_DEPTH``. A path
    that is not a str or path-like is a TypeError.
    """
    check_path(path)
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
    if type(found) is not int or found != version:  # True and 1.0 equal 1 but are not version 1
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
    problem = _state_problem(state)
    if problem:
        raise ValueError(f"{path!s} is not a {what}: its state {problem}.")
    if digest(metadata, state) != payload.get("checksum"):
        raise ValueError(f"{path!s} failed its checksum: the file is corrupt or was modified.")
    try:
        meta = json.loads(metadata)
    except RecursionError:
        raise ValueError(f"{path!s} has unreadable metadata: its JSON is nested too deeply.") from None
    except ValueError as exc:
        raise ValueError(f"{path!s} has unreadable metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path!s} is not a {what}: its metadata is not a JSON object.")
    return meta, state


def _state_problem(state):
    """What is wrong with a file's state (tensors, plain values, dicts and lists), or None.

    Walked without recursion, so no nesting can exhaust the stack; sparse,
    quantized, meta or nested tensors are refused before anything reads their bytes.
    """
    stack = [(state, "", 0)]
    while stack:
        obj, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep (at {where or 'the top'})"
        if torch.is_tensor(obj):
            if obj.layout != torch.strided or obj.is_quantized or obj.is_nested or obj.device.type != "cpu":
                return (f"holds a tensor that is not a plain dense CPU tensor at {where} "
                        f"(layout {obj.layout}, device {obj.device.type})")
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    return f"has a key of type {type(key).__name__} at {where or 'the top'}"
                stack.append((value, f"{where}/{key}", depth + 1))
        elif isinstance(obj, (list, tuple)):
            stack.extend((value, f"{where}[{i}]", depth + 1) for i, value in enumerate(obj))
        elif not isinstance(obj, _PLAIN):
            return f"holds a value of type {type(obj).__name__} at {where}"
    return None


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


def params_to_json(params):
    """Estimator parameters as JSON-ready values (sampler objects by registry name).

    ``checkpoint_dir`` and ``checkpoint_every`` are left out (written as None): a
    path of the saving machine has no meaning where the file is loaded.
    """
    from .samplers import SAMPLERS

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


def save(est, path):
    """Write a fitted :class:`KGEmbedder` atomically (temporary file, then rename)."""
    from sklearn.utils.validation import check_is_fitted

    check_path(path)
    check_is_fitted(est)
    if "_fit_params" not in est.__dict__:
        raise ValueError("This estimator was fitted by an older kgestimator, which did not keep the parameters "
                         "it was fitted with; fit it again to save it.")
    state = {f"model.{k}": v.detach().cpu() for k, v in est.model_.state_dict().items()}
    state["known_ids"] = est._known_ids.detach().cpu()
    metadata = json.dumps({
        # the parameters the weights were trained with, not the current ones (set_params after fit)
        "params": params_to_json(est._fit_params),
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
    except RecursionError:
        raise ValueError(f"{path!s} is not a consistent kgestimator model file: its metadata is nested "
                         "too deeply.") from None
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

    if not isinstance(meta.get("params"), dict):
        raise ValueError("params must be a JSON object")
    # a path of the saving machine (older files kept it) is not carried into the loaded model
    params = dict(meta["params"], checkpoint_dir=None, checkpoint_every=None)
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
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    # built without memory first: a crafted file cannot make load allocate for its metadata's sizes
    with torch.device("meta"):
        shapes = make_model(params["model"], n_ent, n_rel, params["dim"], float(params["gamma"]),
                            est._check_model_params()).state_dict()
    _check_shapes(shapes, weights)
    model = make_model(params["model"], n_ent, n_rel, params["dim"], float(params["gamma"]),
                       est._check_model_params())
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
    from .estimator import _params_at_fit

    est._fit_params = _params_at_fit(est)
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
