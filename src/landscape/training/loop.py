"""The training loop: deterministic on CPU, resumable from atomic checkpoints, and honest
about divergence.

Reproducibility contract: the data order and augmentation of epoch ``e`` come from a
generator seeded by ``(seed, e)``, and the global RNG (dropout) is re-seeded from the same
pair inside a forked RNG scope, so a run resumed at an epoch boundary replays exactly the
same steps as an uninterrupted one and ends with a bit-identical ``state_dict``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.functional import math_attention
from landscape.io import sha256_tensors
from landscape.models.checkpointing import grad_checkpointing
from landscape.optim import CurvatureProbeMixin
from landscape.seeding import epoch_seed, seeded_generator
from landscape.training.augment import random_crop_flip
from landscape.training.checkpoint import (
    clear_snapshots,
    load_checkpoint,
    save_checkpoint,
    save_snapshot,
)
from landscape.training.config import TrainConfig
from landscape.training.optim import build_optimizer, build_scheduler
from landscape.training.tracking import AlongTraining

__all__ = ["TrainResult", "train_model", "evaluate", "randomize_labels", "epoch_seed"]

_DIVERGENCE_CHECK_EVERY = 50  # steps between (synchronising) checks of the loss buffer


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training run.

    Attributes:
        status: ``"completed"`` or ``"diverged"``.
        epochs_completed: epochs fully run (including resumed ones).
        steps: optimizer steps taken.
        diverged_step: global step (0-based) of the first non-finite or too-large loss.
        diverged_reason: what tripped the check, e.g. ``"loss=nan"``.
        final: eval-mode metrics of the final weights on the full splits
            (``train_loss``, ``train_error``, ``test_loss``, ``test_error``, ``gen_gap``).
        history: one dict per epoch (``epoch``, ``train_loss``, ``train_error``,
            ``test_loss``, ``test_error``, ``grad_norm``, ``lr``, ``epoch_time_s``).
        state_hash: SHA-256 of the final ``state_dict`` (bit-identity check).
        resumed_from_epoch: epoch the run resumed from (0 for a fresh start).
        wall_time_s: seconds spent in this process.
        device: device the run used.
        amp: mixed-precision mode used (``"off"``, ``"bf16"``, ``"fp16"``).
        along_training: the along-training records (:mod:`landscape.training.tracking`:
            steps, full-split train loss/error, lambda_max, and with a target loss
            ``reached``/``hit_cap``/``stop_step``); ``None`` when ``track_every`` is 0.
    """

    status: str
    epochs_completed: int
    steps: int
    diverged_step: int | None
    diverged_reason: str | None
    final: dict[str, float]
    history: tuple[dict[str, float], ...]
    state_hash: str
    resumed_from_epoch: int
    wall_time_s: float
    device: str
    amp: str
    along_training: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def randomize_labels(y: Tensor, num_classes: int, seed: int) -> Tensor:
    """Uniformly random labels in ``[0, num_classes)``, fixed by ``seed`` (memorisation control)."""
    g = seeded_generator(seed + 424242)
    return torch.randint(0, num_classes, y.shape, generator=g).to(y.device)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` in eval mode.

    Args:
        model: classifier returning logits (B, num_classes).
        x: inputs (N, ...), on any device (moved per batch to the model's device).
        y: integer labels (N,).
        batch_size: examples per forward pass.

    Returns:
        ``(loss, error)``: mean loss in nats and the fraction misclassified. The model's
        train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            wrong += (logits.argmax(1) != yb).sum()
    finally:
        model.train(was_training)
    n = max(1, x.shape[0])
    return float(loss_sum) / n, float(wrong) / n


def _amp_mode(cfg: TrainConfig, device: torch.device) -> str:
    if not cfg.amp:
        return "off"
    if device.type != "cuda":
        warnings.warn(f"train.amp=true is ignored on {device.type}: mixed precision runs on CUDA only", stacklevel=3)
        return "off"
    return cfg.amp_dtype


def train_model(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_dir: str | Path | None = None,
    fingerprint: str = "",
    on_epoch: Callable[[list[dict[str, float]]], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy and return its :class:`TrainResult`.

    Args:
        model: classifier on the target device; its parameters are updated in place.
        train_data: ``(x, y)`` training inputs (N, ...) and labels (N,).
        test_data: ``(x, y)`` held-out split evaluated after each epoch.
        cfg: validated training configuration.
        seed: run seed (data order, augmentation, dropout).
        checkpoint_dir: where ``last.pt`` is written every ``cfg.checkpoint_every`` epochs
            and read back to resume; ``None`` disables checkpoints.
        fingerprint: identity of the run stored in checkpoints; a checkpoint with another
            fingerprint is not resumed.
        on_epoch: called with the history after every epoch (after the checkpoint).
        progress: show a tqdm bar over epochs.

    With ``cfg.grad_checkpointing`` the model's blocks are checkpointed during the run
    (:mod:`landscape.models.checkpointing`; same weights, less activation memory) and
    plain again afterwards.

    Raises:
        ValueError: the batch size exceeds the number of training examples, or
            ``cfg.grad_checkpointing`` is set for a model without known blocks.
    """
    with grad_checkpointing(model, cfg.grad_checkpointing):
        return _train(model, train_data, test_data, cfg, seed=seed, checkpoint_dir=checkpoint_dir,
                      fingerprint=fingerprint, on_epoch=on_epoch, progress=progress)


def _train(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_dir: str | Path | None,
    fingerprint: str,
    on_epoch: Callable[[list[dict[str, float]]], None] | None,
    progress: bool,
) -> TrainResult:
    """:func:`train_model`'s loop (the model as it is: checkpointed or not)."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    x_train, y_train = train_data[0].to(device), train_data[1].to(device)
    x_test, y_test = test_data
    n = x_train.shape[0]
    if cfg.batch_size > n:
        raise ValueError(f"train.batch_size={cfg.batch_size} exceeds the {n} training examples")
    steps_per_epoch = n // cfg.batch_size  # the last partial batch is dropped: constant noise scale
    amp = _amp_mode(cfg, device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    history: list[dict[str, float]] = []
    start_epoch, step, status, diverged_step, diverged_reason = 0, 0, "running", None, None
    tracker = AlongTraining(cfg, x_train, y_train, seed, evaluate) if cfg.track_every > 0 else None
    state = load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
    if state is not None:
        if tracker is not None:
            tracker.load_state_dict(state["along_training"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        status, diverged_step, diverged_reason = state["status"], state["diverged_step"], state["diverged_reason"]
    resumed_from = start_epoch
    keep_snapshots = checkpoint_dir is not None and cfg.snapshot_every > 0
    if checkpoint_dir is not None and state is None:
        clear_snapshots(checkpoint_dir)  # left by a run with another fingerprint
        if keep_snapshots:
            save_snapshot(checkpoint_dir, 0, model.state_dict())

    def checkpoint(epoch: int) -> None:
        if checkpoint_dir is None:
            return
        save_checkpoint(
            checkpoint_dir,
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "step": step,
                "history": history,
                "status": status,
                "diverged_step": diverged_step,
                "diverged_reason": diverged_reason,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                # only with records: a checkpoint of a run without them keeps its old contents
                **({"along_training": tracker.state_dict()} if tracker is not None else {}),
            },
        )

    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16))
        if amp != "off"
        else contextlib.nullcontext
    )
    epochs: Any = range(start_epoch, cfg.epochs)
    if progress:
        from tqdm.auto import tqdm  # imported only for a bar: the library runs without tqdm otherwise

        epochs = tqdm(epochs, desc="train", initial=start_epoch, total=cfg.epochs)
    model.train()
    for epoch in epochs:
        if status != "running":
            break
        epoch_started = time.perf_counter()
        gen = seeded_generator(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=gen).to(device)
        losses = torch.zeros(steps_per_epoch, device=device)
        wrong = torch.zeros((), dtype=torch.int64, device=device)
        grad_sq = torch.zeros((), device=device)
        checked = 0
        taken = steps_per_epoch  # steps of this epoch actually taken (fewer when the target stops it)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(epoch_seed(seed, epoch) + 1)
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                xb, yb = x_train[idx], y_train[idx]
                if cfg.augment:
                    xb = random_crop_flip(xb, gen)
                # a loss the optimizer differentiates twice needs attention's math path
                second_order = isinstance(optimizer, CurvatureProbeMixin) and optimizer.estimate_due()
                with autocast(), math_attention(model) if second_order else contextlib.nullcontext():
                    logits = model(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                elif isinstance(optimizer, CurvatureProbeMixin):
                    optimizer.backward(loss)  # also refreshes its Hessian estimate when due
                else:
                    loss.backward()
                # no list of the gradients outlives this line: one would keep them alive through the
                # next step's backward (zero_grad(set_to_none) drops p.grad, not other references),
                # a second copy of every gradient at the peak
                grad_sq += torch.stack(torch._foreach_norm([p.grad for p in params if p.grad is not None])).pow(2).sum()
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                losses[i] = loss.detach()
                wrong += (logits.detach().argmax(1) != yb).sum()
                step += 1
                if (i + 1) % _DIVERGENCE_CHECK_EVERY == 0 or i + 1 == steps_per_epoch:
                    bad = ~torch.isfinite(losses[checked : i + 1]) | (losses[checked : i + 1] > cfg.divergence_loss)
                    if bool(bad.any()):
                        first = checked + int(bad.nonzero()[0, 0])
                        diverged_step = epoch * steps_per_epoch + first
                        diverged_reason = f"loss={float(losses[first])!r} at epoch {epoch}"
                        status = "diverged"
                        break
                    checked = i + 1
                if tracker is not None and step % cfg.track_every == 0 and tracker.record(model, step):
                    status, taken = "completed", i + 1  # the target train loss is reached
                    break
        # The last step's gradients are not needed to evaluate, checkpoint or hash (the next step
        # drops them before its backward anyway): freed here, they are not held beside the
        # evaluation's activations
        optimizer.zero_grad(set_to_none=True)
        if status == "diverged":
            checkpoint(epoch)
            break
        test_loss, test_error = evaluate(model, x_test, y_test, cfg.eval_batch_size)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(losses[:taken].mean()),
                "train_error": float(wrong) / (taken * cfg.batch_size),
                "test_loss": test_loss,
                "test_error": test_error,
                "grad_norm": math.sqrt(float(grad_sq) / steps_per_epoch),
                "lr": float(scheduler.get_last_lr()[0]),
                "epoch_time_s": time.perf_counter() - epoch_started,
            }
        )
        if isinstance(optimizer, CurvatureProbeMixin):  # what the curvature-aware step costs
            history[-1]["hvps_total"] = float(optimizer.num_hvps)
            history[-1]["curvature_estimate"] = optimizer.curvature_estimate
        if progress:
            epochs.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", test_err=f"{test_error:.3f}")
        if epoch + 1 == cfg.epochs:
            status = "completed"  # (or earlier, at the target train loss)
        if keep_snapshots and checkpoint_dir is not None and (epoch + 1) % cfg.snapshot_every == 0:
            save_snapshot(checkpoint_dir, epoch + 1, model.state_dict())  # before the checkpoint: a resume never skips it
        if (epoch + 1) % cfg.checkpoint_every == 0 or status == "completed":
            checkpoint(epoch + 1)
        if on_epoch is not None:
            on_epoch(history)
    if status == "running":  # resumed from a checkpoint written at the last epoch
        status = "completed"

    final: dict[str, float] = {}
    along: dict[str, Any] | None = None
    if tracker is not None:
        along = tracker.summary(step, steps_per_epoch, status)
        if status == "completed":
            along.update(tracker.final_sharpness(model))
    if status == "completed":
        train_loss, train_error = evaluate(model, train_data[0], train_data[1], cfg.eval_batch_size)
        test_loss, test_error = evaluate(model, x_test, y_test, cfg.eval_batch_size)
        final = {
            "train_loss": train_loss,
            "train_error": train_error,
            "test_loss": test_loss,
            "test_error": test_error,
            "gen_gap": test_loss - train_loss,
        }
    return TrainResult(
        status=status,
        epochs_completed=len(history),
        steps=step,
        diverged_step=diverged_step,
        diverged_reason=diverged_reason,
        final=final,
        history=tuple(history),
        state_hash=sha256_tensors(model.state_dict()),
        resumed_from_epoch=resumed_from,
        wall_time_s=time.perf_counter() - started,
        device=str(device),
        amp=amp,
        along_training=along,
    )
