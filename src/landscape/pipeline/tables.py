"""Table readers: stage outputs under a :class:`~landscape.pipeline.layout.Layout` -> DataFrames.

Every reader takes the layout and the params-derived settings it needs (experiment groups,
seeds, config assignments) and returns a :class:`pandas.DataFrame` or a small frozen
dataclass of them; every path comes from the layout. The statistics
(:mod:`landscape.stats`) work on these tables and never read a file. Notebooks read their
inputs through :func:`require` (and the readers below), so a missing input fails the render
with the path it looked for and the stage that writes it.

Missing inputs: the hypotheses, Phi and spectra readers skip what is absent (their tests
record ``not tested: input missing``); :func:`optimizer_runs` needs every run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from landscape.pipeline.depth import model_depth
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import replication_split, seeds_of
from landscape.schema import ConfigError

if TYPE_CHECKING:  # imported where used: every report page imports this module, few need torch or the statistics
    import torch

    from landscape.stats.family import Tables

__all__ = [
    "require",
    "read_json",
    "read_tsv",
    "hypothesis_tables",
    "OptimizerRuns",
    "CURVE_METRICS",
    "optimizer_runs",
    "measured_spectra",
    "scaling_runs",
    "density_inputs",
    "gradient_noise_runs",
    "data_dims",
    "phi_inputs",
    "curvature_files",
    "run_metrics",
    "logged_curves",
    "bounds_files",
    "class_structure_results",
    "class_structure_spectrum",
    "dense_check_results",
    "dense_spectrum",
    "along_training_runs",
]


# ------------------------------------------------------------------ reading one file


def require(path: str | Path, stage: str) -> Path:
    """``path`` if it is a file, else FileNotFoundError naming it and the stage that writes it.

    Args:
        path: An input file (from the layout).
        stage: The ``dvc.yaml`` stage that writes it (``dvc repro <stage>`` makes it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing; it is written by the {stage!r} stage (run `dvc repro {stage}`)")
    return p


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A DVCLive log (tab-separated, header row), or None when absent or empty."""
    if not path.is_file():
        return None
    df = pd.read_csv(path, sep="\t")
    return df if len(df) else None


def _number(x: Any) -> float:
    """``x`` as a float when it is a (non-bool) number, else NaN."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _float(x: Any) -> float:
    """``float(x)``, NaN when it cannot be converted."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# ------------------------------------------------------------------ hypotheses


def hypothesis_tables(layout: Layout, experiments: Mapping[str, Any], seeds: Sequence[int]) -> Tables:
    """Every stage output the hypotheses read, for the configs of ``experiments``.

    Reads, when present: each run's ``metrics.json``, its ``curvature.json`` (status
    ``measured``) and ``bounds.json`` (status ``bounded``; :meth:`Layout.bounds_run`), each
    config's probe ``results.json`` (barriers, sharpness) and ``metrics.json`` (invariance
    audit), and the escape stage's ``trials.json``. Runs with random labels (the bounds
    study's memorisation control) are left out.

    Args:
        layout: The artifact tree.
        experiments: ``params["experiments"]`` (configs give batch size, skip, norm and the depth of
            :func:`landscape.pipeline.depth.model_depth`).
        seeds: The seeds of the sweep.
    """
    from landscape.stats.family import Tables

    found = {"runs": 0, "curvature": 0, "bounds": 0, "probes": 0, "escape_trials": 0}
    rows, barrier_rows = [], []
    invariance: dict[str, Any] = {}
    for exp, spec in experiments.items():
        for cfg, values in spec["configs"].items():
            model, train = values.get("model", {}), values.get("train", {})
            if train.get("random_labels"):
                continue
            probe = read_json(layout.probe_results(exp, cfg))
            found["probes"] += probe is not None
            probe_metrics = read_json(layout.probe_metrics(exp, cfg)) or {}
            if not invariance and isinstance(probe_metrics.get("invariance"), Mapping):
                invariance = {"experiment": exp, "config": cfg, **probe_metrics["invariance"]}
            for seed in seeds_of(spec, seeds):
                metrics = read_json(layout.run(exp, cfg, seed).metrics)
                if metrics is None:
                    continue
                found["runs"] += 1
                row: dict[str, Any] = {
                    "experiment": exp, "config": cfg, "seed": seed, "status": metrics.get("status"),
                    "batch_size": train.get("batch_size"), "skip": model.get("skip"), "norm": model.get("norm", "none"),
                    "model": model.get("name"), "depth": model_depth(model), "width": model.get("width"),
                    "lr": train.get("lr"),
                    **{k: _number(metrics.get(k)) for k in ("test_error", "train_loss", "gen_gap", "train_error", "num_params")},
                }
                along = metrics.get("along_training")
                if isinstance(along, Mapping):  # train-to-target runs: the stop and lambda_max there
                    row.update(hit_cap=along.get("hit_cap"), reached_target=along.get("reached"),
                               stop_step=_number(along.get("stop_step")), lambda_max_final=_number(along.get("lambda_max_final")))
                curv = read_json(layout.curvature(exp, cfg, seed))
                if curv is not None and curv.get("status") == "measured":
                    found["curvature"] += 1
                    noise = curv.get("noise") or {}
                    row.update(lambda_max=_number(curv.get("lambda_max")), trace=_number(curv.get("trace")),
                               lambda_min=_number(curv.get("lambda_min")), spectral_norm=_number(curv.get("spectral_norm")),
                               negative_mass=_number((curv.get("negative_mass") or {}).get("below_zero")),
                               logdet=_number(curv.get("logdet")), logdet_curvature=_number(curv.get("logdet_curvature")),
                               outlier_count=_number((curv.get("rmt") or {}).get("outlier_count")),
                               kappa=_number(noise.get("kappa")), difficulty_index=_number(noise.get("difficulty_index")))
                bnd = read_json(layout.bounds_run(exp, cfg, seed))
                if bnd is not None and bnd.get("status") == "bounded":
                    found["bounds"] += 1
                    row.update({f"bound_{k}": _number(v) for k, v in (bnd.get("bounds") or {}).items()})
                sharp = ((probe or {}).get("sharpness") or {}).get("seeds", {}).get(f"seed{seed}", {})
                row.update({f"sharpness_{k}": _number(v.get("value")) for k, v in sharp.items() if isinstance(v, Mapping)})
                rows.append(row)
            pairs = ((probe or {}).get("barriers") or {}).get("pairs") or {}
            for key, entry in pairs.items():
                barrier_rows.append({"experiment": exp, "config": cfg, "pair": key, "skip": model.get("skip"),
                                     "norm": model.get("norm", "none"), "depth": model_depth(model),
                                     **{f"barrier_{s}": _number(((entry.get(s) or {}).get("raw") or {}).get("barrier"))
                                        for s in ("train", "test")}})
    trials = read_json(layout.escape_trials)
    escape = pd.DataFrame((trials or {}).get("trials", []))
    if "alignment" in escape:  # share of noise energy in the top-k subspace, in percentage points
        escape["alignment_pct"] = 100.0 * escape["alignment"]
    found["escape_trials"] = len(escape)
    split = {exp: replication_split({"experiments": experiments, "seeds": list(seeds)}, exp) for exp in experiments}
    return Tables(runs=pd.DataFrame(rows), barriers=pd.DataFrame(barrier_rows), escape=escape, invariance=invariance, found=found,
                  seed_split=split, primary_seeds=tuple(int(s) for s in seeds))


# ------------------------------------------------------------------ optimizers

CURVE_METRICS = ("test_error", "train_loss")
_STATUSES = ("completed", "diverged")
_CURVATURE_OPTIMIZERS = ("curvature_adaptive", "hybrid")


@dataclass(frozen=True)
class OptimizerRuns:
    """The runs of one optimizer comparison.

    Attributes:
        runs: One row per (config, seed): config, level, optimizer, lr, seed, status,
            test_error (NaN unless completed), steps, diverged_step, epochs_completed,
            seconds (sum of the logged ``epoch_time_s``), hvps (last ``hvps_total``; 0 for
            the plain optimizers, NaN for a curvature-aware run with no epoch logged).
        curves: One row per (config, seed, metric, epoch) with ``value``
            (metrics :data:`CURVE_METRICS`; ``epoch`` counts from 1).
    """

    runs: pd.DataFrame
    curves: pd.DataFrame


def optimizer_runs(
    layout: Layout,
    experiment: str,
    assignment: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
) -> OptimizerRuns:
    """Read every (config, seed) run of ``experiment``: ``metrics.json`` and the DVCLive logs.

    Args:
        layout: The artifact tree.
        experiment: Experiment group name.
        assignment: Config -> ``{"level", "optimizer", "lr"}``
            (:meth:`landscape.pipeline.optimizers.OptimizersConfig.assign`).
        seeds: Seeds of the sweep.

    Raises:
        FileNotFoundError: A run's ``metrics.json`` is missing (the stage depends on every
            run, so a missing one is an error, not a run to leave out).
        ValueError: A run's status is neither ``completed`` nor ``diverged``.
    """
    rows, curves = [], []
    for config, info in assignment.items():
        for seed in seeds:
            run = layout.run(experiment, config, seed)
            path = run.metrics
            if not path.is_file():
                raise FileNotFoundError(f"run {experiment}/{config}/seed{seed} has no {path}; run `dvc repro train_{experiment}` first")
            m = json.loads(path.read_text(encoding="utf-8"))
            status = m.get("status")
            if status not in _STATUSES:
                raise ValueError(f"{path}: status {status!r} is not one of {list(_STATUSES)}")
            times = read_tsv(run.logged("epoch_time_s"))
            hvps = read_tsv(run.logged("hvps_total"))
            if hvps is not None:
                n_hvps = float(hvps["hvps_total"].iloc[-1])
            else:  # plain optimizers log none; a curvature-aware run with no epoch logged has no count
                n_hvps = 0.0 if info["optimizer"] not in _CURVATURE_OPTIMIZERS else math.nan
            rows.append({
                "config": config, **dict(info), "seed": int(seed), "status": status,
                "test_error": float(m["test_error"]) if status == "completed" else math.nan,
                "steps": int(m.get("steps") or 0),
                "diverged_step": m.get("diverged_step"),
                "epochs_completed": int(m.get("epochs_completed") or 0),
                "seconds": float(times["epoch_time_s"].sum()) if times is not None else math.nan,
                "hvps": n_hvps,
            })
            for metric in CURVE_METRICS:
                df = read_tsv(run.logged(metric))
                if df is None:
                    continue
                for step, value in zip(df["step"], df[metric], strict=True):
                    curves.append({"config": config, "seed": int(seed), "metric": metric, "epoch": int(step) + 1, "value": float(value)})
    return OptimizerRuns(pd.DataFrame(rows), pd.DataFrame(curves, columns=["config", "seed", "metric", "epoch", "value"]))


# ------------------------------------------------------------------ spectra and scaling


def _load_krylov(path: Path) -> dict[str, torch.Tensor]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def measured_spectra(layout: Layout, experiments: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """One row per measured run with a ``krylov.pt``, every group, config and seed.

    Columns: experiment, config, seed, num_params (d), top_k, lambda_max, eigenvalues
    (the top-k Ritz values, descending), slq_alphas, slq_betas (SLQ tridiagonals, tensors),
    residual_bounds (of the Ritz values, or None), sigma_broadening (of the SLQ density, NaN if absent).
    """
    rows = []
    for exp, block in experiments.items():
        for name in block.get("configs", {}):
            for seed in seeds_of(block, seeds):
                curv = read_json(layout.curvature(exp, name, seed))
                krylov = layout.krylov(exp, name, seed)
                if curv is None or curv.get("status") != "measured" or not krylov.is_file():
                    continue
                kry = _load_krylov(krylov)
                rows.append({"experiment": exp, "config": name, "seed": seed, "num_params": int(curv["operator"]["num_params"]),
                             "top_k": len(curv["eigenvalues"]["values"]), "lambda_max": _float(curv.get("lambda_max")),
                             "eigenvalues": curv["eigenvalues"]["values"], "slq_alphas": kry["slq_alphas"], "slq_betas": kry["slq_betas"],
                             "residual_bounds": curv["eigenvalues"].get("residual_bounds"),
                             "sigma_broadening": _float((curv.get("density") or {}).get("sigma_broadening"))})
    return pd.DataFrame(rows)


def scaling_runs(layout: Layout, experiment: str, configs: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """One row per measured (config, seed) of the width x depth grid, trained and at init.

    Columns: config, width, depth, seed, ``trained.spectral_norm`` (``||H||_2 =
    max(|lambda_max|, |lambda_min|)``), ``trained.lambda_max``, ``trained.trace``,
    ``at_init.spectral_norm``, ``at_init.lambda_max``, ``at_init.trace``, ``at_init.bulk_sigma2`` (NaN unless the
    initial bulk fit succeeded), ``at_init.outlier_count`` (NaN when only a lower bound).

    Raises:
        ConfigError: A config's model has no ``width`` or ``depth``.
    """
    rows = []
    for name, conf in configs.items():
        model = conf.get("model", {})
        depth = model_depth(model) if model.get("depth") is not None else None  # the grid states its depths
        if "width" not in model or depth is None:
            raise ConfigError(f"experiments.{experiment}.configs.{name}.model needs width and depth for the scaling fit")
        for seed in seeds:
            curv = read_json(layout.curvature(experiment, name, seed))
            if curv is None or curv.get("status") != "measured":
                continue
            init = curv.get("at_init") or {}
            rmt = init.get("rmt") or {}
            ok_init = rmt.get("status") == "ok" and "bulk_sigma" in rmt
            rows.append({"config": name, "width": float(model["width"]), "depth": float(depth), "seed": seed,
                         "trained.spectral_norm": _float(curv.get("spectral_norm")),
                         "trained.lambda_max": _float(curv.get("lambda_max")), "trained.trace": _float(curv.get("trace")),
                         "at_init.spectral_norm": _float(init.get("spectral_norm")),
                         "at_init.lambda_max": _float(init.get("lambda_max")), "at_init.trace": _float(init.get("trace")),
                         "at_init.bulk_sigma2": _float(rmt.get("bulk_sigma")) ** 2 if ok_init else float("nan"),
                         "at_init.outlier_count": (_float(rmt.get("outlier_count"))
                                                   if ok_init and not rmt.get("outlier_count_is_lower_bound")
                                                   else float("nan"))})
    return pd.DataFrame(rows)


def density_inputs(layout: Layout, experiment: str, config: str, seed: int) -> dict[str, Any]:
    """What a density figure of one measured run needs: ``eigenvalues`` (top-k), ``num_params``,
    ``sigma_broadening``, and from ``krylov.pt`` ``slq_alphas``, ``slq_betas``, ``density_grid``
    and ``density`` (float64 numpy arrays for the last two)."""
    curv = json.loads(require(layout.curvature(experiment, config, seed), f"measure_{experiment}").read_text(encoding="utf-8"))
    kry = _load_krylov(require(layout.krylov(experiment, config, seed), f"measure_{experiment}"))
    return {"eigenvalues": curv["eigenvalues"]["values"], "num_params": int(curv["operator"]["num_params"]),
            "sigma_broadening": float(curv["density"]["sigma_broadening"]), "slq_alphas": kry["slq_alphas"], "slq_betas": kry["slq_betas"],
            "density_grid": kry["density_grid"].double().numpy(), "density": kry["density"].double().numpy()}


def gradient_noise_runs(layout: Layout, experiment: str, configs: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """One row per run of ``experiment`` with gradient-noise figures in its ``curvature.json``.

    Columns: config, batch_size, seed, pearson_covariance, pearson_p, spearman_covariance,
    spearman_p (correlations of diag(C) with diag(H) and their p-values), energy_rank_90,
    stable_rank_gradients, stable_rank_covariance, num_examples, num_params.
    """
    rows = []
    for name, conf in configs.items():
        batch: Any = (conf.get("train") or {}).get("batch_size")  # as written in params.yaml
        for seed in seeds:
            curv = read_json(layout.curvature(experiment, name, seed))
            noise = (curv or {}).get("noise")
            if not noise:
                continue
            corr = noise.get("diag_correlation") or {}
            pv = corr.get("pvalues") or {}
            rows.append({"config": name, "batch_size": float(batch), "seed": seed,
                         "pearson_covariance": _float(corr.get("pearson_covariance")), "pearson_p": _float(pv.get("pearson_covariance")),
                         "spearman_covariance": _float(corr.get("spearman_covariance")),
                         "spearman_p": _float(pv.get("spearman_covariance")),
                         "energy_rank_90": _float(noise.get("energy_rank_90")),
                         "stable_rank_gradients": _float(noise.get("stable_rank_gradients")),
                         "stable_rank_covariance": _float(noise.get("stable_rank_covariance")), "num_examples": noise.get("num_examples"),
                         "num_params": int(corr.get("num_params", 0) or 0)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ Phi of the trained runs


def data_dims(layout: Layout, experiments: Mapping[str, Any]) -> dict[str, int]:
    """Input dimension D of each experiment's data set, from its prepared ``meta.json`` (absent: skipped)."""
    dims = {}
    for spec in experiments.values():
        meta = layout.prepared_meta(spec["dataset"])
        if meta.is_file():
            dims[spec["dataset"]] = math.prod(json.loads(meta.read_text(encoding="utf-8"))["input_shape"])
    return dims


