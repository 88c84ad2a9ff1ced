"""Fully connected network (multilayer perceptron), registered with timm as ``mlp``.

The width/depth sweeps of the landscape studies (e.g. the Hessian spectra of Sagun et al.
2017, *Empirical analysis of the Hessian of over-parametrized neural networks*) and the
permutation alignment of Ainsworth, Hayase & Srinivasa 2023 (*Git Re-Basin*) run on this
model, so its structure is fixed and documented here::

    MLP
    ├── flatten : nn.Flatten()                 (B, *) -> (B, in_features)
    ├── layers  : nn.ModuleList of `depth` MLPLayer; layer i (i = 0 .. depth-1):
    │     ├── linear : nn.Linear(d_i, width, bias = norm != "bn"),  d_0 = in_features,
    │     │            d_i = width for i >= 1
    │     ├── norm   : nn.Identity | nn.BatchNorm1d(width) | nn.LayerNorm(width)
    │     ├── act    : nn.ReLU | nn.Tanh | nn.GELU
    │     └── drop   : nn.Identity (dropout == 0) | nn.Dropout(dropout)
    └── head    : nn.Linear(width, num_classes)   (in_features when depth == 0)

Hidden unit permutation of layer i: permute the rows of ``layers[i].linear.weight`` and
``.bias``, the entries of ``layers[i].norm`` (weight, bias, and BatchNorm's running_mean /
running_var), and the columns of the next linear map (``layers[i+1].linear.weight`` or
``head.weight``). The function computed is unchanged.

Initialisation: He-normal with the activation's gain for hidden layers, gain 1 for the head,
zero biases (see ``landscape.models._layers``); then ``init_scale`` multiplies the weights.
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
    check_prob,
    he_normal_,
    make_activation,
    make_norm,
)
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["MLP", "MLPLayer", "mlp"]


class MLPLayer(nn.Module):
    """One hidden layer: ``linear -> norm -> act -> drop``.

    Args:
        in_features: Input features.
        width: Output features (hidden units).
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        norm: ``"none"``, ``"bn"`` or ``"ln"``.
        dropout: Dropout probability in ``[0, 1)``.
    """

    def __init__(
        self, in_features: int, width: int, activation: str, norm: str, dropout: float
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, width, bias=norm != "bn")
        self.norm = make_norm(norm, width, spatial=False)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        he_normal_(self.linear, activation_gain(activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> (B, width)."""
        return self.drop(self.act(self.norm(self.linear(x))))


class MLP(nn.Module):
    """Multilayer perceptron on flattened inputs (structure in the module docstring).

    Args:
        in_features: Flattened input size.
        num_classes: Outputs (logits).
        width: Hidden units per layer.
        depth: Number of hidden layers (0 gives a linear model).
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        norm: ``"none"``, ``"bn"`` (BatchNorm1d) or ``"ln"`` (LayerNorm).
        dropout: Dropout probability after each activation, in ``[0, 1)``.

    Raises:
        ValueError: A size is not a positive integer (depth: non-negative), or an option is
            not one of the allowed values.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 10,
        width: int = 256,
        depth: int = 2,
        activation: Activation = "relu",
        norm: Norm = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features)
        check_int("num_classes", num_classes)
        check_int("width", width)
        check_int("depth", depth, minimum=0)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("norm", norm, NORMS)
        dropout = check_prob("dropout", dropout)
        self.in_features = in_features
        self.num_classes = num_classes
        self.flatten = nn.Flatten()
        dims = [in_features] + [width] * depth
        self.layers = nn.ModuleList(
            MLPLayer(dims[i], width, activation, norm, dropout) for i in range(depth)
        )
        self.head = nn.Linear(dims[-1], num_classes)
        he_normal_(self.head, activation_gain("linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *) with prod(*) == in_features -> logits (B, num_classes)."""
        features = math.prod(x.shape[1:])
        if features != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input features, got {features} "
                f"(input shape {tuple(x.shape)})"
            )
        x = self.flatten(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@register
def mlp(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    in_features: int | None = None,
    width: int = 256,
    depth: int = 2,
    activation: Activation = "relu",
    norm: Norm = "none",
    dropout: float = 0.0,
    init_scale: float = 1.0,
    **kwargs: Any,
) -> MLP:
    """MLP entrypoint. ``in_features`` defaults to ``in_chans * img_size**2``; when given,
    it takes precedence and ``in_chans``/``img_size`` are ignored (non-image data).

    Other arguments as :class:`MLP`; ``init_scale`` multiplies the Linear weights.
    """
    check_entrypoint_extras(mlp, pretrained, kwargs)
    check_init_scale(init_scale)
    if in_features is None:
        in_features = check_int("in_chans", in_chans) * check_int("img_size", img_size) ** 2
    model = MLP(in_features, num_classes, width, depth, activation, norm, dropout)
    return scale_init_(model, init_scale)
