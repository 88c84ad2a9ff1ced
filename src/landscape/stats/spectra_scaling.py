"""The spectra_scaling stage's library: the second plan's scaling law, spectra against random
matrix theory, and the gradient-subspace checks, all from the measure stage's outputs.

Inputs (``measure/<exp>/<cfg>/seeds/seed<k>/``): ``curvature.json`` (top-k Ritz values,
lambda_max, trace, the ``at_init`` block, gradient-noise figures) and ``krylov.pt`` (the SLQ
tridiagonals and the broadened density). Nothing is recomputed from a network.

1. Scaling law ``||H||_2 = A n^alpha e^(beta L)`` over the width x depth grid
   (:func:`landscape.stats.scaling.scaling_law_fit`), at initialisation and after training,
   for lambda_max (= ||H||_2 at a minimum, where the top eigenvalue dominates), the trace,
   the bulk variance sigma^2 and the spike count. Primary fit: OLS on per-config geometric
   means (8 configs on the default grid -> t with 5 df); the per-seed fit with seed-clustered SEs is a sensitivity
   check only (5 clusters are too few for CR1 SEs to be trusted). Holm families: the
   confirmatory lambda_max claims (alpha, beta; trained and at init) and the exploratory
   rest.
2. Spectra vs RMT for every measured run: :func:`landscape.curvature.rmt.fit_spiked_bulk`
   (eigengap spike count on the top-k Ritz values, bulk semicircle from the SLQ moments,
   quadrature-bracket KS of the semicircle and of the spiked model), spike counts against
   C - 1 and C (Wilson intervals).
3. Gradient subspaces across batch size: the ``C ~ diag(H)`` correlations and the gradient
   ranks per config (t intervals over seeds) and their Spearman trend in log batch size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from landscape.curvature.rmt import fit_spiked_bulk, semicircle_cdf
from landscape.curvature.slq import quadrature_from_tridiagonals
from landscape.schema import ConfigError
from landscape.stats.multiple import holm
from landscape.stats.result import plain
from landscape.stats.scaling import config_means, scaling_law_fit

__all__ = ["SpectraScalingConfig", "TARGETS", "run_spectra_scaling", "headline"]

TARGETS = ("lambda_max", "trace", "bulk_sigma2", "outlier_count")
PHASES = ("trained", "at_init")
GRADIENT_MEASURES = ("pearson_covariance", "spearman_covariance", "energy_rank_90", "stable_rank_gradients", "stable_rank_covariance")


def _rule(allowed: str, check) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _level(x: Any) -> bool:
    return isinstance(x, float) and 0 < x < 1


def _names(options: tuple[str, ...] | None = None) -> dict[str, Any]:
    what = f"a non-empty list of names from {list(options)}" if options else "a list of names"
    return _rule(what, lambda x: isinstance(x, (list, tuple)) and (options is None or len(x) > 0)
                 and all(isinstance(v, str) for v in x) and (options is None or all(v in options for v in x)))


@dataclass(frozen=True)
class SpectraScalingConfig:
    """Settings of the spectra_scaling stage (``spectra_scaling`` in params.yaml).

    Attributes:
        scaling_experiment: Group whose configs form the width x depth grid (MLPs with
            ``model.width`` and ``model.depth``).
        batch_experiment: Group whose configs vary ``train.batch_size`` (gradient subspaces).
        num_classes: C, the number of classes the spike count is compared with.
        edge_points: Eigenvalues in the spike rule's edge regression (spikes <= top_k - edge_points).
        alpha: Family-wise level of the verdicts (Holm).
        ci_level: Coverage of every interval.
        targets: Responses of the scaling fits (subset of lambda_max, trace, bulk_sigma2, outlier_count).
        plot_configs: ``<experiment>/<config>`` whose density curves the page draws (seed: the first measured).
        model_samples: Quantile points used to broaden the model densities like the measured one.
    """

    scaling_experiment: str = "scaling"
    batch_experiment: str = "h1_batch"
    num_classes: int = field(default=10, metadata=_rule("an int >= 2", lambda x: x >= 2))
    edge_points: int = field(default=5, metadata=_rule("an int >= 3", lambda x: x >= 3))
    alpha: float = field(default=0.05, metadata=_rule("a float in (0, 1)", _level))
    ci_level: float = field(default=0.95, metadata=_rule("a float in (0, 1)", _level))
    targets: tuple[str, ...] = field(default=TARGETS, metadata=_names(TARGETS))
    plot_configs: tuple[str, ...] = field(default=(), metadata=_names())
    model_samples: int = field(default=2000, metadata=_rule("an int >= 100", lambda x: x >= 100))

    def __post_init__(self) -> None:
        for name in ("targets", "plot_configs"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for f in self.__dataclass_fields__.values():
            check = f.metadata.get("check")
            if check is not None and not check(getattr(self, f.name)):
                raise ConfigError(f"spectra_scaling.{f.name}={getattr(self, f.name)!r} is not allowed; allowed: {f.metadata['allowed']}")
        bad = [p for p in self.plot_configs if p.count("/") != 1]
        if bad:
            raise ConfigError(f"spectra_scaling.plot_configs={list(self.plot_configs)!r} is not allowed; allowed: entries '<experiment>/<config>'")


# ------------------------------------------------------------------ inputs


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _seed_dir(root: Path, exp: str, cfg: str, seed: int) -> Path:
    return root / "measure" / exp / cfg / "seeds" / f"seed{seed}"


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _spiked(curv: Mapping[str, Any], krylov: Mapping[str, torch.Tensor], cfg: SpectraScalingConfig):
    quad = quadrature_from_tridiagonals(krylov["slq_alphas"], krylov["slq_betas"])
    dim = int(curv["operator"]["num_params"])
    return fit_spiked_bulk(curv["eigenvalues"]["values"], quad.nodes, quad.weights, dim=dim, edge_points=cfg.edge_points)


def collect_spectra(root: Path, experiments: Mapping[str, Any], seeds: list[int], cfg: SpectraScalingConfig) -> pd.DataFrame:
    """One row per measured run of every group: the spiked-semicircle fit of its spectrum."""
    rows = []
    for exp, block in experiments.items():
        for name in block.get("configs", {}):
            for seed in seeds:
                d = _seed_dir(root, exp, name, seed)
                curv = _read_json(d / "curvature.json")
                if curv is None or curv.get("status") != "measured" or not (d / "krylov.pt").is_file():
                    continue
                row: dict[str, Any] = {"experiment": exp, "config": name, "seed": seed,
                                       "num_params": int(curv["operator"]["num_params"]),
                                       "top_k": len(curv["eigenvalues"]["values"]), "lambda_max": _num(curv.get("lambda_max"))}
                try:
                    fit = _spiked(curv, torch.load(d / "krylov.pt", map_location="cpu", weights_only=True), cfg)
                except ValueError as exc:
                    row["status"] = f"not fitted: {exc}"
                else:
                    row.update(status="ok", num_spikes=fit.num_spikes, at_max=fit.count.at_max, max_spikes=fit.count.max_spikes,
                               gap_threshold=fit.count.delta, bulk_sigma=fit.sigma, bulk_sigma2=fit.sigma ** 2,
                               bulk_centre=fit.centre, bulk_edge=fit.upper_edge, bulk_top=fit.bulk_top,
                               beyond_edge=fit.beyond_edge, spike_mass=fit.spike_mass,
                               ks_semicircle=fit.ks_semicircle, ks_spiked=fit.ks_spiked,
                               top_gap_ratio=_gap_ratio(fit))
                rows.append(row)
    return pd.DataFrame(rows)


def _gap_ratio(fit) -> float:
    """``(lambda_r - lambda_(r+1)) / delta``: how far the last spike's gap clears the threshold."""
    r = fit.num_spikes
    if r == 0 or not fit.count.delta > 0:
        return float("nan")
    return fit.count.gaps[r - 1] / fit.count.delta


