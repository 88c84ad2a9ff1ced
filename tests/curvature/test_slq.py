"""Stochastic Lanczos quadrature: exact per-probe moments, density, moments and log-det."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.curvature.lanczos import lanczos_tridiagonal
from landscape.curvature.slq import (
    density_from_tridiagonals,
    logdet,
    logdet_from_tridiagonals,
    mass_below,
    quadrature_from_tridiagonals,
    slq_tridiagonals,
    spectral_density,
)
from landscape.curvature.trace import random_probes


def probe_moments_exact(A: torch.Tensor, V: torch.Tensor, j: int) -> torch.Tensor:
    """v^T A^j v / v^T v for each column of V."""
    return (V * (torch.linalg.matrix_power(A, j) @ V)).sum(0) / (V * V).sum(0)


@pytest.mark.parametrize("case", ["known_spectrum", "few_distinct"])
def test_quadrature_moments_exact_below_2m(case, request):
    q = request.getfixturevalue(case)
    A = q.matrix / q.eigenvalues.abs().max()  # ||A|| = 1, so moments are O(1)
    V = random_probes(q.dim, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = 6
    tri = lanczos_tridiagonal(A, V, m)
    quad = quadrature_from_tridiagonals(tri.alpha, tri.beta)
    torch.testing.assert_close(quad.weights.sum(1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-13)
    for j in range(2 * m):
        got = (quad.weights * quad.nodes**j).sum(1)
        torch.testing.assert_close(got, probe_moments_exact(A, V, j), rtol=1e-10, atol=1e-14)
    if case == "known_spectrum":  # degree 2m is beyond Gauss exactness: the test can tell
        got = (quad.weights * quad.nodes ** (2 * m)).sum(1)
        exact = probe_moments_exact(A, V, 2 * m)
        assert ((got - exact).abs() / exact.abs()).max() > 1e-8


def test_density_integrates_to_one(known_spectrum, counting):
    op = counting(known_spectrum.matrix)
    d = spectral_density(op, num_probes=6, num_steps=40, seed=1)
    assert d.nodes.shape == d.weights.shape == (6, 40)
    assert d.alphas.shape == (6, 40) and d.betas.shape == (6, 39)
    assert op.count == d.num_matvecs == 240
    assert (d.density >= 0).all()
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-6)
    # Default broadening: 1% of the Ritz-node spread (~70 here).
    assert d.sigma == pytest.approx(0.01 * float(d.nodes.max() - d.nodes.min()))
    # The spike at 50 carries ~1/300 of the mass near 50.
    near = (d.grid > 45) & (d.grid < 55)
    mass = float(torch.trapezoid(d.density[near], d.grid[near]))
    assert 0.0 < mass < 0.05


def test_moments_unbiased_over_seeds(random_symmetric):
    # A spectrum without a dominant spike: the per-run means are close to Gaussian, so the
    # 3-standard-error rule is reliable with 100 runs.
    q = random_symmetric
    A = q.matrix
    exact = torch.stack([q.eigenvalues.pow(j).mean() for j in range(1, 5)])
    runs = [spectral_density(A, num_probes=4, num_steps=12, seed=s) for s in range(100)]
    moments = torch.stack([r.moments for r in runs])  # (100, 4)
    se = moments.std(0) / math.sqrt(len(runs))
    assert ((moments.mean(0) - exact).abs() < 3 * se).all()
    # Reported per-run stderr matches the spread across runs.
    reported = torch.stack([r.moments_stderr for r in runs]).pow(2).mean(0).sqrt()
    ratio = reported / moments.std(0)
    assert ((ratio > 0.7) & (ratio < 1.4)).all()


def test_logdet_within_stated_stderr(psd_spectrum):
    q = psd_spectrum
    eps = 1e-2
    exact = float(torch.log(q.eigenvalues + eps).sum())
    runs = [logdet(q.matrix, eps=eps, seed=s, num_probes=8, num_steps=25) for s in range(100)]
    values = torch.tensor([r.value for r in runs], dtype=torch.float64)
    stderrs = torch.tensor([r.stderr for r in runs], dtype=torch.float64)
    assert abs(float(values.mean()) - exact) < 3 * float(values.std()) / math.sqrt(len(runs))
    covered = ((values - exact).abs() <= 3 * stderrs).double().mean()
    assert covered >= 0.9
    assert all(r.clamped_mass == 0.0 and r.num_matvecs == 200 for r in runs)


def test_logdet_exact_with_identity_probes(psd_spectrum, counting):
    q = psd_spectrum
    eps = 1e-3
    op = counting(q.matrix)
    est = logdet(op, eps=eps, probes=torch.eye(q.dim, dtype=torch.float64), num_steps=q.dim)
    assert est.value == pytest.approx(float(torch.log(q.eigenvalues + eps).sum()), rel=1e-10)
    assert op.count == est.num_matvecs == q.dim * q.dim


@pytest.fixture(scope="module")
def small_indefinite():
    lam = torch.tensor([-3.0, -0.5, -1e-4, 5e-4, 2e-4, 0.3, 1.0, 4.0] * 5, dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T), lam


@pytest.mark.parametrize("floor", [None, 1e-6])
def test_logdet_clamping(small_indefinite, floor):
    A, lam = small_indefinite
    eps = 1e-3
    est = logdet(A, eps=eps, floor=floor, probes=torch.eye(40, dtype=torch.float64), num_steps=40)
    f = eps if floor is None else floor
    expected = float(torch.log((lam + eps).clamp_min(f)).sum())
    assert est.value == pytest.approx(expected, rel=1e-9)
    assert est.floor == f
    # floor = eps clamps every negative eigenvalue (3 of 8 values); floor = 1e-6 only those below -eps.
    expected_mass = float(((lam + eps) < f).double().mean())
    assert est.clamped_mass == pytest.approx(expected_mass, abs=1e-9)


def test_rebuild_from_saved_tridiagonals(known_spectrum, tmp_path):
    A = known_spectrum.matrix
    d = spectral_density(A, num_probes=4, num_steps=20, seed=3)
    path = tmp_path / "krylov.pt"
    torch.save({"alphas": d.alphas, "betas": d.betas}, path)
    saved = torch.load(path)
    again = density_from_tridiagonals(saved["alphas"], saved["betas"], dim=300, sigma=d.sigma, grid=d.grid)
    torch.testing.assert_close(again.nodes, d.nodes, rtol=0, atol=0)
    torch.testing.assert_close(again.density, d.density, rtol=0, atol=0)
    torch.testing.assert_close(again.moments, d.moments, rtol=0, atol=0)
    shifted = A + 25.0 * torch.eye(300, dtype=torch.float64)  # make it positive definite
    direct = logdet(shifted, eps=0.1, seed=3, num_probes=4, num_steps=20)
    alphas, betas, mv = slq_tridiagonals(shifted, 4, 20, 3)
    cached = logdet_from_tridiagonals(alphas, betas, 300, 0.1, num_matvecs=mv)
    assert cached == direct


def test_single_probe_and_one_dimensional_tridiagonal():
    quad = quadrature_from_tridiagonals(torch.tensor([2.0, 1.0]), torch.tensor([0.5]))
    assert quad.nodes.shape == (1, 2)
    T = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(T)
    torch.testing.assert_close(quad.nodes[0], evals)
    torch.testing.assert_close(quad.weights[0], evecs[0] ** 2)
    d = density_from_tridiagonals(torch.tensor([2.0, 1.0]), torch.tensor([0.5]), dim=5)
    assert torch.isnan(d.moments_stderr).all() and d.num_probes == 1


def test_num_steps_capped_at_dimension(counting):
    A = torch.diag(torch.linspace(-1.0, 2.0, 12, dtype=torch.float64))
    op = counting(A)
    d = spectral_density(op, num_probes=3, num_steps=100, seed=0)
    assert d.num_steps == 12 and op.count == d.num_matvecs == 36
    # With m = P every probe's quadrature is its exact spectral measure: weighted nodes are eigenvalues.
    lam = torch.linspace(-1.0, 2.0, 12, dtype=torch.float64)
    heavy = d.nodes[d.weights > 1e-12]
    assert (heavy.unsqueeze(1) - lam).abs().min(1).values.max() < 1e-10


def test_deterministic_and_batched(known_spectrum):
    a = spectral_density(known_spectrum.matrix, num_probes=5, num_steps=15, seed=2)
    b = spectral_density(known_spectrum.matrix, num_probes=5, num_steps=15, seed=2, probe_batch_size=2)
    torch.testing.assert_close(a.alphas, b.alphas, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.density, b.density, rtol=0, atol=1e-12)
    c = spectral_density(known_spectrum.matrix, num_probes=5, num_steps=15, seed=2)
    assert torch.equal(a.nodes, c.nodes)
    assert set(a.to_dict()) >= {"nodes", "weights", "grid", "density", "moments", "moments_stderr", "sigma"}


@pytest.mark.parametrize("batch", [1, 3])
def test_probe_batches_run_the_same_probes(known_spectrum, counting, batch):
    """Each group draws only its own probes, the same as one draw of all; the Lanczos bases of
    at most ``batch`` probes are held (the operator sees blocks of that width). Tolerance
    1e-10 absolute on a spectrum of norm 50 (products of other widths round differently)."""
    A = known_spectrum.matrix
    whole = slq_tridiagonals(A, num_probes=5, num_steps=15, seed=2)
    op = counting(A)
    part = slq_tridiagonals(op, num_probes=5, num_steps=15, seed=2, probe_batch_size=batch, basis_device="cpu")
    assert op.widest == batch and part[2] == whole[2] == 75
    torch.testing.assert_close(part[0], whole[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(part[1], whole[1], rtol=0, atol=1e-10)
    ld_whole, ld_part = logdet(A, num_probes=5, num_steps=15, seed=2), logdet(A, num_probes=5, num_steps=15, seed=2, probe_batch_size=batch)
    assert ld_part.value == pytest.approx(ld_whole.value, rel=1e-12)
    probes = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    given = slq_tridiagonals(A, num_steps=10, probes=probes)
    torch.testing.assert_close(slq_tridiagonals(A, num_steps=10, probes=probes, probe_batch_size=batch)[0], given[0], rtol=0, atol=1e-10)


def test_zero_dimension():
    empty = torch.zeros(0, 0, dtype=torch.float64)
    est = logdet(empty, eps=1e-3)
    assert (est.value, est.stderr, est.num_matvecs) == (0.0, 0.0, 0)
    with pytest.raises(ValueError, match="dimension 0"):
        spectral_density(empty)


def test_errors(known_spectrum):
    A = known_spectrum.matrix
    with pytest.raises(ValueError, match="probe must be one of"):
        spectral_density(A, probe="cauchy")
    with pytest.raises(ValueError, match="num_probes must be an int >= 1"):
        spectral_density(A, num_probes=0)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        spectral_density(A, num_steps=0)
    with pytest.raises(ValueError, match="probe_batch_size must be an int >= 1"):
        spectral_density(A, probe_batch_size=0)
    with pytest.raises(ValueError, match=r"probes must have shape \(300, n\)"):
        spectral_density(A, probes=torch.ones(5, 2))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        spectral_density(A, num_probes=2, num_steps=5, sigma=-1.0)
    with pytest.raises(ValueError, match="num_grid must be an int >= 2"):
        spectral_density(A, num_probes=2, num_steps=5, num_grid=1)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        logdet(A, eps=-1.0)
    with pytest.raises(ValueError, match="eps = 0 needs an explicit floor"):
        logdet(A, eps=0.0)
    with pytest.raises(ValueError, match="floor must be a finite number > 0"):
        logdet(A, eps=1e-3, floor=0.0)
    with pytest.raises(ValueError, match=r"betas must have shape \(2, 3\)"):
        quadrature_from_tridiagonals(torch.ones(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="dim must be an int >= 1"):
        density_from_tridiagonals(torch.ones(4), torch.ones(3), dim=0)


def test_curvature_part_is_sum_of_log1p_over_eps(psd_spectrum, small_indefinite):
    """With identity probes and P steps SLQ is exact: curvature_part = sum ln(1 + max(lambda, 0) / eps)."""
    for A, lam in ((psd_spectrum.matrix, psd_spectrum.eigenvalues), small_indefinite):
        P, eps = A.shape[0], 0.05
        est = logdet(A, eps=eps, probes=torch.eye(P, dtype=torch.float64), num_steps=P)
        exact = float(torch.log1p(lam.clamp_min(0) / eps).sum())
        assert est.curvature_part == pytest.approx(exact, rel=1e-9, abs=1e-9)
        assert est.curvature_part == pytest.approx(est.value - P * math.log(eps), rel=1e-12)
    assert math.isnan(logdet(psd_spectrum.matrix, eps=0.0, floor=1e-3, num_probes=1, num_steps=3).curvature_part)


def _spectrum_with_negatives() -> tuple[torch.Tensor, torch.Tensor]:
    """Q diag(lambda) Q^T (P = 60) with eigenvalues below -eps, in (-eps, 0), and positive ones (eps = 0.1)."""
    g = torch.Generator().manual_seed(11)
    special = torch.tensor([-2.0, -0.5, -0.15, -0.05, -0.01, 1e-3, 0.05, 0.5, 3.0, 10.0], dtype=torch.float64)
    rest = torch.empty(50, dtype=torch.float64).uniform_(-0.3, 2.0, generator=g)
    lam = torch.cat([special, rest])
    Q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T), lam


def test_curvature_part_is_sum_log1p_with_negatives_counted_as_zero():
    A, lam = _spectrum_with_negatives()
    eps, P = 0.1, lam.numel()
    est = logdet(A, eps=eps, probes=torch.eye(P, dtype=torch.float64), num_steps=P)
    # ln(1 + max(lambda, 0) / eps): every lambda <= 0 adds 0, those <= -eps (-2, -0.5, -0.15) as well as those in (-eps, 0)
    expected = float(torch.log1p(lam.clamp_min(0) / eps).sum())
    assert est.curvature_part == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert est.curvature_part == pytest.approx(est.value - P * math.log(eps), rel=1e-12)
    assert est.clamped_mass == pytest.approx(float((lam < 0).double().mean()), abs=1e-9)
    # the raw log-det is dominated by P ln eps; the curvature part is what the spectrum adds
    assert abs(P * math.log(eps)) > abs(expected)


def test_mass_below_exact_with_identity_probes_and_unbiased_with_random_ones():
    A, lam = _spectrum_with_negatives()
    P = lam.numel()
    alphas, betas, _ = slq_tridiagonals(A, probes=torch.eye(P, dtype=torch.float64), num_steps=P)
    for t in (0.0, -0.1, -1.0):
        m = mass_below(alphas, betas, t)
        assert m.value == pytest.approx(float((lam < t).double().mean()), abs=1e-9) and m.threshold == t
    # random Rademacher probes with m = P steps: each probe's Gauss rule is exact, v^T 1[A < 0] v / P is unbiased
    draws = torch.tensor([mass_below(*slq_tridiagonals(A, num_probes=4, num_steps=P, seed=s)[:2], 0.0).value for s in range(60)])
    truth = float((lam < 0).double().mean())
    assert abs(float(draws.mean()) - truth) <= 4 * float(draws.std()) / math.sqrt(60)
    one = mass_below(*slq_tridiagonals(A, num_probes=1, num_steps=P, seed=0)[:2])
    assert math.isnan(one.stderr) and one.num_probes == 1
    with pytest.raises(ValueError, match=r"threshold must be a finite number, got nan"):
        mass_below(alphas, betas, float("nan"))


def test_without_reorthogonalisation_the_quadrature_keeps_its_accuracy(known_spectrum):
    """The three-term recurrence (3 vectors held instead of m) run far past the loss of
    orthogonality (the spike at 50 converges within a few steps, so T grows ghost copies of it):
    the quadrature's moments and its Wasserstein-1 distance to the exact spectral measure stay
    those of the reorthogonalised run (Greenbaum 1989; Chen, Trogdon & Ubaru 2021)."""
    import numpy as np

    from landscape.curvature.dense_check import wasserstein1

    q = known_spectrum
    A = q.matrix / q.eigenvalues.abs().max()
    m, n = 120, 4
    full = slq_tridiagonals(A, n, m, seed=3)
    plain = slq_tridiagonals(A, n, m, seed=3, reorthogonalize=False)
    assert plain[2] == full[2] == n * m
    T = torch.diag(plain[0][0]) + torch.diag(plain[1][0], 1) + torch.diag(plain[1][0], -1)
    ritz = torch.linalg.eigvalsh(T)
    assert int((ritz - ritz.max()).abs().lt(1e-8).sum()) >= 2  # a ghost: orthogonality was lost
    qf, qp = quadrature_from_tridiagonals(*full[:2]), quadrature_from_tridiagonals(*plain[:2])
    for j in range(1, 21):  # moments of degree < 2m are the probes' v^T A^j v in exact arithmetic
        torch.testing.assert_close((qp.weights * qp.nodes**j).sum(1), (qf.weights * qf.nodes**j).sum(1), rtol=1e-9, atol=1e-12)
    exact = (q.eigenvalues / q.eigenvalues.abs().max()).numpy()
    w_full = wasserstein1(qf.nodes.numpy().ravel(), qf.weights.numpy().ravel() / n, exact)
    w_plain = wasserstein1(qp.nodes.numpy().ravel(), qp.weights.numpy().ravel() / n, exact)
    assert w_plain <= 1.05 * w_full + 1e-6, (w_plain, w_full)
    density = spectral_density(A, num_probes=n, num_steps=m, seed=3, reorthogonalize=False)
    reference = spectral_density(A, num_probes=n, num_steps=m, seed=3)
    assert np.allclose(density.moments.numpy(), reference.moments.numpy(), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="return_basis needs reorthogonalize=True"):
        lanczos_tridiagonal(A, torch.ones(q.dim, dtype=torch.float64), 5, return_basis=True, reorthogonalize=False)


def test_without_reorthogonalisation_an_invariant_krylov_space_keeps_the_quadrature_exact(few_distinct):
    """Three distinct eigenvalues: the Krylov space is invariant after 3 steps, so the third
    coupling is rounding (how small depends on the machine's BLAS, so it is bounded, not
    compared with 0), and the start vector's quadrature is exact."""
    q = few_distinct
    v = torch.ones(q.dim, dtype=torch.float64)
    tri = lanczos_tridiagonal(q.matrix, v, 8, reorthogonalize=False)
    assert float(tri.beta[2].abs()) <= 1e3 * torch.finfo(torch.float64).eps * 5.0 * math.sqrt(q.dim)
    assert float(tri.beta[:2].abs().min()) > 0.1
    quad = quadrature_from_tridiagonals(tri.alpha, tri.beta)
    for j in range(6):
        torch.testing.assert_close((quad.weights * quad.nodes**j).sum(), probe_moments_exact(q.matrix, v[:, None], j)[0],
                                   rtol=1e-10, atol=1e-12)


