"""escape stage: continue training from sharp minima under three noise models (H3's experiment).

Usage: python stages/escape.py

For each seed of ``h1_batch``/``escape.config`` (a large-batch run: a sharp minimum), loads
runs/<exp>/<cfg>/seed<k>/model.pt and the measure stage's top Ritz vectors
(measure/<exp>/<cfg>/seeds/seed<k>/krylov.pt), and runs
``landscape.probes.escape.escape_study`` on the fixed probe subset. Writes escape/results.json
(every trial with its checks), escape/trials.json (one row per trial, read by the
hypotheses stage) and escape/metrics.json (escape rate, alignment and lambda_max ratio per
noise type). A diverged or unmeasured run is recorded as skipped. Seeds run in forked
workers on the CPU, as in the measure stage.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import multiprocessing
import os
import statistics
import time

from _common import ROOT, ConfigError, configure_torch, experiment_dataset, fail, load_params, pick_device, prepared_path, run_dir, section

import torch

from landscape.io import read_json, write_json
from landscape.models import build_model
from landscape.probes.escape import EscapeConfig, EscapeStudy, ModelLandscape, escape_study, trial_rows
from landscape.probes.sde import wilson_interval
from landscape.schema import parse_config

SOURCE_EXPERIMENT = "h1_batch"  # the batch-size sweep: its largest batch gives the sharp minima


def _seed_study(experiment: str, config: str, cfg: EscapeConfig, data: tuple, device: torch.device,
                seed: int) -> tuple[int, str, EscapeStudy | None]:
    """One seed's study (or the reason it was skipped)."""
    run = run_dir(experiment, config, seed)
    status = read_json(run / "metrics.json")["status"]
    krylov_file = ROOT / "measure" / experiment / config / "seeds" / f"seed{seed}" / "krylov.pt"
    if status != "completed":
        return seed, f"skipped: run {status}", None
    if not krylov_file.is_file():
        return seed, f"skipped: {krylov_file.relative_to(ROOT)} missing", None
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    kwargs = {k: v for k, v in saved["model"].items() if k != "name"} | saved["model_kwargs"]
    model = build_model(saved["model"]["name"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    model.to(device)
    basis = torch.load(krylov_file, map_location=device, weights_only=False)["ritz_vectors"]
    x, y = data
    landscape = ModelLandscape(model, (x.to(device), y.to(device)), chunk_size=cfg.chunk_size)
    study = escape_study(landscape, landscape.theta0, cfg, basis=basis, seed=seed)
    rates = {k: sum(t.escaped for t in study.trials if t.noise_type == k) for k in cfg.noise_types}
    print(f"{experiment}/{config}/seed{seed}: lambda_max={study.lambda_start:.4g} lr={study.lr:.4g} escapes={rates} "
          f"({study.wall_time_s:.1f}s)", flush=True)
    return seed, "studied", study


def _summary(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else float("nan"),
            "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"), "n": len(finite)}


def main() -> None:
    started = time.perf_counter()
    params = load_params()
    try:
        experiment, config = SOURCE_EXPERIMENT, section(params, "escape", "config")
        section(params, "experiments", experiment, "configs", config)
        cfg = parse_config(EscapeConfig, section(params, "escape", "settings"), "escape.settings")
        dataset_key = experiment_dataset(params, experiment)
        seeds = section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    x, y = torch.load(prepared_path(dataset_key), map_location="cpu", weights_only=False)["probe"]
    data = (x[: cfg.num_examples], y[: cfg.num_examples])
    job = functools.partial(_seed_study, experiment, config, cfg, data, device)
    workers = 1 if device.type != "cpu" else max(1, min(len(seeds), int(os.environ.get("LANDSCAPE_WORKERS", min(2, os.cpu_count() or 1)))))
    if workers > 1:  # seeds are independent and seeded: same results in any order
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            done = list(pool.map(job, seeds))
    else:
        done = [job(s) for s in seeds]

    studies = [(seed, study) for seed, _, study in done if study is not None]
    rows = trial_rows(studies)
    meta = {"experiment": experiment, "config": config, "settings": cfg.__dict__ | {"noise_types": list(cfg.noise_types)}}
    out = ROOT / "escape"
    per_seed = {f"seed{s}": {"status": st, **(study.to_dict() if study else {})} for s, st, study in done}
    write_json(out / "results.json", {**meta, "seeds": per_seed})
    write_json(out / "trials.json", {**meta, "trials": rows})
    per_type = {}
    for kind in cfg.noise_types:
        sub = [r for r in rows if r["noise_type"] == kind]
        escapes = sum(r["escape"] for r in sub)
        lo, hi = wilson_interval(escapes, len(sub)) if sub else (float("nan"), float("nan"))
        per_type[kind] = {"trials": len(sub), "escapes": escapes, "escape_rate": _summary([float(r["escape"]) for r in sub])["mean"],
                          "escape_rate_ci95": [float(lo), float(hi)],
                          "escape_lambda_rate": _summary([float(r["escape_lambda"]) for r in sub])["mean"],
                          "escape_barrier_rate": _summary([float(r["escape_barrier"]) for r in sub])["mean"],
                          "alignment": _summary([r["alignment"] for r in sub]), "lambda_ratio": _summary([r["lambda_ratio"] for r in sub])}
    write_json(out / "metrics.json", {"seeds_studied": len(studies), "seeds_skipped": len(done) - len(studies),
                                      "noise_types": per_type, "wall_time_s": time.perf_counter() - started})


if __name__ == "__main__":
    main()
