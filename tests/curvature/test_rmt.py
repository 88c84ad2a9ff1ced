"""Semicircle and Marchenko-Pastur fits on sampled random matrices with planted spikes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.curvature.rmt import (
    count_spikes,
    fit_marchenko_pastur,
    fit_spiked_bulk,
    quadrature_ks,
    fit_semicircle,
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    semicircle_cdf,
    semicircle_density,
    spiked_outliers,
)
from landscape.curvature.slq import spectral_density

SIGMA = 1.5
SPIKES = (4.0, 6.0, 8.0)  # in units of sigma; each > 1 so it leaves the bulk at theta + 1/theta


def wigner(N: int, seed: int, spikes: tuple[float, ...] = SPIKES, shift: float = 0.0) -> torch.Tensor:
    """Symmetric N x N matrix with off-diagonal entries of variance SIGMA^2 / N plus planted spikes."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, N, generator=g, dtype=torch.float64)
    W = (X + X.T) / math.sqrt(2 * N) * SIGMA
    if spikes:
        V, _ = torch.linalg.qr(torch.randn(N, len(spikes), generator=g, dtype=torch.float64))
        W = W + (V * (torch.tensor(spikes, dtype=torch.float64) * SIGMA)) @ V.T
    return W + shift * torch.eye(N, dtype=torch.float64)


def wishart_eigenvalues(N: int, P: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, P, generator=g, dtype=torch.float64) * math.sqrt(scale)
    return torch.linalg.eigvalsh(X.T @ X / N)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semicircle_recovers_sigma_and_counts_spikes(seed):
    ev = torch.linalg.eigvalsh(wigner(400, seed))
    fit = fit_semicircle(ev)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert abs(fit.centre) < 0.03 * SIGMA
    assert fit.num_outliers == 3
    assert fit.outlier_indices == (397, 398, 399)  # the three largest eigenvalues
    assert fit.num_bulk == 397 and fit.outlier_mass == pytest.approx(3 / 400)
    assert fit.ks_distance < 0.03 and fit.converged
    assert fit.upper_edge == pytest.approx(fit.centre + 2 * fit.sigma)
    # Outliers sit where the spiked model puts them: theta + sigma^2 / theta.
    expected = torch.tensor([(t + 1 / t) * SIGMA for t in SPIKES], dtype=torch.float64)
    torch.testing.assert_close(ev[-3:], expected, rtol=0.05, atol=0)


def test_semicircle_shifted_centre():
    ev = torch.linalg.eigvalsh(wigner(400, 3, spikes=(), shift=2.0))
    fit = fit_semicircle(ev)
    assert fit.centre == pytest.approx(2.0, abs=0.05 * SIGMA)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.03)
    assert fit.num_outliers == 0
    uncentred = fit_semicircle(ev, fit_centre=False)
    assert uncentred.centre == 0.0 and uncentred.ks_distance > 5 * fit.ks_distance


def test_goodness_of_fit_separates_other_shapes():
    ev = torch.linalg.eigvalsh(wigner(400, 4, spikes=()))
    good = fit_semicircle(ev)
    g = torch.Generator().manual_seed(0)
    two_bumps = torch.cat([torch.randn(200, generator=g) - 3, torch.randn(200, generator=g) + 3]).double()
    bad = fit_semicircle(two_bumps)
    assert good.ks_distance < 0.02
    assert bad.ks_distance > 0.1


def test_semicircle_from_slq_density():
    W = wigner(400, 5)
    dens = spectral_density(W, num_probes=20, num_steps=60, seed=0)
    fit = fit_semicircle(dens)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.05)
    # The spikes hold 3/400 of the spectral mass, spread over Ritz nodes of all probes.
    assert fit.outlier_mass == pytest.approx(3 / 400, rel=0.5)
    assert fit.num_outliers > 0


@pytest.mark.parametrize(("N", "P"), [(800, 400), (200, 400)])
def test_marchenko_pastur_recovers_ratio_and_scale(N, P):
    ev = wishart_eigenvalues(N, P, scale=2.0, seed=N)
    fit = fit_marchenko_pastur(ev)
    assert fit.ratio == pytest.approx(P / N, rel=0.05)
    assert fit.scale == pytest.approx(2.0, rel=0.03)
    assert fit.num_outliers == 0 and fit.ks_distance < 0.03 and fit.converged
    assert fit.upper_edge == pytest.approx(2.0 * (1 + math.sqrt(P / N)) ** 2, rel=0.05)


def test_marchenko_pastur_flags_spikes():
    g = torch.Generator().manual_seed(7)
    N, P = 800, 400
    X = torch.randn(N, P, generator=g, dtype=torch.float64)
    W = X.T @ X / N
    u = torch.linalg.qr(torch.randn(P, 2, generator=g, dtype=torch.float64))[0]
    W = W + (u * torch.tensor([15.0, 25.0], dtype=torch.float64)) @ u.T
    ev = torch.linalg.eigvalsh(W)
    fit = fit_marchenko_pastur(ev)
    assert fit.outlier_indices == (398, 399)
    assert fit.ratio == pytest.approx(0.5, rel=0.05) and fit.scale == pytest.approx(1.0, rel=0.03)


