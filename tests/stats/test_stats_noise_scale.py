"""H1 at equal train loss: planted eta/B and B effects on a crossed grid are recovered with
covering intervals, B is told apart from eta/B, the replication rides along, and a planted
indirect effect through log lambda_max is recovered by the mediation model on this design."""

import numpy as np
import pandas as pd
import pytest

from landscape.stats.mediation import h1_batch_sharpness
from landscape.stats.multiple import holm_records
from landscape.stats.noise_scale import LITERATURE, h1_noise_scale
from landscape.stats.replication import replicated_records
from tests.stats.stats_synth import assert_rate_at_most, assert_rate_near

BATCHES = (16, 64, 256)
RATIOS = (0.4 / 1024, 0.4 / 512, 0.4 / 256)  # the default profile's grid


def grid(rng, seeds, beta, gamma, noise=0.05, seed_sd=0.1, log_outcome=False):
    rows = []
    for s in seeds:
        u = rng.normal(0, seed_sd)
        for b in BATCHES:
            for r in RATIOS:
                y = 0.2 + beta * np.log2(r) + gamma * np.log2(b) + u + rng.normal(0, noise)
                rows.append({"seed": s, "batch_size": b, "lr": r * b, "y": 2.0**y if log_outcome else y})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("log_outcome", [False, True], ids=["raw", "log2"])
def test_planted_slopes_are_covered_at_the_nominal_rate(log_outcome):
    rng = np.random.default_rng(0)
    repeats, hits_beta, hits_gamma = 300, 0, 0
    for _ in range(repeats):
        df = grid(rng, range(5), beta=-0.3, gamma=0.1, log_outcome=log_outcome)
        r = h1_noise_scale(df, outcome="y", log_outcome=log_outcome, primary_seeds=range(5))
        hits_beta += r.ci_low <= -0.3 <= r.ci_high
        g = r.extra["batch_effect"]
        hits_gamma += g["ci_low"] <= 0.1 <= g["ci_high"]
    assert_rate_near(hits_beta, repeats, 0.95)
    assert_rate_near(hits_gamma, repeats, 0.95)


def test_size_under_the_null_and_b_told_apart_from_the_noise_scale():
    """beta = 0 while B has a strong effect: the one-sided test of beta keeps its level, and
    gamma is found (a B-only world is not read as a noise-scale effect)."""
    rng = np.random.default_rng(1)
    repeats, rejections, gamma_found = 300, 0, 0
    for _ in range(repeats):
        r = h1_noise_scale(grid(rng, range(5), beta=0.0, gamma=0.2), outcome="y", log_outcome=False, primary_seeds=range(5))
        rejections += r.supported
        gamma_found += r.extra["batch_effect"]["ci_low"] > 0
    assert_rate_at_most(rejections, repeats, 0.05)
    assert gamma_found >= 0.95 * repeats


def test_replication_and_the_verdict_rule():
    rng = np.random.default_rng(2)
    df = grid(rng, range(10), beta=-0.3, gamma=0.0)
    r = h1_noise_scale(df, outcome="y", log_outcome=False, primary_seeds=range(5), replication_seeds=range(5, 10),
                       name="H1[y]", literature_effect=-0.3, literature_source="planted")
    assert r.n_groups == 5 and r.n_runs == 45 and r.extra["seeds"] == [0, 1, 2, 3, 4]
    rep = r.extra["replication"]
    assert rep["n_groups"] == 5 and rep["extra"]["seeds"] == [5, 6, 7, 8, 9]
    assert 0.9 < r.extra["power_at_literature_effect"] <= 1.0  # 45 runs, noise 0.05: a slope of -0.3 is found
    [record] = replicated_records(holm_records([r], 0.05))
    assert record["verdict"] == "supported" and record["replication"]["ci_high"] < 0
    # the replication seeds carry no effect: the rule says inconclusive
    null_rep = pd.concat([df[df.seed < 5], grid(rng, range(5, 10), beta=0.0, gamma=0.0, noise=0.5)])
    r2 = h1_noise_scale(null_rep, outcome="y", log_outcome=False, primary_seeds=range(5), replication_seeds=range(5, 10))
    [record2] = replicated_records(holm_records([r2], 0.05))
    assert record2["verdict"] == "inconclusive", record2["verdict_detail"]


def test_literature_effects_are_stated():
    effect, source = LITERATURE["test_error"]
    assert effect == pytest.approx(-0.0022 / np.log2(6000 / 256)) and "Keskar" in source
    assert LITERATURE["lambda_max"][0] == -1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"replication_seeds": [4, 5]}, "overlap"), ({"outcome": "missing"}, "missing"),
     ({"primary_seeds": [0]}, "too few seeds")],
)
def test_bad_input(kwargs, match):
    df = grid(np.random.default_rng(3), range(6), beta=-0.1, gamma=0.0)
    args = {"outcome": "y", "log_outcome": False, "primary_seeds": range(5), **kwargs}
    with pytest.raises(ValueError, match=match):
        h1_noise_scale(df, **args)


def test_no_variation_in_batch_is_refused():
    df = grid(np.random.default_rng(4), range(5), beta=-0.1, gamma=0.0)
    with pytest.raises(ValueError, match="log2_batch must take >= 2 distinct values"):
        h1_noise_scale(df[df.batch_size == 64], outcome="y", log_outcome=False, primary_seeds=range(5))


def test_planted_indirect_effect_through_lambda_max_is_covered():
    """Must-show: a simulated H1 mediation on this design (log2 lambda = a log2(B/eta) + ...,
    test error = b log2 lambda + ...) with a known indirect effect a*b; the mediation model's
    Monte Carlo interval (5 seeds: fixed effects) covers it at about the nominal rate."""
    rng = np.random.default_rng(5)
    a, b, repeats, hits = 0.5, 0.01, 200, 0
    log_indirect = a * b  # per unit log(B/eta): the model's treatment enters as its natural log
    for _ in range(repeats):
        rows = []
        for s in range(5):
            u = rng.normal(0, 0.1)
            for bs in BATCHES:
                for r in RATIOS:
                    t = np.log(bs / (r * bs))  # ln(B/eta) = -ln(eta/B)
                    log_lam = 0.3 + a * t + 0.05 * np.log(bs) + u + rng.normal(0, 0.1)
                    err = 0.02 + b * log_lam + rng.normal(0, 0.002)
                    rows.append({"seed": s, "inv_noise": bs / (r * bs), "lambda_max": np.exp(log_lam), "test_error": err,
                                 "log_batch": np.log(bs)})
        res = h1_batch_sharpness(pd.DataFrame(rows), treatment="inv_noise", covariates=("log_batch",), n_boot=400,
                                 seed=int(rng.integers(1 << 30)))
        hits += res.ci_low <= log_indirect <= res.ci_high
    assert_rate_near(hits, repeats, 0.95)
