"""H3 logistic/conditional-logistic/Cox views: planted odds ratios, coverage, size, errors."""

import numpy as np
import pytest
import statsmodels.api as sm
from stats_synth import assert_rate_near, h3_table

from landscape.stats import h3_alignment_escape

BETA = 1.2  # true log-odds slope per unit alignment


def test_planted_odds_ratio_found_and_matches_plain_glm():
    df = h3_table(np.random.default_rng(0), n_seeds=20, per_seed=30, beta=BETA)
    r = h3_alignment_escape(df)
    assert r.name == "H3" and r.extra["inference"] == "cluster"
    assert r.supported and r.effect > 1 and r.ci_low > 1 and r.null_value == 1.0
    assert (r.n_runs, r.n_groups) == (600, 20)
    X = np.column_stack([np.ones(600), df.alignment, (df.noise_type == "sgd").astype(float)])
    ref = sm.GLM(df.escape.to_numpy(), X, family=sm.families.Binomial()).fit()
    assert np.log(r.effect) == pytest.approx(ref.params[1], rel=1e-6)
    assert r.extra["coefficients"]["noise_type[sgd]"]["log_odds"] == pytest.approx(ref.params[2], rel=1e-6)
    assert r.extra["odds_ratio_per_sd"] == pytest.approx(np.exp(ref.params[1] * df.alignment.std()), rel=1e-6)


def test_coverage_and_size_of_the_clustered_glm():
    rng = np.random.default_rng(1)
    reps, covered, false_pos = 150, 0, 0
    for _ in range(reps):
        r = h3_alignment_escape(h3_table(rng, 20, 10, beta=BETA), ci_level=0.9)
        covered += r.ci_low <= np.exp(BETA) <= r.ci_high
        r0 = h3_alignment_escape(h3_table(rng, 20, 10, beta=0.0))
        false_pos += r0.supported
    assert_rate_near(covered, reps, 0.9)
    assert_rate_near(false_pos, reps, 0.05)


def test_few_seeds_use_conditional_logit_which_removes_seed_effects():
    # large seed intercepts: the conditional model still recovers the within-seed slope
    rng = np.random.default_rng(2)
    estimates, ses = [], []
    for _ in range(6):
        r = h3_alignment_escape(h3_table(rng, n_seeds=4, per_seed=40, beta=BETA, seed_sd=1.5))
        assert r.extra["inference"] == "fixed-effects" and "conditional" in r.test
        estimates.append(np.log(r.effect))
        ses.append(r.extra["coefficients"]["alignment"]["se"])
    # mean of 6 estimates within 3 standard errors of the truth
    assert abs(np.mean(estimates) - BETA) < 3 * np.sqrt(np.mean(np.square(ses)) / 6)


def test_conditional_logit_drops_seeds_without_both_outcomes():
    df = h3_table(np.random.default_rng(3), n_seeds=5, per_seed=30, beta=BETA)
    df.loc[df.seed == 0, "escape"] = 1
    r = h3_alignment_escape(df)
    assert r.extra["n_informative_groups"] == 4 and r.n_groups == 5


def test_cox_view_recovers_hazard_ratio():
    # exponential escape times with hazard exp(log_hr * alignment), censored at t = 1.5
    rng = np.random.default_rng(4)
    log_hr, reps = 1.0, 40
    estimates, ses, covered = [], [], 0
    for _ in range(reps):
        df = h3_table(rng, n_seeds=12, per_seed=12, beta=0.0)
        t = rng.exponential(1.0 / np.exp(log_hr * df.alignment.to_numpy()))
        df = df.assign(escape=(t < 1.5).astype(int), steps=np.minimum(t, 1.5))
        r = h3_alignment_escape(df, time="steps", factor=None, cox_ties="breslow")
        cox = r.extra["cox"]["coefficients"]["alignment"]
        estimates.append(cox["log_hazard_ratio"])
        ses.append(cox["se"])
        covered += cox["hr_ci_low"] <= np.exp(log_hr) <= cox["hr_ci_high"]
    assert r.extra["cox"]["n_events"] == df.escape.sum()
    assert abs(np.mean(estimates) - log_hr) < 3 * np.sqrt(np.mean(np.square(ses)) / reps)
    assert_rate_near(covered, reps, 0.95)


def test_cox_stratified_with_few_seeds():
    rng = np.random.default_rng(5)
    df = h3_table(rng, n_seeds=4, per_seed=40, beta=0.0)
    t = rng.exponential(1.0 / np.exp(1.0 * df.alignment.to_numpy()))
    df = df.assign(escape=(t < 1.5).astype(int), steps=np.minimum(t, 1.5))
    r = h3_alignment_escape(df, time="steps")
    assert "stratified" in r.extra["cox"]["method"] and "efron" in r.extra["cox"]["method"]
    fast = h3_alignment_escape(df, time="steps", cox_ties="breslow").extra["cox"]["coefficients"]
    # continuous event times have no ties, so Breslow and Efron partial likelihoods agree
    np.testing.assert_allclose(
        fast["alignment"]["log_hazard_ratio"],
        r.extra["cox"]["coefficients"]["alignment"]["log_hazard_ratio"],
        rtol=1e-6,
    )
    assert r.extra["cox"]["coefficients"]["alignment"]["p_greater"] < 0.05


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda d: d.drop(columns="noise_type"), {}, r"missing column\(s\) \['noise_type'\]"),
        (lambda d: d.assign(escape=d.escape * 2), {}, "must be 0/1"),
        (lambda d: d.assign(escape=0), {}, "must contain both outcomes"),
        (lambda d: d.assign(seed=1), {}, "too few seeds"),
        (lambda d: d.assign(alignment=0.5), {}, "must take >= 2 distinct values"),
        (lambda d: d.assign(steps=0.0), {"time": "steps"}, "'steps' must be > 0"),
        (lambda d: d.assign(escape=(d.seed % 2).astype(int)), {}, "needs a seed with both outcomes"),
        (lambda d: d, {"cox_ties": "exact"}, "cox_ties must be"),
    ],
)
def test_errors(mutate, kwargs, match):
    df = h3_table(np.random.default_rng(6), n_seeds=4, per_seed=20, beta=BETA).assign(steps=1.0)
    with pytest.raises(ValueError, match=match):
        h3_alignment_escape(mutate(df), **kwargs)


def test_factor_can_be_omitted_and_bool_outcome_accepted():
    df = h3_table(np.random.default_rng(7), n_seeds=12, per_seed=30, beta=BETA)
    r = h3_alignment_escape(df.drop(columns="noise_type").assign(escape=df.escape.astype(bool)), factor=None)
    assert set(r.extra["coefficients"]) == {"alignment"} and r.supported