def scaling_rows(root: Path, experiments: Mapping[str, Any], seeds: list[int], spectra: pd.DataFrame,
                 cfg: SpectraScalingConfig) -> pd.DataFrame:
    """One row per (scaling config, seed): width, depth and every target trained and at init."""
    block = experiments.get(cfg.scaling_experiment)
    if block is None:
        raise ConfigError(f"spectra_scaling.scaling_experiment={cfg.scaling_experiment!r} is not an experiment group; have {sorted(experiments)}")
    rows = []
    for name, conf in block.get("configs", {}).items():
        model = conf.get("model", {})
        if "width" not in model or "depth" not in model:
            raise ConfigError(f"experiments.{cfg.scaling_experiment}.configs.{name}.model needs width and depth for the scaling fit")
        for seed in seeds:
            curv = _read_json(_seed_dir(root, cfg.scaling_experiment, name, seed) / "curvature.json")
            if curv is None or curv.get("status") != "measured":
                continue
            row: dict[str, Any] = {"config": name, "width": float(model["width"]), "depth": float(model["depth"]), "seed": seed}
            sp = spectra[(spectra.experiment == cfg.scaling_experiment) & (spectra.config == name) & (spectra.seed == seed)] if len(spectra) else spectra
            ok = len(sp) == 1 and sp.iloc[0]["status"] == "ok"
            row["trained.lambda_max"] = _num(curv.get("lambda_max"))
            row["trained.trace"] = _num(curv.get("trace"))
            row["trained.bulk_sigma2"] = float(sp.iloc[0]["bulk_sigma2"]) if ok else float("nan")
            row["trained.outlier_count"] = float(sp.iloc[0]["num_spikes"]) if ok and not sp.iloc[0]["at_max"] else float("nan")
            init = curv.get("at_init") or {}
            rmt = init.get("rmt") or {}
            row["at_init.lambda_max"] = _num(init.get("lambda_max"))
            row["at_init.trace"] = _num(init.get("trace"))
            ok_init = rmt.get("status") == "ok" and "bulk_sigma" in rmt
            row["at_init.bulk_sigma2"] = _num(rmt.get("bulk_sigma")) ** 2 if ok_init else float("nan")
            row["at_init.outlier_count"] = (_num(rmt.get("outlier_count")) if ok_init and not rmt.get("outlier_count_is_lower_bound") else float("nan"))
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ 1. scaling law


