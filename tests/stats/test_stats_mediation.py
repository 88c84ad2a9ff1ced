"""H1 mediation: planted indirect effects, interval coverage, size under the null, errors."""

import numpy as np
import pandas as pd
import pytest
from stats_synth import assert_rate_at_most, assert_rate_near, h1_table

from landscape.stats import h1_batch_sharpness
from landscape.stats._common import cluster_bootstrap_weights, weighted_lstsq

A, B = 0.5, 0.02  # true a (log lambda per log B) and b (error per log lambda)


def test_planted_effect_is_found_with_right_sign():
    df = h1_table(np.random.default_rng(0), n_seeds=12, a=A, b=B, noise_y=0.003, seed_sd_y=0.002)
    r = h1_batch_sharpness(df, n_boot=1000, seed=0)
    assert r.name == "H1" and r.extra["inference"] == "cluster"
    assert r.effect > 0 and r.ci_low > 0
    assert r.supported and r.p_value < 0.01
    assert (r.n_runs, r.n_groups) == (60, 12)
    # a and b within 4 reported standard errors of the truth
    se_a = r.extra["mediator_model"]["coefficients"]["log_batch_size"]["se"]
    se_b = r.extra["outcome_model"]["coefficients"]["log_lambda_max"]["se"]
    assert abs(r.extra["a"] - A) < 4 * se_a
    assert abs(r.extra["b"] - B) < 4 * se_b


def test_coefficients_match_least_squares_and_total_effect_identity():
    df = h1_table(np.random.default_rng(1), n_seeds=12, a=A, b=B, direct=0.003)
    r = h1_batch_sharpness(df, n_boot=200)
    X = np.column_stack([np.ones(len(df)), np.log(df.batch_size), np.log(df.lambda_max), df.train_loss])
    beta = np.linalg.lstsq(X, df.test_error.to_numpy(), rcond=None)[0]
    coef = r.extra["outcome_model"]["coefficients"]
    np.testing.assert_allclose(
        [coef[k]["estimate"] for k in ("const", "log_batch_size", "log_lambda_max", "train_loss")],
        beta, rtol=1e-9,
    )
    # OLS identity: total effect c = c' + a b when both models share the covariates
    np.testing.assert_allclose(r.extra["total_effect"], r.extra["direct_effect"] + r.effect, rtol=1e-9)
    assert 0 < r.extra["outcome_model"]["r2"] <= 1


def test_cluster_bootstrap_weights_equal_refits_on_resampled_tables():
    df = h1_table(np.random.default_rng(2), n_seeds=6, a=A, b=B)
    codes = df.seed.to_numpy()
    X = np.column_stack([np.ones(len(df)), np.log(df.batch_size), df.train_loss])
    y = np.log(df.lambda_max.to_numpy())
    W = cluster_bootstrap_weights(codes, 6, 5, np.random.default_rng(3))
    assert np.all(W.sum(axis=1) == len(df))  # balanced: G draws of 5 runs
    coef = weighted_lstsq(X, y, W)
    for w, c in zip(W, coef):
        rows = np.repeat(np.arange(len(df)), w.astype(int))
        ref = np.linalg.lstsq(X[rows], y[rows], rcond=None)[0]
        np.testing.assert_allclose(c, ref, rtol=1e-8)


def test_weighted_lstsq_flags_rank_deficient_draws():
    X = np.column_stack([np.ones(4), [0.0, 0.0, 1.0, 1.0]])
    W = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    coef = weighted_lstsq(X, np.array([1.0, 1.0, 2.0, 3.0]), W)
    assert np.all(np.isnan(coef[0]))
    np.testing.assert_allclose(coef[1], [1.0, 1.5])


@pytest.mark.parametrize(
    ("n_seeds", "method"), [(12, "cluster bootstrap"), (4, "monte carlo")], ids=["cluster", "few-seeds"]
)
def test_interval_coverage_near_nominal(n_seeds, method):
    rng = np.random.default_rng(10 + n_seeds)
    reps, covered = 150, 0
    for i in range(reps):
        r = h1_batch_sharpness(h1_table(rng, n_seeds, A, B), n_boot=400, seed=i)
        covered += r.ci_low <= A * B <= r.ci_high
    assert r.extra["interval_method"] == method
    assert_rate_near(covered, reps, 0.95)


