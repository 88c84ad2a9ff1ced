"""The semicircle-vs-spiked criterion on planted matrices: the band model is the GOE (dense
matrices agree in law; outliers sit at theta + sigma^2 / theta), its truncation keeps the top-k
exactly, and at the measured parameter counts the test keeps its level and has power >= 0.8
against low-rank spikes (the default profile's sizes: 6,634 to 631,000 parameters, k = 20
Ritz values with their relative estimation noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from landscape.curvature.spike_test import null_spread_ratios, planted_top_eigenvalues, spike_test, spread_ratio, truncation_rows

ALPHA = 0.05
SIZES = (6_634, 631_000)  # the smallest (scaling/w32_d1) and largest (scaling/w512_d3) measured parameter counts
K = 20  # curvature.top_k of the default profile


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_spread_ratio_on_known_values():
    values = np.array([10.0, 9.0, 2.0, 1.5, 1.2, 1.1, 1.0, 0.9, 0.8])  # two spikes over a bulk
    # j = 2, 3, 4 (k - e = 4): (10 - 9) / 8.2, (10 - 2) / 1.2, (10 - 1.5) / 0.7 -> the last
    assert spread_ratio(values) == pytest.approx(8.5 / 0.7)
    assert spread_ratio(values[::-1]) == spread_ratio(values)  # any order
    with pytest.raises(ValueError, match=r"at least edge_points \+ 2 = 7 finite eigenvalues, got 6"):
        spread_ratio(values[:6])
    with pytest.raises(ValueError, match="edge_points must be an int >= 1, got 0"):
        spread_ratio(values, edge_points=0)


def test_band_model_is_the_spiked_goe():
    """Dense W + diag(theta) and the (untruncated) band model: same law of S and of the outliers."""
    n, draws = 200, 150
    dense = [spread_ratio(planted_top_eigenvalues(n, K, _rng(i))) for i in range(draws)]
    band = [spread_ratio(planted_top_eigenvalues(n, K, _rng(10_000 + i), rows=n)) for i in range(draws)]
    assert ks_2samp(dense, band).pvalue > 0.01
    spikes = (3.0, 1.5)
    for rows in (None, n):  # dense, band
        top = np.mean([planted_top_eigenvalues(n, K, _rng(20_000 + i), spikes, rows=rows)[:2] for i in range(40)], axis=0)
        np.testing.assert_allclose(top, [3 + 1 / 3, 1.5 + 1 / 1.5], atol=0.06)  # BBP outliers; O(n^-1/2) spread


@pytest.mark.parametrize("spikes", [(), (1.5,), (1.5, 2.0, 4.0)])
def test_truncated_band_keeps_the_top_eigenvalues(spikes):
    n = 20_000
    m = truncation_rows(n, K)
    assert m < n / 5
    full = planted_top_eigenvalues(n, K, _rng(7), spikes, rows=n)
    cut = planted_top_eigenvalues(n, K, _rng(7), spikes)
    np.testing.assert_allclose(cut, full, atol=1e-9 * n ** (-2 / 3))  # far below the edge spacing sigma n^(-2/3)
    expected = max(spikes) + 1 / max(spikes) if spikes else 2.0  # BBP outlier, or the semicircle edge
    assert cut[0] == pytest.approx(expected, abs=0.05)


def test_level_and_power_at_the_measured_sizes():
    """Pooled null over the measured sizes (as the spectra_scaling stage calibrates), then at
    each size: the false-positive rate on fresh Wigner matrices <= alpha + MC slack, and the
    power against C - 1 = 9 spikes of strengths 1.5-5 sigma and against one spike of 1.5 sigma
    (BBP threshold: 1 sigma) >= 0.8. Noise: 1e-3 of lambda_1 - lambda_k, far above the Ritz
    residual bounds of the measure stage (about 1e-7 lambda_max)."""
    noise = 1e-3
    null = null_spread_ratios(SIZES, K, 300, _rng(1), noise=noise)
    n_null, n_alt = 150, 30
    slack = 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / n_null)  # one-sided 99% binomial margin
    for size in SIZES:
        gen = _rng(size)
        false_pos = np.mean([spike_test(planted_top_eigenvalues(size, K, gen), size, gen, noise=noise, null=null).spiked
                             for _ in range(n_null)])
        assert false_pos <= ALPHA + slack, (size, false_pos)
        for spikes in (np.linspace(1.5, 5.0, 9), (1.5,)):
            power = np.mean([spike_test(planted_top_eigenvalues(size, K, gen, spikes), size, gen, noise=noise, null=null).spiked
                             for _ in range(n_alt)])
            assert power >= 0.8, (size, len(spikes), power)


def test_spikes_below_the_bbp_threshold_are_not_seen_and_too_many_spikes_are_a_stated_limit():
    """theta < sigma leaves no outlier (the spectrum is a semicircle's); more than k - e - 1 spikes leave no bulk in view."""
    size, gen = 6_634, _rng(3)
    null = null_spread_ratios([size], K, 200, _rng(4))
    below = np.mean([spike_test(planted_top_eigenvalues(size, K, gen, (0.5,)), size, gen, null=null).spiked for _ in range(60)])
    assert below <= ALPHA + 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / 60)
    crowded = spike_test(planted_top_eigenvalues(size, K, gen, np.linspace(1.5, 5.0, 18)), size, gen, null=null)
    assert crowded.max_detectable == K - 5 - 1 == 14 and crowded.verdict == "semicircle"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="dim must be an int >= 3, got 2"):
        planted_top_eigenvalues(2, 3, _rng(0))
    with pytest.raises(ValueError, match=r"k must be an int in \[3, dim=10\], got 11"):
        planted_top_eigenvalues(10, 11, _rng(0))
    with pytest.raises(ValueError, match="alpha must be a float in"):
        spike_test(np.arange(10.0), 100, _rng(0), alpha=5)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        null_spread_ratios([100], 10, 5, _rng(0), noise=-1.0)
