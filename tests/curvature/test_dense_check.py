"""compare_with_exact on planted matrices Q diag(lambda) Q^T with known spectra (negatives included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.curvature import spectral_density, top_eigenpairs
from landscape.curvature.dense_check import compare_with_exact, dense_matrix, wasserstein1
from landscape.curvature.trace import trace as estimate_trace

LAMBDAS = np.array([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0, 7.0, 20.0])


def planted(lambdas: np.ndarray, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(lambdas), len(lambdas), generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.as_tensor(lambdas)) @ Q.T


def test_exact_spectrum_recovered() -> None:
    A = planted(LAMBDAS)
    res = compare_with_exact(A)
    np.testing.assert_allclose(res.eigenvalues, LAMBDAS, atol=1e-12)
    assert res.exact_trace == pytest.approx(LAMBDAS.sum(), abs=1e-12)
    assert res.asymmetry < 1e-15
    assert res.to_dict()["negative_fraction"] == pytest.approx(2 / 8)


def test_exact_quadrature_has_zero_w1() -> None:
    """The quadrature of the exact spectral measure (nodes = eigenvalues, weights 1/P) is at W1 = 0,
    also split over two 'probes'; SLQ with P steps from the identity's columns is exact too."""
    A = planted(LAMBDAS)
    nodes = np.stack([LAMBDAS, LAMBDAS])
    res = compare_with_exact(A, slq_nodes=nodes, slq_weights=np.full_like(nodes, 1 / 8))
    assert res.slq["w1"] == pytest.approx(0.0, abs=1e-12)
    dens = spectral_density(A, num_probes=8, num_steps=8, seed=0, probes=torch.eye(8, dtype=torch.float64))
    res = compare_with_exact(A, slq_nodes=dens.nodes.numpy(), slq_weights=dens.weights.numpy())
    assert res.slq["w1"] == pytest.approx(0.0, abs=1e-9)


def test_w1_of_a_shifted_measure_is_the_shift() -> None:
    """Every node moved by +0.1: W1 = 0.1 exactly; all mass on the mean: W1 = mean |lambda - mean|."""
    assert wasserstein1(LAMBDAS + 0.1, np.full(8, 1 / 8), LAMBDAS) == pytest.approx(0.1, abs=1e-12)
    mean = LAMBDAS.mean()
    assert wasserstein1(np.array([mean]), np.array([1.0]), LAMBDAS) == pytest.approx(np.abs(LAMBDAS - mean).mean(), abs=1e-12)
    res = compare_with_exact(planted(LAMBDAS), slq_nodes=(LAMBDAS + 0.1)[None], slq_weights=np.full((1, 8), 1 / 8))
    assert res.slq["w1_over_width"] == pytest.approx(0.1 / 22.0, rel=1e-10)


def test_ritz_errors_and_certificates_by_hand() -> None:
    """Top 20 + 0.5 (bound 1: within), 7 - 0.2 (bound 0.1: outside); bottom -2 - 0.02 (bound 0.05)."""
    res = compare_with_exact(planted(LAMBDAS), top_values=[20.5, 6.8], top_bounds=[1.0, 0.1],
                             bottom_values=[-2.02, -0.5], bottom_bounds=[0.05, 0.0])
    np.testing.assert_allclose(res.top.exact, [20.0, 7.0], rtol=1e-12)
    np.testing.assert_allclose(res.top.rel_errors, [0.5 / 20, 0.2 / 7], rtol=1e-9)
    assert res.top.within_bound == (True, False) and not res.top.all_within_bound
    np.testing.assert_allclose(res.bottom.rel_errors, [0.01, 0.0], atol=1e-9)
    np.testing.assert_allclose(res.bottom.exact, [-2.0, -0.5], rtol=1e-12)
    assert res.bottom.all_within_bound
    assert res.top.max_rel_error == pytest.approx(0.2 / 7)