@pytest.mark.parametrize("n_seeds", [12, 4], ids=["cluster", "few-seeds"])
def test_size_near_alpha_when_b_is_zero(n_seeds):
    # a != 0, b = 0: the least favourable null for a product test
    rng = np.random.default_rng(20 + n_seeds)
    reps, rejections = 300, 0
    for i in range(reps):
        r = h1_batch_sharpness(h1_table(rng, n_seeds, A, 0.0), n_boot=400, seed=i)
        rejections += r.p_value <= 0.05
    assert_rate_near(rejections, reps, 0.05)


def test_conservative_when_a_and_b_are_zero():
    rng = np.random.default_rng(30)
    reps, supported = 150, 0
    for i in range(reps):
        supported += h1_batch_sharpness(h1_table(rng, 12, 0.0, 0.0), n_boot=400, seed=i).supported
    assert_rate_at_most(supported, reps, 0.05)


def test_negative_effect_is_not_supported():
    df = h1_table(np.random.default_rng(4), n_seeds=12, a=A, b=-B, noise_y=0.003, seed_sd_y=0.002)
    r = h1_batch_sharpness(df, n_boot=500)
    assert r.effect < 0 and r.ci_high < 0 and r.p_value > 0.5 and not r.supported


def test_few_seeds_switch_to_fixed_effects():
    df = h1_table(np.random.default_rng(5), n_seeds=4, a=A, b=B, noise_y=0.003, seed_sd_y=0.002)
    r = h1_batch_sharpness(df, n_boot=500)
    assert r.extra["inference"] == "fixed-effects"
    assert r.extra["interval_method"] == "monte carlo"
    assert "fixed effects" in r.test
    forced = h1_batch_sharpness(df, n_boot=500, min_clusters=3)
    assert forced.extra["inference"] == "cluster"
    assert forced.effect == pytest.approx(r.effect, rel=0.5)


def test_deterministic_for_seed_and_accepts_list_of_dicts():
    df = h1_table(np.random.default_rng(6), n_seeds=12, a=A, b=B)
    r1 = h1_batch_sharpness(df, n_boot=300, seed=7)
    r2 = h1_batch_sharpness(df.to_dict("records"), n_boot=300, seed=7)
    r3 = h1_batch_sharpness(df, n_boot=300, seed=8)
    assert (r1.ci_low, r1.ci_high, r1.p_value) == (r2.ci_low, r2.ci_high, r2.p_value)
    assert r1.ci_low != r3.ci_low
    assert r1.effect == r3.effect


def test_nonfinite_rows_are_dropped_and_counted():
    df = h1_table(np.random.default_rng(7), n_seeds=12, a=A, b=B)
    df.loc[[0, 5], "lambda_max"] = np.nan
    df.loc[9, "test_error"] = np.inf
    before = df.copy()
    r = h1_batch_sharpness(df, n_boot=200)
    assert r.n_runs == 57 and r.extra["n_dropped_nonfinite"] == 3
    pd.testing.assert_frame_equal(df, before)  # caller's table untouched


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda d: d.drop(columns="train_loss"), {}, r"missing column\(s\) \['train_loss'\]"),
        (lambda d: d.assign(seed=0), {}, "too few seeds"),
        (lambda d: d.assign(lambda_max=-d.lambda_max), {}, "'lambda_max' must be > 0"),
        (lambda d: d.assign(batch_size=64.0), {}, "'batch_size' must take >= 2 distinct values"),
        (lambda d: d, {"n_boot": 10}, "n_boot must be an integer >= 100"),
        (lambda d: d, {"alpha": 0.0}, r"alpha must be in \(0, 1\)"),
        (lambda d: d, {"min_clusters": 1}, "min_clusters must be an integer >= 2"),
        (lambda d: d.iloc[:5].assign(seed=[0, 0, 0, 1, 1]), {}, "too few runs"),
    ],
)
def test_errors(mutate, kwargs, match):
    df = h1_table(np.random.default_rng(8), n_seeds=12, a=A, b=B)
    with pytest.raises(ValueError, match=match):
        h1_batch_sharpness(mutate(df), **kwargs)


def test_bad_data_type():
    with pytest.raises(ValueError, match="DataFrame or a sequence of dicts"):
        h1_batch_sharpness("runs.csv")
