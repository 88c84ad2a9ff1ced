"""intrinsic_dim stage: d_int90 by random-subspace training, with a bootstrap CI across seeds.

Usage: python stages/intrinsic_dim.py

Two tasks (``probes.intrinsic_dim``): Li et al.'s toy problem of known intrinsic dimension,
and a network of the pipeline (``model``: name + options, trained from its seed's
initialisation on the prepared data set ``model.dataset``); dense and sparse projections.
No trained run is read. Writes probes/intrinsic_dim/: metrics.json (d_int mean and interval
per task and projection), results.json (every search), figures/*.png, config.json.
"""

from __future__ import annotations

import argparse
import dataclasses

from _common import ROOT, ConfigError, configure_torch, cpu_workers, fail, load_params, pick_device, prepared_path, section

import torch

from landscape.io import atomic_path, write_json
from landscape.models import build_model
from landscape.probes.run_probes import IntrinsicDimConfig, run_intrinsic_dim
from landscape.schema import parse_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    params = load_params()
    try:
        cfg = parse_config(IntrinsicDimConfig, section(params, "probes", "intrinsic_dim"), "probes.intrinsic_dim")
        if cfg.model.enabled:
            section(params, "datasets", cfg.model.dataset)
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    kwargs = {}
    if cfg.model.enabled:
        data_file = prepared_path(cfg.model.dataset)
        if not data_file.is_file():
            fail(f"prepared data {data_file} is missing; run `dvc repro prepare@{cfg.model.dataset}` first")
        data = torch.load(data_file, map_location="cpu", weights_only=False)
        options = {k: v for k, v in cfg.model.model.items() if k != "name"}
        shape = tuple(data["train"][0].shape[1:])
        if len(shape) == 3:  # images (C, H, W), as in the train stage
            options.update(in_chans=shape[0], img_size=shape[1])
        else:
            options["in_features"] = shape[0]
        name = cfg.model.model["name"]
        try:
            build_model(name, num_classes=data["num_classes"], seed=0, **options)
        except (TypeError, ValueError) as exc:
            fail(f"probes.intrinsic_dim.model.model: {exc}")
        kwargs = {
            "model_factory": lambda seed: build_model(name, num_classes=data["num_classes"], seed=seed, **options).to(device),
            "train_data": data["train"],
            "eval_data": data["test"],
        }
    report = run_intrinsic_dim(cfg, workers=cpu_workers(device), **kwargs)
    out = ROOT / "probes" / "intrinsic_dim"
    for fname, fig in report.figures().items():
        with atomic_path(out / "figures" / f"{fname}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    write_json(out / "results.json", report.to_dict())
    write_json(out / "config.json", dataclasses.asdict(cfg))
    write_json(out / "metrics.json", report.summary)
    for key, s in report.summary.items():
        print(f"intrinsic_dim {key}: d_int = {s['d_int_mean']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]")


if __name__ == "__main__":
    main()
