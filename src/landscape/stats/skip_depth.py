"""H2's tests: skip connections flatten more the deeper the network, normalisation arms,
and barrier comparisons over seed pairs that share seeds.

Li, Xu, Taylor, Studer & Goldstein 2018 (*Visualizing the loss landscape of neural nets*,
NeurIPS) see no landscape difference between ResNet-20 and its plain twin on CIFAR-10 but a
chaotic, sharp plain landscape at 56 and 110 layers: the hypothesis is an interaction, the
skip effect grows with depth. :func:`depth_skip_interaction` tests it by OLS of
``log(measure)`` on ``log2(depth)``, ``skip`` and their product with seed fixed effects
(or cluster-robust by seed with enough seeds; the policy of
:mod:`landscape.stats._common`); the interaction coefficient is the change of the skip
effect (a log ratio) per doubling of depth.

:func:`norm_flattens` compares normalisation arms with the unnormalised arm, paired by
seed, by the intersection-union rule (Berger 1982) over the arms.

:func:`shared_seed_barrier_test` compares barriers of two architectures on the same seed
pairs. The pairs (i, j) of n seeds share seeds, so their differences are correlated (a seed
whose minimum sits in an odd place raises every pair it is in) and a t-test that treats
the n(n-1)/2 pairs as independent over-rejects (on simulated null data with seed effects,
at n = 5: 18-25% at a nominal 5%). The mean over pairs is a U-statistic of the seeds; its
variance is estimated by the delete-one-seed jackknife (Efron & Stein 1981, Ann. Stat.
9(3): the jackknife variance is biased upward, so the test is conservative) with a
t(n - 1) reference.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from landscape.stats._common import (
    as_frame,
    check_groups,
    check_level,
    check_positive,
    finite_rows,
    fit_linear,
    group_codes,
    inference_kind,
    require_columns,
    t_tail,
)
from landscape.stats.paired import paired_test
from landscape.stats.replication import t_test_power
from landscape.stats.result import HypothesisResult

__all__ = ["depth_skip_interaction", "norm_flattens", "shared_seed_barrier_test", "pair_seeds", "all_pairs",
           "interaction_power"]

_INTERACTION = "skip_x_log2_depth"
_PAIR = re.compile(r"^s(\d+)-s(\d+)$")


def _bool01(values: pd.Series, column: str, where: str) -> np.ndarray:
    ok = values.map(lambda v: isinstance(v, (bool, np.bool_)) or v in (0, 1))
    if not ok.all():
        raise ValueError(f"{where}: column {column!r} must hold booleans (or 0/1), got {values[~ok].iloc[0]!r}")
    return values.astype(bool).to_numpy()


def interaction_power(effect: float, se: float, df: float, alpha: float) -> float:
    """Power of the one-sided t-test of ``coef < 0`` at level ``alpha`` when the true coefficient
    is ``effect`` and its standard error ``se`` (:func:`landscape.stats.replication.t_test_power`);
    NaN where the design gives no standard error."""
    check_level("alpha", alpha)
    if not (math.isfinite(se) and se > 0 and df > 0):
        return float("nan")
    return t_test_power(effect, se, df, alpha=alpha, side="less")


def depth_skip_interaction(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    measure: str = "lambda_max",
    *,
    depth: str = "depth",
    skip: str = "skip",
    group: str = "seed",
    log_scale: bool = True,
    min_clusters: int = 10,
    alpha: float = 0.05,
    ci_level: float = 0.95,
    effect_of_interest: float | None = None,
    beside: Sequence[str] = ("train_loss", "test_error"),
    adjust: Sequence[str] = ("train_loss",),
) -> HypothesisResult:
    """Test H2's interaction: the skip effect on ``log(measure)`` grows (more negative) with depth.

    Model: ``log y = b0 + b1 x + b2 s + b3 s x + seed effects + e`` with ``x = log2(depth)
    - mean(log2(depth))`` and ``s = 1`` for skip. ``b2`` is the skip effect (log ratio skip
    / plain) at the mean log depth, ``b3`` its change per doubling of depth; H2 predicts
    ``b3 < 0`` (one-sided t-test).

    Args:
        data: One row per trained network (every (depth, skip) cell, several seeds).
        measure: Column compared (lambda_max, trace: > 0 and on the log scale); lower is flatter.
        depth: Depth column (> 0, at least two distinct values).
        skip: Boolean column, True with skip connections.
        group: Seed column (fixed effects below ``min_clusters`` seeds, else CR1 clusters).
        log_scale: Model ``log(measure)`` (True) or the measure itself (counts).
        min_clusters: Seeds needed for cluster-robust inference.
        alpha: Significance level of the verdict.
        ci_level: Coverage of every interval.
        effect_of_interest: An interaction (log units per doubling, < 0) whose power is
            reported in ``extra["power"]``; None: not reported.
        beside: Columns summarised per cell beside the measure (train loss, test error), when present.
        adjust: Covariates of a sensitivity fit (``extra["adjusted"]``): the same model plus
            these columns (train loss: a plain deep net that trains worse may look flatter for
            that reason alone). Skipped when a column is absent or not finite everywhere.

    Returns:
        Result with ``effect = b3``, its t interval and one-sided p. ``extra``: the
        coefficient table, the skip effect per depth (paired over seeds: mean log ratio,
        t interval, n), cell summaries (geometric mean of the measure, mean of ``beside``),
        power.
    """
    where = "depth_skip_interaction"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    df = as_frame(data)
    require_columns(df, [measure, depth, skip, group], where)
    df, n_dropped = finite_rows(df, [measure, depth], [skip, group])
    if log_scale:
        check_positive(df, measure, where)
    check_positive(df, depth, where)
    s = _bool01(df[skip], skip, where).astype(float)
    if s.min() == s.max():
        raise ValueError(f"{where}: need runs with both {skip}=True and {skip}=False")
    if df[depth].nunique() < 2:
        raise ValueError(f"{where}: {depth!r} must take >= 2 distinct values, got {sorted(df[depth].unique())}")
    codes, n_groups = group_codes(df[group])
    check_groups(n_groups, group, where)
    inference = inference_kind(n_groups, min_clusters)
    log2d = np.log2(df[depth].to_numpy(dtype=float))
    x = log2d - log2d.mean()
    raw = df[measure].to_numpy(dtype=float)
    y = np.log(raw) if log_scale else raw
    fit = fit_linear(y, {"log2_depth": x, "skip": s, _INTERACTION: s * x}, codes, n_groups, inference)
    b3, se3 = fit.estimate(_INTERACTION), fit.se(_INTERACTION)
    q = sps.t.ppf(0.5 + ci_level / 2.0, fit.df)
    p = t_tail(b3, se3, fit.df, "less")

    adjusted: dict[str, Any] | None = None
    covs = [col for col in adjust if col in df]
    if covs and all(np.isfinite(pd.to_numeric(df[col], errors="coerce")).all() for col in covs):
        try:
            fa = fit_linear(y, {"log2_depth": x, "skip": s, _INTERACTION: s * x,
                                **{col: pd.to_numeric(df[col]).to_numpy(dtype=float) for col in covs}}, codes, n_groups, inference)
        except ValueError as exc:  # e.g. a covariate collinear with the design
            adjusted = {"covariates": covs, "status": f"not fitted: {exc}"}
        else:
            ea, sa = fa.estimate(_INTERACTION), fa.se(_INTERACTION)
            qa = sps.t.ppf(0.5 + ci_level / 2.0, fa.df)
            adjusted = {"covariates": covs, "status": "fitted", "estimate": ea, "ci_low": ea - qa * sa, "ci_high": ea + qa * sa,
                        "p_less": t_tail(ea, sa, fa.df, "less"), "coefficients": fa.summary(ci_level)["coefficients"]}
    per_depth: dict[str, Any] = {}
    table = df.assign(_y=y, _s=s.astype(bool))
    for d, rows in table.groupby(depth, sort=True):
        pairs = rows[rows["_s"]].merge(rows[~rows["_s"]], on=group, suffixes=("_skip", "_plain"))
        entry: dict[str, Any] = {"n": len(pairs)}
        if len(pairs) >= 3:
            ps = paired_test((pairs["_y_skip"] - pairs["_y_plain"]).to_numpy(), "less", ci_level, effect_size_ci=False)
            entry.update(log_ratio=ps.mean, ci_low=ps.ci_low, ci_high=ps.ci_high, p_less=ps.p_t)
            if log_scale:
                entry.update(ratio=math.exp(ps.mean), ratio_ci=(math.exp(ps.ci_low), math.exp(ps.ci_high)))
        per_depth[str(int(d)) if float(d).is_integer() else str(d)] = entry
    cells: list[dict[str, Any]] = []
    for (d, sk), rows in table.groupby([depth, "_s"], sort=True):
        cell = {"depth": float(d), "skip": bool(sk), "n": len(rows),
                f"{'geomean' if log_scale else 'mean'}_{measure}": float(np.exp(rows["_y"].mean()) if log_scale else rows["_y"].mean()),
                f"sd_{'log_' if log_scale else ''}{measure}": float(rows["_y"].std(ddof=1)) if len(rows) > 1 else float("nan")}
        for col in beside:
            if col in rows:
                vals = pd.to_numeric(rows[col], errors="coerce")
                cell[f"mean_{col}"], cell[f"max_{col}"] = float(vals.mean()), float(vals.max())
        cells.append(cell)
    units = f"log({measure})" if log_scale else measure
    inference_text = (f"CR1 cluster-robust SEs by {group}, t(G-1)" if inference == "cluster"
                      else f"{group} fixed effects, classical SEs, t(n-p)")
    return HypothesisResult.build(
        name=f"H2[{measure}]",
        null=f"The skip effect on {units} does not become more negative with depth (interaction >= 0).",
        alternative=(f"Skip connections lower {measure} more the deeper the network: the skip - plain difference in "
                     f"{units} falls with log2(depth) (interaction < 0)."),
        test=(f"OLS of {units} on centred log2({depth}), {skip} and their product ({inference_text}); "
              "one-sided t-test of the interaction"),
        n_runs=len(df),
        n_groups=n_groups,
        effect=b3,
        ci_low=b3 - q * se3,
        ci_high=b3 + q * se3,
        p_value=p,
        alpha=alpha,
        ci_level=ci_level,
        side="less",
        null_value=0.0,
        effect_name=f"change of the skip effect on {units} per doubling of depth",
        extra={
            "model": fit.summary(ci_level),
            "skip_effect_at_mean_depth": fit.estimate("skip"),
            "ratio_change_per_doubling": math.exp(b3) if log_scale else float("nan"),
            "se": se3,
            "df": fit.df,
            "per_depth": per_depth,
            "cells": cells,
            "depths": sorted(float(v) for v in df[depth].unique()),
            "inference": inference,
            "power": ({"effect": effect_of_interest, "power": interaction_power(effect_of_interest, se3, fit.df, alpha)}
                      if effect_of_interest is not None else None),
            "adjusted": adjusted,
            "n_dropped_nonfinite": n_dropped,
        },
    )


def norm_flattens(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    measure: str = "lambda_max",
    *,
    norm: str = "norm",
    reference: str = "none",
    group: str = "seed",
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Test H2's normalisation half: every normalised arm has lower ``measure`` than ``reference``.

    Per arm, the paired differences ``log(measure_arm) - log(measure_reference)`` over seeds
    are tested one-sided (< 0); the p-value is the intersection-union ``max_k p_k``
    (Berger 1982, Technometrics 24(4)), and the reported effect and interval are the
    binding arm's. All arms are in ``extra["arms"]``.

    Args:
        data: One row per network of one architecture and recipe search, differing in ``norm``.
        measure: Column compared, > 0.
        norm: Column naming the normalisation (``none``, ``bn``, ``ln``).
        reference: The unnormalised arm.
        group: Seed column (the pairing).
        alpha: Significance level of the verdict.
        ci_level: Coverage of the t intervals.
    """
    where = "norm_flattens"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    df = as_frame(data)
    require_columns(df, [measure, norm, group], where)
    df, n_dropped = finite_rows(df, [measure], [norm, group])
    check_positive(df, measure, where)
    arms = sorted(set(df[norm]) - {reference})
    if reference not in set(df[norm]) or not arms:
        raise ValueError(f"{where}: need the reference arm {reference!r} and at least one other; got {sorted(set(df[norm]))}")
    if df.duplicated([norm, group]).any():
        raise ValueError(f"{where}: more than one row per ({norm}, {group}); filter to one architecture first")
    y = df.assign(_y=np.log(df[measure].to_numpy(dtype=float)))
    base = y[y[norm] == reference][[group, "_y"]]
    results = {}
    for arm in arms:
        pairs = y[y[norm] == arm][[group, "_y"]].merge(base, on=group, suffixes=("_arm", "_ref"))
        if len(pairs) < 3:
            raise ValueError(f"{where}: too few seeds: {len(pairs)} with both {arm!r} and {reference!r}, need >= 3")
        results[arm] = paired_test((pairs["_y_arm"] - pairs["_y_ref"]).to_numpy(), "less", ci_level)
    binding = max(results, key=lambda k: results[k].p_t)
    main = results[binding]
    return HypothesisResult.build(
        name="H2[norm]",
        null=f"At least one normalisation ({arms}) does not lower log({measure}) against {reference!r}.",
        alternative=f"Every normalisation of {arms} lowers {measure} against {reference!r} (paired over seeds).",
        test="one-sided paired t-tests over seeds per arm, intersection-union (p = max p_k)",
        n_runs=main.n,
        n_groups=int(df[group].nunique()),
        effect=main.mean,
        ci_low=main.ci_low,
        ci_high=main.ci_high,
        p_value=main.p_t,
        alpha=alpha,
        ci_level=ci_level,
        side="less",
        null_value=0.0,
        effect_name=f"mean log ratio {measure}({binding}) / {measure}({reference}) (the binding arm)",
        extra={"binding_arm": binding, "arms": {k: {**v.to_dict(), "ratio": math.exp(v.mean)} for k, v in results.items()},
               "n_dropped_nonfinite": n_dropped},
    )


