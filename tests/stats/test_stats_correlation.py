"""Kendall tau-b and curvature regressions: scipy cross-checks, coverage, size, errors."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from stats_synth import assert_rate_near

from landscape.stats import curvature_regressions, kendall_tau_b_weighted


def bivariate(rng, n, rho):
    x = rng.normal(size=n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return x, y


def test_weighted_tau_b_matches_scipy_with_ties_and_repeats():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)  # many ties
    y = x + rng.integers(0, 3, 40)
    assert kendall_tau_b_weighted(x, y, np.ones(40)) == pytest.approx(sps.kendalltau(x, y).statistic, rel=1e-12)
    w = rng.integers(0, 4, size=(6, 40))
    got = kendall_tau_b_weighted(x, y, w)
    for wi, g in zip(w, got):
        rows = np.repeat(np.arange(40), wi)
        assert g == pytest.approx(sps.kendalltau(x[rows], y[rows]).statistic, rel=1e-12)


def test_weighted_tau_b_constant_draw_is_nan():
    x, y = np.arange(4.0), np.arange(4.0)
    got = kendall_tau_b_weighted(x, y, np.array([[4, 0, 0, 0], [1, 1, 1, 1]]))
    assert np.isnan(got[0]) and got[1] == 1.0


def test_planted_monotone_relation_and_regression_numbers():
    rng = np.random.default_rng(1)
    lam = np.exp(rng.normal(2, 0.5, 50))
    err = 0.1 + 0.02 * np.log(lam) + rng.normal(0, 0.005, 50)
    gap = rng.normal(0, 1, 50)  # unrelated target
    df = pd.DataFrame({"lambda_max": lam, "test_error": err, "gen_gap": gap})
    r_err, r_gap = curvature_regressions(df, ["lambda_max"], ["test_error", "gen_gap"], log_measure=True, n_boot=500)
    assert r_err.name == "tau[lambda_max,test_error]" and r_gap.name == "tau[lambda_max,gen_gap]"
    assert r_err.effect == pytest.approx(sps.kendalltau(lam, err).statistic, rel=1e-12)
    assert r_err.p_value == pytest.approx(sps.kendalltau(lam, err).pvalue, rel=1e-12)
    assert r_err.supported and r_err.ci_low > 0.5
    slope, intercept = np.polyfit(np.log(lam), err, 1)
    assert r_err.extra["slope"] == pytest.approx(slope, rel=1e-9)
    assert r_err.extra["intercept"] == pytest.approx(intercept, rel=1e-9)
    assert r_err.extra["r2"] == pytest.approx(np.corrcoef(np.log(lam), err)[0, 1] ** 2, rel=1e-9)
    assert r_err.extra["slope_ci_low"] < 0.02 < r_err.extra["slope_ci_high"]
    assert r_err.extra["regressor"] == "log(lambda_max)"
    # the rank correlation ignores the log; the regression does not
    raw = curvature_regressions(df, ["lambda_max"], "test_error", n_boot=200)[0]
    assert raw.effect == r_err.effect and raw.extra["slope"] != r_err.extra["slope"]


def test_bootstrap_interval_covers_population_tau():
    rho = 0.5
    tau = 2 / np.pi * np.arcsin(rho)  # Kendall tau of a bivariate normal
    rng = np.random.default_rng(2)
    reps, covered = 150, 0
    for i in range(reps):
        x, y = bivariate(rng, 60, rho)
        r = curvature_regressions(pd.DataFrame({"m": x, "t": y}), ["m"], "t", n_boot=400, seed=i)[0]
        covered += r.ci_low <= tau <= r.ci_high
    assert_rate_near(covered, reps, 0.95)


def test_false_positive_rate_under_independence():
    rng = np.random.default_rng(3)
    reps, hits, slope_hits = 300, 0, 0
    for i in range(reps):
        x, y = bivariate(rng, 30, 0.0)
        r = curvature_regressions(pd.DataFrame({"m": x, "t": y}), ["m"], "t", n_boot=100, seed=i)[0]
        hits += r.supported
        slope_hits += r.extra["slope_p_two_sided"] <= 0.05
    assert_rate_near(hits, reps, 0.05)
    assert_rate_near(slope_hits, reps, 0.05)


def test_clustered_version_uses_bootstrap_p_and_cluster_ses():
    rng = np.random.default_rng(4)
    seed = np.repeat(np.arange(12), 5)
    x = rng.normal(size=12)[seed] + rng.normal(0, 0.3, 60)
    y = 0.8 * x + rng.normal(0, 0.5, 60)
    df = pd.DataFrame({"m": x, "t": y, "seed": seed})
    r = curvature_regressions(df, ["m"], "t", group="seed", n_boot=500)[0]
    assert r.n_groups == 12 and r.extra["slope_df"] == 11
    assert r.p_value == r.extra["tau_p_bootstrap"] and r.p_value < 0.01
    assert "cluster bootstrap" in r.test


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda d: curvature_regressions(d, "m", "t"), "sequence of column names"),
        (lambda d: curvature_regressions(d, ["nope"], "t"), r"missing column\(s\) \['nope'\]"),
        (lambda d: curvature_regressions(d.iloc[:4], ["m"], "t"), "too few runs"),
        (lambda d: curvature_regressions(d.assign(m=1.0), ["m"], "t"), "must both vary"),
        (lambda d: curvature_regressions(d, ["m"], "t", log_measure=True), "must be > 0"),
        (lambda d: curvature_regressions(d, [], "t"), "at least one measure"),
        (lambda d: curvature_regressions(d.assign(s=0), ["m"], "t", group="s"), "too few seeds"),
        (lambda d: curvature_regressions(d, ["m"], "t", n_boot=5), "n_boot must be"),
    ],
)
def test_errors(call, match):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"m": rng.normal(size=20), "t": rng.normal(size=20)})
    with pytest.raises(ValueError, match=match):
        call(df)
