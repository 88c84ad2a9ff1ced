"""The Wilson score interval against its closed form and its coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats.intervals import batch_means, wilson, wilson_bounds


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


def _ar1_paths(reps: int, n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """``reps`` stationary AR(1) paths of length n with unit marginal variance and mean 0."""
    x = np.empty((reps, n))
    x[:, 0] = rng.normal(size=reps)
    e = rng.normal(scale=math.sqrt(1 - phi**2), size=(reps, n))
    for i in range(1, n):
        x[:, i] = phi * x[:, i - 1] + e[:, i]
    return x


def test_batch_means_covers_the_mean_of_an_ar1_series_where_the_iid_interval_does_not():
    """phi = 0.8 (integrated autocorrelation time 9), n = 2000, 10 batches of 200: coverage
    near 95% over 2000 planted series; the i.i.d. interval covers about
    2 Phi(1.96 / 3) - 1 = 0.49 (too short by sqrt((1 + phi) / (1 - phi)) = 3)."""
    rng = np.random.default_rng(0)
    paths = _ar1_paths(2000, 2000, 0.8, rng) + 3.0
    hits = [(iv.low <= 3.0 <= iv.high) for iv in (batch_means(p, 0.95, 10) for p in paths)]
    covered = float(np.mean(hits))
    assert 0.93 <= covered <= 0.97
    z = sps.norm.isf(0.025)
    half = z * paths.std(axis=1, ddof=1) / math.sqrt(paths.shape[1])
    naive = float(np.mean(np.abs(paths.mean(axis=1) - 3.0) <= half))
    assert naive < 0.6


def test_batch_means_closed_form_and_degenerate_series():
    x = np.arange(23, dtype=float)  # 23 // 4 = 5 per batch; the first 3 values are dropped
    iv = batch_means(x, 0.9, 4)
    means = x[3:].reshape(4, 5).mean(axis=1)
    half = sps.t.ppf(0.95, 3) * means.std(ddof=1) / 2
    assert (iv.num_batches, iv.batch_size) == (4, 5)
    assert iv.mean == pytest.approx(means.mean())
    assert iv.low == pytest.approx(means.mean() - half) and iv.high == pytest.approx(means.mean() + half)
    const = batch_means(np.full(40, 2.5), 0.95, 10)
    assert const.low == const.mean == const.high == 2.5
    with pytest.raises(ValueError, match=r"series of 15 values is too short for 10 batches"):
        batch_means(np.ones(15), 0.95, 10)
    with pytest.raises(ValueError, match=r"num_batches must be an int >= 2, got 1"):
        batch_means(np.ones(15), 0.95, 1)
    with pytest.raises(ValueError, match=r"series must be finite"):
        batch_means(np.array([1.0, np.nan] * 20), 0.95, 10)
