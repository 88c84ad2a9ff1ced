"""Confidence intervals shared by the statistics: the Wilson score interval of a proportion,
and batch means for the mean of an autocorrelated series (:func:`batch_means`).

Wilson (1927), *Probable inference, the law of succession, and statistical inference*, JASA:
``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, computed by statsmodels'
``proportion_confint(method="wilson")``; it stays inside [0, 1] and covers near its level even
for counts of 0 or n, where the Wald interval collapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

__all__ = ["BatchMeansInterval", "batch_means", "wilson", "wilson_bounds"]


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


@dataclass(frozen=True)
class BatchMeansInterval:
    """Mean of an autocorrelated series with a non-overlapping batch-means interval.

    Attributes:
        mean: Mean of the series over the batches used (the ``num_batches * batch_size``
            last values).
        low: Lower confidence bound.
        high: Upper confidence bound.
        num_batches: Batches b.
        batch_size: Values per batch m.
        ci_level: Confidence level.
    """

    mean: float
    low: float
    high: float
    num_batches: int
    batch_size: int
    ci_level: float

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "num_batches": self.num_batches,
                "batch_size": self.batch_size, "ci_level": self.ci_level}


def batch_means(series: ArrayLike, ci_level: float = 0.95, num_batches: int = 10) -> BatchMeansInterval:
    """Confidence interval for the mean of a stationary, autocorrelated series by batch means.

    The series (n values) is cut into ``b = num_batches`` consecutive batches of
    ``m = n // b`` values (the first ``n - b m`` values are dropped); with batch means
    ``Y_1..Y_b`` the interval is ``Ybar +- t_{b-1, (1+level)/2} s_Y / sqrt(b)``. Batches
    much longer than the autocorrelation time make the ``Y_j`` nearly independent and
    normal, so the interval covers near its level where the i.i.d. interval
    ``xbar +- z s / sqrt(n)`` is too short by ``sqrt(1 + 2 sum_k rho_k)`` (Schmeiser 1982,
    "Batch size effects in the analysis of simulation output", Operations Research 30(3);
    Flegal & Jones 2010, Annals of Statistics 38(2)). A constant series gives the
    zero-width interval at its value.

    Args:
        series: (n,) finite values in time order.
        ci_level: Confidence level in (0, 1).
        num_batches: b >= 2; Schmeiser recommends 10 to 30.

    Raises:
        ValueError: A bad level, ``num_batches`` < 2, fewer than 2 values per batch, or
            non-finite values.
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"series must be one-dimensional, got shape {x.shape}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 2:
        raise ValueError(f"num_batches must be an int >= 2, got {num_batches!r}")
    m = x.size // num_batches
    if m < 2:
        raise ValueError(f"series of {x.size} values is too short for {num_batches} batches of >= 2 values")
    if not np.all(np.isfinite(x)):
        raise ValueError("series must be finite")
    means = x[x.size - m * num_batches:].reshape(num_batches, m).mean(axis=1)
    centre = float(means.mean())
    spread = float(means.std(ddof=1))  # may be exactly 0 (a constant series): half-width 0, no division
    half = float(stats.t.ppf(0.5 + ci_level / 2, num_batches - 1)) * spread / math.sqrt(num_batches)
    return BatchMeansInterval(centre, centre - half, centre + half, num_batches, m, ci_level)
