"""Curvature posterior, GGN diagonal, hold-out and quantised-Occam bounds against closed forms.

Ground truth: dense float64 GGNs by explicit Jacobians, dense precision matrices (inverse,
log-determinant, the Gaussian KL formula), the k = 0 binomial tail ``1 - delta^(1/n)``, and a
planted optimiser (a constant loss, whose Dziugaite-Roy objective is minimised by Q = P).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from landscape.bounds.curvature_posterior import (
    curvature_family,
    ggn_diagonal,
    holdout_bound,
    quantize_uniform,
    quantized_occam_bound,
)
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.optimize import optimize_diagonal_posterior
from landscape.bounds.pacbayes import PriorVarianceGrid
from landscape.bounds.posterior import family_kl

F64 = torch.float64


def _mlp() -> tuple[nn.Module, list[str], list[torch.Size]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    return net, names, shapes


def _logits_fn(net, names, shapes):
    sizes = [math.prod(s) for s in shapes]

    def f(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = {n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return functional_call(net, params, (x,))

    return f


def test_ggn_diagonal_equals_dense_ggn():
    net, names, shapes = _mlp()
    f = _logits_fn(net, names, shapes)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    x = torch.randn(13, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    G = torch.zeros(flat.numel(), flat.numel(), dtype=F64)
    for i in range(x.shape[0]):
        J = jacrev(lambda p, i=i: f(p, x[i : i + 1])[0])(flat)  # (C, P)
        p = torch.softmax(f(flat, x[i : i + 1])[0], -1)
        G += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    G /= x.shape[0]
    diag = ggn_diagonal(f, flat, x, batch_size=4)  # 13 = 4 + 4 + 4 + 1: uneven batches
    torch.testing.assert_close(diag, torch.diagonal(G), rtol=1e-10, atol=1e-12)


def _dense_precision(d, lam, V, eps):
    gain = (lam - ((V * V) * d[:, None]).sum(0)).clamp(min=0)
    return torch.diag(d + eps) + V @ torch.diag(gain) @ V.T


@pytest.mark.parametrize("k", [0, 1, 3])
def test_curvature_family_trace_logdet_and_draws_are_exact(k):
    g = torch.Generator().manual_seed(k)
    P = 9
    d = torch.rand(P, generator=g, dtype=F64) * 2.0
    V, _ = torch.linalg.qr(torch.randn(P, max(k, 1), generator=g, dtype=F64))
    V = V[:, :k]
    lam = torch.linspace(30.0, 10.0, k, dtype=F64)
    covs = curvature_family(d, lam, V, cs=[0.5, 2.0], epss=[0.1, 1.0], dtype=F64)
    assert [c.scale for c in covs] == [{"c": 0.5, "eps": 0.1}, {"c": 2.0, "eps": 0.1}, {"c": 0.5, "eps": 1.0}, {"c": 2.0, "eps": 1.0}]
    for cov in covs:
        c, eps = cov.scale["c"], cov.scale["eps"]
        A = _dense_precision(d, lam, V, eps)
        S = c * torch.linalg.inv(A)
        assert cov.cov_trace == pytest.approx(float(torch.trace(S)), rel=1e-10)
        assert cov.logdet == pytest.approx(float(torch.linalg.slogdet(S)[1]), rel=1e-10, abs=1e-10)
        M = cov.noise(torch.eye(P, dtype=F64))  # rows M e_i: the sampler's factor
        torch.testing.assert_close(M.T @ M, S, rtol=1e-10, atol=1e-12)
        if k:  # along each eigenvector the precision is max(lambda_i, v^T D v) + eps (here lambda_i)
            vdv = ((V * V) * d[:, None]).sum(0)
            assert bool((vdv < lam).all())
            torch.testing.assert_close(torch.diagonal(V.T @ A @ V), lam + eps, rtol=1e-10, atol=1e-10)


def test_curvature_family_kl_equals_dense_gaussian_kl():
    g = torch.Generator().manual_seed(5)
    P = 7
    d = torch.rand(P, generator=g, dtype=F64)
    V, _ = torch.linalg.qr(torch.randn(P, 2, generator=g, dtype=F64))
    lam = torch.tensor([8.0, 3.0], dtype=F64)
    (cov,) = curvature_family(d, lam, V, cs=[0.3], epss=[0.2], dtype=F64)
    mu, m0, var_p = torch.randn(P, generator=g, dtype=F64), torch.randn(P, generator=g, dtype=F64), 0.7
    S = 0.3 * torch.linalg.inv(_dense_precision(d, lam, V, 0.2))
    q = torch.distributions.MultivariateNormal(mu, S)
    p = torch.distributions.MultivariateNormal(m0, var_p * torch.eye(P, dtype=F64))
    kl = family_kl(cov, float(((mu - m0) ** 2).sum()), var_p, P)
    assert kl.kl == pytest.approx(float(torch.distributions.kl_divergence(q, p)), rel=1e-10)


def test_curvature_family_draws_do_not_edit_shared_normals():
    d = torch.ones(4, dtype=F64)
    (cov,) = curvature_family(d, torch.zeros(0, dtype=F64), torch.zeros(4, 0, dtype=F64), cs=[4.0], epss=[1.0], dtype=F64)
    z = torch.ones(2, 4, dtype=F64)
    out = cov.noise(z)
    torch.testing.assert_close(out, torch.full((2, 4), math.sqrt(2.0), dtype=F64))
    torch.testing.assert_close(z, torch.ones(2, 4, dtype=F64))


def test_curvature_family_rejects_bad_input():
    with pytest.raises(ValueError, match=r"eigvecs must have shape \(4, 2\)"):
        curvature_family(torch.ones(4), torch.ones(2), torch.ones(3, 2), [1.0], [1.0], F64)
    with pytest.raises(ValueError, match="c must be a non-empty list"):
        curvature_family(torch.ones(4), torch.ones(0), torch.ones(4, 0), [0.0], [1.0], F64)
    with pytest.raises(ValueError, match="must be finite"):
        curvature_family(torch.tensor([1.0, math.nan]), torch.ones(0), torch.ones(2, 0), [1.0], [1.0], F64)


def test_holdout_bound_matches_binomial_tail_at_zero_errors():
    # k = 0: kl^-1(0, ln(1/delta)/n) = 1 - delta^(1/n), the exact binomial tail inversion.
    b = holdout_bound(torch.zeros(500), 0.05)
    assert b.bound == pytest.approx(1 - 0.05 ** (1 / 500), rel=1e-9)
    w = torch.zeros(1000)
    w[:87] = 1
    b = holdout_bound(w, 0.035)
    assert (b.errors, b.n, b.empirical_risk) == (87, 1000, 0.087)
    assert b.bound == pytest.approx(float(kl_inv_upper(0.087, math.log(1 / 0.035) / 1000)), rel=1e-12)
    with pytest.raises(ValueError, match="0/1 indicators"):
        holdout_bound(torch.tensor([0.5]), 0.05)
    with pytest.raises(ValueError, match=r"delta must lie in \(0, 1\)"):
        holdout_bound(torch.zeros(3), 1.0)


def test_quantize_uniform_levels_and_error():
    flat = torch.tensor([0.0, 0.1, 0.6, 1.0, -2.0, 2.0, 0.3], dtype=F64)
    q1 = quantize_uniform(flat, [4, 3], 1)
    torch.testing.assert_close(q1, torch.tensor([0.0, 0.0, 1.0, 1.0, -2.0, 2.0, 2.0], dtype=F64))
    q8 = quantize_uniform(flat, [4, 3], 8)
    assert float((q8[:4] - flat[:4]).abs().max()) <= 0.5 / 255 + 1e-12
    assert float((q8[4:] - flat[4:]).abs().max()) <= 0.5 * 4 / 255 + 1e-12
    with pytest.raises(ValueError, match="sizes sum to 5"):
        quantize_uniform(flat, [2, 3], 4)


def test_quantized_occam_pays_bits_and_union():
    res = quantized_occam_bound({2: 0.3, 8: 0.05}, num_params=100, num_tensors=2, n=10_000, delta=0.05, extra_bits=10)
    nats8 = (8 * 100 + 128 + 10) * math.log(2)
    want8 = float(kl_inv_upper(0.05, (nats8 + math.log(2) + math.log(20)) / 10_000))
    assert res.union_cost == pytest.approx(math.log(2))
    assert [r["bits"] for r in res.per_bits] == [2, 8]
    assert res.per_bits[1]["bound"] == pytest.approx(want8, rel=1e-12)
    assert res.bound == min(r["bound"] for r in res.per_bits)
    # 43,000 parameters at 2 bits already exceed n = 4,000 nats: vacuous whatever the error.
    big = quantized_occam_bound({2: 0.0}, num_params=43_000, num_tensors=6, n=4000, delta=0.035)
    assert big.bound > 0.99


def test_optimiser_recovers_planted_optimum_of_constant_loss():
    # With a constant loss L the Dziugaite-Roy objective is L + sqrt((KL + 2 ln j + const) / 2n):
    # its minimum, KL = 0 at j = 1, is L + sqrt((ln(2 sqrt(n)/delta) + ln(pi^2/6)) / 2n), reached by
    # Q = P (mean at the prior mean, every variance equal to the prior's).
    grid = PriorVarianceGrid(1.0, 10.0)
    P, n, delta = 20, 1000, 0.05
    g = torch.Generator().manual_seed(0)
    w0 = torch.zeros(P, dtype=F64)
    init = 0.05 * torch.randn(P, generator=g, dtype=F64)
    res = optimize_diagonal_posterior(lambda w: (w * 0).sum() + 0.3, init, w0, n=n, delta=delta, grid=grid,
                                      generator=g, steps=3000, lr=0.02, init_var=0.05, init_prior_var=0.5)
    optimum = 0.3 + math.sqrt((math.log(2 * math.sqrt(n) / delta) + math.log(math.pi**2 / 6)) / (2 * n))
    assert float(res.objective[-1]) == pytest.approx(optimum, abs=1e-6)
    assert float(res.objective[0]) > optimum + 1e-3
    assert res.prior_index == 1
    assert float(res.mean.abs().max()) < 0.1 * float(init.abs().max())  # Adam's last steps: within 10% of the start
    torch.testing.assert_close(res.var, torch.full((P,), float(res.var.mean()), dtype=F64), rtol=1e-3, atol=0)
