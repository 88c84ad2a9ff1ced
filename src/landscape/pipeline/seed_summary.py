"""Mean, sample standard deviation and count of one quantity over the seeds of a run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

__all__ = ["mean_sd"]


def mean_sd(values: Iterable[float | None]) -> dict[str, float]:
    """``{"mean", "sd", "n"}`` over the finite values (None, NaN and inf are left out, so a
    failed seed lowers ``n`` instead of poisoning the mean); ``sd`` is the sample standard
    deviation (n - 1), NaN below two values, and ``mean`` NaN with none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else math.nan,
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan,
        "n": len(finite),
    }
