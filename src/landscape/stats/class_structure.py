"""Statistics over seeds of the class-structure study: spike counts against C - 1, and the
diagonal comparisons (relative errors, correlations) with intervals.

* :func:`count_test`: spike counts of n runs against a predicted count (C - 1): the share of
  runs whose count equals it (Wilson interval, :mod:`landscape.stats.intervals`), the mean
  count with its t interval, and an exact two-sided sign test of the counts against the
  prediction (runs equal to it dropped; Dixon & Mood 1946).
* :func:`mean_interval`: mean of a per-seed figure with its t interval.
* :func:`correlation_interval`: mean of per-seed correlations on Fisher's z scale with a t
  interval there, transformed back (Fisher 1915).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from landscape.stats.intervals import wilson

__all__ = ["count_test", "mean_interval", "correlation_interval"]


def _level(ci_level: float) -> None:
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")


def mean_interval(values: Sequence[float], ci_level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "ci_low", "ci_high", "n"}`` of the finite values (t interval; NaN bounds for n < 2)."""
    _level(ci_level)
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    m = float(v.mean())
    if v.size < 2:
        return {"mean": m, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    h = float(sps.t.ppf(0.5 + ci_level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": m, "ci_low": m - h, "ci_high": m + h, "n": int(v.size)}


def correlation_interval(values: Sequence[float], ci_level: float = 0.95) -> dict[str, Any]:
    """Mean correlation over seeds with a t interval on Fisher's ``z = atanh(r)`` scale.

    Correlations of exactly +-1 are clipped to +-(1 - 1e-12) before the transform.
    """
    r = [x for x in values if x is not None and math.isfinite(x)]
    if any(abs(x) > 1 for x in r):
        raise ValueError(f"correlations must lie in [-1, 1], got {r}")
    z = mean_interval([math.atanh(max(-1 + 1e-12, min(1 - 1e-12, x))) for x in r], ci_level)
    return {k: (math.tanh(v) if k != "n" and math.isfinite(v) else v) for k, v in z.items()}


def count_test(counts: Sequence[int], predicted: int, ci_level: float = 0.95) -> dict[str, Any]:
    """Spike counts of n runs against ``predicted``.

    Returns:
        ``n``, ``counts``, ``predicted``, ``equal`` (k, share, Wilson ci_low/ci_high),
        ``below`` and ``above`` (run counts), ``mean`` (t interval), ``sign_test_p`` (exact
        two-sided binomial test of #above vs #below at 1/2; 1.0 when every run equals the
        prediction, NaN with no runs), and ``verdict``: "equal in every run", "equal in k of n
        runs", or "differs (sign test p < 1 - ci_level)".
    """
    _level(ci_level)
    c = [int(x) for x in counts]
    n = len(c)
    below = sum(x < predicted for x in c)
    above = sum(x > predicted for x in c)
    equal = n - below - above
    share, lo, hi = wilson(equal, n, ci_level)
    p = float(sps.binomtest(above, above + below, 0.5).pvalue) if above + below else (1.0 if n else math.nan)
    if n and equal == n:
        verdict = "equal in every run"
    elif n and p < 1 - ci_level:
        verdict = f"differs ({'above' if above > below else 'below'}; sign test p < {1 - ci_level:.2g})"
    else:
        verdict = f"equal in {equal} of {n} runs"
    return {"n": n, "counts": c, "predicted": int(predicted), "equal": {"k": equal, "share": share, "ci_low": lo, "ci_high": hi},
            "below": below, "above": above, "mean": mean_interval([float(x) for x in c], ci_level), "sign_test_p": p,
            "verdict": verdict}
