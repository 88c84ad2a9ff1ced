"""train stage: train one (experiment, config, seed) entry of the sweep.

Usage: python stages/train.py --experiment h1_batch --config b64 --seed 0

Writes runs/<experiment>/<config>/seed<k>/: model.pt (final weights + config),
metrics.json (status, final metrics, state hash), dvclive/ (per-epoch curves) and
checkpoints/last.pt (kept by DVC between runs, so a killed run resumes).
A diverged run is recorded with ``status: diverged`` and the stage still succeeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    ConfigError,
    configure_torch,
    experiment_dataset,
    fail,
    fingerprint,
    load_params,
    pick_device,
    prepared_path,
    run_config,
    run_dir,
)

import torch

from landscape.io import sha256_file, torch_save, write_json
from landscape.models import build_model
from landscape.training import randomize_labels, train_model

if TYPE_CHECKING:
    from dvclive import Live


class LiveLog:
    """DVCLive log of the per-epoch history, rebuilt from scratch in each process.

    The first call starts a fresh log and replays the whole history (including epochs
    restored from a checkpoint), later calls append the new epochs, so a resumed run's
    curves have every epoch exactly once.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.live: Live | None = None
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
        if self.live is not None:  # always: the call above opened it
            self.live.end()
        # A run that diverged within its first epoch logged nothing; its (empty) curve
        # directory must still exist, since dvc.yaml declares it as an output.
        Path(self.directory, "plots", "metrics").mkdir(parents=True, exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    params = load_params()
    try:
        cfg = run_config(params, args.experiment, args.config)
        dataset_key = experiment_dataset(params, args.experiment)
    except ConfigError as exc:
        fail(str(exc))
    data_file = prepared_path(dataset_key)
    if not data_file.is_file():
        fail(f"prepared data {data_file} is missing; run `dvc repro prepare@{dataset_key}` first")
    data = torch.load(data_file, map_location="cpu", weights_only=False)
    x_train, y_train = data["train"]
    n_train = int(y_train.shape[0])
    where = f"experiments.{args.experiment}.configs.{args.config}.train.batch_size"
    if cfg.train.batch_size > n_train:
        fail(f"{where}={cfg.train.batch_size} exceeds the {n_train} training examples of {dataset_key}")
    if cfg.train.random_labels:
        y_train = randomize_labels(y_train, data["num_classes"], args.seed)

    configure_torch()
    device = pick_device()
    model_kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    shape = tuple(x_train.shape[1:])
    if len(shape) == 3:  # images (C, H, W)
        model_kwargs.update(in_chans=shape[0], img_size=shape[1])
    else:  # feature vectors (D,): only the MLP takes them
        model_kwargs["in_features"] = shape[0]
    torch.manual_seed(args.seed)
    try:
        model = build_model(cfg.model["name"], num_classes=data["num_classes"], **model_kwargs).to(device)
    except (ValueError, TypeError) as exc:
        fail(f"experiments.{args.experiment}.configs.{args.config}.model: {exc}")

    out = run_dir(args.experiment, args.config, args.seed)
    data_hash = sha256_file(data_file)
    run_id = fingerprint(dataclasses.asdict(cfg.train), dict(cfg.model), args.seed, data_hash)
    live_log = LiveLog(str(out / "dvclive"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = train_model(
            model,
            (x_train, y_train),
            data["test"],
            cfg.train,
            seed=args.seed,
            checkpoint_dir=out / "checkpoints",
            fingerprint=run_id,
            on_epoch=live_log,
            progress=True,
        )
    torch_save(
        out / "model.pt",
        {
            "state_dict": model.state_dict(),
            "model": dict(cfg.model),
            "model_kwargs": {**model_kwargs, "num_classes": data["num_classes"]},
            "train": dataclasses.asdict(cfg.train),
            "experiment": args.experiment,
            "config": args.config,
            "seed": args.seed,
            "dataset": dataset_key,
            "status": result.status,
        },
    )
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
        **result.final,
    }
    write_json(out / "metrics.json", metrics)
    live_log.close(list(result.history))
    print(f"{args.experiment}/{args.config}/seed{args.seed}: {result.status}, "
          f"test_error={result.final.get('test_error', float('nan')):.4f}, {result.wall_time_s:.1f}s")


if __name__ == "__main__":
    main()
