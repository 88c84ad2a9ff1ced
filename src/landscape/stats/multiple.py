"""Holm-Bonferroni family-wise correction over a family of hypothesis results.

Holm, S. (1979). "A simple sequentially rejective multiple test procedure."
Scandinavian Journal of Statistics 6(2), 65-70.

With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted values are
``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where ``p~ <= alpha``
controls the family-wise error rate at ``alpha`` under any dependence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from landscape.stats.result import HypothesisResult

__all__ = ["holm", "holm_adjust", "holm_records"]


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values.

    Args:
        p_values: Raw p-values, shape (m,). NaN entries (tests that could not be run)
            are left out of the family and stay NaN.

    Returns:
        Adjusted p-values in the input order, shape (m,).
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    finite = np.isfinite(p)
    bad = p[finite & ((p < 0.0) | (p > 1.0))]
    if bad.size:
        raise ValueError(f"p-values must lie in [0, 1], got {bad.tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def holm(
    results: Sequence[HypothesisResult], alpha: float | None = None
) -> tuple[HypothesisResult, ...]:
    """Apply the Holm correction across a family and refresh every verdict.

    Args:
        results: The family, in any order. A result whose ``p_value`` is NaN is not
            counted in the family size; it keeps ``p_holm = NaN`` and is not supported.
        alpha: Family-wise level; defaults to each result's own ``alpha`` (they must then
            all agree).

    Returns:
        New results in the input order with ``p_holm`` and ``supported`` updated and
        ``extra["holm_family_size"]`` recording m.
    """
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if alpha is None:
        levels = sorted({r.alpha for r in results})
        if len(levels) > 1:
            raise ValueError(
                f"results carry different alpha levels {levels}; pass alpha= explicitly"
            )
    names = [r.name for r in results]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"result names must be unique within a family, got duplicates {dupes}")
    adjusted = holm_adjust([r.p_value for r in results])
    m = int(sum(math.isfinite(r.p_value) for r in results))
    out = []
    for r, p_adj in zip(results, adjusted, strict=True):
        extra = dict(r.extra)
        extra["holm_family_size"] = m
        updated = r.with_p_holm(float(p_adj), alpha)
        out.append(dataclasses.replace(updated, extra=extra))
    return tuple(out)


def holm_records(members: list[Any], alpha: float) -> list[dict[str, Any]]:
    """Holm-correct the tested members of one family, as result dicts with ``status: "tested"``;
    the other members (``not tested`` records, plain dicts) pass through in place."""
    tested = [m for m in members if isinstance(m, HypothesisResult)]
    corrected = iter(holm(tested, alpha=alpha) if tested else ())
    return [{**next(corrected).to_dict(), "status": "tested"} if isinstance(m, HypothesisResult) else m for m in members]
