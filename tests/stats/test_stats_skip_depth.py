"""H2's tests on planted truth: the depth x skip interaction (recovered, covering intervals,
size), the normalisation arms, and the shared-seed barrier test (level on null data with seed
effects, where treating pairs as independent over-rejects)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from stats_synth import assert_rate_at_most, assert_rate_near

from landscape.stats.result import HypothesisResult
from landscape.stats.skip_depth import (
    all_pairs,
    depth_skip_interaction,
    interaction_power,
    norm_flattens,
    pair_seeds,
    shared_seed_barrier_test,
)

DEPTHS = np.array([2.0, 4.0, 8.0, 16.0])


def depth_table(rng: np.random.Generator, n_seeds: int, b2: float, b3: float, noise: float = 0.2,
                seed_sd: float = 0.3, seeds_from: int = 0) -> pd.DataFrame:
    """log lambda = 1 + 0.3 x + b2 s + b3 s x + u_seed + N(0, noise^2), x = log2(depth) - 2.5
    (the mean of log2 over DEPTHS), plus train loss and test error columns."""
    rows = []
    u = rng.normal(0.0, seed_sd, n_seeds)
    for k in range(n_seeds):
        for d in DEPTHS:
            for s in (True, False):
                x = math.log2(d) - 2.5
                log_lam = 1.0 + 0.3 * x + b2 * s + b3 * s * x + u[k] + rng.normal(0.0, noise)
                rows.append({"seed": seeds_from + k, "depth": int(d), "skip": s, "lambda_max": math.exp(log_lam),
                             "train_loss": 0.01 * (1 + x), "test_error": 0.05})
    return pd.DataFrame(rows)


def test_noise_free_interaction_is_recovered_exactly() -> None:
    df = depth_table(np.random.default_rng(0), 4, b2=-0.5, b3=-0.25, noise=0.0)
    r = depth_skip_interaction(df)
    assert r.effect == pytest.approx(-0.25, abs=1e-9)
    assert r.extra["skip_effect_at_mean_depth"] == pytest.approx(-0.5, abs=1e-9)
    assert r.extra["ratio_change_per_doubling"] == pytest.approx(math.exp(-0.25), rel=1e-9)
    for d, entry in r.extra["per_depth"].items():  # the skip effect at each depth: b2 + b3 x_d
        assert entry["log_ratio"] == pytest.approx(-0.5 - 0.25 * (math.log2(int(d)) - 2.5), abs=1e-9)
    assert r.supported and r.p_value == 0.0
    cell = next(c for c in r.extra["cells"] if c["depth"] == 16 and c["skip"])
    assert cell["n"] == 4 and cell["mean_train_loss"] == pytest.approx(0.025)


def test_planted_interaction_is_found_with_its_interval() -> None:
    df = depth_table(np.random.default_rng(1), 5, b2=-0.3, b3=-0.4)
    r = depth_skip_interaction(df, effect_of_interest=-0.4)
    assert isinstance(r, HypothesisResult)
    assert r.supported and r.ci_low < -0.4 < r.ci_high and r.ci_high < 0
    assert (r.n_runs, r.n_groups) == (40, 5) and r.extra["inference"] == "fixed-effects"
    assert r.extra["df"] == 40 - 4 - 4  # const, log2 depth, skip, interaction, 4 seed effects
    assert 0.9 < r.extra["power"]["power"] <= 1.0


@pytest.mark.parametrize("b3", [-0.2, 0.0])
def test_interval_covers_the_planted_interaction(b3: float) -> None:
    rng = np.random.default_rng(2)
    reps, hits, rejections = 300, 0, 0
    for _ in range(reps):
        r = depth_skip_interaction(depth_table(rng, 5, b2=-0.1, b3=b3), beside=(), adjust=())
        hits += r.ci_low <= b3 <= r.ci_high
        rejections += r.p_value <= 0.05
    assert_rate_near(hits, reps, 0.95)
    if b3 == 0.0:  # the one-sided test keeps its level under the null
        assert_rate_near(rejections, reps, 0.05)


def test_a_flattening_that_does_not_grow_with_depth_is_not_an_interaction() -> None:
    df = depth_table(np.random.default_rng(3), 5, b2=-1.0, b3=0.0, noise=0.01)
    r = depth_skip_interaction(df)
    assert not r.supported and r.extra["skip_effect_at_mean_depth"] == pytest.approx(-1.0, abs=0.02)


def test_power_follows_the_noncentral_t() -> None:
    assert interaction_power(0.0, 1.0, 30, 0.05) == pytest.approx(0.05, abs=1e-12)
    assert interaction_power(-10.0, 1.0, 30, 0.05) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(interaction_power(-1.0, 0.0, 30, 0.05))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda df: df.assign(skip=True), "need runs with both skip=True and skip=False"),
        (lambda df: df.assign(depth=4), "'depth' must take >= 2 distinct values"),
        (lambda df: df.assign(lambda_max=-1.0), "lambda_max"),
        (lambda df: df.drop(columns="seed"), r"missing column\(s\) \['seed'\]"),
        (lambda df: df.assign(skip="yes"), "column 'skip' must hold booleans"),
    ],
)
def test_interaction_rejects_bad_tables(edit, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        depth_skip_interaction(edit(depth_table(np.random.default_rng(0), 3, 0.0, 0.0)))


# ---------------------------------------------------------------- normalisation arms


def norm_table(rng: np.random.Generator, n_seeds: int, log_ratios: dict[str, float], noise: float = 0.1) -> pd.DataFrame:
    rows = []
    for k in range(n_seeds):
        u = rng.normal(0.0, 0.5)
        for arm, eff in {"none": 0.0, **log_ratios}.items():
            rows.append({"seed": k, "norm": arm, "lambda_max": math.exp(2.0 + eff + u + rng.normal(0.0, noise))})
    return pd.DataFrame(rows)


def test_norm_arms_intersection_union() -> None:
    both = norm_flattens(norm_table(np.random.default_rng(0), 6, {"bn": -1.0, "ln": -0.5}))
    assert both.supported and both.extra["binding_arm"] == "ln"
    assert both.ci_low < -0.5 < both.ci_high
    assert both.extra["arms"]["bn"]["ratio"] == pytest.approx(math.exp(-1.0), rel=0.15)
    one = norm_flattens(norm_table(np.random.default_rng(0), 6, {"bn": 1.0, "ln": -0.5}))
    assert not one.supported and one.extra["binding_arm"] == "bn" and one.effect > 0
    with pytest.raises(ValueError, match=r"need the reference arm 'none' and at least one other; got \['bn'\]"):
        norm_flattens(norm_table(np.random.default_rng(0), 4, {"bn": 1.0}).query("norm == 'bn'"))


# ---------------------------------------------------------------- barriers over shared seeds


def barrier_table(rng: np.random.Generator, seeds: list[int], effect: float, seed_sd: float = 1.0,
                  pair_sd: float = 0.3) -> pd.DataFrame:
    """barrier(arch; i, j) = 1 + effect [arch = skip] + a_i + a_j + e_ij: seeds shared by pairs."""
    a = {s: rng.normal(0.0, seed_sd) for s in seeds}
    rows = []
    for key in all_pairs(seeds):
        i, j = pair_seeds(key)
        for skip in (True, False):
            rows.append({"pair": key, "skip": skip, "norm": "bn",
                         "barrier": 1.0 + effect * skip + (a[i] + a[j] if skip else 0.0) + rng.normal(0.0, pair_sd)})
    return pd.DataFrame(rows)


def test_jackknife_by_hand() -> None:
    df = barrier_table(np.random.default_rng(0), [0, 1, 2, 3], 0.0)
    r = shared_seed_barrier_test(df)
    d = {k: g.loc[g.skip, "barrier"].item() - g.loc[~g.skip, "barrier"].item() for k, g in df.groupby("pair")}
    loo = [np.mean([v for k, v in d.items() if str(s) not in k.replace("s", "").split("-")]) for s in range(4)]
    se = math.sqrt(3 / 4 * sum((x - np.mean(loo)) ** 2 for x in loo))
    assert r.effect == pytest.approx(np.mean(list(d.values())), abs=1e-12)
    assert r.extra["jackknife_se"] == pytest.approx(se, rel=1e-12)
    assert (r.n_runs, r.n_groups) == (6, 4)


@pytest.mark.parametrize("seed_sd, pair_sd", [(1.0, 0.3), (0.0, 1.0)])
def test_shared_seed_test_keeps_its_level_where_the_naive_test_does_not(seed_sd: float, pair_sd: float) -> None:
    rng = np.random.default_rng(5)
    reps, jack, naive = 400, 0, 0
    for _ in range(reps):
        r = shared_seed_barrier_test(barrier_table(rng, [0, 1, 2, 3, 4], 0.0, seed_sd, pair_sd))
        jack += r.p_value <= 0.05
        naive += r.extra["naive_pairs_independent"]["p_t"] <= 0.05
    assert_rate_at_most(jack, reps, 0.05)
    if seed_sd > 0:  # seed effects shared by pairs: the pairs-as-independent t-test over-rejects
        assert naive > 2 * 0.05 * reps, naive / reps


def test_shared_seed_test_finds_a_planted_barrier_drop() -> None:
    r = shared_seed_barrier_test(barrier_table(np.random.default_rng(6), list(range(5)), -1.5, seed_sd=0.2))
    assert r.supported and r.ci_low < -1.5 < r.ci_high


def test_barrier_table_errors() -> None:
    df = barrier_table(np.random.default_rng(0), [0, 1, 2], 0.0)
    with pytest.raises(ValueError, match="too few seeds: 3 seeds in the matched pairs, the jackknife needs >= 4"):
        shared_seed_barrier_test(df)
    with pytest.raises(ValueError, match="pair key must look like 's<i>-s<j>', got '0-1'"):
        pair_seeds("0-1")
    assert [pair_seeds(k) for k in all_pairs([3, 1, 2])] == list(itertools.combinations([1, 2, 3], 2))
