"""train stage: train one (experiment, config, seed) entry of the sweep.

Writes ``runs/<experiment>/<config>/seed<k>/``: ``model.pt`` (final weights + config),
``metrics.json`` (status, final metrics, state hash, the runtime settings: determinism
switches, device, gradient checkpointing), ``dvclive/`` (per-epoch curves), with
``train.tensorboard: true`` also ``tb/`` (the same curves as TensorBoard event files), and
``checkpoints/last.pt`` (kept by DVC between runs, so a killed run resumes). A diverged run
is recorded with ``status: diverged`` and the stage still succeeds. Seed ``k`` trains on
visible device ``k mod (number of devices)``, so entries run side by side spread over the GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from landscape.io import sha256_file, torch_save, write_json
from landscape.models import build_model, checkpoint_units
from landscape.pipeline.cli import StageError
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import experiment_dataset, fingerprint, logs_tensorboard, section
from landscape.pipeline.runtime import configure_torch, device_for
from landscape.reproducibility import device_record, record_nondeterministic_ops
from landscape.schema import parse_config
from landscape.training import randomize_labels, train_model
from landscape.training.config import RunConfig

__all__ = ["run_config", "input_kwargs", "LiveLog", "TensorBoardLog", "EpochLogs", "run"]


def run_config(params: Mapping[str, Any], experiment: str, config: str) -> RunConfig:
    """The ``experiments.<experiment>.configs.<config>`` section as a :class:`RunConfig`."""
    where = f"experiments.{experiment}.configs.{config}"
    return parse_config(RunConfig, section(params, "experiments", experiment, "configs", config), where)


def input_kwargs(model: Mapping[str, Any], input_shape: tuple[int, ...]) -> dict[str, Any]:
    """A config's model options plus the input size arguments its data need: ``in_chans``
    and ``img_size`` for images (C, H, W), ``in_features`` for vectors or token windows (D,)."""
    kwargs = {k: v for k, v in model.items() if k != "name"}
    if len(input_shape) == 3:  # images (C, H, W)
        kwargs.update(in_chans=input_shape[0], img_size=input_shape[1])
    else:  # feature vectors (D,): the MLP; token windows: the LM's context
        kwargs["in_features"] = input_shape[0]
    return kwargs


class LiveLog:
    """DVCLive log of the per-epoch history, rebuilt from scratch in each process.

    The first call starts a fresh log and replays the whole history (including epochs
    restored from a checkpoint), later calls append the new epochs, so a resumed run's
    curves have every epoch exactly once.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.live: Any = None
        self.logged = 0

    def __call__(self, history: list[dict[str, float]]) -> None:
        if self.live is None:
            from dvclive import Live

            self.live = Live(self.directory, resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
        for row in history[self.logged :]:
            for key, value in row.items():
                if key != "epoch":
                    self.live.log_metric(key, value)
            self.live.next_step()
        self.logged = len(history)

    def close(self, history: list[dict[str, float]]) -> None:
        self(history)
        try:
            self.live.end()
        except FileNotFoundError as exc:
            # DVCLive's last act in end() removes a VS Code signal file shared by every run of
            # the repository (.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED) after checking that it
            # exists; with two entries at once the other may remove it in between (seen: a
            # scheduler entry failed after training completed). Only that file is tolerated.
            if Path(str(exc.filename)).name != "DVCLIVE_STEP_COMPLETED":
                raise
        # A run that diverged within its first epoch logged nothing; its (empty) curve
        # directory must still exist, since dvc.yaml declares it as an output.
        Path(self.directory, "plots", "metrics").mkdir(parents=True, exist_ok=True)


class TensorBoardLog:
    """TensorBoard event files of the per-epoch history (``torch.utils.tensorboard``), written
    beside DVCLive's log with the same replay rule as :class:`LiveLog`: each process starts a
    fresh directory (DVC removes the old one before the entry reruns) and logs every epoch of
    the history once, restored epochs included. Scalars are tagged by their history key and
    stepped by epoch (1-based, like DVCLive's ``step`` + 1)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.writer: Any = None
        self.logged = 0

    def __call__(self, history: list[dict[str, float]]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.directory)
        for row in history[self.logged :]:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
        self.writer.flush()
        self.logged = len(history)

    def close(self, history: list[dict[str, float]]) -> None:
        self(history)
        self.writer.close()


class EpochLogs:
    """The per-epoch callbacks of a run (DVCLive, and TensorBoard when asked), called in turn."""

    def __init__(self, *logs: LiveLog | TensorBoardLog):
        self.logs = logs

    def __call__(self, history: list[dict[str, float]]) -> None:
        for log in self.logs:
            log(history)

    def close(self, history: list[dict[str, float]]) -> None:
        for log in self.logs:
            log.close(history)


def _check_tensorboard(where: str) -> None:
    try:
        import tensorboard  # noqa: F401  (SummaryWriter needs the package)
    except ImportError:
        raise StageError(f"{where}.train.tensorboard=true needs the tensorboard package "
                         "(pip install -r requirements.txt -c constraints.txt), or set it to false") from None


def run(params: Mapping[str, Any], layout: Layout, experiment: str, config: str, seed: int) -> None:
    """Train ``experiments.<experiment>.configs.<config>`` under ``seed`` and write its run directory."""
    cfg = run_config(params, experiment, config)
    dataset_key = experiment_dataset(params, experiment)
    data_file = layout.prepared(dataset_key)
    if not data_file.is_file():
        raise StageError(f"prepared data {data_file} is missing; run `dvc repro prepare@{dataset_key}` first")
    data = torch.load(data_file, map_location="cpu", weights_only=False)
    x_train, y_train = data["train"]
    n_train = int(y_train.shape[0])
    where = f"experiments.{experiment}.configs.{config}"
    if cfg.train.batch_size > n_train:
        raise StageError(f"{where}.train.batch_size={cfg.train.batch_size} exceeds the {n_train} training examples of {dataset_key}")
    if cfg.train.random_labels:
        y_train = randomize_labels(y_train, data["num_classes"], seed)
    if cfg.train.tensorboard:
        _check_tensorboard(where)

    runtime = configure_torch()
    device = device_for(seed)
    model_kwargs = input_kwargs(cfg.model, tuple(x_train.shape[1:]))
    torch.manual_seed(seed)
    try:
        model = build_model(cfg.model["name"], num_classes=data["num_classes"], **model_kwargs).to(device)
    except (ValueError, TypeError) as exc:
        raise StageError(f"{where}.model: {exc}") from None
    if cfg.train.grad_checkpointing:
        try:
            checkpoint_units(model)
        except ValueError as exc:
            raise StageError(f"{where}.train.grad_checkpointing: {exc}") from None

    out = layout.run(experiment, config, seed)
    data_hash = sha256_file(data_file)
    recipe = cfg.train.recipe()  # execution-only switches (checkpointing, TensorBoard) leave the run's identity alone
    run_id = fingerprint(recipe, dict(cfg.model), seed, data_hash)
    logs = EpochLogs(LiveLog(str(out.dvclive)), *([TensorBoardLog(str(out.tensorboard))] if cfg.train.tensorboard else []))
    with record_nondeterministic_ops() as nondeterministic:
        result = train_model(model, (x_train, y_train), data["test"], cfg.train, seed=seed,
                             checkpoint_dir=out.checkpoints, fingerprint=run_id, on_epoch=logs, progress=True)
    torch_save(out.model, {
        "state_dict": model.state_dict(),
        "model": dict(cfg.model),
        "model_kwargs": {**model_kwargs, "num_classes": data["num_classes"]},
        "train": recipe,
        "experiment": experiment,
        "config": config,
        "seed": seed,
        "dataset": dataset_key,
        "status": result.status,
    })
    metrics = {
        "status": result.status,
        "diverged_step": result.diverged_step,
        "diverged_reason": result.diverged_reason,
        "epochs_completed": result.epochs_completed,
        "steps": result.steps,
        "resumed_from_epoch": result.resumed_from_epoch,
        "state_hash": result.state_hash,
        "data_hash": data_hash,
        "num_params": sum(p.numel() for p in model.parameters()),
        "device": result.device,
        "amp": result.amp,
        "runtime": {**runtime, **device_record(device), "grad_checkpointing": cfg.train.grad_checkpointing,
                    "nondeterministic_ops": list(nondeterministic)},
        **result.final,
        # the along-training records (train to a target loss, lambda_max), only for runs that keep them
        **({"along_training": result.along_training} if result.along_training is not None else {}),
    }
    write_json(out.metrics, metrics)
    logs.close(list(result.history))
    if logs_tensorboard(params, experiment):
        out.tensorboard.mkdir(parents=True, exist_ok=True)  # a declared output, empty when this config logs none
    print(f"{experiment}/{config}/seed{seed}: {result.status}, "
          f"test_error={result.final.get('test_error', float('nan')):.4f}, {result.wall_time_s:.1f}s")
