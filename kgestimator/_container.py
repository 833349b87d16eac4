"""The safe file container of model files and training checkpoints.

A file is ``torch.save`` of a dict with ``format``, ``format_version``,
``metadata`` (a JSON string), ``state`` (tensors, possibly nested in dicts and
lists) and ``checksum`` (SHA-256 over metadata and state). It is read with
``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain
containers, so reading a file never runs code from it; and it is written
atomically (temporary file, fsync, rename), so a crash leaves the old file or
the new one, never a partial one. :mod:`kgestimator.persistence` (model files)
and :mod:`kgestimator.checkpoint` (training checkpoints) both sit on it.
"""

import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings

import torch

#: deepest nesting of dicts and lists a file's state may have (optimiser states need about 5)
MAX_DEPTH = 32
#: plain values a file's state may hold besides tensors
_PLAIN = (bool, int, float, str, type(None))


def write_container(path, fmt, version, metadata, state, prefix=".kgestimator-"):
    """Write ``metadata`` (a JSON string) and ``state`` under ``fmt``/``version`` with their checksum."""
    write_atomic(path, {"format": fmt, "format_version": version, "metadata": metadata,
                        "state": state, "checksum": digest(metadata, state)}, prefix=prefix)


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


def read_payload(path, fmt, version, what):
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
