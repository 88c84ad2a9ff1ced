"""H4 with its replication: planted effects on both seed sets, a planted null on one, power against simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from landscape.stats.bounds_h4 import LITERATURE, h4_replicated, paired_t_power

COLS = dict(bound="bound_curvature", baselines=["bound_occam", "bound_isotropic"])


def _table(rng: np.random.Generator, seeds: range, d_occam: float, d_iso: float, noise: float = 0.01) -> pd.DataFrame:
    base = rng.uniform(0.2, 0.4, len(seeds))
    return pd.DataFrame({
        "seed": list(seeds),
        "bound_curvature": base,
        "bound_occam": base - d_occam + rng.normal(0.0, noise, len(seeds)),
        "bound_isotropic": base - d_iso + rng.normal(0.0, noise, len(seeds)),
        "bound_holdout_prior": base + 0.1,
    })


def test_supported_when_both_seed_sets_show_the_planted_effect():
    rng = np.random.default_rng(0)
    df = pd.concat([_table(rng, range(5), -0.6, -0.03), _table(rng, range(5, 10), -0.6, -0.03)])
    r = h4_replicated(df, **COLS, primary_seeds=range(5), replication_seeds=range(5, 10), describe=["bound_holdout_prior"])
    assert r.n_runs == 5 and r.supported
    assert r.extra["replication"]["n_runs"] == 5 and r.extra["replication"]["supported"]
    assert r.extra["replication_verdict"] == "supported"
    assert r.ci_low <= -0.03 <= r.ci_high  # binding baseline: isotropic, planted -0.03
    assert r.extra["bounds_primary"]["bound_holdout_prior"]["n"] == 5
    assert set(r.extra["power_at_literature_effect"]) == {"bound_occam", "bound_isotropic"}


def test_inconclusive_when_the_replication_shows_nothing():
    rng = np.random.default_rng(1)
    df = pd.concat([_table(rng, range(5), -0.6, -0.03), _table(rng, range(5, 10), -0.6, +0.03)])
    r = h4_replicated(df, **COLS, primary_seeds=range(5), replication_seeds=range(5, 10))
    assert r.supported and not r.extra["replication"]["supported"]
    assert r.extra["replication_verdict"] == "inconclusive"
    assert "primary" in r.extra["replication_verdict_reason"]


def test_not_supported_on_both_and_missing_replication():
    rng = np.random.default_rng(2)
    df = pd.concat([_table(rng, range(5), -0.6, +0.05), _table(rng, range(5, 10), -0.6, +0.05)])
    r = h4_replicated(df, **COLS, primary_seeds=range(5), replication_seeds=range(5, 10))
    assert r.extra["replication_verdict"] == "not supported"
    alone = h4_replicated(df[df.seed < 5], **COLS, primary_seeds=range(5), replication_seeds=[])
    assert alone.extra["replication"] is None and alone.extra["replication_verdict"] == "inconclusive"
    with pytest.raises(ValueError, match="must be disjoint"):
        h4_replicated(df, **COLS, primary_seeds=range(5), replication_seeds=range(4, 10))


def test_power_matches_simulated_rejection_rate():
    # The one-sided paired t-test at n = 5, sd = 0.02 and true mean -0.02: simulated rejections.
    rng = np.random.default_rng(3)
    n, sd, effect, reps = 5, 0.02, -0.02, 20000
    d = rng.normal(effect, sd, (reps, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    rate = float((sps.t.cdf(t, n - 1) <= 0.05).mean())
    assert paired_t_power(effect, sd, n) == pytest.approx(rate, abs=4 * np.sqrt(rate * (1 - rate) / reps))
    assert paired_t_power(0.0, sd, n) == pytest.approx(0.05, rel=1e-9)  # size at the null
    assert np.isnan(paired_t_power(-0.1, 0.0, 5)) and np.isnan(paired_t_power(-0.1, 0.1, 1))
    assert LITERATURE["occam"][0] < LITERATURE["isotropic"][0] < 0
