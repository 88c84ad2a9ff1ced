"""Along-training records: the full training-split loss (train to a target loss) and lambda_max.

Two optional parts of a run (:class:`~landscape.training.config.TrainConfig` ``track_every``,
``target_loss``, ``track_sharpness``, ``sharpness_examples``), off by default and then
without any effect on the run:

* **Train loss on the full training split**, in eval mode, every ``track_every`` optimizer
  steps (the minibatch losses of an epoch average over moving weights; this is the loss of
  the current weights). With ``target_loss`` the run stops at the first record at or below
  it: every run of a comparison is then taken at the same train loss, up to the overshoot of
  one interval (the recorded ``train_loss`` at the stop lies in ``(target - overshoot,
  target]``). A run that reaches its step cap (``epochs`` full epochs) first is recorded
  with ``hit_cap: true``.
* **lambda_max** of the Hessian of the loss on a fixed batch of ``sharpness_examples``
  training examples (drawn once per seed), at the same steps, by warm-started power
  iteration (:func:`landscape.optim.power_iteration`, ``power_steps`` double-backward
  Hessian-vector products per record, started from the previous record's vector). At the
  stop (``lambda_max_final``) the iteration continues from the tracked vector until the Rayleigh quotient changes by
  less than a relative ``1e-4`` between blocks of 5 products (at most 200): the value the
  comparison uses.

Power iteration converges to the eigenvalue of largest magnitude; the recorded value is its
Rayleigh quotient (signed), which is lambda_max whenever the most negative eigenvalue is
smaller in magnitude (true at the minima of these runs; early in training the sign shows it).
Records never touch the global RNG or the data order, so a tracked run's weights equal the
untracked run's, bit for bit (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.optim.power import gradients_with_graph, power_iteration
from landscape.seeding import seeded_generator
from landscape.training.config import TrainConfig

__all__ = ["AlongTraining", "FINAL_REL_TOL", "FINAL_MAX_HVPS", "fixed_batch"]

FINAL_REL_TOL = 1e-4
FINAL_MAX_HVPS = 200
_FINAL_BLOCK = 5
_SHARPNESS_STREAM = 7  # stream key of the fixed batch and the first start vector


def fixed_batch(cfg: TrainConfig, x_train: Tensor, y_train: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """The ``min(sharpness_examples, N)`` training examples whose loss's lambda_max run ``seed`` tracks
    (a seeded draw without replacement; inputs (n, ...), labels (n,))."""
    n = int(x_train.shape[0])
    gen = seeded_generator(seed, _SHARPNESS_STREAM)
    idx = torch.randperm(n, generator=gen)[: min(cfg.sharpness_examples, n)].to(x_train.device)
    return x_train[idx], y_train[idx]


class AlongTraining:
    """The records of one run (module docstring); :meth:`record` is called every ``track_every`` steps.

    Args:
        cfg: The run's training configuration.
        x_train: Training inputs (N, ...), on the model's device.
        y_train: Training labels (N,).
        seed: The run's seed (fixed batch, first start vector).
        evaluate: ``(model, x, y, batch_size) -> (mean loss, error)`` in eval mode
            (:func:`landscape.training.loop.evaluate`).
    """

    def __init__(self, cfg: TrainConfig, x_train: Tensor, y_train: Tensor, seed: int,
                 evaluate: Callable[[nn.Module, Tensor, Tensor, int], tuple[float, float]]) -> None:
        self.cfg = cfg
        self.x, self.y = x_train, y_train
        self.evaluate = evaluate
        self.batch = fixed_batch(cfg, x_train, y_train, seed) if cfg.track_sharpness else None
        self.start_seed = seed
        self.steps: list[int] = []
        self.train_loss: list[float] = []
        self.train_error: list[float] = []
        self.lambda_max: list[float] = []
        self.vector: list[Tensor] | None = None
        self.num_hvps = 0
        self.reached_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "train_loss": list(self.train_loss), "train_error": list(self.train_error),
                "lambda_max": list(self.lambda_max), "vector": self.vector, "num_hvps": self.num_hvps,
                "reached_step": self.reached_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.train_loss = list(state["steps"]), list(state["train_loss"])
        self.train_error, self.lambda_max = list(state["train_error"]), list(state["lambda_max"])
        self.vector, self.num_hvps, self.reached_step = state["vector"], int(state["num_hvps"]), state["reached_step"]

    def _power(self, model: nn.Module, steps: int) -> float:
        if self.batch is None:
            raise RuntimeError("lambda_max is tracked only with track_sharpness=true")
        params = [p for p in model.parameters() if p.requires_grad]
        was_training = model.training
        model.eval()
        try:
            loss = F.cross_entropy(model(self.batch[0]).float(), self.batch[1])
            grads = gradients_with_graph(loss, params)
            generator = seeded_generator(self.start_seed, _SHARPNESS_STREAM, 1)
            est = power_iteration(grads, params, self.vector, steps, generator)
        finally:
            model.train(was_training)
        self.vector = est.vector
        self.num_hvps += est.num_hvps
        return est.value

    def record(self, model: nn.Module, step: int) -> bool:
        """Record the full-split train loss/error (and lambda_max) at ``step``; True when the target is reached."""
        loss, error = self.evaluate(model, self.x, self.y, self.cfg.eval_batch_size)
        self.steps.append(int(step))
        self.train_loss.append(loss)
        self.train_error.append(error)
        if self.batch is not None:
            self.lambda_max.append(self._power(model, self.cfg.power_steps))
        target = self.cfg.target_loss
        if target is not None and math.isfinite(loss) and loss <= target and self.reached_step is None:
            self.reached_step = int(step)
            return True
        return False

    def final_sharpness(self, model: nn.Module) -> dict[str, Any]:
        """lambda_max at the current weights, continued from the tracked vector to convergence."""
        if self.batch is None:
            return {}
        spent, value = 0, self._power(model, _FINAL_BLOCK)
        spent += _FINAL_BLOCK
        converged = False
        while spent < FINAL_MAX_HVPS:
            new = self._power(model, _FINAL_BLOCK)
            spent += _FINAL_BLOCK
            change = abs(new - value)
            value = new
            if change <= FINAL_REL_TOL * abs(value):
                converged = True
                break
        return {"lambda_max_final": value, "lambda_max_converged": converged, "lambda_max_hvps": spent}

    def summary(self, steps_run: int, steps_per_epoch: int, status: str) -> dict[str, Any]:
        """The run's along-training block (JSON-ready); ``hit_cap`` only for a completed run."""
        out: dict[str, Any] = {"track_every": self.cfg.track_every, "steps": list(self.steps),
                               "train_loss": list(self.train_loss), "train_error": list(self.train_error)}
        if self.batch is not None:
            out.update(lambda_max=list(self.lambda_max), sharpness_examples=int(self.batch[1].shape[0]),
                       power_steps=self.cfg.power_steps, num_hvps=self.num_hvps)
        if self.cfg.target_loss is not None:
            out.update(target_loss=self.cfg.target_loss, reached=self.reached_step is not None,
                       hit_cap=status == "completed" and self.reached_step is None, stop_step=int(steps_run),
                       cap_steps=int(self.cfg.epochs * steps_per_epoch))
        return out
