"""H3: alignment of Hessian and gradient-noise eigendirections predicts escape from sharp minima.

Zhu et al. (2019), "The anisotropic noise in stochastic gradient descent: its behavior
of escaping from sharp minima and regularization effects" (ICML), show that SGD escapes
a sharp basin faster when its noise covariance aligns with the Hessian's top
eigendirections. We test it on escape trials, each with an alignment measure and a 0/1
escape outcome:

* logistic regression ``logit P(escape) = b0 + b1 alignment + noise-type effects``,
  binomial GLM with CR1 cluster-robust SEs by seed and t(G-1) when there are at least
  ``min_clusters`` seeds; with fewer seeds, conditional logistic regression given the
  seed (Breslow & Day 1980; the seed intercepts are conditioned away, no incidental-
  parameter bias) with model-based SEs. Effect: odds ratio exp(b1) per unit alignment.
* optionally, a survival view: Cox proportional hazards on time-to-escape with
  non-escapes censored (Cox 1972, JRSS-B 34(2)), statsmodels ``PHReg``, robust SEs by
  seed (Lin & Wei 1989) or, with few seeds, stratified by seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.discrete.conditional_models import ConditionalLogit
from statsmodels.duration.hazard_regression import PHReg

from landscape.stats._common import (
    as_frame,
    check_groups,
    check_level,
    finite_rows,
    group_codes,
    inference_kind,
    require_columns,
)
from landscape.stats.result import HypothesisResult

__all__ = ["h3_alignment_escape"]


def _binary(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = df[column].to_numpy()
    ok = np.array([isinstance(v, (bool, np.bool_)) or v in (0, 1) for v in values], dtype=bool)
    if not ok.all():
        raise ValueError(
            f"{where}: column {column!r} must be 0/1 (or bool), got {values[~ok][0]!r}"
        )
    y = values.astype(float)
    if y.min() == y.max():
        raise ValueError(
            f"{where}: column {column!r} must contain both outcomes, got only {int(y[0])}"
        )
    return y


def _factor_dummies(df: pd.DataFrame, factor: str | None) -> tuple[np.ndarray, list[str]]:
    if factor is None or df[factor].nunique() < 2:
        return np.empty((len(df), 0)), []
    levels = sorted(df[factor].astype(str).unique())
    names = [f"{factor}[{lev}]" for lev in levels[1:]]
    cols = [(df[factor].astype(str) == lev).to_numpy(dtype=float) for lev in levels[1:]]
    return np.column_stack(cols), names


def _p_one_sided(stat: float, df: float | None) -> float:
    """P(T >= stat) for t(df), or standard normal when ``df`` is None."""
    return float(sps.norm.sf(stat) if df is None else sps.t.sf(stat, df))


def _fit_recording_warnings(fit_fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_fn()
    names = sorted({type(w.message).__name__ for w in caught if issubclass(w.category, Warning)})
    return res, names


def h3_alignment_escape(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    outcome: str = "escape",
    predictor: str = "alignment",
    factor: str | None = "noise_type",
    group: str = "seed",
    time: str | None = None,
    cox_ties: Literal["efron", "breslow"] = "efron",
    min_clusters: int = 10,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Test H3: higher Hessian-noise alignment raises the odds of escaping a sharp minimum.

    Args:
        data: One row per escape trial.
        outcome: 0/1 column, 1 when the trial left the basin within its budget.
        predictor: Alignment measure (e.g. overlap of the top-k eigenspaces of H and the
            gradient-noise covariance, in [0, 1]).
        factor: Categorical covariate (noise type: SGD, isotropic Gaussian, ...); None
            to leave it out.
        group: Seed column (clusters, or strata of the conditional model).
        time: Optional time-to-escape column (steps, > 0; the budget for non-escapes)
            for the Cox model reported in ``extra["cox"]``.
        cox_ties: Tie handling of the Cox partial likelihood; ``"breslow"`` is much
            faster and identical when no two escape times coincide.
        min_clusters: Seeds needed for the cluster-robust GLM.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the intervals.

    Returns:
        Result with ``effect`` = odds ratio per unit of ``predictor``, its CI, and the
        one-sided p-value of ``b1 <= 0``.
    """
    where = "h3_alignment_escape"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    if cox_ties not in ("efron", "breslow"):
        raise ValueError(f"cox_ties must be 'efron' or 'breslow', got {cox_ties!r}")
    df = as_frame(data)
    cols = [outcome, predictor, group] + ([factor] if factor else []) + ([time] if time else [])
    require_columns(df, cols, where)
    numeric = [outcome, predictor] + ([time] if time else [])
    df, n_dropped = finite_rows(df, numeric, [group] + ([factor] if factor else []))
    if len(df) == 0:
        raise ValueError(f"{where}: no rows with finite {numeric}")
    y = _binary(df, outcome, where)
    codes, n_groups = group_codes(df[group])
    check_groups(n_groups, group, where)
    if df[predictor].nunique() < 2:
        raise ValueError(f"{where}: {predictor!r} must take >= 2 distinct values")
    inference = inference_kind(n_groups, min_clusters)
    x = df[predictor].to_numpy(dtype=float)
    F, fnames = _factor_dummies(df, factor)
    names = [predictor, *fnames]
    q = sps.norm.ppf(0.5 + ci_level / 2.0)

    if inference == "cluster":
        X = np.column_stack([np.ones(len(df)), x, F])
        model = sm.GLM(y, X, family=sm.families.Binomial())
        res, warn = _fit_recording_warnings(
            lambda: model.fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
        )
        params, bse = np.asarray(res.params)[1:], np.asarray(res.bse)[1:]
        ref_df: float | None = float(n_groups - 1)
        test = f"logistic regression (binomial GLM), CR1 cluster-robust SEs by {group}, t(G-1)"
        n_informative = n_groups
    else:
        informative = pd.Series(y).groupby(codes).transform(lambda s: s.min() != s.max()).to_numpy()
        n_informative = len(np.unique(codes[informative]))
        if n_informative == 0:
            raise ValueError(
                f"{where}: conditional logit needs a {group} with both outcomes; every seed "
                f"has a single outcome (fewer than min_clusters={min_clusters} seeds)"
            )
        X = np.column_stack([x, F])
        model = ConditionalLogit(y[informative], X[informative], groups=codes[informative])
        res, warn = _fit_recording_warnings(lambda: model.fit(disp=False))
        params, bse = np.asarray(res.params), np.asarray(res.bse)
        ref_df = None
        test = (
            f"conditional logistic regression given {group} (fewer than {min_clusters} "
            "seeds), model-based SEs, normal reference"
        )
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(bse)):
        raise ValueError(f"{where}: the logistic fit did not converge (warnings: {warn})")
    crit = q if ref_df is None else sps.t.ppf(0.5 + ci_level / 2.0, ref_df)
    b1, se1 = float(params[0]), float(bse[0])
    p_greater = _p_one_sided(b1 / se1, ref_df)
    coefficients = {
        name: {
            "log_odds": float(params[i]),
            "se": float(bse[i]),
            "odds_ratio": float(np.exp(params[i])),
            "or_ci_low": float(np.exp(params[i] - crit * bse[i])),
            "or_ci_high": float(np.exp(params[i] + crit * bse[i])),
            "p_two_sided": float(2 * _p_one_sided(abs(params[i] / bse[i]), ref_df)),
        }
        for i, name in enumerate(names)
    }
    sd_x = float(np.std(x, ddof=1))
    extra: dict[str, Any] = {
        "coefficients": coefficients,
        "odds_ratio_per_sd": float(np.exp(b1 * sd_x)),
        "predictor_sd": sd_x,
        "n_events": int(y.sum()),
        "n_informative_groups": n_informative,
        "inference": inference,
        "fit_warnings": warn,
        "n_dropped_nonfinite": n_dropped,
    }
    if time is not None:
        extra["cox"] = _cox(df, time, y, x, F, names, codes, inference, ci_level, cox_ties, where)

    return HypothesisResult.build(
        name="H3",
        null=(
            f"Higher {predictor} does not raise the odds of escape: "
            "log-odds slope <= 0 (odds ratio <= 1)."
        ),
        alternative=(
            f"Higher {predictor} raises the odds of escaping a sharp minimum: odds ratio > 1."
        ),
        test=test + (f"; covariate {factor}" if fnames else ""),
        n_runs=len(df),
        n_groups=n_groups,
        effect=float(np.exp(b1)),
        ci_low=float(np.exp(b1 - crit * se1)),
        ci_high=float(np.exp(b1 + crit * se1)),
        p_value=p_greater,
        alpha=alpha,
        ci_level=ci_level,
        side="greater",
        null_value=1.0,
        effect_name=f"odds ratio of escape per unit {predictor}",
        extra=extra,
    )


