"""probe stage: landscape probes of one (experiment, config), all seeds.

Usage: python stages/probe.py --experiment h2_arch --config mlp_none

Reads runs/<exp>/<cfg>/seed<k>/{model.pt, metrics.json} (diverged runs are recorded and
skipped), the cached Hessian Ritz vectors measure/<exp>/<cfg>/seeds/seed<k>/krylov.pt when
present, and the prepared splits; runs the probes that ``probes.<exp>`` selects for this
config (barriers, Bezier curves, scans, sharpness, invariance audit) and writes
probes/<exp>/<cfg>/: metrics.json (headline numbers), results.json (everything, keyed by
seed / seed pair, with settings and BN policy), arrays.npz, figures/*.png, config.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil

from _common import (
    ROOT,
    ConfigError,
    configure_torch,
    cpu_workers,
    experiment_dataset,
    fail,
    fingerprint,
    load_params,
    pick_device,
    prepared_path,
    run_dir,
    section,
)

import numpy as np
import torch

from landscape.io import atomic_path, read_json, write_json
from landscape.models import build_model
from landscape.probes.run_probes import ProbeConfig, TrainedRun, run_landscape_probes
from landscape.schema import parse_config


def load_run(experiment: str, config: str, seed: int, device: torch.device) -> tuple[TrainedRun, dict]:
    """A run's model (completed runs only), its status and cached Ritz pairs."""
    run = run_dir(experiment, config, seed)
    metrics = read_json(run / "metrics.json")
    status = metrics["status"]
    if status != "completed":
        return TrainedRun(seed=seed, status=status, model=None), {}
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    spec = dict(saved["model"])
    kwargs = {k: v for k, v in spec.items() if k != "name"} | saved["model_kwargs"]
    model = build_model(spec["name"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    model.to(device)
    krylov_file = ROOT / "measure" / experiment / config / "seeds" / f"seed{seed}" / "krylov.pt"
    values = vectors = ritz_bn = None
    if krylov_file.is_file():
        krylov = torch.load(krylov_file, map_location="cpu", weights_only=False)
        values, vectors = krylov.get("ritz_values"), krylov.get("ritz_vectors")
        curvature = read_json(krylov_file.parent / "curvature.json")
        ritz_bn = curvature.get("settings", {}).get("bn_mode")
    trained = TrainedRun(seed=seed, status=status, model=model, test_error=float(metrics.get("test_error", float("nan"))),
                         state_hash=metrics.get("state_hash"), ritz_values=values, ritz_vectors=vectors, ritz_bn_mode=ritz_bn)
    return trained, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    params = load_params()
    where = f"probes.{args.experiment}"
    try:
        cfg = parse_config(ProbeConfig, section(params, "probes", args.experiment), where)
        known = section(params, "experiments", args.experiment, "configs")
        cfg.check_configs(list(known), where)
        if args.config not in known:
            raise ConfigError(f"unknown config {args.config!r} of experiment {args.experiment!r}; configs: {sorted(known)}")
        if not cfg.selects(args.config):
            raise ConfigError(f"config {args.config!r} is not in {where}.configs={list(cfg.configs)!r}: it has no probe entry")
        dataset_key = experiment_dataset(params, args.experiment)
        seeds = section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    data = torch.load(prepared_path(dataset_key), map_location="cpu", weights_only=False)
    runs: list[TrainedRun] = []
    spec: dict = {}
    for seed in seeds:
        run, s = load_run(args.experiment, args.config, seed, device)
        runs.append(run)
        spec = spec or s
    report = run_landscape_probes(runs, {k: data[k] for k in ("probe", "test", "train")}, cfg, config_name=args.config, model_spec=spec,
                                  workers=cpu_workers(device))

    out = ROOT / "probes" / args.experiment / args.config
    resolved = dataclasses.asdict(cfg)
    run_hashes = {f"seed{r.seed}": r.state_hash for r in runs}
    probe_id = fingerprint(resolved, run_hashes, args.experiment, args.config)
    meta = {"experiment": args.experiment, "config": args.config, "dataset": dataset_key, "probe_id": probe_id}
    figures_dir = out / "figures"
    if figures_dir.is_dir():  # figures of probes no longer selected must not linger
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)  # a DVC output even when no selected probe draws
    for name, fig in report.figures().items():
        with atomic_path(figures_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    with atomic_path(out / "arrays.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **report.arrays)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle
    write_json(out / "results.json", {**meta, **report.results})
    write_json(out / "config.json", {**meta, "probes": resolved, "seeds": seeds})
    write_json(out / "metrics.json", {**meta, **report.summary})
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.results.get("cpu_s", {}).items())
    print(f"probe {args.experiment}/{args.config}: {len(report.results['probes'])} probes, "
          f"{report.summary['seeds_completed']} seeds, {report.summary.get('wall_time_s', 0.0):.1f}s wall "
          f"on {report.results.get('workers', 1)} workers (CPU: {timings})")


if __name__ == "__main__":
    main()
