"""Paired one-sided comparisons: H2 (skip connections flatten) and H4 (Hessian bounds win).

Both hypotheses compare two conditions on matched units: H2 matches a skip and a no-skip
network trained with the same seed and normalisation (Li et al. 2018, "Visualizing the
loss landscape of neural nets", report flatter landscapes with skip connections); H4
matches, on each run, the PAC-Bayes bound with a Hessian-informed posterior against the
isotropic and the naive parameter-count bounds (Dziugaite & Roy 2017).

On the differences d_i we run the paired t-test (Student 1908) and the Wilcoxon
signed-rank test (Wilcoxon 1945), both one-sided, and report the mean difference with its
t interval and Cohen's d_z = mean(d) / sd(d) (Cohen 1988; Lakens 2013, Front. Psychol.).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import nctdtr

from landscape.stats._common import (
    as_frame,
    check_level,
    check_positive,
    finite_rows,
    require_columns,
)
from landscape.stats.result import HypothesisResult, plain

__all__ = ["PairedSummary", "paired_test", "h2_skip_flattens", "h4_bounds"]

_MIN_PAIRS = 3
_TESTS = ("t", "wilcoxon")


@dataclasses.dataclass(frozen=True)
class PairedSummary:
    """Paired t and Wilcoxon signed-rank tests of one set of differences.

    Attributes:
        n: Number of pairs.
        mean: Mean difference (units of the measure).
        sd: Sample standard deviation of the differences (ddof = 1).
        d_z: Cohen's d_z = mean / sd (NaN when sd = 0).
        d_z_ci_low: Lower end of its exact ``ci_level`` interval, from inverting the
            noncentral t distribution of ``t = sqrt(n) d_z`` (Steiger & Fouladi 1997);
            NaN when not requested or undefined.
        d_z_ci_high: Upper end of that interval.
        ci_low: Lower end of the two-sided t interval for the mean difference.
        ci_high: Upper end of that interval.
        t: Paired t statistic.
        p_t: One-sided paired t p-value.
        w: Wilcoxon signed-rank statistic (sum of ranks of positive differences).
        p_wilcoxon: One-sided Wilcoxon p-value (1 when every difference is 0).
        alternative: ``"less"`` (mean difference < 0) or ``"greater"``.
    """

    n: int
    mean: float
    sd: float
    d_z: float
    d_z_ci_low: float
    d_z_ci_high: float
    ci_low: float
    ci_high: float
    t: float
    p_t: float
    w: float
    p_wilcoxon: float
    alternative: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary of every field."""
        return plain(dataclasses.asdict(self))


def paired_test(
    diff: np.ndarray | Sequence[float],
    alternative: Literal["less", "greater"],
    ci_level: float = 0.95,
    effect_size_ci: bool = True,
) -> PairedSummary:
    """One-sided paired tests on differences.

    Args:
        diff: Differences d_i = treated - control, shape (n,), n >= 3.
        alternative: ``"less"`` tests E[d] < 0, ``"greater"`` tests E[d] > 0.
        ci_level: Coverage of the two-sided t interval ``mean +- t_{n-1} sd / sqrt(n)``
            and of the d_z interval.
        effect_size_ci: Compute the noncentral-t interval of d_z (a few ms).
    """
    check_level("ci_level", ci_level)
    if alternative not in ("less", "greater"):
        raise ValueError(f"alternative must be 'less' or 'greater', got {alternative!r}")
    d = np.asarray(diff, dtype=float)
    if d.ndim != 1 or d.size < _MIN_PAIRS:
        raise ValueError(f"too few pairs: need >= {_MIN_PAIRS} differences, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite")
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    q = sps.t.ppf(0.5 + ci_level / 2.0, n - 1)
    if sd > 0:
        t = mean / se
        p_t = float(sps.t.sf(t, n - 1) if alternative == "greater" else sps.t.cdf(t, n - 1))
        d_z = mean / sd
    else:
        t = float(np.sign(mean) * np.inf) if mean != 0 else float("nan")
        p_t = 1.0 if mean == 0 or (mean > 0) == (alternative == "less") else 0.0
        d_z = float("nan")
    if np.any(d != 0):
        wres = sps.wilcoxon(d, alternative=alternative)
        w, p_w = float(wres.statistic), float(wres.pvalue)
    else:
        w, p_w = 0.0, 1.0
    dz_lo, dz_hi = _dz_interval(float(t), n, ci_level) if effect_size_ci else (float("nan"),) * 2
    return PairedSummary(
        n=n,
        mean=mean,
        sd=sd,
        d_z=float(d_z),
        d_z_ci_low=dz_lo,
        d_z_ci_high=dz_hi,
        ci_low=float(mean - q * se),
        ci_high=float(mean + q * se),
        t=float(t),
        p_t=p_t,
        w=w,
        p_wilcoxon=p_w,
        alternative=alternative,
    )


