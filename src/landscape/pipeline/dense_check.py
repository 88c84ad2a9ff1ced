"""dense_check stage: the measure stage's estimates against exact spectra of the small nets.

For each ``<experiment>/<config>`` of ``dense_check.runs`` (seed ``dense_check.seed``): the
run's final network on the measure stage's probe data, loss (cross-entropy, mean) and
``bn_mode`` (``curvature.<experiment>``), cast to ``dense_check.dtype`` (float64 by default);
the dense Hessian by exact double-backward products with the identity's columns
(``HessianOperator(hvp_mode="rev_rev_kept")``) and all its eigenvalues in float64; then
:func:`~landscape.curvature.dense_check.compare_with_exact` scores the estimates the measure
stage wrote for that run (``curvature.json`` and ``krylov.pt``, with the settings recorded
there): W1 of the SLQ quadrature measure, the top-k and bottom-k Ritz values against their
certificates, the trace against its interval, the log-det curvature part.

Writes ``dense_check/results.json`` (every check with the estimator settings and timings),
``dense_check/metrics.json`` (the table: one row per run) and
``dense_check/spectra/<experiment>/<config>/seed<k>.npz`` (``eigenvalues``, the SLQ
``nodes`` and ``weights``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from landscape.curvature.dense_check import compare_with_exact, dense_matrix, exact_eigenvalues
from landscape.curvature.operators import HessianOperator
from landscape.curvature.slq import quadrature_from_tridiagonals
from landscape.io import atomic_path, read_json, write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.measure import DTYPES, CurvatureConfig
from landscape.pipeline.params import experiment_dataset, section
from landscape.pipeline.runs import load_run
from landscape.pipeline.runtime import configure_torch
from landscape.schema import Checked, ConfigError, int_at_least, nonneg, parse_config, rule

__all__ = ["DenseCheckConfig", "TABLE_COLUMNS", "load_config", "check_run", "table_rows", "run"]

_NAMES = rule("a non-empty list of '<experiment>/<config>'",
              lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) and v.count("/") == 1 for v in x))

TABLE_COLUMNS = ("run", "num_params", "w1_slq", "w1_over_width", "top_k", "top_max_rel_error", "top_within_bound",
                 "top_excess_over_lambda_max", "bottom_k", "bottom_max_rel_error", "bottom_within_bound",
                 "bottom_excess_over_lambda_max", "trace_rel_error", "trace_within_interval",
                 "logdet_curvature_rel_error", "logdet_within_interval", "lambda_min", "lambda_max", "negative_fraction", "settings")
"""Columns of the dense-vs-estimator table (``metrics.json`` rows, the spectra page, ``reports/headline.json``)."""


@dataclass(frozen=True)
class DenseCheckConfig(Checked):
    """Settings of the dense_check stage (``dense_check`` in params.yaml).

    Attributes:
        runs: ``<experiment>/<config>`` entries whose measured run is checked (each group
            needs a ``curvature`` entry: its probe data, bn_mode and estimates are used).
        seed: the training seed of the checked run.
        dtype: precision of the dense Hessian (``float64`` or ``float32``; eigenvalues are
            always computed in float64).
        ci_level: level of the trace and log-det intervals (``value +- z stderr``).
        max_params: refuse networks with more parameters (the dense matrix is P^2 floats).
    """

    runs: tuple[str, ...] = field(default=(), metadata=_NAMES)
    seed: int = field(default=0, metadata=rule("an int >= 0", nonneg))
    dtype: str = field(default="float64", metadata=rule(f"one of {list(DTYPES)}", lambda x: x in DTYPES))
    ci_level: float = field(default=0.95, metadata=rule("a float in (0, 1)", lambda x: isinstance(x, float) and 0 < x < 1))
    max_params: int = field(default=12_000, metadata=int_at_least(2))


def load_config(params: Mapping[str, Any]) -> DenseCheckConfig:
    """The ``dense_check`` section, validated, with every run an existing measured config.

    Raises:
        ConfigError: a bad setting, or a run that is not a config of a measured group.
    """
    cfg = parse_config(DenseCheckConfig, section(params, "dense_check"), "dense_check")
    experiments, curvature = params.get("experiments") or {}, params.get("curvature") or {}
    for entry in cfg.runs:
        exp, name = entry.split("/")
        if name not in ((experiments.get(exp) or {}).get("configs") or {}):
            raise ConfigError(f"dense_check.runs names {entry!r}, which is not an <experiment>/<config> of experiments")
        if exp not in curvature:
            raise ConfigError(f"dense_check.runs names {entry!r}, but experiment {exp!r} has no curvature entry (it is not measured)")
    if cfg.seed not in (params.get("seeds") or []):
        raise ConfigError(f"dense_check.seed={cfg.seed!r} is not one of seeds={params.get('seeds')!r}")
    return cfg


Batch = tuple[torch.Tensor, torch.Tensor]


def _probe_batches(params: Mapping[str, Any], layout: Layout, experiment: str, curv: CurvatureConfig) -> list[Batch]:
    """The measure stage's probe batches of ``experiment`` (same examples, same split into batches)."""
    data = torch.load(layout.prepared(experiment_dataset(params, experiment)), map_location="cpu", weights_only=False)
    x, y = data["probe"]
    x, y = x[: curv.num_examples], y[: curv.num_examples]
    return [(x[i : i + curv.batch_size], y[i : i + curv.batch_size]) for i in range(0, x.shape[0], curv.batch_size)]


