"""Small helpers: device choice and seeding."""

import numpy as np
import torch
from sklearn.utils import check_random_state


def resolve_device(device):
    """``'auto'`` -> CUDA when present, else CPU; else a CPU, CUDA or MPS device that exists here.

    torch accepts device names it cannot use ('meta', 'xpu', 'cuda' without
    CUDA) and fails later with assertions or obscure errors; they are refused here.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; "
                         f"got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"The 'device' parameter is {device!r} but CUDA is not available on this "
                             "machine; use 'cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"The 'device' parameter is {device!r} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"The 'device' parameter is {device!r} but MPS is not available on this machine.")
    elif dev.type != "cpu":
        raise ValueError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got "
                         f"{device!r} (torch knows it, kgestimator cannot train on it).")
    return dev


def make_generator(random_state, device):
    """A torch generator on ``device`` seeded from ``random_state`` (None, int or RandomState)."""
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, seed


def to_numpy(t):
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
