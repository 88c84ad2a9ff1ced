"""Scaling law of the Hessian spectral norm with width and depth.

The research plan conjectures ``||H||_2 = A n^alpha e^(beta L)`` with alpha in (0, 1)
(sublinear in width n, after the two-layer analysis of Mei, Montanari & Nguyen 2018)
and beta > 0 (exponential in depth L). Taking logs gives a linear model,

    log ||H||_2 = log A + alpha log n + beta L + e,

fitted by OLS. ``alpha in (0, 1)`` is tested with two one-sided tests (TOST; Schuirmann
1987, J. Pharmacokinet. Biopharm. 15(6)): H0 alpha <= 0 or alpha >= 1, p = max of the two
one-sided p-values; ``beta > 0`` with a one-sided t-test. The rival pure power law in
depth, ``log ||H||_2 = a + alpha log n + gamma log L``, is fitted to the same response
and the two are compared by AIC and BIC (Akaike 1974; Schwarz 1978).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm

from landscape.stats._common import (
    as_frame,
    check_groups,
    check_level,
    check_positive,
    finite_rows,
    group_codes,
    require_columns,
    t_tail,
)
from landscape.stats.result import HypothesisResult, plain

__all__ = ["AIC_TIE", "ScalingLawFit", "aic_preference", "config_means", "scaling_law_fit"]



AIC_TIE = 2.0
"""AIC differences below this separate no two models (Burnham & Anderson 2002, sec. 2.6)."""


def aic_preference(aic_exponential: float, aic_power: float, tie: float = AIC_TIE) -> str:
    """``"exponential"`` or ``"power"`` (the lower AIC) when they differ by at least ``tie``, else ``"tie"``."""
    if not abs(aic_exponential - aic_power) >= tie:
        return "tie"
    return "exponential" if aic_exponential < aic_power else "power"

@dataclasses.dataclass(frozen=True)
class ScalingLawFit:
    """Fit of ``log ||H||_2 = log A + alpha log n + beta L`` and of the power-law rival.

    Attributes:
        alpha: Width exponent. alpha_ci: Its two-sided ``ci_level`` interval.
        beta: Depth rate (per layer). beta_ci: Its interval.
        log_a: Intercept log A. log_a_ci: Its interval.
        p_alpha_positive: One-sided p of H0 alpha <= 0.
        p_alpha_below_one: One-sided p of H0 alpha >= 1.
        p_alpha_in_unit_interval: TOST p = max of the two above.
        p_beta_positive: One-sided p of H0 beta <= 0.
        r2: R^2 of the exponential-depth model on the log scale.
        residual_sd: Residual standard deviation on the log scale.
        residuals: Log-scale residuals, one per row used, in ``row_index`` order.
        row_index: Index labels of the rows used (non-finite rows are dropped).
        aic: AIC of the exponential-depth model. bic: Its BIC.
        gamma: Depth exponent of the power-law model. gamma_ci: Its interval.
        alpha_power: Width exponent within the power-law model.
        aic_power: AIC of the power-law model. bic_power: Its BIC.
        preferred: ``"exponential"`` or ``"power"``, the lower-AIC model, or ``"tie"`` when the
            AICs differ by less than :data:`AIC_TIE` (Burnham & Anderson 2002, sec. 2.6: models
            within 2 of each other have substantial support both).
        n_runs: Rows used. n_groups: Groups (seeds) when ``group`` was given, else rows.
        df: Degrees of freedom of the t reference. inference: How SEs were computed.
        ci_level: Coverage of the intervals. alpha_level: Level for ``as_hypotheses``.
    """

    alpha: float
    alpha_ci: tuple[float, float]
    beta: float
    beta_ci: tuple[float, float]
    log_a: float
    log_a_ci: tuple[float, float]
    p_alpha_positive: float
    p_alpha_below_one: float
    p_alpha_in_unit_interval: float
    p_beta_positive: float
    r2: float
    residual_sd: float
    residuals: tuple[float, ...]
    row_index: tuple[Any, ...]
    aic: float
    bic: float
    gamma: float
    gamma_ci: tuple[float, float]
    alpha_power: float
    aic_power: float
    bic_power: float
    preferred: str
    n_runs: int
    n_groups: int
    df: float
    inference: str
    ci_level: float
    alpha_level: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary of every field."""
        return plain(dataclasses.asdict(self))

    def as_hypotheses(self, label: str | None = None) -> tuple[HypothesisResult, HypothesisResult]:
        """The two scaling claims as results ready for :func:`landscape.stats.holm`.

        Args:
            label: Optional response name put into the result names
                (``scaling[<label>:alpha]``), so several fits can share one Holm family.
        """
        tag = f"{label}:" if label else ""
        common: dict[str, Any] = {
            "n_runs": self.n_runs,
            "n_groups": self.n_groups,
            "alpha": self.alpha_level,
            "ci_level": self.ci_level,
            "extra": {"inference": self.inference, "df": self.df},
        }
        width = HypothesisResult.build(
            name=f"scaling[{tag}alpha]",
            null="The width exponent alpha is <= 0 or >= 1.",
            alternative="||H||_2 grows sublinearly with width: 0 < alpha < 1.",
            test="two one-sided t-tests (TOST) on the OLS slope of log||H||_2 on log n",
            effect=self.alpha,
            ci_low=self.alpha_ci[0],
            ci_high=self.alpha_ci[1],
            p_value=self.p_alpha_in_unit_interval,
            side="interval",
            null_value=float("nan"),
            effect_name="width exponent alpha",
            **common,
        )
        depth = HypothesisResult.build(
            name=f"scaling[{tag}beta]",
            null="||H||_2 does not grow exponentially with depth: beta <= 0.",
            alternative="||H||_2 grows exponentially with depth: beta > 0.",
            test="one-sided t-test on the OLS slope of log||H||_2 on L",
            effect=self.beta,
            ci_low=self.beta_ci[0],
            ci_high=self.beta_ci[1],
            p_value=self.p_beta_positive,
            side="greater",
            null_value=0.0,
            effect_name="depth rate beta (per layer)",
            **common,
        )
        return width, depth


