"""Static description of a model: size and the layer types that matter for curvature.

Curvature and probe results depend on how BatchNorm is evaluated (the BN policy of
DESIGN.md: ``eval`` / ``batch`` / ``recalibrate``), and the hypotheses compare models
with and without normalisation, skip connections (He et al. 2016) and dropout, so every
report records these facts from :func:`describe`. Detection rules:

* BatchNorm: any ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d, SyncBN and
  timm's subclasses).
* LayerNorm-type (per-sample normalisation, no batch dependence): ``nn.LayerNorm``,
  ``nn.GroupNorm`` (our ``norm="ln"`` for feature maps is ``GroupNorm(1, C)``) and
  ``nn.RMSNorm``, subclasses included.
* Skip connections: a residual block whose residual path is on: our
  :class:`~landscape.models.resnet_small.BasicBlock` or
  :class:`~landscape.models.resmlp.ResidualBlock` with ``skip=True``, timm's ResNet
  ``BasicBlock``/``Bottleneck`` and timm's ViT ``Block`` (both always residual).
* Dropout: a dropout module (``nn.Dropout*``) with ``p > 0`` or a stochastic-depth
  ``DropPath`` with ``drop_prob > 0``; modules present with probability 0 do not count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from timm.layers import DropPath
from timm.models.resnet import BasicBlock as TimmBasicBlock
from timm.models.resnet import Bottleneck as TimmBottleneck
from timm.models.vision_transformer import Block as TimmViTBlock
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .resmlp import ResidualBlock
from .resnet_small import BasicBlock

__all__ = ["ModelDescription", "describe"]

_LAYERNORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
_ALWAYS_RESIDUAL: tuple[type[nn.Module], ...] = (TimmBasicBlock, TimmBottleneck, TimmViTBlock)


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    """Facts about a model's parameters and layers.

    Attributes:
        num_params: Number of scalar parameters (shared tensors counted once).
        num_trainable: Of which ``requires_grad``.
        has_batchnorm: Contains a BatchNorm layer.
        has_layernorm: Contains a per-sample normalisation (LayerNorm/GroupNorm/RMSNorm).
        has_skip: Contains a residual connection.
        has_dropout: Contains dropout or stochastic depth with nonzero probability.
        num_batchnorm: Number of BatchNorm layers.
        norm_types: Sorted class names of the normalisation layers present.
    """

    num_params: int
    num_trainable: int
    has_batchnorm: bool
    has_layernorm: bool
    has_skip: bool
    has_dropout: bool
    num_batchnorm: int
    norm_types: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``norm_types`` as a list)."""
        out = dataclasses.asdict(self)
        out["norm_types"] = list(self.norm_types)
        return out


def _is_skip(module: nn.Module) -> bool:
    if isinstance(module, (BasicBlock, ResidualBlock)):
        return module.skip
    return isinstance(module, _ALWAYS_RESIDUAL)


def _is_dropout(module: nn.Module) -> bool:
    if isinstance(module, _DropoutNd):
        return module.p > 0
    if isinstance(module, DropPath):
        return module.drop_prob > 0
    return False


def describe(model: nn.Module) -> ModelDescription:
    """Describe ``model`` (rules in the module docstring); reads it, changes nothing.

    Args:
        model: Any ``nn.Module``.

    Returns:
        A :class:`ModelDescription`.
    """
    params = list(model.parameters())  # deduplicated by nn.Module
    modules = list(model.modules())
    batchnorms = [m for m in modules if isinstance(m, _BatchNorm)]
    norms = [m for m in modules if isinstance(m, (_BatchNorm, *_LAYERNORM_TYPES))]
    return ModelDescription(
        num_params=sum(p.numel() for p in params),
        num_trainable=sum(p.numel() for p in params if p.requires_grad),
        has_batchnorm=bool(batchnorms),
        has_layernorm=any(isinstance(m, _LAYERNORM_TYPES) for m in modules),
        has_skip=any(_is_skip(m) for m in modules),
        has_dropout=any(_is_dropout(m) for m in modules),
        num_batchnorm=len(batchnorms),
        norm_types=tuple(sorted({type(m).__name__ for m in norms})),
    )
