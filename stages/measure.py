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
import dataclasses
import math
import statistics

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

from landscape.config import CurvatureConfig, parse_config
from landscape.curvature.measure import measure_curvature, sharpness_summary
from landscape.training.checkpoint import list_snapshots
from landscape.io import read_json, torch_save, write_json
from landscape.models import build_model


def _mean_sd(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"),
        "n": len(finite),
    }


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
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("num_examples", "batch_size", "at_init", "along_training_matvecs")}

    out_root = ROOT / "measure" / args.experiment / args.config
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        run = run_dir(args.experiment, args.config, seed)
        status = read_json(run / "metrics.json")["status"]
        out = out_root / "seeds" / f"seed{seed}"
        if status != "completed":
            per_seed[seed] = {"status": f"skipped: run {status}"}
            write_json(out / "curvature.json", per_seed[seed])
            continue
        saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
        kwargs = {k: v for k, v in saved["model"].items() if k != "name"} | saved["model_kwargs"]
        model = build_model(saved["model"]["name"], **kwargs)
        model.load_state_dict(saved["state_dict"])
        model.to(device)
        result = measure_curvature(model, F.cross_entropy, batches, seed=seed, **settings)
        summary = {"status": "measured", "num_examples": int(x.shape[0]), "settings": settings, **result.summary}
        if cfg.at_init:
            torch.manual_seed(seed)  # the train stage builds the model under this seed
            init_model = build_model(saved["model"]["name"], **kwargs).to(device)
            init = measure_curvature(init_model, F.cross_entropy, batches, seed=seed, **{**settings, "per_layer": False, "noise_examples": 0, "diag_probes": 0})
            summary["at_init"] = {k: init.summary[k] for k in ("lambda_max", "lambda_max_err", "trace", "trace_stderr", "logdet", "logdet_stderr", "rmt")}
        along = []
        for snapshot in list_snapshots(run / "checkpoints"):
            state = torch.load(snapshot, map_location="cpu", weights_only=False)
            model.load_state_dict(state["state_dict"])
            along.append({"epoch": state["epoch"], **sharpness_summary(
                model, F.cross_entropy, batches, bn_mode=cfg.bn_mode, eig_tol=cfg.eig_tol,
                trace_matvecs=cfg.along_training_matvecs, trace_method=cfg.trace_method, seed=seed)})
        if along:
            summary["along_training"] = along
        torch_save(out / "krylov.pt", result.krylov)
        write_json(out / "curvature.json", summary)
        per_seed[seed] = summary
        print(f"{args.experiment}/{args.config}/seed{seed}: lambda_max={summary['lambda_max']:.4g} "
              f"trace={summary['trace']:.4g} logdet={summary['logdet']:.4g} ({summary['wall_time_s']:.1f}s)")

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
