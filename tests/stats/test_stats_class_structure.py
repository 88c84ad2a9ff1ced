"""Seed-level statistics of the class-structure study against closed forms: the count test (Wilson
share, t interval, exact sign test), t intervals and Fisher-z intervals of correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape.stats.class_structure import correlation_interval, count_test, mean_interval


def test_count_test_closed_forms() -> None:
    t = count_test([9, 9, 9, 9], 9)
    assert t["verdict"] == "equal in every run" and t["sign_test_p"] == 1.0 and t["equal"]["k"] == 4
    assert t["mean"]["mean"] == 9 and t["mean"]["ci_low"] == pytest.approx(9) and t["equal"]["ci_high"] == 1.0
    t = count_test([29, 32, 30, 31, 28, 33], 9)  # all above: p = 2 * 0.5^6
    assert t["above"] == 6 and t["below"] == 0 and t["sign_test_p"] == pytest.approx(2 * 0.5**6)
    assert t["verdict"].startswith("differs (above") and t["equal"]["k"] == 0 and t["equal"]["ci_low"] == pytest.approx(0.0, abs=1e-12)
    lo, hi = sps.t.interval(0.95, 5, loc=30.5, scale=np.std([29, 32, 30, 31, 28, 33], ddof=1) / math.sqrt(6))
    assert t["mean"]["ci_low"] == pytest.approx(lo) and t["mean"]["ci_high"] == pytest.approx(hi)
    t = count_test([9, 12, 8], 9)  # one above, one below: p = 1
    assert t["sign_test_p"] == pytest.approx(1.0) and t["verdict"] == "equal in 1 of 3 runs"
    assert math.isnan(count_test([], 9)["sign_test_p"])


def test_intervals() -> None:
    m = mean_interval([1.0, 2.0, 3.0, float("nan")])
    assert m["n"] == 3 and m["mean"] == 2.0
    assert m["ci_high"] - 2.0 == pytest.approx(sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    one = mean_interval([0.5])
    assert one["n"] == 1 and math.isnan(one["ci_low"])
    r = correlation_interval([0.5, 0.6, 0.7])
    z = np.arctanh([0.5, 0.6, 0.7])
    assert r["mean"] == pytest.approx(math.tanh(z.mean()))
    assert r["ci_low"] == pytest.approx(math.tanh(z.mean() - sps.t.ppf(0.975, 2) * z.std(ddof=1) / math.sqrt(3)))
    assert correlation_interval([1.0, 1.0])["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"correlations must lie in \[-1, 1\]"):
        correlation_interval([1.5])
    with pytest.raises(ValueError, match="ci_level"):
        mean_interval([1.0], ci_level=1.5)
