"""Full-batch gradient descent at the edge of stability: progressive sharpening and the plateau.

Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural networks typically
occurs at the edge of stability" (ICLR): under full-batch gradient descent with step size
``eta`` the sharpness ``lambda_max`` of the training-loss Hessian first rises (*progressive
sharpening*) until it reaches the stability threshold ``2 / eta`` of the quadratic model,
then hovers at or just above it while the loss keeps decreasing over long horizons,
non-monotonically. With heavy-ball momentum ``beta`` the threshold is ``2 (1 + beta) / eta``.

On a quadratic ``L(theta) = 1/2 (theta - theta*)^T A (theta - theta*)`` the threshold is
exact: GD contracts along eigenvector i by ``|1 - eta a_i|`` per step, so it converges iff
``eta < 2 / a_max`` (heavy ball: iff ``eta a_max < 2 (1 + beta)``, Polyak 1964) and diverges
otherwise; the tests plant that law.

:func:`gradient_descent` runs GD (or heavy ball) on any :class:`~landscape.dynamics.escape.Landscape`
(a network on fixed data through :class:`~landscape.dynamics.escape.ModelLandscape`, or a
closed-form surface), recording the loss at every step and ``lambda_max`` every
``eig_every`` steps by Lanczos (:func:`~landscape.dynamics.escape.lambda_max_at`, i.e.
:func:`~landscape.curvature.lanczos.top_eigenpairs`) warm-started from the previous top
vector. :func:`edge_of_stability` finds the plateau by a stated rule and reports the
plateau's mean ``lambda_max / threshold`` with a batch-means interval
(:func:`~landscape.stats.intervals.batch_means`), whether sharpening preceded it, and how
the loss moved on the plateau.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.dynamics.escape import Landscape, lambda_max_at
from landscape.stats.intervals import BatchMeansInterval, batch_means

__all__ = [
    "EdgeOfStability",
    "GDTrajectory",
    "edge_of_stability",
    "gradient_descent",
    "stability_threshold",
]


def stability_threshold(lr: float, momentum: float = 0.0) -> float:
    """``2 (1 + beta) / eta``: the largest curvature at which GD (heavy ball ``beta``) is stable on a quadratic.

    Raises:
        ValueError: ``lr`` not > 0 or ``momentum`` outside [0, 1).
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return 2.0 * (1.0 + momentum) / lr


@dataclass(frozen=True)
class GDTrajectory:
    """One full-batch gradient-descent run.

    Attributes:
        lr: Step size eta.
        momentum: Heavy-ball beta (0: plain GD).
        threshold: ``2 (1 + beta) / eta``.
        losses: Loss at steps ``0..steps_run`` (``steps_run + 1`` values; the last may be
            non-finite for a diverged run).
        sharpness_steps: Steps at which ``lambda_max`` was measured (every ``eig_every``
            steps from 0, and the last step).
        sharpness: ``lambda_max`` of the full-batch Hessian at those steps.
        status: ``"completed"`` or ``"diverged"`` (the loss became non-finite or exceeded
            ``max_loss_ratio`` times its start).
        steps_run: Steps taken.
        num_hvps: Hessian-vector products spent on ``lambda_max``.
        wall_time_s: Seconds.
    """

    lr: float
    momentum: float
    threshold: float
    losses: tuple[float, ...]
    sharpness_steps: tuple[int, ...]
    sharpness: tuple[float, ...]
    status: str
    steps_run: int
    num_hvps: int
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "threshold": self.threshold, "status": self.status,
                "steps_run": self.steps_run, "num_hvps": self.num_hvps, "wall_time_s": self.wall_time_s,
                "losses": list(self.losses), "sharpness_steps": list(self.sharpness_steps), "sharpness": list(self.sharpness)}


class _CountingLandscape:
    """Counts the landscape's Hessian-vector products."""

    def __init__(self, inner: Landscape) -> None:
        self.inner, self.num_examples, self.hvps = inner, inner.num_examples, 0

    def loss(self, theta: Tensor) -> float:
        return self.inner.loss(theta)

    def gradient(self, theta: Tensor, index: Tensor | None = None) -> Tensor:
        return self.inner.gradient(theta, index)

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        self.hvps += 1
        return self.inner.hvp(theta, v)