def phi_inputs(layout: Layout, experiments: Mapping[str, Any], seeds: Sequence[int], data_dims: Mapping[str, int]) -> list[dict[str, Any]]:
    """What Phi of each trained run is made of, from its ``metrics.json`` and measure's ``curvature.json``.

    Runs with random labels are left out; a run without a curvature file has NaN trace,
    lambda_max and ranks (``curvature_status`` None).

    Args:
        layout: The artifact tree.
        experiments: ``params["experiments"]`` (the groups to read).
        seeds: The seeds of the sweep.
        data_dims: Input dimension D per data set key (:func:`data_dims`).

    Returns:
        One row per run found: experiment, config, seed, model, norm, width, depth, status,
        test_error, gen_gap, num_params (d), data_dim (D), trace, lambda_max, stable_rank,
        energy_rank_90 (ranks of the gradient covariance), curvature_status.
    """
    rows = []
    for exp, spec in experiments.items():
        for cfg, values in spec["configs"].items():
            model, train = values.get("model", {}), values.get("train", {})
            if train.get("random_labels"):
                continue
            for seed in seeds_of(spec, seeds):
                metrics = read_json(layout.run(exp, cfg, seed).metrics)
                if metrics is None:
                    continue
                curv = read_json(layout.curvature(exp, cfg, seed)) or {}
                noise = curv.get("noise") or {}
                rows.append({"experiment": exp, "config": cfg, "seed": seed, "model": model.get("name"), "norm": model.get("norm", "none"),
                             "width": model.get("width"), "depth": model_depth(model), "status": metrics.get("status"),
                             "test_error": _number(metrics.get("test_error")), "gen_gap": _number(metrics.get("gen_gap")),
                             "num_params": curv.get("operator", {}).get("num_params", metrics.get("num_params")),
                             "data_dim": data_dims.get(spec["dataset"]), "trace": _number(curv.get("trace")),
                             "lambda_max": _number(curv.get("lambda_max")), "stable_rank": _number(noise.get("stable_rank_gradients")),
                             "energy_rank_90": _number(noise.get("energy_rank_90")), "curvature_status": curv.get("status")})
    return rows


