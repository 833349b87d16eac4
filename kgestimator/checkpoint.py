"""Training checkpoints: one file per run, replaced atomically.

Each run (training data plus the parameters that shape the computation) has
its own sub-folder ``<checkpoint_dir>/run-<fingerprint>``, named after a hash
of both: the clones of a grid search or a cross-validation, which share one
``checkpoint_dir``, each get their own, and rerunning the same search finds
each fit's checkpoint again. ``checkpoint.pt`` there uses the safe container of
:mod:`kgestimator._container` (tensors plus JSON with a checksum; loading it
runs no code) and holds everything the next step depends on (see
:func:`kgestimator.training.train`), so resuming continues the same run. The
fingerprint itself is stored inside and checked again on resume.

A lock file (``.lock``, an OS advisory lock the kernel drops when the process
dies, so a killed run never leaves it stuck) keeps a second concurrent fit off
a run's folder.
"""

import hashlib
import json
import os

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt

import torch

from ._container import read_payload, write_container
from ._utils import warn_at_caller

FORMAT = "kgestimator-checkpoint"
FORMAT_VERSION = 1
FILENAME = "checkpoint.pt"
_TMP_PREFIX = ".checkpoint-"
LOCKNAME = ".lock"
RUN_PREFIX = "run-"
#: parameters that change neither the numbers nor the order of training (callbacks may
#: stop a run early, which the checkpoint records, but not change its steps)
IGNORED_PARAMS = ("verbose", "checkpoint_dir", "checkpoint_every", "device", "n_threads", "distributed",
                  "callbacks")
#: parameters added after checkpoints were first written, with the value every run had before they
#: existed: left out of the fingerprint at that value, so that a run checkpointed earlier still finds
#: its folder and resumes (their signature defaults; tests/test_emu_masks.py checks)
ADDED_PARAMS = {"emu_masks": "shared"}


def fingerprint(params, device, arrays):
    """What a checkpoint must match: ``{'params': ..., 'data': sha256}``.

    ``device`` is the resolved device: generator states differ between CPU and CUDA.
    """
    kept = {k: v for k, v in params.items()
            if k not in IGNORED_PARAMS and not (k in ADDED_PARAMS and v == ADDED_PARAMS[k])}
    kept["device_type"] = torch.device(device).type
    sampler = kept.get("sampler")
    if sampler is not None and not isinstance(sampler, str):
        kept["sampler"] = {"class": f"{type(sampler).__module__}.{type(sampler).__qualname__}",
                           "params": sampler.get_params()}
    if not (kept.get("random_state") is None or isinstance(kept["random_state"], int)):
        kept["random_state"] = type(kept["random_state"]).__name__
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if torch.is_tensor(a) else a
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return {"params": json.loads(json.dumps(kept, sort_keys=True, default=repr)), "data": h.hexdigest()}


