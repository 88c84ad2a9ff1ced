"""measure stage: curvature of every trained run of one (experiment, config), all seeds.

For each seed: the run's final weights, measured on the fixed probe subset (top-k and bottom-k
eigenpairs with residual bounds, ``||H||_2 = max(|lambda_max|, |lambda_min|)``, trace, SLQ
density and its negative mass, log-det and its curvature part, RMT bulk fit, per-layer figures,
gradient-noise covariance and its alignment), written to
``measure/<exp>/<cfg>/seeds/seed<k>/{curvature.json, krylov.pt}``; a diverged run is recorded
as skipped, never measured; ``measure/<exp>/<cfg>/metrics.json`` summarises the seeds.

Execution: with k visible GPUs, seed ``i`` is measured on GPU ``i mod k`` (one spawned process
per GPU); on the CPU the seeds share forked workers. Under ``torchrun`` with ``WORLD_SIZE`` > 1
every rank takes part in each seed's products (the probe batches are sharded over the ranks,
:func:`~landscape.curvature.distributed.sharded_hessian_operator`) and rank 0 writes::

    torchrun --nproc_per_node 4 stages/measure.py --experiment h2_arch --config resnet18
    dvc commit measure_h2_arch@resnet18      # record the outputs in dvc.lock

The curvature precision is ``curvature.<exp>.dtype`` (float32 or float64; the model and inputs
are cast to it); it and the runtime settings (determinism switches, devices, world size) are
recorded in ``curvature.json`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.curvature.covariance import DEFAULT_COVARIANCE_MEMORY_BYTES
from landscape.curvature.distributed import sharded_hessian_operator
from landscape.curvature.measure import OperatorClass, measure_curvature, sharpness_summary
from landscape.curvature.operators import HessianOperator
from landscape.io import torch_save, write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_on_devices
from landscape.pipeline.params import experiment_dataset, group_seeds, section
from landscape.pipeline.runs import initial_model, load_run
from landscape.pipeline.runtime import (
    DistributedContext,
    configure_torch,
    cpu_workers,
    distributed_context,
    process_group,
    visible_devices,
)
from landscape.pipeline.seed_summary import mean_sd
from landscape.reproducibility import device_record
from landscape.schema import nonneg, parse_config, positive, rule
from landscape.training.checkpoint import list_snapshots

__all__ = ["CurvatureConfig", "measure_settings", "measure_seed", "run"]

Batch = tuple[Tensor, Tensor]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class CurvatureConfig:
    """Settings of the ``measure`` stage (keyword arguments of ``measure_curvature``).

    Attributes:
        num_examples: examples of the fixed probe subset the Hessian is taken over.
        batch_size: examples per forward pass when forming products.
        at_init: also measure the network at its initialisation (rebuilt from the seed).
        bn_mode: BatchNorm policy, ``eval`` or ``batch``.
        top_k: top eigenpairs by Lanczos (their Ritz vectors are cached).
        eig_tol: relative Ritz residual tolerance.
        trace_matvecs: Hessian-vector products of the trace estimate.
        trace_method: ``hutch++``, ``hutchinson`` or ``xtrace``.
        slq_probes, slq_steps: stochastic Lanczos quadrature budget (density and log-det).
        logdet_eps_relative: r in ``eps = r * lambda_max``, the shift of ``log det(H + eps I)``;
            the curvature part ``sum_i ln(1 + max(lambda_i, 0) / eps)`` is what regressions use.
        bottom_k: bottom (smallest algebraic) eigenpairs by Lanczos, for lambda_min and
            ``||H||_2 = max(|lambda_max|, |lambda_min|)`` (0 skips them).
        bottom_max_matvecs: product budget of the bottom pass (unconverged values are reported
            with their residual bounds and ``converged = false``).
        negative_tau: the negative mass is reported below 0 and below ``-negative_tau`` SLQ
            broadening widths.
        per_layer: per-module top eigenvalue and trace.
        per_layer_matvecs: trace budget per module.
        per_layer_tol: relative Ritz residual tolerance of each module's top eigenvalue
            (looser than ``eig_tol``: one Lanczos run per module, each product a full one).
        noise_examples: examples for per-sample gradients and the noise covariance, at the final
            weights and at every training snapshot (0 skips).
        diag_probes: Hutchinson probes for diag(H) (the ``C ~ diag(H)`` check; 0 skips).
        along_training_matvecs: trace budget at each training snapshot (lambda_max and
            trace along training, when the run kept snapshots).
        dtype: precision of the curvature computations, ``float32`` or ``float64`` (the
            network and the probe inputs are cast to it; TF32 is off either way).
        probe_batch_size: trace and SLQ probes multiplied at once (null: all); bounds the
            vectorised products' working memory and the SLQ bases (same probes, same figures
            up to the last digits of sums).
        basis_device: where Lanczos bases live: null (the device of the products) or
            ``cpu`` (host memory; keeps a GPU's memory for the products).
        slq_reorthogonalize: false runs SLQ without stored bases (3 vectors per probe; the
            quadrature keeps its accuracy), for networks whose bases do not fit.
        noise_memory_bytes: budget of the per-sample gradients held at once for the noise
            covariance (dense when it fits, else streamed through the Gram matrix).
    """

    num_examples: int = field(default=1000, metadata=rule("an int >= 2", lambda x: x >= 2))
    batch_size: int = field(default=500, metadata=rule("an int >= 1", lambda x: x >= 1))
    at_init: bool = False
    bn_mode: str = field(default="eval", metadata=rule("one of ['eval', 'batch']", lambda x: x in ("eval", "batch")))
    top_k: int = field(default=10, metadata=rule("an int >= 1", lambda x: x >= 1))
    eig_tol: float = field(default=1e-3, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    trace_matvecs: int = field(default=60, metadata=rule("an int >= 4", lambda x: x >= 4))
    trace_method: str = field(
        default="hutch++", metadata=rule("one of ['hutch++', 'hutchinson', 'xtrace']", lambda x: x in ("hutch++", "hutchinson", "xtrace"))
    )
    slq_probes: int = field(default=4, metadata=rule("an int >= 1", lambda x: x >= 1))
    slq_steps: int = field(default=40, metadata=rule("an int >= 2", lambda x: x >= 2))
    logdet_eps_relative: float = field(default=1e-3, metadata=rule("a float > 0", positive))
    bottom_k: int = field(default=5, metadata=rule("an int >= 0", nonneg))
    bottom_max_matvecs: int = field(default=300, metadata=rule("an int >= 2", lambda x: x >= 2))
    negative_tau: float = field(default=3.0, metadata=rule("a float >= 0", nonneg))
    per_layer: bool = True
    per_layer_matvecs: int = field(default=20, metadata=rule("an int >= 4", lambda x: x >= 4))
    per_layer_tol: float = field(default=1e-2, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    noise_examples: int = field(default=256, metadata=rule("an int >= 0", nonneg))
    diag_probes: int = field(default=20, metadata=rule("an int >= 0", nonneg))
    along_training_matvecs: int = field(default=20, metadata=rule("an int >= 4", lambda x: x >= 4))
    dtype: str = field(default="float32", metadata=rule(f"one of {list(DTYPES)}", lambda x: x in DTYPES))
    probe_batch_size: int | None = field(default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1))
    basis_device: str | None = field(default=None, metadata=rule("null or 'cpu'", lambda x: x in (None, "cpu")))
    slq_reorthogonalize: bool = True
    noise_memory_bytes: int = field(default=DEFAULT_COVARIANCE_MEMORY_BYTES, metadata=rule("an int >= 1", lambda x: x >= 1))


_AT_INIT_KEYS = ("lambda_max", "lambda_max_err", "lambda_min", "lambda_min_err", "spectral_norm", "spectral_norm_err",
                 "spectral_norm_end", "bottom_eigenvalues", "negative_mass", "trace", "trace_stderr", "logdet", "logdet_stderr",
                 "logdet_eps", "logdet_curvature", "logdet_curvature_stderr", "logdet_clamped_mass", "rmt")


def _on(batches: list[Batch], device: torch.device, dtype: torch.dtype) -> list[Batch]:
    """The batches on ``device``, floating-point inputs cast to ``dtype`` (token ids stay whole)."""
    return [(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device), y.to(device)) for x, y in batches]


def measure_seed(layout: Layout, experiment: str, config: str, cfg: CurvatureConfig, batches: list[Batch],
                 runtime: dict[str, Any], seed: int, device: torch.device,
                 world: DistributedContext | None = None) -> dict[str, Any]:
    """Measure one seed's run on ``device``; write its ``curvature.json`` and ``krylov.pt``
    (on rank 0 only under ``torchrun``); return the summary.

    ``batches`` may be on the CPU (they are moved to ``device`` and cast to ``cfg.dtype``);
    ``runtime`` is what :func:`~landscape.pipeline.runtime.configure_torch` returned.
    """
    settings = measure_settings(cfg)
    writes = world is None or world.is_main
    out = layout.measure_seed(experiment, config, seed)
    stored = load_run(layout, experiment, config, seed, device)
    if stored.status != "completed" or stored.model is None:
        summary: dict[str, Any] = {"status": f"skipped: run {stored.status}"}
        if writes:
            write_json(out / "curvature.json", summary)
        return summary
    dtype = DTYPES[cfg.dtype]
    model = stored.model.to(dtype)
    batches = _on(batches, device, dtype)
    hessian: OperatorClass = HessianOperator if world is None else sharded_hessian_operator
    result = measure_curvature(model, F.cross_entropy, batches, seed=seed, hessian=hessian, **settings)
    summary = {"status": "measured", "num_examples": sum(int(b[0].shape[0]) for b in batches),
               "settings": {**settings, "dtype": cfg.dtype}, **result.summary,
               "runtime": {**runtime, **device_record(device), "world_size": 1 if world is None else world.world_size}}
    if cfg.at_init:
        init = measure_curvature(initial_model(stored, device).to(dtype), F.cross_entropy, batches, seed=seed, hessian=hessian,
                                 **{**settings, "per_layer": False, "noise_examples": 0, "diag_probes": 0})
        summary["at_init"] = {k: init.summary[k] for k in _AT_INIT_KEYS if k in init.summary}
    along = []
    for snapshot in list_snapshots(layout.run(experiment, config, seed).checkpoints):
        state = torch.load(snapshot, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        along.append({"epoch": state["epoch"], **sharpness_summary(
            model, F.cross_entropy, batches, bn_mode=cfg.bn_mode, eig_tol=cfg.eig_tol,
            trace_matvecs=cfg.along_training_matvecs, trace_method=cfg.trace_method,
            noise_examples=cfg.noise_examples, seed=seed, hessian=hessian)})
    if along:
        summary["along_training"] = along
    if writes:
        torch_save(out / "krylov.pt", result.krylov)
        write_json(out / "curvature.json", summary)
        print(f"{experiment}/{config}/seed{seed}: lambda_max={summary['lambda_max']:.4g} "
              f"lambda_min={summary.get('lambda_min', float('nan')):.4g} trace={summary['trace']:.4g} "
              f"logdet_curvature={summary['logdet_curvature']:.4g} ({summary['wall_time_s']:.1f}s)", flush=True)
    return summary


def measure_settings(cfg: CurvatureConfig) -> dict[str, Any]:
    """Keyword arguments of ``measure_curvature`` (the settings recorded in ``curvature.json``)."""
    skipped = ("num_examples", "batch_size", "at_init", "along_training_matvecs", "dtype")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skipped}


def run(params: Mapping[str, Any], layout: Layout, experiment: str, config: str) -> None:
    """Measure every seed of ``experiments.<experiment>.configs.<config>`` on the probe subset."""
    cfg = parse_config(CurvatureConfig, section(params, "curvature", experiment), f"curvature.{experiment}")
    dataset_key = experiment_dataset(params, experiment)
    seeds = group_seeds(params, experiment)
    runtime = configure_torch()
    world = distributed_context()
    data = torch.load(layout.prepared(dataset_key), map_location="cpu", weights_only=False)
    x, y = data["probe"]
    x, y = x[: cfg.num_examples], y[: cfg.num_examples]
    batches = [(x[i : i + cfg.batch_size], y[i : i + cfg.batch_size]) for i in range(0, x.shape[0], cfg.batch_size)]
    if world is not None:  # torchrun: every rank takes part in each seed's products, rank 0 writes
        device = world.device()
        devices = [device]
        with process_group(world, device):
            per_seed = {s: measure_seed(layout, experiment, config, cfg, batches, runtime, s, device, world) for s in seeds}
        if not world.is_main:
            return
    else:
        # seeds are independent and each is seeded: same results in any order, worker or device count
        devices = visible_devices()
        job = functools.partial(measure_seed, layout, experiment, config, cfg, batches, runtime)
        per_seed = dict(zip(seeds, map_on_devices(job, seeds, devices, cpu_workers(devices[0], len(seeds))), strict=True))
    measured = [s for s in per_seed.values() if s.get("status") == "measured"]
    metrics = {
        "seeds_measured": len(measured),
        "seeds_skipped": len(per_seed) - len(measured),
        "lambda_max": mean_sd([s["lambda_max"] for s in measured]),
        "lambda_min": mean_sd([s.get("lambda_min", math.nan) for s in measured]),
        "spectral_norm": mean_sd([s["spectral_norm"] for s in measured]),
        "negative_mass": mean_sd([s["negative_mass"]["below_zero"] for s in measured]),
        "trace": mean_sd([s["trace"] for s in measured]),
        "logdet": mean_sd([s["logdet"] for s in measured]),
        "logdet_curvature": mean_sd([s["logdet_curvature"] for s in measured]),
        "outlier_count": mean_sd([s["rmt"]["outlier_count"] for s in measured]),
        "kappa": mean_sd([s["noise"]["kappa"] for s in measured if "noise" in s]),
        "dtype": cfg.dtype,
        "runtime": {**runtime, "devices": [str(d) for d in devices], "world_size": 1 if world is None else world.world_size},
    }
    write_json(layout.measure_dir(experiment, config) / "metrics.json", metrics)
