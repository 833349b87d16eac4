"""Small helpers: device choice and seeding."""

import numpy as np
import torch
from sklearn.utils import check_random_state


def resolve_device(device):
    """``'auto'`` -> CUDA when present, else CPU; anything else is passed to torch."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc


def make_generator(random_state, device):
    """A torch generator on ``device`` seeded from ``random_state`` (None, int or RandomState)."""
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, seed


def to_numpy(t):
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
