"""H3's dose-response analysis on planted proportional-hazards data (known slope)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from landscape.stats.dose_response import (
    cox_slope,
    dose_response_power,
    h3_dose_response,
    simulate_dose_response,
)

DOSES = [0.0, 0.05, 0.15, 0.3, 0.5, 0.7]  # the alignment range the escape trials span


def test_planted_slope_recovered_with_covering_intervals():
    """200 planted data sets (beta = 4 per unit alignment, gamma frailty per stratum, censoring
    at the cap): the mean estimate is within 5% of beta and the 95% intervals cover it in
    90-99% of them (binomial 99.9% range around 0.95 for 200 draws: 0.90-0.99)."""
    beta, covered, estimates = 4.0, 0, []
    for r in range(200):
        sim = simulate_dose_response(DOSES, beta=beta, base_hazard=0.004, horizon=300.0, n_strata=25, frailty_var=0.5, seed=r)
        fit = cox_slope(sim["escape_step"].to_numpy(), sim["escape"].to_numpy(), sim["alignment"].to_numpy(), sim["stratum"].to_numpy())
        lo, hi = math.log(fit["hr_ci_low"]), math.log(fit["hr_ci_high"])
        covered += lo <= beta <= hi
        estimates.append(fit["beta"])
    assert np.mean(estimates) == pytest.approx(beta, rel=0.05)
    assert 0.90 <= covered / 200 <= 0.99


def test_null_dose_gives_uniform_p_and_no_false_verdicts():
    ps = []
    for r in range(150):
        sim = simulate_dose_response(DOSES, beta=0.0, base_hazard=0.004, horizon=300.0, n_strata=20, frailty_var=0.5, seed=1000 + r)
        ps.append(cox_slope(sim["escape_step"].to_numpy(), sim["escape"].to_numpy(), sim["alignment"].to_numpy(),
                            sim["stratum"].to_numpy())["p"])
    ps = np.asarray(ps)
    assert 0.01 <= np.mean(ps <= 0.05) <= 0.11  # nominal 0.05; binomial 99.9% range for 150 draws
    assert 0.4 <= np.mean(ps) <= 0.6


def test_h3_result_effect_is_hazard_ratio_per_tenth_and_compares_the_indicator():
    sim = simulate_dose_response(DOSES, beta=5.0, base_hazard=0.004, horizon=300.0, n_strata=40, frailty_var=0.3, seed=7)
    rng = np.random.default_rng(0)
    sim["trace_h_sigma"] = rng.normal(size=len(sim))  # an indicator that carries no information
    sim["scale"] = np.tile(np.arange(len(DOSES)), 40)
    res = h3_dose_response(sim, strata=("seed",), per=0.1)
    beta = res.extra["cox"]["beta"]
    assert res.effect == pytest.approx(math.exp(0.1 * beta), rel=1e-12)
    assert res.ci_low < math.exp(0.5) < res.ci_high
    assert res.supported and res.p_value < 1e-4 and res.extra["p_two_sided"] == pytest.approx(2 * res.p_value, rel=1e-9)
    assert res.extra["indicator"]["better"] == "dose"
    assert res.extra["logistic"]["odds_ratio"] > 1
    assert [row["trials"] for row in res.extra["by_scale"]] == [40] * len(DOSES)


def test_power_grows_with_strata():
    low = dose_response_power(DOSES, beta=3.0, base_hazard=0.004, horizon=300.0, n_strata=5, reps=60, seed=1)
    high = dose_response_power(DOSES, beta=3.0, base_hazard=0.004, horizon=300.0, n_strata=40, reps=60, seed=1)
    assert high > 0.9 and low < high


def test_errors():
    sim = simulate_dose_response(DOSES, beta=1.0, base_hazard=0.004, horizon=300.0, n_strata=3, seed=0)
    with pytest.raises(ValueError, match="no trial escaped"):
        h3_dose_response(sim.assign(escape=0), strata=("seed",), indicator=None)
    with pytest.raises(ValueError, match=r"must be 0/1, got .*2"):
        h3_dose_response(sim.assign(escape=2), strata=("seed",), indicator=None)
    with pytest.raises(ValueError, match="missing"):
        h3_dose_response(pd.DataFrame({"alignment": [0.1]}), strata=("seed",))
    with pytest.raises(ValueError, match="times must be > 0"):
        cox_slope(np.zeros(3), np.ones(3), np.arange(3.0), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="base_hazard > 0"):
        simulate_dose_response(DOSES, beta=1.0, base_hazard=0.0, horizon=1.0, n_strata=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cox_slope_matches_statsmodels_phreg_with_ties(seed):
    """Same estimate, SE and partial log-likelihood as statsmodels' Efron fit, with tied times
    (escape steps are multiples of the check interval) and strata."""
    from statsmodels.duration.hazard_regression import PHReg

    sim = simulate_dose_response(DOSES, beta=3.0, base_hazard=0.004, horizon=300.0, n_strata=8, frailty_var=0.5, seed=seed)
    t = np.ceil(sim["escape_step"].to_numpy() / 25) * 25  # ties
    e, x, g = sim["escape"].to_numpy(), sim["alignment"].to_numpy(), sim["stratum"].to_numpy()
    ours = cox_slope(t, e, x, g)
    ref = PHReg(t, x[:, None], status=e, strata=g, ties="efron").fit(disp=False)
    assert ours["beta"] == pytest.approx(float(ref.params[0]), rel=1e-7)
    assert ours["se"] == pytest.approx(float(ref.bse[0]), rel=1e-6)
    assert ours["llf"] == pytest.approx(float(ref.llf), rel=1e-9)