def test_without_reorthogonalisation_an_exact_breakdown_restarts_from_a_fresh_orthogonal_vector():
    """diag(2, 2, 1, 1) from (1, 1, 1, 1): every number of the first two steps is dyadic, so
    the second coupling is exactly 0 on any machine; the recurrence restarts from a fresh
    vector orthogonal to the first two (span{e1 - e2, e3 - e4}), which breaks down again, and
    every node is one of the two eigenvalues."""
    A = torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    tri = lanczos_tridiagonal(A, torch.ones(4, dtype=torch.float64), 4, reorthogonalize=False)
    torch.testing.assert_close(tri.alpha[:2], torch.tensor([1.5, 1.5], dtype=torch.float64), rtol=0, atol=0)
    assert float(tri.beta[0]) == 0.5 and float(tri.beta[1]) == 0.0  # the restart: the blocks decouple
    assert float(tri.beta[2].abs()) > 1e-3  # the fresh vector has parts in both eigenspaces
    nodes = torch.linalg.eigvalsh(torch.diag(tri.alpha) + torch.diag(tri.beta, 1) + torch.diag(tri.beta, -1))
    torch.testing.assert_close(nodes, torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64), rtol=0, atol=1e-12)
    quad = quadrature_from_tridiagonals(tri.alpha[:2], tri.beta[:1])  # the start vector's block: half at 1, half at 2
    torch.testing.assert_close(quad.nodes.ravel().sort().values, torch.tensor([1.0, 2.0], dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(quad.weights.ravel(), torch.tensor([0.5, 0.5], dtype=torch.float64), rtol=0, atol=1e-14)
