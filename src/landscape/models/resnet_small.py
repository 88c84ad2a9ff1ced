"""CIFAR-style residual network, registered with timm as ``resnet_small``.

He, Zhang, Ren & Sun 2016 (*Deep residual learning for image recognition*, section 4.2):
a 3x3 stem, three stages of ``blocks_per_stage`` basic blocks with ``width * (1, 2, 4)``
channels (stages 2 and 3 halve the resolution with a stride-2 first conv), global average
pooling and a linear head. The shortcut is the identity, or a 1x1 stride-s projection conv
plus norm when the shape changes (He et al.'s option B). ``skip=False`` gives the "plain"
network of the same paper: no shortcut at all, projection included, so the study of skip
connections (Li et al. 2018, *Visualizing the loss landscape of neural nets*) compares
networks that differ only in the residual path::

    ResNetSmall
    ├── stem   : ConvNormAct(in_chans -> width)          3x3 conv -> norm -> ReLU
    ├── stages : nn.ModuleList of 3 nn.Sequential of BasicBlock
    │     stage s: blocks_per_stage blocks, width * 2**s channels, first block stride 2 if s > 0
    ├── pool   : global average pool + flatten
    └── head   : nn.Linear(4 * width, num_classes)

    BasicBlock: out = act2(norm2(conv2(act1(norm1(conv1(x))))) + shortcut(x))
                (the "+ shortcut(x)" term only when skip=True; shortcut is None otherwise)

Norms: ``"none"``, ``"bn"`` (BatchNorm2d), ``"ln"``: ``nn.GroupNorm(1, C)``, a LayerNorm
over the whole (C, H, W) feature map of each sample with per-channel affine parameters.
Convs have a bias unless followed by BatchNorm. Works for any ``img_size >= 1`` (8, 14,
28, 32 ... ; an H x W input leaves ceil(H/4) x ceil(W/4) before pooling). Initialisation:
He-normal (ReLU gain) for every conv, gain 1 for the head, zero biases.
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
    make_norm,
)
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["BasicBlock", "ResNetSmall", "resnet_small"]

NUM_STAGES = 3


class BasicBlock(nn.Module):
    """Two 3x3 convs with an optional residual connection (see the module docstring).

    Attributes:
        skip: Whether the residual connection is present.
        shortcut: ``nn.Identity``, a ``Sequential(conv 1x1, norm)`` projection, or ``None``
            when ``skip`` is False.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first conv (and of the projection).
        norm: ``"none"``, ``"bn"`` or ``"ln"``.
        skip: Keep the residual connection.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: str, skip: bool
    ) -> None:
        super().__init__()
        bias = norm != "bn"
        self.skip = skip
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, out_channels, spatial=True)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels, spatial=True)
        self.act2 = nn.ReLU()
        gain = activation_gain("relu")
        he_normal_(self.conv1, gain)
        he_normal_(self.conv2, gain)
        self.shortcut: nn.Module | None
        if not skip:
            self.shortcut = None
        elif stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            proj = nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias)
            he_normal_(proj, gain)
            self.shortcut = nn.Sequential(proj, make_norm(norm, out_channels, spatial=True))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch ``norm2(conv2(act1(norm1(conv1(x)))))``, before the addition."""
        return self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


class ResNetSmall(nn.Module):
    """CIFAR-style ResNet with 3 stages (structure in the module docstring).

    Args:
        in_chans: Input channels.
        num_classes: Outputs (logits).
        width: Channels of stage 1 (stages use 1x, 2x, 4x).
        blocks_per_stage: Basic blocks per stage (He et al.'s n; depth = 6n + 2).
        norm: ``"none"``, ``"bn"`` or ``"ln"`` (GroupNorm(1, C)).
        skip: Residual connections on (ResNet) or off (plain network).

    Raises:
        ValueError: A size is not a positive integer, ``norm`` unknown or ``skip`` not bool.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 10,
        width: int = 16,
        blocks_per_stage: int = 1,
        norm: Norm = "bn",
        skip: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_chans", in_chans)
        check_int("num_classes", num_classes)
        check_int("width", width)
        check_int("blocks_per_stage", blocks_per_stage)
        check_choice("norm", norm, NORMS)
        if not isinstance(skip, bool):
            raise ValueError(f"skip must be True or False, got {skip!r}")
        self.num_classes = num_classes
        self.skip = skip
        self.stem = ConvNormAct(in_chans, width, norm)
        stages = []
        c_in = width
        for s in range(NUM_STAGES):
            c_out = width * 2**s
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride, norm, skip))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)
        he_normal_(self.head, activation_gain("linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(x))


@register
def resnet_small(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    width: int = 16,
    blocks_per_stage: int = 1,
    norm: Norm = "bn",
    skip: bool = True,
    init_scale: float = 1.0,
    **kwargs: Any,
) -> ResNetSmall:
    """``resnet_small`` entrypoint; arguments as :class:`ResNetSmall` (``img_size`` is only
    checked to be a positive integer: the network is size-agnostic), ``init_scale``
    multiplies the Conv/Linear weights."""
    check_entrypoint_extras(resnet_small, pretrained, kwargs)
    check_init_scale(init_scale)
    check_int("img_size", img_size)
    model = ResNetSmall(in_chans, num_classes, width, blocks_per_stage, norm, skip)
    return scale_init_(model, init_scale)
