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


def read_payload(path, fmt, version, what):
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
