"""Memory: what is free, what training will need, how many queries to score at once.

Read from ``/proc/meminfo`` and the cgroup limits (containers) on Linux,
``os.sysconf`` elsewhere, ``torch.cuda.mem_get_info`` on CUDA; no dependency.
"""

import os

import torch


class InsufficientMemoryError(MemoryError, ValueError):
    """The request cannot fit in the memory of the device (a MemoryError and a ValueError)."""


def available_bytes(device):
    """Bytes free for new tensors on ``device``, or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    known = [b for b in (_system_available(), _cgroup_available()) if b is not None]
    return min(known) if known else None


def _system_available():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available():
    # in a container the cgroup limit binds, not the host's memory; the page
    # cache it counts (inactive files) can be reclaimed, as MemAvailable assumes
    for folder, limit_file, usage_file, cache_key in (
            ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")):
        try:
            with open(os.path.join(folder, limit_file)) as fh:
                limit = fh.read().strip()
            with open(os.path.join(folder, usage_file)) as fh:
                usage = int(fh.read())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # no limit (cgroup v1 writes a huge number)
            return None
        cache = 0
        try:
            with open(os.path.join(folder, "memory.stat")) as fh:
                cache = next((int(line.split()[1]) for line in fh if line.split()[0] == cache_key), 0)
        except (OSError, ValueError, IndexError):
            pass
        return max(0, int(limit) - usage + cache)
    return None


def format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def check_training_fits(model_cls, n_entities, n_relations, dim, n_triples, optimizer, sparse, early_stopping,
                        device):
    """Raise InsufficientMemoryError before training when the model cannot fit.

    The estimate is a lower bound: float32 tables for the weights, their dense
    gradients (none with ``sparse``), the optimiser's moments (two for Adam,
    one for Adagrad), a copy of the best weights under early stopping, and the
    index of known triples. Activations come on top, so only a request that
    cannot possibly fit is refused.
    """
    values = (n_entities * model_cls.entity_factor + n_relations * model_cls.relation_factor) * dim
    moments = 1 if optimizer == "adagrad" else 2
    copies = 1 + (0 if sparse else 1) + moments + (1 if early_stopping else 0)
    need = 4 * values * copies + 8 * 3 * 2 * n_triples
    have = available_bytes(device)
    if have is not None and need > have:
        raise InsufficientMemoryError(
            f"Training this model needs at least {format_bytes(need)} on {device}, but {format_bytes(have)} "
            f"is available: the {model_cls.__name__} tables hold {values:,} float32 values "
            f"({n_entities:,} entities x {model_cls.entity_factor * dim} + {n_relations:,} relations x "
            f"{model_cls.relation_factor * dim}), kept {copies} times (weights"
            f"{'' if sparse else ', gradients'}, {moments} optimiser moment(s)"
            f"{', best weights' if early_stopping else ''}). Lower 'dim'"
            f"{', use sparse=True' if not sparse else ''}, or use a machine with more memory.")
    return need
