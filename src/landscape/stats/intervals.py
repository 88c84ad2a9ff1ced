"""Confidence intervals shared by the statistics: the Wilson score interval of a proportion.

Wilson (1927), *Probable inference, the law of succession, and statistical inference*, JASA:
``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, computed by statsmodels'
``proportion_confint(method="wilson")``; it stays inside [0, 1] and covers near its level even
for counts of 0 or n, where the Wald interval collapses.
"""

from __future__ import annotations

import math

from statsmodels.stats.proportion import proportion_confint

__all__ = ["wilson"]


def wilson(count: int, n: int, ci_level: float) -> tuple[float, float, float]:
    """Rate ``count / n`` and its two-sided Wilson score interval at ``ci_level`` (NaNs when n = 0).

    Raises:
        ValueError: ``count`` outside ``[0, n]`` or ``ci_level`` outside (0, 1).
    """
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    if n == 0:
        return math.nan, math.nan, math.nan
    if not 0 <= count <= n:
        raise ValueError(f"count must lie in [0, n={n}], got {count}")
    lo, hi = proportion_confint(count, n, alpha=1.0 - ci_level, method="wilson")
    return count / n, float(lo), float(hi)