def gradient_descent(landscape: Landscape, theta0: Tensor, *, lr: float, steps: int, momentum: float = 0.0,
                     eig_every: int = 1, eig_tol: float = 1e-3, eig_matvecs: int = 20, max_loss_ratio: float = 1e6,
                     seed: int = 0) -> tuple[GDTrajectory, Tensor]:
    """Full-batch GD ``theta <- theta - eta g`` (heavy ball: ``v <- beta v - eta g; theta <- theta + v``).

    The loss is recorded at every step; ``lambda_max`` at step 0, every ``eig_every`` steps
    and at the last step, by Lanczos on the full-batch Hessian to relative residual
    ``eig_tol`` within ``eig_matvecs`` products, each solve started from the previous top
    eigenvector (the first from a Gaussian vector drawn from ``seed``). The run stops early
    as ``"diverged"`` when the loss is non-finite or above ``max_loss_ratio * L(theta0)``.

    Args:
        landscape: Loss, full-batch gradient and HVP of flat parameters (P,).
        theta0: (P,) start point (not modified).
        lr: Step size eta > 0.
        steps: Steps T >= 1.
        momentum: Heavy-ball beta in [0, 1).
        eig_every: Steps between ``lambda_max`` measurements, >= 1.
        eig_tol: Relative residual of each Lanczos solve, in (0, 1).
        eig_matvecs: Product budget per solve, >= 2.
        max_loss_ratio: Divergence criterion, > 1.
        seed: Seed of the first Lanczos start vector.

    Returns:
        The trajectory and the final point (P,).

    Raises:
        ValueError: A bad argument (the message names it).
    """
    threshold = stability_threshold(lr, momentum)
    for name, value, low in (("steps", steps, 1), ("eig_every", eig_every, 1), ("eig_matvecs", eig_matvecs, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not 0 < eig_tol < 1:
        raise ValueError(f"eig_tol must be in (0, 1), got {eig_tol!r}")
    if not max_loss_ratio > 1:
        raise ValueError(f"max_loss_ratio must be > 1, got {max_loss_ratio!r}")
    counted = _CountingLandscape(landscape)
    started = time.perf_counter()
    theta = theta0.detach().clone()
    velocity = torch.zeros_like(theta)
    losses = [counted.loss(theta)]
    limit = max_loss_ratio * max(abs(losses[0]), 1e-300)
    sharp_steps: list[int] = []
    sharp: list[float] = []
    vector: Tensor | None = None

    def measure(t: int) -> None:
        nonlocal vector
        value, vector = lambda_max_at(counted, theta, v0=vector, tol=eig_tol, max_matvecs=eig_matvecs, seed=seed)
        sharp_steps.append(t)
        sharp.append(value)

    measure(0)
    status = "completed"
    t = 0
    while t < steps:
        g = counted.gradient(theta)
        velocity = momentum * velocity - lr * g
        theta = theta + velocity
        t += 1
        losses.append(counted.loss(theta))
        if not (math.isfinite(losses[-1]) and losses[-1] <= limit):
            status = "diverged"
            break
        if t % eig_every == 0 or t == steps:
            measure(t)
    trajectory = GDTrajectory(float(lr), float(momentum), threshold, tuple(losses), tuple(sharp_steps), tuple(sharp), status, t,
                              counted.hvps, time.perf_counter() - started)
    return trajectory, theta


@dataclass(frozen=True)
class EdgeOfStability:
    """The plateau of ``lambda_max`` at the stability threshold, by the rule of :func:`edge_of_stability`.

    Attributes:
        status: ``"plateau"`` (a ratio was estimated), ``"no onset"`` (``lambda_max``
            never reached ``onset_fraction * threshold``), ``"too short"`` (fewer than
            ``min_points`` measurements from the onset on) or ``"diverged"``.
        threshold: ``2 (1 + beta) / eta``.
        onset_step: First measured step with ``lambda_max >= onset_fraction * threshold``
            after the first measurement below that line (None without an onset).
        num_points: ``lambda_max`` measurements in the plateau window.
        ratio: Mean of ``lambda_max / threshold`` over the window with its batch-means
            interval (None unless status is ``"plateau"``).
        initial_ratio: ``lambda_max / threshold`` at step 0.
        sharpening: ``sharpening_factor >= sharpening_min`` (progressive sharpening).
        sharpening_factor: ``lambda_max`` at the onset over its minimum before the onset
            (NaN without an onset).
        loss_onset: Loss at the onset step.
        loss_final: Loss at the last step.
        loss_decreased: Mean loss over the last tenth of the window below that over its
            first tenth (the loss kept falling over the long horizon).
        increase_fraction: Share of steps in the window at which the loss rose (> 0: the
            decrease was non-monotone).
    """

    status: str
    threshold: float
    onset_step: int | None
    num_points: int
    ratio: BatchMeansInterval | None
    initial_ratio: float
    sharpening: bool
    sharpening_factor: float
    loss_onset: float
    loss_final: float
    loss_decreased: bool | None
    increase_fraction: float

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "ratio"}
        out["ratio"] = None if self.ratio is None else self.ratio.to_dict()
        return out


def edge_of_stability(trajectory: GDTrajectory, *, onset_fraction: float = 0.9, sharpening_min: float = 1.25, min_points: int = 20,
                      num_batches: int = 10, ci_level: float = 0.95) -> EdgeOfStability:
    """Plateau of a GD trajectory's sharpness at its stability threshold.

    Rule: the plateau window runs from the onset, the first measured step at which
    ``lambda_max >= onset_fraction * threshold`` after a measurement below that line (a
    start above the line, which GD leaves by a catapult, is not the edge), to the end of
    the run. Its
    ``lambda_max / threshold`` series (equal to ``lambda_max * eta / 2`` for plain GD) is
    summarised by its mean with a batch-means interval over ``num_batches`` consecutive
    batches, which accounts for the autocorrelation of the series. On the loss: the share
    of steps in the window at which it rose, and whether its mean over the last tenth of
    the window is below that over the first tenth.

    Args:
        trajectory: From :func:`gradient_descent`.
        onset_fraction: In (0, 1]; Cohen et al. (2021) call a run at the edge once
            ``lambda_max`` reaches ``2 / eta`` (1.0); below 1 the window also takes the last
            approach to it.
        sharpening_min: Rise of ``lambda_max`` (onset over its minimum before) that counts
            as progressive sharpening, > 1.
        min_points: Fewest measurements in the window for a ratio, >= 2 * num_batches.
        num_batches: Batches of the interval, >= 2.
        ci_level: Level of the interval, in (0, 1).

    Raises:
        ValueError: A bad argument.
    """
    if not 0 < onset_fraction <= 1:
        raise ValueError(f"onset_fraction must be in (0, 1], got {onset_fraction!r}")
    if not sharpening_min > 1:
        raise ValueError(f"sharpening_min must be > 1, got {sharpening_min!r}")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 2:
        raise ValueError(f"num_batches must be an int >= 2, got {num_batches!r}")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 2 * num_batches:
        raise ValueError(f"min_points must be an int >= 2 * num_batches = {2 * num_batches}, got {min_points!r}")
    thr = trajectory.threshold
    steps = np.asarray(trajectory.sharpness_steps)
    ratio = np.asarray(trajectory.sharpness, dtype=float) / thr
    losses = np.asarray(trajectory.losses, dtype=float)
    below = np.flatnonzero(ratio < onset_fraction)
    # the onset comes after the first measurement below the line: a start above it (a catapult) is not the edge
    hits = np.flatnonzero(ratio >= onset_fraction)
    hits = hits[hits > below[0]] if below.size else hits[:0]
    onset = int(steps[hits[0]]) if hits.size else None
    initial = float(ratio[0])
    factor = float(ratio[hits[0]] / ratio[: hits[0]].min()) if hits.size else math.nan
    sharpening = bool(factor >= sharpening_min)
    common: dict[str, Any] = {"threshold": thr, "onset_step": onset, "initial_ratio": initial, "sharpening": sharpening,
              "sharpening_factor": factor, "loss_final": float(losses[-1])}
    if trajectory.status == "diverged":
        return EdgeOfStability("diverged", num_points=0, ratio=None, loss_onset=math.nan, loss_decreased=None,
                               increase_fraction=math.nan, **common)
    if onset is None:
        return EdgeOfStability("no onset", num_points=0, ratio=None, loss_onset=math.nan, loss_decreased=None,
                               increase_fraction=math.nan, **common)
    window = ratio[hits[0]:]
    loss_window = losses[onset:]
    rises = float(np.mean(np.diff(loss_window) > 0)) if loss_window.size > 1 else math.nan
    tenth = max(1, loss_window.size // 10)
    decreased = bool(loss_window[-tenth:].mean() < loss_window[:tenth].mean()) if loss_window.size >= 2 else None
    interval = batch_means(window, ci_level, num_batches) if window.size >= min_points else None
    return EdgeOfStability("plateau" if interval is not None else "too short", num_points=int(window.size), ratio=interval,
                           loss_onset=float(losses[onset]), loss_decreased=decreased, increase_fraction=rises, **common)

