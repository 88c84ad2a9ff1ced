"""Escape from a sharp minimum under three noise models: the trials behind H3.

Zhu, Wu, Yu, Wu & Ma (2019), "The anisotropic noise in stochastic gradient descent: its
behavior of escaping from sharp minima and regularization effects" (ICML), argue that
SGD leaves sharp minima faster than isotropic noise of the same size because its
covariance is aligned with the top Hessian eigendirections. From a minimum ``theta_0``
we continue with

    theta_{t+1} = theta_t - eta (g(theta_t) + xi_t),     eta = step_size / lambda_max(theta_0)

where ``g`` is the full-batch gradient of the landscape and the noise ``xi_t`` is

* ``"sgd"``: real minibatch noise ``g_B(theta_t) - g(theta_t)`` (B examples drawn without
  replacement), so the step is a plain SGD step;
* ``"isotropic"``: ``N(0, s_t^2 I)`` with ``P s_t^2 = ||g_B - g||^2`` from the same draw
  (the same total variance, spread evenly over all P directions);
* ``"projected"``: the SGD noise with its component in the top-k Hessian subspace of
  ``theta_0`` removed, rescaled to the SGD noise's norm;
* ``"scaled"`` with a factor ``s >= 0``: the SGD noise with its top-k component multiplied
  by ``s``, ``s V V^T xi + (I - V V^T) xi``, rescaled to the SGD noise's norm at every step.
  ``s = 1`` is plain SGD noise, ``s = 0`` the projected noise; in between and above, the
  alignment varies continuously while the noise energy ``||xi_t||^2`` stays exactly that of
  the SGD draw (the dose-response design of H3).

Every noise is first multiplied by ``noise_scale`` (a temperature common to all trials).

The three noise types of one restart share their minibatch draws (common random numbers).
A trial *escapes* when, at a check (every ``check_every`` steps and at the end),
``lambda_max`` has dropped to ``(1 - lambda_drop) lambda_max(theta_0)`` or lower, or a loss
barrier of more than ``barrier_tol`` separates ``theta_t`` from ``theta_0`` on the straight
segment between them (``rule``, one of :data:`RULES`, chooses which of the two count).
Rule ``"basin"`` is the escape from the basin: the barrier exceeds ``barrier_tol`` at a check
and at every later check (the iterate left and did not come back); the escape step is the
first check of that final run, and lambda_max is then only measured at the end. Its
*alignment* is the fraction of the trial's noise energy in that top-k subspace,
``sum_t ||V^T xi_t||^2 / sum_t ||xi_t||^2`` (an estimate of ``tr(V V^T Sigma) / tr(Sigma)``).
Zhu et al.'s escape indicator ``tr(H_0 Sigma)`` is estimated, when ``indicator_every > 0``,
as the mean of ``xi_t^T H_0 xi_t`` over every ``indicator_every``-th step (``H_0``: the
Hessian at ``theta_0``; one Hessian-vector product each).

The landscape is any object with ``loss``, ``gradient`` and ``hvp`` (:class:`Landscape`);
:class:`ModelLandscape` wraps a network and a fixed data set, tests use closed-form ones.
Settings are keyword arguments; randomness comes from the seeds given.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.linop import SymmetricOperator
from landscape.functional import BNMode, LossFn, math_attention
from landscape.probes.functional import Objective, flatten_params, parameter_dict
from landscape.seeding import seeded_generator

__all__ = [
    "NOISE_AT",
    "NOISE_TYPES",
    "RULES",
    "EscapeStudy",
    "EscapeTrial",
    "Landscape",
    "ModelLandscape",
    "escape_study",
    "escape_trial",
    "lambda_max_at",
    "noise_step",
    "segment_barrier",
    "trial_rows",
]

NOISE_TYPES: tuple[str, ...] = ("sgd", "isotropic", "projected", "scaled")
RULES: tuple[str, ...] = ("any", "all", "lambda", "barrier", "basin")
NOISE_AT: tuple[str, ...] = ("current", "start")


class Landscape(Protocol):
    """A loss ``L(theta) = mean_i l_i(theta)`` over ``num_examples`` examples, flat ``theta``."""

    num_examples: int

    def loss(self, theta: Tensor) -> float:
        """Full mean loss at ``theta`` (P,)."""

    def gradient(self, theta: Tensor, index: Tensor | None = None) -> Tensor:
        """Gradient (P,) of the mean loss over ``index`` (all examples when None)."""

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """Hessian of the full loss at ``theta`` times ``v`` (P,)."""


# ---------------------------------------------------------------- landscapes


class ModelLandscape:
    """The mean loss of a network over fixed data, as a function of its flat parameters.

    Args:
        model: Any module (used through ``functional_call``; never modified).
        data: ``(inputs, targets)`` tensors of the N examples.
        loss_fn: Batch-mean loss ``loss_fn(outputs, targets)``.
        chunk_size: Examples per forward pass of full-batch quantities.
        bn_mode: BatchNorm policy of :class:`~landscape.probes.functional.Objective`.
    """

    def __init__(self, model: nn.Module, data: tuple[Tensor, Tensor], *, loss_fn: LossFn = F.cross_entropy,
                 chunk_size: int = 1000, bn_mode: BNMode = "eval") -> None:
        x, y = data
        if x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(f"data must hold >= 2 matching examples, got {tuple(x.shape)} and {tuple(y.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.x, self.y = x, y
        self.num_examples = int(x.shape[0])
        batches = [(x[i : i + chunk_size], y[i : i + chunk_size]) for i in range(0, self.num_examples, chunk_size)]
        self.objective = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode)
        self.theta0 = flatten_params(parameter_dict(model))

    def loss(self, theta: Tensor) -> float:
        return self.objective.evaluate(theta).loss

    def gradient(self, theta: Tensor, index: Tensor | None = None) -> Tensor:
        t = theta.detach().requires_grad_(True)
        batches = None if index is None else [(self.x[index], self.y[index])]
        (g,) = torch.autograd.grad(self.objective.loss(t, batches), t)
        return g

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        t = theta.detach().requires_grad_(True)
        with math_attention(self.objective.model):  # fused attention has no double backward
            loss = self.objective.loss(t)
        (g,) = torch.autograd.grad(loss, t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, t)
        return hv


class _HessianAt(SymmetricOperator):
    """The landscape's Hessian at one point as an operator (one HVP per column)."""

    def __init__(self, landscape: Landscape, theta: Tensor) -> None:
        self.landscape, self.theta = landscape, theta.detach()
        self.shape = (int(theta.numel()), int(theta.numel()))
        self.dtype, self.device = theta.dtype, theta.device
        self.num_matvecs = 0

    def _matmat(self, V: Tensor) -> Tensor:
        self.num_matvecs += V.shape[1]
        return torch.stack([self.landscape.hvp(self.theta, V[:, j]) for j in range(V.shape[1])], dim=1)


