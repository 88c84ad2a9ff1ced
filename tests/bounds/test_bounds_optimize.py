"""Dziugaite-Roy posterior optimisation on a tiny logistic-regression problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape.bounds.gaussians import kl_diagonal, sample_diagonal
from landscape.bounds.mc import mc_pac_bayes_bound, monte_carlo_errors
from landscape.bounds.optimize import optimize_diagonal_posterior
from landscape.bounds.pacbayes import PriorVarianceGrid

F64 = torch.float64
D, N = 5, 400


def _data(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    w_true = torch.tensor([2.0, -1.0, 0.5, 0.0, 1.0], dtype=F64)
    X = torch.randn(n, D, generator=g, dtype=F64)
    logits = X @ w_true + 0.3
    y = (torch.rand(n, generator=g, dtype=F64) < torch.sigmoid(3 * logits)).to(F64)
    return torch.cat([X, torch.ones(n, 1, dtype=F64)], 1), y


@pytest.fixture(scope="module")
def problem():
    X, y = _data(0, N)
    w = torch.zeros(D + 1, dtype=F64)
    for _ in range(25):  # Newton's method on the mean logistic loss (+ tiny ridge)
        p = torch.sigmoid(X @ w)
        grad = X.T @ (p - y) / N + 1e-4 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X / N + 1e-4 * torch.eye(D + 1, dtype=F64)
        w = w - torch.linalg.solve(hess, grad)
    assert float(grad.norm()) < 1e-8
    return X, y, w


def _surrogate(X, y):
    def loss(theta: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(X @ theta, y) / math.log(2)

    return loss


def _error(X, y):
    def err(theta: torch.Tensor) -> torch.Tensor:
        return ((X @ theta > 0).to(F64) != y).to(F64).mean()

    return err


def _rigorous_bound(X, y, mean, var, prior_var, union_cost, seed):
    prior_mean = torch.zeros_like(mean)
    kl = kl_diagonal(mean, var, prior_mean, prior_var).kl
    gen = torch.Generator().manual_seed(seed)
    errs = monte_carlo_errors(_error(X, y), lambda g: sample_diagonal(mean, var, g), 500, gen)
    return mc_pac_bayes_bound(errs, kl, X.shape[0], 0.025, mc_delta=0.01, union_cost=union_cost, grid_size=None)


def test_optimisation_lowers_the_rigorous_bound(problem):
    X, y, w = problem
    grid = PriorVarianceGrid(c=10.0, b=20)
    init_var = 1e-4
    res = optimize_diagonal_posterior(
        _surrogate(X, y),
        w,
        torch.zeros_like(w),
        n=N,
        delta=0.025,
        grid=grid,
        generator=torch.Generator().manual_seed(1),
        steps=400,
        lr=0.05,
        init_var=init_var,
    )
    assert res.mean.shape == w.shape and res.var.shape == w.shape
    assert torch.all(res.var > 0)
    # The objective went down (averaged over the last/first 20 noisy steps).
    assert res.objective[-20:].mean() < res.objective[:20].mean()
    # Rigorous bound (0-1 error, MC, kl inversions, grid cost) before vs after.
    j0 = 1
    before = _rigorous_bound(X, y, w, torch.full_like(w, init_var), grid.variance(j0), grid.union_cost(j0), 2)
    after = _rigorous_bound(X, y, res.mean, res.var, res.prior_var, grid.union_cost(res.prior_index), 2)
    assert after.bound < before.bound
    assert res.prior_var == pytest.approx(grid.variance(res.prior_index))
    # Sanity: the bound is above the test error of the Gibbs classifier on fresh data.
    Xt, yt = _data(99, 20000)
    gen = torch.Generator().manual_seed(3)
    errs = monte_carlo_errors(_error(Xt, yt), lambda g: sample_diagonal(res.mean, res.var, g), 200, gen)
    assert float(np.mean(errs)) < after.bound
    # The caller's tensor was not modified.
    assert not w.requires_grad


def test_optimisation_is_deterministic_for_a_seed(problem):
    X, y, w = problem
    grid = PriorVarianceGrid(c=10.0, b=20)
    kwargs = dict(n=N, delta=0.025, grid=grid, steps=30, lr=0.05)
    a, b = (
        optimize_diagonal_posterior(
            _surrogate(X, y), w, torch.zeros_like(w), generator=torch.Generator().manual_seed(4), **kwargs
        )
        for _ in range(2)
    )
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert set(a.to_dict()) >= {"prior_index", "prior_var", "objective_last"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), r"steps must be a positive int"),
        (dict(lr=0.0), r"lr must be finite and > 0"),
        (dict(init_var=-1.0), r"init_var must be finite and > 0"),
        (dict(init_prior_var=0.0), r"init_prior_var must be finite and > 0"),
        (dict(samples_per_step=0), r"samples_per_step must be a positive int"),
    ],
)
def test_optimize_errors(kwargs, match):
    w = torch.zeros(3, dtype=F64)
    base = dict(n=10, delta=0.05, grid=PriorVarianceGrid(c=1.0, b=5), generator=torch.Generator())
    with pytest.raises(ValueError, match=match):
        optimize_diagonal_posterior(lambda t: t.sum(), w, w, **{**base, **kwargs})


def test_optimize_shape_error():
    with pytest.raises(ValueError, match=r"same shape"):
        optimize_diagonal_posterior(
            lambda t: t.sum(),
            torch.zeros(3),
            torch.zeros(4),
            n=10,
            delta=0.05,
            grid=PriorVarianceGrid(c=1.0, b=5),
            generator=torch.Generator(),
        )
