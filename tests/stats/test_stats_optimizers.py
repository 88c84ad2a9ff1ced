"""The optimizer comparison table and its paired tests, on synthetic runs with known truth.

Planted effects are found with the right sign and intervals that cover the truth; without an
effect the Holm-corrected family makes no false finding beyond its level over repeats;
diverged runs are counted, listed and kept out of the means, never silently dropped.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from stats_synth import assert_rate_at_most, assert_rate_near

from landscape.stats.optimizers import (
    compare_divergence,
    compare_test_error,
    newcombe_paired_interval,
    summarize_configs,
)
from landscape.stats.intervals import wilson
from landscape.stats.multiple import holm_adjust

def _table(rng: np.random.Generator, n_seeds: int, effect: float, noise: float = 0.004, diverged: dict | None = None) -> pd.DataFrame:
    """Runs of one level: seed-shared difficulty plus independent noise; ``effect`` added to
    the curvature-adaptive runs' test error; ``diverged`` maps optimizer -> diverged seeds."""
    diverged = diverged or {}
    base = 0.08 + rng.normal(0.0, 0.01, n_seeds)
    rows = []
    for opt, shift in (("sgd", 0.0), ("curvature_adaptive", effect)):
        err = base + shift + rng.normal(0.0, noise, n_seeds)
        for s in range(n_seeds):
            div = s in diverged.get(opt, ())
            rows.append({"config": f"{opt}_normal", "level": "normal", "optimizer": opt, "lr": 0.05, "seed": s,
                         "status": "diverged" if div else "completed", "test_error": math.nan if div else float(err[s]),
                         "steps": 100, "diverged_step": 7 if div else None, "epochs_completed": 0 if div else 3,
                         "seconds": 1.0, "hvps": 30.0 if opt != "sgd" else 0.0})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ paired test error


def test_planted_difference_is_found_with_the_right_sign_and_covered():
    rng = np.random.default_rng(0)
    truth, repeats = -0.01, 300
    found = covered = 0
    for _ in range(repeats):
        res = compare_test_error(_table(rng, 5, truth), "normal", "curvature_adaptive", "sgd")
        found += res.supported and res.effect < 0
        covered += res.ci_low <= truth <= res.ci_high
    # paired sd of the difference = 0.004 sqrt(2), n = 5: power of the two-sided t-test ~ 0.96
    power = 1 - sps.nct.cdf(sps.t.ppf(0.975, 4), 4, abs(truth) / (0.004 * math.sqrt(2) / math.sqrt(5)))
    assert_rate_near(found, repeats, power)
    assert_rate_near(covered, repeats, 0.95)


def test_no_difference_gives_no_false_finding_over_repeats():
    rng = np.random.default_rng(1)
    repeats, hits = 300, 0
    for _ in range(repeats):
        family = [compare_test_error(_table(rng, 5, 0.0), "normal", "curvature_adaptive", "sgd") for _ in range(3)]
        hits += bool(np.any(holm_adjust([r.p_value for r in family]) <= 0.05))
    assert_rate_at_most(hits, repeats, 0.05)


def test_diverged_seeds_are_left_out_of_the_pairs_and_listed():
    rng = np.random.default_rng(2)
    runs = _table(rng, 5, -0.01, diverged={"sgd": [1, 3]})
    res = compare_test_error(runs, "normal", "curvature_adaptive", "sgd")
    assert res.n_runs == 3
    assert res.extra["excluded_seeds"] == [{"seed": 1, "diverged": ["sgd"]}, {"seed": 3, "diverged": ["sgd"]}]
    kept = runs[runs.seed.isin([0, 2, 4])]
    d = (kept[kept.optimizer == "curvature_adaptive"].test_error.to_numpy() - kept[kept.optimizer == "sgd"].test_error.to_numpy())
    assert res.effect == pytest.approx(d.mean(), abs=1e-12)
    assert res.p_value == pytest.approx(sps.ttest_rel(kept[kept.optimizer == "curvature_adaptive"].test_error,
                                                      kept[kept.optimizer == "sgd"].test_error).pvalue, rel=1e-9)
    too_few = compare_test_error(_table(rng, 5, -0.01, diverged={"sgd": [0, 1, 2]}), "normal", "curvature_adaptive", "sgd")
    assert too_few["status"] == "not tested: 2 seed(s) with both runs completed, need >= 3"
    assert [e["seed"] for e in too_few["extra"]["excluded_seeds"]] == [0, 1, 2]


# ------------------------------------------------------------------ divergence


def test_divergence_counts_wilson_interval_and_mcnemar():
    runs = _table(np.random.default_rng(3), 5, 0.0, diverged={"sgd": [0, 2, 4], "curvature_adaptive": [2]})
    table = {s.optimizer: s for s in summarize_configs(runs)}
    sgd = table["sgd"]
    assert (sgd.n_runs, sgd.n_completed, sgd.n_diverged, sgd.diverged_seeds, sgd.test_error_n) == (5, 2, 3, (0, 2, 4), 2)
    # Wilson score interval by its closed form, z = 1.96
    z, k, n = sps.norm.ppf(0.975), 3, 5
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    assert (sgd.divergence_rate, sgd.divergence_ci_low, sgd.divergence_ci_high) == pytest.approx((0.6, centre - half, centre + half), abs=1e-12)
    done = runs[(runs.optimizer == "sgd") & (runs.status == "completed")]
    assert sgd.test_error_mean == pytest.approx(done.test_error.mean(), abs=1e-12)
    res = compare_divergence(runs, "normal", "curvature_adaptive", "sgd")
    # seed 2: both; seeds 0, 4: sgd only; exact McNemar = two-sided binomial on 2 discordant seeds
    assert (res.extra["both_diverged"], res.extra["only_treated_diverged"], res.extra["only_reference_diverged"]) == (1, 0, 2)
    assert res.effect == pytest.approx(1 / 5 - 3 / 5)
    assert res.p_value == pytest.approx(sps.binomtest(0, 2, 0.5).pvalue)
    assert res.ci_low <= res.effect <= res.ci_high and -1 <= res.ci_low and res.ci_high <= 1


def test_newcombe_interval_covers_the_paired_difference():
    """Correlated pairs: y1 ~ Bern(0.3), y2 | y1 ~ Bern(0.4 if y1 else 0.1), so p2 = 0.19."""
    rng = np.random.default_rng(4)
    n, repeats = 40, 400
    truth = 0.3 - (0.3 * 0.4 + 0.7 * 0.1)
    covered = 0
    for _ in range(repeats):
        y1 = rng.random(n) < 0.3
        y2 = rng.random(n) < np.where(y1, 0.4, 0.1)
        a, b, c, d = int((y1 & y2).sum()), int((y1 & ~y2).sum()), int((~y1 & y2).sum()), int((~y1 & ~y2).sum())
        theta, lo, hi = newcombe_paired_interval(a, b, c, d, 0.95)
        assert theta == pytest.approx(y1.mean() - y2.mean()) and lo <= theta <= hi
        covered += lo <= truth <= hi
    assert_rate_near(covered, repeats, 0.95, conf=0.999)
    with pytest.raises(ValueError, match=r"counts must be non-negative ints"):
        newcombe_paired_interval(0, 0, 0, 0)


def test_wilson_of_no_runs_is_undefined():
    assert all(math.isnan(v) for v in wilson(0, 0, 0.95))
