"""bounds stage: PAC-Bayes and parameter-count bounds (H4) of the runs named in params.

Usage: python stages/bounds.py

For every run ``<exp>/<cfg>`` in ``bounds.runs`` and every seed: loads
runs/<exp>/<cfg>/seed<k>/model.pt, rebuilds its initialisation from the seed, reads the
measure stage's Ritz pairs and trace (measure/<exp>/<cfg>/seeds/seed<k>/{krylov.pt,
curvature.json}) and calls ``landscape.bounds.run_bounds.bounds_for_run`` (labels as
trained, the prior trained with the run's own recipe). Seeds run in forked workers
(``LANDSCAPE_WORKERS``, default min(2, CPUs)). Writes
bounds/runs/<exp>/<cfg>/seed<k>/bounds.json per seed (a diverged or unmeasured run is
recorded as skipped) and bounds/metrics.json (per run: mean/sd of each bound, test errors,
orderings; the random-label sanity pair ``bounds.sanity``). A bound below the posterior's
test error stops the stage with an error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import statistics
import time
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

from landscape.bounds.run_bounds import BoundsConfig, InvalidBoundError, bounds_for_run
from landscape.io import read_json, write_json
from landscape.models import build_model
from landscape.pipeline.validate import parse_bounds_section
from landscape.schema import parse_config
from landscape.training import randomize_labels
from landscape.training.config import TrainConfig

FAMILIES = ("occam", "isotropic", "hessian")
OUT = ROOT / "bounds"


def _mean_sd(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"),
        "n": len(finite),
    }


def _bound_seed(cfg: BoundsConfig, data: dict, device: torch.device, job: tuple[str, str, int]) -> dict:
    """Bound one seed's run; write its bounds.json; return the summary."""
    experiment, config, seed = job
    started = time.perf_counter()
    run = run_dir(experiment, config, seed)
    out = OUT / "runs" / experiment / config / f"seed{seed}" / "bounds.json"
    measured = ROOT / "measure" / experiment / config / "seeds" / f"seed{seed}"
    status = read_json(run / "metrics.json")["status"]
    curvature = read_json(measured / "curvature.json")
    if status != "completed" or curvature.get("status") != "measured":
        why = f"run {status}" if status != "completed" else f"curvature {curvature.get('status')}"
        summary: dict[str, Any] = {"status": f"skipped: {why}"}
        write_json(out, summary)
        return summary
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    kwargs = {k: v for k, v in saved["model"].items() if k != "name"} | saved["model_kwargs"]
    model = build_model(saved["model"]["name"], **kwargs)
    model.load_state_dict(saved["state_dict"])
    model.to(device)
    # The train stage builds the model under torch.manual_seed(seed); build_model(seed=)
    # reproduces those weights exactly without touching the global RNG.
    init_state = build_model(saved["model"]["name"], seed=seed, **kwargs).to(device).state_dict()
    train_cfg = parse_config(TrainConfig, saved["train"], f"runs/{experiment}/{config}/seed{seed}/model.pt:train")
    x_train, y_train = data["train"]
    if train_cfg.random_labels:
        y_train = randomize_labels(y_train, data["num_classes"], seed)
    krylov = torch.load(measured / "krylov.pt", map_location="cpu", weights_only=False)
    trace = curvature["trace"]
    result = bounds_for_run(
        model,
        init_state,
        (x_train, y_train),
        data["test"],
        krylov,
        float("nan") if trace is None else float(trace),
        train_config=train_cfg,
        config=cfg,
        seed=seed,
    )
    summary = {"status": "bounded", "random_labels": train_cfg.random_labels, "wall_time_s": time.perf_counter() - started,
               **result.to_dict()}
    write_json(out, summary)
    b = summary["bounds"]
    print(
        f"{experiment}/{config}/seed{seed}: occam={b['occam']:.4f} isotropic={b['isotropic']:.4f} "
        f"hessian={b['hessian']:.4f} (test error {result.test_error:.4f}, posterior {result.hessian.test_error:.4f}; "
        f"t={result.hessian.scale['t']}; order {' < '.join(result.ordering)}; {summary['wall_time_s']:.1f}s)",
        flush=True,
    )
    return summary


