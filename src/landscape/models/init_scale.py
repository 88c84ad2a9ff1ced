"""Initialisation scale: multiply the default initial weights of a model by a constant.

The initialisation scale is a standard knob of loss-landscape studies (e.g. the lazy vs.
rich regimes of Chizat, Oyallon & Bach 2019, *On lazy training in differentiable
programming*). Rule, applied after the architecture's own initialisation (ours: see
``landscape.models._layers``; timm's: timm's ``init_weights``):

* the ``weight`` of every ``nn.Linear`` and every convolution (``nn.Conv1d/2d/3d`` and
  transposed convolutions, i.e. any ``torch.nn.modules.conv._ConvNd``) is multiplied by
  ``scale``;
* everything else is left as initialised: biases, normalisation affine parameters,
  buffers (BatchNorm running statistics), ViT class token and position embeddings.

Because the scaling happens after initialisation it consumes no random numbers, so a model
built with ``scale = s`` under a seed equals the ``scale = 1`` model under the same seed
with those weights multiplied by ``s`` (bit for bit when ``s`` is a power of two).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard, TypeVar

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

__all__ = ["check_init_scale", "is_scaled_layer", "scale_init_"]

M = TypeVar("M", bound=nn.Module)


def check_init_scale(init_scale: Any) -> float:
    """Return ``init_scale`` as float if it is a finite real number ``> 0``; else raise."""
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, (int, float))
        or not math.isfinite(init_scale)
        or init_scale <= 0
    ):
        raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
    return float(init_scale)


def is_scaled_layer(module: nn.Module) -> TypeGuard[nn.Linear | _ConvNd]:
    """Whether ``init_scale`` multiplies ``module.weight`` (Linear and convolution layers)."""
    return isinstance(module, (nn.Linear, _ConvNd)) and getattr(module, "weight", None) is not None


def scale_init_(model: M, init_scale: float) -> M:
    """Multiply the weight of every Linear/Conv layer of a freshly built model, in place.

    Meant for construction time (``build_model`` and our entrypoints call it); it does not
    touch gradients, biases, norm parameters or buffers. A weight shared by several layers
    is scaled once.

    Args:
        model: Newly constructed model.
        init_scale: Finite factor ``> 0``.

    Returns:
        ``model`` (for chaining).

    Raises:
        ValueError: ``init_scale`` is not a finite number ``> 0``.
    """
    scale = check_init_scale(init_scale)
    if scale == 1.0:
        return model
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            if is_scaled_layer(module) and id(module.weight) not in seen:
                seen.add(id(module.weight))
                module.weight.mul_(scale)
    return model
