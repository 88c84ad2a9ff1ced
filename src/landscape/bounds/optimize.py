"""Direct minimisation of a PAC-Bayes bound over a diagonal Gaussian posterior.

Dziugaite & Roy 2017, "Computing nonvacuous generalization bounds for deep (stochastic)
neural networks with many more parameters than training data" (UAI), Sec. 4: starting
from trained weights, minimise over the posterior ``Q = N(w, diag(s))`` and the prior
variance ``lambda`` (prior ``N(w_0, lambda I)``, ``w_0`` fixed before seeing data)

    E_{xi ~ N(0, I)} [ loss(w + sqrt(s) * xi) ]
        + sqrt( (KL(Q || P_lambda) + 2 ln(b ln(c / lambda)) + ln(pi^2 / 6)
                 + ln(2 sqrt(n) / delta)) / (2 n) ),

the McAllester (Pinsker) relaxation of the PAC-Bayes-kl bound with the union cost of the
countable grid ``lambda_j = c exp(-j / b)`` (:class:`~landscape.bounds.pacbayes.PriorVarianceGrid`),
``j = b ln(c / lambda)`` treated as continuous (clamped at 1) during optimisation. The
expectation is estimated with the reparametrisation trick; ``loss`` is a differentiable
surrogate of the 0-1 error (Dziugaite & Roy use the logistic loss scaled by 1/ln 2, an
upper bound on it). After the last step ``lambda`` is rounded to the nearest grid point.
This only *chooses* Q and j: the reported bound must then be evaluated with the 0-1
error, Monte Carlo and kl inversions (:func:`landscape.bounds.mc.mc_pac_bayes_bound`,
paying ``grid.union_cost(j)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.bounds.pacbayes import PriorVarianceGrid, confidence_term

__all__ = ["OptimizedPosterior", "optimize_diagonal_posterior"]


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizedPosterior:
    """Result of :func:`optimize_diagonal_posterior`.

    Attributes:
        mean: (P,) posterior mean (detached, dtype/device of the initial mean).
        var: (P,) posterior variances.
        prior_index: Grid index j of the rounded prior variance.
        prior_var: ``grid.variance(j)``.
        objective: (steps,) surrogate objective at each step (one MC sample each).
    """

    mean: Tensor
    var: Tensor
    prior_index: int
    prior_var: float
    objective: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """Summary fields for JSON (not the P-sized tensors)."""
        return {
            "dim": int(self.mean.numel()),
            "prior_index": self.prior_index,
            "prior_var": self.prior_var,
            "mean_posterior_var": float(self.var.mean()),
            "objective_first": float(self.objective[0]),
            "objective_last": float(self.objective[-1]),
        }


def optimize_diagonal_posterior(
    loss_fn: Callable[[Tensor], Tensor],
    init_mean: Tensor,
    prior_mean: Tensor,
    *,
    n: int,
    delta: float,
    grid: PriorVarianceGrid,
    generator: torch.Generator,
    steps: int = 500,
    lr: float = 1e-2,
    init_var: float = 1e-4,
    init_prior_var: float | None = None,
    samples_per_step: int = 1,
) -> OptimizedPosterior:
    """Minimise the Dziugaite-Roy objective (module docstring) with Adam.

    Args:
        loss_fn: Differentiable surrogate training loss of flat parameters (P,) -> scalar.
        init_mean: (P,) starting mean, e.g. the SGD solution (not modified).
        prior_mean: (P,) prior centre, chosen before seeing data (e.g. the random init).
        n: Number of training samples behind ``loss_fn``.
        delta: Failure probability used inside the objective.
        grid: The prior-variance grid the final ``lambda`` is rounded to.
        generator: Source of the reparametrisation noise (on ``init_mean``'s device).
        steps: Adam steps, >= 1.
        lr: Adam learning rate, > 0.
        init_var: Initial posterior variance per coordinate, > 0.
        init_prior_var: Initial ``lambda`` (default ``grid.variance(1)``).
        samples_per_step: Noise draws averaged per step, >= 1.

    Returns:
        :class:`OptimizedPosterior`.

    Raises:
        ValueError: On bad shapes or out-of-range settings.
    """
    if init_mean.ndim != 1 or prior_mean.shape != init_mean.shape:
        raise ValueError(
            "init_mean and prior_mean must be vectors of the same shape, "
            f"got {tuple(init_mean.shape)} and {tuple(prior_mean.shape)}"
        )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(samples_per_step, int) or samples_per_step < 1:
        raise ValueError(f"samples_per_step must be a positive int, got {samples_per_step!r}")
    for name, v in (("lr", lr), ("init_var", init_var)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    lam0 = grid.variance(1) if init_prior_var is None else init_prior_var
    if not (math.isfinite(lam0) and lam0 > 0):
        raise ValueError(f"init_prior_var must be finite and > 0, got {init_prior_var}")
    conf = confidence_term(n, delta)
    const = conf + math.log(math.pi**2 / 6.0)
    dtype, device = init_mean.dtype, init_mean.device
    w0 = prior_mean.detach().to(dtype=dtype, device=device)
    mean = init_mean.detach().clone().requires_grad_(True)
    log_var = torch.full_like(mean, math.log(init_var)).requires_grad_(True)
    log_lam = torch.tensor(math.log(lam0), dtype=dtype, device=device, requires_grad=True)
    opt = torch.optim.Adam([mean, log_var, log_lam], lr=lr)
    history = torch.empty(steps, dtype=torch.float64, device=device)
    P = mean.numel()
    log_c, b = math.log(grid.c), grid.b
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        std = torch.exp(0.5 * log_var)
        noise = torch.randn((samples_per_step, P), generator=generator, dtype=dtype, device=device)
        emp = torch.stack([loss_fn(mean + std * xi) for xi in noise]).mean()
        lam = torch.exp(log_lam)
        ratio = torch.exp(log_var - log_lam)
        kl = 0.5 * ((ratio - 1.0 - (log_var - log_lam)).sum() + ((mean - w0) ** 2).sum() / lam)
        j_cont = torch.clamp(b * (log_c - log_lam), min=1.0)
        budget = (kl + 2.0 * torch.log(j_cont) + const) / n
        objective = emp + torch.sqrt(budget / 2.0)
        objective.backward()
        opt.step()
        history[t] = objective.detach().to(torch.float64)
    lam_final = float(torch.exp(log_lam.detach()))
    j = grid.nearest_index(lam_final)
    return OptimizedPosterior(
        mean=mean.detach(),
        var=torch.exp(log_var.detach()),
        prior_index=j,
        prior_var=float(grid.variance(j)),
        objective=history.cpu().numpy(),
    )
