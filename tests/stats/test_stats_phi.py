"""Phi statistics: Spearman interval coverage and size, search-vs-random on planted and null
choices, the stage summary on a planted grid."""

import math

import numpy as np
import pytest
from stats_synth import assert_rate_at_most, assert_rate_near

from landscape.stats.phi import choose_argmax, headline, search_vs_random, spearman_ci, summarise_search


def bivariate(rng, n, rho):
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


def test_spearman_interval_covers_the_population_rho():
    # bivariate normal: population Spearman rho_s = (6 / pi) arcsin(rho / 2)
    rng = np.random.default_rng(0)
    rho, n, reps = 0.6, 40, 400
    truth = 6 / math.pi * math.asin(rho / 2)
    hits = 0
    for _ in range(reps):
        r = spearman_ci(*bivariate(rng, n, rho))
        assert r.status == "ok" and r.n == n and r.ci_low < r.rho < r.ci_high
        hits += r.ci_low <= truth <= r.ci_high
    assert_rate_near(hits, reps, 0.95)


def test_spearman_no_effect_rarely_rejects():
    rng = np.random.default_rng(1)
    reps = 400
    rejections = sum(not (r.ci_low <= 0 <= r.ci_high) for r in (spearman_ci(*bivariate(rng, 25, 0.0)) for _ in range(reps)))
    assert_rate_at_most(rejections, reps, 0.05)


def test_spearman_drops_nonfinite_pairs_and_reports_small_n():
    r = spearman_ci([1, 2, np.nan, 4, 5, 6], [2, 1, 3, np.inf, 5, 7])
    assert r.n == 4 and r.rho == pytest.approx(0.8)
    assert spearman_ci([1, 2], [1, 2]).status.startswith("too few pairs")
    assert spearman_ci([1, 1, 1, 1], [1, 2, 3, 4]).status == "a variable is constant"
    with pytest.raises(ValueError, match="ci_level must be in"):
        spearman_ci([1, 2, 3], [1, 2, 3], ci_level=1.5)


def test_choose_argmax_skips_nan_and_fails_without_finite_values():
    assert choose_argmax([0.1, np.nan, 0.3, 0.2]) == 2
    with pytest.raises(ValueError, match="at least one finite entry"):
        choose_argmax([np.nan, np.nan])


def test_search_vs_random_exact_on_a_hand_example():
    cmp = search_vs_random([[0.1, 0.2, 0.3], [0.3, 0.3, 0.1]], [0, 1])
    # unit 0: diff 0.1 - 0.2, beats 2 of 3 plus itself as a tie; unit 1: 0.3 - 0.7/3, beats none, ties 2
    assert cmp.units[0]["diff"] == pytest.approx(-0.1) and cmp.units[0]["p_beat"] == pytest.approx(2.5 / 3)
    assert cmp.units[1]["diff"] == pytest.approx(0.3 - 0.7 / 3) and cmp.units[1]["p_beat"] == pytest.approx(1 / 3)
    assert cmp.n_units == 2 and cmp.grid_size == 3 and cmp.mean_oracle_error == pytest.approx(0.1)


def test_search_vs_random_finds_a_planted_good_choice():
    rng = np.random.default_rng(2)
    E = rng.uniform(0.05, 0.3, size=(12, 9))
    cmp = search_vs_random(E, E.argmin(1))
    assert cmp.verdict == "better than random" and cmp.diff_ci_high < 0 and cmp.diff_p_t < 0.001
    assert cmp.p_beat == pytest.approx(1 - 0.5 / 9) and cmp.mean_chosen_error == pytest.approx(cmp.mean_oracle_error)
    assert 0 <= cmp.p_beat_ci_low <= cmp.p_beat <= cmp.p_beat_ci_high <= 1
    worst = search_vs_random(E, E.argmax(1))
    assert worst.verdict == "worse than random" and worst.p_beat == pytest.approx(0.5 / 9)


def test_search_vs_random_uninformative_choice_has_no_false_finding():
    rng = np.random.default_rng(3)
    reps, units, grid = 300, 12, 9
    false, covered_half = 0, 0
    for _ in range(reps):
        E = rng.uniform(0.05, 0.3, size=(units, grid))
        cmp = search_vs_random(E, rng.integers(0, grid, units))
        false += cmp.verdict != "no difference detected"
        covered_half += cmp.p_beat_ci_low <= 0.5 <= cmp.p_beat_ci_high
    assert_rate_near(false, reps, 0.05)
    assert_rate_near(covered_half, reps, 0.95)


def test_search_vs_random_rejects_bad_input():
    with pytest.raises(ValueError, match="one grid index"):
        search_vs_random([[0.1, 0.2]], [2])
    with pytest.raises(ValueError, match="must be finite"):
        search_vs_random([[0.1, np.nan]], [0])
    with pytest.raises(ValueError, match="units, grid"):
        search_vs_random([0.1, 0.2], [0])


def planted_rows(rng, informative: bool):
    """2 data sets x 4 seeds x (2 widths x 2 depths); Phi decreases with the cell's error if informative."""
    rows = []
    for name, D in (("gm8", 8), ("gm32", 32)):
        for seed in range(4):
            for w in (8, 32):
                for L in (1, 2):
                    err = 0.1 + 0.05 * (w == 8) + 0.1 * (L == 2) + rng.normal(0, 0.005)
                    p = (1.0 - err if informative else rng.uniform()) + rng.normal(0, 0.001)
                    rows.append({"dataset": name, "source": "gaussian_mixture", "data_dim": D, "width": w, "depth": L, "seed": seed,
                                 "num_params": w * (D + 10), "status": "completed", "test_error": err, "phi": p, "init": {"phi": p}})
    return rows


def test_summary_on_a_planted_grid_picks_the_argmax_and_finds_the_gain():
    rng = np.random.default_rng(4)
    rows = planted_rows(rng, informative=True)
    s = summarise_search(rows, [], 0.95)
    for name in ("gm8", "gm32"):
        entry = s["per_dataset"][name]
        assert all(u["chosen"] == {"width": 32, "depth": 1} for u in entry["units"]) and len(entry["units"]) == 4
        assert entry["search_vs_random"]["verdict"] == "better than random"
        assert entry["spearman_init"]["rho"] < -0.8 and entry["spearman_init"]["n"] == 16
        assert entry["spearman_phi_num_params"]["n"] == 16
        assert {(c["width"], c["depth"]) for c in entry["cells"]} == {(8, 1), (8, 2), (32, 1), (32, 2)}
    assert s["pooled"]["n_units"] == 8 and s["pooled"]["verdict"] == "better than random"
    m = headline(s)
    assert m["search_n_units"] == 8 and m["search_verdict"] == "better than random" and m["rho_init_gm8"]["n"] == 16


def test_summary_leaves_out_units_with_a_diverged_candidate():
    rng = np.random.default_rng(5)
    rows = planted_rows(rng, informative=False)
    rows[0]["status"] = "diverged"  # gm8, seed 0
    s = summarise_search(rows, [], 0.95)
    assert [u["seed"] for u in s["per_dataset"]["gm8"]["units"]] == [1, 2, 3]
    assert s["pooled"]["n_units"] == 7
