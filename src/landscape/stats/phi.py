"""Statistics of the Phi study: does Phi (:mod:`landscape.probes.phi`) predict test error, and
does choosing the architecture by its argmax beat a random choice?

* :func:`spearman_ci`: Spearman's rho with a Fisher-z interval using the variance
  ``1.06 / (n - 3)`` of Fieller, Hartley & Pearson (1957, Biometrika 44) and scipy's p-value.
* :func:`search_vs_random`: per search unit (one data set and seed, a grid of G candidates
  each trained with the same budget) the chosen candidate's realised test error is compared
  with a uniformly random grid member *exactly*, by averaging over the grid rather than
  sampling: ``diff = e_chosen - mean_g e_g`` and ``p_beat = P(e_chosen < e_R) + P(tie)/2``
  for R uniform on the grid (the chosen one included, a tie with itself counting 1/2).
  If the choice carried no information (a uniformly random pick), ``E[diff] = 0`` and
  ``E[p_beat] = 1/2`` exactly, which are the null values. Across units: the mean with a
  t interval, a one-sample t-test and a Wilcoxon signed-rank test.
* :func:`summarise_search`: all of the above for the ``phi_search`` stage, on its candidates
  and on the table of the pipeline's trained runs (:func:`landscape.pipeline.phi_search.phi_of_runs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from landscape.stats._common import check_level
from landscape.stats.result import plain

__all__ = [
    "SpearmanResult",
    "spearman_ci",
    "choose_argmax",
    "SearchComparison",
    "search_vs_random",
    "summarise_search",
    "headline",
]

_FIELLER = 1.06


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman's rho of (x, y) with its interval.

    Attributes:
        rho: the rank correlation (NaN when undefined).
        ci_low, ci_high: Fisher-z interval at ``ci_level`` (NaN for n < 4).
        p_value: scipy's two-sided p-value (t approximation).
        n: pairs used (finite in both).
        ci_level: coverage.
        status: ``ok`` or why a number is NaN.
    """

    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    ci_level: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def spearman_ci(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float], ci_level: float = 0.95) -> SpearmanResult:
    """Spearman's rho with a Fisher-z interval (variance 1.06 / (n - 3)); non-finite pairs dropped.

    Args:
        x, y: equal-length samples.
        ci_level: coverage in (0, 1).
    """
    check_level("ci_level", ci_level)
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    nan = math.nan
    if n < 3:
        return SpearmanResult(nan, nan, nan, nan, n, ci_level, f"too few pairs (n={n}, need >= 3)")
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return SpearmanResult(nan, nan, nan, nan, n, ci_level, "a variable is constant")
    res = sps.spearmanr(xa, ya)
    rho, p = float(res.statistic), float(res.pvalue)
    if n < 4:
        return SpearmanResult(rho, nan, nan, p, n, ci_level, "interval needs n >= 4")
    z = math.atanh(min(max(rho, -1 + 1e-12), 1 - 1e-12))  # rho = +-1 exactly: an interval at the boundary
    half = sps.norm.ppf(0.5 + ci_level / 2) * math.sqrt(_FIELLER / (n - 3))
    return SpearmanResult(rho, math.tanh(z - half), math.tanh(z + half), p, n, ci_level, "ok")


def choose_argmax(values: Sequence[float]) -> int:
    """Index of the largest finite value (the first on ties); NaN entries are never chosen.

    Raises:
        ValueError: no finite value.
    """
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if v.ndim != 1 or not finite.any():
        raise ValueError(f"values must be 1-D with at least one finite entry, got {values!r}")
    return int(np.argmax(np.where(finite, v, -np.inf)))


