"""The typed result every hypothesis test returns, and its verdict rule.

A :class:`HypothesisResult` states the null and the alternative in words, names the
test, gives the effect estimate with its confidence interval and the p-value, and
carries the family-wise corrected p-value filled in by :func:`landscape.stats.holm`
(Holm 1979, "A simple sequentially rejective multiple test procedure").

Verdict rule (one for all hypotheses): ``supported`` is True when the family-corrected
p-value is at most ``alpha`` *and* the point estimate lies on the side the alternative
predicts (``effect > null_value`` for ``side="greater"``, ``<`` for ``"less"``); a
result built with ``requires_ci_excluding_null=True`` also needs its two-sided
``ci_level`` interval to exclude ``null_value`` on that side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = ["HypothesisResult", "Side", "plain"]

Side = Literal["greater", "less", "two-sided", "interval"]
_SIDES: tuple[str, ...] = ("greater", "less", "two-sided", "interval")


def plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and mappings into plain Python objects.

    NaN stays ``float('nan')``; :func:`landscape.io.to_jsonable` turns it into JSON null.
    """
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return obj


@dataclasses.dataclass(frozen=True)
class HypothesisResult:
    """Outcome of one pre-registered hypothesis test.

    Attributes:
        name: Short identifier, e.g. ``"H1"`` or ``"H2[lambda_max]"``.
        null: The null hypothesis, one sentence.
        alternative: The alternative hypothesis, one sentence.
        test: The test used (model, standard errors, reference distribution).
        n_runs: Rows (training runs, or pairs for paired tests) that entered the test.
        n_groups: Independent groups (seeds) behind those rows.
        effect: Point estimate of the effect named by ``effect_name``.
        ci_low: Lower end of the two-sided ``ci_level`` interval for ``effect``.
        ci_high: Upper end of that interval.
        p_value: Unadjusted p-value (one-sided when ``side`` is greater/less).
        p_holm: Holm-adjusted p-value over the family; equals ``p_value`` for a family
            of one until :func:`landscape.stats.holm` replaces it.
        supported: Verdict at ``alpha`` after Holm (see the module docstring).
        alpha: Family-wise significance level.
        ci_level: Coverage of ``[ci_low, ci_high]``.
        side: Where the alternative puts ``effect`` relative to ``null_value``.
        null_value: Value of ``effect`` under the null (0 for differences, 1 for ratios).
        effect_name: What ``effect`` measures, in words with units.
        requires_ci_excluding_null: Whether the verdict also needs the interval to
            exclude ``null_value`` on the predicted side.
        extra: Secondary numbers (coefficients, per-subgroup tests, diagnostics).
    """

    name: str
    null: str
    alternative: str
    test: str
    n_runs: int
    n_groups: int
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    supported: bool
    alpha: float = 0.05
    ci_level: float = 0.95
    side: Side = "greater"
    null_value: float = 0.0
    effect_name: str = ""
    requires_ci_excluding_null: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.side not in _SIDES:
            raise ValueError(f"side must be one of {_SIDES}, got {self.side!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")

    @classmethod
    def build(cls, **fields: Any) -> HypothesisResult:
        """Create a result whose ``p_holm`` is its own p-value and whose verdict follows.

        Args:
            **fields: Every field except ``p_holm`` and ``supported``.
        """
        p = float(fields["p_value"])
        draft = cls(p_holm=p, supported=False, **fields)
        return draft.with_p_holm(p)

    def verdict(self, p_holm: float, alpha: float | None = None) -> bool:
        """Apply the verdict rule to a family-corrected p-value.

        Args:
            p_holm: Holm-adjusted p-value.
            alpha: Level to use; defaults to the result's own ``alpha``.
        """
        level = self.alpha if alpha is None else alpha
        if not (math.isfinite(p_holm) and p_holm <= level and math.isfinite(self.effect)):
            return False
        if self.side == "greater":
            side_ok = self.effect > self.null_value
            ci_ok = self.ci_low > self.null_value
        elif self.side == "less":
            side_ok = self.effect < self.null_value
            ci_ok = self.ci_high < self.null_value
        else:
            side_ok = True
            ci_ok = not (self.ci_low <= self.null_value <= self.ci_high)
        if self.requires_ci_excluding_null and not ci_ok:
            return False
        return bool(side_ok)

    def with_p_holm(self, p_holm: float, alpha: float | None = None) -> HypothesisResult:
        """Return a copy with ``p_holm`` set and ``supported`` recomputed."""
        level = self.alpha if alpha is None else alpha
        return dataclasses.replace(
            self,
            p_holm=float(p_holm),
            alpha=float(level),
            supported=self.verdict(float(p_holm), level),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dictionary of every field (NaN kept as float NaN)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
