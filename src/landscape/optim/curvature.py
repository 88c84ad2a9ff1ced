"""Curvature-aware optimizers of the second plan: an adaptive learning rate and a hybrid step.

Both follow one protocol so the training loop can drive them like any torch optimizer:

    optimizer.zero_grad()
    optimizer.backward(loss)   # instead of loss.backward(): fills .grad and, on estimate
                               # steps, runs warm-started power iterations on the Hessian
    optimizer.step()

``CurvatureAdaptiveSGD`` scales the (scheduled) learning rate as
``eta_t = eta_0 / (1 + gamma * ||H_t||_2)``, with ``||H_t||_2`` the spectral norm of the
minibatch-loss Hessian re-estimated every ``every`` steps; ``gamma = 0`` is plain SGD,
bit for bit. ``HybridAdam`` takes the step
``w_{t+1} = w_t - eta_t (d_t + mu v_t / ||v_t||)``, where ``d_t`` is Adam's diagonally
preconditioned gradient (our reading of the plan's ``diag(grad L)`` term: the plan combines
Hessian-vector products "with Adam for directional preconditioning") and ``v_t`` the
top-magnitude Hessian eigenvector from power iteration, oriented so that
``<v_t, grad L> >= 0`` (then ``-mu v_t`` is a descent direction; an eigenvector's sign is
otherwise arbitrary); ``mu = 0`` is plain Adam, bit for bit.

The estimate's state (warm-start vector, step counter, last value, products spent) lives in
the optimizer's ``state_dict``, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from landscape.seeding import seeded_generator

from .power import gradients_with_graph, power_iteration

__all__ = ["CurvatureAdaptiveSGD", "HybridAdam", "CurvatureProbeMixin"]


class CurvatureProbeMixin:
    """Shared bookkeeping: when to estimate, the warm-started power iteration, its state.

    Subclasses set ``self._probe_active`` (whether estimates are needed at all) and call
    :meth:`_init_probe` from ``__init__``. Counters are kept in ``param_groups[0]`` so that
    ``state_dict`` carries them; the warm-start vector is kept under the optimizer state's
    key ``"power_vector"`` (not per parameter: torch's Adam initialises a parameter's
    state only when it is empty).
    """

    param_groups: list[dict[str, Any]]
    state: defaultdict[Any, Any]
    _probe_active: bool

    def _init_probe(self, every: int, power_steps: int, seed: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not isinstance(power_steps, int) or power_steps < 1:
            raise ValueError(f"power_steps must be an int >= 1, got {power_steps!r}")
        group = self.param_groups[0]
        group.setdefault("probe_every", every)
        group.setdefault("probe_power_steps", power_steps)
        group.setdefault("probe_seed", seed)
        group.setdefault("probe_step", 0)
        group.setdefault("probe_value", 0.0)
        group.setdefault("probe_num_hvps", 0)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    @property
    def curvature_estimate(self) -> float:
        """Last Rayleigh quotient (``abs`` of it estimates ``||H_t||_2``); 0 before the first."""
        return float(self.param_groups[0]["probe_value"])

    @property
    def num_hvps(self) -> int:
        """Hessian-vector products spent so far (the cost to report beside wall time)."""
        return int(self.param_groups[0]["probe_num_hvps"])

    def estimate_due(self) -> bool:
        """Whether this step's :meth:`backward` runs the power iteration: the loss it gets is
        then differentiated twice, so its forward must avoid fused attention kernels
        (build it under :func:`landscape.functional.math_attention`)."""
        group = self.param_groups[0]
        return self._probe_active and group["probe_step"] % group["probe_every"] == 0

    def backward(self, loss: Tensor) -> None:
        """Fill ``.grad`` from ``loss``; on estimate steps also refresh the power estimate."""
        if not self.estimate_due():
            loss.backward()
            return
        params = self._params()
        grads = gradients_with_graph(loss, params)
        group = self.param_groups[0]
        start = self.state.get("power_vector")
        generator = seeded_generator(group["probe_seed"])
        est = power_iteration(grads, params, start, int(group["probe_power_steps"]), generator)
        self.state["power_vector"] = est.vector
        group["probe_value"] = est.value
        group["probe_num_hvps"] += est.num_hvps
        for p, g_graph in zip(params, grads, strict=True):
            g = g_graph.detach()
            p.grad = g if p.grad is None else p.grad + g

    def _advance(self) -> None:
        self.param_groups[0]["probe_step"] += 1


class CurvatureAdaptiveSGD(CurvatureProbeMixin, torch.optim.SGD):
    """SGD (momentum, Nesterov, weight decay as ``torch.optim.SGD``) with
    ``eta_t = eta_0 / (1 + gamma ||H_t||_2)``.

    Args:
        params: parameters or parameter groups.
        lr: base learning rate ``eta_0`` (a scheduler may change it; the factor applies on top).
        momentum: as in ``torch.optim.SGD``.
        dampening: as in ``torch.optim.SGD``.
        weight_decay: as in ``torch.optim.SGD``.
        nesterov: as in ``torch.optim.SGD``.
        gamma: curvature sensitivity (>= 0); 0 gives plain SGD exactly, with no products.
        every: steps between estimates of ``||H_t||_2`` (the value is held in between).
        power_steps: warm-started power iterations per estimate.
        seed: seed of the first estimate's random start vector.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        gamma: float = 0.0,
        every: int = 10,
        power_steps: int = 5,
        seed: int = 0,
    ) -> None:
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        self.param_groups[0].setdefault("gamma", float(gamma))
        self._init_probe(every, power_steps, seed)
        self._probe_active = gamma > 0

    @property
    def lr_factor(self) -> float:
        """``1 / (1 + gamma ||H_t||_2)`` with the current estimate."""
        return 1.0 / (1.0 + self.param_groups[0]["gamma"] * abs(self.curvature_estimate))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        factor = self.lr_factor
        saved = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * factor
        try:
            loss = super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, saved, strict=True):
                g["lr"] = lr
        self._advance()
        return loss