def run_name(fingerprint):
    """The sub-folder name of a run: ``run-`` and 16 hex digits of its fingerprint's hash."""
    text = json.dumps(fingerprint, sort_keys=True)
    return RUN_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Checkpointer:
    """Reads and writes the checkpoint of one run; a context manager holding the run's lock.

    Parameters
    ----------
    directory : str or path-like
        The ``checkpoint_dir``; the run's sub-folder (see :func:`run_name`) is
        created in it when missing.
    every : int or None
        Optimiser steps between checkpoints; None: at the end of every epoch.
    fingerprint : dict
        From :func:`fingerprint`.
    """

    def __init__(self, directory, every, fingerprint):
        self.root = os.fspath(directory)
        self.every = every
        self.fingerprint = fingerprint
        self.directory = os.path.join(self.root, run_name(fingerprint))
        self.path = os.path.join(self.directory, FILENAME)
        #: step of the last checkpoint written or read (None: none yet)
        self.step = None
        self._lock = None

    def __enter__(self):
        self.prepare()
        return self

    def __exit__(self, *exc):
        self.close()

    def prepare(self):
        """Create the run's folder and lock it; drop temporary files left by a run killed mid-write.

        Raises ValueError when another fit holds the lock.
        """
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ValueError(f"The 'checkpoint_dir' parameter must be a folder; {self.root!r} is a file.")
        legacy = os.path.join(self.root, FILENAME)
        if os.path.isfile(legacy) and self._is_mine(legacy):
            # a checkpoint written before runs had sub-folders: resume it where it is
            self.directory, self.path = self.root, legacy
        os.makedirs(self.directory, exist_ok=True)
        self._acquire()
        # only the lock holder writes temporary files here, so any left are from a killed run
        for name in os.listdir(self.directory):
            if name.startswith(_TMP_PREFIX) and name.endswith(".tmp"):
                os.remove(os.path.join(self.directory, name))

    def _is_mine(self, path):
        try:
            meta, _ = read_payload(path, FORMAT, FORMAT_VERSION, "kgestimator checkpoint")
        except ValueError:
            return False
        return (meta.get("fingerprint") or {}) == self.fingerprint

    def _acquire(self):
        fh = open(os.path.join(self.directory, LOCKNAME), "a+b")
        try:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            held = fcntl is None or isinstance(exc, BlockingIOError)
            if not held:  # a file system without locks (some network mounts): go on, and say so
                warn_at_caller(f"Could not lock the checkpoint folder {self.directory} ({exc}); a second "
                               "concurrent fit of this run would not be detected.", RuntimeWarning)
                self._lock = fh
                return
            fh.close()
            raise ValueError(
                f"Another fit is running on the checkpoint folder {self.directory} (same data and "
                "parameters); two fits of one run would overwrite each other's checkpoints. Wait for it "
                "to finish, or give this fit another checkpoint_dir.") from None
        self._lock = fh

    def close(self):
        """Release the run's lock (the kernel also drops it when the process dies)."""
        if self._lock is not None:
            # closing the file releases the lock (flock and msvcrt alike)
            self._lock.close()
            self._lock = None

    def due(self, step):
        return self.every is not None and step % self.every == 0

    def load(self):
        """``(meta, state)`` of the checkpoint, or None when there is none.

        Raises ValueError when it belongs to another run or is unreadable.
        """
        if not os.path.exists(self.path):
            return None
        try:
            meta, state = read_payload(self.path, FORMAT, FORMAT_VERSION, "kgestimator checkpoint")
        except ValueError as exc:
            raise ValueError(f"{exc} Delete it to start the run over.") from None
        self._check_fingerprint(meta.get("fingerprint") or {})
        self.step = meta["run"]["step"]
        return meta, state

    def _check_fingerprint(self, saved):
        start_over = f"use another checkpoint_dir, or delete {self.path} to start over."
        mine, theirs = self.fingerprint["params"], saved.get("params", {})
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                raise ValueError(
                    f"The checkpoint {self.path} belongs to another run: {name!r} is "
                    f"{theirs.get(name)!r} there and {mine.get(name)!r} here. Resuming would not continue "
                    f"that run; {start_over}")
        if saved.get("data") != self.fingerprint["data"]:
            raise ValueError(
                f"The checkpoint {self.path} was written for other training data (the triples, the "
                "validation triples or their labels differ; with early_stopping and no valid=, set an int "
                f"random_state so that the held-out split is the same each time). {start_over}")

    def save(self, run_meta, state):
        """Replace the checkpoint atomically with the run's ``(meta, state)``."""
        metadata = json.dumps({"fingerprint": self.fingerprint, "run": run_meta})
        write_container(self.path, FORMAT, FORMAT_VERSION, metadata, state, prefix=_TMP_PREFIX)
        self.step = run_meta["step"]


def to_device(obj, device):
    """Tensors of a nested dict/list moved to ``device`` (checkpoints load on the CPU)."""
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
