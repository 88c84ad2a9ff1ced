"""PAC-Bayes-kl and McAllester bounds: closed forms, monotonicity, grid union costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape.bounds.kl import binary_kl
from landscape.bounds.pacbayes import (
    PriorVarianceGrid,
    confidence_term,
    finite_grid_cost,
    grid_pac_bayes_bound,
    mcallester_bound,
    pac_bayes_kl_bound,
)


def test_kl_bound_solves_its_defining_equation():
    r = pac_bayes_kl_bound(0.05, 120.0, 5000, 0.05)
    expected_budget = (120.0 + math.log(2 * math.sqrt(5000) / 0.05)) / 5000
    assert r.budget == pytest.approx(expected_budget, rel=1e-15)
    assert r.confidence_term == pytest.approx(math.log(2 * math.sqrt(5000) / 0.05), rel=1e-15)
    assert binary_kl(0.05, r.bound) == pytest.approx(expected_budget, rel=1e-10)
    assert r.bound > 0.05
    assert r.kind == "pac-bayes-kl" and r.n == 5000 and r.delta == 0.05 and r.grid_size == 1


def test_zero_empirical_risk_closed_form():
    # kl^-1(0, B) = 1 - exp(-B)
    r = pac_bayes_kl_bound(0.0, 10.0, 1000, 0.1)
    assert r.bound == pytest.approx(1 - math.exp(-r.budget), rel=1e-14)


def test_mcallester_closed_form_and_never_tighter():
    rng = np.random.default_rng(0)
    for emp, kl, n in zip(rng.uniform(0, 0.5, 50), 10 ** rng.uniform(-2, 4, 50), rng.integers(10, 10**6, 50)):
        kl_b = pac_bayes_kl_bound(float(emp), float(kl), int(n), 0.05)
        mc_b = mcallester_bound(float(emp), float(kl), int(n), 0.05)
        assert mc_b.bound == pytest.approx(min(1.0, emp + math.sqrt(kl_b.budget / 2)), rel=1e-14)
        assert mc_b.bound >= kl_b.bound - 1e-15  # Pinsker relaxation


def test_bound_at_least_empirical_risk_always():
    rng = np.random.default_rng(1)
    size = 200
    emps, kls = rng.uniform(0, 1, size), 10 ** rng.uniform(-3, 5, size)
    cases = zip(emps, kls, rng.integers(1, 10**6, size), rng.uniform(1e-4, 0.5, size))
    for emp, kl, n, d in cases:
        for f in (pac_bayes_kl_bound, mcallester_bound):
            r = f(float(emp), float(kl), int(n), float(d))
            assert emp <= r.bound <= 1.0
            assert r.gap >= 0


def test_monotone_decreasing_in_n_and_increasing_in_kl():
    ns = [50, 100, 1000, 10**4, 10**5, 10**6]
    for f in (pac_bayes_kl_bound, mcallester_bound):
        b_n = [f(0.1, 50.0, n, 0.05).bound for n in ns]
        assert all(a > b for a, b in zip(b_n, b_n[1:]))
        kls = [0.0, 1.0, 10.0, 100.0, 1000.0]
        b_kl = [f(0.1, kl, 10**5, 0.05).bound for kl in kls]
        assert all(a < b for a, b in zip(b_kl, b_kl[1:]))
        b_d = [f(0.1, 10.0, 1000, d).bound for d in (0.5, 0.1, 0.01, 0.001)]
        assert all(a < b for a, b in zip(b_d, b_d[1:]))  # more confidence, larger bound


def test_union_cost_enters_like_extra_kl():
    a = pac_bayes_kl_bound(0.1, 30.0, 2000, 0.05, union_cost=math.log(20), grid_size=20)
    b = pac_bayes_kl_bound(0.1, 30.0 + math.log(20), 2000, 0.05)
    c = pac_bayes_kl_bound(0.1, 30.0, 2000, 0.05 / 20)  # same as paying delta/J
    assert a.bound == pytest.approx(b.bound, rel=1e-14)
    assert a.bound == pytest.approx(c.bound, rel=1e-12)
    assert a.bound > pac_bayes_kl_bound(0.1, 30.0, 2000, 0.05).bound
    assert a.union_cost == pytest.approx(math.log(20)) and a.grid_size == 20


def test_prior_variance_grid_weights_sum_to_at_most_one():
    grid = PriorVarianceGrid(c=0.1, b=100)
    j = np.arange(1, 200001)
    w = np.exp(-grid.union_cost(j))
    assert w.sum() < 1.0
    assert w.sum() == pytest.approx(1.0 - 6 / (math.pi**2 * 200000), rel=1e-9)  # tail sum ~ 6/(pi^2 J)
    assert grid.union_cost(1) == pytest.approx(math.log(math.pi**2 / 6))
    # cost equals 2 ln(b ln(c / lambda_j)) + ln(pi^2/6), the Dziugaite-Roy term
    lam = grid.variance(37)
    dr_term = 2 * math.log(grid.b * math.log(grid.c / lam)) + math.log(math.pi**2 / 6)
    assert grid.union_cost(37) == pytest.approx(dr_term, rel=1e-12)
    assert grid.nearest_index(lam) == 37
    assert grid.nearest_index(1.0) == 1  # above the grid: clamp to j = 1


def test_grid_bound_pays_log_grid_size_and_picks_min():
    emp = np.array([[0.10, 0.08, 0.12], [0.09, 0.07, 0.30]])
    kls = np.array([[40.0, 80.0, 20.0], [60.0, 35.0, 5.0]])
    n, delta = 3000, 0.05
    res = grid_pac_bayes_bound(emp, kls, n, delta)
    manual = np.array(
        [
            [pac_bayes_kl_bound(emp[j, i], kls[j, i], n, delta, union_cost=math.log(2)).bound for i in range(3)]
            for j in range(2)
        ]
    )
    np.testing.assert_allclose(res.bounds, manual, rtol=1e-13)
    assert res.best.bound == pytest.approx(manual.min(), rel=1e-13)
    assert (res.prior_index, res.posterior_index) == np.unravel_index(np.argmin(manual), manual.shape)
    assert res.best.union_cost == pytest.approx(math.log(2))
    assert res.best.grid_size == 2
    # the grid cost is visible: the same cell without a grid is strictly tighter
    j, i = res.prior_index, res.posterior_index
    assert pac_bayes_kl_bound(emp[j, i], kls[j, i], n, delta).bound < res.best.bound
    assert set(res.to_dict()) == {"best", "prior_index", "posterior_index", "bounds", "union_costs"}


def test_grid_bound_with_countable_prior_grid():
    grid = PriorVarianceGrid(c=1.0, b=10)
    js = np.array([1, 5, 40])
    costs = grid.union_cost(js)
    emp, kls = np.full((3, 1), 0.1), np.full((3, 1), 10.0)
    res = grid_pac_bayes_bound(emp, kls, 1000, 0.05, union_costs=costs, countable=True)
    assert res.prior_index == 0  # equal KL: cheapest weight wins
    assert res.best.grid_size is None
    assert res.best.union_cost == pytest.approx(math.log(math.pi**2 / 6))


def test_to_dict_is_complete():
    d = pac_bayes_kl_bound(0.1, 5.0, 100, 0.05).to_dict()
    fields = {"kind", "bound", "empirical_risk", "kl", "confidence_term", "union_cost", "grid_size", "budget", "n"}
    fields |= {"delta"}
    assert fields | {"gap"} == set(d)


def _grid(emp, kls, **kw):
    return grid_pac_bayes_bound(emp, kls, 10, 0.05, **kw)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: pac_bayes_kl_bound(1.5, 1.0, 100, 0.05), r"empirical_risk must lie in \[0, 1\]"),
        (lambda: pac_bayes_kl_bound(0.1, -1.0, 100, 0.05), r"kl must be finite and >= 0"),
        (lambda: pac_bayes_kl_bound(0.1, 1.0, 0, 0.05), r"n must be an integer >= 1"),
        (lambda: pac_bayes_kl_bound(0.1, 1.0, 100, 1.0), r"delta must lie in \(0, 1\)"),
        (lambda: mcallester_bound(0.1, 1.0, 100, 0.05, union_cost=-1.0), r"union_cost must be finite and >= 0"),
        (lambda: confidence_term(10, 0.0), r"delta must lie in \(0, 1\)"),
        (lambda: finite_grid_cost(0), r"grid_size must be an integer >= 1"),
        (lambda: PriorVarianceGrid(c=0.0, b=1.0), r"c must be finite and > 0"),
        (lambda: PriorVarianceGrid(c=1.0, b=1.0).variance(0), r"grid index j must be an integer >= 1"),
        (lambda: PriorVarianceGrid(c=1.0, b=1.0).union_cost(1.5), r"grid index j must be an integer >= 1"),
        (lambda: PriorVarianceGrid(c=1.0, b=1.0).nearest_index(-1.0), r"variance must be finite and > 0"),
        (lambda: _grid(np.zeros(3), np.zeros(3)), r"same \(J, C\) shape"),
        (lambda: _grid(np.zeros((2, 1)), np.zeros((2, 1)), union_costs=[0.1, 0.1]), r"sum to .* > 1"),
        (lambda: _grid(np.zeros((2, 1)), np.zeros((2, 1)), union_costs=[1.0]), r"union_costs must have shape \(2,\)"),
        (lambda: _grid(np.full((1, 1), 2.0), np.zeros((1, 1))), r"empirical_risks must lie in \[0, 1\]"),
        (lambda: _grid(np.zeros((1, 1)), np.full((1, 1), -2.0)), r"kls must be finite and >= 0"),
    ],
)
def test_pacbayes_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
