"""Bernoulli masks (EMU's mutation masks, embedding dropout) from 16-bit uniforms.

``torch.rand(shape) < p`` draws one float per element; on a CPU that costs about
10 ns an element (17 ms for the 1.7M coordinates one side of a LibKGE-style
dropout step drops on FB15k-237: a quarter of that step in a profile). Here one 64-bit draw gives four
16-bit uniforms, each compared with ``p`` rounded to a multiple of ``2**-16``:
about a quarter of the generator's calls and one comparison pass
(``benchmarks/bench_bernoulli.py``). The rounding moves a probability by at most
``2**-17`` (7.6e-6), far below what a mask of any size can resolve.
"""

import math

import torch

#: a mask's probability is a multiple of ``1 / LEVELS``
LEVELS = 1 << 16
_HALF = LEVELS // 2
#: devices whose generators draw int64 and whose tensors view as int16 (others take the float path)
_LANE_DEVICES = ("cpu", "cuda")


def quantised(prob):
    """The probability a :func:`bernoulli_mask` of ``prob`` has: ``prob`` rounded to a multiple of ``2**-16``."""
    return round(float(prob) * LEVELS) / LEVELS


def bernoulli_mask(shape, prob, generator=None, device=None):
    """Boolean tensor of ``shape``, each element True independently with probability ``quantised(prob)``.

    Parameters
    ----------
    shape : tuple of int
    prob : float in [0, 1]
    generator : torch.Generator or None
        The random stream (its device is the default ``device``).
    device : torch.device, str or None
    """
    if device is None:
        device = generator.device if generator is not None else "cpu"
    device = torch.device(device)
    level = round(float(prob) * LEVELS)
    if device.type not in _LANE_DEVICES:
        return torch.rand(shape, generator=generator, device=device) < level / LEVELS
    if level <= 0 or level >= LEVELS:  # the threshold would leave int16's range
        return torch.full(shape, level > 0, dtype=torch.bool, device=device)
    n = math.prod(shape)
    words = -(-n // 4)
    # the whole 64-bit range (torch's dedicated path for from=int64 min, to=None): four uniform
    # 16-bit lanes a word, in whatever byte order
    bits = torch.empty(words, dtype=torch.int64, device=device).random_(-(1 << 63), None, generator=generator)
    # int16 reads a uniform 16-bit lane as a value in [-2**15, 2**15): shift the threshold with it
    return (bits.view(torch.int16)[:n] < level - _HALF).view(shape)