def _dz_interval(t: float, n: int, ci_level: float) -> tuple[float, float]:
    """Exact CI of d_z: the noncentrality parameters whose t_{n-1} cdf at ``t`` is
    ``(1 +- ci_level) / 2``, divided by sqrt(n)."""
    if not np.isfinite(t):
        return float("nan"), float("nan")
    dof = n - 1
    # the ncp interval is about t +- z sqrt(1 + t^2 / (2 dof)); bracket it with margin
    span = 6.0 * np.sqrt(1.0 + t * t / (2.0 * dof)) + 3.0

    def cdf(ncp: float) -> float:
        # scipy's noncentral t cdf returns NaN deep in its tails, where it has saturated
        # (to 1 for ncp well below t, to 0 well above); the cdf decreases in ncp
        v = float(nctdtr(dof, ncp, t))
        return v if np.isfinite(v) else (1.0 if ncp < t else 0.0)

    def solve(q: float) -> float:
        a, b = t - span, t + span
        if not cdf(a) > q > cdf(b):
            return float("nan")
        return brentq(lambda ncp: cdf(ncp) - q, a, b, xtol=1e-10)

    lo, hi = solve(0.5 + ci_level / 2.0), solve(0.5 - ci_level / 2.0)
    return float(lo / np.sqrt(n)), float(hi / np.sqrt(n))


def _check_test(test: str) -> None:
    if test not in _TESTS:
        raise ValueError(f"test must be one of {_TESTS}, got {test!r}")


