"""Effective-rank / log-det / trace forms against the exact eq (8) KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.bounds.effective import complexity_summary, effective_dimension, logdet_form, trace_form
from landscape.bounds.gaussians import hessian_posterior, kl_lowrank

F64 = torch.float64
P = 40


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(P, 8, generator=g, dtype=F64)
    H = A @ A.T / 8 + 1e-3 * torch.randn(P, P, generator=g, dtype=F64)
    H = 0.5 * (H + H.T)  # low-rank spiked, a few slightly negative eigenvalues
    lam, U = torch.linalg.eigh(H)
    mu = torch.randn(P, generator=g, dtype=F64)
    mu0 = torch.randn(P, generator=g, dtype=F64)
    return lam, U, mu, mu0


@pytest.mark.parametrize("prior_scale", [None, 0.3, 1.0, 4.0])
def test_summary_kl_equals_gaussian_kl_full_spectrum(prior_scale):
    lam, U, mu, mu0 = _problem()
    c, eps = 0.05, 0.02
    prior_var = None if prior_scale is None else prior_scale * c / eps
    post = hessian_posterior(mu, lam, U, c=c, eps=eps, lambda_rest=0.0)
    ref = kl_lowrank(post, mu0, c / eps if prior_var is None else prior_var)
    s = complexity_summary(lam, eps=eps, c=c, prior_var=prior_var, dist_sq=float(((mu - mu0) ** 2).sum()))
    assert s.kl == pytest.approx(ref.kl, rel=1e-10)
    if prior_scale is None:
        assert s.rho == 1.0 and s.mismatch_term == 0.0


def test_summary_with_multiplicities_matches_top_k_posterior():
    lam, U, mu, mu0 = _problem(1)
    k, c, eps, rest = 6, 0.1, 0.05, 0.01
    post = hessian_posterior(mu, lam[-k:], U[:, -k:], c=c, eps=eps, lambda_rest=rest)
    ref = kl_lowrank(post, mu0, 2.0)
    vals = np.concatenate([lam[-k:].numpy(), [rest]])
    mult = np.concatenate([np.ones(k), [P - k]])
    dist_sq = float(((mu - mu0) ** 2).sum())
    s = complexity_summary(vals, eps=eps, c=c, prior_var=2.0, dist_sq=dist_sq, multiplicities=mult)
    assert s.kl == pytest.approx(ref.kl, rel=1e-10)
    assert s.dim == P


def test_matched_prior_identity_logdet_minus_deff():
    lam, _, _, _ = _problem(2)
    eps, c = 0.03, 0.2
    s = complexity_summary(lam, eps=eps, c=c, dist_sq=1.7)
    lp = lam.clamp(min=0).numpy()
    logdet = 0.5 * np.sum(np.log1p(lp / eps))
    d_eff = np.sum(lp / (lp + eps))
    assert s.curvature_exact == pytest.approx(0.5 * (2 * logdet - d_eff), rel=1e-12)
    assert s.distance_term == pytest.approx(eps * 1.7 / (2 * c), rel=1e-14)
    assert s.effective_dim == pytest.approx(d_eff, rel=1e-14)
    assert effective_dimension(lam, eps) == pytest.approx(d_eff, rel=1e-14)
    assert logdet_form(lam, eps) == pytest.approx(logdet, rel=1e-14)
    assert trace_form(lam, eps) == pytest.approx(lp.sum() / (2 * eps), rel=1e-14)


@pytest.mark.parametrize("rho", [0.2, 1.0, 3.0])
@pytest.mark.parametrize("eps", [1e-3, 0.05, 2.0])
def test_upper_bound_chain(rho, eps):
    lam, _, _, _ = _problem(3)
    c = 0.1
    s = complexity_summary(lam, eps=eps, c=c, prior_var=c / (rho * eps))
    assert s.rho == pytest.approx(rho)
    tol = 1e-12 * max(1.0, abs(s.curvature_trace))
    assert s.curvature_exact <= s.curvature_effective_rank + tol
    assert s.curvature_exact <= s.curvature_logdet + tol
    assert s.curvature_logdet <= s.curvature_trace + tol
    assert s.kl_with("exact") == pytest.approx(s.kl)
    assert s.kl_with("trace") >= s.kl - tol


def test_effective_dim_counts_only_eigenvalues_above_damping():
    # 5 eigenvalues of 100, 995 of 1e-8: d_eff(eps=1) ~ 5 and the KL ignores P
    vals = np.array([100.0, 1e-8])
    mult = np.array([5.0, 995.0])
    s = complexity_summary(vals, eps=1.0, c=1.0, multiplicities=mult)
    assert s.effective_dim == pytest.approx(5 * 100 / 101 + 995 * 1e-8, rel=1e-12)
    assert s.curvature_exact < 0.5 * 5 * math.log(101)
    assert s.curvature_exact == pytest.approx(0.5 * 5 * (math.log(101) - 100 / 101), rel=1e-6)


def test_accuracy_for_tiny_eigenvalues():
    # ln(1+x) - x/(1+x) ~ x^2/2 for tiny x: no cancellation
    x = 1e-9
    s = complexity_summary([x], eps=1.0, c=1.0)
    assert s.curvature_exact == pytest.approx(0.5 * (x**2 / 2 - 2 * x**3 / 3), rel=1e-9)


def test_summary_to_dict():
    d = complexity_summary([1.0, 2.0], eps=0.1, c=0.2).to_dict()
    assert {"effective_dim", "curvature_exact", "curvature_trace", "kl", "mismatch_term"} <= set(d)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: effective_dimension([1.0], 0.0), r"eps must be finite and > 0"),
        (lambda: effective_dimension([], 1.0), r"non-empty array of finite values"),
        (lambda: logdet_form([1.0, np.nan], 1.0), r"non-empty array of finite values"),
        (lambda: trace_form([1.0, 2.0], 1.0, multiplicities=[1.0]), r"multiplicities must have shape"),
        (lambda: trace_form([1.0], 1.0, multiplicities=[-1.0]), r"multiplicities must be finite and >= 0"),
        (lambda: complexity_summary([1.0], eps=1.0, c=-1.0), r"c must be finite and > 0"),
        (lambda: complexity_summary([1.0], eps=1.0, c=1.0, prior_var=0.0), r"prior_var must be finite and > 0"),
        (lambda: complexity_summary([1.0], eps=1.0, c=1.0, dist_sq=-1.0), r"dist_sq must be finite and >= 0"),
        (lambda: complexity_summary([1.0], eps=1.0, c=1.0).kl_with("nope"), r"curvature must be one of"),
    ],
)
def test_effective_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