@dataclass(frozen=True)
class SearchComparison:
    """Chosen vs uniformly random grid member, over independent search units.

    Attributes:
        n_units: units (data set x seed) compared.
        grid_size: candidates per unit.
        mean_diff: mean over units of ``e_chosen - mean_g e_g`` (negative: the choice is better).
        diff_ci_low, diff_ci_high: t interval of the mean difference.
        diff_p_t, diff_p_wilcoxon: two-sided p-values against 0 (t-test; Wilcoxon signed rank,
            NaN when every difference is 0 or n < 2).
        p_beat: mean over units of P(chosen beats a random grid member), ties counting 1/2.
        p_beat_ci_low, p_beat_ci_high: its t interval clipped to [0, 1]; ``p_beat_p_t``: t-test against 1/2.
        mean_chosen_error, mean_random_error, mean_oracle_error: mean test errors of the
            choice, of a random member (grid mean) and of the grid's best.
        ci_level: coverage.
        verdict: ``better``/``worse`` than random when the difference interval excludes 0
            on that side, else ``no difference detected``.
        units: per-unit ``chosen``, ``chosen_error``, ``random_error``, ``oracle_error``,
            ``diff``, ``p_beat``.
    """

    n_units: int
    grid_size: int
    mean_diff: float
    diff_ci_low: float
    diff_ci_high: float
    diff_p_t: float
    diff_p_wilcoxon: float
    p_beat: float
    p_beat_ci_low: float
    p_beat_ci_high: float
    p_beat_p_t: float
    mean_chosen_error: float
    mean_random_error: float
    mean_oracle_error: float
    ci_level: float
    verdict: str
    units: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def _t_interval(values: np.ndarray, null: float, ci_level: float) -> tuple[float, float, float, float]:
    """Mean, t interval and two-sided one-sample t p-value (NaN for n < 2 or zero spread)."""
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    se = float(values.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return mean, mean, mean, (1.0 if mean == null else 0.0)
    q = sps.t.ppf(0.5 + ci_level / 2, n - 1)
    p = 2 * sps.t.sf(abs(mean - null) / se, n - 1)
    return mean, mean - q * se, mean + q * se, float(p)


def search_vs_random(errors: np.ndarray | Sequence[Sequence[float]], chosen: Sequence[int], ci_level: float = 0.95) -> SearchComparison:
    """Compare each unit's chosen candidate with a uniformly random one of the same grid.

    Args:
        errors: (U, G) realised test errors of every candidate of every unit (finite).
        chosen: (U,) index of each unit's chosen candidate.
        ci_level: coverage of the intervals.
    """
    check_level("ci_level", ci_level)
    E = np.asarray(errors, dtype=float)
    c = np.asarray(chosen)
    if E.ndim != 2 or E.shape[0] < 1 or E.shape[1] < 1:
        raise ValueError(f"errors must be a (units, grid) array, got shape {E.shape}")
    if not np.isfinite(E).all():
        raise ValueError("errors must be finite (drop failed candidates before comparing)")
    if c.shape != (E.shape[0],) or not np.issubdtype(c.dtype, np.integer) or (c < 0).any() or (c >= E.shape[1]).any():
        raise ValueError(f"chosen must hold one grid index in [0, {E.shape[1]}) per unit, got {list(chosen)!r}")
    U, G = E.shape
    e_c = E[np.arange(U), c]
    rand = E.mean(1)
    diff = e_c - rand
    p_beat = ((E > e_c[:, None]).sum(1) + 0.5 * (E == e_c[:, None]).sum(1)) / G  # noqa: SIM300  (E is the error matrix, not a constant)
    mean_d, lo_d, hi_d, p_d = _t_interval(diff, 0.0, ci_level)
    mean_b, lo_b, hi_b, p_b = _t_interval(p_beat, 0.5, ci_level)
    lo_b, hi_b = max(lo_b, 0.0), min(hi_b, 1.0)  # a probability: the t interval clipped to [0, 1] (NaN stays NaN)
    nonzero = diff[diff != 0]
    p_w = float(sps.wilcoxon(nonzero).pvalue) if nonzero.size >= 2 else math.nan
    if math.isfinite(hi_d) and hi_d < 0:
        verdict = "better than random"
    elif math.isfinite(lo_d) and lo_d > 0:
        verdict = "worse than random"
    else:
        verdict = "no difference detected"
    units = tuple({"chosen": int(c[u]), "chosen_error": float(e_c[u]), "random_error": float(rand[u]), "oracle_error": float(E[u].min()),
                   "diff": float(diff[u]), "p_beat": float(p_beat[u])} for u in range(U))
    return SearchComparison(
        n_units=U, grid_size=G, mean_diff=mean_d, diff_ci_low=lo_d, diff_ci_high=hi_d, diff_p_t=p_d, diff_p_wilcoxon=p_w,
        p_beat=mean_b, p_beat_ci_low=lo_b, p_beat_ci_high=hi_b, p_beat_p_t=p_b, mean_chosen_error=float(e_c.mean()),
        mean_random_error=float(rand.mean()), mean_oracle_error=float(E.min(1).mean()), ci_level=ci_level, verdict=verdict, units=units,
    )


# ------------------------------------------------------------------ the stage's summary


def _grid_key(row: Mapping[str, Any]) -> tuple[int, int]:
    return int(row["width"]), int(row["depth"])


def summarise_search(rows: Sequence[Mapping[str, Any]], run_rows: Sequence[Mapping[str, Any]], ci_level: float = 0.95,
                     primary_experiment: str = "scaling") -> dict[str, Any]:
    """Everything the ``phi_search`` stage reports.

    Args:
        rows: candidates from :func:`landscape.pipeline.phi_search.run_phi_search`.
        run_rows: pipeline runs from :func:`landscape.pipeline.phi_search.phi_of_runs`.
        ci_level: coverage.
        primary_experiment: the run group whose Spearman rho is the headline.

    Returns:
        ``per_dataset`` (grid, mean Phi and test error per cell, per-unit choices, the
        search-vs-random comparison, Spearman rho of Phi vs test error (at init, and after
        training when measured) and of Phi vs the parameter count d (Phi carries a 1/d
        factor), ``pooled`` (all units together), ``runs`` (Spearman per experiment and over
        all runs with Phi, and Phi vs d over all runs).
    """
    out: dict[str, Any] = {"per_dataset": {}, "ci_level": ci_level}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    all_errors: list[list[float]] = []
    all_chosen: list[int] = []
    for name in datasets:
        mine = [r for r in rows if r["dataset"] == name]
        cells = sorted({_grid_key(r) for r in mine})
        seeds = sorted({int(r["seed"]) for r in mine})
        errors, chosen, units = [], [], []
        for s in seeds:
            by_cell = {_grid_key(r): r for r in mine if int(r["seed"]) == s}
            if set(by_cell) != set(cells) or any(by_cell[k]["status"] != "completed" for k in cells):
                continue  # a unit with a missing or diverged candidate has no defined random-choice error
            phis = [by_cell[k]["phi"] for k in cells]
            try:
                j = choose_argmax(phis)
            except ValueError:
                continue
            errors.append([by_cell[k]["test_error"] for k in cells])
            chosen.append(j)
            units.append({"seed": s, "chosen": {"width": cells[j][0], "depth": cells[j][1]}})
        entry: dict[str, Any] = {
            "data_dim": int(mine[0]["data_dim"]), "source": mine[0].get("source"), "seeds": seeds,
            "widths": sorted({c[0] for c in cells}), "depths": sorted({c[1] for c in cells}),
            "cells": [{"width": w, "depth": L,
                       "phi_mean": float(np.nanmean([r["phi"] for r in mine if _grid_key(r) == (w, L)])),
                       "phi_sd": (float(np.nanstd([r["phi"] for r in mine if _grid_key(r) == (w, L)], ddof=1))
                                  if len(seeds) > 1 else math.nan),
                       "test_error_mean": float(np.mean([r["test_error"] for r in mine if _grid_key(r) == (w, L)])),
                       "num_params": int(next(r["num_params"] for r in mine if _grid_key(r) == (w, L))), "n": len(seeds)}
                      for (w, L) in cells],
            "units": units,
            "spearman_init": spearman_ci([r["init"]["phi"] for r in mine], [r["test_error"] for r in mine], ci_level).to_dict(),
            "spearman_phi_num_params": spearman_ci([r["init"]["phi"] for r in mine], [r["num_params"] for r in mine], ci_level).to_dict(),
        }
        if all("trained" in r for r in mine):
            entry["spearman_trained"] = spearman_ci([r["trained"]["phi"] for r in mine], [r["test_error"] for r in mine],
                                                    ci_level).to_dict()
        if errors:
            cmp = search_vs_random(errors, chosen, ci_level)
            entry["search_vs_random"] = cmp.to_dict()
            if len(all_errors) == 0 or len(errors[0]) == len(all_errors[0]):
                all_errors += errors
                all_chosen += chosen
        else:
            entry["search_vs_random"] = {"status": "not tested: no complete unit"}
        out["per_dataset"][name] = entry
    out["pooled"] = (search_vs_random(all_errors, all_chosen, ci_level).to_dict() if all_errors
                     else {"status": "not tested: no complete unit"})
    ok = [r for r in run_rows if math.isfinite(r["phi"]) and math.isfinite(r["test_error"]) and r.get("status") == "completed"]
    groups: dict[str, Any] = {}
    for exp in dict.fromkeys(r["experiment"] for r in run_rows):
        mine = [r for r in ok if r["experiment"] == exp]
        groups[exp] = spearman_ci([r["phi"] for r in mine], [r["test_error"] for r in mine], ci_level).to_dict()
    out["runs"] = {"per_experiment": groups, "all": spearman_ci([r["phi"] for r in ok], [r["test_error"] for r in ok], ci_level).to_dict(),
                   "all_phi_num_params": spearman_ci([r["phi"] for r in ok], [r["num_params"] for r in ok], ci_level).to_dict(),
                   "primary_experiment": primary_experiment, "n_with_phi": len(ok), "n_runs": len(run_rows)}
    return out


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Flat numbers for ``dvc metrics``: pooled search-vs-random, rho per data set and for the primary run group."""
    pooled = summary["pooled"]
    m: dict[str, Any] = {}
    if "mean_diff" in pooled:
        m["search_mean_diff"] = pooled["mean_diff"]
        m["search_diff_ci"] = [pooled["diff_ci_low"], pooled["diff_ci_high"]]
        m["search_p_beat"] = pooled["p_beat"]
        m["search_p_beat_ci"] = [pooled["p_beat_ci_low"], pooled["p_beat_ci_high"]]
        m["search_n_units"] = pooled["n_units"]
        m["search_verdict"] = pooled["verdict"]
    for name, entry in summary["per_dataset"].items():
        sp = entry["spearman_init"]
        m[f"rho_init_{name}"] = {"rho": sp["rho"], "ci": [sp["ci_low"], sp["ci_high"]], "n": sp["n"]}
    prim = summary["runs"]["per_experiment"].get(summary["runs"]["primary_experiment"])
    if prim is not None:
        m["rho_runs_primary"] = {"rho": prim["rho"], "ci": [prim["ci_low"], prim["ci_high"]], "n": prim["n"]}
    return plain(m)
