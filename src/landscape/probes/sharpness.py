"""Sharpness: worst-case (eq. (4)), average-case and adaptive.

* Worst-case eps-sharpness, eq. (4) of the first research plan (Keskar, Mudigere,
  Nocedal, Smelyanskiy & Tang 2017, *On large-batch training for deep learning*; Foret,
  Kleiner, Mobahi & Neyshabur 2021, *SAM*)::

      s_eps(theta) = max_{||delta|| <= eps} L(theta + delta) - L(theta)

  in the L2 or L-infinity ball, estimated by projected gradient ascent (Madry et al. 2018)
  on the full-batch loss of the given batches, with random restarts. Every visited iterate
  is scored with the same loss, and the best one is reported, so the value is an exact
  loss difference at a feasible point: a lower bound on the true maximum (which is
  attained when the ascent converges, e.g. ``eps**2 lambda_max / 2`` at the minimum of a
  quadratic in the L2 ball).
* Adaptive sharpness (Kwon, Kim, Park & Choi 2021, *ASAM*): the ball is taken in the
  normalised coordinates ``u = delta / (|theta| + xi)`` (elementwise), i.e.
  ``max_{||u|| <= eps} L(theta + (|theta| + xi) * u) - L(theta)``. With ``xi = 0`` it is
  invariant under the layer rescalings that leave a ReLU network's function unchanged
  (Dinh, Pascanu, Bengio & Bengio 2017) -- see :mod:`landscape.probes.invariance`;
  weights that are exactly 0 then cannot move.
* Average-case sharpness: ``E_{delta ~ N(0, sigma^2 I)} L(theta + delta) - L(theta)``
  (adaptive: ``delta = sigma (|theta| + xi) * z``), a Monte-Carlo mean over
  ``num_samples`` draws with its standard error. At the minimum of ``0.5 x^T A x`` it is
  ``sigma**2 tr(A) / 2`` plus higher-order terms.

Ascent details: restarts start uniformly in the ball (L2: Gaussian direction, radius
``eps * U**(1/P)``; L-inf: uniform in the cube), so a zero gradient at a minimum does not
stall the ascent. A step moves ``u`` by ``step_size_k * g / ||g||_2`` (L2) or
``step_size_k * sign(g)`` (L-inf) with ``g = (|theta| + xi) * grad L`` in adaptive mode,
then projects back onto the ball. ``step_size_k`` follows ``schedule``: ``"constant"`` or
``"cosine"`` (from ``step_size`` down to ``step_size / 10``). Defaults: ``step_size = eps``
for L2 (on a sphere this makes each step a shifted power iteration, converging at rate
``(1 + lambda_2/lambda_1) / 2`` on a quadratic) and ``eps / 4`` for L-inf. All settings are
recorded in the result. BatchNorm: the loss follows ``bn_mode``; with ``"recalibrate"``
the statistics are recomputed at every iterate and treated as constants in the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.seeding import seeded_generator

from .functional import Batch, BNMode, LossFn, Objective, Params

__all__ = [
    "BALL_NORMS",
    "SCHEDULES",
    "SharpnessResult",
    "AverageSharpnessResult",
    "worst_case_sharpness",
    "adaptive_sharpness",
    "average_sharpness",
]

BALL_NORMS: tuple[str, ...] = ("l2", "linf")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")


@dataclass(frozen=True)
class SharpnessResult:
    """Worst-case (or adaptive) sharpness estimate.

    Attributes:
        value: ``L(theta + delta*) - L(theta)`` at the best iterate over all restarts.
        base_loss: ``L(theta)``.
        perturbed_loss: ``L(theta + delta*)``.
        restart_values: (restarts,) best value of each restart.
        delta_norm: Norm of ``u*`` in the ball's norm (``u = delta`` unless adaptive).
        eps: Ball radius.
        norm: ``"l2"`` or ``"linf"``.
        adaptive: Whether the ball is ``|theta| + xi``-scaled.
        xi: Offset of the adaptive scale.
        steps: Ascent steps per restart.
        restarts: Number of restarts.
        step_size: Initial step size (in ``u`` units).
        schedule: Step-size schedule.
        seed: Seed of the restarts.
        bn_mode: BatchNorm policy.
    """

    value: float
    base_loss: float
    perturbed_loss: float
    restart_values: np.ndarray
    delta_norm: float
    eps: float
    norm: str
    adaptive: bool
    xi: float
    steps: int
    restarts: int
    step_size: float
    schedule: str
    seed: int
    bn_mode: str

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["restart_values"] = self.restart_values.tolist()
        return out


@dataclass(frozen=True)
class AverageSharpnessResult:
    """Average-case (Gaussian) sharpness estimate.

    Attributes:
        value: Mean of ``L(theta + delta_i) - L(theta)`` over the draws.
        stderr: Standard error of that mean (sample std / sqrt(n)).
        num_samples: Number of draws.
        sigma: Noise scale.
        base_loss: ``L(theta)``.
        adaptive: Whether the noise is ``|theta| + xi``-scaled.
        xi: Offset of the adaptive scale.
        seed: Seed of the draws.
        bn_mode: BatchNorm policy.
    """

    value: float
    stderr: float
    num_samples: int
    sigma: float
    base_loss: float
    adaptive: bool
    xi: float
    seed: int
    bn_mode: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _scale(theta: Tensor, adaptive: bool, xi: float) -> Tensor:
    if adaptive:
        return theta.abs() + xi
    return torch.ones_like(theta)


def _random_in_ball(p: int, eps: float, norm: str, gen: torch.Generator, like: Tensor) -> Tensor:
    if norm == "l2":
        z = torch.randn(p, generator=gen, dtype=torch.float64)
        r = eps * float(torch.rand((), generator=gen, dtype=torch.float64)) ** (1.0 / p)
        u = z * (r / z.norm())
    else:
        u = (2 * torch.rand(p, generator=gen, dtype=torch.float64) - 1) * eps
    return u.to(device=like.device, dtype=like.dtype)


def _project(u: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "l2":
        n = u.norm()
        return u * torch.clamp(eps / torch.clamp(n, min=torch.finfo(u.dtype).tiny), max=1.0)
    return u.clamp(-eps, eps)


def worst_case_sharpness(
    model: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    *,
    eps: float,
    norm: str = "l2",
    steps: int = 20,
    restarts: int = 1,
    step_size: float | None = None,
    schedule: str = "constant",
    adaptive: bool = False,
    xi: float = 0.0,
    seed: int = 0,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> SharpnessResult:
    """Worst-case sharpness ``max_{||u|| <= eps} L(theta + s * u) - L(theta)`` (eq. (4)).

    ``s = 1`` (plain) or ``s = |theta| + xi`` (adaptive, Kwon et al. 2021).

    Args:
        model: Any module (used through ``functional_call`` only).
        params: The point ``theta`` (flat (P,) vector or parameter dict).
        batches: Batches defining the full-batch loss ``L``.
        eps: Ball radius (parameter units; relative units when adaptive).
        norm: ``"l2"`` or ``"linf"``.
        steps: Ascent steps per restart.
        restarts: Random restarts (the best is kept).
        step_size: Initial step (default ``eps`` for L2, ``eps / 4`` for L-inf).
        schedule: ``"constant"`` or ``"cosine"``.
        adaptive: Use the ``|theta| + xi``-scaled ball.
        xi: Non-negative offset of the adaptive scale.
        seed: Seed of the random starts.
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        bn_mode: ``"eval"``, ``"batch"`` or ``"recalibrate"``.
        recal_batches: Batches for ``"recalibrate"``.
        buffers: Buffers used instead of the model's.

    Raises:
        ValueError: Non-positive ``eps``/``step_size``, unknown ``norm``/``schedule``,
            ``steps < 1``, ``restarts < 1`` or ``xi < 0``.
    """
    eps = _check_positive("eps", eps)
    if norm not in BALL_NORMS:
        raise ValueError(f"norm must be one of {list(BALL_NORMS)}, got {norm!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    _check_int("steps", steps)
    _check_int("restarts", restarts)
    if not (isinstance(xi, (int, float)) and xi >= 0):
        raise ValueError(f"xi must be >= 0, got {xi!r}")
    lr0 = (eps if norm == "l2" else eps / 4) if step_size is None else _check_positive("step_size", step_size)
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    theta = obj.flat(params)
    s = _scale(theta, adaptive, float(xi))
    base = obj.evaluate(theta).loss
    gen = seeded_generator(seed)
    best_vals, best_us = [], []
    for _ in range(restarts):
        u = _random_in_ball(theta.numel(), eps, norm, gen, theta)
        vals, us = [], []
        for k in range(steps + 1):
            u_req = u.detach().requires_grad_(True)
            loss = obj.loss(theta + s * u_req)
            vals.append(loss.detach())
            us.append(u.detach())
            if k == steps:
                break
            (g,) = torch.autograd.grad(loss, u_req)
            lr = lr0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / max(steps - 1, 1)))) if schedule == "cosine" else lr0
            if norm == "l2":
                gn = g.norm()
                step = torch.where(gn > 0, g / torch.where(gn > 0, gn, torch.ones_like(gn)), torch.zeros_like(g))
            else:
                step = torch.sign(g)
            u = _project(u.detach() + lr * step, eps, norm)
        stacked = torch.stack(vals)
        i = int(torch.argmax(stacked))
        best_vals.append(stacked[i])
        best_us.append(us[i])
    j = int(torch.argmax(torch.stack(best_vals)))
    u_best = best_us[j]
    perturbed = obj.evaluate(theta + s * u_best).loss
    restart_values = torch.stack(best_vals).detach().to(torch.float64).cpu().numpy() - base
    unorm = float(u_best.norm()) if norm == "l2" else float(u_best.abs().max())
    return SharpnessResult(
        value=perturbed - base,
        base_loss=base,
        perturbed_loss=perturbed,
        restart_values=restart_values,
        delta_norm=unorm,
        eps=eps,
        norm=norm,
        adaptive=bool(adaptive),
        xi=float(xi),
        steps=steps,
        restarts=restarts,
        step_size=float(lr0),
        schedule=schedule,
        seed=int(seed),
        bn_mode=obj.bn_mode,
    )


def adaptive_sharpness(
    model: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    *,
    eps: float,
    norm: str = "l2",
    xi: float = 0.0,
    **kwargs: Any,
) -> SharpnessResult:
    """Adaptive worst-case sharpness (Kwon et al. 2021): :func:`worst_case_sharpness`
    with ``adaptive=True``; ``xi = 0`` (default) keeps the exact rescaling invariance."""
    return worst_case_sharpness(model, params, batches, eps=eps, norm=norm, adaptive=True, xi=xi, **kwargs)


def average_sharpness(
    model: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    *,
    sigma: float,
    num_samples: int = 100,
    adaptive: bool = False,
    xi: float = 0.0,
    seed: int = 0,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> AverageSharpnessResult:
    """Average-case sharpness ``E_z L(theta + sigma s * z) - L(theta)``, ``z ~ N(0, I)``.

    Other arguments as :func:`worst_case_sharpness`.

    Args:
        sigma: Noise scale (``s = 1``, or ``|theta| + xi`` when ``adaptive``).
        num_samples: Monte-Carlo draws (>= 2, for the standard error).
        seed: Seed of the draws (CPU generator, float64, then cast: same draws on any device).

    Raises:
        ValueError: ``sigma <= 0``, ``num_samples < 2`` or ``xi < 0``.
    """
    sigma = _check_positive("sigma", sigma)
    _check_int("num_samples", num_samples, minimum=2)
    if not (isinstance(xi, (int, float)) and xi >= 0):
        raise ValueError(f"xi must be >= 0, got {xi!r}")
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    theta = obj.flat(params)
    s = _scale(theta, adaptive, float(xi))
    base = obj.evaluate(theta).loss
    gen = seeded_generator(seed)
    diffs = np.empty(num_samples)
    for i in range(num_samples):
        z = torch.randn(theta.numel(), generator=gen, dtype=torch.float64).to(device=theta.device, dtype=theta.dtype)
        diffs[i] = obj.evaluate(theta + sigma * s * z).loss - base
    return AverageSharpnessResult(
        value=float(diffs.mean()),
        stderr=float(diffs.std(ddof=1) / math.sqrt(num_samples)),
        num_samples=num_samples,
        sigma=sigma,
        base_loss=base,
        adaptive=bool(adaptive),
        xi=float(xi),
        seed=int(seed),
        bn_mode=obj.bn_mode,
    )