class HybridAdam(CurvatureProbeMixin, torch.optim.Adam):
    """Adam plus a normalised step along the top Hessian eigenvector:
    ``w <- w - eta (d_t + mu v_t / ||v_t||)`` (module docstring for the reading of ``d_t``).

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        betas: as in ``torch.optim.Adam``.
        eps: as in ``torch.optim.Adam``.
        weight_decay: as in ``torch.optim.Adam``.
        mu: weight of the eigenvector step (>= 0); 0 gives plain Adam exactly, with no products.
        every: steps between eigenvector estimates (the vector is held in between).
        power_steps: warm-started power iterations per estimate.
        seed: seed of the first estimate's random start vector.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        mu: float = 0.0,
        every: int = 10,
        power_steps: int = 5,
        seed: int = 0,
    ) -> None:
        if not (isinstance(mu, (int, float)) and mu >= 0):
            raise ValueError(f"mu must be a number >= 0, got {mu!r}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.param_groups[0].setdefault("mu", float(mu))
        self._init_probe(every, power_steps, seed)
        self._probe_active = mu > 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        params = self._params()
        mu = self.param_groups[0]["mu"]
        direction = None
        if mu > 0 and "power_vector" in self.state:
            vec = self.state["power_vector"]
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            slope = sum((v * g).sum() for v, g in zip(vec, grads, strict=True))
            sign = -1.0 if slope < 0 else 1.0
            norm = torch.sqrt(sum((v * v).sum() for v in vec))
            direction = [sign * v / norm for v in vec]
        loss = super().step(closure)
        if direction is not None:
            lr_of = {p: g["lr"] for g in self.param_groups for p in g["params"]}
            for p, d in zip(params, direction, strict=True):
                p.add_(d, alpha=-lr_of[p] * mu)
        self._advance()
        return loss
