"""PAC-Bayes bounds on the risk of a randomised (Gibbs) classifier, with union-bound grids.

PAC-Bayes-kl bound (Seeger 2002, "PAC-Bayesian generalisation error bounds for Gaussian
process classification"; with Maurer's 2004 constant, "A note on the PAC Bayesian
theorem"): for a loss in [0, 1], a prior P fixed before seeing the n training samples
and delta in (0, 1), with probability >= 1 - delta over the sample, simultaneously for
*every* posterior Q,

    kl( emp(Q) || risk(Q) ) <= B := ( KL(Q || P) + ln(2 sqrt(n) / delta) ) / n,

so ``risk(Q) <= kl^-1(emp(Q), B)`` (:func:`pac_bayes_kl_bound`). Pinsker's inequality
``kl(q||p) >= 2 (p - q)^2`` relaxes it to the McAllester form (McAllester 1999,
"PAC-Bayesian model averaging", with Maurer's constant):
``risk(Q) <= emp(Q) + sqrt(B / 2)`` (:func:`mcallester_bound`), never tighter.

Union bounds (what every reported number pays). The bound holds for all Q at once, so a
posterior chosen after seeing the data (any posterior scale, any curvature estimate)
costs nothing here. Choosing the *prior* from data does: if priors P_j carry weights
``w_j`` with ``sum_j w_j <= 1`` and bound j is taken at confidence ``w_j delta``, all hold
together with probability >= 1 - delta and the smallest is valid. Bound j then pays
``ln(1 / w_j)`` extra nats in B (``union_cost``):

* a finite grid of J priors, uniform weights ``1/J``: cost ``ln J`` for each
  (:func:`finite_grid_cost`);
* Dziugaite & Roy's (2017, "Computing nonvacuous generalization bounds for deep
  (stochastic) neural networks with many more parameters than training data") countable
  grid of prior variances ``lambda_j = c exp(-j / b)``, j = 1, 2, ..., with weights
  ``6 / (pi^2 j^2)``: cost ``2 ln j + ln(pi^2 / 6)``, i.e. their
  ``2 ln(b ln(c / lambda_j))`` plus ``ln(pi^2/6)`` (:class:`PriorVarianceGrid`).

:func:`grid_pac_bayes_bound` takes a (J priors x C posteriors) table and returns the best
bound with the cost paid. When the empirical risk of each posterior is itself estimated
by Monte Carlo, selecting among the C posteriors does cost a union bound on the Monte
Carlo side; see :mod:`landscape.bounds.mc`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from landscape.bounds.kl import kl_inv_upper

__all__ = [
    "BoundResult",
    "GridBoundResult",
    "PriorVarianceGrid",
    "confidence_term",
    "finite_grid_cost",
    "pac_bayes_kl_bound",
    "mcallester_bound",
    "grid_pac_bayes_bound",
]


@dataclasses.dataclass(frozen=True)
class BoundResult:
    """An upper bound on a true risk, with every term that entered it.

    Attributes:
        kind: Which bound: ``"pac-bayes-kl"``, ``"mcallester"``, ``"occam"``, ``"vc"``.
        bound: The upper bound on the true risk, in [0, 1].
        empirical_risk: Empirical risk (or its upper confidence value) plugged in.
        kl: Complexity in nats: ``KL(Q || P)`` for PAC-Bayes bounds, the description
            length ``ln(1 / P(h))`` for Occam bounds, 0 for VC bounds.
        confidence_term: ``ln(2 sqrt(n) / delta)`` (PAC-Bayes), ``ln(1/delta)`` (Occam)
            or the VC capacity-plus-confidence term, nats.
        union_cost: Nats paid for selecting among a grid, ``ln(1 / w)``.
        grid_size: Number of grid points the union ran over (None: countable grid,
            1: no selection).
        budget: The right-hand side ``B`` of the kl inequality (nats per sample), or the
            term under the square root for additive bounds.
        n: Number of training samples.
        delta: Failure probability of this bound as a whole (before any grid split).
    """

    kind: str
    bound: float
    empirical_risk: float
    kl: float
    confidence_term: float
    union_cost: float
    grid_size: int | None
    budget: float
    n: int
    delta: float

    @property
    def gap(self) -> float:
        """``bound - empirical_risk``."""
        return self.bound - self.empirical_risk

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields (plus ``gap``) for JSON."""
        d = dataclasses.asdict(self)
        d["gap"] = self.gap
        return d


