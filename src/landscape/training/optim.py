"""Optimizer and learning-rate schedule registries, keyed by the names ``params.yaml`` uses."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from landscape.optim import CurvatureAdaptiveSGD, HybridAdam
from landscape.training.config import OPTIMIZERS, SCHEDULES, TrainConfig

__all__ = ["OPTIMIZER_BUILDERS", "SCHEDULE_FACTORS", "build_optimizer", "build_scheduler", "effective_lr"]


def _sgd(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def _adam(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def _adamw(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _curvature_adaptive(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return CurvatureAdaptiveSGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        gamma=cfg.curvature_gamma, every=cfg.curvature_every, power_steps=cfg.power_steps,
    )


def _hybrid(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return HybridAdam(
        params, lr=lr, weight_decay=cfg.weight_decay, mu=cfg.hybrid_mu, every=cfg.curvature_every, power_steps=cfg.power_steps
    )


OPTIMIZER_BUILDERS: dict[str, Callable[[Iterable[nn.Parameter], TrainConfig, float], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "curvature_adaptive": _curvature_adaptive,
    "hybrid": _hybrid,
}


def _constant(progress: float, epoch: int, cfg: TrainConfig) -> float:  # noqa: ARG001  (shared schedule signature)
    return 1.0


def _cosine(progress: float, epoch: int, cfg: TrainConfig) -> float:  # noqa: ARG001  (shared schedule signature)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _step(progress: float, epoch: int, cfg: TrainConfig) -> float:  # noqa: ARG001  (shared schedule signature)
    return cfg.step_gamma ** (epoch // cfg.step_epochs)


SCHEDULE_FACTORS: dict[str, Callable[[float, int, TrainConfig], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "step": _step,
}

if set(OPTIMIZER_BUILDERS) != set(OPTIMIZERS) or set(SCHEDULE_FACTORS) != set(SCHEDULES):  # pragma: no cover
    raise ImportError("optimizer/schedule registries disagree with landscape.training.config")


def effective_lr(cfg: TrainConfig) -> float:
    """Base learning rate after the linear batch-size scaling rule, if configured.

    ``lr * batch_size / lr_reference_batch`` (Goyal et al. 2017) when
    ``cfg.lr_reference_batch`` is set, else ``cfg.lr``.
    """
    if cfg.lr_reference_batch is None:
        return cfg.lr
    return cfg.lr * cfg.batch_size / cfg.lr_reference_batch


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Optimizer named by ``cfg.optimizer`` over the model's trainable parameters."""
    if cfg.optimizer not in OPTIMIZER_BUILDERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: {sorted(OPTIMIZER_BUILDERS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZER_BUILDERS[cfg.optimizer](params, cfg, effective_lr(cfg))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``LambdaLR`` for ``cfg.schedule`` over ``cfg.epochs * steps_per_epoch`` steps."""
    total = max(1, cfg.epochs * steps_per_epoch)
    factor = SCHEDULE_FACTORS[cfg.schedule]

    def lr_lambda(step: int) -> float:
        return factor(min(step, total) / total, step // steps_per_epoch, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
