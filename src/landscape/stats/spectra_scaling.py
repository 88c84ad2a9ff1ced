"""Statistics of the second plan's three spectral claims, on tables of the measure stage's
outputs (:mod:`landscape.pipeline.tables`: :func:`~landscape.pipeline.tables.measured_spectra`,
:func:`~landscape.pipeline.tables.scaling_runs`, :func:`~landscape.pipeline.tables.gradient_noise_runs`).
Nothing is recomputed from a network.

1. Scaling law ``||H||_2 = A n^alpha e^(beta L)`` over the width x depth grid
   (:func:`landscape.stats.scaling.scaling_law_fit`), at initialisation and after training,
   for ``||H||_2 = max(|lambda_max|, |lambda_min|)`` (the measured ``spectral_norm``: at
   initialisation the negative end can attain it), lambda_max (reported beside it), the
   trace, the bulk variance sigma^2 and the spike count. Primary fit: OLS on per-config geometric
   means (8 configs on the default grid -> t with 5 df); the per-seed fit with seed-clustered SEs is a sensitivity
   check only (5 clusters are too few for CR1 SEs to be trusted). Holm families: the
   confirmatory ||H||_2 claims (alpha, beta; trained and at init) and the exploratory
   rest (lambda_max among them).
2. Spectra vs RMT for every measured run: :func:`landscape.curvature.rmt.fit_spiked_bulk`
   (eigengap spike count on the top-k Ritz values, bulk semicircle from the SLQ moments,
   quadrature-bracket KS of the semicircle and of the spiked model), spike counts against
   C - 1 and C (Wilson intervals).
3. Gradient subspaces across batch size: the ``C ~ diag(H)`` correlations and the gradient
   ranks per config (t intervals over seeds) and their Spearman trend in log batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from landscape.curvature.rmt import SpikedBulkFit, fit_spiked_bulk, semicircle_cdf
from landscape.curvature.slq import quadrature_from_tridiagonals
from landscape.curvature.spike_test import null_spread_ratios, spike_test
from landscape.seeding import stream_seed
from landscape.stats.intervals import wilson
from landscape.stats.multiple import holm
from landscape.stats.result import plain
from landscape.stats.scaling import config_means, scaling_law_fit

__all__ = ["TARGETS", "CONFIRMATORY", "PHASES", "GRADIENT_MEASURES", "fit_spectra", "spike_nulls",
           "scaling_rows", "fit_scaling", "spike_summary",
           "density_curve", "gradient_subspaces", "headline"]

TARGETS = ("spectral_norm", "lambda_max", "trace", "bulk_sigma2", "outlier_count")
CONFIRMATORY = "spectral_norm"
PHASES = ("trained", "at_init")
GRADIENT_MEASURES = ("pearson_covariance", "spearman_covariance", "energy_rank_90", "stable_rank_gradients", "stable_rank_covariance")
_SCALING_COLUMNS = ("config", "width", "depth", "seed",
                    "trained.spectral_norm", "trained.lambda_max", "trained.trace", "trained.bulk_sigma2", "trained.outlier_count",
                    "at_init.spectral_norm", "at_init.lambda_max", "at_init.trace", "at_init.bulk_sigma2", "at_init.outlier_count")


# ------------------------------------------------------------------ inputs


def _spiked(eigenvalues: Sequence[float], slq_alphas: Any, slq_betas: Any, num_params: int, edge_points: int) -> SpikedBulkFit:
    quad = quadrature_from_tridiagonals(slq_alphas, slq_betas)
    return fit_spiked_bulk(eigenvalues, quad.nodes, quad.weights, dim=int(num_params), edge_points=edge_points)


def _relative_noise(eigenvalues: Sequence[float], residual_bounds: Any) -> float:
    """Largest Ritz residual bound over ``lambda_1 - lambda_k`` (0 when not recorded)."""
    x = np.asarray(eigenvalues, dtype=float)
    spread = float(x.max() - x.min()) if x.size else 0.0
    if residual_bounds is None or not spread > 0:
        return 0.0
    bounds = np.asarray(residual_bounds, dtype=float)
    return float(np.nanmax(np.abs(bounds)) / spread) if bounds.size else 0.0


def spike_nulls(measured: pd.DataFrame, edge_points: int, draws: int, seed: int) -> dict[int, dict[str, Any]]:
    """The planted null law of the spike test for each top-k size among the measured runs.

    Each k gets ``draws`` planted Wigner matrices whose sizes cycle through the measured
    parameter counts (:func:`landscape.curvature.spike_test.null_spread_ratios`), with the
    largest relative Ritz-value noise of those runs added.

    Returns:
        k -> ``{"ratios": (draws,) array, "sizes": [...], "noise": float}``.
    """
    out: dict[int, dict[str, Any]] = {}
    if measured.empty:
        return out
    for k, g in measured.groupby("top_k"):
        if int(k) < edge_points + 2:
            continue
        sizes = sorted({int(p) for p in g.num_params})
        noise = max((_relative_noise(r.eigenvalues, getattr(r, "residual_bounds", None)) for r in g.itertuples(index=False)), default=0.0)
        rng = np.random.default_rng(stream_seed(seed, int(k)))
        out[int(k)] = {"ratios": null_spread_ratios(sizes, int(k), draws, rng, noise=noise, edge_points=edge_points),
                       "sizes": sizes, "noise": noise}
    return out


def fit_spectra(measured: pd.DataFrame, edge_points: int, *, alpha: float = 0.05, draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """The spiked-semicircle fit and the semicircle-vs-spiked test of every measured spectrum.

    Args:
        measured: One row per measured run (:func:`landscape.pipeline.tables.measured_spectra`:
            experiment, config, seed, num_params, top_k, lambda_max, eigenvalues, slq_alphas, slq_betas,
            optionally residual_bounds and sigma_broadening).
        edge_points: Eigenvalues in the spike rule's edge regression (and the test's edge points).
        alpha: Level of the spike test.
        draws: Planted null matrices per top-k size (:func:`spike_nulls`).
        seed: Seed of the planted matrices.

    Returns:
        One row per run: experiment, config, seed, num_params, top_k, lambda_max and either
        ``status="ok"`` with the fit (num_spikes, at_max, max_spikes, gap_threshold,
        bulk_sigma, bulk_sigma2, bulk_centre, bulk_edge, bulk_top, beyond_edge, spike_mass,
        ks_semicircle, ks_spiked, top_gap_ratio), the bulk's resolution (``bulk_resolved``:
        the semicircle's sigma exceeds the SLQ density's Gaussian broadening; otherwise
        ``bulk_sigma``, ``bulk_sigma2``, ``bulk_edge`` and ``beyond_edge`` are NaN, the raw
        moment estimate kept as ``bulk_sigma_estimate``), and the spike test
        (spike_statistic, spike_critical, spike_p, spike_verdict "spiked" / "semicircle",
        spike_max_detectable), or ``status="not fitted: <reason>"``.
    """
    nulls = spike_nulls(measured, edge_points, draws, seed)
    rows = []
    for r in measured.itertuples(index=False):
        row: dict[str, Any] = {"experiment": r.experiment, "config": r.config, "seed": r.seed, "num_params": r.num_params,
                               "top_k": r.top_k, "lambda_max": r.lambda_max}
        try:
            fit = _spiked(r.eigenvalues, r.slq_alphas, r.slq_betas, r.num_params, edge_points)
        except ValueError as exc:
            row["status"] = f"not fitted: {exc}"
            rows.append(row)
            continue
        broadening = float(getattr(r, "sigma_broadening", float("nan")))
        resolved = bool(np.isfinite(broadening) and fit.sigma > broadening)
        nan = float("nan")
        row.update(status="ok", num_spikes=fit.num_spikes, at_max=fit.count.at_max, max_spikes=fit.count.max_spikes,
                   gap_threshold=fit.count.delta, bulk_resolved=resolved, sigma_broadening=broadening,
                   bulk_sigma_estimate=fit.sigma, bulk_sigma=fit.sigma if resolved else nan,
                   bulk_sigma2=fit.sigma ** 2 if resolved else nan,
                   bulk_centre=fit.centre, bulk_edge=fit.upper_edge if resolved else nan, bulk_top=fit.bulk_top,
                   beyond_edge=fit.beyond_edge if resolved else nan, spike_mass=fit.spike_mass,
                   ks_semicircle=fit.ks_semicircle, ks_spiked=fit.ks_spiked,
                   top_gap_ratio=_gap_ratio(fit))
        null = nulls.get(int(r.top_k))
        if null is not None:
            test = spike_test(r.eigenvalues, int(r.num_params), np.random.default_rng(0), alpha=alpha, edge_points=edge_points,
                              noise=null["noise"], null=null["ratios"])
            row.update(spike_statistic=test.statistic, spike_critical=test.critical_value, spike_p=test.p_value,
                       spike_verdict=test.verdict, spike_max_detectable=test.max_detectable)
        rows.append(row)
    return pd.DataFrame(rows)


def _gap_ratio(fit: SpikedBulkFit) -> float:
    """``(lambda_r - lambda_(r+1)) / delta``: how far the last spike's gap clears the threshold."""
    r = fit.num_spikes
    if r == 0 or not fit.count.delta > 0:
        return float("nan")
    return fit.count.gaps[r - 1] / fit.count.delta


