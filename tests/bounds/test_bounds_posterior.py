"""Gaussian posterior building blocks: the data-free split and paired (example, network) draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.bounds.posterior import FlatClassifier, isotropic_family, paired_wrong, split_indices


def test_split_is_seeded_disjoint_and_data_free():
    a, b = split_indices(101, 0.5, 3)
    assert a.numel() == 50 and b.numel() == 51
    assert torch.equal(torch.sort(torch.cat([a, b])).values, torch.arange(101))
    a2, _ = split_indices(101, 0.5, 3)
    a3, _ = split_indices(101, 0.5, 4)
    assert torch.equal(a, a2) and not torch.equal(a, a3)
    none, every = split_indices(10, 0.0, 0)
    assert none.numel() == 0 and torch.equal(every, torch.arange(10))
    with pytest.raises(ValueError, match="fraction must lie in"):
        split_indices(10, 1.0, 0)


def test_paired_draws_estimate_the_gibbs_error_of_a_known_posterior():
    """Ground truth: a 2-class linear classifier in 1-D under N(mu, s^2 I) errs with a normal CDF."""
    model = nn.Linear(1, 2)
    names = ("weight", "bias")
    net = FlatClassifier(model, names, (torch.Size([2, 1]), torch.Size([2])), torch.float32, 256, {})
    mu = torch.tensor([-1.0, 1.0, 0.2, -0.2])  # (w0, w1, b0, b1): logit gap 2x - 0.4
    s = 0.8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=g)
    y = (torch.rand(300, generator=g) < 0.7).long()
    # gap = (w1 - w0) x + (b1 - b0) ~ N(2x - 0.4, 2 s^2 (x^2 + 1)); wrong if its sign disagrees with y.
    m = 2 * x[:, 0].double() - 0.4
    sd = (2 * s**2 * (x[:, 0].double() ** 2 + 1)).sqrt()
    p1 = torch.distributions.Normal(0.0, 1.0).cdf(-m / sd)  # P(gap < 0): class 0 predicted
    truth = float(torch.where(y == 1, p1, 1 - p1).mean())
    (w,) = paired_wrong(net, mu, isotropic_family(4, [s]), x, y, 40000, torch.Generator().manual_seed(1))
    se = math.sqrt(truth * (1 - truth) / 40000)
    assert abs(float(w.mean()) - truth) < 4 * se