def lambda_max_at(landscape: Landscape, theta: Tensor, *, v0: Tensor | None = None, tol: float = 1e-2,
                  max_matvecs: int = 40, seed: int = 0) -> tuple[float, Tensor]:
    """Largest Hessian eigenvalue at ``theta`` by Lanczos (warm start ``v0``); (value, vector)."""
    op = _HessianAt(landscape, theta)
    eig = top_eigenpairs(op, k=1, which="LA", tol=tol, seed=seed, max_matvecs=max_matvecs, v0=v0,
                         verify=False, check_multiplicity=False)
    return float(eig.values[0]), eig.vectors[:, 0]


def segment_barrier(landscape: Landscape, start: Tensor, end: Tensor, points: int) -> float:
    """``max_t L(start + t (end - start)) - max(L(start), L(end))`` over ``points`` values of t."""
    losses = [landscape.loss(start + t * (end - start)) for t in torch.linspace(0.0, 1.0, points).tolist()]
    return float(max(losses) - max(losses[0], losses[-1]))


# ---------------------------------------------------------------- noise


def noise_step(kind: str, sgd_noise: Tensor, basis: Tensor, generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """One noise vector of type ``kind`` built from one draw of SGD noise.

    Args:
        kind: One of :data:`NOISE_TYPES`.
        sgd_noise: ``g_B - g`` at the current point, shape (P,).
        basis: Orthonormal top-k Hessian eigenvectors, shape (P, k).
        generator: Source of the isotropic draws.
        scale: Factor ``s >= 0`` of the top-k component (``"scaled"`` only).
    """
    if kind == "sgd":
        return sgd_noise
    energy = sgd_noise.square().sum()
    if kind == "scaled":
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        top = basis @ (basis.T @ sgd_noise)
        mixed = scale * top + (sgd_noise - top)
        norm = mixed.norm()
        return mixed * (energy.sqrt() / norm) if norm > 0 else mixed
    if kind == "isotropic":
        z = torch.randn(sgd_noise.shape, generator=generator, dtype=sgd_noise.dtype, device=sgd_noise.device)
        return z * torch.sqrt(energy / sgd_noise.numel())
    if kind == "projected":
        off = sgd_noise - basis @ (basis.T @ sgd_noise)
        norm = off.norm()
        return off * (energy.sqrt() / norm) if norm > 0 else off
    raise ValueError(f"unknown noise type {kind!r}; valid: {list(NOISE_TYPES)}")


# ---------------------------------------------------------------- trials


@dataclass(frozen=True)
class EscapeTrial:
    """One continuation from ``theta_0`` under one noise type.

    Attributes:
        noise_type, restart: Which trial; ``scale``: the factor of a ``"scaled"`` trial
            (1 for ``"sgd"``, 0 for ``"projected"``, None for ``"isotropic"``).
        alignment: Fraction of the noise energy in the top-k Hessian subspace of theta_0.
        noise_energy: Mean ``||xi_t||^2``.
        trace_h_sigma: Zhu et al.'s indicator, the mean of ``xi_t^T H_0 xi_t`` over the
            sampled steps (None when not sampled).
        escaped: Escape by the configured rule within T steps; ``escaped_lambda`` and
            ``escaped_barrier`` are the two criteria at any check.
        escape_step: First check step where the rule held (T when it never did).
        lambda_start, lambda_end: lambda_max at theta_0 and at theta_T.
        loss_start, loss_end: Full loss at theta_0 and theta_T (nats).
        barrier_end: Loss barrier on the segment theta_0 -> theta_T (nats).
        checks: ``{"step", "lambda_max", "loss", "barrier"}`` at each check (lambda_max NaN
            where it was not measured).
    """

    noise_type: str
    restart: int
    scale: float | None
    alignment: float
    noise_energy: float
    trace_h_sigma: float | None
    escaped: bool
    escaped_lambda: bool
    escaped_barrier: bool
    escape_step: int
    lambda_start: float
    lambda_end: float
    loss_start: float
    loss_end: float
    barrier_end: float
    checks: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "checks": [{k: (None if v != v else v) for k, v in c.items()} for c in self.checks]}


