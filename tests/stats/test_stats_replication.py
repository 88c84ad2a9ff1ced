"""Replication verdict rule and t-test power (planted: simulated t-tests at a known effect)."""

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats import HypothesisResult
from landscape.stats.replication import replication_verdict, significant, t_test_power
from tests.stats.stats_synth import assert_rate_near


def make(effect=-0.5, p=0.01, side="less", ci=None):
    lo, hi = ci if ci is not None else (effect - 0.3, effect + 0.3)
    return HypothesisResult.build(name="H", null="n", alternative="a", test="t", n_runs=10, n_groups=5, effect=effect,
                                  ci_low=lo, ci_high=hi, p_value=p, side=side, requires_ci_excluding_null=True)


@pytest.mark.parametrize(
    ("primary", "replication", "verdict"),
    [
        (make(), make(effect=-0.4, p=0.02), "supported"),
        (make(p=0.3, ci=(-0.8, 0.1)), make(effect=0.1, p=0.6), "not supported"),
        (make(), make(effect=-0.1, p=0.3, ci=(-0.4, 0.2)), "inconclusive"),
        (make(p=0.3, ci=(-0.8, 0.1)), make(), "inconclusive"),
        # a one-sided result significant on the wrong side is not significant: both fail -> not supported
        (make(effect=0.5, p=0.99), make(effect=0.4, p=0.98), "not supported"),
        # two-sided: both significant, opposite signs
        (make(side="two-sided", p=0.01), make(side="two-sided", effect=0.5, p=0.01), "inconclusive"),
        (make(side="two-sided", p=0.01), make(side="two-sided", effect=-0.6, p=0.001), "supported"),
    ],
    ids=["both-sig", "neither", "only-primary", "only-replication", "wrong-side", "opposite-signs", "two-sided-agree"],
)
def test_verdict_rule(primary, replication, verdict):
    assert replication_verdict(primary, replication).verdict == verdict


def test_verdict_uses_the_given_p_values():
    r = make(p=0.01)
    assert significant(r) and not significant(r, 0.2)
    out = replication_verdict(r, make(p=0.02), replication_p=0.2)
    assert out.verdict == "inconclusive" and out.replication_p == 0.2 and out.reason == "only the primary test significant"
    assert out.to_dict()["verdict"] == "inconclusive"


def test_verdict_rejects_different_tests():
    with pytest.raises(ValueError, match="same test"):
        replication_verdict(make(side="less"), make(side="greater", effect=0.5))


@pytest.mark.parametrize("side", ["greater", "less", "two-sided"])
def test_power_at_zero_effect_is_the_level(side):
    assert t_test_power(0.0, 1.0, 12, alpha=0.05, side=side) == pytest.approx(0.05, abs=1e-9)


def test_power_large_df_matches_normal_closed_form():
    # df -> inf: power = Phi(effect/se - z_{1-alpha}) one-sided
    assert t_test_power(2.5, 1.0, 1e7, alpha=0.05, side="greater") == pytest.approx(sps.norm.cdf(2.5 - sps.norm.ppf(0.95)), abs=1e-5)
    assert t_test_power(-2.5, 1.0, 1e7, alpha=0.05, side="less") == pytest.approx(sps.norm.cdf(2.5 - sps.norm.ppf(0.95)), abs=1e-5)


@pytest.mark.parametrize(("effect", "side"), [(0.8, "greater"), (-0.5, "less"), (0.6, "two-sided")])
def test_power_matches_simulated_regressions(effect, side):
    """Planted truth: OLS slopes with a known true slope; the rejection rate of the t-test
    equals t_test_power at the design's exact standard error (sigma known to the simulation)."""
    rng = np.random.default_rng(3)
    n, sigma, repeats = 12, 1.0, 4000
    x = np.linspace(-1, 1, n)
    sxx = ((x - x.mean()) ** 2).sum()
    se_true = sigma / np.sqrt(sxx)
    df = n - 2
    hits = 0
    for _ in range(repeats):
        y = effect * x + rng.normal(0, sigma, n)
        slope = ((x - x.mean()) * (y - y.mean())).sum() / sxx
        resid = y - y.mean() - slope * (x - x.mean())
        t = slope / np.sqrt((resid @ resid) / df / sxx)
        if side == "greater":
            hits += t > sps.t.ppf(0.95, df)
        elif side == "less":
            hits += t < sps.t.ppf(0.05, df)
        else:
            hits += abs(t) > sps.t.ppf(0.975, df)
    power = t_test_power(effect, se_true, df, alpha=0.05, side=side)
    assert 0.2 < power < 0.95  # an informative case
    assert_rate_near(int(hits), repeats, power)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"se": 0.0}, "se must be"), ({"df": 0.0}, "df must be"), ({"alpha": 1.0}, "alpha must be"),
     ({"side": "up"}, "side must be"), ({"effect": float("nan")}, "effect must be")],
)
def test_power_bad_arguments(kwargs, match):
    args = {"effect": 1.0, "se": 1.0, "df": 10.0, **kwargs}
    effect, se, df = args.pop("effect"), args.pop("se"), args.pop("df")
    with pytest.raises(ValueError, match=match):
        t_test_power(effect, se, df, **args)
