"""The optimizer comparison: curvature-adaptive SGD and the hybrid Adam step against SGD
with momentum and Adam, each at a normal and a large learning rate, over seeds.

Input: the table of :func:`landscape.pipeline.tables.optimizer_runs`, one row per run of
one experiment group (config, level, optimizer, lr, seed, status, final test error, steps,
seconds, Hessian-vector products) and the per-epoch curves from the DVCLive logs.

What is computed, per config (one optimizer at one learning-rate level):

* final test error: mean over the completed seeds with its t interval and n;
* divergence rate (``status: diverged``) with its Wilson score interval (Wilson 1927) and n;
* cost: training seconds per run (the sum of the logged ``epoch_time_s``: every step with
  its Hessian-vector products and the per-epoch test evaluation; process start-up not
  included) and Hessian-vector products per run, over the completed seeds;

and, for each comparison ``(treated, reference)`` of optimizers at each level, two paired
tests over seeds (a seed fixes the initialisation and the data order of both runs):

* test error: two-sided paired t-test (Student 1908) on ``treated - reference`` over the
  seeds where *both* runs completed, with the t interval of the mean difference and the
  Wilcoxon signed-rank p-value (Wilcoxon 1945) beside it; the seeds left out because a run
  diverged are listed with the result (never dropped silently);
* divergence: exact McNemar test (McNemar 1947; the binomial test on the discordant seeds)
  of the paired divergence indicators, with Newcombe's hybrid score interval for the
  paired difference of rates (Newcombe 1998, *Statistics in Medicine* 17, method 10).

Each kind is one Holm family (Holm 1979) over all levels and comparisons. Tests are
two-sided: the comparison has no pre-registered direction; the sign is reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from landscape.stats.intervals import wilson
from landscape.stats.result import HypothesisResult, plain

__all__ = [
    "ConfigSummary",
    "summarize_configs",
    "compare_test_error",
    "compare_divergence",
    "newcombe_paired_interval",
    "curve_bands",
    "headline",
]

@dataclass(frozen=True)
class ConfigSummary:
    """One row of the comparison table (one optimizer at one learning-rate level).

    Attributes:
        config, level, optimizer, lr: What was trained (``lr`` the base learning rate).
        n_runs: Seeds found; ``n_completed`` and ``n_diverged`` split them.
        divergence_rate, divergence_ci_low, divergence_ci_high: ``n_diverged / n_runs``
            with its Wilson score interval.
        test_error_mean, test_error_ci_low, test_error_ci_high, test_error_n: Final test
            error (fraction misclassified) over the completed seeds, t interval.
        seconds_mean, seconds_ci_low, seconds_ci_high, seconds_n: Training seconds per
            completed run (sum of ``epoch_time_s``), t interval.
        hvps_mean, hvps_ci_low, hvps_ci_high: Hessian-vector products per completed run.
        hvps_per_step: Mean products per optimizer step over the completed runs.
        diverged_seeds: Seeds whose run diverged, with the step in ``diverged_steps``.
    """

    config: str
    level: str
    optimizer: str
    lr: float
    n_runs: int
    n_completed: int
    n_diverged: int
    divergence_rate: float
    divergence_ci_low: float
    divergence_ci_high: float
    test_error_mean: float
    test_error_ci_low: float
    test_error_ci_high: float
    test_error_n: int
    seconds_mean: float
    seconds_ci_low: float
    seconds_ci_high: float
    seconds_n: int
    hvps_mean: float
    hvps_ci_low: float
    hvps_ci_high: float
    hvps_per_step: float
    diverged_seeds: tuple[int, ...]
    diverged_steps: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary of every field."""
        return plain(dataclasses.asdict(self))


# ------------------------------------------------------------------ summaries