@dataclasses.dataclass(frozen=True, eq=False)
class GridBoundResult:
    """The best bound over a (priors x posteriors) grid and the table it came from.

    Attributes:
        best: The smallest bound (valid at total confidence ``1 - delta``).
        prior_index: Row (prior) of the best bound.
        posterior_index: Column (posterior) of the best bound.
        bounds: (J, C) every bound, each with its prior's union cost already paid.
        union_costs: (J,) nats paid by each prior.
    """

    best: BoundResult
    prior_index: int
    posterior_index: int
    bounds: np.ndarray
    union_costs: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return {
            "best": self.best.to_dict(),
            "prior_index": self.prior_index,
            "posterior_index": self.posterior_index,
            "bounds": self.bounds.tolist(),
            "union_costs": self.union_costs.tolist(),
        }


@dataclasses.dataclass(frozen=True)
class PriorVarianceGrid:
    """Dziugaite & Roy's countable prior-variance grid ``lambda_j = c exp(-j / b)``.

    Attributes:
        c: Largest variance (j = 0 limit), > 0, fixed before seeing data.
        b: Grid points per e-fold of variance, > 0.
    """

    c: float
    b: float

    def __post_init__(self) -> None:
        for name, v in (("c", self.c), ("b", self.b)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")

    def variance(self, j: int | ArrayLike) -> float | np.ndarray:
        """``lambda_j = c exp(-j / b)`` for j >= 1."""
        ja = _grid_index(j)
        out = self.c * np.exp(-ja / self.b)
        return float(out) if out.ndim == 0 else out

    def union_cost(self, j: int | ArrayLike) -> float | np.ndarray:
        """``ln(1 / w_j) = 2 ln j + ln(pi^2 / 6)``, weights ``w_j = 6 / (pi^2 j^2)``."""
        ja = _grid_index(j)
        out = 2.0 * np.log(ja) + math.log(math.pi**2 / 6.0)
        return float(out) if out.ndim == 0 else out

    def nearest_index(self, variance: float) -> int:
        """Grid index j >= 1 whose variance is closest in log scale to ``variance``."""
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"variance must be finite and > 0, got {variance}")
        return max(1, round(self.b * math.log(self.c / variance)))


def _grid_index(j: int | ArrayLike) -> np.ndarray:
    ja = np.asarray(j)
    if ja.dtype.kind not in "iu" or np.any(ja < 1):
        raise ValueError(f"grid index j must be an integer >= 1, got {ja.ravel()[:5].tolist()}")
    return ja.astype(np.float64)


def finite_grid_cost(grid_size: int) -> float:
    """``ln J``: the union cost of one of ``J`` equally weighted priors."""
    if not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    return math.log(grid_size)


def confidence_term(n: int, delta: float) -> float:
    """Maurer's ``ln(2 sqrt(n) / delta)``, nats."""
    _check_n_delta(n, delta)
    return math.log(2.0 * math.sqrt(n) / delta)


def _check_n_delta(n: int, delta: float) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must lie in (0, 1), got {delta}")


def _check_inputs(empirical_risk: float, kl: float, union_cost: float) -> None:
    if not (0.0 <= empirical_risk <= 1.0):
        raise ValueError(f"empirical_risk must lie in [0, 1], got {empirical_risk}")
    if not (math.isfinite(kl) and kl >= 0.0):
        raise ValueError(f"kl must be finite and >= 0 nats, got {kl}")
    if not (math.isfinite(union_cost) and union_cost >= 0.0):
        raise ValueError(f"union_cost must be finite and >= 0 nats, got {union_cost}")


def pac_bayes_kl_bound(
    empirical_risk: float,
    kl: float,
    n: int,
    delta: float,
    *,
    union_cost: float = 0.0,
    grid_size: int | None = 1,
) -> BoundResult:
    """Seeger/Maurer PAC-Bayes-kl bound ``kl^-1(emp, (KL + ln(2 sqrt n / delta) + u) / n)``.

    Args:
        empirical_risk: Empirical risk of Q on the n training samples, in [0, 1] (or an
            upper confidence value of it, see :mod:`landscape.bounds.mc`).
        kl: ``KL(Q || P)``, nats.
        n: Number of training samples.
        delta: Failure probability, in (0, 1).
        union_cost: ``ln(1 / w)`` nats for the weight of P in a prior grid (0: no grid).
        grid_size: Size of that grid, recorded only (None: countable grid).

    Returns:
        The :class:`BoundResult` (``kind="pac-bayes-kl"``).

    Raises:
        ValueError: On out-of-range arguments.
    """
    _check_inputs(empirical_risk, kl, union_cost)
    conf = confidence_term(n, delta)
    budget = (kl + conf + union_cost) / n
    bound = float(kl_inv_upper(empirical_risk, budget))
    return BoundResult(
        kind="pac-bayes-kl",
        bound=bound,
        empirical_risk=float(empirical_risk),
        kl=float(kl),
        confidence_term=conf,
        union_cost=float(union_cost),
        grid_size=grid_size,
        budget=budget,
        n=int(n),
        delta=float(delta),
    )


