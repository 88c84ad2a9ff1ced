"""Confidence intervals shared by the statistics: the Wilson score interval of a proportion.

Wilson (1927), *Probable inference, the law of succession, and statistical inference*, JASA:
``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, computed by statsmodels'
``proportion_confint(method="wilson")``; it stays inside [0, 1] and covers near its level even
for counts of 0 or n, where the Wald interval collapses.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from statsmodels.stats.proportion import proportion_confint

__all__ = ["wilson", "wilson_bounds"]


def wilson_bounds(count: ArrayLike, n: int, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Wilson score bounds of ``count / n`` at ``ci_level``, elementwise over ``count``.

    Raises:
        ValueError: ``n`` not an int >= 1, a count outside ``[0, n]``, or ``ci_level`` outside (0, 1).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    k = np.asarray(count, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"count must lie in [0, n={n}], got {count!r}")
    lo, hi = proportion_confint(k, n, alpha=1.0 - ci_level, method="wilson")
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


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
    return count / n, float(lo), float(hi)  # scalar path kept as is: its outputs are pinned by dvc.lock
