"""Closed-form Gaussian KLs against torch.distributions in float64; the eq (8) posterior."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from landscape.bounds.gaussians import (
    LowRankGaussian,
    complement_curvature,
    hessian_posterior,
    kl_diagonal,
    kl_isotropic,
    kl_lowrank,
    lowrank_log_prob,
    sample_diagonal,
    sample_lowrank,
)

F64 = torch.float64
P = 30


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_kl(mq, Sq, mp, Sp) -> float:
    q = MultivariateNormal(mq, covariance_matrix=Sq)
    return float(kl_divergence(q, MultivariateNormal(mp, covariance_matrix=Sp)))


def _spd_hessian(seed: int, negative: float = 0.3) -> torch.Tensor:
    g = _gen(seed)
    A = torch.randn(P, P, generator=g, dtype=F64)
    return A @ A.T / P - negative * torch.eye(P, dtype=F64)  # indefinite: a few negative eigenvalues


@pytest.mark.parametrize("var_q,var_p", [(0.01, 1.0), (0.5, 0.5), (2.0, 0.3)])
def test_kl_isotropic_matches_torch(var_q, var_p):
    g = _gen(0)
    mq, mp = torch.randn(P, generator=g, dtype=F64), torch.randn(P, generator=g, dtype=F64)
    r = kl_isotropic(mq, var_q, mp, var_p)
    eye = torch.eye(P, dtype=F64)
    ref = _ref_kl(mq, var_q * eye, mp, var_p * eye)
    assert r.kl == pytest.approx(ref, rel=1e-8)
    assert r.trace == pytest.approx(P * var_q / var_p, rel=1e-14)
    assert r.mahalanobis == pytest.approx(float(((mq - mp) ** 2).sum()) / var_p, rel=1e-14)
    assert r.kl == pytest.approx(0.5 * (r.trace + r.mahalanobis - P + r.logdet_prior - r.logdet_posterior), rel=1e-10)


@pytest.mark.parametrize("prior", ["isotropic", "diagonal"])
def test_kl_diagonal_matches_torch(prior):
    g = _gen(1)
    mq, mp = torch.randn(P, generator=g, dtype=F64), torch.randn(P, generator=g, dtype=F64)
    vq = torch.rand(P, generator=g, dtype=F64) * 2 + 0.01
    vp = 0.7 if prior == "isotropic" else torch.rand(P, generator=g, dtype=F64) + 0.1
    r = kl_diagonal(mq, vq, mp, vp)
    Sp = torch.diag(torch.as_tensor(vp, dtype=F64).expand(P))
    assert r.kl == pytest.approx(_ref_kl(mq, torch.diag(vq), mp, Sp), rel=1e-8)
    assert r.dim == P


def test_kl_is_zero_for_identical_and_precise_when_tiny():
    m = torch.zeros(P, dtype=F64)
    assert kl_isotropic(m, 0.3, m, 0.3).kl == 0.0
    # var ratio 1 + 1e-6: KL = P/2 * phi(r) ~ P/2 * (1e-12/2); the textbook
    # 1/2 (trace - P - logdet) would lose ~6 digits to cancellation here.
    r = 1 + 1e-6
    x = r - 1
    series = 0.5 * P * (x**2 / 2 - x**3 / 3 + x**4 / 4)
    res = kl_isotropic(m, r, m, 1.0)
    assert res.kl == pytest.approx(series, rel=1e-12)
    textbook = 0.5 * (res.trace - P + res.logdet_prior - res.logdet_posterior)
    assert abs(textbook - series) > 1e-12 * series  # the textbook sum is visibly worse


@pytest.mark.parametrize("k", [0, 1, 5, P])
@pytest.mark.parametrize("var_p", [0.05, 1.0])
def test_hessian_posterior_kl_matches_torch(k, var_p):
    H = _spd_hessian(2)
    lam_all, U = torch.linalg.eigh(H)
    lam, V = lam_all.flip(0)[:k], U.flip(1)[:, :k]
    g = _gen(3)
    mu, mu0 = torch.randn(P, generator=g, dtype=F64), torch.randn(P, generator=g, dtype=F64)
    c, eps = 0.1, 0.05
    lam_rest = complement_curvature(float(torch.trace(H)), lam, P)
    post = hessian_posterior(mu, lam, V, c=c, eps=eps, lambda_rest=lam_rest)
    # dense eq (8) reference built independently from the eigendecomposition
    d = torch.full((P,), c / (max(lam_rest, 0.0) + eps), dtype=F64)
    d_top = c / (lam.clamp(min=0) + eps)
    Sq = U.flip(1) @ torch.diag(torch.cat([d_top, d[k:]])) @ U.flip(1).T
    torch.testing.assert_close(post.to_dense(), Sq, rtol=1e-10, atol=1e-12)
    r = kl_lowrank(post, mu0, var_p)
    ref = _ref_kl(mu, Sq, mu0, var_p * torch.eye(P, dtype=F64))
    assert r.kl == pytest.approx(ref, rel=1e-8)
    assert r.logdet_posterior == pytest.approx(float(torch.logdet(Sq)), rel=1e-10)
    assert r.trace == pytest.approx(float(torch.trace(Sq)) / var_p, rel=1e-12)


def test_full_rank_posterior_is_inverse_damped_hessian():
    # eq (8) with k = P and a PSD H: covariance is exactly c (H + eps I)^-1
    g = _gen(4)
    A = torch.randn(P, P, generator=g, dtype=F64)
    H = A @ A.T / P
    lam, U = torch.linalg.eigh(H)
    post = hessian_posterior(torch.zeros(P, dtype=F64), lam, U, c=0.3, eps=0.01, lambda_rest=0.0)
    expected = 0.3 * torch.linalg.inv(H + 0.01 * torch.eye(P, dtype=F64))
    torch.testing.assert_close(post.to_dense(), expected, rtol=1e-9, atol=1e-10)


def test_negative_eigenvalues_get_flat_variance():
    H = _spd_hessian(5, negative=2.0)
    lam, U = torch.linalg.eigh(H)
    assert lam.min() < -0.5
    post = hessian_posterior(torch.zeros(P, dtype=F64), lam, U, c=1.0, eps=0.1, lambda_rest=0.0)
    neg = lam < 0
    torch.testing.assert_close(post.eigvar[neg], torch.full((int(neg.sum()),), 10.0, dtype=F64))


def test_precision_and_log_prob_use_woodbury_correctly():
    H = _spd_hessian(6)
    lam_all, U = torch.linalg.eigh(H)
    mu = torch.randn(P, generator=_gen(7), dtype=F64)
    post = hessian_posterior(mu, lam_all[-4:], U[:, -4:], c=0.2, eps=0.1, lambda_rest=0.05)
    S = post.to_dense()
    X = torch.randn(P, 3, generator=_gen(8), dtype=F64)
    torch.testing.assert_close(post.precision_matmat(X), torch.linalg.solve(S, X), rtol=1e-10, atol=1e-10)
    pts = torch.randn(5, P, generator=_gen(9), dtype=F64)
    ref = MultivariateNormal(post.mean, covariance_matrix=S).log_prob(pts)
    torch.testing.assert_close(lowrank_log_prob(post, pts), ref, rtol=1e-10, atol=1e-10)
    assert lowrank_log_prob(post, pts[0]).shape == ()


def test_hessian_posterior_orthonormalises_slightly_off_vectors():
    H = _spd_hessian(10)
    lam_all, U = torch.linalg.eigh(H)
    V = U[:, -3:].to(torch.float32).to(F64)  # ~1e-7 off orthonormal, like float32 Lanczos
    post = hessian_posterior(torch.zeros(P, dtype=F64), lam_all[-3:], V, c=1.0, eps=0.1, lambda_rest=0.0)
    gram = post.basis.T @ post.basis
    torch.testing.assert_close(gram, torch.eye(3, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(post.basis, U[:, -3:], rtol=0, atol=1e-6)


def test_sample_lowrank_covariance_and_determinism():
    H = _spd_hessian(11)
    lam_all, U = torch.linalg.eigh(H)
    mu = torch.randn(P, generator=_gen(12), dtype=F64)
    post = hessian_posterior(mu, lam_all[-5:], U[:, -5:], c=0.5, eps=0.2, lambda_rest=0.1)
    m = 40000
    X = sample_lowrank(post, _gen(13), m)
    assert X.shape == (m, P)
    # whitened samples must have identity covariance: check S^-1/2-whitened second moment
    S = post.to_dense()
    L = torch.linalg.cholesky(S)
    Z = torch.linalg.solve_triangular(L, (X - mu).T, upper=False).T
    emp = Z.T @ Z / m
    # entries of a Wishart/m estimate have sd ~ 1/sqrt(m) (diag sqrt(2/m)); allow 5 sd
    torch.testing.assert_close(emp, torch.eye(P, dtype=F64), rtol=0, atol=5 * math.sqrt(2 / m))
    torch.testing.assert_close(Z.mean(0), torch.zeros(P, dtype=F64), rtol=0, atol=5 / math.sqrt(m))
    torch.testing.assert_close(sample_lowrank(post, _gen(14), 3), sample_lowrank(post, _gen(14), 3))
    assert sample_lowrank(post, _gen(15)).shape == (P,)


def test_sample_diagonal_moments():
    mu = torch.linspace(-1, 1, P, dtype=F64)
    var = torch.linspace(0.1, 2.0, P, dtype=F64)
    m = 40000
    X = sample_diagonal(mu, var, _gen(16), m)
    z = (X - mu) / var.sqrt()
    torch.testing.assert_close(z.mean(0), torch.zeros(P, dtype=F64), rtol=0, atol=5 / math.sqrt(m))
    torch.testing.assert_close(z.var(0), torch.ones(P, dtype=F64), rtol=0, atol=5 * math.sqrt(2 / m))


def test_complement_curvature():
    lam = torch.tensor([5.0, 3.0], dtype=F64)
    assert complement_curvature(10.0, lam, 6) == pytest.approx(0.5)
    assert complement_curvature(7.0, lam, 6) == 0.0  # negative mean clipped
    assert complement_curvature(8.0, lam, 2) == 0.0


def _post(k: int = 2) -> LowRankGaussian:
    V = torch.linalg.qr(torch.randn(P, k, generator=_gen(20), dtype=F64)).Q
    return LowRankGaussian(torch.zeros(P, dtype=F64), V, torch.ones(k, dtype=F64), 0.5)


def _z(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=F64)


def _hp(lam=None, vecs=None, **kw):
    args = dict(c=1.0, eps=0.1, lambda_rest=0.0)
    args.update(kw)
    lam = torch.ones(1) if lam is None else lam
    vecs = torch.eye(P)[:, :1] if vecs is None else vecs
    return hessian_posterior(torch.zeros(P), lam, vecs, **args)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: kl_isotropic(_z(3), 0.0, _z(3), 1.0), r"var_q must be a finite float > 0"),
        (lambda: kl_isotropic(_z(3), 1.0, _z(4), 1.0), r"mean_p must have shape \(3,\)"),
        (lambda: kl_diagonal(_z(3), torch.tensor([1.0, -1.0, 1.0]), _z(3), 1.0), r"var_q must be finite and > 0"),
        (lambda: kl_diagonal(_z(3), torch.ones(2), _z(3), 1.0), r"var_q must be a scalar or have shape \(3,\)"),
        (lambda: kl_diagonal(_z(3, 1), 1.0, _z(3), 1.0), r"mean_q must be a 1-D tensor"),
        (lambda: kl_lowrank(_post(), _z(P), -1.0), r"var_p must be a finite float > 0"),
        (lambda: LowRankGaussian(_z(P), torch.ones(P, 2, dtype=F64), torch.ones(2, dtype=F64), 1.0), r"orthonormal"),
        (lambda: LowRankGaussian(_z(P), _z(P, 0), _z(0), 0.0), r"tau must be finite and > 0"),
        (lambda: LowRankGaussian(_z(P), _z(P, 1), torch.ones(2, dtype=F64), 1.0), r"eigvar must have shape \(1,\)"),
        (lambda: LowRankGaussian(_z(P), _z(P, 1), _z(1), 1.0), r"eigvar must be finite and > 0"),
        (lambda: LowRankGaussian(torch.zeros(P), _z(P, 0), _z(0), 1.0), r"mean must be float64"),
        (lambda: _hp(torch.ones(2), torch.ones(P, 2)), r"orthonormal to orth_tol"),
        (lambda: _hp(torch.ones(2), torch.eye(P)[:, :3]), r"eigvecs must have shape \(30, 2\)"),
        (lambda: _hp(c=0.0), r"c must be finite and > 0"),
        (lambda: _hp(eps=-1.0), r"eps must be finite and > 0"),
        (lambda: _hp(lambda_rest=math.nan), r"lambda_rest must be finite"),
        (lambda: _hp(torch.tensor([math.inf])), r"eigvals and eigvecs must be finite"),
        (lambda: complement_curvature(1.0, torch.ones(4), 3), r"k=4 eigenvalues for dim=3"),
        (lambda: complement_curvature(math.inf, torch.ones(1), 3), r"trace must be finite"),
        (lambda: sample_lowrank(_post(), _gen(0), 0), r"num_samples must be a positive int"),
        (lambda: sample_diagonal(_z(3), 0.0, _gen(0)), r"var must be finite and > 0"),
        (lambda: lowrank_log_prob(_post(), _z(P + 1)), r"x must have shape"),
    ],
)
def test_gaussian_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
