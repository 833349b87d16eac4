"""Training checkpoints: one file per ``checkpoint_dir``, replaced atomically.

``<checkpoint_dir>/checkpoint.pt`` uses the safe container of
:mod:`kgestimator._container` (tensors plus JSON with a checksum; loading it
runs no code) and holds everything the next step depends on (see
:func:`kgestimator.training.train`), so resuming continues the same run.

Beside it, a fingerprint of the training data and of the parameters that
shape the computation: resuming with other data or parameters would not
continue that run, and is refused.
"""

import hashlib
import json
import os

import torch

from ._container import read_payload, write_container

FORMAT = "kgestimator-checkpoint"
FORMAT_VERSION = 1
FILENAME = "checkpoint.pt"
_TMP_PREFIX = ".checkpoint-"
#: parameters that change neither the numbers nor the order of training (callbacks may
#: stop a run early, which the checkpoint records, but not change its steps)
IGNORED_PARAMS = ("verbose", "checkpoint_dir", "checkpoint_every", "device", "n_threads", "distributed",
                  "callbacks")


def fingerprint(params, device, arrays):
    """What a checkpoint must match: ``{'params': ..., 'data': sha256}``.

    ``device`` is the resolved device: generator states differ between CPU and CUDA.
    """
    kept = {k: v for k, v in params.items() if k not in IGNORED_PARAMS}
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


class Checkpointer:
    """Reads and writes the checkpoint of one run.

    Parameters
    ----------
    directory : str or path-like
        The run's folder, created when missing.
    every : int or None
        Optimiser steps between checkpoints; None: at the end of every epoch.
    fingerprint : dict
        From :func:`fingerprint`.
    """

    def __init__(self, directory, every, fingerprint):
        self.directory = os.fspath(directory)
        self.every = every
        self.fingerprint = fingerprint
        self.path = os.path.join(self.directory, FILENAME)
        #: step of the last checkpoint written or read (None: none yet)
        self.step = None

    def prepare(self):
        """Create the folder; drop temporary files left by a run killed mid-write."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"The 'checkpoint_dir' parameter must be a folder; {self.directory!r} is a file.")
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.startswith(_TMP_PREFIX) and name.endswith(".tmp"):
                os.remove(os.path.join(self.directory, name))

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