def test_nearest_certificate_differs_from_rank_match() -> None:
    """A Ritz value 0.99 with bound 0.02 certifies the eigenvalue 1, not the rank-matched 3."""
    res = compare_with_exact(torch.diag(torch.as_tensor(LAMBDAS)), top_values=[20.0, 0.99], top_bounds=[1e-12, 0.02])
    assert res.top.within_bound == (True, False)
    assert res.top.nearest_within_bound == (True, True)


def test_trace_and_logdet_by_hand() -> None:
    exact_tr = LAMBDAS.sum()  # 28.75
    eps = 0.5
    exact_ld = sum(math.log1p(max(v, 0) / eps) for v in LAMBDAS)
    res = compare_with_exact(planted(LAMBDAS), trace_value=exact_tr + 1.0, trace_stderr=1.0, logdet_eps=eps,
                             logdet_curvature=exact_ld * 1.1, logdet_stderr=0.01)
    assert res.trace["rel_error"] == pytest.approx(1.0 / exact_tr)
    assert res.trace["within_interval"]  # 1 < 1.96 * 1
    assert res.logdet["exact"] == pytest.approx(exact_ld, rel=1e-12)
    assert res.logdet["rel_error"] == pytest.approx(0.1, rel=1e-9)
    assert not res.logdet["within_interval"]  # 0.1 * exact >> 1.96 * 0.01
    assert res.logdet["clamped_fraction"] == pytest.approx(2 / 8)
    res = compare_with_exact(planted(LAMBDAS), trace_value=exact_tr + 3.0, trace_stderr=1.0)
    assert not res.trace["within_interval"]


def test_real_estimators_on_a_planted_matrix() -> None:
    """The library's own Lanczos and Hutch++ on a 60 x 60 planted spectrum: converged Ritz values
    are within their certificates, the exact trace within the Hutch++ interval at this budget."""
    lam = np.concatenate([np.linspace(-1, 1, 55), [5, 8, 12, 30, 50]])
    A = planted(lam, seed=3)
    eig = top_eigenpairs(A, k=3, which="LA", tol=1e-8, seed=0)
    low = top_eigenpairs(A, k=2, which="SA", tol=1e-8, seed=1)
    bounds = (eig.residuals * eig.values.abs()).numpy()
    lbounds = (low.residuals * low.values.abs()).numpy()
    tr = estimate_trace(A, num_matvecs=60, method="hutch++", seed=0)
    res = compare_with_exact(A, top_values=eig.values.numpy(), top_bounds=bounds, bottom_values=low.values.numpy(),
                             bottom_bounds=lbounds, trace_value=tr.value, trace_stderr=tr.stderr)
    assert res.top.all_within_bound and res.bottom.all_within_bound
    assert res.top.max_rel_error < 1e-6
    np.testing.assert_allclose(res.bottom.exact, [-1.0, -1.0 + 2 / 54])


def test_dense_matrix_of_an_operator_matches() -> None:
    A = planted(LAMBDAS)
    M, asym = dense_matrix(A)
    torch.testing.assert_close(M, A, rtol=0, atol=1e-14)
    assert asym < 1e-14


def test_bad_input_named() -> None:
    A = planted(LAMBDAS)
    with pytest.raises(ValueError, match="ci_level"):
        compare_with_exact(A, ci_level=1.5)
    with pytest.raises(ValueError, match="logdet_eps"):
        compare_with_exact(A, logdet_curvature=1.0, logdet_eps=0.0)
    with pytest.raises(ValueError, match="residual bounds"):
        compare_with_exact(A, top_values=[1.0, 2.0], top_bounds=[0.1])
    with pytest.raises(ValueError, match="eigenvalues for an operator"):
        compare_with_exact(A, eigenvalues=np.zeros(3))


def test_rounded_zeros_are_not_negative() -> None:
    """A float32 matrix with a null space: its rounded zero eigenvalues (~1e-7 ||A||) do not count as negative."""
    lam = np.concatenate([np.zeros(40), [-1.0, 2.0, 5.0]])
    A32 = planted(lam, seed=5).to(torch.float32)
    res = compare_with_exact(A32)
    assert res.unit_roundoff == pytest.approx(float(np.finfo(np.float32).eps))
    assert res.to_dict()["negative_fraction"] == pytest.approx(1 / 43)
