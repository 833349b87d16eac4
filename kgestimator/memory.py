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


def activation_estimate(model_cls, n_entities, n_relations, n_train, cfg, dim, model_params=None, device="cpu"):
    """Bytes a training step holds besides the weights, with what they are and how to lower them.

    Returns ``(bytes, what, advice)``. A lower bound of the peak, as the rest
    of the check: for NBFNet (blocked or fused message passing) each layer keeps about
    ``NBF_FLOATS_PER_NODE`` floats per node, query and dimension for the
    backward pass (its input, the four PNA aggregates, the 13d-wide features'
    products, layer norm and ReLU), query-dependent relations add their
    ``(2 n_relations, B, d)`` vectors, and strict negatives a ``(B,
    n_entities)`` mask; with ``checkpoint`` one layer's worth is alive at a
    time plus every layer's input. On the CPU a batch propagates in passes of
    at most ``model_cls.pass_bytes`` of such activations (``path_training``), so
    the layers' share counts one pass's queries, not the batch's. Embedding
    models: the ``(B, 1 + N)`` scores, their softmax and gradients (twice with EMU).
    """
    params = dict(model_params or {})
    B, N = min(cfg.batch_size, max(1, n_train)), cfg.n_negatives  # as train() takes the batch
    if getattr(model_cls, "path_based", False):
        layers = int(params.get("n_layers", 6))
        q = nbf_queries_per_pass(B, n_entities, dim, layers, model_cls.pass_bytes) \
            if torch.device(device).type == "cpu" else B
        per_layer = NBF_FLOATS_PER_NODE * n_entities * q * dim
        if params.get("dependent", False):
            per_layer += 2 * 2 * n_relations * q * dim
        if params.get("checkpoint", False):
            kept = layers * n_entities * B * dim + per_layer
        else:
            kept = layers * per_layer
        need = 4 * kept + 5 * B * n_entities * (2 if cfg.emu and cfg.emu_resample else 1)
        queries = f"batch_size={B}" if q == B else f"{q} of batch_size={B} queries a pass"
        what = (f"{layers} layers x {NBF_FLOATS_PER_NODE} x {n_entities:,} nodes x {queries} x dim={dim} "
                f"float32 activations{' (one layer at a time: checkpoint)' if params.get('checkpoint') else ''}")
        advice = "Lower 'batch_size' or 'dim'" + ("" if params.get("checkpoint") else
                                                   ", or set model_params={'checkpoint': True}")
        return need, what, advice
    need = 4 * 6 * B * (1 + N) * (2 if cfg.emu else 1)
    return need, f"batch_size={B} x (1 + n_negatives={N}) scores", "Lower 'batch_size' or 'n_negatives'"


#: floats per (node, query, dimension) a blocked NBFNet layer keeps for its backward pass (measured
#: peak of a 6-layer training step, 10,000 nodes, 50,000 triples, batch 32, dim 32: 13.5; rounded down:
#: the check refuses only what certainly cannot fit). The fused C kernel keeps the same per-node
#: tensors: WN18RR at batch 32 peaked at 15.1 GB fused and 13.3 GB blocked against 12.0 GB estimated
NBF_FLOATS_PER_NODE = 12


def nbf_queries_per_pass(n_queries, n_entities, dim, n_layers, pass_bytes):
    """Queries one NBFNet training propagation takes on the CPU: as many as keep its activations
    (``NBF_FLOATS_PER_NODE`` floats per layer, node, query and dimension) within ``pass_bytes``,
    at least one, at most ``n_queries`` (see :mod:`kgestimator.path_training`)."""
    per_query = 4 * NBF_FLOATS_PER_NODE * n_layers * n_entities * dim
    return int(min(n_queries, max(1, pass_bytes // max(1, per_query))))


def check_training_fits(model_cls, n_entities, n_relations, dim, n_triples, optimizer, sparse, early_stopping,
                        device, activations=None):
    """Raise InsufficientMemoryError before training when the model cannot fit.

    The estimate is a lower bound: float32 tables for the weights, their dense
    gradients (none with ``sparse``), the optimiser's moments (two for Adam,
    one for Adagrad), a copy of the best weights under early stopping, and the
    index of known triples, plus ``activations`` when given (``(bytes, what,
    advice)`` from :func:`activation_estimate`). Each part is a lower bound, so
    only a request that cannot possibly fit is refused.
    """
    values = (n_entities * model_cls.entity_factor + n_relations * model_cls.relation_factor) * dim
    moments = 1 if optimizer == "adagrad" else 2
    copies = 1 + (0 if sparse else 1) + moments + (1 if early_stopping else 0)
    tables = 4 * values * copies + 8 * 3 * 2 * n_triples
    need = tables + (activations[0] if activations else 0)
    have = available_bytes(device)
    if have is not None and need > have and activations and activations[0] > tables:
        raise InsufficientMemoryError(
            f"Training this model needs at least {format_bytes(need)} on {device}, but {format_bytes(have)} "
            f"is available: a training step holds {format_bytes(activations[0])} of activations "
            f"({activations[1]}) and the weights, optimiser state and triple index "
            f"{format_bytes(tables)}. {activations[2]}, or use a machine with more memory.")
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
