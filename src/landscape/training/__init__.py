"""Training: optimizer/schedule registries, the resumable deterministic loop, checkpoints."""

from landscape.training.loop import TrainResult, evaluate, randomize_labels, train_model
from landscape.training.optim import (
    OPTIMIZER_BUILDERS,
    SCHEDULE_FACTORS,
    build_optimizer,
    build_scheduler,
)

__all__ = [
    "TrainResult",
    "train_model",
    "evaluate",
    "randomize_labels",
    "OPTIMIZER_BUILDERS",
    "SCHEDULE_FACTORS",
    "build_optimizer",
    "build_scheduler",
]