def _bool_column(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    values = df[column]
    ok = values.map(lambda v: isinstance(v, (bool, np.bool_)) or v in (0, 1))
    if not ok.all():
        bad = values[~ok].iloc[0]
        raise ValueError(f"{where}: column {column!r} must hold booleans (or 0/1), got {bad!r}")
    return values.astype(bool)


def h2_skip_flattens(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    measure: str,
    *,
    skip: str = "skip",
    pair_on: Sequence[str] = ("norm", "seed"),
    group: str = "seed",
    log_scale: bool = False,
    test: Literal["t", "wilcoxon"] = "t",
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Test H2: skip connections lower a landscape measure, paired over seeds.

    Each network with ``skip=True`` is matched with the ``skip=False`` network that shares
    its ``pair_on`` keys (normalisation setting and seed by default; add width, depth or
    dataset columns when the table holds several). Differences are ``skip - no-skip``,
    pooled over normalisation settings; per-setting tests are in ``extra["by_setting"]``.

    Args:
        data: One row per trained network.
        measure: Column to compare, e.g. ``lambda_max``, ``trace``, ``outlier_count``,
            ``barrier``; lower means flatter.
        skip: Boolean column, True for the network with skip connections.
        pair_on: Columns that identify a matched pair.
        group: Column counted as the independent group (seed) in ``n_groups``.
        log_scale: Compare ``log(measure)`` (ratios; recommended for lambda_max and
            trace, whose scale differs across settings); the measure must then be > 0.
        test: Which test supplies ``p_value``: paired ``"t"`` or ``"wilcoxon"``; the
            other is reported in ``extra``.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the t interval of the mean difference.

    Returns:
        Result with ``effect`` = mean paired difference (in log units when
        ``log_scale``), its t interval, and the one-sided p-value of the chosen test.
    """
    where = "h2_skip_flattens"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    _check_test(test)
    pair_on = tuple(pair_on)
    if not pair_on:
        raise ValueError(f"{where}: pair_on must name at least one column")
    if skip in pair_on or measure in pair_on:
        raise ValueError(f"{where}: pair_on {pair_on} must not contain {skip!r} or {measure!r}")
    df = as_frame(data)
    cols = list(dict.fromkeys([measure, skip, *pair_on, group]))
    require_columns(df, cols, where)
    df, n_dropped = finite_rows(df, [measure], [skip, *pair_on, group])
    df[skip] = _bool_column(df, skip, where)
    if log_scale:
        check_positive(df, measure, where)
    keys = [*pair_on, skip]
    dup = df.duplicated(subset=keys, keep=False)
    if dup.any():
        example = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"{where}: {int(dup.sum())} rows share the same {keys} (e.g. {example}); "
            "add the column that tells them apart to pair_on"
        )
    value = df[measure].to_numpy(dtype=float)
    table = df[list(pair_on)].assign(_v=np.log(value) if log_scale else value)
    is_skip = df[skip].to_numpy()
    if is_skip.all() or not is_skip.any():
        raise ValueError(f"{where}: need runs with both {skip}=True and {skip}=False")
    pairs = table[is_skip].merge(table[~is_skip], on=list(pair_on), suffixes=("_skip", "_plain"))
    n_unpaired = int(len(df) - 2 * len(pairs))
    if len(pairs) < _MIN_PAIRS:
        raise ValueError(
            f"{where}: too few seeds: {len(pairs)} complete skip/no-skip pairs, "
            f"need >= {_MIN_PAIRS}"
        )
    diff = (pairs["_v_skip"] - pairs["_v_plain"]).to_numpy(dtype=float)
    summary = paired_test(diff, "less", ci_level)

    by_setting: dict[str, Any] = {}
    setting_cols = [c for c in pair_on if c != group]
    if setting_cols:
        for level, rows in pairs.groupby(setting_cols, sort=True).indices.items():
            label = "/".join(map(str, level)) if isinstance(level, tuple) else str(level)
            d = diff[rows]
            by_setting[label] = (
                paired_test(d, "less", ci_level, effect_size_ci=False).to_dict()
                if d.size >= _MIN_PAIRS
                else {"n": int(d.size)}
            )
    n_groups = int(pairs[group].nunique()) if group in pair_on else int(df[group].nunique())

    p_main = summary.p_t if test == "t" else summary.p_wilcoxon
    units = f"log({measure})" if log_scale else measure
    return HypothesisResult.build(
        name=f"H2[{measure}]",
        null=(
            f"Skip connections do not lower {units}: "
            "mean paired difference (skip - no-skip) >= 0."
        ),
        alternative=f"Skip connections lower {units}: mean paired difference (skip - no-skip) < 0.",
        test=(
            f"one-sided paired {'t-test' if test == 't' else 'Wilcoxon signed-rank test'} "
            f"over pairs matched on {list(pair_on)}, pooled over settings; t interval for the mean"
        ),
        n_runs=summary.n,
        n_groups=n_groups,
        effect=summary.mean,
        ci_low=summary.ci_low,
        ci_high=summary.ci_high,
        p_value=p_main,
        alpha=alpha,
        ci_level=ci_level,
        side="less",
        null_value=0.0,
        effect_name=f"mean paired difference of {units}, skip - no-skip",
        extra={
            "paired": summary.to_dict(),
            "p_t": summary.p_t,
            "p_wilcoxon": summary.p_wilcoxon,
            "cohens_dz": summary.d_z,
            "cohens_dz_ci": (summary.d_z_ci_low, summary.d_z_ci_high),
            "ratio_skip_over_noskip": float(np.exp(summary.mean)) if log_scale else float("nan"),
            "by_setting": by_setting,
            "log_scale": log_scale,
            "n_unpaired_rows": n_unpaired,
            "n_dropped_nonfinite": n_dropped,
        },
    )


def h4_bounds(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    bound: str = "bound_hessian",
    baselines: Sequence[str] = ("bound_naive", "bound_iso"),
    group: str | None = "seed",
    test: Literal["t", "wilcoxon"] = "t",
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Test H4: the Hessian-informed PAC-Bayes bound is below every baseline bound.

    For each baseline the per-run differences ``bound - baseline`` are tested one-sided
    (``< 0``). H4 needs all comparisons to succeed, so the p-value is that of the
    intersection-union test, ``max_k p_k`` (Berger 1982, Technometrics 24(4)), valid at
    level alpha without further correction; the reported effect and interval belong to
    the comparison attaining that maximum. Every comparison is in ``extra``.

    Args:
        data: One row per run with the bound columns (error-rate bounds in [0, 1]).
        bound: Column of the Hessian-informed bound.
        baselines: Columns of the bounds it must beat.
        group: Seed column counted in ``n_groups`` (None: every run is its own group).
        test: Which test supplies the p-values: paired ``"t"`` or ``"wilcoxon"``.
        alpha: Significance level of the verdict.
        ci_level: Coverage of the t intervals.
    """
    where = "h4_bounds"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    _check_test(test)
    baselines = tuple(baselines)
    if not baselines:
        raise ValueError(f"{where}: baselines must name at least one column")
    if bound in baselines:
        raise ValueError(f"{where}: bound {bound!r} cannot also be a baseline")
    df = as_frame(data)
    cols = [bound, *baselines] + ([group] if group is not None else [])
    require_columns(df, cols, where)
    df, n_dropped = finite_rows(df, [bound, *baselines], [group] if group is not None else [])
    if len(df) < _MIN_PAIRS:
        raise ValueError(
            f"{where}: too few runs: {len(df)} with finite bounds, need >= {_MIN_PAIRS}"
        )
    comparisons = {}
    for base in baselines:
        d = (df[bound] - df[base]).to_numpy(dtype=float)
        comparisons[base] = paired_test(d, "less", ci_level)
    p_of = {k: (s.p_t if test == "t" else s.p_wilcoxon) for k, s in comparisons.items()}
    binding = max(p_of, key=lambda k: p_of[k])
    main = comparisons[binding]
    n_groups = int(df[group].nunique()) if group is not None else len(df)
    return HypothesisResult.build(
        name="H4",
        null=(
            f"For at least one of {list(baselines)}, {bound} is not lower on average "
            f"(mean of {bound} - baseline >= 0)."
        ),
        alternative=f"{bound} is lower than every one of {list(baselines)} on average over runs.",
        test=(
            f"one-sided paired {'t-tests' if test == 't' else 'Wilcoxon signed-rank tests'} "
            "per baseline, combined by the intersection-union test (p = max p_k)"
        ),
        n_runs=len(df),
        n_groups=n_groups,
        effect=main.mean,
        ci_low=main.ci_low,
        ci_high=main.ci_high,
        p_value=p_of[binding],
        alpha=alpha,
        ci_level=ci_level,
        side="less",
        null_value=0.0,
        effect_name=f"mean of {bound} - {binding} (the binding baseline)",
        extra={
            "binding_baseline": binding,
            "comparisons": {k: s.to_dict() for k, s in comparisons.items()},
            "n_dropped_nonfinite": n_dropped,
        },
    )
