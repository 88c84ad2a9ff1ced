"""The Wilson score interval against its closed form and its coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats.intervals import wilson, wilson_bounds


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (37, 120)])
def test_matches_the_closed_form(k, n):
    z = sps.norm.isf(0.025)
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    rate, lo, hi = wilson(k, n, 0.95)
    assert rate == p and lo == pytest.approx(center - half, abs=1e-12) and hi == pytest.approx(center + half, abs=1e-12)
    assert -1e-15 <= lo <= p + 1e-15 and p - 1e-15 <= hi <= 1.0 + 1e-15


def test_coverage_near_the_level_over_many_draws():
    """n = 40, p = 0.1: the Wilson interval covers close to 95% (Brown, Cai & DasGupta 2001)."""
    rng = np.random.default_rng(0)
    counts = rng.binomial(40, 0.1, size=4000)
    covered = np.mean([lo <= 0.1 <= hi for _, lo, hi in (wilson(int(c), 40, 0.95) for c in counts)])
    assert 0.92 <= covered <= 0.99


def test_empty_and_bad_input():
    assert all(math.isnan(v) for v in wilson(0, 0, 0.95))
    with pytest.raises(ValueError, match=r"count must lie in \[0, n=5\], got 6"):
        wilson(6, 5, 0.95)
    with pytest.raises(ValueError, match="ci_level must be in"):
        wilson(1, 5, 1.0)


def test_bounds_are_elementwise_and_equal_the_scalar_interval():
    from statsmodels.stats.proportion import proportion_confint

    counts = np.array([0, 13, 37, 50])
    lo, hi = wilson_bounds(counts, 50, 0.95)
    for k, a, b in zip(counts, lo, hi, strict=True):
        elo, ehi = proportion_confint(int(k), 50, alpha=0.05, method="wilson")
        assert a == pytest.approx(elo, abs=1e-15) and b == pytest.approx(ehi, abs=1e-15)
        assert wilson(int(k), 50, 0.95)[1:] == pytest.approx((a, b), abs=1e-15)
    with pytest.raises(ValueError, match=r"count must lie in \[0, n=5\]"):
        wilson_bounds([1, 6], 5, 0.95)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        wilson_bounds(0, 0, 0.95)
    with pytest.raises(ValueError, match="ci_level must be in"):
        wilson_bounds(1, 10, 1.0)
