"""Warm-started power iteration on the Hessian of a minibatch loss, for use inside an optimizer.

The curvature-aware optimizers of the second plan need, every few steps, the spectral norm
``||H_t||_2`` of the Hessian of the current minibatch loss and its eigenvector. Both come
from a handful of power iterations started from the previous estimate's vector (warm start:
the top eigenvector moves slowly between nearby iterates, so a few products suffice).
Products are double-backward Hessian-vector products through the gradient graph of the step
(``torch.autograd.grad`` with ``create_graph=True``), so any model works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

__all__ = ["PowerEstimate", "gradients_with_graph", "power_iteration"]


@dataclass(frozen=True)
class PowerEstimate:
    """Result of :func:`power_iteration`.

    Attributes:
        value: Rayleigh quotient ``v^T H v`` of the last unit vector multiplied (its sign
            is kept; ``abs(value)`` estimates the spectral norm from below).
        vector: the next iterate ``H v / ||H v||`` (unit norm), one tensor per parameter:
            the warm start of the next call.
        num_hvps: Hessian-vector products spent.
    """

    value: float
    vector: list[Tensor]
    num_hvps: int


def gradients_with_graph(loss: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` with respect to ``params``, keeping the graph for HVPs.

    Parameters that do not reach the loss get zero gradients (so every list is aligned with
    ``params``).
    """
    grads = torch.autograd.grad(loss, list(params), create_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    # sum() starts from the int 0; a Tensor for the non-empty lists it is given
    return cast(Tensor, sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def power_iteration(
    grads: Sequence[Tensor],
    params: Sequence[Tensor],
    start: Sequence[Tensor] | None,
    steps: int,
    generator: torch.Generator | None = None,
) -> PowerEstimate:
    """Power iteration for the largest-magnitude eigenpair of the Hessian behind ``grads``.

    Args:
        grads: gradients built with ``create_graph=True`` (:func:`gradients_with_graph`).
        params: the parameters they were taken with respect to (same order).
        start: warm-start vector (one tensor per parameter), or ``None`` for a Gaussian
            start drawn from ``generator`` on the CPU (device-independent draws).
        steps: products to spend (>= 1).
        generator: CPU generator for the random start.

    Returns:
        :class:`PowerEstimate`. ``abs(value)`` estimates ``||H||_2`` from below.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if start is None:
        vec = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    else:
        vec = [v.detach().clone() for v in start]
    norm = torch.sqrt(_dot(vec, vec))
    if not norm > 0:
        raise ValueError("the start vector of the power iteration is zero")
    vec = [v / norm for v in vec]
    value = torch.zeros(())
    for _ in range(steps):
        raw_hv = torch.autograd.grad(list(grads), list(params), grad_outputs=vec, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, raw_hv, strict=True)]
        value = _dot(vec, hv)  # Rayleigh quotient of the current unit vector
        norm = torch.sqrt(_dot(hv, hv))
        if not norm > 0:  # H v = 0: v is in the null space; keep it, the estimate is 0
            break
        vec = [h / norm for h in hv]
    return PowerEstimate(value=float(value), vector=vec, num_hvps=steps)