# ------------------------------------------------------------------ report pages


def _cells(experiments: Mapping[str, Any], seeds: Iterable[int]) -> list[tuple[str, str, int]]:
    """Every (experiment, config, seed) of params, in the order of the sorted artifact paths."""
    cells = [(exp, cfg, int(s)) for exp, spec in experiments.items() for cfg in (spec.get("configs") or {}) for s in seeds]
    return sorted(cells, key=lambda c: (c[0], c[1], f"seed{c[2]}"))


def curvature_files(layout: Layout, experiments: Mapping[str, Any], seeds: Iterable[int]) -> list[tuple[str, str, int, Path]]:
    """``(experiment, config, seed, curvature.json)`` of every run of params that has been measured."""
    return [(e, c, s, layout.curvature(e, c, s)) for e, c, s in _cells(experiments, seeds) if layout.curvature(e, c, s).is_file()]


def run_metrics(layout: Layout, experiments: Mapping[str, Any], seeds: Iterable[int]) -> pd.DataFrame:
    """One row per trained run of params: experiment, config, seed and its ``metrics.json`` fields."""
    rows = []
    for e, c, s in _cells(experiments, seeds):
        m = read_json(layout.run(e, c, s).metrics)
        if m is not None:
            rows.append({"experiment": e, "config": c, "seed": s, **m})
    return pd.DataFrame(rows)