def pair_seeds(key: str) -> tuple[int, int]:
    """The two seeds of a barrier pair key ``"s<i>-s<j>"`` (the probe stage's keys)."""
    m = _PAIR.match(str(key))
    if m is None:
        raise ValueError(f"pair key must look like 's<i>-s<j>', got {key!r}")
    return int(m.group(1)), int(m.group(2))


def shared_seed_barrier_test(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    measure: str = "barrier",
    *,
    skip: str = "skip",
    pair: str = "pair",
    setting: str | None = None,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Barriers with and without skips on the same seed pairs, with a delete-one-seed jackknife.

    ``d_ij = measure(skip; i, j) - measure(plain; i, j)`` over the pairs present for both.
    The effect is ``mean_ij d_ij``; its variance is the jackknife over seeds,
    ``(n-1)/n sum_k (theta_(-k) - theta_(.))^2`` with ``theta_(-k)`` the mean over the pairs
    without seed k, and the test is one-sided (< 0) with t(n - 1) (module docstring). With
    a ``setting`` column (e.g. ``norm``) the mean is over every (setting, pair) and seed k is
    deleted from every setting at once.

    Args:
        data: One row per (architecture, seed pair): ``pair`` keys ``s<i>-s<j>``.
        measure: Barrier column (loss units).
        skip: Boolean column, True for the network with skip connections.
        pair: Pair key column.
        setting: Optional column that tells matched comparisons apart.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the t interval.

    Returns:
        Result with the mean paired difference, its jackknife t interval and p; ``extra``
        holds the naive pairs-as-independent t-test for comparison, n_pairs and n_seeds.
    """
    where = "shared_seed_barrier_test"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    df = as_frame(data)
    keys = [pair] + ([setting] if setting else [])
    require_columns(df, [measure, skip, *keys], where)
    df, n_dropped = finite_rows(df, [measure], [skip, *keys])
    df = df.assign(_s=_bool01(df[skip], skip, where))
    if df.duplicated([*keys, "_s"]).any():
        raise ValueError(f"{where}: more than one row per ({', '.join(keys)}, {skip})")
    pairs = df[df["_s"]].merge(df[~df["_s"]], on=keys, suffixes=("_skip", "_plain"))
    if pairs.empty:
        raise ValueError(f"{where}: no seed pair has both a {skip}=True and a {skip}=False barrier")
    d = (pairs[f"{measure}_skip"] - pairs[f"{measure}_plain"]).to_numpy(dtype=float)
    members = [pair_seeds(k) for k in pairs[pair]]
    seeds = sorted({s for ij in members for s in ij})
    n = len(seeds)
    if n < 4:
        raise ValueError(f"{where}: too few seeds: {n} seeds in the matched pairs, the jackknife needs >= 4")
    theta = float(d.mean())
    loo = np.array([d[[k not in ij for ij in members]].mean() for k in seeds])
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    q = sps.t.ppf(0.5 + ci_level / 2.0, n - 1)
    p = t_tail(theta, se, n - 1, "less")
    naive = paired_test(d, "less", ci_level, effect_size_ci=False) if d.size >= 3 else None
    return HypothesisResult.build(
        name=f"H2[{measure}]",
        null=f"Skip connections do not lower the {measure} between two minima (mean skip - plain over seed pairs >= 0).",
        alternative=f"Skip connections lower the {measure} (mean skip - plain over seed pairs < 0).",
        test=(f"mean over {len(d)} matched seed pairs; delete-one-seed jackknife SE over the {n} seeds (pairs share "
              "seeds), one-sided t(n-1)"),
        n_runs=len(d),
        n_groups=n,
        effect=theta,
        ci_low=theta - q * se,
        ci_high=theta + q * se,
        p_value=p,
        alpha=alpha,
        ci_level=ci_level,
        side="less",
        null_value=0.0,
        effect_name=f"mean {measure} difference skip - plain over seed pairs",
        extra={"jackknife_se": se, "n_pairs": len(d), "n_seeds": n, "seeds": seeds,
               "naive_pairs_independent": naive.to_dict() if naive is not None else None,
               "n_dropped_nonfinite": n_dropped},
    )


def all_pairs(seeds: Sequence[int]) -> list[str]:
    """Pair keys ``s<i>-s<j>`` of every pair of ``seeds`` (i < j), the probe stage's order."""
    return [f"s{a}-s{b}" for a, b in itertools.combinations(sorted(seeds), 2)]
