"""Small VGG-style network, registered with timm as ``vgg_small``.

After Simonyan & Zisserman 2015 (*Very deep convolutional networks for large-scale image
recognition*): stacks of 3x3 convolutions separated by max-pooling, here three
conv-conv-pool stages with channels ``width * (1, 2, 4)``::

    VGGSmall
    ├── features : nn.Sequential of 3 stages; stage s (s = 0, 1, 2):
    │     ├── 0 : ConvNormAct(c_in -> width * 2**s)  3x3 conv (bias unless BN), norm, ReLU
    │     ├── 1 : ConvNormAct(width * 2**s -> width * 2**s)
    │     └── 2 : nn.MaxPool2d(2)
    ├── pool     : global average pool + flatten    (B, 4*width, h, w) -> (B, 4*width)
    └── head     : nn.Linear(4 * width, num_classes)

VGG's large fully connected layers are replaced by global average pooling and one linear
head, so the parameter count is independent of the image size; inputs need
``img_size >= 8`` (three 2x2 poolings). Initialisation as in ``landscape.models._layers``.
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

__all__ = ["VGGSmall", "vgg_small"]

NUM_STAGES = 3


class VGGSmall(nn.Module):
    """Three conv-conv-pool stages and a linear head (structure in the module docstring).

    Args:
        in_chans: Input channels.
        num_classes: Outputs (logits).
        width: Channels of the first stage (width multiplier; stages use 1x, 2x, 4x).
        norm: ``"none"``, ``"bn"`` (BatchNorm2d) or ``"ln"`` (GroupNorm(1, C)).
        img_size: Input side length, checked to be ``>= 8``.

    Raises:
        ValueError: A size is not a positive integer, ``img_size < 8`` or ``norm`` unknown.
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
        stages = []
        c_in = in_chans
        for s in range(NUM_STAGES):
            c_out = width * 2**s
            stages.append(
                nn.Sequential(
                    ConvNormAct(c_in, c_out, norm), ConvNormAct(c_out, c_out, norm), nn.MaxPool2d(2)
                )
            )
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)
        he_normal_(self.head, activation_gain("linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.head(self.pool(self.features(x)))


@register
def vgg_small(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    width: int = 16,
    norm: Norm = "none",
    init_scale: float = 1.0,
    **kwargs: Any,
) -> VGGSmall:
    """``vgg_small`` entrypoint; arguments as :class:`VGGSmall`, ``init_scale`` multiplies
    the Conv/Linear weights."""
    check_entrypoint_extras(vgg_small, pretrained, kwargs)
    check_init_scale(init_scale)
    model = VGGSmall(in_chans, num_classes, width, norm, img_size)
    return scale_init_(model, init_scale)
