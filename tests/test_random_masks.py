"""Bernoulli masks from 16-bit lanes (EMU mutation masks and embedding dropout)."""

import math

import pytest
import torch

from kgestimator._random import LEVELS, bernoulli_mask, quantised
from kgestimator.models import make_model


@pytest.mark.parametrize("prob", [0.06, 0.39, 0.61, 0.9])
def test_frequency_is_the_probability(prob):
    n = 3 * 400_001     # not a multiple of four: the last word's lanes are cut
    mask = bernoulli_mask((n,), prob, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (n,)
    sd = math.sqrt(prob * (1 - prob) / n)
    assert abs(mask.float().mean().item() - prob) < 5 * sd


def test_lanes_are_independent():
    # the three lanes of one 64-bit draw, and neighbouring elements, must not be correlated
    mask = bernoulli_mask((600_000,), 0.5, torch.Generator().manual_seed(1)).float()
    for lag in (1, 2, 3, 4):
        a, b = mask[:-lag] - mask.mean(), mask[lag:] - mask.mean()
        corr = (a * b).mean() / mask.var()
        assert abs(corr.item()) < 5 / math.sqrt(mask.numel()), lag


def test_every_lane_value_is_reached_uniformly():
    # a mask at probability k / 2**16 is True on exactly the lanes below k, so the frequencies
    # of masks one level apart differ by 2**-16 in expectation; check the whole range in steps
    g = torch.Generator().manual_seed(2)
    n = 300_000
    for level in (1, 1 << 8, 1 << 15, LEVELS - 256, LEVELS - 1):
        freq = bernoulli_mask((n,), level / LEVELS, g).float().mean().item()
        p = level / LEVELS
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9, level


def test_extremes_shapes_and_seeds():
    g = torch.Generator().manual_seed(3)
    assert not bernoulli_mask((7, 5), 0.0, g).any()
    assert bernoulli_mask((7, 5), 1.0, g).all()
    assert bernoulli_mask((0, 4), 0.5, g).shape == (0, 4)
    assert bernoulli_mask((2, 3, 4), 0.3, g).shape == (2, 3, 4)
    a = bernoulli_mask((50, 9), 0.3, torch.Generator().manual_seed(4))
    b = bernoulli_mask((50, 9), 0.3, torch.Generator().manual_seed(4))
    c = bernoulli_mask((50, 9), 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_quantised_probability():
    assert quantised(0.5) == 0.5
    assert abs(quantised(0.4196834675552332) - 0.4196834675552332) <= 0.5 / LEVELS
    assert quantised(1e-6) == 0.0 and quantised(1.0) == 1.0


def test_dropout_keeps_the_expectation():
    gen = torch.Generator().manual_seed(0)
    model = make_model("distmult", 2000, 3, 64, 6.0, generator=gen)
    model.entity_dropout = 0.42
    model.dropout_generator = torch.Generator().manual_seed(1)
    model.train()
    table = model.entity.detach()
    dropped = model.entity_table().detach()
    zero = dropped == 0
    assert abs(zero.float().mean().item() - 0.42) < 0.005
    # kept coordinates are scaled by the inverse of the keep probability
    torch.testing.assert_close(dropped[~zero], table[~zero] / quantised(0.58))
    model.eval()
    assert torch.equal(model.entity_table(), model.entity)
