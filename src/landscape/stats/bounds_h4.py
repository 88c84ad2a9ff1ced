"""H4 on the primary seeds, its replication on disjoint seeds, and its power at published effects.

:func:`h4_replicated` runs :func:`landscape.stats.paired.h4_bounds` (one-sided paired tests of
``bound - baseline < 0`` per baseline, intersection-union p = max p_k; Berger 1982) twice: on
the runs of the primary seeds and on those of the replication seeds. The replication test goes
into ``extra["replication"]`` (a :class:`HypothesisResult` dict), where the family's verdict
rule (:func:`landscape.stats.replication.replicated_records`, after Holm) reads it;
``extra["replication_verdict"]`` applies the same rule here at the unadjusted p-values.

Power (:func:`paired_t_power`): the probability that the one-sided paired t-test with the
design's n and the observed spread of the differences rejects at ``alpha`` when the true mean
difference is the published one (noncentral t; Cohen 1988, ch. 2). Published effects
(:data:`LITERATURE`): Dziugaite & Roy 2017 (Table 1, MNIST, 2-layer 600-unit MLP): PAC-Bayes
bound 0.161 where parameter-count bounds are vacuous (>= 1), a difference of at most -0.84;
no study reports a curvature-vs-isotropic posterior difference at this scale, so that
comparison uses -0.01, the smallest difference of interest (the Monte-Carlo resolution of
the bounds), and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd

from landscape.stats.paired import h4_bounds
from landscape.stats.replication import replication_verdict, t_test_power
from landscape.stats.result import HypothesisResult

__all__ = ["LITERATURE", "h4_replicated", "paired_t_power"]

#: baseline -> (published difference bound - baseline, its source)
LITERATURE: dict[str, tuple[float, str]] = {
    "occam": (-0.84, "Dziugaite & Roy 2017, Table 1 (MNIST, T-600): PAC-Bayes bound 0.161, parameter-count bounds >= 1"),
    "isotropic": (-0.01, "no published curvature-vs-isotropic difference at this scale: the smallest difference of interest"),
}


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the one-sided (``less``) paired t-test with n pairs of spread ``sd`` at true mean ``effect``
    (:func:`landscape.stats.replication.t_test_power` with ``se = sd / sqrt(n)``, ``n - 1`` degrees of freedom).

    Returns NaN when ``sd`` is not a finite positive number or ``n < 2``.
    """
    if not (math.isfinite(sd) and sd > 0) or n < 2:
        return float("nan")
    return t_test_power(effect, sd / math.sqrt(n), n - 1, alpha=alpha, side="less")


def h4_replicated(
    data: pd.DataFrame,
    *,
    bound: str,
    baselines: Sequence[str],
    primary_seeds: Sequence[int],
    replication_seeds: Sequence[int],
    test: Literal["t", "wilcoxon"] = "t",
    alpha: float = 0.05,
    ci_level: float = 0.95,
    describe: Sequence[str] = (),
) -> HypothesisResult:
    """H4 on the primary seeds, with its replication and power in ``extra`` (module docstring).

    Args:
        data: One row per bounded run: ``seed``, ``bound``, every baseline column, and the
            ``describe`` columns.
        bound: Column of the tested bound (e.g. ``bound_curvature``).
        baselines: Columns it must beat (``bound_<name>``; :data:`LITERATURE` keys give power).
        primary_seeds: Seeds of the primary test; ``replication_seeds`` those of the replication.
        test, alpha, ci_level: As in :func:`~landscape.stats.paired.h4_bounds`.
        describe: Further bound columns summarised (mean, sd, n) on each seed set.

    Raises:
        ValueError: Fewer than 3 primary runs with finite bounds, or overlapping seed sets.
    """
    if set(primary_seeds) & set(replication_seeds):
        raise ValueError(f"primary {list(primary_seeds)} and replication {list(replication_seeds)} seeds must be disjoint")
    prim = data[data["seed"].isin(list(primary_seeds))]
    rep = data[data["seed"].isin(list(replication_seeds))]
    main = h4_bounds(prim, bound=bound, baselines=baselines, test=test, alpha=alpha, ci_level=ci_level)
    try:
        replication: HypothesisResult | None = h4_bounds(rep, bound=bound, baselines=baselines, test=test, alpha=alpha,
                                                        ci_level=ci_level)
    except ValueError:  # fewer than 3 replication runs: reported, never silently passed
        replication = None
    if replication is None:
        verdict, reason = "inconclusive", "no replication test (too few replication runs)"
    else:  # the family's rule (stats.replication), here at the unadjusted p-values; the family applies it after Holm
        rule = replication_verdict(main, replication, primary_p=main.p_value, replication_p=replication.p_value)
        verdict, reason = rule.verdict, rule.reason

    def power(result: HypothesisResult | None) -> dict[str, float]:
        if result is None:
            return {}
        comps: Mapping[str, Any] = result.extra["comparisons"]
        return {b: paired_t_power(LITERATURE[b.removeprefix("bound_")][0], float(comps[b]["sd"]), int(comps[b]["n"]), alpha)
                for b in baselines if b.removeprefix("bound_") in LITERATURE}

    def summary(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
        return {c: {"mean": float(frame[c].mean()), "sd": float(frame[c].std(ddof=1)), "n": int(frame[c].notna().sum())}
                for c in (bound, *baselines, *describe) if c in frame}

    extra = {
        **main.extra,
        "primary_seeds": [int(s) for s in primary_seeds],
        "replication_seeds": [int(s) for s in replication_seeds],
        "replication": None if replication is None else replication.to_dict(),
        "replication_verdict": verdict,
        "replication_verdict_reason": reason,
        "power_at_literature_effect": power(main),
        "replication_power_at_literature_effect": power(replication),
        "literature": {k: {"effect": v[0], "source": v[1]} for k, v in LITERATURE.items()},
        "bounds_primary": summary(prim),
        "bounds_replication": summary(rep),
    }
    fields = {f: getattr(main, f) for f in main.__dataclass_fields__}
    return HypothesisResult(**{**fields, "extra": extra})
