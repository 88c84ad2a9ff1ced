"""Occam (description-length) and VC bounds: closed forms, monotonicity, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape.bounds.kl import binary_kl, kl_inv_upper
from landscape.bounds.naive import occam_bound, vc_bound


def test_occam_closed_form():
    r = occam_bound(0.01, 1000, 60000, 0.05, bits_per_param=32)
    length = 32 * 1000 * math.log(2)
    assert r.kl == pytest.approx(length, rel=1e-15)
    assert r.confidence_term == pytest.approx(math.log(20), rel=1e-15)
    assert r.budget == pytest.approx((length + math.log(20)) / 60000, rel=1e-15)
    assert binary_kl(0.01, r.bound) == pytest.approx(r.budget, rel=1e-10)
    assert r.kind == "occam"


def test_occam_monotone_and_above_empirical():
    base = occam_bound(0.02, 500, 10000, 0.05).bound
    assert occam_bound(0.02, 1000, 10000, 0.05).bound > base  # more parameters
    assert occam_bound(0.02, 500, 10000, 0.05, bits_per_param=64).bound > base  # more bits
    assert occam_bound(0.02, 500, 20000, 0.05).bound < base  # more data
    assert occam_bound(0.02, 500, 10000, 0.05).bound >= 0.02
    # vacuous regime: parameters >> samples gives ~1
    assert occam_bound(0.0, 10**6, 10**4, 0.05).bound == pytest.approx(1.0, abs=1e-12)


def test_occam_coverage_by_simulation():
    # A finite class of 2^(b P) = 16 hypotheses (b = 1, P = 4) with known true errors;
    # the bound must hold for *all* of them at once in >= 1 - delta of the samples.
    rng = np.random.default_rng(0)
    true_err = rng.uniform(0.05, 0.5, 16)
    n, delta, reps = 60, 0.2, 4000
    counts = rng.binomial(n, true_err[None, :], size=(reps, 16))
    budget = occam_bound(0.0, 4, n, delta, bits_per_param=1).budget
    upper = kl_inv_upper(counts / n, budget)
    fail = np.mean(np.any(true_err[None, :] > upper, axis=1))
    se = math.sqrt(delta * (1 - delta) / reps)
    assert fail <= delta + 3 * se
    # the same check has power: without the ln|H| term (no union bound) it fails more
    naive = kl_inv_upper(counts / n, math.log(1 / delta) / n)
    assert np.mean(np.any(true_err[None, :] > naive, axis=1)) > delta + 3 * se


def test_vc_closed_form_and_vacuous_regime():
    d, n, delta = 100, 50000, 0.05
    r = vc_bound(0.03, d, n, delta)
    cap = d * math.log(2 * math.e * n / d) + math.log(2 / delta)
    assert r.confidence_term == pytest.approx(cap, rel=1e-15)
    assert r.bound == pytest.approx(0.03 + 2 * math.sqrt(2 * cap / n), rel=1e-14)
    assert vc_bound(0.03, 10**5, 10**4, delta).bound == 1.0  # 2n < d
    assert vc_bound(0.03, 200, n, delta).bound > r.bound
    assert r.kind == "vc" and r.kl == 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: occam_bound(-0.1, 10, 100, 0.05), r"empirical_risk must lie in \[0, 1\]"),
        (lambda: occam_bound(0.1, 0, 100, 0.05), r"num_params must be an integer >= 1"),
        (lambda: occam_bound(0.1, 10, 100, 0.05, bits_per_param=0), r"bits_per_param must be an integer >= 1"),
        (lambda: occam_bound(0.1, 10, 0, 0.05), r"n must be an integer >= 1"),
        (lambda: occam_bound(0.1, 10, 100, 0.0), r"delta must lie in \(0, 1\)"),
        (lambda: vc_bound(0.1, 0, 100, 0.05), r"vc_dim must be an integer >= 1"),
        (lambda: vc_bound(0.1, 2.5, 100, 0.05), r"vc_dim must be an integer >= 1"),
    ],
)
def test_naive_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