def test_closed_forms_are_consistent():
    x = np.linspace(-4.0, 4.0, 20001)
    dens = semicircle_density(x, sigma=1.5, centre=0.5)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(x))])
    np.testing.assert_allclose(cum, semicircle_cdf(x, 1.5, 0.5), atol=1e-5)
    assert semicircle_cdf(np.array([0.5 - 3.0, 0.5 + 3.0]), 1.5, 0.5).tolist() == [0.0, 1.0]
    from scipy.integrate import quad

    for ratio in (0.3, 1.0, 2.5):
        scale = 3.0
        lo, hi = scale * (1 - math.sqrt(ratio)) ** 2, scale * (1 + math.sqrt(ratio)) ** 2

        def dens_mp(t: float, ratio: float = ratio) -> float:
            return float(marchenko_pastur_density(np.array([t]), ratio, scale)[0])

        mass = quad(dens_mp, lo, hi, limit=200)[0]
        assert mass == pytest.approx(min(1.0, 1.0 / ratio), abs=1e-6)
        mid = scale * (1 + ratio)
        expected = quad(dens_mp, lo, mid, limit=200)[0] + max(0.0, 1 - 1 / ratio)
        assert marchenko_pastur_cdf(np.array([mid]), ratio, scale)[0] == pytest.approx(expected, abs=1e-5)
        assert marchenko_pastur_cdf(np.array([hi * 1.01]), ratio, scale)[0] == pytest.approx(1.0, abs=1e-12)


def test_spiked_outliers():
    values = torch.tensor([0.1, 5.0, -3.0, 1.9, 2.5, -1.0])
    assert spiked_outliers(values, 2.0).tolist() == [1, 4]
    assert spiked_outliers(values, (-2.0, 2.0)).tolist() == [1, 2, 4]
    assert spiked_outliers(values, (-2.0, 2.0), margin=0.75).tolist() == [1, 2]
    assert spiked_outliers(values, 10.0).numel() == 0


