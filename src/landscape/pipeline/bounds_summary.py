"""The bounds stage's summaries: per-run means over seeds, the random-label control, the ``h4`` headline rows.

Reads the per-seed dictionaries :func:`landscape.pipeline.bounds.run` writes
(``bounds/runs/<exp>/<cfg>/seed<k>/bounds.json``) and its ``bounds/metrics.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from landscape.io import read_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.seed_summary import mean_sd

__all__ = ["headline_rows", "sanity_summary", "summarise"]


def summarise(per_seed: Mapping[int, Mapping[str, Any]], families: Sequence[str]) -> dict[str, Any]:
    """Mean/sd over the bounded seeds of one run, and its per-seed numbers."""
    ok = [s for s in per_seed.values() if s.get("status") == "bounded"]
    return {
        "seeds_bounded": len(ok),
        "seeds_skipped": len(per_seed) - len(ok),
        **{f"{f}_bound": mean_sd([s["bounds"][f] for s in ok]) for f in families},
        "test_error": mean_sd([s["test_error"] for s in ok]),
        "train_error": mean_sd([s["train_error"] for s in ok]),
        "prior_bound_error": mean_sd([s["prior"]["bound_error"] for s in ok]),
        **{f"{f}_test_error": mean_sd([s[f]["test_error"] for s in ok]) for f in ("isotropic", "curvature", "optimized")},
        **{f"{f}_kl": mean_sd([s[f]["kl"]["kl"] for s in ok]) for f in ("isotropic", "curvature", "optimized")},
        "seeds_curvature_below_isotropic": sum(s["bounds"]["curvature"] < s["bounds"]["isotropic"] for s in ok),
        "seeds_curvature_below_occam": sum(s["bounds"]["curvature"] < s["bounds"]["occam"] for s in ok),
        "seeds_optimized_below_holdout_prior": sum(s["bounds"]["optimized"] < s["bounds"]["holdout_prior"] for s in ok),
        "ordering_per_seed": {str(k): " < ".join(s["ordering"]) if "ordering" in s else s["status"] for k, s in per_seed.items()},
        "bounds_per_seed": {str(k): s["bounds"] for k, s in per_seed.items() if s.get("status") == "bounded"},
        "train_error_per_seed": {str(k): s["train_error"] for k, s in per_seed.items() if s.get("status") == "bounded"},
        "test_error_per_seed": {str(k): s["test_error"] for k, s in per_seed.items() if s.get("status") == "bounded"},
        "cpu_time_s": sum(s.get("cpu_time_s", 0.0) for s in ok),
    }


def sanity_summary(pair: Mapping[str, str], runs: Mapping[str, Mapping[str, Any]], memorised: float = 0.05) -> dict[str, Any]:
    """The random-label control: it must memorise (train error <= ``memorised``) and its bounds be vacuous.

    A bound of a network that did not fit its random labels says nothing about the bound's
    power to tell memorisation from learning; the flag ``random_memorised`` records it.
    """
    real, rand = runs[pair["real"]], runs[pair["random"]]

    def best(b: Mapping[str, float]) -> float:
        return min(b[f] for f in ("isotropic", "curvature", "optimized"))

    lowest_random = min((best(b) for b in rand["bounds_per_seed"].values()), default=float("nan"))
    highest_real = max((best(b) for b in real["bounds_per_seed"].values()), default=float("nan"))
    train_errors = list(rand["train_error_per_seed"].values())
    return {
        "real": pair["real"],
        "random": pair["random"],
        "real_best_bound_max": highest_real,
        "random_best_bound_min": lowest_random,
        "random_train_error_max": max(train_errors, default=float("nan")),
        "random_train_error_per_seed": dict(rand["train_error_per_seed"]),
        "random_bounds_per_seed": dict(rand["bounds_per_seed"]),
        "random_memorised": bool(train_errors) and max(train_errors) <= memorised,
        "memorised_threshold": memorised,
        "random_vacuous": bool(lowest_random > 0.9),
        "real_nonvacuous": bool(highest_real < 1.0),
    }


def headline_rows(layout: Layout) -> list[dict[str, Any]]:
    """The ``h4`` section of ``reports/headline.json``.

    Rows: ``{"row": "test"}`` (H4's effect, interval, n, p and Holm p, verdict, the
    replication's effect and interval, power at the published effects; from
    ``hypotheses/results.json``), one ``{"row": "bounds"}`` per bounded (run, seed) with every
    arm's and baseline's bound and the network's train and test error, and
    ``{"row": "random_label_control"}`` (its train errors, whether it memorised, its bounds).

    Without ``bounds/metrics.json`` the bounds rows are one row naming it as missing.

    Raises:
        FileNotFoundError: ``hypotheses/results.json`` is missing.
    """
    from landscape.pipeline.tables import require

    results = read_json(require(layout.results("hypotheses"), "hypotheses"))
    metrics = read_json(layout.bounds_metrics) if layout.bounds_metrics.is_file() else None
    rows: list[dict[str, Any]] = []
    for entry in results["hypotheses"]:
        if entry["name"] != "H4":
            continue
        row: dict[str, Any] = {"row": "test", "name": "H4", "status": entry["status"], "verdict": entry.get("verdict")}
        if entry["status"] == "tested":
            extra = entry.get("extra") or {}
            rep = extra.get("replication") or {}
            row.update({k: entry.get(k) for k in ("effect_name", "effect", "ci_low", "ci_high", "ci_level", "p_value", "p_holm",
                                                  "supported", "n_runs", "n_groups")})
            row.update(verdict=entry.get("verdict") or extra.get("replication_verdict"),
                       replication_effect=rep.get("effect"), replication_ci=[rep.get("ci_low"), rep.get("ci_high")],
                       replication_p_value=rep.get("p_value"), replication_n_runs=rep.get("n_runs"),
                       binding_baseline=extra.get("binding_baseline"), primary_seeds=extra.get("primary_seeds"),
                       replication_seeds=extra.get("replication_seeds"),
                       power_at_literature_effect=extra.get("power_at_literature_effect"),
                       replication_power_at_literature_effect=extra.get("replication_power_at_literature_effect"),
                       literature=extra.get("literature"))
        rows.append(row)
    if metrics is None:  # a profile whose hypotheses ran without the bounds stage
        rows.append({"row": "bounds", "status": f"missing: {layout.relative(layout.bounds_metrics)} (the bounds stage)"})
        return rows
    for run_name, summary in metrics["runs"].items():
        for seed, bounds in summary["bounds_per_seed"].items():
            rows.append({"row": "bounds", "run": run_name, "seed": int(seed), **bounds,
                         "train_error": summary["train_error_per_seed"].get(seed),
                         "test_error": summary["test_error_per_seed"].get(seed)})
    sanity = metrics.get("sanity")
    if sanity:
        rows.append({"row": "random_label_control", **{k: sanity[k] for k in (
            "random", "real", "random_train_error_max", "random_train_error_per_seed", "random_memorised", "memorised_threshold",
            "random_best_bound_min", "random_bounds_per_seed", "random_vacuous", "real_best_bound_max", "real_nonvacuous")}})
    return rows