def _fit_one(rows: pd.DataFrame, column: str, target: str, cfg: SpectraScalingConfig) -> dict[str, Any]:
    """Primary (config means) and sensitivity (per seed, seed-clustered) fits of one response."""
    out: dict[str, Any] = {"target": target, "column": column}
    data = rows[["config", "width", "depth", "seed", column]].rename(columns={column: target})
    data = data[np.isfinite(data[target].astype(float))]
    if data.empty:
        return {**out, "status": "not fitted: not measured"}
    geometric = target != "outlier_count"
    if (data[target] <= 0).any():
        return {**out, "status": f"not fitted: {int((data[target] <= 0).sum())} values <= 0 (log scale)"}
    means = config_means(data, target, keys=("width", "depth"), geometric=geometric)
    try:
        fit = scaling_law_fit(means, target=target, alpha=cfg.alpha, ci_level=cfg.ci_level)
    except ValueError as exc:
        return {**out, "status": f"not fitted: {exc}"}
    used = means.loc[list(fit.row_index)]
    observed = np.log(used[target].to_numpy(float))
    points = [{"width": float(w), "depth": float(L), "mean": float(m), "n_seeds": int(k), "sd_log": plain(float(s)),
               "log_observed": float(o), "log_fitted": float(o - r), "residual": float(r)}
              for w, L, m, k, s, o, r in zip(used.width, used.depth, used[target], used.n_seeds, used.sd_log, observed, fit.residuals)]
    res = {**out, "status": "fitted", "mean": "geometric" if geometric else "arithmetic", "fit": fit.to_dict(), "points": points,
           "distinct_depths": int(means.depth.nunique()), "_fit": fit}
    try:
        seedfit = scaling_law_fit(data, target=target, group="seed", alpha=cfg.alpha, ci_level=cfg.ci_level)
        res["per_seed_clustered"] = {k: v for k, v in seedfit.to_dict().items() if k not in ("residuals", "row_index")}
    except ValueError as exc:
        res["per_seed_clustered"] = {"status": f"not fitted: {exc}"}
    return res