def scaling_law_fit(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    target: str = "lambda_max",
    width: str = "width",
    depth: str = "depth",
    group: str | None = None,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> ScalingLawFit:
    """Fit ``||H||_2 = A n^alpha e^(beta L)`` on the log scale and test its claims.

    Args:
        data: One row per trained network.
        target: Spectral-norm column (> 0; the top Hessian eigenvalue at a minimum).
        width: Width column n (> 0).
        depth: Depth column L (> 0, number of layers or blocks).
        group: Optional seed column: when given, CR1 cluster-robust SEs by group with
            t(G-1); otherwise classical OLS SEs with t(n - 3).
        alpha: Level used by :meth:`ScalingLawFit.as_hypotheses`.
        ci_level: Coverage of the intervals.
    """
    where = "scaling_law_fit"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    df = as_frame(data)
    require_columns(df, [target, width, depth] + ([group] if group else []), where)
    df_used, _ = finite_rows(
        df.reset_index(names="_row"), [target, width, depth], [group] if group else []
    )
    for col in (target, width, depth):
        check_positive(df_used, col, where)
    for col in (width, depth):
        if df_used[col].nunique() < 2:
            raise ValueError(
                f"{where}: {col!r} must take >= 2 distinct values, got {df_used[col].nunique()}"
            )
    n = len(df_used)
    if n < 5:
        raise ValueError(f"{where}: too few runs: {n} finite rows, need >= 5")
    log_h = np.log(df_used[target].to_numpy(dtype=float))
    log_n = np.log(df_used[width].to_numpy(dtype=float))
    L = df_used[depth].to_numpy(dtype=float)
    X_exp = np.column_stack([np.ones(n), log_n, L])
    X_pow = np.column_stack([np.ones(n), log_n, np.log(L)])
    for X, label in ((X_exp, "log n and L"), (X_pow, "log n and log L")):
        if np.linalg.matrix_rank(X) < 3:
            raise ValueError(f"{where}: {label} are collinear; vary width and depth independently")

    if group is None:
        fit: dict[str, Any] = {"use_t": True}
        n_groups = n
        inference = "classical OLS SEs, t(n-3)"
    else:
        codes, n_groups = group_codes(df_used[group])
        check_groups(n_groups, group, where)
        fit = {"cov_type": "cluster", "cov_kwds": {"groups": codes}, "use_t": True}
        inference = f"CR1 cluster-robust SEs by {group}, t(G-1)"
    res = sm.OLS(log_h, X_exp).fit(**fit)
    res_pow = sm.OLS(log_h, X_pow).fit(**fit)
    dof = float(getattr(res, "df_resid_inference", res.df_resid))
    ci = np.asarray(res.conf_int(alpha=1.0 - ci_level))
    ci_pow = np.asarray(res_pow.conf_int(alpha=1.0 - ci_level))
    a_hat, a_se = float(res.params[1]), float(res.bse[1])
    b_hat, b_se = float(res.params[2]), float(res.bse[2])
    p_pos = t_tail(a_hat, a_se, dof, "greater")
    p_below = t_tail(a_hat, a_se, dof, "less", null=1.0)
    return ScalingLawFit(
        alpha=a_hat,
        alpha_ci=(float(ci[1, 0]), float(ci[1, 1])),
        beta=b_hat,
        beta_ci=(float(ci[2, 0]), float(ci[2, 1])),
        log_a=float(res.params[0]),
        log_a_ci=(float(ci[0, 0]), float(ci[0, 1])),
        p_alpha_positive=p_pos,
        p_alpha_below_one=p_below,
        p_alpha_in_unit_interval=max(p_pos, p_below),
        p_beta_positive=t_tail(b_hat, b_se, dof, "greater"),
        r2=float(res.rsquared),
        residual_sd=float(np.sqrt(res.scale)),
        residuals=tuple(float(r) for r in res.resid),
        row_index=tuple(df_used["_row"].tolist()),
        aic=float(res.aic),
        bic=float(res.bic),
        gamma=float(res_pow.params[2]),
        gamma_ci=(float(ci_pow[2, 0]), float(ci_pow[2, 1])),
        alpha_power=float(res_pow.params[1]),
        aic_power=float(res_pow.aic),
        bic_power=float(res_pow.bic),
        preferred=aic_preference(float(res.aic), float(res_pow.aic)),
        n_runs=n,
        n_groups=n_groups,
        df=dof,
        inference=inference,
        ci_level=ci_level,
        alpha_level=alpha,
    )


def config_means(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    target: str,
    *,
    keys: Sequence[str] = ("width", "depth"),
    geometric: bool = True,
) -> pd.DataFrame:
    """One row per configuration: the mean of ``target`` over its seeds.

    The geometric mean (``exp`` of the mean log) matches a fit on the log scale: the OLS
    on config means then weighs every configuration once, whatever its seed count, and
    its residuals hold lack of fit plus the seed noise left in each mean.

    Args:
        data: One row per seed run, with ``keys`` and ``target`` columns.
        target: Column to average (> 0 when ``geometric``); non-finite values are dropped.
        keys: Columns that identify a configuration.
        geometric: Geometric (True) or arithmetic mean.

    Returns:
        Columns ``keys``, ``target`` (the mean), ``n_seeds`` and ``sd_log`` (sd of the log
        values over seeds; NaN for one seed or an arithmetic mean), sorted by ``keys``.
    """
    where = "config_means"
    df = as_frame(data)
    require_columns(df, [*keys, target], where)
    df = df[np.isfinite(pd.to_numeric(df[target], errors="coerce").astype(float))].copy()
    df[target] = df[target].astype(float)
    if geometric:
        check_positive(df, target, where)
        df["_v"] = np.log(df[target])
    else:
        df["_v"] = df[target]
    grouped = df.groupby(list(keys), sort=True)["_v"]
    out = grouped.agg(["mean", "count", "std"]).reset_index()
    out[target] = np.exp(out["mean"]) if geometric else out["mean"]
    out["n_seeds"] = out["count"].astype(int)
    out["sd_log"] = out["std"] if geometric else float("nan")
    return out[[*keys, target, "n_seeds", "sd_log"]]