def _mean_ci(values: np.ndarray, ci_level: float) -> tuple[float, float, float, int]:
    """Mean, t interval and n of the finite ``values`` (NaN interval when n < 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(sps.t.ppf(0.5 + ci_level / 2.0, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def summarize_configs(runs: pd.DataFrame, ci_level: float = 0.95) -> list[ConfigSummary]:
    """One :class:`ConfigSummary` per config of ``runs`` (the runs table of :func:`landscape.pipeline.tables.optimizer_runs`)."""
    out = []
    for config, g in runs.groupby("config", sort=False):
        done = g[g["status"] == "completed"]
        div = g[g["status"] == "diverged"]
        rate, r_lo, r_hi = wilson(len(div), len(g), ci_level)
        te = _mean_ci(done["test_error"].to_numpy(), ci_level)
        sec = _mean_ci(done["seconds"].to_numpy(), ci_level)
        hv = _mean_ci(done["hvps"].to_numpy(), ci_level)
        steps = done["steps"].to_numpy(dtype=float)
        per_step = float(np.nanmean(done["hvps"].to_numpy() / steps)) if len(done) and np.all(steps > 0) else math.nan
        first = g.iloc[0]
        out.append(ConfigSummary(
            config=str(config), level=str(first["level"]), optimizer=str(first["optimizer"]), lr=float(first["lr"]),
            n_runs=len(g), n_completed=len(done), n_diverged=len(div),
            divergence_rate=rate, divergence_ci_low=r_lo, divergence_ci_high=r_hi,
            test_error_mean=te[0], test_error_ci_low=te[1], test_error_ci_high=te[2], test_error_n=te[3],
            seconds_mean=sec[0], seconds_ci_low=sec[1], seconds_ci_high=sec[2], seconds_n=sec[3],
            hvps_mean=hv[0], hvps_ci_low=hv[1], hvps_ci_high=hv[2], hvps_per_step=per_step,
            diverged_seeds=tuple(int(s) for s in div["seed"]),
            diverged_steps=tuple(int(s) for s in div["diverged_step"]),
        ))
    return out


# ------------------------------------------------------------------ paired tests


def _not_tested(name: str, reason: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": f"not tested: {reason}", "n_runs": n, "supported": False, "extra": plain(extra)}


def _pair_frame(runs: pd.DataFrame, level: str, treated: str, reference: str) -> pd.DataFrame:
    """One row per seed with both runs: status, test error and config of each side."""
    sides: dict[str, dict[int, tuple[str, float, str]]] = {treated: {}, reference: {}}
    columns = (runs["level"], runs["optimizer"], runs["seed"], runs["status"], runs["test_error"], runs["config"])
    for lvl, opt, seed, status, err, cfg in zip(*columns, strict=True):
        if lvl == level and opt in sides:
            sides[opt][int(seed)] = (status, float(err), cfg)
    seeds = sorted(set(sides[treated]) & set(sides[reference]))
    t, r = [sides[treated][s] for s in seeds], [sides[reference][s] for s in seeds]
    return pd.DataFrame({
        "seed": seeds,
        "status_t": [x[0] for x in t], "status_r": [x[0] for x in r],
        "error_t": np.array([x[1] for x in t], dtype=float), "error_r": np.array([x[1] for x in r], dtype=float),
        "config_t": [x[2] for x in t], "config_r": [x[2] for x in r],
    })


def compare_test_error(
    runs: pd.DataFrame,
    level: str,
    treated: str,
    reference: str,
    *,
    alpha: float = 0.05,
    ci_level: float = 0.95,
    min_pairs: int = 3,
) -> HypothesisResult | dict[str, Any]:
    """Two-sided paired t-test of final test error, ``treated - reference``, at one level.

    Pairs are the seeds where both runs completed; the seeds where either diverged are
    listed in ``extra["excluded_seeds"]`` with the optimizer(s) that diverged.

    Args:
        runs: The runs table (:func:`landscape.pipeline.tables.optimizer_runs`) (columns level, optimizer, seed, status, test_error).
        level: Learning-rate level.
        treated, reference: Optimizer names at that level.
        alpha, ci_level: Level of the verdict and coverage of the interval.
        min_pairs: Fewest pairs to test (fewer: a ``not tested`` record).

    Returns:
        A :class:`HypothesisResult` (effect: mean paired difference of test error, a
        fraction of the test split; negative = treated better), or a ``not tested`` record.
    """
    name = f"test_error[{treated} vs {reference}, {level}]"
    pairs = _pair_frame(runs, level, treated, reference)
    both = (pairs["status_t"] == "completed") & (pairs["status_r"] == "completed")
    excluded = [{"seed": int(s), "diverged": [o for o, st in ((treated, a), (reference, b)) if st == "diverged"]}
                for s, a, b, ok in zip(pairs["seed"], pairs["status_t"], pairs["status_r"], both, strict=True) if not ok]
    d = (pairs["error_t"] - pairs["error_r"])[both].to_numpy(dtype=float)
    n = int(d.size)
    if n < min_pairs:
        return _not_tested(name, f"{n} seed(s) with both runs completed, need >= {min_pairs}", n, excluded_seeds=excluded)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    q = float(sps.t.ppf(0.5 + ci_level / 2.0, n - 1))
    if sd > 0:
        p = float(2.0 * sps.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    elif mean == 0:  # identical differences: no sampling variability to test against
        p = 1.0
    else:
        p = 0.0
    p_w = float(sps.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return HypothesisResult.build(
        name=name,
        null=f"{treated} and {reference} at the {level} learning rate reach the same mean final test error (paired over seeds).",
        alternative="Their mean final test errors differ (two-sided).",
        test="paired t-test, two-sided, over seeds where both runs completed (t interval of the mean difference)",
        n_runs=n, n_groups=n, effect=mean, ci_low=mean - q * sd / math.sqrt(n), ci_high=mean + q * sd / math.sqrt(n),
        p_value=p, alpha=alpha, ci_level=ci_level, side="two-sided", null_value=0.0,
        effect_name=(f"mean paired difference of final test error, {treated} - {reference} "
                     f"(fraction of the test split; < 0: {treated} better)"),
        extra={"level": level, "treated": treated, "reference": reference,
               "config_treated": str(pairs["config_t"].iloc[0]), "config_reference": str(pairs["config_r"].iloc[0]),
               "mean_treated": float(pairs["error_t"][both].mean()), "mean_reference": float(pairs["error_r"][both].mean()),
               "sd_difference": sd, "p_wilcoxon": p_w, "excluded_seeds": excluded,
               "direction": "treated lower" if mean < 0 else ("treated higher" if mean > 0 else "equal")},
    )


def newcombe_paired_interval(a: int, b: int, c: int, d: int, ci_level: float = 0.95) -> tuple[float, float, float]:
    """Difference of paired proportions ``p1 - p2`` with Newcombe's hybrid score interval.

    The 2x2 table counts units by (outcome 1, outcome 2): ``a`` both yes, ``b`` yes/no,
    ``c`` no/yes, ``d`` both no; ``p1 = (a + b) / n``, ``p2 = (a + c) / n``. The interval
    combines the Wilson intervals of p1 and p2 with the phi correlation of the table
    (Newcombe 1998, method 10, no continuity correction).

    Returns:
        ``(difference, low, high)``.
    """
    counts = (a, b, c, d)
    if any((not isinstance(x, (int, np.integer))) or x < 0 for x in counts) or sum(counts) == 0:
        raise ValueError(f"counts must be non-negative ints with a positive total, got {counts}")
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    _, l1, u1 = wilson(a + b, n, ci_level)
    _, l2, u2 = wilson(a + c, n, ci_level)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return theta, max(-1.0, theta - delta), min(1.0, theta + eps)


def compare_divergence(
    runs: pd.DataFrame,
    level: str,
    treated: str,
    reference: str,
    *,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult | dict[str, Any]:
    """Exact McNemar test of paired divergence, ``treated`` vs ``reference`` at one level.

    Every seed with both runs present counts (a diverged run is an outcome here). The
    effect is the difference of divergence rates with Newcombe's paired interval.
    """
    name = f"divergence[{treated} vs {reference}, {level}]"
    pairs = _pair_frame(runs, level, treated, reference)
    n = len(pairs)
    if n == 0:
        return _not_tested(name, "no seed with both runs", 0)
    dt = (pairs["status_t"] == "diverged").to_numpy()
    dr = (pairs["status_r"] == "diverged").to_numpy()
    a, b, c, d = int((dt & dr).sum()), int((dt & ~dr).sum()), int((~dt & dr).sum()), int((~dt & ~dr).sum())
    p = float(mcnemar([[a, b], [c, d]], exact=True).pvalue) if b + c > 0 else 1.0
    theta, lo, hi = newcombe_paired_interval(a, b, c, d, ci_level)
    return HypothesisResult.build(
        name=name,
        null=f"{treated} and {reference} at the {level} learning rate diverge equally often (paired over seeds).",
        alternative="Their divergence rates differ (two-sided).",
        test="exact McNemar test (binomial on the discordant seeds), two-sided; Newcombe hybrid score interval",
        n_runs=n, n_groups=n, effect=theta, ci_low=lo, ci_high=hi, p_value=p, alpha=alpha, ci_level=ci_level,
        side="two-sided", null_value=0.0,
        effect_name=f"divergence rate of {treated} minus that of {reference} (< 0: {treated} diverges less)",
        extra={"level": level, "treated": treated, "reference": reference, "both_diverged": a, "only_treated_diverged": b,
               "only_reference_diverged": c, "neither_diverged": d},
    )


# ------------------------------------------------------------------ curves


def curve_bands(curves: pd.DataFrame, ci_level: float = 0.95) -> list[dict[str, Any]]:
    """Per (config, metric, epoch): seeds logged, mean, t interval, min and max over seeds.

    A diverged run contributes the epochs it completed, so ``n`` can fall along a curve.
    """
    out: list[dict[str, Any]] = []
    if curves.empty:
        return out
    for (config, metric, epoch), g in curves.groupby(["config", "metric", "epoch"], sort=True):
        mean, lo, hi, n = _mean_ci(g["value"].to_numpy(), ci_level)
        out.append({"config": config, "metric": metric, "epoch": int(epoch), "n": n, "mean": mean, "ci_low": lo, "ci_high": hi,
                    "min": float(g["value"].min()), "max": float(g["value"].max())})
    return out


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flat numbers for ``dvc metrics``: per config the table row's key numbers, per
    comparison the effect, interval, p, Holm p, verdict and n (or ``tested: false``)."""
    out: dict[str, Any] = {"configs": {}, "comparisons": {}}
    keys = ("test_error_mean", "test_error_ci_low", "test_error_ci_high", "test_error_n", "divergence_rate",
            "divergence_ci_low", "divergence_ci_high", "n_runs", "n_diverged", "seconds_mean", "hvps_mean")
    for row in results["table"]:
        out["configs"][row["config"]] = {k: row[k] for k in keys}
    for entry in [*results["test_error"], *results["divergence"]]:
        if entry["status"] != "tested":
            out["comparisons"][entry["name"]] = {"tested": False, "n_runs": entry["n_runs"]}
            continue
        keys_tested = ("effect", "ci_low", "ci_high", "p_value", "p_holm", "supported", "n_runs")
        out["comparisons"][entry["name"]] = {**{k: entry[k] for k in keys_tested}, "tested": True}
    return out
