"""H1: smaller batches reach flatter minima, which generalise better (mediation analysis).

Keskar et al. (2017), "On large-batch training for deep learning: generalization gap and
sharp minima", report that large batches find sharper minima that test worse. We test the
chain ``log B -> log lambda_max -> test error`` at equal train loss with the product-of-
coefficients mediation model (Baron & Kenny 1986, J. Pers. Soc. Psychol. 51(6)):

    log lambda_max = i_M + a log B + theta_M' z + e_M
    test_error     = i_Y + c' log B + b log lambda_max + theta_Y' z + e_Y

with covariates z (train loss). The indirect effect ``a * b`` (error per unit log B
carried through sharpness) gets a percentile bootstrap interval and a one-sided bootstrap
p-value (Preacher & Hayes 2008, Behav. Res. Methods 40(3)). With at least ``min_clusters``
seeds the bootstrap resamples whole seeds (runs sharing a seed share initialisation and
data order, so they are not independent). With fewer seeds, resampling 3-9 clusters is
too coarse; the seed then enters as a fixed effect and the interval comes from the Monte
Carlo method, ``a* ~ a_hat + se_a T_df``, ``b* ~ b_hat + se_b T_df`` drawn independently
(MacKinnon, Lockwood & Williams 2004, Multivariate Behav. Res. 39(1); a_hat and b_hat are
uncorrelated in this model). See :mod:`landscape.stats._common` for the SE policy.

Measured calibration (simulated seed random intercepts, a = 0.5, b = 0.02 or 0): with 12
seeds x 5 batch sizes, 95% interval coverage 0.942 and one-sided size 0.052 at b = 0
(600 repeats); with 4 seeds x 5 batch sizes (fixed effects, Monte Carlo), coverage 0.944
and size 0.042 (1000 repeats). At a = b = 0 the product test is conservative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from landscape.stats._common import (
    as_frame,
    bootstrap_p,
    check_groups,
    check_level,
    check_n_boot,
    check_positive,
    cluster_bootstrap_weights,
    finite_rows,
    fit_linear,
    group_codes,
    inference_kind,
    percentile_ci,
    require_columns,
    rescale_cluster_draws,
    t_draws,
    weighted_lstsq,
)
from landscape.stats.result import HypothesisResult

__all__ = ["h1_batch_sharpness"]


def h1_batch_sharpness(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    outcome: str = "test_error",
    mediator: str = "lambda_max",
    treatment: str = "batch_size",
    covariates: Sequence[str] = ("train_loss",),
    group: str = "seed",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    ci_level: float = 0.95,
    min_clusters: int = 10,
) -> HypothesisResult:
    """Test H1: the effect of batch size on test error runs through lambda_max.

    Args:
        data: One row per training run.
        outcome: Test metric column (e.g. test error, fraction in [0, 1]).
        mediator: Sharpness column (top Hessian eigenvalue, > 0); enters as its log.
        treatment: Batch size column (> 0); enters as its natural log.
        covariates: Extra regressors of both models (train loss, so that runs are
            compared at equal fit).
        group: Seed column; defines clusters (or fixed effects when fewer than
            ``min_clusters`` seeds).
        n_boot: Bootstrap resamples (or Monte Carlo draws, with few seeds) for the
            indirect effect.
        seed: Seed of the bootstrap generator.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the reported intervals.
        min_clusters: Seeds needed for cluster-robust inference.

    Returns:
        Result with ``effect = a * b`` (outcome units per unit of log B), its percentile
        bootstrap CI and the one-sided bootstrap p-value of ``a * b <= 0``. Supported
        needs p_holm <= alpha and the CI above 0. ``extra`` holds both fitted models
        (R^2, coefficients with CIs and p), a, b, the direct and total effects, the
        proportion mediated and a Sobel z-test for comparison.
    """
    where = "h1_batch_sharpness"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    check_n_boot(n_boot)
    covariates = tuple(covariates)
    df = as_frame(data)
    require_columns(df, [outcome, mediator, treatment, *covariates, group], where)
    df, n_dropped = finite_rows(df, [outcome, mediator, treatment, *covariates], [group])
    check_positive(df, mediator, where)
    check_positive(df, treatment, where)
    codes, n_groups = group_codes(df[group])
    check_groups(n_groups, group, where)
    if df[treatment].nunique() < 2:
        raise ValueError(f"{where}: {treatment!r} must take >= 2 distinct values")
    inference = inference_kind(n_groups, min_clusters)

    log_b = np.log(df[treatment].to_numpy(dtype=float))
    log_m = np.log(df[mediator].to_numpy(dtype=float))
    y = df[outcome].to_numpy(dtype=float)
    z = {c: df[c].to_numpy(dtype=float) for c in covariates}
    xb, xm = f"log_{treatment}", f"log_{mediator}"

    fit_m = fit_linear(log_m, {xb: log_b, **z}, codes, n_groups, inference)
    fit_y = fit_linear(y, {xb: log_b, xm: log_m, **z}, codes, n_groups, inference)
    fit_c = fit_linear(y, {xb: log_b, **z}, codes, n_groups, inference)
    a, b = fit_m.estimate(xb), fit_y.estimate(xm)
    indirect = a * b

    rng = np.random.default_rng(seed)
    n = len(df)
    if inference == "cluster":
        scheme = "cluster bootstrap"
        W = cluster_bootstrap_weights(codes, n_groups, n_boot, rng)
        a_star = weighted_lstsq(fit_m.design, log_m, W)[:, fit_m.index(xb)]
        b_star = weighted_lstsq(fit_y.design, y, W)[:, fit_y.index(xm)]
        a_star = rescale_cluster_draws(a_star, a, n, fit_m.design.shape[1], n_groups)
        b_star = rescale_cluster_draws(b_star, b, n, fit_y.design.shape[1], n_groups)
    else:
        scheme = "monte carlo"
        a_star = t_draws(a, fit_m.se(xb), fit_m.df, n_boot, rng)
        b_star = t_draws(b, fit_y.se(xm), fit_y.df, n_boot, rng)
    draws = a_star * b_star
    ci_low, ci_high = percentile_ci(draws, ci_level)
    p_boot = bootstrap_p(draws, "greater")

    se_a, se_b = fit_m.se(xb), fit_y.se(xm)
    sobel_se = float(np.sqrt(a**2 * se_b**2 + b**2 * se_a**2))
    sobel_z = indirect / sobel_se if sobel_se > 0 else float("nan")
    total = fit_c.estimate(xb)
    if inference == "cluster":
        inference_text = f"CR1 cluster-robust SEs by {group} with t(G-1)"
        ci_text = (
            f"cluster bootstrap over {group} ({n_boot} resamples, deviations scaled by the "
            "CR1 factor): percentile CI and one-sided bootstrap p for a*b"
        )
    else:
        inference_text = (
            f"{group} fixed effects, classical SEs, t(n-p) (fewer than {min_clusters} seeds)"
        )
        ci_text = (
            f"Monte Carlo product-of-t draws ({n_boot}): percentile CI and one-sided p for a*b"
        )
    return HypothesisResult.build(
        name="H1",
        null=(
            f"Batch size has no positive indirect effect on {outcome} through "
            f"{mediator}: a*b <= 0 at equal {', '.join(covariates) or 'covariates'}."
        ),
        alternative=(
            f"a*b > 0: larger batches raise {mediator} (a > 0), and higher {mediator} "
            f"raises {outcome} (b > 0), so smaller batches reach flatter minima that "
            "test better."
        ),
        test=f"Product-of-coefficients mediation with OLS ({inference_text}); {ci_text}",
        n_runs=len(df),
        n_groups=n_groups,
        effect=indirect,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_boot,
        alpha=alpha,
        ci_level=ci_level,
        side="greater",
        null_value=0.0,
        effect_name=f"indirect effect a*b of log({treatment}) on {outcome} via log({mediator})",
        requires_ci_excluding_null=True,
        extra={
            "outcome_model": fit_y.summary(ci_level),
            "mediator_model": fit_m.summary(ci_level),
            "total_model": fit_c.summary(ci_level),
            "a": a,
            "a_p_greater": fit_m.one_sided_p(xb, "greater"),
            "b": b,
            "b_p_greater": fit_y.one_sided_p(xm, "greater"),
            "direct_effect": fit_y.estimate(xb),
            "total_effect": total,
            "proportion_mediated": indirect / total if total != 0 else float("nan"),
            "sobel_z": sobel_z,
            "sobel_p_greater": float(sps.norm.sf(sobel_z)),
            "inference": inference,
            "n_boot": n_boot,
            "n_boot_valid": int(np.isfinite(draws).sum()),
            "interval_method": scheme,
            "n_dropped_nonfinite": n_dropped,
        },
    )
