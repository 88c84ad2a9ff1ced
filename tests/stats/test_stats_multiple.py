"""Holm-Bonferroni: hand-computed values, statsmodels cross-check, FWER control."""

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from stats_synth import assert_rate_at_most

from landscape.stats import HypothesisResult, holm, holm_adjust


def result(name, p, effect=1.0):
    return HypothesisResult.build(
        name=name, null="n", alternative="a", test="t", n_runs=10, n_groups=5,
        effect=effect, ci_low=effect - 0.5, ci_high=effect + 0.5, p_value=p,
    )


def test_holm_adjust_matches_hand_computation():
    # sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; max(0.06, 0.04*1) = 0.06
    got = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)


def test_holm_adjust_caps_at_one_and_handles_ties():
    np.testing.assert_allclose(holm_adjust([0.5, 0.5, 0.9]), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(holm_adjust([0.02, 0.02]), [0.04, 0.04])


def test_holm_adjust_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 30):
        p = rng.uniform(0, 0.2, m)
        ref = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm_adjust(p), ref, rtol=1e-12)


def test_nan_p_values_leave_the_family():
    got = holm_adjust([0.01, float("nan"), 0.04])
    # m = 2: 0.01*2 = 0.02, max(0.02, 0.04*1) = 0.04
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])
    assert math.isnan(got[1])


def test_holm_on_results_updates_verdicts_in_input_order():
    family = [result("A", 0.01), result("B", 0.04), result("C", 0.03), result("D", 0.005)]
    assert all(r.supported for r in family)  # each alone at 0.05
    out = holm(family)
    assert [r.name for r in out] == ["A", "B", "C", "D"]
    np.testing.assert_allclose([r.p_holm for r in out], [0.03, 0.06, 0.06, 0.02])
    assert [r.supported for r in out] == [True, False, False, True]
    assert all(r.extra["holm_family_size"] == 4 for r in out)
    assert [r.p_value for r in out] == [0.01, 0.04, 0.03, 0.005]


def test_holm_keeps_direction_in_verdict():
    out = holm([result("A", 0.001, effect=-1.0), result("B", 0.001)])
    assert [r.supported for r in out] == [False, True]


def test_holm_alpha_override():
    out = holm([result("A", 0.04), result("B", 0.04)], alpha=0.1)
    assert all(r.supported and r.alpha == 0.1 for r in out)


def test_holm_controls_familywise_error_under_global_null():
    rng = np.random.default_rng(1)
    reps, m = 3000, 6
    p = rng.uniform(size=(reps, m))
    # correlated p-values too: half the family shares one uniform
    p[:, 3:] = p[:, [0]]
    any_reject = sum(bool(np.any(holm_adjust(row) <= 0.05)) for row in p)
    assert_rate_at_most(any_reject, reps, 0.05)


@pytest.mark.parametrize(
    ("family", "kwargs", "match"),
    [
        ([result("A", 0.1), result("A", 0.2)], {}, "duplicates"),
        ([result("A", 0.1)], {"alpha": 0.0}, r"alpha must be in \(0, 1\)"),
    ],
)
def test_holm_errors(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        holm(family, **kwargs)


def test_holm_mixed_alpha_errors():
    import dataclasses

    a = result("A", 0.1)
    b = dataclasses.replace(result("B", 0.1), alpha=0.01)
    with pytest.raises(ValueError, match="different alpha levels"):
        holm([a, b])


def test_holm_adjust_rejects_bad_p():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        holm_adjust([0.1, 1.2])
    with pytest.raises(ValueError, match="one-dimensional"):
        holm_adjust([[0.1]])
