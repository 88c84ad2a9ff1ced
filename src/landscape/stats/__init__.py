"""Hypothesis tests (H1-H4), curvature-generalisation regressions, scaling-law fits and the
statistics of the Phi study (:mod:`landscape.stats.phi`: Spearman intervals, search vs random).

Every test is a pure function of a table of per-run metrics (a DataFrame or a list of
dicts) and returns a frozen :class:`HypothesisResult`; :func:`holm` corrects a family of
them. ``HYPOTHESES`` maps the names a config uses to the test functions.
"""

from __future__ import annotations

from collections.abc import Callable

from landscape.stats.correlation import curvature_regressions, kendall_tau_b_weighted
from landscape.stats.escape import h3_alignment_escape
from landscape.stats.mediation import h1_batch_sharpness
from landscape.stats.multiple import holm, holm_adjust
from landscape.stats.paired import (
    PairedSummary,
    h2_skip_flattens,
    h4_bounds,
    paired_test,
)
from landscape.stats.result import HypothesisResult
from landscape.stats.scaling import ScalingLawFit, config_means, scaling_law_fit

__all__ = [
    "HYPOTHESES",
    "HypothesisResult",
    "PairedSummary",
    "ScalingLawFit",
    "config_means",
    "curvature_regressions",
    "get_hypothesis",
    "h1_batch_sharpness",
    "h2_skip_flattens",
    "h3_alignment_escape",
    "h4_bounds",
    "holm",
    "holm_adjust",
    "kendall_tau_b_weighted",
    "paired_test",
    "scaling_law_fit",
]

HYPOTHESES: dict[str, Callable[..., HypothesisResult]] = {
    "h1_batch_sharpness": h1_batch_sharpness,
    "h2_skip_flattens": h2_skip_flattens,
    "h3_alignment_escape": h3_alignment_escape,
    "h4_bounds": h4_bounds,
}


def get_hypothesis(name: str) -> Callable[..., HypothesisResult]:
    """Look up a hypothesis test by name; an unknown name lists the valid ones."""
    try:
        return HYPOTHESES[name]
    except KeyError:
        raise ValueError(
            f"unknown hypothesis {name!r}; valid names: {sorted(HYPOTHESES)}"
        ) from None
