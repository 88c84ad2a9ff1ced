"""Monte-Carlo posterior risk, the sample-convergence bound and its composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from landscape.bounds.gaussians import kl_isotropic, sample_diagonal
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.mc import (
    grid_mc_pac_bayes_bound,
    mc_pac_bayes_bound,
    monte_carlo_errors,
    sample_convergence_bound,
)
from landscape.bounds.pacbayes import pac_bayes_kl_bound

F64 = torch.float64


def test_sample_convergence_closed_form():
    errs = np.array([0.1, 0.2, 0.15, 0.05, 0.1])
    r = sample_convergence_bound(errs, 0.01)
    assert r.mean_error == pytest.approx(0.12)
    assert r.budget == pytest.approx(math.log(2 / 0.01) / 5, rel=1e-15)
    assert r.upper == pytest.approx(kl_inv_upper(0.12, math.log(200) / 5), rel=1e-15)
    assert r.stderr == pytest.approx(np.std(errs, ddof=1) / math.sqrt(5))
    g = sample_convergence_bound(errs, 0.01, num_candidates=10)
    assert g.budget == pytest.approx(r.budget + math.log(10) / 5, rel=1e-14)
    assert g.upper > r.upper


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
@pytest.mark.parametrize("kind", ["bernoulli", "beta"])
def test_sample_convergence_coverage(p, kind):
    # Over many repeats, emp(Q) <= upper in >= 1 - delta of them (within 3 standard errors).
    rng = np.random.default_rng(int(p * 1000) + (kind == "beta"))
    m, delta, reps = 100, 0.1, 3000
    if kind == "bernoulli":
        means = rng.binomial(m, p, size=reps) / m
    else:  # [0, 1]-valued errors with mean p (Maurer: Bernoulli is the worst case)
        a = 2.0
        means = rng.beta(a, a * (1 - p) / p, size=(reps, m)).mean(axis=1)
    upper = kl_inv_upper(means, math.log(2 / delta) / m)
    fail = float(np.mean(p > upper))
    se = math.sqrt(delta * (1 - delta) / reps)
    assert fail <= delta + 3 * se
    # power check: the plain mean (no confidence term) fails far more often
    assert float(np.mean(p > means)) > delta + 3 * se


def test_sample_convergence_matches_reference_for_tensor_input():
    errs = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float32)
    r = sample_convergence_bound(errs, 0.05)
    assert r.mean_error == pytest.approx(0.5)
    assert r.num_samples == 3


def test_mc_pac_bayes_composition():
    errs = np.full(400, 0.08)
    r = mc_pac_bayes_bound(errs, 50.0, 10000, 0.025, mc_delta=0.01)
    mc_upper = kl_inv_upper(0.08, math.log(2 / 0.01) / 400)
    expected = pac_bayes_kl_bound(mc_upper, 50.0, 10000, 0.025).bound
    assert r.sample.upper == pytest.approx(mc_upper, rel=1e-15)
    assert r.bound == pytest.approx(expected, rel=1e-15)
    assert r.delta_total == pytest.approx(0.035)
    assert r.pac_bayes.empirical_risk == pytest.approx(mc_upper)
    # paying for Monte Carlo can only loosen the bound vs the exact empirical risk
    assert r.bound > pac_bayes_kl_bound(0.08, 50.0, 10000, 0.025).bound
    # more samples tighten it
    assert mc_pac_bayes_bound(np.full(4000, 0.08), 50.0, 10000, 0.025, mc_delta=0.01).bound < r.bound
    assert set(r.to_dict()) == {"bound", "delta_total", "pac_bayes", "sample"}


def test_grid_mc_bound_pays_both_grids():
    rng = np.random.default_rng(3)
    J, C, m = 2, 3, 50
    errs = rng.uniform(0.0, 0.3, size=(J, C, m))
    kls = np.array([[10.0, 20.0, 5.0], [15.0, 2.0, 30.0]])
    res = grid_mc_pac_bayes_bound(errs, kls, 2000, 0.025, mc_delta=0.01)
    def cell(j: int, i: int) -> float:
        r = mc_pac_bayes_bound(
            errs[j, i], kls[j, i], 2000, 0.025, mc_delta=0.01, union_cost=math.log(J), num_candidates=J * C
        )
        return r.bound

    manual = np.array([[cell(j, i) for i in range(C)] for j in range(J)])
    np.testing.assert_allclose(res.bounds, manual, rtol=1e-14)
    assert res.best.bound == pytest.approx(manual.min())
    assert res.best.sample.num_candidates == J * C
    assert res.best.pac_bayes.union_cost == pytest.approx(math.log(J))
    j, i = res.prior_index, res.posterior_index
    assert mc_pac_bayes_bound(errs[j, i], kls[j, i], 2000, 0.025, mc_delta=0.01).bound < res.best.bound


def test_monte_carlo_errors_deterministic_and_gathers_tensors():
    mean = torch.zeros(4, dtype=torch.float64)

    def sampler(g: torch.Generator) -> torch.Tensor:
        return sample_diagonal(mean, 1.0, g)

    def err_float(theta: torch.Tensor) -> float:
        return float((theta > 0).double().mean())

    def err_tensor(theta: torch.Tensor) -> torch.Tensor:
        return (theta > 0).double().mean()

    a = monte_carlo_errors(err_float, sampler, 200, torch.Generator().manual_seed(5))
    b = monte_carlo_errors(err_tensor, sampler, 200, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (200,)
    # each coordinate positive w.p. 1/2: mean over 800 coin flips
    assert abs(a.mean() - 0.5) < 3 * 0.5 / math.sqrt(800)


def test_pac_bayes_mc_end_to_end_coverage_on_threshold_classifiers():
    # x ~ U(0,1), y = 1[x > 0.5] flipped w.p. eta; h_t(x) = 1[x > t], true risk
    # R(t) = eta + (1 - 2 eta) |t - 0.5|. Posterior N(t_hat, s^2) around the ERM threshold,
    # prior N(0.3, 0.5^2) fixed in advance. Check risk(Q) <= bound in >= 1 - delta - delta'.
    rng = np.random.default_rng(7)
    eta, n, s, reps, m = 0.1, 200, 0.05, 200, 100
    delta, mc_delta = 0.05, 0.05
    mu_p, var_p = 0.3, 0.25
    fails = plain_fails = 0
    for _ in range(reps):
        x = rng.uniform(0, 1, n)
        y = (x > 0.5) ^ (rng.uniform(0, 1, n) < eta)
        grid = np.linspace(0, 1, 201)
        emp_grid = ((x[None, :] > grid[:, None]) != y[None, :]).mean(axis=1)
        t_hat = float(grid[np.argmin(emp_grid)])
        thetas = rng.normal(t_hat, s, m)
        errs = ((x[None, :] > thetas[:, None]) != y[None, :]).mean(axis=1)
        kl = kl_isotropic(torch.tensor([t_hat], dtype=F64), s**2, torch.tensor([mu_p], dtype=F64), var_p).kl
        bound = mc_pac_bayes_bound(errs, kl, n, delta, mc_delta=mc_delta).bound
        mu = t_hat - 0.5  # E|N(mu, s^2)|, the Gibbs risk in closed form
        e_abs = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * norm.cdf(-mu / s))
        risk = eta + (1 - 2 * eta) * e_abs
        fails += risk > bound
        plain_fails += risk > errs.mean()
    total = delta + mc_delta
    se = math.sqrt(total * (1 - total) / reps)
    assert fails / reps <= total + 3 * se
    assert plain_fails / reps > total + 3 * se  # the check has power: raw MC means fail


def _grid(errs, kls, **kw):
    return grid_mc_pac_bayes_bound(errs, kls, 10, 0.05, mc_delta=0.01, **kw)


def _mce(error_of, m):
    return monte_carlo_errors(error_of, lambda g: torch.zeros(2), m, torch.Generator())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sample_convergence_bound([], 0.1), r"at least one"),
        (lambda: sample_convergence_bound([0.1, 1.2], 0.1), r"errors must lie in \[0, 1\]"),
        (lambda: sample_convergence_bound([0.1], 0.0), r"delta must lie in \(0, 1\)"),
        (lambda: sample_convergence_bound([0.1], 0.1, num_candidates=0), r"num_candidates must be an integer"),
        (lambda: mc_pac_bayes_bound([0.1], 1.0, 10, 0.05, mc_delta=1.5), r"delta must lie in \(0, 1\)"),
        (lambda: _grid(np.zeros((2, 2)), np.zeros((2, 2))), r"errors must be \(J, C, m\)"),
        (lambda: _grid(np.zeros((2, 1, 3)), np.zeros((2, 1)), union_costs=[0.0, 0.0]), r"sum to .* > 1"),
        (lambda: _grid(np.zeros((2, 1, 3)), np.zeros((2, 1)), union_costs=[1.0]), r"union_costs must be \(2,\)"),
        (lambda: _mce(lambda t: 0.5, 0), r"num_samples must be a positive int"),
        (lambda: _mce(lambda t: 2.0, 3), r"errors must lie in \[0, 1\]"),
    ],
)
def test_mc_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_paired_draws_bound_formula_and_edge_values():
    from landscape.bounds.mc import paired_draws_bound

    wrong = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0] * 50, dtype=float)
    r = paired_draws_bound(wrong, 0.01)
    assert r.num_samples == 500 and r.num_candidates == 1 and r.mean_error == pytest.approx(0.2)
    assert r.budget == pytest.approx(math.log(100) / 500, rel=1e-15)  # one-sided: ln(1/delta')
    assert r.upper == pytest.approx(kl_inv_upper(0.2, math.log(100) / 500), rel=1e-15)
    assert r.stderr == pytest.approx(math.sqrt(0.2 * 0.8 / 500))
    # No error seen: the upper value is the exact Binomial(N, p) zero-count bound 1 - delta'^(1/N).
    zero = paired_draws_bound(np.zeros(200), 0.05)
    assert zero.upper == pytest.approx(1 - 0.05 ** (1 / 200), rel=1e-12)
    with pytest.raises(ValueError, match="0/1 indicators"):
        paired_draws_bound(np.array([0.0, 0.5]), 0.01)
    with pytest.raises(ValueError, match="delta must lie"):
        paired_draws_bound(np.array([0.0, 1.0]), 1.0)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.4])
def test_paired_draws_bound_covers_at_its_confidence(p):
    """Over 4000 Binomial experiments the upper value misses p at most delta' of the time."""
    from landscape.bounds.mc import paired_draws_bound

    rng = np.random.default_rng(int(p * 1000))
    delta, N, reps = 0.1, 300, 4000
    counts = rng.binomial(N, p, size=reps)
    upper = {}
    for c in np.unique(counts):  # the upper value depends on the count only
        wrong = np.zeros(N)
        wrong[:c] = 1.0
        upper[c] = paired_draws_bound(wrong, delta).upper
    rate = float(np.mean([upper[c] < p for c in counts]))
    assert rate <= delta + 3 * math.sqrt(delta * (1 - delta) / reps)
    assert rate > 0.0 or p < 0.05  # not vacuous: it does fail sometimes when p is not tiny