def logged_curves(layout: Layout, runs: Iterable[tuple[str, str, int]]) -> pd.DataFrame:
    """Every DVCLive log of ``runs`` (``(experiment, config, seed)``), long format: step, value,
    metric, experiment, config, seed."""
    columns = ["step", "value", "metric", "experiment", "config", "seed"]
    frames = []
    for experiment, config, seed in runs:
        for tsv in sorted(layout.run(experiment, config, seed).logged_metrics.glob("*.tsv")):
            df = pd.read_csv(tsv, sep="\t").rename(columns={tsv.stem: "value"})
            if len(df):
                df["metric"], df["experiment"], df["config"], df["seed"] = tsv.stem, experiment, config, seed
                frames.append(df[columns])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def bounds_files(layout: Layout, runs: Sequence[str], seeds: Iterable[int]) -> list[tuple[str, int, Path]]:
    """``(run, seed, bounds.json)`` of every seed of the ``bounds.runs`` entries (``<experiment>/<config>``).

    Raises:
        FileNotFoundError: A seed's ``bounds.json`` is missing (names the path and the ``bounds`` stage).
    """
    cells = sorted(((run, int(s)) for run in runs for s in seeds), key=lambda c: (*c[0].split("/"), f"seed{c[1]}"))
    return [(run, s, require(layout.bounds_run(*run.split("/"), s), "bounds"))  # type: ignore[call-arg, arg-type]  # run is "<experiment>/<config>"
            for run, s in cells]


