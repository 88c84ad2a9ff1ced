"""The Wilson score interval against its closed form and its coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats.intervals import wilson


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
