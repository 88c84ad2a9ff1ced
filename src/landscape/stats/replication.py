"""Replication verdicts and the power of a test for a stated literature effect.

Verdict rule (one for every headline effect): the effect is tested twice, on the primary
seeds and on a disjoint replication seed set, each test a :class:`HypothesisResult` on
its own runs. A verdict is called only where the two agree:

* both significant (each by its own verdict rule, :meth:`HypothesisResult.verdict`, at the
  p-value given: Holm-adjusted where a family applies) with effects of the same sign:
  ``"supported"``;
* both not significant: ``"not supported"``;
* anything else (one significant, or both significant with opposite signs, which only a
  two-sided test allows): ``"inconclusive"``.

A one-sided result that is significant has its effect on the predicted side by
construction, so "same sign" needs checking only for two-sided tests; it is checked for all.

In a family of records (:func:`replicated_records`) the primary tests are judged at their
Holm p-values over the family, and the replication tests at Holm p-values over the
replications of that family (the same correction, applied to the second seed set).

Power (:func:`t_test_power`): the probability that a t-test with the design's standard
error and degrees of freedom rejects at level ``alpha`` when the true effect is the one a
published study reports (the noncentral t distribution, noncentrality ``effect / se``;
Cohen 1988, *Statistical Power Analysis for the Behavioral Sciences*, ch. 2). The standard
error is the fitted model's, so the power is that of this design at this noise level, not a
pre-registered number; each use states the source of the effect size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scipy import stats as sps

from landscape.stats.multiple import holm_adjust
from landscape.stats.result import HypothesisResult, Side, plain

__all__ = ["VERDICTS", "ReplicatedVerdict", "replicated_records", "replication_verdict", "significant", "t_test_power"]

VERDICTS = ("supported", "not supported", "inconclusive")


def significant(result: HypothesisResult, p: float | None = None) -> bool:
    """Whether ``result`` rejects its null by its own rule at p-value ``p`` (default: its ``p_holm``)."""
    return result.verdict(result.p_holm if p is None else float(p))


def _sign(x: float) -> int:
    return 0 if not math.isfinite(x) or x == 0 else (1 if x > 0 else -1)


@dataclass(frozen=True)
class ReplicatedVerdict:
    """The primary and replication tests of one effect and the verdict of the rule.

    Attributes:
        verdict: One of :data:`VERDICTS`.
        reason: Why, in words (which test was significant, with which sign).
        primary_significant: The primary test rejected its null.
        replication_significant: The replication test rejected its null.
        same_sign: The two point estimates have the same sign.
        primary_p: p-value the primary test was judged at.
        replication_p: p-value the replication test was judged at.
    """

    verdict: str
    reason: str
    primary_significant: bool
    replication_significant: bool
    same_sign: bool
    primary_p: float
    replication_p: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self.__dict__)


def replication_verdict(primary: HypothesisResult, replication: HypothesisResult, *, primary_p: float | None = None,
                        replication_p: float | None = None) -> ReplicatedVerdict:
    """Apply the verdict rule (module docstring) to a primary and a replication test.

    Args:
        primary: The test on the primary seeds.
        replication: The same test on the replication seeds.
        primary_p: p-value to judge the primary at (default its ``p_holm``).
        replication_p: p-value to judge the replication at (default its ``p_holm``).

    Raises:
        ValueError: The two tests differ in side or null value (they are not the same test).
    """
    if primary.side != replication.side or primary.null_value != replication.null_value:
        raise ValueError(f"primary and replication must be the same test; got side {primary.side!r}/{replication.side!r}, "
                         f"null {primary.null_value}/{replication.null_value}")
    p1 = primary.p_holm if primary_p is None else float(primary_p)
    p2 = replication.p_holm if replication_p is None else float(replication_p)
    s1, s2 = significant(primary, p1), significant(replication, p2)
    same = _sign(primary.effect - primary.null_value) == _sign(replication.effect - replication.null_value) != 0
    if s1 and s2 and same:
        verdict, reason = "supported", "both tests significant, same sign"
    elif not s1 and not s2:
        verdict, reason = "not supported", "neither test significant"
    elif s1 and s2:
        verdict, reason = "inconclusive", "both tests significant, opposite signs"
    else:
        which = "primary" if s1 else "replication"
        verdict, reason = "inconclusive", f"only the {which} test significant"
    return ReplicatedVerdict(verdict, reason, s1, s2, same, p1, p2)


def t_test_power(effect: float, se: float, df: float, *, alpha: float = 0.05,
                 side: Literal["greater", "less", "two-sided"] | Side = "two-sided") -> float:
    """Power of a t-test of ``coef = 0`` when the true coefficient is ``effect``.

    ``T = coef_hat / se`` follows a noncentral t with ``df`` degrees of freedom and
    noncentrality ``effect / se``; the power is its probability beyond the critical value(s)
    of the level-``alpha`` test on the given side.

    Args:
        effect: The true effect assumed (the literature's), in the coefficient's units.
        se: The design's standard error of the coefficient (> 0).
        df: Degrees of freedom of the test (> 0).
        alpha: Level, in (0, 1).
        side: ``"greater"``, ``"less"`` or ``"two-sided"``.

    Returns:
        Rejection probability in [0, 1].

    Raises:
        ValueError: A bad argument (the message names it).
    """
    if not (math.isfinite(se) and se > 0):
        raise ValueError(f"se must be a finite number > 0, got {se!r}")
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"df must be a finite number > 0, got {df!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect!r}")
    nc = effect / se
    if side == "greater":
        return float(sps.nct.sf(sps.t.ppf(1 - alpha, df), df, nc))
    if side == "less":
        return float(sps.nct.cdf(sps.t.ppf(alpha, df), df, nc))
    if side == "two-sided":
        crit = sps.t.ppf(1 - alpha / 2, df)
        return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    raise ValueError(f"side must be one of ['greater', 'less', 'two-sided'], got {side!r}")


def _result(record: Mapping[str, Any]) -> HypothesisResult:
    fields = {f: record[f] for f in HypothesisResult.__dataclass_fields__ if f in record}
    return HypothesisResult(**fields)


def replicated_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the replication verdict to the Holm-corrected records of one family.

    Each tested record whose ``extra["replication"]`` holds a replication test (a
    :class:`HypothesisResult` dict) gets ``verdict`` (one of :data:`VERDICTS`),
    ``verdict_detail`` (:class:`ReplicatedVerdict`) and ``replication`` (its effect, CI,
    p-value and the Holm p over the family's replications). Other records pass through
    (``verdict`` "not tested" when untested, else "supported (no replication)" or "not supported
    (no replication)" from their own ``supported``; ``verdict_detail`` None).

    Args:
        records: Output of :func:`landscape.stats.multiple.holm_records` (dicts with ``status``).

    Returns:
        New record dicts, in order.
    """
    reps = [(r.get("extra") or {}).get("replication") if r.get("status") == "tested" else None for r in records]
    p_rep: list[float] = list(holm_adjust([float(x["p_value"]) if x else float("nan") for x in reps])) if any(reps) else []
    out = []
    for i, (record, rep) in enumerate(zip(records, reps, strict=True)):
        new = dict(record)
        if rep:
            verdict = replication_verdict(_result(record), _result(rep), primary_p=float(record["p_holm"]),
                                          replication_p=float(p_rep[i]))
            new["verdict"], new["verdict_detail"] = verdict.verdict, verdict.to_dict()
            new["replication"] = {**{k: rep[k] for k in ("effect", "ci_low", "ci_high", "p_value", "n_runs", "n_groups")},
                                  "p_holm": float(p_rep[i])}
        else:
            tested = record.get("status") == "tested"
            new["verdict"] = (("supported" if record.get("supported") else "not supported") + " (no replication)"
                              if tested else "not tested")
            new["verdict_detail"], new["replication"] = None, None
        out.append(new)
    return out