def test_errors():
    with pytest.raises(ValueError, match="at least 3 values"):
        fit_semicircle(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        fit_semicircle(torch.randn(10), tol=-0.1)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        fit_semicircle(torch.randn(10), weights=-torch.ones(10))
    with pytest.raises(ValueError, match="weights must match values"):
        fit_semicircle(torch.randn(10), weights=torch.ones(9))
    with pytest.raises(ValueError, match="values and weights must be finite"):
        fit_semicircle(torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(ValueError, match="no spread"):
        fit_semicircle(torch.ones(10))
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        fit_marchenko_pastur(torch.rand(10), max_iter=0)
    with pytest.raises(ValueError, match="needs a spectrum with positive values"):
        fit_marchenko_pastur(-torch.rand(10))
    with pytest.raises(ValueError, match="ratio_bounds must satisfy"):
        fit_marchenko_pastur(torch.rand(10), ratio_bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="zero_tol must be a finite number >= 0"):
        fit_marchenko_pastur(torch.rand(10), zero_tol=-1.0)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        spiked_outliers(torch.randn(5), 1.0, margin=-1.0)
    with pytest.raises(ValueError, match="edge must be a float or a"):
        spiked_outliers(torch.randn(5), (2.0, 1.0))


# ----------------------------------------------------------------------------- spike counts

def top_eigenvalues(W: torch.Tensor, k: int = 20) -> torch.Tensor:
    return torch.linalg.eigvalsh(W).flip(0)[:k]


@pytest.mark.parametrize("spikes", [(2.0, 3.0, 4.0), (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0)], ids=["3", "9"])
def test_count_spikes_is_exact_above_the_bbp_threshold(spikes):
    # theta > 1 (units of sigma) leaves the bulk at (theta + 1/theta) sigma > 2 sigma
    counts = [count_spikes(top_eigenvalues(wigner(300, seed, spikes=spikes))).num_spikes for seed in range(20)]
    assert counts == [len(spikes)] * 20


@pytest.mark.parametrize("spikes", [(), (0.5,)], ids=["pure", "below_threshold"])
def test_count_spikes_finds_nothing_without_separated_spikes(spikes):
    # the gap rule's false-positive rate is ~5% at N = 300 (measured over 60 draws); allow 3 of 30
    counts = [count_spikes(top_eigenvalues(wigner(300, seed, spikes=spikes))).num_spikes for seed in range(30)]
    assert sum(c != 0 for c in counts) <= 3
    assert max(counts) <= 1


def test_count_spikes_fields_and_cap():
    values = torch.tensor([10.0, 9.0, 8.0] + [1.0 - 0.05 * i for i in range(12)], dtype=torch.float64)
    c = count_spikes(values)
    assert c.num_spikes == 3 and c.max_spikes == 10 and not c.at_max
    assert c.gaps[2] == pytest.approx(7.0) and len(c.gaps) == 10
    assert c.delta == pytest.approx(2 * abs(c.edge_slope))
    many = torch.tensor([20.0 - i for i in range(10)] + [1.0 - 0.05 * i for i in range(5)], dtype=torch.float64)
    capped = count_spikes(many)
    assert capped.num_spikes == 10 and capped.max_spikes == 10 and capped.at_max


@pytest.mark.parametrize("seed", [0, 1])
def test_spiked_bulk_recovers_sigma_and_spikes_from_slq(seed):
    W = wigner(400, seed)
    dens = spectral_density(W, num_probes=8, num_steps=40, seed=seed)
    fit = fit_spiked_bulk(top_eigenvalues(W), dens, dim=400)
    assert fit.num_spikes == 3 and 3 <= fit.beyond_edge < 20 and not fit.beyond_edge_is_lower_bound
    expected = [(t + 1 / t) * SIGMA for t in sorted(SPIKES, reverse=True)]
    assert fit.spikes == pytest.approx(expected, rel=0.05)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.05)  # stated tolerance: 5%
    assert abs(fit.centre) < 0.05 * SIGMA
    assert fit.upper_edge == pytest.approx(fit.centre + 2 * fit.sigma)
    assert fit.bulk_top < fit.cut < fit.spikes[-1]
    assert fit.spike_mass == pytest.approx(3 / 400, rel=0.7)
    assert fit.ks_semicircle < 0.05 and fit.ks_spiked < 0.05


def test_spiked_bulk_on_pure_wigner():
    W = wigner(400, 5, spikes=())
    fit = fit_spiked_bulk(top_eigenvalues(W), spectral_density(W, num_probes=8, num_steps=40, seed=0), dim=400)
    assert fit.num_spikes == 0 and fit.spikes == () and math.isinf(fit.cut) and fit.spike_mass == 0.0
    assert fit.sigma == pytest.approx(SIGMA, rel=0.05)
    assert fit.ks_semicircle == fit.ks_spiked


def test_spiked_bulk_with_a_bulk_narrower_than_slq_resolves():
    # A trained-network-like spectrum: 9 isolated eigenvalues and a Gaussian bulk far
    # narrower than the spacing of 40 SLQ nodes.
    g = torch.Generator().manual_seed(0)
    bulk = torch.randn(3000, generator=g, dtype=torch.float64) * 0.01
    spikes = torch.linspace(2.0, 10.0, 9, dtype=torch.float64)
    H = torch.diag(torch.cat([bulk, spikes]))
    dens = spectral_density(H, num_probes=2, num_steps=40, seed=0)
    fit = fit_spiked_bulk(top_eigenvalues(H), dens, dim=3009)
    assert fit.num_spikes == 9
    assert fit.spikes == pytest.approx(spikes.flip(0).tolist(), rel=1e-8)
    assert fit.sigma == pytest.approx(0.01, rel=0.3)


def test_quadrature_ks_separates_right_and_wrong_models():
    W = wigner(400, 6, spikes=())
    dens = spectral_density(W, num_probes=4, num_steps=40, seed=1)
    right = quadrature_ks(dens.nodes, dens.weights, lambda x: semicircle_cdf(x, SIGMA))
    wrong = quadrature_ks(dens.nodes, dens.weights, lambda x: semicircle_cdf(x, 2 * SIGMA))
    shifted = quadrature_ks(dens.nodes, dens.weights, lambda x: semicircle_cdf(x, SIGMA, 1.0))
    assert right < 0.03 and wrong > 0.1 and shifted > 0.1
    # one probe, one node: the bracket at the node is [0, 1], every model fits
    assert quadrature_ks(torch.tensor([[0.0]]), torch.tensor([[1.0]]), lambda x: np.full_like(x, 0.3)) == 0.0


def test_spike_errors():
    with pytest.raises(ValueError, match="needs k >= max_spikes \\+ edge_points = 20"):
        count_spikes(torch.arange(19.0), max_spikes=15)
    with pytest.raises(ValueError, match="edge_points must be an int >= 3"):
        count_spikes(torch.arange(20.0), edge_points=2)
    with pytest.raises(ValueError, match="max_spikes must be an int >= 1"):
        count_spikes(torch.arange(20.0), max_spikes=0)
    with pytest.raises(ValueError, match="eigenvalues must be finite"):
        count_spikes(torch.tensor([float("nan")] * 20))
    with pytest.raises(ValueError, match="weights are required"):
        fit_spiked_bulk(torch.arange(20.0), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="dim must be None or an int >= 1"):
        fit_spiked_bulk(torch.arange(20.0), torch.randn(2, 10), torch.ones(2, 10), dim=0)
    with pytest.raises(ValueError, match="must have one shape"):
        quadrature_ks(torch.zeros(2, 3), torch.ones(2, 2), lambda x: x)
    with pytest.raises(ValueError, match="needs k >= edge_points \\+ 1 = 6 eigenvalues, got k = 4"):
        count_spikes(torch.arange(4.0))