def class_structure_results(layout: Layout) -> dict[str, Any]:
    """``class_structure/results.json``: ``settings``, ``spectrum_runs`` (each run's top-k of G and H
    with their class-structure tests), ``diagonal_runs`` (each run's diagonal comparisons), and the tables
    ``spike_counts`` and ``diagonals`` (:func:`landscape.pipeline.class_structure.summarise`)."""
    return json.loads(require(layout.results("class_structure"), "class_structure").read_text(encoding="utf-8"))


def class_structure_spectrum(layout: Layout, experiment: str, config: str, seed: int) -> dict[str, Any]:
    """One run's top-k Ritz values of G and H (``ggn``, ``hessian``, descending) and their bounds."""
    import numpy as np

    with np.load(require(layout.class_structure_spectrum(experiment, config, seed), "class_structure")) as data:
        return {k: data[k] for k in data.files}


def dense_check_results(layout: Layout) -> dict[str, Any]:
    """``dense_check/results.json``: ``settings``, ``runs`` (each run's checks) and ``table``
    (one row per checked run, columns :data:`landscape.pipeline.dense_check.TABLE_COLUMNS`)."""
    return json.loads(require(layout.results("dense_check"), "dense_check").read_text(encoding="utf-8"))


def dense_spectrum(layout: Layout, experiment: str, config: str, seed: int) -> dict[str, Any]:
    """One run's exact ``eigenvalues`` (ascending) and SLQ ``slq_nodes``/``slq_weights`` (probes, steps)."""
    import numpy as np

    with np.load(require(layout.dense_spectrum(experiment, config, seed), "dense_check")) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------ runs trained to a target loss (H1)