def fit_scaling(rows: pd.DataFrame, cfg: SpectraScalingConfig) -> dict[str, Any]:
    """Every (phase, target) fit and the two Holm families of their alpha/beta claims."""
    fits: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        for target in cfg.targets:
            column = f"{phase}.{target}"
            fits[column] = _fit_one(rows, column, target, cfg) if column in rows else {"target": target, "status": "not fitted: not measured"}
    families: dict[str, list[dict[str, Any]]] = {}
    for family, keep in (("confirmatory", lambda t: t == "lambda_max"), ("exploratory", lambda t: t != "lambda_max")):
        members = [(col, h) for col, f in fits.items() if "_fit" in f and keep(f["target"])
                   for h in f["_fit"].as_hypotheses(col)]
        if not members:
            continue
        adjusted = holm([h for _, h in members], alpha=cfg.alpha)
        families[family] = [h.to_dict() for h in adjusted]
        for (col, _), h in zip(members, adjusted):
            fits[col].setdefault("tests", {})["alpha" if h.name.endswith(":alpha]") else "beta"] = h.to_dict()
    for f in fits.values():
        f.pop("_fit", None)
    return {"fits": fits, "families": families}


# ------------------------------------------------------------------ 2. spectra vs RMT


def _t_interval(values: np.ndarray, ci_level: float) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    h = float(sps.t.ppf(0.5 + ci_level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - h, m + h


def _wilson(k: int, n: int, ci_level: float) -> dict[str, Any]:
    if n == 0:
        return {"k": 0, "n": 0, "share": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    lo, hi = proportion_confint(k, n, alpha=1 - ci_level, method="wilson")
    return {"k": int(k), "n": int(n), "share": k / n, "ci_low": float(lo), "ci_high": float(hi)}


def spike_summary(spectra: pd.DataFrame, cfg: SpectraScalingConfig) -> dict[str, Any]:
    """Per config: spike counts over seeds vs C - 1 and C, bulk fit and KS; overall Wilson shares."""
    C = cfg.num_classes
    per_config = []
    if spectra.empty:
        return {"num_classes": C, "per_config": [], "overall": {}, "by_experiment": {}}
    for (exp, name), g in spectra.groupby(["experiment", "config"], sort=False):
        ok = g[g.status == "ok"]
        counts = ok.num_spikes.to_numpy(float) if len(ok) else np.array([])
        m, lo, hi = _t_interval(counts, cfg.ci_level)
        values, freq = np.unique(counts, return_counts=True) if counts.size else (np.array([]), np.array([]))
        per_config.append({
            "experiment": exp, "config": name, "n_seeds": int(len(g)), "n_fitted": int(len(ok)),
            "counts": [int(c) for c in counts], "count_mean": m, "count_ci": [lo, hi],
            "count_mode": int(values[np.argmax(freq)]) if counts.size else None,
            "equals_c_minus_1": int((counts == C - 1).sum()), "equals_c": int((counts == C).sum()),
            "at_max": int(ok.at_max.sum()) if len(ok) else 0,
            "max_spikes": int(ok.max_spikes.min()) if len(ok) else None,
            "bulk_sigma": _t_interval(ok.bulk_sigma.to_numpy(float), cfg.ci_level)[0] if len(ok) else float("nan"),
            "bulk_top": float(ok.bulk_top.mean()) if len(ok) else float("nan"),
            "bulk_edge": float(ok.bulk_edge.mean()) if len(ok) else float("nan"),
            "beyond_edge_mean": float(ok.beyond_edge.mean()) if len(ok) else float("nan"),
            "ks_semicircle_median": float(ok.ks_semicircle.median()) if len(ok) else float("nan"),
            "ks_spiked_median": float(ok.ks_spiked.median()) if len(ok) else float("nan"),
            "gap_ratio_median": float(ok.top_gap_ratio.median()) if len(ok) else float("nan"),
            "lambda_max_mean": float(g.lambda_max.mean()),
            "statuses": sorted(set(g.status)),
        })

    def shares(frame: pd.DataFrame) -> dict[str, Any]:
        ok = frame[frame.status == "ok"] if len(frame) else frame
        n = len(ok)
        counts = ok.num_spikes.to_numpy(float) if n else np.array([])
        return {"n_runs": n, "n_configs": int(ok.groupby(["experiment", "config"]).ngroups) if n else 0,
                "c_minus_1": _wilson(int((counts == C - 1).sum()), n, cfg.ci_level),
                "c": _wilson(int((counts == C).sum()), n, cfg.ci_level),
                "below_c_minus_1": _wilson(int((counts < C - 1).sum()), n, cfg.ci_level),
                "above_c": _wilson(int((counts > C).sum()), n, cfg.ci_level),
                "at_max": int(ok.at_max.sum()) if n else 0}

    return {"num_classes": C, "per_config": per_config, "overall": shares(spectra),
            "by_experiment": {exp: shares(g) for exp, g in spectra.groupby("experiment", sort=False)},
            "note": ("runs share seeds across configs, so the overall shares describe the measured runs; "
                     "Wilson intervals treat runs as independent")}


def density_curves(root: Path, seeds: list[int], spectra: pd.DataFrame, cfg: SpectraScalingConfig) -> list[dict[str, Any]]:
    """Measured broadened SLQ density and the two fitted models, broadened the same way, per plot config."""
    out = []
    for entry in cfg.plot_configs:
        exp, name = entry.split("/")
        ok = spectra[(spectra.experiment == exp) & (spectra.config == name) & (spectra.status == "ok")] if len(spectra) else spectra
        if not len(ok):
            out.append({"config": entry, "status": "not measured"})
            continue
        row = ok.iloc[0]
        d = _seed_dir(root, exp, name, int(row.seed))
        curv = _read_json(d / "curvature.json")
        kry = torch.load(d / "krylov.pt", map_location="cpu", weights_only=True)
        grid = kry["density_grid"].double().numpy()
        s_b = float(curv["density"]["sigma_broadening"])
        fit = _spiked(curv, kry, cfg)
        u = (np.arange(cfg.model_samples) + 0.5) / cfg.model_samples
        # semicircle quantiles by bisection on its CDF
        lo, hi = np.full_like(u, fit.centre - 2 * fit.sigma), np.full_like(u, fit.centre + 2 * fit.sigma)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = semicircle_cdf(mid, fit.sigma, fit.centre) < u
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        q = 0.5 * (lo + hi)

        def broaden(points: np.ndarray) -> np.ndarray:
            z = (grid[:, None] - points[None, :]) / s_b
            return np.exp(-0.5 * z * z).sum(axis=1) / (s_b * math.sqrt(2 * math.pi))

        P = fit.dim or 1
        semi = broaden(q) / q.size
        spikes = np.asarray(fit.spikes, dtype=float)
        spiked = (1 - fit.num_spikes / P) * semi + (broaden(spikes) / P if spikes.size else 0.0)
        out.append({"config": entry, "status": "ok", "seed": int(row.seed), "grid": grid.tolist(),
                    "measured": kry["density"].double().numpy().tolist(), "semicircle": semi.tolist(), "spiked": spiked.tolist(),
                    "broadening": s_b, "spikes": list(fit.spikes), "top_values": list(curv["eigenvalues"]["values"]),
                    "bulk_sigma": fit.sigma, "bulk_centre": fit.centre, "num_params": P,
                    "ks_semicircle": fit.ks_semicircle, "ks_spiked": fit.ks_spiked})
    return out


# ------------------------------------------------------------------ 3. gradient subspaces


def gradient_subspaces(root: Path, experiments: Mapping[str, Any], seeds: list[int], cfg: SpectraScalingConfig) -> dict[str, Any]:
    """``C ~ diag(H)`` correlations and gradient ranks per batch size, with their trend in log B."""
    block = experiments.get(cfg.batch_experiment)
    if block is None:
        return {"status": f"not tested: no experiment group {cfg.batch_experiment!r}"}
    rows = []
    for name, conf in block.get("configs", {}).items():
        batch = (conf.get("train") or {}).get("batch_size")
        for seed in seeds:
            curv = _read_json(_seed_dir(root, cfg.batch_experiment, name, seed) / "curvature.json")
            noise = (curv or {}).get("noise")
            if not noise:
                continue
            corr = noise.get("diag_correlation") or {}
            pv = corr.get("pvalues") or {}
            rows.append({"config": name, "batch_size": float(batch), "seed": seed,
                         "pearson_covariance": _num(corr.get("pearson_covariance")), "pearson_p": _num(pv.get("pearson_covariance")),
                         "spearman_covariance": _num(corr.get("spearman_covariance")), "spearman_p": _num(pv.get("spearman_covariance")),
                         "energy_rank_90": _num(noise.get("energy_rank_90")), "stable_rank_gradients": _num(noise.get("stable_rank_gradients")),
                         "stable_rank_covariance": _num(noise.get("stable_rank_covariance")), "num_examples": noise.get("num_examples"),
                         "num_params": int(corr.get("num_params", 0) or 0)})
    if not rows:
        return {"status": "not tested: no gradient-noise measurements"}
    df = pd.DataFrame(rows).sort_values(["batch_size", "seed"])
    per_config = []
    for (name, batch), g in df.groupby(["config", "batch_size"], sort=False):
        entry: dict[str, Any] = {"config": name, "batch_size": batch, "n_seeds": int(len(g))}
        for m in GRADIENT_MEASURES:
            mean, lo, hi = _t_interval(g[m].to_numpy(float), cfg.ci_level)
            entry[m] = {"mean": mean, "ci": [lo, hi]}
        entry["pearson_positive_significant"] = int(((g.pearson_covariance > 0) & (g.pearson_p < cfg.alpha)).sum())
        entry["spearman_positive_significant"] = int(((g.spearman_covariance > 0) & (g.spearman_p < cfg.alpha)).sum())
        per_config.append(entry)
    trend = {}
    for m in GRADIENT_MEASURES:
        sub = df[np.isfinite(df[m])]
        if sub.batch_size.nunique() >= 2 and len(sub) >= 3:
            rho, p = sps.spearmanr(np.log2(sub.batch_size), sub[m])
            trend[m] = {"spearman_rho": float(rho), "p_value": float(p), "n_runs": int(len(sub))}
        else:
            trend[m] = {"status": "not tested: fewer than 2 batch sizes"}
    return {"status": "tested", "experiment": cfg.batch_experiment, "rows": df.to_dict("records"), "per_config": per_config,
            "trend_in_log_batch": trend}


# ------------------------------------------------------------------ entry points


def run_spectra_scaling(root: str | Path, experiments: Mapping[str, Any], seeds: list[int], cfg: SpectraScalingConfig) -> dict[str, Any]:
    """Everything the stage writes to ``spectra_scaling/results.json`` (plain JSON types)."""
    root = Path(root)
    spectra = collect_spectra(root, experiments, seeds, cfg)
    rows = scaling_rows(root, experiments, seeds, spectra, cfg)
    scaling = fit_scaling(rows, cfg) if len(rows) else {"fits": {}, "families": {}, "status": "not fitted: no scaling runs measured"}
    return plain({
        "settings": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "scaling": {**scaling, "rows": rows.to_dict("records")},
        "spectra": {"runs": spectra.to_dict("records"), **spike_summary(spectra, cfg)},
        "curves": density_curves(root, seeds, spectra, cfg),
        "gradient_subspaces": gradient_subspaces(root, experiments, seeds, cfg),
    })


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars for ``dvc metrics show``: alpha and beta with CIs and verdicts, spike shares."""
    out: dict[str, Any] = {}
    for col, f in results["scaling"]["fits"].items():
        if f.get("status") != "fitted":
            continue
        fit = f["fit"]
        key = col.replace(".", "_")
        out[key] = {"alpha": fit["alpha"], "alpha_ci_low": fit["alpha_ci"][0], "alpha_ci_high": fit["alpha_ci"][1],
                    "beta": fit["beta"], "beta_ci_low": fit["beta_ci"][0], "beta_ci_high": fit["beta_ci"][1],
                    "p_alpha_in_0_1": fit["p_alpha_in_unit_interval"], "p_beta_positive": fit["p_beta_positive"],
                    "alpha_in_0_1_supported": f.get("tests", {}).get("alpha", {}).get("supported"),
                    "beta_positive_supported": f.get("tests", {}).get("beta", {}).get("supported"),
                    "aic_exponential": fit["aic"], "aic_power": fit["aic_power"], "preferred": fit["preferred"],
                    "n_configs": fit["n_runs"]}
    overall = results["spectra"].get("overall") or {}
    if overall:
        out["spikes"] = {"n_runs": overall["n_runs"], "share_c_minus_1": overall["c_minus_1"]["share"],
                         "share_c": overall["c"]["share"], "at_max": overall["at_max"]}
    return plain(out)