def _escaped(rule: str, by_lambda: bool, by_barrier: bool) -> bool:
    return {"any": by_lambda or by_barrier, "all": by_lambda and by_barrier,
            "lambda": by_lambda, "barrier": by_barrier, "basin": by_barrier}[rule]


def escape_trial(landscape: Landscape, theta0: Tensor, basis: Tensor, *, noise_type: str, lr: float,
                 lambda_start: float, batch_seed: int, noise_seed: int, steps: int, batch_size: int,
                 check_every: int, lambda_drop: float, barrier_tol: float, barrier_points: int, eig_tol: float,
                 eig_matvecs: int, rule: str, restart: int = 0, scale: float = 1.0, noise_scale: float = 1.0,
                 indicator_every: int = 0, noise_at: str = "current") -> EscapeTrial:
    """Run one trial (module docstring); minibatches from ``batch_seed``, Gaussians from ``noise_seed``.

    Args:
        landscape: The loss; ``theta0``: the start (P,); ``basis``: (P, k) orthonormal top
            Hessian eigenvectors at ``theta0``.
        noise_type: One of :data:`NOISE_TYPES`; ``scale``: the factor of ``"scaled"`` noise.
        lr: Step size eta; ``lambda_start``: lambda_max at ``theta0``.
        batch_seed, noise_seed: Seeds of the minibatch draws and of the Gaussian draws.
        steps: Steps T; ``batch_size``: minibatch size B of the SGD noise.
        check_every: Steps between escape checks (the last step is always checked).
        lambda_drop: Relative drop of lambda_max that counts as escape, in (0, 1).
        barrier_tol: Loss barrier (nats) on the segment from ``theta0`` that counts as escape;
            ``barrier_points``: points of that segment, both ends included.
        eig_tol, eig_matvecs: Lanczos tolerance and product budget per lambda_max estimate.
        rule: Which criterion is escape, one of :data:`RULES`.
        restart: Index recorded in the result.
        noise_scale: Multiplier of every noise draw (a temperature), > 0.
        indicator_every: Steps between samples of ``xi^T H_0 xi`` (0: not sampled).
        noise_at: ``"current"``: minibatch noise at ``theta_t`` (a plain SGD step for
            ``"sgd"``); ``"start"``: at ``theta_0`` (state-independent noise with SGD's
            covariance at the minimum, Zhu et al.'s ``Sigma``), one of :data:`NOISE_AT`.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}; valid: {list(NOISE_TYPES)}")
    if rule not in RULES:
        raise ValueError(f"unknown escape rule {rule!r}; valid: {list(RULES)}")
    if batch_size > landscape.num_examples:
        raise ValueError(f"batch_size={batch_size} exceeds the landscape's {landscape.num_examples} examples")
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be > 0, got {noise_scale}")
    if indicator_every < 0:
        raise ValueError(f"indicator_every must be >= 0, got {indicator_every}")
    if noise_at not in NOISE_AT:
        raise ValueError(f"noise_at must be one of {list(NOISE_AT)}, got {noise_at!r}")
    batches = seeded_generator(batch_seed)
    gauss = seeded_generator(noise_seed, device=theta0.device)
    g0 = landscape.gradient(theta0) if noise_at == "start" else None
    theta = theta0.detach().clone()
    loss0 = landscape.loss(theta0)
    v_top = basis[:, 0]
    align_sum: float | Tensor = 0.0
    energy_sum: float | Tensor = 0.0
    quad_sum: float | Tensor = 0.0
    n_quad = 0
    checks: list[dict[str, float]] = []
    escape_step, esc_l, esc_b = steps, False, False
    basin_since: int | None = None  # first check of the current run of barrier-crossed checks
    for step in range(1, steps + 1):
        index = torch.randperm(landscape.num_examples, generator=batches)[: batch_size]
        g = landscape.gradient(theta)
        draw = landscape.gradient(theta0, index) - g0 if g0 is not None else landscape.gradient(theta, index) - g
        xi = noise_step(noise_type, noise_scale * draw, basis, gauss, scale)
        align_sum = align_sum + (basis.T @ xi).square().sum()  # tensors: no sync per step
        energy_sum = energy_sum + xi.square().sum()
        if indicator_every and step % indicator_every == 0:
            quad_sum = quad_sum + xi @ landscape.hvp(theta0, xi)
            n_quad += 1
        theta = theta - lr * (g + xi)
        if step % check_every == 0 or step == steps:
            lam = float("nan")
            if rule != "basin" or step == steps:
                lam, v_top = lambda_max_at(landscape, theta, v0=v_top, tol=eig_tol, max_matvecs=eig_matvecs, seed=step)
            barrier = segment_barrier(landscape, theta0, theta, barrier_points)
            checks.append({"step": step, "lambda_max": lam, "loss": landscape.loss(theta), "barrier": barrier})
            crossed = barrier > barrier_tol
            basin_since = (basin_since or step) if crossed else None
            if rule == "basin":
                esc_l = esc_l or lam <= (1.0 - lambda_drop) * lambda_start
                esc_b = esc_b or crossed
                continue
            before = _escaped(rule, esc_l, esc_b)
            esc_l = esc_l or lam <= (1.0 - lambda_drop) * lambda_start
            esc_b = esc_b or crossed
            if not before and _escaped(rule, esc_l, esc_b):
                escape_step = step
    escaped = _escaped(rule, esc_l, esc_b)
    if rule == "basin":
        escaped = basin_since is not None
        escape_step = basin_since if basin_since is not None else steps
    last = checks[-1]
    return EscapeTrial(
        noise_type=noise_type, restart=restart,
        scale={"sgd": 1.0, "projected": 0.0, "isotropic": None}.get(noise_type, float(scale)),
        alignment=float(align_sum / energy_sum) if float(energy_sum) > 0 else 0.0,
        noise_energy=float(energy_sum) / steps, trace_h_sigma=float(quad_sum) / n_quad if n_quad else None,
        escaped=escaped, escaped_lambda=esc_l, escaped_barrier=esc_b, escape_step=escape_step,
        lambda_start=lambda_start, lambda_end=last["lambda_max"], loss_start=loss0, loss_end=last["loss"],
        barrier_end=last["barrier"], checks=tuple(checks),
    )


@dataclass(frozen=True)
class EscapeStudy:
    """All trials from one start point, with the settings that produced them.

    ``loss_start`` and ``grad_norm_start`` (full loss and ``||grad L||_2`` at ``theta_0``) say
    how close to a minimum the start is; ``top_eigenvalues`` are the Ritz values of the
    basis when it was computed here (empty when given).
    """

    trials: tuple[EscapeTrial, ...]
    lambda_start: float
    lr: float
    top_k: int
    num_params: int
    basis_source: str
    wall_time_s: float
    loss_start: float = float("nan")
    grad_norm_start: float = float("nan")
    top_eigenvalues: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trials"},
                "trials": [t.to_dict() for t in self.trials]}


def escape_study(landscape: Landscape, theta0: Tensor, *, basis: Tensor | None = None, seed: int = 0,
                 step_size: float, noise_types: Sequence[str], restarts: int, top_k: int, steps: int,
                 batch_size: int, check_every: int, lambda_drop: float, barrier_tol: float, barrier_points: int,
                 eig_tol: float, eig_matvecs: int, rule: str, scales: Sequence[float] = (), noise_scale: float = 1.0,
                 indicator_every: int = 0, noise_at: str = "current") -> EscapeStudy:
    """Every (noise type, restart) trial from ``theta0``.

    Args:
        landscape: The loss (see :class:`Landscape`).
        theta0: The start (a sharp minimum), shape (P,).
        basis: Top Hessian eigenvectors at ``theta0``, shape (P, >= top_k) (e.g. the
            measure stage's cached Ritz vectors); computed by Lanczos when None. The first
            ``top_k`` columns are orthonormalised.
        seed: Seeds every trial: restart r uses minibatch seed ``(seed, r)`` for all noise
            types and its own Gaussian seed.
        step_size: ``eta * lambda_max(theta0)``; below 2 the noise-free iteration is stable
            at the minimum, so escapes are due to the noise.
        noise_types: Subset of :data:`NOISE_TYPES`, in trial order.
        restarts: Independent trials per noise type.
        top_k: Dimension of the top Hessian subspace (alignment and projection).
        steps, batch_size, check_every, lambda_drop, barrier_tol, barrier_points, eig_tol,
            eig_matvecs, rule: As in :func:`escape_trial` (``eig_tol`` and ``eig_matvecs``
            also set the start's lambda_max estimate).
        scales: Factors ``s`` of ``"scaled"`` trials, run after the ``noise_types`` of each
            restart (with the same minibatch draws).
        noise_scale, indicator_every, noise_at: As in :func:`escape_trial`.
    """
    started = time.perf_counter()
    if rule not in RULES:
        raise ValueError(f"unknown escape rule {rule!r}; valid: {list(RULES)}")
    P = theta0.numel()
    if top_k >= P:
        raise ValueError(f"top_k={top_k} must be below the {P} parameters")
    if "scaled" in noise_types:
        raise ValueError("noise_types cannot name 'scaled'; give its factors as scales")
    if any(not s >= 0 for s in scales):
        raise ValueError(f"scales must be >= 0, got {list(scales)}")
    source = "given"
    top_values: tuple[float, ...] = ()
    if basis is None:
        op = _HessianAt(landscape, theta0)
        eig = top_eigenpairs(op, k=top_k, which="LA", tol=eig_tol, seed=seed)
        basis, source, top_values = eig.vectors, "lanczos", tuple(float(v) for v in eig.values)
    if basis.ndim != 2 or basis.shape[0] != P or basis.shape[1] < top_k:
        raise ValueError(f"basis must have shape ({P}, >= {top_k}), got {tuple(basis.shape)}")
    basis = torch.linalg.qr(basis[:, : top_k].to(theta0))[0]
    lam0, _ = lambda_max_at(landscape, theta0, v0=basis[:, 0], tol=eig_tol, max_matvecs=eig_matvecs, seed=seed)
    if not lam0 > 0:
        raise ValueError(f"lambda_max at the start point is {lam0:.4g}; a minimum needs a positive top eigenvalue")
    lr = step_size / lam0
    schedule: dict[str, Any] = {
        "steps": steps, "batch_size": batch_size, "check_every": check_every, "lambda_drop": lambda_drop,
        "barrier_tol": barrier_tol, "barrier_points": barrier_points, "eig_tol": eig_tol, "eig_matvecs": eig_matvecs, "rule": rule,
        "noise_scale": noise_scale, "indicator_every": indicator_every, "noise_at": noise_at,
    }
    arms = [(kind, 1.0) for kind in noise_types] + [("scaled", float(s)) for s in scales]
    trials = []
    for r in range(restarts):
        for i, (kind, factor) in enumerate(arms):
            trials.append(escape_trial(landscape, theta0, basis, noise_type=kind, scale=factor, lr=lr, lambda_start=lam0,
                                       batch_seed=_mix(seed, r), noise_seed=_mix(seed, r, 1 + i), restart=r, **schedule))
    return EscapeStudy(trials=tuple(trials), lambda_start=lam0, lr=lr, top_k=top_k, num_params=P,
                       basis_source=source, wall_time_s=time.perf_counter() - started, loss_start=landscape.loss(theta0),
                       grad_norm_start=float(landscape.gradient(theta0).norm()), top_eigenvalues=top_values)


def _mix(*parts: int) -> int:
    """A 63-bit seed from a tuple of small ints (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p + 0x9E3779B9)) * 1099511628211) % (1 << 63)
    return h


def trial_rows(studies: Sequence[tuple[int, EscapeStudy]]) -> list[dict[str, Any]]:
    """One flat row per trial (``seed`` of the start point added) for the H3 regression."""
    return [
        {"seed": seed, "noise_type": t.noise_type, "scale": t.scale, "restart": t.restart, "alignment": t.alignment,
         "trace_h_sigma": t.trace_h_sigma, "escape": int(t.escaped), "escape_lambda": int(t.escaped_lambda),
         "escape_barrier": int(t.escaped_barrier), "escape_step": t.escape_step,
         "lambda_ratio": t.lambda_end / t.lambda_start, "barrier_end": t.barrier_end, "loss_end": t.loss_end,
         "loss_start": study.loss_start, "grad_norm_start": study.grad_norm_start}
        for seed, study in studies
        for t in study.trials
    ]
