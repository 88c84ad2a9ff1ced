"""The family of hypothesis tests: H1-H4 and the curvature-generalisation regressions on
the tables of the pipeline's outputs, Holm within each family, and what could not be tested.

:class:`Tables` holds the inputs (one row per run, per seed pair of barriers, per escape
trial; built by :func:`landscape.pipeline.tables.hypothesis_tables`). The members of the
family are built by the hypotheses stage (:mod:`landscape.pipeline.hypotheses`) from these
tables with :func:`attempt`, :func:`not_tested` and :func:`completed`; :func:`holm_records`
corrects each family and :func:`headline` flattens the results for ``dvc metrics``.

Two Holm families: the pre-registered hypotheses (H1, H2 per measure, H3, H4) and the
exploratory regressions (one Kendall tau per measure and target), so adding a measure to
the exploratory list never weakens the confirmatory tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from landscape.stats.multiple import holm_records
from landscape.stats.result import HypothesisResult

__all__ = ["STATEMENTS", "H2_MEASURES", "Tables", "not_tested", "attempt", "completed", "holm_records", "headline"]

#: Null and alternative of each family member, shown even when it could not be tested.
STATEMENTS: dict[str, tuple[str, str]] = {
    "H1": (("At equal train loss, a larger SGD noise scale eta/B (a smaller batch at fixed eta) does not lower lambda_max "
           "or test error (beta >= 0, at fixed B)."),
           "At equal train loss, a larger noise scale eta/B lowers lambda_max (a flatter minimum) and test error (beta < 0)."),
    "H2": ("Skip connections do not lower the measure (mean paired difference skip - no-skip >= 0).",
           "Skip connections lower the measure (mean paired difference < 0)."),
    "H3": ("Higher alignment of the noise with the top Hessian subspace does not raise the odds of escaping a sharp minimum.",
           "Higher alignment raises the odds of escape (odds ratio > 1)."),
    "H4": ("The Hessian-informed PAC-Bayes bound is not below every baseline bound on average.",
           "The Hessian-informed bound is below the parameter-count (Occam) and the isotropic bounds."),
}

H2_MEASURES = ("lambda_max", "trace", "outlier_count", "barrier")


# ------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Tables:
    """Everything the tests read, one row per unit.

    Attributes:
        runs: One row per (experiment, config, seed): status, metrics, curvature, bounds,
            probe sharpness, model ``skip``/``norm`` and ``batch_size``.
        barriers: One row per (experiment, config, seed pair): ``barrier_train``/``_test``.
        escape: One row per escape trial (the escape stage's ``trials.json``), with
            ``alignment_pct`` = 100 x alignment (H3's odds ratio is per percentage point).
        invariance: Invariance audit verdict per measure name (first audit found).
        found: Counts of the input files read, by kind.
        seed_split: ``(primary, replication)`` seeds of each experiment group (the
            replication rule of :mod:`landscape.stats.replication`).
    """

    runs: pd.DataFrame
    barriers: pd.DataFrame
    escape: pd.DataFrame
    invariance: dict[str, Any]
    found: dict[str, int]
    seed_split: Mapping[str, tuple[list[int], list[int]]] = field(default_factory=dict)


# ------------------------------------------------------------------ tests


def not_tested(name: str, reason: str, n: int = 0) -> dict[str, Any]:
    """The record of a family member that could not be tested: its statements and the reason."""
    base = name.split("[")[0]
    null, alt = STATEMENTS.get(base, ("", ""))
    return {"name": name, "status": f"not tested: {reason}", "null": null, "alternative": alt, "n_runs": n, "supported": False}


def attempt(name: str, n: int, fn: Callable[[], HypothesisResult | tuple[HypothesisResult, ...]]) -> Any:
    """Run a test; a ValueError from the statistics (too few seeds, no variation...) becomes
    a ``not tested`` record carrying its message."""
    try:
        return fn()
    except ValueError as exc:
        return not_tested(name, str(exc), n)


def completed(runs: pd.DataFrame, *need: str) -> pd.DataFrame:
    """The completed runs with every column of ``need`` present and non-null (no rows when a column is absent)."""
    if runs.empty:
        return runs
    keep = runs["status"] == "completed"
    for col in need:
        if col not in runs.columns:
            return runs.iloc[0:0]
        keep &= runs[col].notna()
    return runs[keep]


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flat per-test numbers for ``dvc metrics``: effect, CI, p, Holm p, verdict, n (or the status)."""
    out: dict[str, Any] = {}
    for entry in [*results["hypotheses"], *results["regressions"]]:
        if entry["status"] != "tested":
            out[entry["name"]] = {"tested": False}
            continue
        out[entry["name"]] = {k: entry[k] for k in ("effect", "ci_low", "ci_high", "p_value", "p_holm", "supported", "n_runs", "n_groups")}
        out[entry["name"]]["tested"] = True
    return out
