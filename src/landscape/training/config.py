"""How one network is trained: the optimizer and schedule names and the run settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from landscape.schema import ConfigError, nonneg, positive, rule

__all__ = ["OPTIMIZERS", "SCHEDULES", "EXECUTION_ONLY", "OPTIONAL", "TrainConfig", "RunConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw", "curvature_adaptive", "hybrid")
SCHEDULES = ("constant", "cosine", "step")
EXECUTION_ONLY = ("grad_checkpointing", "tensorboard")
OPTIONAL = ("target_loss", "track_every", "track_sharpness", "sharpness_examples")
"""Settings added after runs were recorded: left out of :meth:`TrainConfig.recipe` while they hold
their defaults (off), so the recipe, fingerprint and ``model.pt`` of a run that does not use them
are those it had before they existed."""
"""Settings that change how a run executes or what it logs, never its weights (a checkpointed
run's ``state_dict`` is bit-identical to the plain run's): left out of :meth:`TrainConfig.recipe`."""


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained (optimizer, schedule, budget, checkpoints).

    Attributes:
        epochs: passes over the training split.
        batch_size: examples per SGD step.
        optimizer: one of ``OPTIMIZERS``.
        lr: base learning rate.
        momentum: heavy-ball momentum (SGD) in [0, 1).
        nesterov: Nesterov momentum (SGD; needs momentum > 0).
        weight_decay: L2 coefficient (decoupled for AdamW).
        schedule: one of ``SCHEDULES``; ``step`` multiplies the rate by ``step_gamma``
            every ``step_epochs`` epochs.
        augment: random crop (pad 2 / 4 px) and horizontal flip for image inputs.
        amp: mixed precision on CUDA (bf16, or fp16 with loss scaling); ignored with a
            warning on CPU.
        amp_dtype: ``bf16`` or ``fp16``.
        checkpoint_every: epochs between atomic checkpoints.
        divergence_loss: a training loss above this (or NaN/Inf) marks the run diverged.
        eval_batch_size: batch size of evaluation passes.
        random_labels: replace the training labels by uniformly random classes, fixed
            per seed (the memorisation control of the bounds study).
        lr_reference_batch: if set, the linear scaling rule
            ``lr * batch_size / lr_reference_batch``; ``null`` keeps ``lr`` fixed.
        snapshot_every: keep the weights every this many epochs (and at epoch 0) beside
            the checkpoint, for curvature along training; 0 keeps none.
        curvature_gamma: ``curvature_adaptive`` (SGD with momentum) uses
            ``lr / (1 + curvature_gamma * ||H_t||_2)``; 0 is plain SGD.
        hybrid_mu: ``hybrid`` (Adam) adds ``lr * hybrid_mu`` times the unit top Hessian
            eigenvector; 0 is plain Adam.
        curvature_every: steps between the power-iteration estimates of those two.
        power_steps: warm-started power iterations (Hessian-vector products) per estimate
            (of those two, and of lambda_max along training with ``track_sharpness``).
        grad_checkpointing: recompute each block's activations in the backward pass
            (less activation memory, about one more forward pass); for the models of
            ``landscape.models.CHECKPOINTABLE``. Same weights as without.
        tensorboard: also write TensorBoard event files of the per-epoch curves (the train
            stage, beside DVCLive's).
        target_loss: if set, stop at the first along-training record whose loss on the full
            training split (eval mode) is at or below it; ``epochs`` is then the step cap
            (``hit_cap`` when reached first). Needs ``track_every``.
        track_every: optimizer steps between along-training records (full-split train loss
            and error; :mod:`landscape.training.tracking`); 0 keeps none.
        track_sharpness: also record lambda_max of the loss on a fixed batch at every record
            (warm-started power iteration, ``power_steps`` products), and a converged value
            at the end. Needs ``track_every``.
        sharpness_examples: size of that fixed batch (drawn once per seed from the split).
    """

    epochs: int = field(default=10, metadata=rule("an int >= 1", lambda x: x >= 1))
    batch_size: int = field(default=128, metadata=rule("an int >= 1", lambda x: x >= 1))
    optimizer: str = field(default="sgd", metadata=rule(f"one of {list(OPTIMIZERS)}", lambda x: x in OPTIMIZERS))
    lr: float = field(default=0.05, metadata=rule("a float > 0", positive))
    momentum: float = field(default=0.9, metadata=rule("a float in [0, 1)", lambda x: 0 <= x < 1))
    nesterov: bool = False
    weight_decay: float = field(default=0.0, metadata=rule("a float >= 0", nonneg))
    schedule: str = field(default="cosine", metadata=rule(f"one of {list(SCHEDULES)}", lambda x: x in SCHEDULES))
    step_epochs: int = field(default=10, metadata=rule("an int >= 1", lambda x: x >= 1))
    step_gamma: float = field(default=0.1, metadata=rule("a float in (0, 1]", lambda x: 0 < x <= 1))
    augment: bool = False
    amp: bool = False
    amp_dtype: str = field(default="bf16", metadata=rule("one of ['bf16', 'fp16']", lambda x: x in ("bf16", "fp16")))
    checkpoint_every: int = field(default=1, metadata=rule("an int >= 1", lambda x: x >= 1))
    divergence_loss: float = field(default=1e4, metadata=rule("a float > 0", positive))
    eval_batch_size: int = field(default=1000, metadata=rule("an int >= 1", lambda x: x >= 1))
    random_labels: bool = False
    lr_reference_batch: int | None = field(
        default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1)
    )
    snapshot_every: int = field(default=0, metadata=rule("an int >= 0", nonneg))
    curvature_gamma: float = field(default=0.0, metadata=rule("a float >= 0", nonneg))
    hybrid_mu: float = field(default=0.0, metadata=rule("a float >= 0", nonneg))
    curvature_every: int = field(default=10, metadata=rule("an int >= 1", lambda x: x >= 1))
    power_steps: int = field(default=3, metadata=rule("an int >= 1", lambda x: x >= 1))
    grad_checkpointing: bool = False
    tensorboard: bool = False
    target_loss: float | None = field(
        default=None, metadata=rule("null or a float > 0", lambda x: x is None or (isinstance(x, (int, float)) and x > 0))
    )
    track_every: int = field(default=0, metadata=rule("an int >= 0", nonneg))
    track_sharpness: bool = False
    sharpness_examples: int = field(default=512, metadata=rule("an int >= 1", lambda x: x >= 1))

    def recipe(self) -> dict[str, Any]:
        """The settings that determine the trained weights (and the run's records): every field
        except :data:`EXECUTION_ONLY`, and :data:`OPTIONAL` ones at their defaults (stored with
        the model, and part of the run's fingerprint)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in OPTIONAL}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in EXECUTION_ONLY and not (k in defaults and v == defaults[k])}

    def __post_init__(self) -> None:
        if self.nesterov and (self.optimizer not in ("sgd", "curvature_adaptive") or self.momentum == 0):
            raise ConfigError(
                f"train.nesterov=true needs optimizer 'sgd' or 'curvature_adaptive' with momentum > 0, "
                f"got optimizer={self.optimizer!r}, momentum={self.momentum}"
            )
        if (self.target_loss is not None or self.track_sharpness) and self.track_every == 0:
            raise ConfigError(
                f"train.target_loss={self.target_loss} / track_sharpness={self.track_sharpness} need "
                "train.track_every >= 1 (steps between along-training records), got 0"
            )
        if self.amp and self.optimizer in ("curvature_adaptive", "hybrid"):
            raise ConfigError(
                f"train.amp=true is not supported with optimizer {self.optimizer!r} (its Hessian-vector "
                "products need an unscaled float32 graph); allowed: amp=false"
            )


@dataclass(frozen=True)
class RunConfig:
    """One training run: the model (name + keyword arguments for ``build_model``) and how to train it."""

    model: Mapping[str, Any]
    train: TrainConfig

    def __post_init__(self) -> None:
        if not isinstance(self.model.get("name"), str):
            raise ConfigError(f"model.name must be a model name string, got {self.model.get('name')!r}")