def check_run(params: Mapping[str, Any], layout: Layout, experiment: str, config: str, cfg: DenseCheckConfig) -> dict[str, Any]:
    """Dense Hessian, exact spectrum and the comparison for one run; writes its ``.npz``."""
    curv_cfg = parse_config(CurvatureConfig, section(params, "curvature", experiment), f"curvature.{experiment}")
    measured = read_json(layout.curvature(experiment, config, cfg.seed))
    if measured.get("status") != "measured":
        return {"experiment": experiment, "config": config, "seed": cfg.seed, "status": f"skipped: {measured.get('status')}"}
    krylov = torch.load(layout.krylov(experiment, config, cfg.seed), map_location="cpu", weights_only=True)
    stored = load_run(layout, experiment, config, cfg.seed)
    if stored.model is None:
        raise FileNotFoundError(f"run {experiment}/{config}/seed{cfg.seed} has no trained network (status {stored.status})")
    dtype = DTYPES[cfg.dtype]
    model = stored.model.to(dtype)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if num_params > cfg.max_params:
        raise ConfigError(f"dense_check.runs names {experiment}/{config} with {num_params} parameters > dense_check.max_params="
                          f"{cfg.max_params}; the dense Hessian needs P^2 floats and P products")
    batches = [(x.to(dtype) if x.is_floating_point() else x, y) for x, y in _probe_batches(params, layout, experiment, curv_cfg)]
    started = time.perf_counter()
    op = HessianOperator(model, F.cross_entropy, batches, bn_mode=curv_cfg.bn_mode, hvp_mode="rev_rev_kept", graph_budget_bytes=None)
    matrix, asym = dense_matrix(op)
    t_dense = time.perf_counter() - started
    eigenvalues = exact_eigenvalues(matrix)
    del matrix
    t_eig = time.perf_counter() - started - t_dense
    quad = quadrature_from_tridiagonals(krylov["slq_alphas"], krylov["slq_betas"])
    bottom = measured.get("bottom_eigenvalues") or {}
    check = compare_with_exact(
        op, eigenvalues=eigenvalues,
        top_values=measured["eigenvalues"]["values"], top_bounds=measured["eigenvalues"]["residual_bounds"],
        bottom_values=bottom.get("values"), bottom_bounds=bottom.get("residual_bounds"),
        trace_value=measured["trace"], trace_stderr=measured["trace_stderr"],
        slq_nodes=quad.nodes.numpy(), slq_weights=quad.weights.numpy(),
        logdet_eps=measured.get("logdet_eps"), logdet_curvature=measured.get("logdet_curvature"),
        logdet_stderr=measured.get("logdet_curvature_stderr"), ci_level=cfg.ci_level)
    check = dataclasses.replace(check, asymmetry=asym)
    with atomic_path(layout.dense_spectrum(experiment, config, cfg.seed)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, eigenvalues=eigenvalues, slq_nodes=quad.nodes.numpy(), slq_weights=quad.weights.numpy())
    settings = measured.get("settings") or {}
    used = {k: settings.get(k) for k in ("top_k", "eig_tol", "bottom_k", "bottom_max_matvecs", "trace_method", "trace_matvecs",
                                          "slq_probes", "slq_steps", "logdet_eps_relative", "bn_mode", "dtype")}
    print(f"dense_check {experiment}/{config}/seed{cfg.seed}: P={num_params} dense {t_dense:.1f}s eig {t_eig:.1f}s "
          f"lambda in [{check.lambda_min:.4g}, {check.lambda_max:.4g}]", flush=True)
    return {"experiment": experiment, "config": config, "seed": cfg.seed, "status": "checked", "num_params": num_params,
            "num_examples": sum(int(b[0].shape[0]) for b in batches), "dense_dtype": cfg.dtype, "estimator_settings": used,
            "check": check.to_dict(), "timings_s": {"dense_hessian": t_dense, "eigenvalues": t_eig}}


