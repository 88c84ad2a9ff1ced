"""measure stage: curvature of every trained run of one (experiment, config), all seeds.

Usage: python stages/measure.py --experiment h1_batch --config b64

For each seed: loads runs/<exp>/<cfg>/seed<k>/model.pt, measures the Hessian on the fixed
probe subset (top-k eigenpairs with residual bounds, trace, SLQ density, log-det, RMT bulk
fit, per-layer figures, gradient-noise covariance and its alignment) and writes
measure/<exp>/<cfg>/seeds/seed<k>/{curvature.json, krylov.pt}. A diverged run is recorded as
skipped, never measured. measure/<exp>/<cfg>/metrics.json summarises the seeds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import os
import statistics
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    ConfigError,
    configure_torch,
    experiment_dataset,
    fail,
    load_params,
    pick_device,
    prepared_path,
    run_dir,
    section,
)

import torch
import torch.nn.functional as F

from landscape.curvature.measure import measure_curvature, sharpness_summary
from landscape.io import read_json, torch_save, write_json
from landscape.models import build_model
from landscape.pipeline.measure import CurvatureConfig
from landscape.schema import parse_config
from landscape.training.checkpoint import list_snapshots


def _mean_sd(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"),
        "n": len(finite),
    }


def _num_workers(num_seeds: int, device: torch.device) -> int:
    """Seeds measured at once: ``LANDSCAPE_WORKERS`` (default: the CPU count, at most 2) on
    the CPU, one on an accelerator (forked workers cannot share a CUDA context)."""
    if device.type != "cpu":
        return 1
    default = min(2, os.cpu_count() or 1)
    return max(1, min(num_seeds, int(os.environ.get("LANDSCAPE_WORKERS", default))))


def _measure_seed(experiment: str, config: str, cfg: CurvatureConfig, settings: dict, batches: list,
                  device: torch.device, out_root: Path, seed: int) -> dict:
    """Measure one seed's run; write its curvature.json and krylov.pt; return the summary."""
    run = run_dir(experiment, config, seed)
    status = read_json(run / "metrics.json")["status"]
    out = out_root / "seeds" / f"seed{seed}"
    if status != "completed":
        summary: dict[str, Any] = {"status": f"skipped: run {status}"}
        write_json(out / "curvature.json", summary)
        return summary
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    kwargs = {k: v for k, v in saved["model"].items() if k != "name"} | saved["model_kwargs"]
    model = build_model(saved["model"]["name"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    model.to(device)
    result = measure_curvature(model, F.cross_entropy, batches, seed=seed, **settings)
    summary = {"status": "measured", "num_examples": sum(int(b[0].shape[0]) for b in batches), "settings": settings, **result.summary}
    if cfg.at_init:
        torch.manual_seed(seed)  # the train stage builds the model under this seed
        init_model = build_model(saved["model"]["name"], **kwargs).to(device)
        init = measure_curvature(init_model, F.cross_entropy, batches, seed=seed,
                                 **{**settings, "per_layer": False, "noise_examples": 0, "diag_probes": 0})
        keys = ("lambda_max", "lambda_max_err", "trace", "trace_stderr", "logdet", "logdet_stderr", "rmt")
        summary["at_init"] = {k: init.summary[k] for k in keys}
    along = []
    for snapshot in list_snapshots(run / "checkpoints"):
        state = torch.load(snapshot, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        along.append({"epoch": state["epoch"], **sharpness_summary(
            model, F.cross_entropy, batches, bn_mode=cfg.bn_mode, eig_tol=cfg.eig_tol,
            trace_matvecs=cfg.along_training_matvecs, trace_method=cfg.trace_method,
            noise_examples=cfg.noise_examples, seed=seed)})
    if along:
        summary["along_training"] = along
    torch_save(out / "krylov.pt", result.krylov)
    write_json(out / "curvature.json", summary)
    print(f"{experiment}/{config}/seed{seed}: lambda_max={summary['lambda_max']:.4g} "
          f"trace={summary['trace']:.4g} logdet={summary['logdet']:.4g} ({summary['wall_time_s']:.1f}s)", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    params = load_params()
    try:
        cfg = parse_config(CurvatureConfig, section(params, "curvature", args.experiment), f"curvature.{args.experiment}")
        dataset_key = experiment_dataset(params, args.experiment)
        seeds = section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    data = torch.load(prepared_path(dataset_key), map_location="cpu", weights_only=False)
    x, y = data["probe"]
    x, y = x[: cfg.num_examples].to(device), y[: cfg.num_examples].to(device)
    batches = [(x[i : i + cfg.batch_size], y[i : i + cfg.batch_size]) for i in range(0, x.shape[0], cfg.batch_size)]
    loop_only = ("num_examples", "batch_size", "at_init", "along_training_matvecs")
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in loop_only}

    out_root = ROOT / "measure" / args.experiment / args.config
    job = functools.partial(_measure_seed, args.experiment, args.config, cfg, settings, batches, device, out_root)
    workers = _num_workers(len(seeds), device)
    if workers > 1:  # seeds are independent and each is seeded: same results in any order
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            per_seed = dict(zip(seeds, pool.map(job, seeds), strict=True))
    else:
        per_seed = {seed: job(seed) for seed in seeds}

    measured = [s for s in per_seed.values() if s.get("status") == "measured"]
    metrics = {
        "seeds_measured": len(measured),
        "seeds_skipped": len(per_seed) - len(measured),
        "lambda_max": _mean_sd([s["lambda_max"] for s in measured]),
        "trace": _mean_sd([s["trace"] for s in measured]),
        "logdet": _mean_sd([s["logdet"] for s in measured]),
        "outlier_count": _mean_sd([s["rmt"]["outlier_count"] for s in measured]),
        "kappa": _mean_sd([s["noise"]["kappa"] for s in measured if "noise" in s]),
    }
    write_json(out_root / "metrics.json", metrics)


if __name__ == "__main__":
    main()
