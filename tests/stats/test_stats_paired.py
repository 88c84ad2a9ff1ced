"""H2 and H4 paired tests: scipy cross-checks, planted effects, coverage, size, errors."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from stats_synth import assert_rate_near, h2_table, h4_table

from landscape.stats import h2_skip_flattens, h4_bounds, paired_test


def test_paired_test_matches_scipy_and_hand_formulas():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 15), rng.normal(0.3, 1, 15)
    s = paired_test(x - y, "less", ci_level=0.9)
    ref = sps.ttest_rel(x, y, alternative="less")
    assert s.t == pytest.approx(ref.statistic, rel=1e-12)
    assert s.p_t == pytest.approx(ref.pvalue, rel=1e-12)
    assert s.p_wilcoxon == pytest.approx(sps.wilcoxon(x, y, alternative="less").pvalue, rel=1e-12)
    d = x - y
    half = sps.t.ppf(0.95, 14) * d.std(ddof=1) / np.sqrt(15)
    assert (s.ci_low, s.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    assert s.d_z == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    # the d_z interval inverts the noncentral t: at its ends the observed t sits at the quantiles
    assert sps.nct.cdf(s.t, 14, s.d_z_ci_low * np.sqrt(15)) == pytest.approx(0.95, abs=1e-8)
    assert sps.nct.cdf(s.t, 14, s.d_z_ci_high * np.sqrt(15)) == pytest.approx(0.05, abs=1e-8)
    assert s.d_z_ci_low < s.d_z < s.d_z_ci_high
    g = paired_test(d, "greater")
    assert g.p_t == pytest.approx(1 - s.p_t, rel=1e-9)


def test_paired_test_degenerate_differences():
    zero = paired_test(np.zeros(5), "less")
    assert zero.p_t == 1.0 and zero.p_wilcoxon == 1.0 and np.isnan(zero.d_z)
    const = paired_test(np.full(5, -0.2), "less")
    assert const.p_t == 0.0
    assert paired_test(np.full(5, 0.2), "less").p_t == 1.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.1, 0.2], "less"), "too few pairs"),
        (([0.1, 0.2, np.nan], "less"), "must be finite"),
        (([0.1, 0.2, 0.3], "lower"), "alternative must be 'less' or 'greater'"),
    ],
)
def test_paired_test_errors(args, match):
    with pytest.raises(ValueError, match=match):
        paired_test(*args)


# ---------------------------------------------------------------- H2


def test_h2_planted_effect_found_with_per_setting_tests():
    df = h2_table(np.random.default_rng(1), n_seeds=8, effect=-0.3)
    r = h2_skip_flattens(df, "lambda_max", log_scale=True)
    assert r.name == "H2[lambda_max]" and r.side == "less"
    assert r.supported and r.effect < 0 and r.ci_high < 0
    se = r.extra["paired"]["sd"] / np.sqrt(r.n_runs)
    assert abs(r.effect - (-0.3)) < 4 * se
    assert (r.n_runs, r.n_groups) == (24, 8)
    assert set(r.extra["by_setting"]) == {"none", "batchnorm", "layernorm"}
    assert all(v["n"] == 8 for v in r.extra["by_setting"].values())
    assert r.extra["ratio_skip_over_noskip"] == pytest.approx(np.exp(r.effect))
    assert r.extra["p_wilcoxon"] < 0.05


def test_h2_pairs_by_keys_not_by_row_order():
    df = h2_table(np.random.default_rng(2), n_seeds=6, effect=-0.2)
    r1 = h2_skip_flattens(df, "lambda_max", log_scale=True)
    r2 = h2_skip_flattens(df.sample(frac=1.0, random_state=3), "lambda_max", log_scale=True)
    assert r1.effect == pytest.approx(r2.effect, rel=1e-12)
    assert r1.p_value == pytest.approx(r2.p_value, rel=1e-12)
    wide = df.assign(v=np.log(df.lambda_max)).pivot_table(index=["norm", "seed"], columns="skip", values="v")
    assert r1.effect == pytest.approx((wide[True] - wide[False]).mean(), rel=1e-12)


def test_h2_pairing_beats_the_large_pair_effect():
    # pair effects have sd 1, the planted effect is 0.25: an unpaired t-test misses it
    df = h2_table(np.random.default_rng(4), n_seeds=10, effect=-0.25, noise=0.1)
    r = h2_skip_flattens(df, "lambda_max", log_scale=True)
    v = np.log(df.lambda_max)
    unpaired = sps.ttest_ind(v[df.skip], v[~df.skip], alternative="less").pvalue
    assert r.p_value < 1e-4 < unpaired


def test_h2_unpaired_rows_counted_and_raw_scale():
    df = h2_table(np.random.default_rng(5), n_seeds=6, effect=-0.2)
    df = df.drop(index=df.index[(df.norm == "none") & (df.seed == 0) & df.skip])
    r = h2_skip_flattens(df, "lambda_max")
    assert r.n_runs == 17 and r.extra["n_unpaired_rows"] == 1
    assert not r.extra["log_scale"] and np.isnan(r.extra["ratio_skip_over_noskip"])


def test_h2_wilcoxon_as_primary():
    df = h2_table(np.random.default_rng(6), n_seeds=6, effect=-0.3)
    r = h2_skip_flattens(df, "lambda_max", log_scale=True, test="wilcoxon")
    assert r.p_value == r.extra["p_wilcoxon"] and "Wilcoxon" in r.test


def test_h2_coverage_of_mean_difference_and_effect_size():
    rng = np.random.default_rng(7)
    true_dz = -0.2 / (0.2 * np.sqrt(2))  # mean / sd of the difference of two N(., 0.2^2)
    reps, covered, covered_dz = 150, 0, 0
    for _ in range(reps):
        df = h2_table(rng, 12, effect=-0.2, norms=("none",))
        r = h2_skip_flattens(df, "lambda_max", log_scale=True, ci_level=0.9)
        covered += r.ci_low <= -0.2 <= r.ci_high
        lo, hi = r.extra["cohens_dz_ci"]
        covered_dz += lo <= true_dz <= hi
    assert_rate_near(covered, reps, 0.9)
    assert_rate_near(covered_dz, reps, 0.9)


def test_h2_false_positive_rate_near_alpha_for_both_tests():
    rng = np.random.default_rng(8)
    reps, hits_t, hits_w = 300, 0, 0
    for _ in range(reps):
        r = h2_skip_flattens(h2_table(rng, 15, effect=0.0, norms=("none",)), "lambda_max", log_scale=True)
        hits_t += r.supported
        hits_w += r.extra["p_wilcoxon"] <= 0.05
    assert_rate_near(hits_t, reps, 0.05)
    # exact signed-rank null on 15 pairs is discrete: P(p <= 0.05) = 0.0473
    assert_rate_near(hits_w, reps, 0.05)


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda d: d.drop(columns="norm"), {}, r"missing column\(s\) \['norm'\]"),
        (lambda d: d[(d.seed < 1) & (d.norm != "none")], {}, "too few seeds: 2 complete"),
        (lambda d: d.assign(seed=0), {}, "rows share the same"),
        (lambda d: d.assign(skip=d.skip.map({True: "yes", False: "no"})), {}, "must hold booleans"),
        (lambda d: d[d.skip], {}, "both skip=True and skip=False"),
        (lambda d: d.assign(lambda_max=0.0), {"log_scale": True}, "must be > 0"),
        (lambda d: d, {"test": "sign"}, "test must be one of"),
        (lambda d: d, {"pair_on": ("skip", "seed")}, "must not contain"),
        (lambda d: d, {"pair_on": ()}, "at least one column"),
    ],
)
def test_h2_errors(mutate, kwargs, match):
    df = h2_table(np.random.default_rng(9), n_seeds=4, effect=-0.2)
    with pytest.raises(ValueError, match=match):
        h2_skip_flattens(mutate(df), "lambda_max", **kwargs)


def test_h2_accepts_zero_one_skip_and_other_measures():
    df = h2_table(np.random.default_rng(10), n_seeds=5, effect=-0.4)
    df = df.assign(skip=df.skip.astype(int), barrier=np.log(df.lambda_max))
    r = h2_skip_flattens(df, "barrier")
    assert r.name == "H2[barrier]" and r.supported


# ---------------------------------------------------------------- H4


def test_h4_planted_effect_found():
    df = h4_table(np.random.default_rng(11), 30, d_naive=-0.2, d_iso=-0.05)
    r = h4_bounds(df)
    assert r.supported and r.effect < 0
    assert r.extra["binding_baseline"] == "bound_iso"  # the harder comparison
    se = r.extra["comparisons"]["bound_iso"]["sd"] / np.sqrt(r.n_runs)
    assert abs(r.effect - (-0.05)) < 4 * se
    comps = r.extra["comparisons"]
    assert r.p_value == max(c["p_t"] for c in comps.values())
    assert comps["bound_naive"]["mean"] == pytest.approx((df.bound_hessian - df.bound_naive).mean())


def test_h4_not_supported_when_one_baseline_is_not_beaten():
    df = h4_table(np.random.default_rng(12), 30, d_naive=-0.3, d_iso=0.05)
    r = h4_bounds(df)
    assert not r.supported and r.extra["binding_baseline"] == "bound_iso"
    assert r.extra["comparisons"]["bound_naive"]["p_t"] < 1e-6


def test_h4_size_at_the_least_favourable_null_and_coverage():
    # naive clearly beaten, iso tied: the intersection-union test has size alpha here
    rng = np.random.default_rng(13)
    reps, hits, covered = 300, 0, 0
    for _ in range(reps):
        r = h4_bounds(h4_table(rng, 12, d_naive=-0.3, d_iso=0.0))
        hits += r.supported
        covered += r.ci_low <= 0.0 <= r.ci_high
    assert_rate_near(hits, reps, 0.05)
    assert_rate_near(covered, reps, 0.95)


def test_h4_single_baseline_and_wilcoxon():
    df = h4_table(np.random.default_rng(14), 20, d_naive=-0.2, d_iso=0.0)
    r = h4_bounds(df, baselines=("bound_naive",), test="wilcoxon", group=None)
    assert r.supported and r.n_groups == 20
    assert r.p_value == r.extra["comparisons"]["bound_naive"]["p_wilcoxon"]


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda d: d.drop(columns="bound_iso"), {}, r"missing column\(s\) \['bound_iso'\]"),
        (lambda d: d.iloc[:2], {}, "too few runs"),
        (lambda d: d, {"baselines": ()}, "at least one column"),
        (lambda d: d, {"baselines": ("bound_hessian",)}, "cannot also be a baseline"),
        (lambda d: d, {"ci_level": 95}, r"ci_level must be in \(0, 1\)"),
    ],
)
def test_h4_errors(mutate, kwargs, match):
    df = h4_table(np.random.default_rng(15), 10, d_naive=-0.1, d_iso=-0.1)
    with pytest.raises(ValueError, match=match):
        h4_bounds(mutate(df), **kwargs)


def test_h4_drops_nonfinite_runs():
    df = h4_table(np.random.default_rng(16), 10, d_naive=-0.1, d_iso=-0.1)
    df.loc[3, "bound_iso"] = np.nan
    r = h4_bounds(pd.DataFrame(df))
    assert r.n_runs == 9 and r.extra["n_dropped_nonfinite"] == 1