def _cox(
    df: pd.DataFrame,
    time: str,
    status: np.ndarray,
    x: np.ndarray,
    F: np.ndarray,
    names: list[str],
    codes: np.ndarray,
    inference: str,
    ci_level: float,
    ties: str,
    where: str,
) -> dict[str, Any]:
    """Cox PH fit of time-to-escape on the predictor (+ factor); hazard ratios with CIs."""
    t = df[time].to_numpy(dtype=float)
    if np.any(t <= 0):
        raise ValueError(f"{where}: column {time!r} must be > 0, got {t[t <= 0][0]!r}")
    X = np.column_stack([x, F])
    if inference == "cluster":
        model = PHReg(t, X, status=status, ties=ties)
        res, warn = _fit_recording_warnings(lambda: model.fit(groups=codes))
        how = "robust SEs by group (Lin & Wei 1989)"
    else:
        model = PHReg(t, X, status=status, strata=codes, ties=ties)
        res, warn = _fit_recording_warnings(model.fit)
        how = "stratified by group, model-based SEs"
    params, bse = np.asarray(res.params), np.asarray(res.bse)
    q = sps.norm.ppf(0.5 + ci_level / 2.0)
    out: dict[str, Any] = {
        "method": f"Cox proportional hazards ({ties} ties), {how}",
        "n_events": int(status.sum()),
        "fit_warnings": warn,
        "coefficients": {},
    }
    for i, name in enumerate(names):
        z = params[i] / bse[i]
        out["coefficients"][name] = {
            "log_hazard_ratio": float(params[i]),
            "se": float(bse[i]),
            "hazard_ratio": float(np.exp(params[i])),
            "hr_ci_low": float(np.exp(params[i] - q * bse[i])),
            "hr_ci_high": float(np.exp(params[i] + q * bse[i])),
            "p_two_sided": float(2 * sps.norm.sf(abs(z))),
            "p_greater": float(sps.norm.sf(z)),
        }
    return out
