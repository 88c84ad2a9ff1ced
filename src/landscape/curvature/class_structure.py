"""Class structure of the top of a curvature spectrum: the C - 1 outliers and the C(C - 1) tier.

Papyan (2019), "Measurements of three-level hierarchical structure in the outliers in the
spectrum of deepnet Hessians" (ICML), and Papyan (2020), "Traces of class/cross-class
structure pervade deep learning spectra" (JMLR): the GGN ``G = (1/N) sum_i J_i^T H_i J_i`` of
a C-class softmax network decomposes by the class of the example and the class of the
output gradient. The C class means of the gradients, less their global mean, span C - 1
directions: C - 1 outliers above the bulk. The C(C - 1) cross-class means give a second,
lower tier, so the top ``C - 1 + C(C - 1) = C^2 - 1`` eigenvalues stand apart from the bulk
when the structure is strong. The Hessian ``H = G + (residual term)`` inherits the outliers
when G dominates its top.

:func:`class_structure` reads the top-k eigenvalues (Lanczos Ritz values) of either matrix:
the spike count by the edge-calibrated eigengap rule
(:func:`~landscape.curvature.rmt.count_spikes`, Onatski 2010), and the gap test at the two
ranks the class structure predicts, ``r = C - 1`` and ``r = C^2 - 1``: the gap
``lambda_r - lambda_(r+1)`` against the same rule's threshold ``delta_r = 2 |b_r|``, with
``b_r`` the slope of ``lambda_j`` on ``(j - 1)^(2/3)`` over ``j = r + 1 .. r + edge_points``
(the eigenvalues just below the predicted tier). A tier is separated when the gap clears
its threshold; a rank needs ``k >= r + edge_points`` eigenvalues to be tested at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from landscape.curvature.rmt import SpikeCount, count_spikes

__all__ = ["TierGap", "ClassStructure", "tier_gap", "class_structure"]


@dataclass(frozen=True)
class TierGap:
    """The eigengap below rank r against the edge-calibrated threshold.

    Attributes:
        rank: r (1-based; the gap is ``lambda_r - lambda_(r+1)``).
        gap: that gap (eigenvalue units); NaN when untestable.
        delta: the threshold ``2 |b_r|`` from ``lambda_(r+1) .. lambda_(r+edge_points)``.
        ratio: ``gap / delta`` (inf when delta is 0 and the gap positive).
        separated: ``gap >= delta`` (False when untestable).
        status: "ok", or why the rank cannot be tested (too few eigenvalues).
    """

    rank: int
    gap: float
    delta: float
    ratio: float
    separated: bool
    status: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _descending(values: Any) -> np.ndarray:
    x = values.detach().double().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values, dtype=np.float64)
    x = np.sort(x.ravel())[::-1]
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("eigenvalues must be a non-empty finite vector")
    return x


def tier_gap(values: Any, rank: int, edge_points: int = 5) -> TierGap:
    """The gap test below rank ``rank`` of the top eigenvalues ``values`` (any order).

    Raises:
        ValueError: ``rank < 1``, ``edge_points < 3``, or non-finite eigenvalues.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if isinstance(edge_points, bool) or not isinstance(edge_points, int) or edge_points < 3:
        raise ValueError(f"edge_points must be an int >= 3, got {edge_points!r}")
    x = _descending(values)
    if x.size < rank + edge_points:
        return TierGap(rank, math.nan, math.nan, math.nan, False,
                       f"untestable: needs k >= rank + edge_points = {rank + edge_points} eigenvalues, got k = {x.size}")
    idx = np.arange(rank + 1, rank + 1 + edge_points)  # 1-based ranks just below the tier
    t = (idx - 1.0) ** (2.0 / 3.0)
    tc = t - t.mean()
    ys = x[idx - 1]
    slope = float(tc @ (ys - ys.mean()) / (tc @ tc))
    delta = 2.0 * abs(slope)
    gap = float(x[rank - 1] - x[rank])
    ratio = gap / delta if delta > 0 else (math.inf if gap > 0 else math.nan)
    return TierGap(rank, gap, delta, ratio, bool(gap >= delta), "ok")


@dataclass(frozen=True)
class ClassStructure:
    """Spike count and class-structure gaps of one top-k spectrum.

    Attributes:
        num_classes: C.
        k: eigenvalues read.
        spikes: the eigengap spike count (``max_spikes = k - edge_points``).
        outliers: the gap test at ``r = C - 1``.
        cross_class: the gap test at ``r = C^2 - 1`` (the end of the C(C - 1) tier).
        equals_c_minus_1: ``spikes.num_spikes == C - 1``.
    """

    num_classes: int
    k: int
    spikes: SpikeCount
    outliers: TierGap
    cross_class: TierGap

    @property
    def equals_c_minus_1(self) -> bool:
        return self.spikes.num_spikes == self.num_classes - 1

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "k": self.k, "spikes": self.spikes.to_dict(),
                "num_spikes": self.spikes.num_spikes, "equals_c_minus_1": self.equals_c_minus_1,
                "outliers": self.outliers.to_dict(), "cross_class": self.cross_class.to_dict()}


def class_structure(values: Any, num_classes: int, edge_points: int = 5) -> ClassStructure:
    """Spike count and the gap tests at ``C - 1`` and ``C^2 - 1`` of top eigenvalues ``values``.

    Args:
        values: the k largest eigenvalues (any order), e.g. Lanczos Ritz values of G or H.
        num_classes: C >= 2.
        edge_points: eigenvalues in each edge regression (Onatski uses 5).

    Raises:
        ValueError: ``num_classes < 2``, or fewer than ``edge_points + 1`` eigenvalues.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    x = _descending(values)
    spikes = count_spikes(x, edge_points=edge_points)
    C = num_classes
    return ClassStructure(num_classes=C, k=int(x.size), spikes=spikes, outliers=tier_gap(x, C - 1, edge_points),
                          cross_class=tier_gap(x, C * C - 1, edge_points))
