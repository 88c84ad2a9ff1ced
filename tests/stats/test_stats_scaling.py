"""Scaling-law fit: exact recovery, CI coverage, TOST size, model comparison, errors."""

import numpy as np
import pytest
from stats_synth import assert_rate_near, scaling_table

from landscape.stats import holm, scaling_law_fit


def test_noiseless_law_is_recovered_exactly():
    df = scaling_table(np.random.default_rng(0), alpha=0.6, beta=0.25, noise=0.0)
    f = scaling_law_fit(df)
    assert f.alpha == pytest.approx(0.6, abs=1e-10)
    assert f.beta == pytest.approx(0.25, abs=1e-10)
    assert f.log_a == pytest.approx(0.5, abs=1e-9)
    assert np.max(np.abs(f.residuals)) < 1e-10


def test_noisy_law_estimates_tests_and_residuals():
    df = scaling_table(np.random.default_rng(1), alpha=0.6, beta=0.25, noise=0.1)
    f = scaling_law_fit(df, ci_level=0.9999)
    assert f.alpha_ci[0] < 0.6 < f.alpha_ci[1] and f.beta_ci[0] < 0.25 < f.beta_ci[1]
    assert f.p_alpha_in_unit_interval < 1e-3 and f.p_beta_positive < 1e-10
    assert f.p_alpha_in_unit_interval == max(f.p_alpha_positive, f.p_alpha_below_one)
    fitted = f.log_a + f.alpha * np.log(df.width) + f.beta * df.depth
    np.testing.assert_allclose(f.residuals, np.log(df.lambda_max) - fitted, atol=1e-10)
    assert f.preferred == "exponential" and f.aic < f.aic_power and f.bic < f.bic_power
    assert f.n_runs == len(df) == len(f.residuals) and f.df == len(df) - 3


def test_interval_coverage_for_alpha_and_beta():
    rng = np.random.default_rng(2)
    reps, cov_a, cov_b = 200, 0, 0
    for _ in range(reps):
        f = scaling_law_fit(scaling_table(rng, alpha=0.6, beta=0.25, noise=0.3), ci_level=0.9)
        cov_a += f.alpha_ci[0] <= 0.6 <= f.alpha_ci[1]
        cov_b += f.beta_ci[0] <= 0.25 <= f.beta_ci[1]
    assert_rate_near(cov_a, reps, 0.9)
    assert_rate_near(cov_b, reps, 0.9)


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.25), (0.0, 0.25), (0.6, 0.0)])
def test_size_at_the_null_boundary(alpha, beta):
    # at alpha = 1 (or 0) the TOST rejects with probability ~ its level; at beta = 0 too
    rng = np.random.default_rng(3)
    reps, hits = 300, 0
    for _ in range(reps):
        f = scaling_law_fit(scaling_table(rng, alpha=alpha, beta=beta, noise=0.3))
        width, depth = f.as_hypotheses()
        hits += (width if beta else depth).supported
    assert_rate_near(hits, reps, 0.05)


def test_power_law_data_prefers_the_power_model():
    df = scaling_table(np.random.default_rng(4), alpha=0.5, beta=0.0, noise=0.05, power_law_gamma=1.5)
    f = scaling_law_fit(df, ci_level=0.9999)
    assert f.preferred == "power" and f.aic_power < f.aic
    assert f.gamma_ci[0] < 1.5 < f.gamma_ci[1]
    assert f.alpha_power == pytest.approx(0.5, abs=0.05)


def test_hypotheses_join_a_holm_family_and_serialise():
    f = scaling_law_fit(scaling_table(np.random.default_rng(5), alpha=0.6, beta=0.25, noise=0.1), group="seed")
    assert f.n_groups == 3 and f.df == 2 and "cluster" in f.inference
    width, depth = holm(f.as_hypotheses())
    assert width.name == "scaling[alpha]" and width.side == "interval"
    assert depth.supported
    d = f.to_dict()
    assert isinstance(d["alpha_ci"], list) and isinstance(d["residuals"][0], float)


def test_nonfinite_rows_dropped_with_their_index():
    df = scaling_table(np.random.default_rng(6), alpha=0.6, beta=0.25, noise=0.1)
    df.loc[[2, 7], "lambda_max"] = np.nan
    f = scaling_law_fit(df)
    assert f.n_runs == len(df) - 2
    assert 2 not in f.row_index and 7 not in f.row_index and f.row_index[2] == 3


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda d: d.assign(lambda_max=-1.0), {}, "'lambda_max' must be > 0"),
        (lambda d: d.assign(width=32.0), {}, "'width' must take >= 2 distinct values"),
        (lambda d: d.assign(depth=np.log(d.width)), {}, "collinear"),
        (lambda d: d.iloc[[0, 1, 5, 6]], {}, "too few runs"),
        (lambda d: d.drop(columns="depth"), {}, r"missing column\(s\) \['depth'\]"),
        (lambda d: d.assign(seed=0), {"group": "seed"}, "too few seeds"),
    ],
)
def test_errors(mutate, kwargs, match):
    df = scaling_table(np.random.default_rng(7), alpha=0.6, beta=0.25, noise=0.1)
    with pytest.raises(ValueError, match=match):
        scaling_law_fit(mutate(df), **kwargs)
