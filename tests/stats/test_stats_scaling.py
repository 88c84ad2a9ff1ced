"""Scaling-law fit: exact recovery, CI coverage, TOST size, model comparison, errors."""

import numpy as np
import pandas as pd
import pytest
from stats_synth import assert_rate_near, scaling_table


from landscape.stats import config_means, holm, scaling_law_fit


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


def seeded_grid(rng, alpha, beta, noise, seeds=5):
    """The pipeline's design: widths {32, 128, 512} x depths {1, 2, 3}, ``seeds`` runs each."""
    rows = [scaling_table(rng, alpha=alpha, beta=beta, noise=noise, widths=(32, 128, 512), depths=(1, 2, 3)).assign(seed=s)
            for s in range(seeds)]
    return pd.concat(rows, ignore_index=True)


def test_config_means_are_geometric_means_per_config():
    df = seeded_grid(np.random.default_rng(8), alpha=0.4, beta=0.2, noise=0.2)
    means = config_means(df, "lambda_max")
    assert len(means) == 9 and (means.n_seeds == 5).all()
    one = df[(df.width == 128) & (df.depth == 2)]
    row = means[(means.width == 128) & (means.depth == 2)].iloc[0]
    assert row.lambda_max == pytest.approx(np.exp(np.log(one.lambda_max).mean()))
    assert row.sd_log == pytest.approx(np.log(one.lambda_max).std(ddof=1))
    arith = config_means(df.assign(lambda_max=df.lambda_max.where(df.index != 0, np.nan)), "lambda_max", geometric=False)
    assert arith.n_seeds.sum() == len(df) - 1


def test_fit_on_config_means_recovers_planted_exponents_with_coverage():
    # The stage's primary fit: OLS on the 9 config means (t with 6 df), 5 seeds per config.
    rng = np.random.default_rng(9)
    reps, cov_a, cov_b, found_b = 200, 0, 0, 0
    for _ in range(reps):
        f = scaling_law_fit(config_means(seeded_grid(rng, alpha=0.4, beta=0.2, noise=0.2), "lambda_max"), ci_level=0.9)
        cov_a += f.alpha_ci[0] <= 0.4 <= f.alpha_ci[1]
        cov_b += f.beta_ci[0] <= 0.2 <= f.beta_ci[1]
        found_b += f.p_beta_positive < 0.05
    assert_rate_near(cov_a, reps, 0.9)
    assert_rate_near(cov_b, reps, 0.9)
    assert found_b / reps > 0.9  # a planted beta of 0.2 per layer is found


def test_labelled_hypotheses_share_one_family():
    df = scaling_table(np.random.default_rng(10), alpha=0.6, beta=0.25, noise=0.1)
    fits = [scaling_law_fit(df), scaling_law_fit(df.assign(trace=df.lambda_max * 3), target="trace")]
    family = holm([h for f, lab in zip(fits, ("lambda_max", "trace")) for h in f.as_hypotheses(lab)])
    assert [h.name for h in family] == ["scaling[lambda_max:alpha]", "scaling[lambda_max:beta]", "scaling[trace:alpha]", "scaling[trace:beta]"]
    assert family[0].extra["holm_family_size"] == 4
    assert fits[1].alpha == pytest.approx(fits[0].alpha) and fits[1].log_a == pytest.approx(fits[0].log_a + np.log(3))


@pytest.mark.parametrize(
    "estimate, side, null, expected",
    [(0.5, "greater", 0.0, 0.0), (-0.5, "greater", 0.0, 1.0), (0.5, "less", 1.0, 0.0),
     (1.5, "less", 1.0, 1.0), (0.0, "greater", 0.0, 1.0)],
)
def test_t_tail_with_zero_standard_error_is_the_limit_of_the_t_test(estimate, side, null, expected):
    """An exact fit (SE exactly 0 on some CPUs, 1e-17 on others) gives the limiting p-value."""
    from landscape.stats._common import t_tail

    assert t_tail(estimate, 0.0, 7.0, side, null) == expected
    tiny = t_tail(estimate, 1e-17, 7.0, side, null)
    assert tiny == pytest.approx(expected, abs=1e-12) or (estimate == null and tiny == 0.5)


def test_t_tail_rejects_a_negative_or_nan_standard_error():
    from landscape.stats._common import t_tail

    with pytest.raises(ValueError, match="standard error must be finite"):
        t_tail(1.0, float("nan"), 3.0, "greater")
    with pytest.raises(ValueError, match="standard error must be finite"):
        t_tail(1.0, -1.0, 3.0, "greater")


def test_aic_differences_under_two_are_ties():
    from landscape.stats.scaling import aic_preference

    assert aic_preference(10.0, 10.35) == "tie" and aic_preference(10.35, 10.0) == "tie" and aic_preference(5.0, 6.99) == "tie"
    assert aic_preference(10.0, 12.0) == "exponential" and aic_preference(12.5, 10.0) == "power"
    assert aic_preference(float("nan"), 1.0) == "tie"  # no AIC separates nothing
    df = scaling_table(np.random.default_rng(5), alpha=0.6, beta=0.0, noise=0.3)  # no depth effect: both laws fit alike
    f = scaling_law_fit(df)
    assert abs(f.aic - f.aic_power) < 2 and f.preferred == "tie"