def _summarise(per_seed: dict[int, dict]) -> dict:
    """Mean/sd over the bounded seeds of one run, and its per-seed numbers."""
    ok = [s for s in per_seed.values() if s.get("status") == "bounded"]
    return {
        "seeds_bounded": len(ok),
        "seeds_skipped": len(per_seed) - len(ok),
        **{f"{f}_bound": _mean_sd([s["bounds"][f] for s in ok]) for f in FAMILIES},
        "test_error": _mean_sd([s["test_error"] for s in ok]),
        "train_error": _mean_sd([s["train_error"] for s in ok]),
        "isotropic_test_error": _mean_sd([s["isotropic"]["test_error"] for s in ok]),
        "hessian_test_error": _mean_sd([s["hessian"]["test_error"] for s in ok]),
        "isotropic_kl": _mean_sd([s["isotropic"]["kl"]["kl"] for s in ok]),
        "hessian_kl": _mean_sd([s["hessian"]["kl"]["kl"] for s in ok]),
        "seeds_hessian_below_isotropic": sum(s["hessian_below_isotropic"] for s in ok),
        "seeds_isotropic_below_occam": sum(s["isotropic_below_occam"] for s in ok),
        "ordering_per_seed": {str(k): " < ".join(s["ordering"]) if "ordering" in s else s["status"] for k, s in per_seed.items()},
        "bounds_per_seed": {str(k): s["bounds"] for k, s in per_seed.items() if s.get("status") == "bounded"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    params = load_params()
    try:
        section_cfg = parse_bounds_section(section(params, "bounds"), params.get("experiments") or {})
        cfg = parse_config(BoundsConfig, section_cfg["settings"], "bounds.settings")
        seeds = section(params, "seeds")
        datasets = {exp: experiment_dataset(params, exp) for exp, _ in section_cfg["runs"]}
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    data = {key: torch.load(prepared_path(key), map_location="cpu", weights_only=False) for key in set(datasets.values())}
    jobs = [(exp, c, seed) for exp, c in section_cfg["runs"] for seed in seeds]
    missing = [f"{e}/{c}/seed{s}" for e, c, s in jobs if not (run_dir(e, c, s) / "model.pt").is_file()]
    if missing:
        fail(f"bounds.runs needs trained runs that are missing: {missing[:5]} (run `dvc repro` for their train/measure stages)")

    started = time.perf_counter()
    workers = 1 if device.type != "cpu" else max(1, min(len(jobs), int(os.environ.get("LANDSCAPE_WORKERS", min(2, os.cpu_count() or 1)))))
    by_dataset = {exp: data[key] for exp, key in datasets.items()}
    try:
        if workers > 1:  # jobs are independent and each is seeded: same results in any order
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                futures = [pool.submit(_bound_seed, cfg, by_dataset[e], device, (e, c, s)) for e, c, s in jobs]
                results = [f.result() for f in futures]
        else:
            results = [_bound_seed(cfg, by_dataset[e], device, (e, c, s)) for e, c, s in jobs]
    except InvalidBoundError as exc:  # a bound below its test error: never write a summary
        fail(f"invalid bound: {exc}")

    per_run: dict[str, dict[int, dict]] = {}
    for (e, c, s), r in zip(jobs, results, strict=True):
        per_run.setdefault(f"{e}/{c}", {})[s] = r
    metrics: dict = {"runs": {key: _summarise(v) for key, v in per_run.items()}}
    pair = section_cfg["sanity"]
    if pair is not None:
        real, rand = metrics["runs"][pair["real"]], metrics["runs"][pair["random"]]
        lowest_random = min((min(b["isotropic"], b["hessian"]) for b in rand["bounds_per_seed"].values()), default=float("nan"))
        highest_real = max((min(b["isotropic"], b["hessian"]) for b in real["bounds_per_seed"].values()), default=float("nan"))
        metrics["sanity"] = {
            "real": pair["real"],
            "random": pair["random"],
            "real_best_bound_max": highest_real,
            "random_best_bound_min": lowest_random,
            "random_vacuous": bool(lowest_random > 0.9),
            "real_nonvacuous": bool(highest_real < 1.0),
        }
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["workers"] = workers
    write_json(OUT / "metrics.json", metrics)
    print(f"bounds: {len(jobs)} seed runs in {metrics['wall_time_s']:.1f}s ({workers} workers)")


if __name__ == "__main__":
    main()
