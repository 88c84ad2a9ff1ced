"""Residual multilayer perceptron, registered with timm as ``resmlp``.

The depth x skip study of H2 needs networks deep enough for skip connections to matter
(Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the loss landscape of neural nets*,
see the plain network's landscape turn chaotic between 20 and 56 layers) and cheap enough
to train many seeds on a CPU. This is the MLP analogue of the pre-activation residual
network of He, Zhang, Ren & Sun 2016 (*Identity mappings in deep residual networks*),
constant width throughout, so every block's shortcut is the identity::

    ResMLP
    ├── flatten : nn.Flatten()                    (B, *) -> (B, in_features)
    ├── stem    : nn.Linear(in_features, width)
    ├── blocks  : nn.ModuleList of `depth` ResidualBlock (width -> width):
    │     branch(x) = linear2(act(norm2(linear1(act(norm1(x))))))
    │     out       = x + branch(x)   (skip=True)
    │               = branch(x)       (skip=False: the same block without the identity)
    ├── final   : norm -> act                      (pre-activation nets end with one)
    └── head    : nn.Linear(width, num_classes)

``norm`` is ``"none"`` (identity), ``"bn"`` (BatchNorm1d) or ``"ln"`` (LayerNorm) at every
norm slot. Layers with weights: 2 * depth + 2. ``linear1`` has no bias before BatchNorm
(redundant with its shift); ``stem``, ``linear2`` and ``head`` always have one.

Initialisation, identical for ``skip=True`` and ``skip=False``: every hidden Linear
He-normal with the activation's gain (each is followed by norm -> act), the head gain 1,
zero biases (``landscape.models._layers``), drawn in the same order, so the two variants
built from one seed have equal initial weights and differ only in the identity path.
Without normalisation the residual stream's second moment doubles per block at this
initialisation (each branch adds about its input's second moment); with ``ln``/``bn`` the
branch input is normalised and the growth is linear in depth.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._layers import (
    ACTIVATIONS,
    NORMS,
    Activation,
    Norm,
    activation_gain,
    check_choice,
    check_int,
    he_normal_,
    make_activation,
    make_norm,
)
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["ResMLP", "ResidualBlock", "resmlp"]


class ResidualBlock(nn.Module):
    """Pre-activation block ``x + linear2(act(norm2(linear1(act(norm1(x))))))``.

    Attributes:
        skip: Whether the identity is added (False: the output is the branch alone).

    Args:
        width: Features in and out.
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        norm: ``"none"``, ``"bn"`` or ``"ln"``.
        skip: Add the identity.
    """

    def __init__(self, width: int, activation: str, norm: str, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        gain = activation_gain(activation)
        self.norm1 = make_norm(norm, width, spatial=False)
        self.act1 = make_activation(activation)
        self.linear1 = nn.Linear(width, width, bias=norm != "bn")
        self.norm2 = make_norm(norm, width, spatial=False)
        self.act2 = make_activation(activation)
        self.linear2 = nn.Linear(width, width)
        he_normal_(self.linear1, gain)
        he_normal_(self.linear2, gain)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, (B, width) -> (B, width)."""
        return self.linear2(self.act2(self.norm2(self.linear1(self.act1(self.norm1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, width)."""
        out = self.branch(x)
        return x + out if self.skip else out


class ResMLP(nn.Module):
    """Residual MLP of constant width (structure in the module docstring).

    Args:
        in_features: Flattened input size.
        num_classes: Outputs (logits).
        width: Features of the residual stream and of every block.
        depth: Number of residual blocks (>= 1); 2 * depth + 2 weight layers.
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        norm: ``"none"``, ``"bn"`` (BatchNorm1d) or ``"ln"`` (LayerNorm).
        skip: Residual connections on (True) or off (the plain network of the same layers).

    Raises:
        ValueError: A size is not a positive integer, an option is not one of the allowed
            values, or ``skip`` is not a bool.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 10,
        width: int = 64,
        depth: int = 4,
        activation: Activation = "relu",
        norm: Norm = "ln",
        skip: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features)
        check_int("num_classes", num_classes)
        check_int("width", width)
        check_int("depth", depth)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("norm", norm, NORMS)
        if not isinstance(skip, bool):
            raise ValueError(f"skip must be True or False, got {skip!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.skip = skip
        self.flatten = nn.Flatten()
        self.stem = nn.Linear(in_features, width)
        he_normal_(self.stem, activation_gain(activation))
        self.blocks = nn.ModuleList(ResidualBlock(width, activation, norm, skip) for _ in range(depth))
        self.final = nn.Sequential(make_norm(norm, width, spatial=False), make_activation(activation))
        self.head = nn.Linear(width, num_classes)
        he_normal_(self.head, activation_gain("linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *) with prod(*) == in_features -> logits (B, num_classes)."""
        features = math.prod(x.shape[1:])
        if features != self.in_features:
            raise ValueError(
                f"ResMLP expects {self.in_features} input features, got {features} "
                f"(input shape {tuple(x.shape)})"
            )
        x = self.stem(self.flatten(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final(x))


@register
def resmlp(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    in_features: int | None = None,
    width: int = 64,
    depth: int = 4,
    activation: Activation = "relu",
    norm: Norm = "ln",
    skip: bool = True,
    init_scale: float = 1.0,
    **kwargs: Any,
) -> ResMLP:
    """``resmlp`` entrypoint. ``in_features`` defaults to ``in_chans * img_size**2`` (as
    ``mlp``); other arguments as :class:`ResMLP`; ``init_scale`` multiplies the Linear weights."""
    check_entrypoint_extras(resmlp, pretrained, kwargs)
    check_init_scale(init_scale)
    if in_features is None:
        in_features = check_int("in_chans", in_chans) * check_int("img_size", img_size) ** 2
    model = ResMLP(in_features, num_classes, width, depth, activation, norm, skip)
    return scale_init_(model, init_scale)
