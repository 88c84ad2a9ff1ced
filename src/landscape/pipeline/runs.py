"""Trained runs as the pipeline stored them: load run k, rebuild its initial weights.

The train stage saves ``model.pt`` = ``{"model": {name, **options}, "model_kwargs": {...},
"state_dict": ...}`` and ``metrics.json`` (``status``, final metrics, state hash). Every
stage that reads a run goes through :func:`load_run`; the network at initialisation of run
``k`` is :func:`initial_model` (``build_model(seed=k)`` reproduces the train stage's draw
under ``torch.manual_seed(k)`` without touching the global generator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from landscape.io import read_json
from landscape.models import build_model, load_weights, read_checkpoint
from landscape.pipeline.layout import Layout

__all__ = ["StoredRun", "load_run", "run_status", "initial_model"]


@dataclass(frozen=True)
class StoredRun:
    """One (experiment, config, seed) run.

    Attributes:
        seed: training seed.
        status: ``"completed"``, ``"diverged"``, ...; only completed runs carry a model.
        metrics: the run's ``metrics.json``.
        spec: the model spec ``{name, **options}`` of the config.
        model_kwargs: the keyword arguments the train stage added (classes, input shape).
        train: the training settings the run was trained with (``model.pt``'s ``train``).
        model: the network with its final weights on ``device`` (None unless completed).
    """

    seed: int
    status: str
    metrics: Mapping[str, Any]
    spec: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    train: Mapping[str, Any] = field(default_factory=dict)

    @property
    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model(spec["name"], ...)`` for this run's architecture."""
        return {k: v for k, v in self.spec.items() if k != "name"} | dict(self.model_kwargs)


def run_status(layout: Layout, experiment: str, config: str, seed: int) -> str:
    """``status`` of a run's ``metrics.json`` (``completed``, ``diverged``, ...)."""
    return str(read_json(layout.run(experiment, config, seed).metrics)["status"])


def load_run(layout: Layout, experiment: str, config: str, seed: int, device: torch.device | str = "cpu") -> StoredRun:
    """Load a run's metrics and, when it completed, its final network on ``device``.

    Raises:
        FileNotFoundError: the run's ``metrics.json`` (or, for a completed run, ``model.pt``)
            is missing; the message names the path.
    """
    paths = layout.run(experiment, config, seed)
    if not paths.metrics.is_file():
        raise FileNotFoundError(f"run {experiment}/{config}/seed{seed} has no {paths.metrics}: train it first")
    metrics = read_json(paths.metrics)
    status = str(metrics["status"])
    if status != "completed":
        return StoredRun(seed=seed, status=status, metrics=metrics)
    if not paths.model.is_file():
        raise FileNotFoundError(f"run {experiment}/{config}/seed{seed} completed but {paths.model} is missing")
    saved = read_checkpoint(paths.model)
    spec, model_kwargs = dict(saved.meta["model"]), dict(saved.meta["model_kwargs"])
    run = StoredRun(seed=seed, status=status, metrics=metrics, spec=spec, model_kwargs=model_kwargs)
    model = load_weights(build_model(spec["name"], **run.build_kwargs), saved.state_dict, source=str(paths.model))
    return StoredRun(seed=seed, status=status, metrics=metrics, spec=spec, model_kwargs=model_kwargs, model=model.to(device),
                     train=dict(saved.meta.get("train") or {}))


def initial_model(run: StoredRun, device: torch.device | str = "cpu") -> nn.Module:
    """The network of ``run`` at initialisation, exactly as the train stage drew it."""
    return build_model(run.spec["name"], seed=run.seed, **run.build_kwargs).to(device)
