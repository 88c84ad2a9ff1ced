"""Gradient (activation) checkpointing of a network's blocks during training.

Chen, Xu, Zhang & Guestrin 2016, *Training deep nets with sublinear memory cost*: each
checkpointed block keeps only its input during the forward pass and recomputes its
activations in the backward pass (``torch.utils.checkpoint``, non-reentrant), so activation
memory drops from all layers to one block plus the block boundaries, for about one extra
forward pass of compute. Dropout masks are the same in the recomputation (the RNG state is
restored), so the gradients are those of the plain network.

BatchNorm: a train-mode forward updates the running statistics, and the recomputation would
update them a second time (timm's own ``set_grad_checkpointing`` does: its running means and
``num_batches_tracked`` then differ from a plain run's). Here the recomputation updates them
with momentum 0 (no change; it normalises with the same batch statistics as the first pass)
and the batch counter is set back, so a checkpointed run ends with the plain run's
``state_dict``, buffers included.

Blocks per architecture (:func:`checkpoint_units`): timm's ResNets (``resnet18``,
``resnet34``): every residual block of ``layer1..layer4``; ViTs (``vit_small_32``): every
transformer block; ``resnet_small``: every basic block; ``lm_transformer``: every decoder
block. Checkpointing applies only in training mode with autograd on: evaluation and
curvature products (which take the network in eval mode or through ``functional_call``)
run the plain blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from timm.models.resnet import ResNet as TimmResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .lm_transformer import CausalLM
from .resnet_small import ResNetSmall

__all__ = ["CHECKPOINTABLE", "checkpoint_units", "set_grad_checkpointing", "is_grad_checkpointing", "grad_checkpointing"]

CHECKPOINTABLE = ("resnet18", "resnet34", "vit_small_32", "resnet_small", "lm_transformer")
"""Registered models whose blocks :func:`checkpoint_units` knows (timm's ResNets and ViTs generally)."""


def checkpoint_units(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``model`` that are checkpointed, in forward order.

    Raises:
        ValueError: the architecture has no known blocks (names the supported ones).
    """
    if isinstance(model, TimmResNet):
        return [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)]
    if isinstance(model, VisionTransformer):
        return list(model.blocks)
    if isinstance(model, ResNetSmall):
        return [block for stage in model.stages for block in stage.children()]
    if isinstance(model, CausalLM):
        return list(model.blocks)
    raise ValueError(
        f"gradient checkpointing is implemented for {list(CHECKPOINTABLE)} (timm ResNets and ViTs), "
        f"got a {type(model).__name__}"
    )


class _RunningStatsRestored:
    """During a recomputation, ``block``'s train-mode BatchNorm layers update their running
    statistics with momentum 0 (``running = 1 * running + 0 * batch``: unchanged, while the
    layer normalises with the same batch statistics and saves the same tensors as in the
    first forward) and ``num_batches_tracked`` is set back on exit. The running buffers are
    never written from outside the BatchNorm op: a later double backward through the
    recomputed graph still finds them at the version it saved. Re-enterable (a double
    backward recomputes a block more than once)."""

    def __init__(self, block: nn.Module):
        self.block = block
        self.kept: list[tuple[_BatchNorm, float | None, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        self.kept = []
        for m in self.block.modules():
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats:
                counter = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
                self.kept.append((m, m.momentum, counter))
                m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, momentum, counter in self.kept:
                m.momentum = momentum
                if counter is not None and m.num_batches_tracked is not None:
                    m.num_batches_tracked.copy_(counter)
        self.kept = []


class _CheckpointedForward:
    """Stands in for one block's ``forward`` while checkpointing is on."""

    def __init__(self, block: nn.Module):
        self.block = block
        self.plain = type(block).forward.__get__(block)

    def _contexts(self) -> tuple[contextlib.AbstractContextManager[None], _RunningStatsRestored]:
        return contextlib.nullcontext(), _RunningStatsRestored(self.block)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.block.training and torch.is_grad_enabled()):
            return self.plain(*args, **kwargs)
        return checkpoint(self.plain, *args, use_reentrant=False, context_fn=self._contexts, **kwargs)


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> int:
    """Turn checkpointing of ``model``'s blocks on or off (in place; parameter and buffer
    names are unchanged, so ``state_dict`` round-trips).

    Returns:
        The number of blocks switched.

    Raises:
        ValueError: the architecture is not supported (see :func:`checkpoint_units`).
    """
    units = checkpoint_units(model)
    for block in units:
        if enable:
            block.__dict__["forward"] = _CheckpointedForward(block)
        else:
            block.__dict__.pop("forward", None)
    return len(units)


def is_grad_checkpointing(model: nn.Module) -> bool:
    """Whether any block of ``model`` is checkpointed."""
    return any(isinstance(m.__dict__.get("forward"), _CheckpointedForward) for m in model.modules())


@contextlib.contextmanager
def grad_checkpointing(model: nn.Module, enable: bool = True) -> Iterator[nn.Module]:
    """Checkpoint ``model``'s blocks inside the ``with`` block (nothing when ``enable`` is
    False); the plain forward is back afterwards."""
    if not enable:
        yield model
        return
    set_grad_checkpointing(model, True)
    try:
        yield model
    finally:
        set_grad_checkpointing(model, False)