def _fmt_settings(s: Mapping[str, Any]) -> str:
    return (f"top_k={s.get('top_k')}, bottom_k={s.get('bottom_k')}, eig_tol={s.get('eig_tol')}; {s.get('trace_method')} "
            f"{s.get('trace_matvecs')} matvecs; SLQ {s.get('slq_probes')} probes x {s.get('slq_steps')} steps; "
            f"eps = {s.get('logdet_eps_relative')} lambda_max; {s.get('dtype')}, bn {s.get('bn_mode')}")


def table_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of :data:`TABLE_COLUMNS` per checked run."""
    rows = []
    for r in results:
        if r.get("status") != "checked":
            continue
        c = r["check"]
        top, bottom, tr = c.get("top") or {}, c.get("bottom") or {}, c.get("trace") or {}
        slq, ld = c.get("slq") or {}, c.get("logdet") or {}
        rows.append({"run": f"{r['experiment']}/{r['config']}/seed{r['seed']}", "num_params": r["num_params"],
                     "w1_slq": slq.get("w1", math.nan), "w1_over_width": slq.get("w1_over_width", math.nan),
                     "top_k": top.get("k", 0), "top_max_rel_error": top.get("max_rel_error", math.nan),
                     "top_within_bound": top.get("all_within_bound"),
                     "top_excess_over_lambda_max": top.get("max_excess", math.nan) / abs(c["lambda_max"]), "bottom_k": bottom.get("k", 0),
                     "bottom_max_rel_error": bottom.get("max_rel_error", math.nan), "bottom_within_bound": bottom.get("all_within_bound"),
                     "bottom_excess_over_lambda_max": bottom.get("max_excess", math.nan) / abs(c["lambda_max"]),
                     "trace_rel_error": tr.get("rel_error", math.nan), "trace_within_interval": tr.get("within_interval"),
                     "logdet_curvature_rel_error": ld.get("rel_error", math.nan), "logdet_within_interval": ld.get("within_interval"),
                     "lambda_min": c["lambda_min"], "lambda_max": c["lambda_max"], "negative_fraction": c["negative_fraction"],
                     "settings": _fmt_settings(r["estimator_settings"])})
    return rows


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Check every run of ``dense_check.runs``; write ``dense_check/{results,metrics}.json``."""
    started = time.perf_counter()
    cfg = load_config(params)
    runtime = configure_torch()
    results = [check_run(params, layout, exp, name, cfg) for exp, name in (entry.split("/") for entry in cfg.runs)]
    rows = table_rows(results)
    settings = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    write_json(layout.results("dense_check"), {"profile": params.get("profile"), "settings": settings, "runtime": runtime,
                                               "runs": results, "table": rows, "wall_time_s": time.perf_counter() - started})
    write_json(layout.metrics("dense_check"), {"table": rows})
    print(f"dense_check: {len(rows)} runs, {time.perf_counter() - started:.1f} s")
    return {"runs": results, "table": rows}
