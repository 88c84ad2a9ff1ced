"""The hypotheses stage's library: gather the pipeline's outputs into tables, test H1-H4 and
the curvature-generalisation regressions, correct with Holm, and say what could not be tested.

Inputs (all optional except the train runs; a missing input makes its tests
``not tested: input missing`` instead of failing):

* ``runs/<exp>/<cfg>/seed<k>/metrics.json``: status, test error, train loss, gen gap;
* ``measure/<exp>/<cfg>/seeds/seed<k>/curvature.json``: lambda_max, trace, log-det, RMT
  outlier count, noise alignment kappa and the difficulty index D of eq. (9);
* ``probes/<exp>/<cfg>/results.json``: straight-line barriers per seed pair, sharpness per
  seed; ``probes/<exp>/<cfg>/metrics.json``: the invariance audit's verdicts;
* ``bounds/runs/<exp>/<cfg>/seed<k>/bounds.json``: Occam, isotropic and Hessian bounds;
* ``escape/trials.json``: the escape trials of the ``escape`` stage (H3).

Two Holm families: the pre-registered hypotheses (H1, H2 per measure, H3, H4) and the
exploratory regressions (one Kendall tau per measure and target), so adding a measure to
the exploratory list never weakens the confirmatory tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from landscape.schema import ConfigError
from landscape.stats.correlation import curvature_regressions
from landscape.stats.escape import h3_alignment_escape
from landscape.stats.mediation import h1_batch_sharpness
from landscape.stats.multiple import holm
from landscape.stats.paired import h2_skip_flattens, h4_bounds
from landscape.stats.result import HypothesisResult

__all__ = ["HypothesesConfig", "STATEMENTS", "Tables", "collect_tables", "evaluate_family", "run_family", "headline"]

#: Null and alternative of each family member, shown even when it could not be tested.
STATEMENTS: dict[str, tuple[str, str]] = {
    "H1": ("Batch size has no positive indirect effect on test error through lambda_max at equal train loss.",
           "Smaller batches reach lower lambda_max, which gives lower test error at equal train loss (a*b > 0)."),
    "H2": ("Skip connections do not lower the measure (mean paired difference skip - no-skip >= 0).",
           "Skip connections lower the measure (mean paired difference < 0)."),
    "H3": ("Higher alignment of the noise with the top Hessian subspace does not raise the odds of escaping a sharp minimum.",
           "Higher alignment raises the odds of escape (odds ratio > 1)."),
    "H4": ("The Hessian-informed PAC-Bayes bound is not below every baseline bound on average.",
           "The Hessian-informed bound is below the parameter-count (Occam) and the isotropic bounds."),
}

H2_MEASURES = ("lambda_max", "trace", "outlier_count", "barrier")
_LOG_SCALE = {"lambda_max": True, "trace": True}


def _rule(allowed: str, check: Callable[[Any], bool]) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _names(options: tuple[str, ...] | None = None) -> dict[str, Any]:
    what = f"a non-empty list of names from {list(options)}" if options else "a non-empty list of names"
    return _rule(what, lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) for v in x)
                 and (options is None or all(v in options for v in x)))


def _level(x: Any) -> bool:
    return isinstance(x, float) and 0 < x < 1


@dataclass(frozen=True)
class HypothesesConfig:
    """Settings of the hypotheses stage (``hypotheses`` in params.yaml).

    Attributes:
        alpha: Family-wise level of the verdicts (Holm).
        ci_level: Coverage of every interval.
        n_boot: Bootstrap resamples (H1's indirect effect, tau intervals).
        seed: Seed of every bootstrap.
        min_clusters: Seeds needed for cluster-robust inference (fewer: seed fixed effects).
        paired_test: Test that supplies H2's and H4's p-values, ``t`` or ``wilcoxon``.
        h1_experiment: Experiment group of the batch-size sweep.
        h2_experiment: Group whose configs with a ``skip`` model key are paired.
        h2_measures: Measures compared by H2 (subset of lambda_max, trace, outlier_count, barrier).
        barrier_split: Data split of the H2 barriers, ``train`` or ``test``.
        h4_bound, h4_baselines: Bound families compared by H4 (names in bounds.json).
        regression_measures: Curvature columns scored against the targets.
        regression_targets: ``test_error`` and/or ``gen_gap``.
    """

    alpha: float = field(default=0.05, metadata=_rule("a float in (0, 1)", _level))
    ci_level: float = field(default=0.95, metadata=_rule("a float in (0, 1)", _level))
    n_boot: int = field(default=2000, metadata=_rule("an int >= 100", lambda x: x >= 100))
    seed: int = field(default=0, metadata=_rule("an int >= 0", lambda x: x >= 0))
    min_clusters: int = field(default=10, metadata=_rule("an int >= 2", lambda x: x >= 2))
    paired_test: str = field(default="t", metadata=_rule("one of ['t', 'wilcoxon']", lambda x: x in ("t", "wilcoxon")))
    h1_experiment: str = "h1_batch"
    h2_experiment: str = "h2_arch"
    h2_measures: tuple[str, ...] = field(default=H2_MEASURES, metadata=_names(H2_MEASURES))
    barrier_split: str = field(default="test", metadata=_rule("one of ['train', 'test']", lambda x: x in ("train", "test")))
    h4_bound: str = "hessian"
    h4_baselines: tuple[str, ...] = field(default=("occam", "isotropic"), metadata=_names())
    regression_measures: tuple[str, ...] = field(default=("lambda_max", "trace", "logdet", "kappa", "difficulty_index"), metadata=_names())
    regression_targets: tuple[str, ...] = field(default=("test_error", "gen_gap"), metadata=_names(("test_error", "gen_gap")))

    def __post_init__(self) -> None:
        for name in ("h2_measures", "h4_baselines", "regression_measures", "regression_targets"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for f in self.__dataclass_fields__.values():
            check = f.metadata.get("check")
            if check is not None and not check(getattr(self, f.name)):
                raise ConfigError(f"hypotheses.{f.name}={getattr(self, f.name)!r} is not allowed; allowed: {f.metadata['allowed']}")
        if self.h4_bound in self.h4_baselines:
            raise ConfigError(f"hypotheses.h4_bound={self.h4_bound!r} cannot also be one of h4_baselines {list(self.h4_baselines)}")


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
    """

    runs: pd.DataFrame
    barriers: pd.DataFrame
    escape: pd.DataFrame
    invariance: dict[str, Any]
    found: dict[str, int]


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def collect_tables(root: str | Path, experiments: Mapping[str, Any], seeds: list[int]) -> Tables:
    """Read every stage output under ``root`` for the configs of ``experiments`` (params.yaml).

    Args:
        root: Repository root holding runs/, measure/, probes/, bounds/, escape/.
        experiments: ``params["experiments"]`` (configs give batch size, skip, norm).
        seeds: The seeds of the sweep.
    """
    root = Path(root)
    found = {"runs": 0, "curvature": 0, "bounds": 0, "probes": 0, "escape_trials": 0}
    rows, barrier_rows = [], []
    invariance: dict[str, Any] = {}
    for exp, spec in experiments.items():
        for cfg, values in spec["configs"].items():
            model, train = values.get("model", {}), values.get("train", {})
            if train.get("random_labels"):  # the bounds study's memorisation control, not a hypothesis run
                continue
            probe = _read(root / "probes" / exp / cfg / "results.json")
            found["probes"] += probe is not None
            probe_metrics = _read(root / "probes" / exp / cfg / "metrics.json") or {}
            if not invariance and isinstance(probe_metrics.get("invariance"), Mapping):
                invariance = {"experiment": exp, "config": cfg, **probe_metrics["invariance"]}
            for seed in seeds:
                metrics = _read(root / "runs" / exp / cfg / f"seed{seed}" / "metrics.json")
                if metrics is None:
                    continue
                found["runs"] += 1
                row: dict[str, Any] = {
                    "experiment": exp, "config": cfg, "seed": seed, "status": metrics.get("status"),
                    "batch_size": train.get("batch_size"), "skip": model.get("skip"), "norm": model.get("norm", "none"),
                    "model": model.get("name"), **{k: _number(metrics.get(k)) for k in ("test_error", "train_loss", "gen_gap", "train_error", "num_params")},
                }
                curv = _read(root / "measure" / exp / cfg / "seeds" / f"seed{seed}" / "curvature.json")
                if curv is not None and curv.get("status") == "measured":
                    found["curvature"] += 1
                    noise = curv.get("noise") or {}
                    row.update(lambda_max=_number(curv.get("lambda_max")), trace=_number(curv.get("trace")), logdet=_number(curv.get("logdet")),
                               outlier_count=_number((curv.get("rmt") or {}).get("outlier_count")),
                               kappa=_number(noise.get("kappa")), difficulty_index=_number(noise.get("difficulty_index")))
                bnd = _read(root / "bounds" / "runs" / exp / cfg / f"seed{seed}" / "bounds.json")
                if bnd is not None and bnd.get("status") == "bounded":
                    found["bounds"] += 1
                    row.update({f"bound_{k}": _number(v) for k, v in (bnd.get("bounds") or {}).items()})
                sharp = ((probe or {}).get("sharpness") or {}).get("seeds", {}).get(f"seed{seed}", {})
                row.update({f"sharpness_{k}": _number(v.get("value")) for k, v in sharp.items() if isinstance(v, Mapping)})
                rows.append(row)
            pairs = ((probe or {}).get("barriers") or {}).get("pairs") or {}
            for key, entry in pairs.items():
                barrier_rows.append({"experiment": exp, "config": cfg, "pair": key, "skip": model.get("skip"), "norm": model.get("norm", "none"),
                                     **{f"barrier_{s}": _number(((entry.get(s) or {}).get("raw") or {}).get("barrier")) for s in ("train", "test")}})
    trials = _read(root / "escape" / "trials.json")
    escape = pd.DataFrame((trials or {}).get("trials", []))
    if "alignment" in escape:  # share of noise energy in the top-k subspace, in percentage points
        escape["alignment_pct"] = 100.0 * escape["alignment"]
    found["escape_trials"] = len(escape)
    return Tables(runs=pd.DataFrame(rows), barriers=pd.DataFrame(barrier_rows), escape=escape, invariance=invariance, found=found)


# ------------------------------------------------------------------ tests


def _not_tested(name: str, reason: str, n: int = 0) -> dict[str, Any]:
    base = name.split("[")[0]
    null, alt = STATEMENTS.get(base, ("", ""))
    return {"name": name, "status": f"not tested: {reason}", "null": null, "alternative": alt, "n_runs": n, "supported": False}


def _attempt(name: str, n: int, fn: Callable[[], HypothesisResult | tuple[HypothesisResult, ...]]) -> Any:
    """Run a test; a ValueError from the statistics (too few seeds, no variation...) becomes
    a ``not tested`` record carrying its message."""
    try:
        return fn()
    except ValueError as exc:
        return _not_tested(name, str(exc), n)


def _completed(runs: pd.DataFrame, *need: str) -> pd.DataFrame:
    if runs.empty:
        return runs
    keep = runs["status"] == "completed"
    for col in need:
        if col not in runs.columns:
            return runs.iloc[0:0]
        keep &= runs[col].notna()
    return runs[keep]


def evaluate_family(tables: Tables, config: HypothesesConfig) -> dict[str, Any]:
    """Run H1-H4 and the regressions on ``tables``; Holm within each family.

    Returns:
        ``{"hypotheses": [...], "regressions": [...], "inputs": ..., "invariance": ...}``;
        each entry is a :class:`HypothesisResult` dict with ``status: "tested"`` or a
        ``not tested`` record with the reason.
    """
    c = config
    common = {"alpha": c.alpha, "ci_level": c.ci_level}
    runs = tables.runs
    family: list[Any] = []

    h1 = _completed(runs, "lambda_max", "batch_size") if not runs.empty else runs
    h1 = h1[h1["experiment"] == c.h1_experiment] if not h1.empty else h1
    family.append(_not_tested("H1", f"input missing: no measured runs of {c.h1_experiment!r}") if h1.empty else _attempt(
        "H1", len(h1), lambda: h1_batch_sharpness(h1, n_boot=c.n_boot, seed=c.seed, min_clusters=c.min_clusters, **common)))

    h2 = runs[(runs["experiment"] == c.h2_experiment) & runs["skip"].notna()] if not runs.empty else runs
    for measure in c.h2_measures:
        name = f"H2[{measure}]"
        if measure == "barrier":
            col = f"barrier_{c.barrier_split}"
            table = tables.barriers
            table = table[(table["experiment"] == c.h2_experiment) & table["skip"].notna()] if not table.empty else table
            if table.empty:
                family.append(_not_tested(name, f"input missing: no barriers in probes/{c.h2_experiment}/*/results.json"))
                continue
            table = table.rename(columns={col: "barrier"})
            family.append(_attempt(name, len(table), lambda t=table: h2_skip_flattens(
                t, "barrier", pair_on=("norm", "pair"), group="pair", test=c.paired_test, **common)))
            continue
        table = _completed(h2, measure)
        if table.empty:
            family.append(_not_tested(name, f"input missing: no measured skip/no-skip runs of {c.h2_experiment!r}"))
            continue
        family.append(_attempt(name, len(table), lambda t=table, m=measure: h2_skip_flattens(
            t, m, pair_on=("norm", "seed"), log_scale=_LOG_SCALE.get(m, False), test=c.paired_test, **common)))

    esc = tables.escape
    family.append(_not_tested("H3", "input missing: escape/trials.json") if esc.empty else _attempt(
        "H3", len(esc), lambda: h3_alignment_escape(esc, outcome="escape", predictor="alignment_pct", factor=None, group="seed",
                                                    time="escape_step", min_clusters=c.min_clusters, **common)))

    bound_cols = [f"bound_{b}" for b in (c.h4_bound, *c.h4_baselines)]
    h4 = _completed(runs, *bound_cols)
    family.append(_not_tested("H4", "input missing: no bounds/*/*/seeds/seed*/bounds.json with "
                              f"{bound_cols}") if h4.empty else _attempt(
        "H4", len(h4), lambda: h4_bounds(h4, bound=bound_cols[0], baselines=bound_cols[1:], test=c.paired_test, **common)))

    regressions: list[Any] = []
    for target in c.regression_targets:
        for measure in c.regression_measures:
            name = f"tau[{measure},{target}]"
            table = _completed(runs, measure, target)
            if table.empty:
                regressions.append(_not_tested(name, f"input missing: no runs with {measure!r} and {target!r}"))
                continue
            result = _attempt(name, len(table), lambda t=table, m=measure, g=target: curvature_regressions(
                t, [m], g, n_boot=c.n_boot, seed=c.seed, **common)[0])
            if isinstance(result, HypothesisResult):
                verdict = tables.invariance.get(measure)
                extra = {**result.extra, "invariance_verdict": verdict if verdict is not None else "not audited"}
                result = HypothesisResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__}, "extra": extra})
            regressions.append(result)

    return {
        "hypotheses": _holm_records(family, c.alpha),
        "regressions": _holm_records(regressions, c.alpha),
        "inputs": tables.found,
        "invariance": tables.invariance,
        "families": {"hypotheses": "Holm over the tested members of H1-H4 (H2 one member per measure)",
                     "regressions": "Holm over the tested Kendall-tau regressions (exploratory)"},
    }


def _holm_records(members: list[Any], alpha: float) -> list[dict[str, Any]]:
    tested = [m for m in members if isinstance(m, HypothesisResult)]
    corrected = iter(holm(tested, alpha=alpha) if tested else ())
    out = []
    for m in members:
        out.append({**next(corrected).to_dict(), "status": "tested"} if isinstance(m, HypothesisResult) else m)
    return out


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


def run_family(root: str | Path, experiments: Mapping[str, Any], seeds: list[int], config: HypothesesConfig) -> dict[str, Any]:
    """:func:`collect_tables` then :func:`evaluate_family` (what the stage calls)."""
    return evaluate_family(collect_tables(root, experiments, seeds), config)
