"""class_structure stage: top-k spectra of the GGN and the Hessian, and the curvature diagonals.

Part 1, the class structure (Papyan 2019, 2020; :mod:`landscape.curvature.class_structure`):
for each ``<experiment>/<config>`` of ``spectrum_runs`` and each seed of ``spectrum_seeds``,
the top ``top_k`` eigenpairs of the GGN ``G`` and of the Hessian ``H`` by thick-restart
Lanczos on the measure stage's probe data, loss and ``bn_mode`` (``curvature.<experiment>``),
with their Ritz residual bounds, the products spent and the Lanczos basis memory
(:func:`~landscape.curvature.lanczos.lanczos_basis_bytes`); the spike count of each against
C - 1 and the gap tests at ranks ``C - 1`` and ``C^2 - 1`` (the end of the C(C - 1) tier).
The measure stage keeps ``top_k`` = 20 for every run; k = 100 runs here only, on a few runs.

Part 2, the diagonals (:mod:`landscape.curvature.diagonals`): for every config of
``diag_experiment`` (the batch-size sweep) and each seed of ``diag_seeds``, on the first
``diag_examples`` probe examples, eval-mode BatchNorm: exact ``diag(Sigma)`` (the centred
gradient covariance), ``diag(F_emp)`` (the empirical Fisher) and ``diag(G)``, each with its
sampling standard error over examples, and ``diag(H)`` by Hutchinson probes with ``G`` as
control variate and its standard error over probes; then every pair's relative errors and
correlations (Kunstner et al. 2019: ``F_emp`` vs ``G``; the second plan's ``C ~ diag(H)``),
summarised per config over seeds with t intervals (Fisher z for correlations).

Writes ``class_structure/results.json`` (every run with settings and timings),
``class_structure/metrics.json`` (the two summary tables) and
``class_structure/spectra/<experiment>/<config>/seed<k>.npz`` (``ggn``, ``hessian``: top-k
Ritz values, descending; ``ggn_bounds``, ``hessian_bounds``: their residual bounds).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from landscape.curvature.class_structure import class_structure
from landscape.curvature.diagonals import compare_diagonals, gradient_diagonals, hutchinson_diagonal
from landscape.curvature.lanczos import Eigenpairs, lanczos_basis_bytes, top_eigenpairs
from landscape.curvature.operators import GGNOperator, HessianOperator
from landscape.io import atomic_path, write_json
from landscape.pipeline.dense_check import _probe_batches
from landscape.pipeline.layout import Layout
from landscape.pipeline.measure import DTYPES, CurvatureConfig
from landscape.pipeline.params import group_seeds, section
from landscape.pipeline.runs import load_run
from landscape.pipeline.runtime import configure_torch
from landscape.schema import Checked, ConfigError, int_at_least, parse_config, rule
from landscape.stats.class_structure import correlation_interval, count_test, mean_interval

__all__ = ["ClassStructureConfig", "DIAGONALS", "PAIRS", "load_config", "spectrum_run", "diagonal_run", "summarise", "run"]

DIAGONALS = ("covariance", "empirical_fisher", "ggn", "hessian")
"""Diagonals compared: diag(Sigma) (centred gradient covariance), diag(F_emp), diag(G), diag(H)."""

PAIRS = (("covariance", "hessian"), ("covariance", "ggn"), ("empirical_fisher", "ggn"), ("empirical_fisher", "hessian"),
         ("ggn", "hessian"))
"""(approximation, reference) pairs of the diagonal comparison."""

_RUNS = rule("a non-empty list of '<experiment>/<config>'",
             lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) and v.count("/") == 1 for v in x))
_SEEDS = rule("a non-empty list of ints >= 0",
              lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, int) and v >= 0 for v in x))
_CONFIGS = rule("'all' or a non-empty list of config names",
                lambda x: x == "all" or (isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) for v in x)))


@dataclass(frozen=True)
class ClassStructureConfig(Checked):
    """Settings of the class_structure stage (``class_structure`` in params.yaml).

    Attributes:
        spectrum_runs: ``<experiment>/<config>`` whose G and H top-k spectra are computed.
        spectrum_seeds: their training seeds.
        top_k: eigenpairs of each of G and H (the spike rule reads up to ``top_k - edge_points``
            spikes; the C(C - 1) tier's end at rank ``C^2 - 1`` needs ``top_k >= C^2 - 1 + edge_points``).
        eig_tol: relative Ritz residual tolerance of the top-k Lanczos.
        max_matvecs: product budget of each top-k Lanczos (unconverged pairs are reported
            with ``converged = false`` and their residual bounds).
        num_classes: C.
        edge_points: eigenvalues in the edge regressions of the spike and tier tests.
        diag_experiment: the group whose configs are compared (the batch-size sweep).
        diag_configs: ``all`` or a list of its configs.
        diag_seeds: seeds of the diagonal comparison.
        diag_examples: the first probe examples the diagonals are taken over.
        diag_probes: Hutchinson probes of diag(H) (each one H and one G product).
        chunk_size: examples per vectorised per-example gradient pass.
        ci_level: level of the t and Wilson intervals.
        dtype: precision of the products (``float32`` or ``float64``).
    """

    spectrum_runs: tuple[str, ...] = field(default=(), metadata=_RUNS)
    spectrum_seeds: tuple[int, ...] = field(default=(0,), metadata=_SEEDS)
    top_k: int = field(default=100, metadata=int_at_least(6))
    eig_tol: float = field(default=1e-3, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    max_matvecs: int = field(default=1000, metadata=int_at_least(2))
    num_classes: int = field(default=10, metadata=int_at_least(2))
    edge_points: int = field(default=5, metadata=int_at_least(3))
    diag_experiment: str = field(default="h1_batch", metadata=rule("a group name", lambda x: isinstance(x, str) and x != ""))
    diag_configs: Any = field(default="all", metadata=_CONFIGS)
    diag_seeds: tuple[int, ...] = field(default=(0,), metadata=_SEEDS)
    diag_examples: int = field(default=500, metadata=int_at_least(3))
    diag_probes: int = field(default=20, metadata=int_at_least(2))
    chunk_size: int = field(default=64, metadata=int_at_least(1))
    ci_level: float = field(default=0.95, metadata=rule("a float in (0, 1)", lambda x: isinstance(x, float) and 0 < x < 1))
    dtype: str = field(default="float32", metadata=rule(f"one of {list(DTYPES)}", lambda x: x in DTYPES))

    def _extra_checks(self) -> None:
        if self.edge_points >= self.top_k:
            raise ConfigError(f"ClassStructureConfig.edge_points={self.edge_points} must be < top_k={self.top_k}")
        if self.max_matvecs < self.top_k:
            raise ConfigError(f"ClassStructureConfig.max_matvecs={self.max_matvecs} must be >= top_k={self.top_k}")


def diag_configs(params: Mapping[str, Any], cfg: ClassStructureConfig) -> list[str]:
    """The compared configs of ``diag_experiment``, in params order."""
    have = list(((params.get("experiments") or {}).get(cfg.diag_experiment) or {}).get("configs") or {})
    return have if cfg.diag_configs == "all" else list(cfg.diag_configs)


def load_config(params: Mapping[str, Any]) -> ClassStructureConfig:
    """The ``class_structure`` section, validated against the experiments, curvature entries and seeds.

    Raises:
        ConfigError: a bad setting, a run or config that does not exist or is not measured, or a
            seed that is not one of its group's seeds.
    """
    cfg = parse_config(ClassStructureConfig, section(params, "class_structure"), "class_structure")
    experiments, curvature = params.get("experiments") or {}, params.get("curvature") or {}
    for entry in cfg.spectrum_runs:
        exp, name = entry.split("/")
        if name not in ((experiments.get(exp) or {}).get("configs") or {}):
            raise ConfigError(f"class_structure.spectrum_runs names {entry!r}, which is not an <experiment>/<config> of experiments")
        if exp not in curvature:
            raise ConfigError(f"class_structure.spectrum_runs names {entry!r}, but {exp!r} has no curvature entry (its probe "
                              "data and bn_mode are read there)")
        bad = [s for s in cfg.spectrum_seeds if s not in group_seeds(params, exp)]
        if bad:
            raise ConfigError(f"class_structure.spectrum_seeds has {bad}, not seeds of {exp!r}: {group_seeds(params, exp)}")
    group = cfg.diag_experiment
    if group not in experiments or group not in curvature:
        raise ConfigError(f"class_structure.diag_experiment={group!r} is not a measured experiment; measured: {sorted(curvature)}")
    missing = [c for c in diag_configs(params, cfg) if c not in (experiments[group].get("configs") or {})]
    if missing:
        raise ConfigError(f"class_structure.diag_configs names {missing}, not configs of {group!r}")
    bad = [s for s in cfg.diag_seeds if s not in group_seeds(params, group)]
    if bad:
        raise ConfigError(f"class_structure.diag_seeds has {bad}, not seeds of {group!r}: {group_seeds(params, group)}")
    return cfg


Batch = tuple[torch.Tensor, torch.Tensor]


def _inputs(params: Mapping[str, Any], layout: Layout, experiment: str, config: str, seed: int, cfg: ClassStructureConfig,
            examples: int | None = None) -> tuple[torch.nn.Module | None, list[Batch], CurvatureConfig, str]:
    curv = parse_config(CurvatureConfig, section(params, "curvature", experiment), f"curvature.{experiment}")
    stored = load_run(layout, experiment, config, seed)
    dtype = DTYPES[cfg.dtype]
    batches = _probe_batches(params, layout, experiment, curv)
    if examples is not None:
        x, y = torch.cat([b[0] for b in batches])[:examples], torch.cat([b[1] for b in batches])[:examples]
        batches = [(x[i : i + curv.batch_size], y[i : i + curv.batch_size]) for i in range(0, x.shape[0], curv.batch_size)]
    batches = [(x.to(dtype) if x.is_floating_point() else x, y) for x, y in batches]
    model = stored.model.to(dtype) if stored.model is not None else None
    return model, batches, curv, stored.status


def _pairs(eig: Eigenpairs, dtype: torch.dtype) -> dict[str, Any]:
    """Ritz values with absolute residual bounds ``r_i max(|theta_i|, u^(1/4) max_j |theta_j|)``: the Lanczos
    relative residuals times their denominator, with ``max_j |theta_j|`` for the solver's estimate of ||A||."""
    theta = eig.values.double()
    denom = torch.maximum(theta.abs(), torch.finfo(dtype).eps ** 0.25 * theta.abs().max())
    return {"values": theta.tolist(), "residual_bounds": (eig.residuals.double() * denom).tolist(),
            "relative_residuals": eig.residuals.double().tolist(), "num_matvecs": eig.num_matvecs,
            "num_restarts": eig.num_restarts, "converged": bool(eig.converged)}


def spectrum_run(params: Mapping[str, Any], layout: Layout, experiment: str, config: str, seed: int,
                 cfg: ClassStructureConfig) -> dict[str, Any]:
    """Top-k of G and H of one run, their class-structure tests; writes the run's ``.npz``."""
    model, batches, curv, status = _inputs(params, layout, experiment, config, seed, cfg)
    head = {"experiment": experiment, "config": config, "seed": seed}
    if model is None:
        return {**head, "status": f"skipped: run {status}"}
    out: dict[str, Any] = {**head, "status": "measured", "num_examples": sum(int(b[0].shape[0]) for b in batches),
                           "bn_mode": curv.bn_mode}
    arrays: dict[str, np.ndarray] = {}
    for name, cls in (("ggn", GGNOperator), ("hessian", HessianOperator)):
        started = time.perf_counter()
        op = cls(model, F.cross_entropy, batches, bn_mode=curv.bn_mode)
        P = op.shape[0]
        k = min(cfg.top_k, P - 1)
        eig = top_eigenpairs(op, k=k, which="LA", tol=cfg.eig_tol, seed=seed, verify=False, check_multiplicity=False,
                             max_matvecs=cfg.max_matvecs)
        pairs = _pairs(eig, op.dtype)
        pairs["wall_time_s"] = time.perf_counter() - started
        pairs["basis_bytes"] = lanczos_basis_bytes(P, k, itemsize=torch.finfo(op.dtype).bits // 8)
        pairs["structure"] = class_structure(eig.values, cfg.num_classes, cfg.edge_points).to_dict()
        out[name] = pairs
        out["num_params"] = P
        arrays[name] = np.asarray(pairs["values"])
        arrays[f"{name}_bounds"] = np.asarray(pairs["residual_bounds"])
    with atomic_path(layout.class_structure_spectrum(experiment, config, seed)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle
    g, h = out["ggn"]["structure"], out["hessian"]["structure"]
    print(f"class_structure {experiment}/{config}/seed{seed}: P={out['num_params']} k={cfg.top_k} spikes G={g['num_spikes']} "
          f"H={h['num_spikes']} products G={out['ggn']['num_matvecs']} H={out['hessian']['num_matvecs']} "
          f"({out['ggn']['wall_time_s'] + out['hessian']['wall_time_s']:.1f}s)", flush=True)
    return out


def diagonal_run(params: Mapping[str, Any], layout: Layout, config: str, seed: int, cfg: ClassStructureConfig) -> dict[str, Any]:
    """The four diagonals of one run of ``diag_experiment`` with their errors, and every pair's comparison."""
    exp = cfg.diag_experiment
    model, batches, _, status = _inputs(params, layout, exp, config, seed, cfg, cfg.diag_examples)
    head = {"experiment": exp, "config": config, "seed": seed}
    if model is None:
        return {**head, "status": f"skipped: run {status}"}
    started = time.perf_counter()
    exact = gradient_diagonals(model, F.cross_entropy, batches, chunk_size=cfg.chunk_size)
    t_exact = time.perf_counter() - started
    hess = HessianOperator(model, F.cross_entropy, batches, bn_mode="eval")
    ggn = GGNOperator(model, F.cross_entropy, batches, bn_mode="eval")
    est = hutchinson_diagonal(hess, cfg.diag_probes, seed=seed, control=ggn, control_diagonal=exact.ggn)
    t_h = time.perf_counter() - started - t_exact
    diags = {"covariance": (exact.covariance, exact.covariance_stderr), "empirical_fisher": (exact.empirical_fisher,
             exact.empirical_fisher_stderr), "ggn": (exact.ggn, exact.ggn_stderr), "hessian": (est.values, est.stderr)}
    # the sampling errors over examples are shared by all four (one data set): only diag(H)'s probe noise enters the
    # comparisons; the sampling errors are reported beside them
    noise = {"hessian": est.stderr}
    comparisons = {f"{a}_vs_{b}": compare_diagonals(diags[a][0], diags[b][0], a_stderr=noise.get(a), b_stderr=noise.get(b)).to_dict()
                   for a, b in PAIRS}
    summary = {}
    for name, (value, se) in diags.items():
        v, s = value.double(), se.double()
        norm = float(v.norm())
        summary[name] = {"norm": norm, "sum": float(v.sum()), "mean_stderr": float(s.mean()),
                         "relative_stderr": float(s.norm()) / norm if norm > 0 else math.nan,
                         "negative_fraction": float((v < 0).double().mean())}
    print(f"class_structure diagonals {exp}/{config}/seed{seed}: corr(Sigma, H)={comparisons['covariance_vs_hessian']['spearman']:.3f} "
          f"corr(F_emp, G)={comparisons['empirical_fisher_vs_ggn']['spearman']:.3f} ({time.perf_counter() - started:.1f}s)", flush=True)
    return {**head, "status": "measured", "num_examples": exact.num_examples, "num_params": int(exact.ggn.numel()),
            "diagonals": summary, "comparisons": comparisons,
            "hessian_estimator": {"method": est.method, "num_probes": est.num_probes, "num_matvecs": est.num_matvecs},
            "per_sample_passes": exact.per_sample_passes, "timings_s": {"exact_diagonals": t_exact, "hessian_diagonal": t_h}}


def summarise(spectra: Sequence[Mapping[str, Any]], diagonals: Sequence[Mapping[str, Any]],
              cfg: ClassStructureConfig) -> dict[str, list[dict[str, Any]]]:
    """The two tables of ``metrics.json``: ``spike_counts`` (per run group and operator: the
    count test against C - 1 and the tier gaps) and ``diagonals`` (per config and pair)."""
    C = cfg.num_classes
    rows = []
    done = [r for r in spectra if r.get("status") == "measured"]
    for (exp, name), group in itertools.groupby(done, key=lambda r: (r["experiment"], r["config"])):
        runs = list(group)
        for op in ("ggn", "hessian"):
            st = [r[op]["structure"] for r in runs]
            rows.append({"run": f"{exp}/{name}", "operator": op, "num_params": runs[0]["num_params"], "k": st[0]["k"],
                         "seeds": [r["seed"] for r in runs], "num_classes": C,
                         "count_test": count_test([s["num_spikes"] for s in st], C - 1, cfg.ci_level),
                         "outlier_gap_separated": sum(bool(s["outliers"]["separated"]) for s in st),
                         "outlier_gap_ratio": mean_interval([s["outliers"]["ratio"] for s in st], cfg.ci_level),
                         "tier_rank": C * C - 1, "tier_status": st[0]["cross_class"]["status"],
                         "tier_gap_separated": sum(bool(s["cross_class"]["separated"]) for s in st),
                         "tier_gap_ratio": mean_interval([s["cross_class"]["ratio"] for s in st], cfg.ci_level),
                         "matvecs_mean": float(np.mean([r[op]["num_matvecs"] for r in runs])),
                         "converged": sum(bool(r[op]["converged"]) for r in runs),
                         "basis_bytes": runs[0][op]["basis_bytes"],
                         "wall_time_s_mean": float(np.mean([r[op]["wall_time_s"] for r in runs]))})
    table = []
    measured = [r for r in diagonals if r.get("status") == "measured"]
    for config, group in itertools.groupby(measured, key=lambda r: r["config"]):
        runs = list(group)
        for a, b in PAIRS:
            comps = [r["comparisons"][f"{a}_vs_{b}"] for r in runs]
            table.append({"config": config, "approximation": a, "reference": b, "n_seeds": len(runs),
                          "relative_error": mean_interval([c["relative_error"] for c in comps], cfg.ci_level),
                          "relative_error_denoised": mean_interval([c["relative_error_denoised"] for c in comps], cfg.ci_level),
                          "scaled_relative_error": mean_interval([c["scaled_relative_error"] for c in comps], cfg.ci_level),
                          "scale": mean_interval([c["scale"] for c in comps], cfg.ci_level),
                          "pearson": correlation_interval([c["pearson"] for c in comps], cfg.ci_level),
                          "pearson_corrected": correlation_interval([c["pearson_corrected"] for c in comps], cfg.ci_level),
                          "spearman": correlation_interval([c["spearman"] for c in comps], cfg.ci_level),
                          "hessian_relative_stderr": mean_interval([r["diagonals"]["hessian"]["relative_stderr"] for r in runs],
                                                                   cfg.ci_level)["mean"]})
    return {"spike_counts": rows, "diagonals": table}


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Both parts over every run; write ``class_structure/{results,metrics}.json``."""
    started = time.perf_counter()
    cfg = load_config(params)
    runtime = configure_torch()
    spectra = [spectrum_run(params, layout, exp, name, seed, cfg)
               for exp, name in (e.split("/") for e in cfg.spectrum_runs) for seed in cfg.spectrum_seeds]
    t_spectra = time.perf_counter() - started
    diagonals = [diagonal_run(params, layout, config, seed, cfg) for config in diag_configs(params, cfg) for seed in cfg.diag_seeds]
    tables = summarise(spectra, diagonals, cfg)
    wall = time.perf_counter() - started
    settings = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    write_json(layout.results("class_structure"), {"profile": params.get("profile"), "settings": settings, "runtime": runtime,
                                                   "spectrum_runs": spectra, "diagonal_runs": diagonals, **tables,
                                                   "timings_s": {"spectra": t_spectra, "diagonals": wall - t_spectra, "total": wall}})
    write_json(layout.metrics("class_structure"), tables)
    print(f"class_structure: {len(spectra)} spectra, {len(diagonals)} diagonal runs, {wall:.1f} s")
    return tables