def mcallester_bound(
    empirical_risk: float,
    kl: float,
    n: int,
    delta: float,
    *,
    union_cost: float = 0.0,
    grid_size: int | None = 1,
) -> BoundResult:
    """McAllester-form bound ``min(1, emp + sqrt((KL + ln(2 sqrt n / delta) + u) / (2 n)))``.

    The Pinsker relaxation of :func:`pac_bayes_kl_bound`, hence never smaller; kept for
    comparison with the literature.

    Args:
        empirical_risk: Empirical risk of Q, in [0, 1].
        kl: ``KL(Q || P)``, nats.
        n: Number of training samples.
        delta: Failure probability, in (0, 1).
        union_cost: Grid cost in nats (see module docstring).
        grid_size: Recorded grid size.

    Returns:
        The :class:`BoundResult` (``kind="mcallester"``).

    Raises:
        ValueError: On out-of-range arguments.
    """
    _check_inputs(empirical_risk, kl, union_cost)
    conf = confidence_term(n, delta)
    budget = (kl + conf + union_cost) / n
    bound = min(1.0, empirical_risk + math.sqrt(budget / 2.0))
    return BoundResult(
        kind="mcallester",
        bound=bound,
        empirical_risk=float(empirical_risk),
        kl=float(kl),
        confidence_term=conf,
        union_cost=float(union_cost),
        grid_size=grid_size,
        budget=budget,
        n=int(n),
        delta=float(delta),
    )


def grid_pac_bayes_bound(
    empirical_risks: ArrayLike,
    kls: ArrayLike,
    n: int,
    delta: float,
    *,
    union_costs: ArrayLike | None = None,
    countable: bool = False,
) -> GridBoundResult:
    """Best PAC-Bayes-kl bound over J priors x C posteriors, valid at confidence 1 - delta.

    Row j uses prior j and pays ``union_costs[j]`` nats; the C posteriors of a row are
    free (the bound holds for all posteriors at once). Weights ``exp(-union_costs)``
    must sum to at most 1.

    Args:
        empirical_risks: (J, C) empirical risks in [0, 1].
        kls: (J, C) ``KL(Q_jc || P_j)`` in nats.
        n: Number of training samples.
        delta: Total failure probability.
        union_costs: (J,) nats per prior; default ``ln J`` for each (uniform weights).
        countable: Record the grid as countable (``grid_size=None``), e.g. when the
            costs come from :meth:`PriorVarianceGrid.union_cost`.

    Returns:
        :class:`GridBoundResult` with the best bound and the full (J, C) table.

    Raises:
        ValueError: On shape mismatch, invalid values, or weights summing above 1.
    """
    emp = np.asarray(empirical_risks, dtype=np.float64)
    kla = np.asarray(kls, dtype=np.float64)
    if emp.ndim != 2 or emp.shape != kla.shape:
        raise ValueError(f"empirical_risks and kls must have the same (J, C) shape, got {emp.shape} and {kla.shape}")
    J, C = emp.shape
    costs = np.full(J, math.log(J)) if union_costs is None else np.asarray(union_costs, dtype=np.float64).reshape(-1)
    if costs.shape != (J,):
        raise ValueError(f"union_costs must have shape ({J},), got {costs.shape}")
    if not np.all(np.isfinite(costs) & (costs >= 0)):
        raise ValueError(f"union_costs must be finite and >= 0, got {costs.tolist()}")
    total_weight = float(np.exp(-costs).sum())
    if total_weight > 1.0 + 1e-12:
        raise ValueError(f"prior weights exp(-union_costs) sum to {total_weight:.6g} > 1: not a valid union bound")
    if not np.all((emp >= 0) & (emp <= 1)):
        raise ValueError(f"empirical_risks must lie in [0, 1], got min {emp.min()} max {emp.max()}")
    if not np.all(np.isfinite(kla) & (kla >= 0)):
        raise ValueError(f"kls must be finite and >= 0 nats, got min {kla.min()}")
    conf = confidence_term(n, delta)
    table = np.asarray(kl_inv_upper(emp, (kla + conf + costs[:, None]) / n), dtype=np.float64).reshape(J, C)
    j_best, i_best = (int(v) for v in np.unravel_index(int(np.argmin(table)), table.shape))
    best = pac_bayes_kl_bound(
        float(emp[j_best, i_best]),
        float(kla[j_best, i_best]),
        n,
        delta,
        union_cost=float(costs[j_best]),
        grid_size=None if countable else J,
    )
    return GridBoundResult(best, j_best, i_best, table, costs)
