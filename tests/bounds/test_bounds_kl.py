"""Binary kl and its inverses against closed forms and a slow reference bisection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape.bounds.kl import binary_kl, kl_inv_lower, kl_inv_upper, kl_inv_upper_bisection


def _naive_kl(q: float, p: float) -> float:
    t1 = 0.0 if q == 0 else q * math.log(q / p)
    t2 = 0.0 if q == 1 else (1 - q) * math.log((1 - q) / (1 - p))
    return t1 + t2


@pytest.mark.parametrize("q,p", [(0.3, 0.5), (0.01, 0.2), (0.9, 0.4), (0.5, 0.5), (0.0, 0.3), (1.0, 0.7)])
def test_binary_kl_matches_textbook_formula(q, p):
    assert binary_kl(q, p) == pytest.approx(_naive_kl(q, p), rel=1e-13, abs=1e-300)


def test_binary_kl_edges_and_nonnegativity():
    assert binary_kl(0.0, 0.0) == 0.0
    assert binary_kl(1.0, 1.0) == 0.0
    assert binary_kl(0.5, 1.0) == math.inf
    assert binary_kl(0.5, 0.0) == math.inf
    rng = np.random.default_rng(0)
    q, p = rng.uniform(0, 1, 500), rng.uniform(0, 1, 500)
    assert np.all(binary_kl(q, p) >= 0)


def test_binary_kl_accurate_near_diagonal():
    # kl(q || q + d) = d^2 / (2 q (1 - q)) - (1 - 2q) d^3 / (3 q^2 (1 - q)^2) + O(d^4);
    # the textbook formula loses ~7 digits to cancellation here.
    q, d = 0.3, 1e-7
    second_order = d**2 / (2 * q * (1 - q))
    third_order = -(1 - 2 * q) * d**3 / (3 * q**2 * (1 - q) ** 2)
    assert binary_kl(q, q + d) == pytest.approx(second_order + third_order, rel=1e-12)


def test_binary_kl_subnormal_q_is_finite():
    assert binary_kl(1e-320, 0.5) == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize("c", [1e-10, 1e-3, 0.1, 1.0, 5.0, 30.0])
def test_kl_inv_at_zero_is_closed_form(c):
    assert kl_inv_upper(0.0, c) == pytest.approx(1 - math.exp(-c), rel=1e-15)


def test_kl_inv_exact_edges():
    assert kl_inv_upper(0.37, 0.0) == 0.37
    assert kl_inv_upper(1.0, 2.0) == 1.0
    assert kl_inv_upper(0.2, math.inf) == 1.0
    assert kl_inv_upper(0.5, 1e4) == 1.0  # rounds to 1 in float64
    assert kl_inv_lower(0.0, 3.0) == 0.0
    assert kl_inv_lower(1.0, 0.5) == pytest.approx(math.exp(-0.5), rel=1e-15)


def test_kl_inv_matches_bisection_on_grid():
    rng = np.random.default_rng(1)
    qs = np.concatenate([rng.uniform(0, 1, 40), 10 ** rng.uniform(-9, 0, 40), 1 - 10 ** rng.uniform(-9, 0, 20)])
    cs = 10 ** rng.uniform(-6, 1.5, qs.size)
    fast = kl_inv_upper(qs, cs)
    slow = np.array([kl_inv_upper_bisection(float(q), float(c)) for q, c in zip(qs, cs)])
    # the bisection's textbook kl limits it to ~1e-10 relative for the smallest budgets
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=0)


def test_kl_inv_solves_the_equation_and_is_conservative():
    rng = np.random.default_rng(2)
    q = rng.uniform(0.001, 0.999, 300)
    c = 10 ** rng.uniform(-8, 0.5, 300)
    p = kl_inv_upper(q, c)
    assert np.all(p >= q)
    # where 1 - p* < 2^-53 the answer rounds to exactly 1 (kl = inf there): drop those
    keep = p < 1.0
    assert keep.sum() > 250
    q, c, p = q[keep], c[keep], p[keep]
    # p is the root to within 4 ulps and never below it (up to kl's own rounding):
    # kl(q, p) >= c, and kl(q, p - 4 ulp) <= c. (Near p = 1 one ulp moves kl a lot, so a
    # tolerance on kl itself would be meaningless there.)
    assert np.all(binary_kl(q, p) >= c * (1 - 1e-12))
    assert np.all(binary_kl(q, p - 4 * np.spacing(p)) <= c * (1 + 1e-12))
    away_from_one = p < 0.999
    np.testing.assert_allclose(binary_kl(q[away_from_one], p[away_from_one]), c[away_from_one], rtol=1e-10)


def test_kl_inv_broadcasts_and_is_monotone():
    q = np.linspace(0, 1, 11)[:, None]
    c = np.array([0.0, 0.01, 0.1, 1.0, math.inf])[None, :]
    p = kl_inv_upper(q, c)
    assert p.shape == (11, 5)
    assert np.all(np.diff(p, axis=1) >= 0)  # increasing in c
    assert np.all(np.diff(p, axis=0) >= 0)  # increasing in q
    assert isinstance(kl_inv_upper(0.1, 0.2), float)


def test_kl_inv_lower_mirrors_upper():
    q, c = 0.3, 0.05
    lo = kl_inv_lower(q, c)
    assert lo < q
    assert binary_kl(q, lo) == pytest.approx(c, rel=1e-10)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: binary_kl(1.2, 0.5), r"q must lie in \[0, 1\]"),
        (lambda: binary_kl(0.5, -0.1), r"p must lie in \[0, 1\]"),
        (lambda: kl_inv_upper(0.5, -1.0), r"c must be >= 0"),
        (lambda: kl_inv_upper(float("nan"), 1.0), r"q must lie in \[0, 1\]"),
        (lambda: kl_inv_upper(0.5, float("nan")), r"c must be >= 0"),
        (lambda: kl_inv_upper(0.5, 1.0, max_iter=0), r"max_iter must be >= 1"),
        (lambda: kl_inv_upper_bisection(0.5, math.inf), r"c must be finite"),
        (lambda: kl_inv_upper_bisection(-0.5, 1.0), r"q must lie in"),
    ],
)
def test_kl_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
