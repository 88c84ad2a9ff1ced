"""H1 at equal train loss: the SGD noise scale eta/B against sharpness and test error.

Every run of an eta x B grid trains to the same train loss (the training loop's target;
:mod:`landscape.training.tracking`), so a comparison at the stop is one at equal fit. The
noise scale eta/B (Jastrzebski et al. 2017, "Three factors influencing minima in SGD";
Smith & Le 2018) is crossed with B, so its effect is identified apart from B's:

    y = c + beta log2(eta/B) + gamma log2(B) + seed effects + e

with ``y`` the test error (fraction) or ``log2 lambda_max`` at the stop. ``beta`` is the
change in ``y`` per doubling of the noise scale at fixed B; ``gamma`` tests whether B
matters beyond eta/B (``gamma = 0`` under the eta/B equivalence). H1 predicts ``beta < 0``
for both outcomes: more noise -> flatter minimum -> lower test error (Keskar et al. 2017
read at fixed eta: a smaller batch is a larger noise scale).

Inference follows :mod:`landscape.stats._common` (seed fixed effects with classical OLS
errors and t(n - p) below ``min_clusters`` seeds, CR1 cluster-robust errors by seed with
t(G - 1) from there on). The test is run on the primary seeds and, separately, on the
replication seeds; :func:`landscape.stats.replication.replication_verdict` calls the
verdict, and :func:`landscape.stats.replication.t_test_power` gives each test's power for
the literature's effect size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from landscape.stats._common import (
    as_frame,
    check_groups,
    check_level,
    finite_rows,
    fit_linear,
    group_codes,
    inference_kind,
    require_columns,
)
from landscape.stats.replication import t_test_power
from landscape.stats.result import HypothesisResult

__all__ = ["NOISE", "LOG_BATCH", "LITERATURE", "h1_noise_scale"]

NOISE = "log2_noise_scale"
LOG_BATCH = "log2_batch"

#: Published effects in beta's units (per doubling of eta/B at fixed B), with their source.
LITERATURE: dict[str, tuple[float, str]] = {
    "test_error": (
        -0.0022 / np.log2(6000 / 256),
        ("Keskar et al. 2017 (ICLR), Table 2, network F1 (fully connected, MNIST): test accuracy 98.03% at B = 256 "
        "and 97.81% at B = 6,000 (10% of the data), same step rule: +0.22 points of error over log2(6000/256) = 4.55 "
        "halvings of B at fixed eta, i.e. -0.00048 per doubling of eta/B"),
    ),
    "lambda_max": (
        -1.0,
        ("Jastrzebski et al. 2019 (ICLR; arXiv 2018, 'On the relation between the sharpest directions of DNN loss and "
        "the SGD step length') and Cohen et al. 2021: lambda_max settles near the stability bound 2(1+beta)/eta, "
        "lambda_max proportional to 1/eta: -1 in log2 lambda_max per doubling of eta (of eta/B at fixed B)"),
    ),
}


def _prepare(df: pd.DataFrame, outcome: str, log_outcome: bool, where: str) -> tuple[pd.DataFrame, np.ndarray]:
    df = df.copy()
    for col in ("lr", "batch_size", outcome):
        if (df[col] <= 0).any() and (col != outcome or log_outcome):
            raise ValueError(f"{where}: {col!r} must be > 0 (it enters as a log), got min {df[col].min()}")
    df[NOISE] = np.log2(df["lr"] / df["batch_size"])
    df[LOG_BATCH] = np.log2(df["batch_size"])
    y = np.log2(df[outcome].to_numpy(dtype=float)) if log_outcome else df[outcome].to_numpy(dtype=float)
    return df, y


def _one_test(df: pd.DataFrame, *, name: str, outcome: str, log_outcome: bool, group: str, alpha: float, ci_level: float,
              min_clusters: int, literature_effect: float | None, literature_source: str, where: str) -> HypothesisResult:
    df, n_dropped = finite_rows(df, [outcome, "lr", "batch_size"], [group])
    codes, n_groups = group_codes(df[group])
    check_groups(n_groups, group, where)
    df, y = _prepare(df, outcome, log_outcome, where)
    for col in (NOISE, LOG_BATCH):
        if df[col].nunique() < 2:
            raise ValueError(f"{where}: {col} must take >= 2 distinct values (the grid must vary eta/B and B)")
    inference = inference_kind(n_groups, min_clusters)
    fit = fit_linear(y, {NOISE: df[NOISE].to_numpy(), LOG_BATCH: df[LOG_BATCH].to_numpy()}, codes, n_groups, inference)
    table = fit.table(ci_level)
    beta = table[NOISE]
    power = (t_test_power(literature_effect, fit.se(NOISE), fit.df, alpha=alpha, side="less")
             if literature_effect is not None and fit.se(NOISE) > 0 else float("nan"))
    unit = f"log2 {outcome}" if log_outcome else outcome
    return HypothesisResult.build(
        name=name,
        null=f"At equal train loss, a larger SGD noise scale eta/B does not lower {unit} (beta >= 0).",
        alternative=f"At equal train loss, a larger noise scale eta/B lowers {unit} (beta < 0), at fixed B.",
        test=(f"OLS of {unit} at the target train loss on log2(eta/B) and log2(B) with "
              + (f"{group} fixed effects, classical SEs, t(n-p)" if inference == "fixed-effects"
                 else f"CR1 cluster-robust SEs by {group}, t(G-1)")
              + "; one-sided t-test of beta"),
        n_runs=len(df), n_groups=n_groups, effect=beta["estimate"], ci_low=beta["ci_low"], ci_high=beta["ci_high"],
        p_value=fit.one_sided_p(NOISE, "less"), alpha=alpha, ci_level=ci_level, side="less", null_value=0.0,
        effect_name=f"beta: change in {unit} per doubling of eta/B at fixed B",
        requires_ci_excluding_null=True,
        extra={
            "model": fit.summary(ci_level),
            "batch_effect": table[LOG_BATCH],
            "se": fit.se(NOISE), "df": fit.df, "inference": inference,
            "literature_effect": literature_effect, "literature_source": literature_source,
            "power_at_literature_effect": power,
            "seeds": sorted(int(s) for s in pd.unique(df[group])),
            "n_dropped_nonfinite": n_dropped,
        },
    )


def h1_noise_scale(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    outcome: str,
    log_outcome: bool,
    primary_seeds: Sequence[int],
    replication_seeds: Sequence[int] = (),
    name: str = "H1",
    group: str = "seed",
    alpha: float = 0.05,
    ci_level: float = 0.95,
    min_clusters: int = 10,
    literature_effect: float | None = None,
    literature_source: str = "",
) -> HypothesisResult:
    """Test H1 at equal train loss on the primary seeds; the replication test rides in ``extra``.

    Args:
        data: One row per run that reached the target train loss: columns ``lr`` (eta),
            ``batch_size`` (B), ``outcome`` and ``group``.
        outcome: ``test_error`` (fraction) or ``lambda_max`` (enters as ``log2`` with
            ``log_outcome``).
        log_outcome: Regress ``log2(outcome)`` (then beta is an elasticity in doublings).
        primary_seeds: Seeds of the primary test.
        replication_seeds: Disjoint seeds of the replication (empty: none).
        name: Name of the result.
        group: Seed column.
        alpha: Level of each test.
        ci_level: Coverage of the intervals.
        min_clusters: Seeds needed for cluster-robust inference (fewer: seed fixed effects).
        literature_effect: A published beta in the same units (for the power), or None.
        literature_source: Where that number comes from (stated with it).

    Returns:
        The primary test (``effect = beta``, one-sided p of ``beta >= 0``, CI), with
        ``extra["replication"]`` the replication test's dict (or None) and each test's power
        at the literature effect.

    Raises:
        ValueError: Missing columns, overlapping seed sets, too few seeds or runs, no
            variation in eta/B or B (the message names it).
    """
    where = f"h1_noise_scale[{outcome}]"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    df = as_frame(data)
    require_columns(df, ["lr", "batch_size", outcome, group], where)
    primary, replication = [int(s) for s in primary_seeds], [int(s) for s in replication_seeds]
    if set(primary) & set(replication):
        raise ValueError(f"{where}: primary and replication seeds overlap: {sorted(set(primary) & set(replication))}")
    common: dict[str, Any] = {"outcome": outcome, "log_outcome": log_outcome, "group": group, "alpha": alpha,
                              "ci_level": ci_level, "min_clusters": min_clusters, "literature_effect": literature_effect,
                              "literature_source": literature_source}
    main = _one_test(df[df[group].isin(primary)], name=name, where=f"{where} primary", **common)
    rep = (_one_test(df[df[group].isin(replication)], name=f"{name} (replication)", where=f"{where} replication", **common)
           if replication else None)
    return dataclasses.replace(main, extra={**main.extra, "replication": None if rep is None else rep.to_dict()})
