"""How well does each curvature measure predict generalisation? Regressions and Kendall's tau.

Following Jiang et al. (2020), "Fantastic generalization measures and where to find
them" (ICLR), a measure is scored by Kendall's rank correlation tau between the measure
and the generalisation target over trained networks, which is invariant to monotone
rescaling of either. Beside tau (tau-b, ties handled; Kendall 1945) we fit the OLS line
``target = c + slope * measure`` and report R^2, the slope, its CI and p-value.

The tau interval is a percentile bootstrap. Resamples are represented by row counts w,
so ``tau_b(w) = sum_ij w_i w_j sx_ij sy_ij / sqrt(sum_ij w_i w_j sx_ij^2 *
sum_ij w_i w_j sy_ij^2)`` with ``sx_ij = sign(x_i - x_j)``: copies of one row are tied
in both variables and drop out, exactly as tau-b treats ties, and every resample costs
two matrix products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps

from landscape.stats._common import (
    as_frame,
    bootstrap_p_two_sided,
    check_groups,
    check_level,
    check_n_boot,
    check_positive,
    cluster_bootstrap_weights,
    finite_rows,
    group_codes,
    percentile_ci,
    require_columns,
)
from landscape.stats.result import HypothesisResult

__all__ = ["curvature_regressions", "kendall_tau_b_weighted"]

_MIN_RUNS = 5
_CHUNK = 256


def kendall_tau_b_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of (x, y) with rows repeated ``weights`` times.

    Args:
        x: First variable, shape (n,).
        y: Second variable, shape (n,).
        weights: Non-negative integer row counts, shape (B, n) (or (n,)).

    Returns:
        tau-b per row of ``weights``, shape (B,) (a scalar array for 1-D weights); NaN
        where one variable is constant over the rows drawn.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    out = np.empty(W.shape[0])
    for start in range(0, W.shape[0], _CHUNK):
        w = W[start : start + _CHUNK]
        num = np.einsum("bi,bi->b", w @ (sx * sy), w)
        den_x = np.einsum("bi,bi->b", w @ np.abs(sx), w)
        den_y = np.einsum("bi,bi->b", w @ np.abs(sy), w)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + _CHUNK] = num / np.sqrt(den_x * den_y)
    out[~np.isfinite(out)] = np.nan
    return out if np.ndim(weights) == 2 else out[0]


def curvature_regressions(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    measures: Sequence[str],
    target: str | Sequence[str] = "test_error",
    *,
    log_measure: bool = False,
    group: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> tuple[HypothesisResult, ...]:
    """Score each measure as a predictor of each target (test error, generalisation gap).

    Args:
        data: One row per trained network.
        measures: Measure columns (lambda_max, trace, logdet, ...).
        target: Target column or columns (``"test_error"``, ``"gen_gap"``).
        log_measure: Regress on log(measure) (the measure must be > 0); tau is unchanged.
        group: Optional seed column. None treats rows as independent (as Jiang et al.).
            When given, the slope gets CR1 cluster-robust SEs with t(G-1), and the tau
            bootstrap resamples whole groups; ``p_value`` is then the two-sided bootstrap
            p of tau (the scipy p, which assumes independent rows, stays in ``extra``).
        n_boot: Bootstrap resamples for the tau interval.
        seed: Seed of the bootstrap generator.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the intervals.

    Returns:
        One result per (target, measure), targets outer: ``effect`` = Kendall tau-b with
        its percentile bootstrap CI and two-sided p-value (null tau = 0). ``extra`` holds
        R^2, slope (target units per measure unit), its CI and p, and the n used.
    """
    where = "curvature_regressions"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    check_n_boot(n_boot)
    if isinstance(measures, str):
        raise ValueError(
            f"{where}: measures must be a sequence of column names, got the string {measures!r}"
        )
    measures = tuple(measures)
    targets = (target,) if isinstance(target, str) else tuple(target)
    if not measures or not targets:
        raise ValueError(
            f"{where}: need at least one measure and one target, got {measures} and {targets}"
        )
    df_all = as_frame(data)
    require_columns(df_all, [*measures, *targets] + ([group] if group else []), where)
    rng = np.random.default_rng(seed)
    out = []
    for tgt in targets:
        for meas in measures:
            df, n_dropped = finite_rows(df_all, [meas, tgt], [group] if group else [])
            if len(df) < _MIN_RUNS:
                raise ValueError(
                    f"{where}: too few runs for {meas!r} vs {tgt!r}: {len(df)} finite rows, "
                    f"need >= {_MIN_RUNS}"
                )
            if log_measure:
                check_positive(df, meas, where)
            out.append(
                _one(df, meas, tgt, log_measure, group, n_boot, rng, alpha, ci_level, n_dropped, where)
            )
    return tuple(out)


def _one(
    df: pd.DataFrame,
    meas: str,
    tgt: str,
    log_measure: bool,
    group: str | None,
    n_boot: int,
    rng: np.random.Generator,
    alpha: float,
    ci_level: float,
    n_dropped: int,
    where: str,
) -> HypothesisResult:
    x_raw = df[meas].to_numpy(dtype=float)
    y = df[tgt].to_numpy(dtype=float)
    if np.ptp(x_raw) == 0 or np.ptp(y) == 0:
        raise ValueError(f"{where}: {meas!r} and {tgt!r} must both vary across runs")
    x = np.log(x_raw) if log_measure else x_raw
    n = len(df)
    X = sm.add_constant(x, has_constant="add")
    if group is None:
        n_groups = n
        res = sm.OLS(y, X).fit(use_t=True)
        ref_df = res.df_resid
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    else:
        codes, n_groups = group_codes(df[group])
        check_groups(n_groups, group, where)
        res = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
        ref_df = n_groups - 1
        W = cluster_bootstrap_weights(codes, n_groups, n_boot, rng)
    tau_scipy = sps.kendalltau(x_raw, y)
    tau = float(kendall_tau_b_weighted(x_raw, y, np.ones(n)))
    draws = kendall_tau_b_weighted(x_raw, y, W)
    ci_low, ci_high = percentile_ci(draws, ci_level)
    p_boot = bootstrap_p_two_sided(draws, 0.0)
    p_value = float(tau_scipy.pvalue) if group is None else p_boot
    ci = np.asarray(res.conf_int(alpha=1.0 - ci_level))
    xname = f"log({meas})" if log_measure else meas
    return HypothesisResult.build(
        name=f"tau[{meas},{tgt}]",
        null=f"{meas} and {tgt} are not rank-correlated: Kendall tau = 0.",
        alternative=f"{meas} and {tgt} are rank-correlated: Kendall tau != 0.",
        test=(
            "Kendall tau-b "
            + (
                "(scipy p, independent runs)"
                if group is None
                else f"(cluster bootstrap p by {group})"
            )
            + f"; percentile bootstrap CI ({n_boot} resamples); OLS of {tgt} on {xname}"
        ),
        n_runs=n,
        n_groups=n_groups,
        effect=tau,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        alpha=alpha,
        ci_level=ci_level,
        side="two-sided",
        null_value=0.0,
        effect_name=f"Kendall tau-b between {meas} and {tgt}",
        extra={
            "r2": float(res.rsquared),
            "slope": float(res.params[1]),
            "slope_se": float(res.bse[1]),
            "slope_ci_low": float(ci[1, 0]),
            "slope_ci_high": float(ci[1, 1]),
            "slope_p_two_sided": float(res.pvalues[1]),
            "intercept": float(res.params[0]),
            "regressor": xname,
            "slope_df": float(ref_df),
            "tau_p_scipy": float(tau_scipy.pvalue),
            "tau_p_bootstrap": p_boot,
            "n_boot_valid": int(np.isfinite(draws).sum()),
            "n_dropped_nonfinite": n_dropped,
        },
    )
