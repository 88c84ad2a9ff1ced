"""Small convolutional network, registered with timm as ``cnn_small``.

A LeNet-style classifier (LeCun et al. 1998, *Gradient-based learning applied to document
recognition*) in its modern form::

    CNNSmall
    ├── features : nn.Sequential of 2 stages; stage s (s = 0, 1):
    │     ├── 0 : ConvNormAct(c_s -> width * 2**s)  3x3 conv (bias unless BN), norm, ReLU
    │     └── 1 : nn.MaxPool2d(2)
    ├── pool     : global average pool + flatten    (B, 2*width, h, w) -> (B, 2*width)
    └── head     : nn.Linear(2 * width, num_classes)

Global average pooling makes the parameter count independent of the image size; inputs
need ``img_size >= 4`` (two 2x2 poolings). Initialisation as in ``landscape.models._layers``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._layers import (
    NORMS,
    ConvNormAct,
    Norm,
    activation_gain,
    check_choice,
    check_int,
    he_normal_,
)
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["CNNSmall", "cnn_small"]

NUM_STAGES = 2


class CNNSmall(nn.Module):
    """Two conv-pool stages and a linear head (structure in the module docstring).

    Args:
        in_chans: Input channels.
        num_classes: Outputs (logits).
        width: Channels of the first conv; the second has ``2 * width``.
        norm: ``"none"``, ``"bn"`` (BatchNorm2d) or ``"ln"`` (GroupNorm(1, C)).
        img_size: Input side length, checked to be ``>= 4``.

    Raises:
        ValueError: A size is not a positive integer, ``img_size < 4`` or ``norm`` unknown.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 10,
        width: int = 16,
        norm: Norm = "none",
        img_size: int = 28,
    ) -> None:
        super().__init__()
        check_int("in_chans", in_chans)
        check_int("num_classes", num_classes)
        check_int("width", width)
        check_choice("norm", norm, NORMS)
        check_int("img_size", img_size, minimum=2**NUM_STAGES)
        self.num_classes = num_classes
        channels = [in_chans] + [width * 2**s for s in range(NUM_STAGES)]
        self.features = nn.Sequential(
            *(
                nn.Sequential(ConvNormAct(channels[s], channels[s + 1], norm), nn.MaxPool2d(2))
                for s in range(NUM_STAGES)
            )
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels[-1], num_classes)
        he_normal_(self.head, activation_gain("linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.head(self.pool(self.features(x)))


@register
def cnn_small(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    width: int = 16,
    norm: Norm = "none",
    init_scale: float = 1.0,
    **kwargs: Any,
) -> CNNSmall:
    """``cnn_small`` entrypoint; arguments as :class:`CNNSmall`, ``init_scale`` multiplies
    the Conv/Linear weights."""
    check_entrypoint_extras(cnn_small, pretrained, kwargs)
    check_init_scale(init_scale)
    model = CNNSmall(in_chans, num_classes, width, norm, img_size)
    return scale_init_(model, init_scale)
