"""Shared building blocks of our architectures: argument checks, norm and activation
factories, the conv-norm-ReLU unit and the default weight initialisation.

Default initialisation of every architecture defined in this package (He et al. 2015,
*Delving deep into rectifiers*, and LeCun et al. 1998 for the read-out): each Linear/Conv
weight is drawn i.i.d. from ``N(0, gain**2 / fan_in)`` with ``gain`` the gain of the
nonlinearity that follows the layer (ReLU and GELU: sqrt(2), tanh: 5/3) and ``gain = 1``
for the classifier head; every bias is zero; normalisation layers start at weight 1,
bias 0. With this rule ``init_scale = 1`` is the variance-preserving (critical) scale.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "NORMS",
    "ACTIVATIONS",
    "Norm",
    "Activation",
    "check_choice",
    "check_int",
    "check_prob",
    "make_norm",
    "make_activation",
    "activation_gain",
    "he_normal_",
    "ConvNormAct",
]

Norm = Literal["none", "bn", "ln"]
Activation = Literal["relu", "tanh", "gelu"]

NORMS: tuple[str, ...] = ("none", "bn", "ln")
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu")

_GAINS = {"relu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "linear": 1.0}


def check_choice(arg: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``ValueError``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{arg} must be one of {list(allowed)}, got {value!r}")
    return value


def check_int(arg: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` (not bool) ``>= minimum``; otherwise raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}")
    return value


def check_prob(arg: str, value: Any) -> float:
    """Return ``value`` as float if it is a real number in ``[0, 1)``; otherwise raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arg} must be a number in [0, 1), got {value!r}")
    return float(value)


def make_norm(norm: str, num_features: int, spatial: bool) -> nn.Module:
    """Normalisation layer by name.

    Args:
        norm: ``"none"`` (identity), ``"bn"`` (BatchNorm1d/2d) or ``"ln"``: for feature
            vectors ``nn.LayerNorm(num_features)``; for feature maps ``nn.GroupNorm(1, C)``,
            which normalises each sample over all of (C, H, W) (a LayerNorm over the whole
            map) with a per-channel affine weight and bias.
        num_features: Features (vectors) or channels C (maps).
        spatial: True for (B, C, H, W) maps, False for (B, F) vectors.

    Returns:
        The layer; ``nn.Identity()`` for ``"none"``.
    """
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    if norm == "bn":
        return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)
    return nn.GroupNorm(1, num_features) if spatial else nn.LayerNorm(num_features)


def make_activation(activation: str) -> nn.Module:
    """``nn.ReLU``, ``nn.Tanh`` or ``nn.GELU`` (exact erf form) by name."""
    check_choice("activation", activation, ACTIVATIONS)
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[activation]()


def activation_gain(activation: str) -> float:
    """Init gain for a layer followed by ``activation`` (``"linear"`` for none): relu and
    gelu sqrt(2), tanh 5/3, linear 1."""
    return _GAINS[activation]


def he_normal_(layer: nn.Linear | nn.Conv2d, gain: float) -> None:
    """Draw ``layer.weight ~ N(0, gain**2 / fan_in)`` and zero ``layer.bias``, in place.

    For freshly constructed layers only; uses the global torch RNG (seeded by the caller).
    """
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, mean=0.0, std=gain / math.sqrt(fan_in))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class ConvNormAct(nn.Module):
    """``conv`` (k x k, 'same' padding) -> ``norm`` -> ``act`` (ReLU).

    The conv has a bias unless followed by BatchNorm (whose shift makes it redundant).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        norm: ``"none"``, ``"bn"`` or ``"ln"`` (see :func:`make_norm`).
        stride: Conv stride.
        kernel_size: Odd kernel size.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm: str, stride: int = 1, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=norm != "bn",
        )
        self.norm = make_norm(norm, out_channels, spatial=True)
        self.act = nn.ReLU()
        he_normal_(self.conv, activation_gain("relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        return self.act(self.norm(self.conv(x)))