def along_training_runs(layout: Layout, experiment: str, spec: Mapping[str, Any],
                        seeds: Sequence[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of a train-to-target group and their along-training records.

    Args:
        layout: The artifact tree.
        experiment: The group.
        spec: ``params["experiments"][experiment]``.
        seeds: The top-level seeds (the group's own list, when it has one, wins).

    Returns:
        ``(runs, records)``: one row per run (config, seed, batch_size, lr, momentum,
        noise_scale = lr / batch_size, status, reached, hit_cap, stop_step, cap_steps,
        train_loss/test_error at the stop, lambda_max_final, its convergence flag); and one row
        per record (config, seed, step, train_loss, train_error, lambda_max).

    Raises:
        FileNotFoundError: A run's ``metrics.json`` is missing (naming it and the stage).
    """
    runs, records = [], []
    for cfg, values in (spec.get("configs") or {}).items():
        train = values.get("train", {})
        for seed in seeds_of(spec, seeds):
            m = read_json(require(layout.run(experiment, cfg, seed).metrics, f"train_{experiment}"))
            along = (m or {}).get("along_training") or {}
            runs.append({"config": cfg, "seed": seed, "batch_size": train.get("batch_size"), "lr": train.get("lr"),
                         "momentum": train.get("momentum", 0.0),
                         "noise_scale": train.get("lr", math.nan) / train.get("batch_size", math.nan),
                         "status": (m or {}).get("status"), "reached": along.get("reached"), "hit_cap": along.get("hit_cap"),
                         "stop_step": along.get("stop_step"), "cap_steps": along.get("cap_steps"),
                         "target_loss": along.get("target_loss"),
                         "train_loss": _number((m or {}).get("train_loss")), "test_error": _number((m or {}).get("test_error")),
                         "lambda_max_final": _number(along.get("lambda_max_final")),
                         "lambda_max_converged": along.get("lambda_max_converged")})
            lam = along.get("lambda_max") or [math.nan] * len(along.get("steps", []))
            for step, loss, err, value in zip(along.get("steps", []), along.get("train_loss", []), along.get("train_error", []), lam,
                                              strict=True):
                records.append({"config": cfg, "seed": seed, "step": step, "train_loss": loss, "train_error": err,
                                "lambda_max": _number(value)})
    return pd.DataFrame(runs), pd.DataFrame(records)
