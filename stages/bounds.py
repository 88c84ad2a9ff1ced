"""bounds stage: PAC-Bayes and parameter-count bounds of every trained run of one (experiment, config).

Usage: python stages/bounds.py --experiment h1_batch --config b64

For each seed: loads runs/<exp>/<cfg>/seed<k>/model.pt, rebuilds the initialisation (the
prior mean) from the training seed, reads the measure stage's Ritz pairs and trace
(measure/<exp>/<cfg>/seeds/seed<k>/{krylov.pt, curvature.json}) and calls
``landscape.bounds.run_bounds.bounds_for_run`` on the full training split (labels as
trained). Writes bounds/<exp>/<cfg>/seeds/seed<k>/bounds.json; a diverged or unmeasured
run is recorded as skipped. bounds/<exp>/<cfg>/metrics.json summarises the seeds. A bound
below the posterior's test error stops the stage with an error (see the library).
"""

from __future__ import annotations

import argparse
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

from landscape.bounds.run_bounds import BoundsConfig, bounds_for_run
from landscape.config import parse_config
from landscape.io import read_json, write_json
from landscape.models import build_model
from landscape.training import randomize_labels

FAMILIES = ("occam", "isotropic", "hessian")


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
        cfg = parse_config(BoundsConfig, section(params, "bounds", args.experiment), f"bounds.{args.experiment}")
        dataset_key = experiment_dataset(params, args.experiment)
        seeds = section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    data = torch.load(prepared_path(dataset_key), map_location="cpu", weights_only=False)

    out_root = ROOT / "bounds" / args.experiment / args.config
    measure_root = ROOT / "measure" / args.experiment / args.config / "seeds"
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        run = run_dir(args.experiment, args.config, seed)
        out = out_root / "seeds" / f"seed{seed}" / "bounds.json"
        status = read_json(run / "metrics.json")["status"]
        curvature = read_json(measure_root / f"seed{seed}" / "curvature.json")
        if status != "completed" or curvature.get("status") != "measured":
            why = f"run {status}" if status != "completed" else f"curvature {curvature.get('status')}"
            per_seed[seed] = {"status": f"skipped: {why}"}
            write_json(out, per_seed[seed])
            continue
        saved = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
        kwargs = {k: v for k, v in saved["model"].items() if k != "name"} | saved["model_kwargs"]
        model = build_model(saved["model"]["name"], **kwargs)
        model.load_state_dict(saved["state_dict"])
        model.to(device)
        # The train stage builds the model under torch.manual_seed(seed); build_model(seed=)
        # reproduces those weights exactly without touching the global RNG.
        init_state = build_model(saved["model"]["name"], seed=seed, **kwargs).state_dict()
        x_train, y_train = data["train"]
        if saved["train"].get("random_labels", False):
            y_train = randomize_labels(y_train, data["num_classes"], seed)
        krylov = torch.load(measure_root / f"seed{seed}" / "krylov.pt", map_location="cpu", weights_only=False)
        trace = curvature["trace"]
        result = bounds_for_run(
            model,
            init_state,
            (x_train, y_train),
            data["test"],
            krylov,
            float("nan") if trace is None else float(trace),
            config=cfg,
            seed=seed,
        )
        summary = {"status": "bounded", **result.to_dict()}
        write_json(out, summary)
        per_seed[seed] = summary
        b = summary["bounds"]
        print(
            f"{args.experiment}/{args.config}/seed{seed}: occam={b['occam']:.4f} isotropic={b['isotropic']:.4f} "
            f"hessian={b['hessian']:.4f} (test error {result.test_error:.4f}; order {' < '.join(result.ordering)})"
        )

    bounded = [s for s in per_seed.values() if s.get("status") == "bounded"]
    metrics = {
        "seeds_bounded": len(bounded),
        "seeds_skipped": len(per_seed) - len(bounded),
        **{f"{f}_bound": _mean_sd([s["bounds"][f] for s in bounded]) for f in FAMILIES},
        "test_error": _mean_sd([s["test_error"] for s in bounded]),
        "isotropic_test_error": _mean_sd([s["isotropic"]["test_error"] for s in bounded]),
        "hessian_test_error": _mean_sd([s["hessian"]["test_error"] for s in bounded]),
        "hessian_kl": _mean_sd([s["hessian"]["kl"]["kl"] for s in bounded]),
        "isotropic_kl": _mean_sd([s["isotropic"]["kl"]["kl"] for s in bounded]),
        "effective_dim": _mean_sd([s["hessian"]["complexity"]["effective_dim"] for s in bounded]),
        "seeds_hessian_below_isotropic": sum(s["hessian_below_isotropic"] for s in bounded),
        "seeds_isotropic_below_occam": sum(s["isotropic_below_occam"] for s in bounded),
        "seeds_hessian_below_occam": sum(s["hessian_below_occam"] for s in bounded),
        "ordering_per_seed": {str(seed): s.get("ordering", s["status"]) for seed, s in per_seed.items()},
    }
    write_json(out_root / "metrics.json", metrics)


if __name__ == "__main__":
    main()