def scaling_rows(runs: pd.DataFrame, spectra: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The scaling grid's runs with the trained bulk variance and spike count from ``spectra``.

    Args:
        runs: One row per measured grid run (:func:`landscape.pipeline.tables.scaling_runs`).
        spectra: :func:`fit_spectra` of every measured run.
        experiment: The grid's experiment group.

    Returns:
        One row per (config, seed): width, depth and every target trained and at init
        (``trained.outlier_count`` NaN when the spike count hit its maximum).
    """
    if runs.empty:
        return runs
    bulk, count = [], []
    for name, seed in zip(runs["config"], runs["seed"], strict=True):
        sp = spectra[(spectra.experiment == experiment) & (spectra.config == name) & (spectra.seed == seed)] if len(spectra) else spectra
        ok = len(sp) == 1 and sp.iloc[0]["status"] == "ok"
        bulk.append(float(sp.iloc[0]["bulk_sigma2"]) if ok else float("nan"))
        count.append(float(sp.iloc[0]["num_spikes"]) if ok and not sp.iloc[0]["at_max"] else float("nan"))
    out = runs.assign(**{"trained.bulk_sigma2": bulk, "trained.outlier_count": count})
    return out[list(_SCALING_COLUMNS)]


# ------------------------------------------------------------------ 1. scaling law


def _fit_one(rows: pd.DataFrame, column: str, target: str, alpha: float, ci_level: float) -> dict[str, Any]:
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
        fit = scaling_law_fit(means, target=target, alpha=alpha, ci_level=ci_level)
    except ValueError as exc:
        return {**out, "status": f"not fitted: {exc}"}
    used = means.loc[list(fit.row_index)]
    observed = np.log(used[target].to_numpy(float))
    points = [{"width": float(w), "depth": float(L), "mean": float(m), "n_seeds": int(k), "sd_log": plain(float(s)),
               "log_observed": float(o), "log_fitted": float(o - r), "residual": float(r)}
              for w, L, m, k, s, o, r in zip(used.width, used.depth, used[target], used.n_seeds, used.sd_log, observed, fit.residuals,
                                             strict=True)]
    res = {**out, "status": "fitted", "mean": "geometric" if geometric else "arithmetic", "fit": fit.to_dict(), "points": points,
           "distinct_depths": int(means.depth.nunique()), "distinct_widths": int(means.width.nunique()),
           "width_range": [float(used.width.min()), float(used.width.max())],
           "depth_range": [float(used.depth.min()), float(used.depth.max())],
           "_fit": fit}
    try:
        seedfit = scaling_law_fit(data, target=target, group="seed", alpha=alpha, ci_level=ci_level)
        res["per_seed_clustered"] = {k: v for k, v in seedfit.to_dict().items() if k not in ("residuals", "row_index")}
    except ValueError as exc:
        res["per_seed_clustered"] = {"status": f"not fitted: {exc}"}
    return res


def fit_scaling(rows: pd.DataFrame, targets: Sequence[str] = TARGETS, alpha: float = 0.05, ci_level: float = 0.95) -> dict[str, Any]:
    """Every (phase, target) fit and the two Holm families of their alpha/beta claims.

    Args:
        rows: :func:`scaling_rows` (columns ``<phase>.<target>`` for phases :data:`PHASES`).
        targets: Responses to fit (of :data:`TARGETS`).
        alpha: Family-wise level (Holm).
        ci_level: Coverage of the intervals.
    """
    fits: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        for target in targets:
            column = f"{phase}.{target}"
            fits[column] = (_fit_one(rows, column, target, alpha, ci_level) if column in rows
                            else {"target": target, "status": "not fitted: not measured"})
    families: dict[str, list[dict[str, Any]]] = {}
    for family, keep in (("confirmatory", lambda t: t == CONFIRMATORY), ("exploratory", lambda t: t != CONFIRMATORY)):
        members = [(col, h) for col, f in fits.items() if "_fit" in f and keep(f["target"])
                   for h in f["_fit"].as_hypotheses(col)]
        if not members:
            continue
        adjusted = holm([h for _, h in members], alpha=alpha)
        families[family] = [h.to_dict() for h in adjusted]
        for (col, _), h in zip(members, adjusted, strict=True):
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
    share, lo, hi = wilson(k, n, ci_level)
    return {"k": int(k) if n else 0, "n": int(n), "share": share, "ci_low": lo, "ci_high": hi}


def spike_summary(spectra: pd.DataFrame, num_classes: int, ci_level: float = 0.95) -> dict[str, Any]:
    """Per config: spike counts over seeds vs C - 1 and C, bulk fit and KS; overall Wilson shares.

    Args:
        spectra: :func:`fit_spectra` of every measured run.
        num_classes: C.
        ci_level: Coverage of the t and Wilson intervals.
    """
    C = num_classes
    per_config = []
    if spectra.empty:
        return {"num_classes": C, "per_config": [], "overall": {}, "by_experiment": {}}
    for (exp, name), g in spectra.groupby(["experiment", "config"], sort=False):
        ok = g[g.status == "ok"]
        counts = ok.num_spikes.to_numpy(float) if len(ok) else np.array([])
        m, lo, hi = _t_interval(counts, ci_level)
        values, freq = np.unique(counts, return_counts=True) if counts.size else (np.array([]), np.array([]))
        per_config.append({
            "experiment": exp, "config": name, "n_seeds": len(g), "n_fitted": len(ok),
            "counts": [int(c) for c in counts], "count_mean": m, "count_ci": [lo, hi],
            "count_mode": int(values[np.argmax(freq)]) if counts.size else None,
            "equals_c_minus_1": int((counts == C - 1).sum()), "equals_c": int((counts == C).sum()),
            "at_max": int(ok.at_max.sum()) if len(ok) else 0,
            "max_spikes": int(ok.max_spikes.min()) if len(ok) else None,
            "bulk_sigma": _t_interval(ok.bulk_sigma.to_numpy(float), ci_level)[0] if len(ok) else float("nan"),
            "bulk_top": float(ok.bulk_top.mean()) if len(ok) else float("nan"),
            "bulk_edge": float(ok.bulk_edge.mean()) if len(ok) else float("nan"),
            "beyond_edge_mean": float(ok.beyond_edge.mean()) if len(ok) else float("nan"),
            "bulk_resolved": int(ok.bulk_resolved.sum()) if len(ok) and "bulk_resolved" in ok else 0,
            "sigma_broadening": float(ok.sigma_broadening.mean()) if len(ok) and "sigma_broadening" in ok else float("nan"),
            "bulk_sigma_estimate": float(ok.bulk_sigma_estimate.mean()) if len(ok) and "bulk_sigma_estimate" in ok else float("nan"),
            "spiked": int((ok.spike_verdict == "spiked").sum()) if len(ok) and "spike_verdict" in ok else 0,
            "spike_tested": int(ok.spike_verdict.notna().sum()) if len(ok) and "spike_verdict" in ok else 0,
            "spike_statistic_median": float(ok.spike_statistic.median()) if len(ok) and "spike_statistic" in ok else float("nan"),
            "spike_critical": float(ok.spike_critical.median()) if len(ok) and "spike_critical" in ok else float("nan"),
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
                "c_minus_1": _wilson(int((counts == C - 1).sum()), n, ci_level),
                "c": _wilson(int((counts == C).sum()), n, ci_level),
                "below_c_minus_1": _wilson(int((counts < C - 1).sum()), n, ci_level),
                "above_c": _wilson(int((counts > C).sum()), n, ci_level),
                "at_max": int(ok.at_max.sum()) if n else 0,
                "spiked": _wilson(int((ok.spike_verdict == "spiked").sum()) if n and "spike_verdict" in ok else 0,
                                  int(ok.spike_verdict.notna().sum()) if n and "spike_verdict" in ok else 0, ci_level),
                "bulk_resolved": int(ok.bulk_resolved.sum()) if n and "bulk_resolved" in ok else 0}

    return {"num_classes": C, "per_config": per_config, "overall": shares(spectra),
            "by_experiment": {exp: shares(g) for exp, g in spectra.groupby("experiment", sort=False)},
            "note": ("runs share seeds across configs, so the overall shares describe the measured runs; "
                     "Wilson intervals treat runs as independent")}


def density_curve(inputs: Mapping[str, Any], edge_points: int, model_samples: int) -> dict[str, Any]:
    """Measured broadened SLQ density of one run and the two fitted models, broadened the same way.

    Args:
        inputs: :func:`landscape.pipeline.tables.density_inputs` of the run (top-k eigenvalues,
            num_params, sigma_broadening, SLQ tridiagonals, density grid and density).
        edge_points: Eigenvalues in the spike rule's edge regression.
        model_samples: Quantile points of the semicircle broadened like the measured density.

    Returns:
        ``grid``, ``measured``, ``semicircle``, ``spiked`` (densities on the grid),
        ``broadening``, ``spikes``, ``top_values``, ``bulk_sigma``, ``bulk_centre``,
        ``num_params``, ``ks_semicircle``, ``ks_spiked``.
    """
    grid = inputs["density_grid"]
    s_b = float(inputs["sigma_broadening"])
    fit = _spiked(inputs["eigenvalues"], inputs["slq_alphas"], inputs["slq_betas"], inputs["num_params"], edge_points)
    u = (np.arange(model_samples) + 0.5) / model_samples
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
    return {"grid": grid.tolist(), "measured": inputs["density"].tolist(), "semicircle": semi.tolist(), "spiked": spiked.tolist(),
            "broadening": s_b, "spikes": list(fit.spikes), "top_values": list(inputs["eigenvalues"]),
            "bulk_sigma": fit.sigma, "bulk_centre": fit.centre, "num_params": P,
            "ks_semicircle": fit.ks_semicircle, "ks_spiked": fit.ks_spiked}


# ------------------------------------------------------------------ 3. gradient subspaces


def gradient_subspaces(rows: pd.DataFrame, experiment: str, alpha: float = 0.05, ci_level: float = 0.95) -> dict[str, Any]:
    """``C ~ diag(H)`` correlations and gradient ranks per batch size, with their trend in log B.

    Args:
        rows: One row per run with noise figures (:func:`landscape.pipeline.tables.gradient_noise_runs`).
        experiment: The batch-size group (reported).
        alpha: Level of the per-seed "positive and significant" counts.
        ci_level: Coverage of the t intervals over seeds.
    """
    if rows.empty:
        return {"status": "not tested: no gradient-noise measurements"}
    df = rows.sort_values(["batch_size", "seed"])
    per_config = []
    for (name, batch), g in df.groupby(["config", "batch_size"], sort=False):
        entry: dict[str, Any] = {"config": name, "batch_size": batch, "n_seeds": len(g)}
        for m in GRADIENT_MEASURES:
            mean, lo, hi = _t_interval(g[m].to_numpy(float), ci_level)
            entry[m] = {"mean": mean, "ci": [lo, hi]}
        entry["pearson_positive_significant"] = int(((g.pearson_covariance > 0) & (g.pearson_p < alpha)).sum())
        entry["spearman_positive_significant"] = int(((g.spearman_covariance > 0) & (g.spearman_p < alpha)).sum())
        per_config.append(entry)
    trend: dict[str, dict[str, Any]] = {}
    for m in GRADIENT_MEASURES:
        sub = df[np.isfinite(df[m])]
        if sub.batch_size.nunique() >= 2 and len(sub) >= 3:
            rho, p = sps.spearmanr(np.log2(sub.batch_size), sub[m])
            trend[m] = {"spearman_rho": float(rho), "p_value": float(p), "n_runs": len(sub)}
        else:
            trend[m] = {"status": "not tested: fewer than 2 batch sizes"}
    return {"status": "tested", "experiment": experiment, "rows": df.to_dict("records"), "per_config": per_config,
            "trend_in_log_batch": trend}


# ------------------------------------------------------------------ metrics


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
                         "share_c": overall["c"]["share"], "at_max": overall["at_max"],
                         "share_spiked": overall["spiked"]["share"], "bulk_resolved": overall["bulk_resolved"]}
    return plain(out)
