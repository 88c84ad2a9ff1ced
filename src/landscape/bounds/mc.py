"""Monte-Carlo estimate of a posterior's empirical risk and its sample-convergence bound.

The PAC-Bayes bound needs ``emp(Q) = E_{theta ~ Q}[emp(theta)]``, the training error
averaged over the posterior, which is not computable in closed form for a network. Draw
m networks ``theta_1..theta_m ~ Q`` independently and let ``e_hat`` be the mean of their
training errors ``emp(theta_i)`` in [0, 1]. Sample-convergence bound (Langford & Caruana
2001, "(Not) bounding the true error"; used by Dziugaite & Roy 2017, Sec. 3): with
probability >= 1 - delta' over the draws,

    emp(Q) <= kl^-1( e_hat, ln(2 / delta') / m ).

(The one-sided Chernoff bound already gives ``ln(1/delta')``; the ``ln 2`` of the
two-sided statement is kept to match the cited form, a little conservative.) It holds
for [0, 1]-valued errors, not only Bernoulli ones, because a [0, 1] variable's moment
generating function is dominated by the Bernoulli one with the same mean (Maurer 2004).

Composition (:func:`mc_pac_bayes_bound`): kl^-1(., B) is increasing in its first
argument, so on the intersection of the PAC-Bayes event (probability >= 1 - delta over
the sample) and the Monte-Carlo event (>= 1 - delta' over the draws),

    risk(Q) <= kl^-1( kl^-1(e_hat, ln(2/delta')/m), (KL + ln(2 sqrt n/delta) + u) / n ),

valid with probability >= 1 - delta - delta' (union bound over the two failure events).
Dziugaite & Roy use delta = 0.025, delta' = 0.01.

Grids (:func:`grid_mc_pac_bayes_bound`): choosing the best of J priors x C posteriors
pays the prior weights inside the PAC-Bayes term (see :mod:`landscape.bounds.pacbayes`)
and, because each of the J*C Monte-Carlo estimates must hold for the selected one to be
trusted, ``delta'`` is split evenly: each estimate uses ``ln(2 J C / delta') / m``.

Paired draws (:func:`paired_draws_bound`, what the ``bounds`` stage uses). Evaluating m
whole networks on all n examples spends n forward passes per draw but still gives only
m independent terms. Instead draw N independent pairs ``(I_r, theta_r)``, an example index
``I_r`` uniform on the n training examples and a network ``theta_r ~ Q``, and score the
single indicator ``X_r = 1{h_{theta_r}(x_{I_r}) != y_{I_r}}``. The ``X_r`` are i.i.d.
Bernoulli with mean exactly ``emp(Q)`` (average over the sample and the posterior), so the
one-sided Chernoff bound in kl form (Hoeffding 1963, Thm 1; the Binomial tail) gives,
with probability >= 1 - delta' over the draws,

    emp(Q) <= kl^-1( X_bar, ln(1 / delta') / N ),

at the cost of N single-example forward passes: for the same compute as m whole-sample
draws, N = m n terms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.pacbayes import BoundResult, pac_bayes_kl_bound

__all__ = [
    "SampleConvergenceResult",
    "MCBoundResult",
    "GridMCBoundResult",
    "monte_carlo_errors",
    "sample_convergence_bound",
    "mc_pac_bayes_bound",
    "grid_mc_pac_bayes_bound",
    "paired_draws_bound",
]


@dataclasses.dataclass(frozen=True)
class SampleConvergenceResult:
    """Upper confidence value of ``emp(Q)`` from m sampled networks.

    Attributes:
        mean_error: ``e_hat``, the average training error of the sampled networks.
        stderr: Standard error of ``e_hat`` (sample std / sqrt(m)), for information.
        num_samples: m.
        delta: Failure probability delta' of the whole Monte-Carlo side.
        num_candidates: Number of estimates delta' is split over (1: no grid).
        budget: ``ln(2 num_candidates / delta') / m``, nats.
        upper: ``kl^-1(e_hat, budget)``.
    """

    mean_error: float
    stderr: float
    num_samples: int
    delta: float
    num_candidates: int
    budget: float
    upper: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MCBoundResult:
    """PAC-Bayes-kl bound on ``risk(Q)`` with ``emp(Q)`` replaced by its MC upper value.

    Attributes:
        bound: The final upper bound on the true risk of Q.
        delta_total: ``delta + delta'``: the bound fails with at most this probability.
        pac_bayes: The PAC-Bayes part (its ``empirical_risk`` is ``sample.upper``).
        sample: The Monte-Carlo part.
    """

    bound: float
    delta_total: float
    pac_bayes: BoundResult
    sample: SampleConvergenceResult

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python fields for JSON."""
        return {
            "bound": self.bound,
            "delta_total": self.delta_total,
            "pac_bayes": self.pac_bayes.to_dict(),
            "sample": self.sample.to_dict(),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class GridMCBoundResult:
    """Best Monte-Carlo PAC-Bayes bound over a (J priors x C posteriors) grid.

    Attributes:
        best: The smallest bound, valid at probability >= 1 - delta - delta'.
        prior_index: Row of the best bound.
        posterior_index: Column of the best bound.
        bounds: (J, C) all bounds with every union cost paid.
        union_costs: (J,) nats paid by each prior.
    """

    best: MCBoundResult
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


def _errors_array(errors: ArrayLike | Tensor) -> np.ndarray:
    if isinstance(errors, Tensor):
        errors = errors.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(errors, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("errors must contain at least one sampled network's error")
    bad = ~((arr >= 0.0) & (arr <= 1.0))
    if np.any(bad):
        raise ValueError(f"errors must lie in [0, 1] (0-1 error rates), got {arr[bad].ravel()[:5].tolist()}")
    return arr


def _check_delta(delta: float, name: str) -> None:
    if not (0.0 < delta < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {delta}")


def monte_carlo_errors(
    error_of: Callable[[Tensor], float | Tensor],
    sampler: Callable[[torch.Generator], Tensor],
    num_samples: int,
    generator: torch.Generator,
) -> np.ndarray:
    """Training errors of ``num_samples`` networks drawn from the posterior.

    Args:
        error_of: Maps flat parameters (P,) to the network's training error in [0, 1]
            (a float or a 0-d tensor; tensors are gathered once, after the loop).
        sampler: Draws one flat parameter vector (P,) from Q given a generator, e.g.
            ``lambda g: sample_lowrank(posterior, g)``.
        num_samples: m >= 1.
        generator: Source of randomness passed to every ``sampler`` call.

    Returns:
        (m,) float64 errors.

    Raises:
        ValueError: If ``num_samples < 1`` or an error falls outside [0, 1].
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    values = [error_of(sampler(generator)) for _ in range(num_samples)]
    tensors = [v for v in values if isinstance(v, Tensor)]
    if len(tensors) == len(values):
        arr = torch.stack([v.reshape(()) for v in tensors]).detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    return _errors_array(arr)


def sample_convergence_bound(
    errors: ArrayLike | Tensor,
    delta: float,
    *,
    num_candidates: int = 1,
) -> SampleConvergenceResult:
    """Langford-Caruana upper value ``kl^-1(e_hat, ln(2 G / delta) / m)`` of ``emp(Q)``.

    Args:
        errors: (m,) training errors in [0, 1] of networks drawn i.i.d. from Q.
        delta: Failure probability delta' of the Monte-Carlo side, in (0, 1).
        num_candidates: G, the number of such estimates taken together (e.g. a grid of
            posteriors); each then runs at ``delta / G``.

    Returns:
        :class:`SampleConvergenceResult`.

    Raises:
        ValueError: On empty or out-of-range errors, bad ``delta`` or ``num_candidates``.
    """
    arr = _errors_array(errors).reshape(-1)
    _check_delta(delta, "delta")
    if not isinstance(num_candidates, (int, np.integer)) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
    m = arr.size
    mean = float(arr.mean())
    stderr = float(arr.std(ddof=1) / math.sqrt(m)) if m > 1 else math.nan
    budget = math.log(2.0 * num_candidates / delta) / m
    upper = float(kl_inv_upper(mean, budget))
    return SampleConvergenceResult(mean, stderr, int(m), float(delta), int(num_candidates), budget, upper)


def mc_pac_bayes_bound(
    errors: ArrayLike | Tensor,
    kl: float,
    n: int,
    delta: float,
    *,
    mc_delta: float,
    union_cost: float = 0.0,
    grid_size: int | None = 1,
    num_candidates: int = 1,
) -> MCBoundResult:
    """PAC-Bayes-kl bound with a Monte-Carlo estimate of ``emp(Q)`` (module docstring).

    Args:
        errors: (m,) training errors (on the same n samples) of networks drawn from Q.
        kl: ``KL(Q || P)``, nats.
        n: Number of training samples.
        delta: Failure probability of the PAC-Bayes side.
        mc_delta: Failure probability delta' of the Monte-Carlo side.
        union_cost: Prior-grid cost in nats for the PAC-Bayes side.
        grid_size: Recorded prior-grid size.
        num_candidates: Number of Monte-Carlo estimates delta' is split over.

    Returns:
        :class:`MCBoundResult`, valid with probability >= 1 - delta - mc_delta.

    Raises:
        ValueError: On out-of-range arguments.
    """
    sample = sample_convergence_bound(errors, mc_delta, num_candidates=num_candidates)
    pb = pac_bayes_kl_bound(sample.upper, kl, n, delta, union_cost=union_cost, grid_size=grid_size)
    return MCBoundResult(pb.bound, float(delta + mc_delta), pb, sample)


def grid_mc_pac_bayes_bound(
    errors: ArrayLike | Tensor,
    kls: ArrayLike,
    n: int,
    delta: float,
    *,
    mc_delta: float,
    union_costs: ArrayLike | None = None,
    countable: bool = False,
) -> GridMCBoundResult:
    """Best Monte-Carlo PAC-Bayes bound over J priors x C posteriors.

    Prior j pays ``union_costs[j]`` (default ``ln J``) in the PAC-Bayes term; every one of
    the J*C Monte-Carlo estimates runs at ``mc_delta / (J C)``. Total failure probability
    ``delta + mc_delta``.

    Args:
        errors: (J, C, m) training errors of m networks drawn from each posterior.
        kls: (J, C) ``KL(Q_jc || P_j)``, nats.
        n: Number of training samples.
        delta: Failure probability of the PAC-Bayes side.
        mc_delta: Failure probability of the Monte-Carlo side.
        union_costs: (J,) nats per prior; weights ``exp(-cost)`` must sum to <= 1.
        countable: Record the prior grid as countable (``grid_size=None``).

    Returns:
        :class:`GridMCBoundResult`.

    Raises:
        ValueError: On shape mismatch, invalid values, or weights summing above 1.
    """
    err = _errors_array(errors)
    kla = np.asarray(kls, dtype=np.float64)
    if err.ndim != 3 or kla.shape != err.shape[:2]:
        raise ValueError(f"errors must be (J, C, m) and kls (J, C), got {err.shape} and {kla.shape}")
    J, C, _ = err.shape
    costs = np.full(J, math.log(J)) if union_costs is None else np.asarray(union_costs, dtype=np.float64).reshape(-1)
    if costs.shape != (J,) or not np.all(np.isfinite(costs) & (costs >= 0)):
        raise ValueError(f"union_costs must be ({J},) finite and >= 0, got {costs.tolist()}")
    total_weight = float(np.exp(-costs).sum())
    if total_weight > 1.0 + 1e-12:
        raise ValueError(f"prior weights exp(-union_costs) sum to {total_weight:.6g} > 1: not a valid union bound")
    grid_size = None if countable else J
    table = np.empty((J, C))
    cells: dict[tuple[int, int], MCBoundResult] = {}
    for j in range(J):
        for i in range(C):
            r = mc_pac_bayes_bound(
                err[j, i],
                float(kla[j, i]),
                n,
                delta,
                mc_delta=mc_delta,
                union_cost=float(costs[j]),
                grid_size=grid_size,
                num_candidates=J * C,
            )
            table[j, i] = r.bound
            cells[(j, i)] = r
    j_best, i_best = (int(v) for v in np.unravel_index(int(np.argmin(table)), table.shape))
    return GridMCBoundResult(cells[(j_best, i_best)], j_best, i_best, table, costs)


def paired_draws_bound(wrong: ArrayLike | Tensor, delta: float) -> SampleConvergenceResult:
    """Chernoff upper value ``kl^-1(X_bar, ln(1/delta') / N)`` of ``emp(Q)`` from paired draws.

    Args:
        wrong: (N,) indicators in {0, 1}: was the r-th network (drawn from Q) wrong on the
            r-th example (drawn uniformly from the training sample)? All pairs independent
            (module docstring).
        delta: Failure probability delta' of the Monte-Carlo side, in (0, 1).

    Returns:
        :class:`SampleConvergenceResult` with ``num_samples = N``, ``num_candidates = 1``
        and ``budget = ln(1/delta') / N`` (one-sided: only an upper value is needed).

    Raises:
        ValueError: On an empty input, values other than 0 and 1, or a bad ``delta``.
    """
    arr = _errors_array(wrong).reshape(-1)
    if not np.all((arr == 0.0) | (arr == 1.0)):
        raise ValueError(f"wrong must hold 0/1 indicators, got {arr[(arr != 0) & (arr != 1)][:5].tolist()}")
    _check_delta(delta, "delta")
    N = arr.size
    mean = float(arr.mean())
    stderr = math.sqrt(mean * (1.0 - mean) / N)
    budget = math.log(1.0 / delta) / N
    return SampleConvergenceResult(mean, stderr, int(N), float(delta), 1, budget, float(kl_inv_upper(mean, budget)))
