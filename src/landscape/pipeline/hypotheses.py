"""hypotheses stage: H1-H4 and the curvature-generalisation regressions on every output.

Reads (whatever exists; a missing input makes its tests ``not tested: input missing``) the
tables of :func:`landscape.pipeline.tables.hypothesis_tables`, builds every member of the
family with its entry of :data:`HYPOTHESES`, Holm-corrects each family
(:mod:`landscape.stats.family`) and writes ``hypotheses/results.json`` (every test:
statement, test, effect, CI, p, Holm p, verdict, n, extras) and ``hypotheses/metrics.json``
(the headline numbers, for ``dvc metrics``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from landscape.io import write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import section
from landscape.pipeline.tables import hypothesis_tables
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    one_of,
    parse_config,
    rule,
    subset_of,
)
from landscape.stats.bounds_h4 import h4_replicated
from landscape.stats.correlation import curvature_regressions
from landscape.stats.dose_response import dose_response_power_at, escape_arms, h3_dose_response
from landscape.stats.family import (
    H2_MEASURES,
    Tables,
    attempt,
    completed,
    headline,
    holm_records,
    not_tested,
)
from landscape.stats.noise_scale import LITERATURE, h1_noise_scale
from landscape.stats.replication import replicated_records
from landscape.stats.result import HypothesisResult
from landscape.stats.skip_depth import (
    depth_skip_interaction,
    norm_flattens,
    pair_seeds,
    shared_seed_barrier_test,
)

__all__ = ["HypothesesConfig", "HYPOTHESES", "H1_OUTCOMES", "evaluate_family", "h1_headline_row", "load_config", "run"]

_LEVEL = rule("a float in (0, 1)", lambda x: isinstance(x, float) and 0 < x < 1)
_NAMES = rule("a non-empty list of names", lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) for v in x))
_LOG_SCALE = {"lambda_max": True, "trace": True}


@dataclass(frozen=True)
class HypothesesConfig(Checked):
    """Settings of the hypotheses stage (``hypotheses`` in params.yaml).

    Attributes:
        alpha: Family-wise level of the verdicts (Holm).
        ci_level: Coverage of every interval.
        n_boot: Bootstrap resamples (H1's indirect effect, tau intervals).
        seed: Seed of every bootstrap.
        min_clusters: Seeds needed for cluster-robust inference (fewer: seed fixed effects).
        paired_test: Test that supplies H4's p-values, ``t`` or ``wilcoxon``.
        h1_experiment: Experiment group of H1's eta x B grid trained to a common train loss.
        h2_experiment: H2's group: a depth x skip factorial of networks with ``depth`` and ``skip``
            model keys, and the normalisation arm.
        h2_measures: Measures of H2 (subset of lambda_max, trace, outlier_count, barrier): the depth x skip
            interaction for the curvature measures (log scale for lambda_max and trace), the shared-seed
            barrier test for ``barrier``.
        h2_factorial_norm: The ``norm`` of the factorial's configs (the group's configs with it, less the
            normalisation arm's).
        h2_norm_configs: Configs of ``h2_experiment`` that form the normalisation arm (one architecture,
            differing only in ``norm`` and their rate; one of them ``norm: none``); empty: no member.
        h2_effect_of_interest: Interaction (log units per doubling of depth) whose power is reported.
        barrier_split: Data split of the H2 barriers, ``train`` or ``test``.
        h4_bound, h4_baselines: Bound families compared by H4 (names in bounds.json).
        regression_measures: Curvature columns scored against the targets (``logdet_curvature`` is the
            log-det's curvature part ``sum_i ln(1 + max(lambda_i, 0) / eps)``; the raw ``logdet`` is mostly
            ``d ln eps``, a parameter count).
        regression_targets: ``test_error`` and/or ``gen_gap``.
    """

    alpha: float = field(default=0.05, metadata=_LEVEL)
    ci_level: float = field(default=0.95, metadata=_LEVEL)
    n_boot: int = field(default=2000, metadata=int_at_least(100))
    seed: int = field(default=0, metadata=int_at_least(0))
    min_clusters: int = field(default=10, metadata=int_at_least(2))
    paired_test: str = field(default="t", metadata=one_of(("t", "wilcoxon")))
    h1_experiment: str = "h1_equal_loss"
    h2_experiment: str = "h2_depth"
    h2_measures: tuple[str, ...] = field(default=("lambda_max", "trace", "barrier"), metadata=subset_of(H2_MEASURES))
    h2_factorial_norm: str = field(default="ln", metadata=one_of(("none", "bn", "ln")))
    h2_norm_configs: tuple[str, ...] = ("norm_none", "norm_bn", "norm_ln")
    h2_effect_of_interest: float = field(default=-0.231, metadata=rule("a float < 0", lambda x: isinstance(x, float) and x < 0))
    barrier_split: str = field(default="test", metadata=one_of(("train", "test")))
    h4_bound: str = "curvature"
    h4_baselines: tuple[str, ...] = field(default=("occam", "isotropic"), metadata=_NAMES)
    regression_measures: tuple[str, ...] = field(
        default=("spectral_norm", "lambda_max", "trace", "logdet_curvature", "kappa", "difficulty_index"), metadata=_NAMES)
    regression_targets: tuple[str, ...] = field(default=("test_error", "gen_gap"), metadata=subset_of(("test_error", "gen_gap")))

    def _extra_checks(self) -> None:
        if self.h4_bound in self.h4_baselines:
            raise ConfigError(f"hypotheses.h4_bound={self.h4_bound!r} cannot also be one of h4_baselines {list(self.h4_baselines)}")


# ------------------------------------------------------------------ the family, one builder per hypothesis

Member = Any  # a HypothesisResult or a ``not tested`` record
PairedTest = Literal["t", "wilcoxon"]  # HypothesesConfig.paired_test, checked by its one_of rule at construction
Builder = Callable[[Tables, HypothesesConfig, Layout], list[Member]]


#: H1's outcomes at the common train-loss target: (runs column, regress its log2, literature key).
H1_OUTCOMES = (("lambda_max", "lambda_max_final", True), ("test_error", "test_error", False))


def _h1(tables: Tables, c: HypothesesConfig, layout: Layout) -> list[Member]:  # noqa: ARG001  (the Builder signature; H1 names no file)
    """H1 at equal train loss (:func:`landscape.stats.noise_scale.h1_noise_scale`): one member per
    outcome, on the group's primary seeds, with its replication on the others. Runs that hit
    their step cap before the target train loss are left out (counted in ``extra``)."""
    runs = tables.runs
    group = runs[runs["experiment"] == c.h1_experiment] if not runs.empty else runs
    names = [f"H1[{label}]" for label, _, _ in H1_OUTCOMES]
    if group.empty or "hit_cap" not in group.columns:
        reason = f"input missing: no train-to-target runs of {c.h1_experiment!r} (train.target_loss with along-training records)"
        return [not_tested(n, reason) for n in names]
    done = group[group["status"] == "completed"]
    capped = done[done["hit_cap"] == True]  # noqa: E712  (a column of True/False/None)
    reached = done[done["reached_target"] == True]  # noqa: E712
    primary, replication = tables.seed_split.get(c.h1_experiment, (sorted(group["seed"].unique()), []))
    context = {"n_hit_cap": len(capped), "hit_cap_runs": [f"{r.config}/seed{r.seed}" for r in capped.itertuples()],
               "n_diverged": int((group["status"] == "diverged").sum()), "n_reached": len(reached),
               "train_loss_at_stop": {"min": float(reached["train_loss"].min()), "max": float(reached["train_loss"].max())}
               if not reached.empty else None}
    out: list[Member] = []
    for (label, column, log_outcome), name in zip(H1_OUTCOMES, names, strict=True):
        effect, source = LITERATURE[label]
        result = attempt(name, len(reached), lambda col=column, lo=log_outcome, e=effect, s=source, n=name: h1_noise_scale(  # type: ignore[misc]  # defaults bind loop values
            reached, outcome=col, log_outcome=lo, primary_seeds=primary, replication_seeds=replication, name=n, alpha=c.alpha,
            ci_level=c.ci_level, min_clusters=c.min_clusters, literature_effect=e, literature_source=s))
        if isinstance(result, HypothesisResult):
            result = dataclasses.replace(result, extra={**result.extra, **context})
        out.append(result)
    return out


def h1_headline_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One H1 member of ``hypotheses/results.json`` as its ``reports/headline.json`` row."""
    row: dict[str, Any] = {"name": entry["name"], "status": entry["status"], "verdict": entry.get("verdict")}
    if entry["status"] != "tested":
        return row
    extra = entry.get("extra") or {}
    rep = entry.get("replication") or {}
    rep_extra = ((extra.get("replication") or {}).get("extra") or {})
    row.update({k: entry[k] for k in ("effect_name", "effect", "ci_low", "ci_high", "ci_level", "p_value", "p_holm", "n_runs", "n_groups")})
    row.update(replication_effect=rep.get("effect"), replication_ci=[rep.get("ci_low"), rep.get("ci_high")],
               replication_p_holm=rep.get("p_holm"), replication_n_runs=rep.get("n_runs"),
               batch_effect=extra.get("batch_effect"), literature_effect=extra.get("literature_effect"),
               literature_source=extra.get("literature_source"), power_primary=extra.get("power_at_literature_effect"),
               power_replication=rep_extra.get("power_at_literature_effect"),
               train_loss_at_comparison=extra.get("train_loss_at_stop"), n_hit_cap=extra.get("n_hit_cap"),
               n_diverged=extra.get("n_diverged"))
    return row


def _split(df: Any, primary: tuple[int, ...], seed_of: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Rows of the primary seeds and of the replication seeds (``seed_of`` maps a row to its
    seeds: one, or a pair's two; a pair across the two sets is in neither)."""
    if df.empty or not primary:
        return df, df.iloc[0:0]
    seeds = df.apply(seed_of, axis=1)
    return df[seeds.map(lambda ss: all(x in primary for x in ss))], df[seeds.map(lambda ss: not any(x in primary for x in ss))]


def _with_replication(name: str, run: Callable[[Any], HypothesisResult], primary: Any, replication: Any) -> Member:
    """The primary test with the replication's result and the verdict rule in ``extra``."""
    main = attempt(name, len(primary), lambda: run(primary))
    if not isinstance(main, HypothesisResult):
        return main
    rep = attempt(name, len(replication), lambda: run(replication)) if not replication.empty else None
    info: dict[str, Any]
    if isinstance(rep, HypothesisResult):  # the verdict rule is applied after Holm (stats.replication.replicated_records)
        info = {"replication": {**rep.to_dict(), "significant": rep.supported,
                                **{k: rep.extra[k] for k in ("per_depth", "cells", "arms", "adjusted") if k in rep.extra}}}
    else:
        reason = rep["status"] if rep is not None else "not tested: no replication seeds"
        info = {"replication": None, "replication_rule": {"verdict": "inconclusive", "reason": f"replication {reason}"}}
    return HypothesisResult(**{**{f: getattr(main, f) for f in main.__dataclass_fields__}, "extra": {**main.extra, **info}})


def _h2(tables: Tables, c: HypothesesConfig, layout: Layout) -> list[Member]:
    runs, primary = tables.runs, tables.primary_seeds
    common: dict[str, Any] = {"alpha": c.alpha, "ci_level": c.ci_level}
    group = runs[(runs["experiment"] == c.h2_experiment) & runs["skip"].notna()] if not runs.empty else runs
    out: list[Member] = []
    for measure in c.h2_measures:
        name = f"H2[{measure}]"
        if measure == "barrier":
            table = tables.barriers
            table = table[(table["experiment"] == c.h2_experiment) & table["skip"].notna()] if not table.empty else table
            if table.empty:
                where = layout.relative(layout.probe_results(c.h2_experiment, "*"))
                out.append(not_tested(name, f"input missing: no barriers in {where}"))
                continue
            table = table.rename(columns={f"barrier_{c.barrier_split}": "barrier"})
            table = table.assign(setting=table["depth"].astype(str) + "/" + table["norm"])
            pri, rep = _split(table, primary, lambda row: pair_seeds(row["pair"]))
            out.append(_with_replication(name, lambda t: shared_seed_barrier_test(t, "barrier", setting="setting", **common), pri, rep))
            continue
        table = completed(group, measure, "depth")
        table = table[(table["norm"] == c.h2_factorial_norm) & ~table["config"].isin(c.h2_norm_configs)] if not table.empty else table
        if table.empty:
            out.append(not_tested(name, f"input missing: no measured depth x skip runs of {c.h2_experiment!r} "
                                        f"with norm {c.h2_factorial_norm!r}"))
            continue
        pri, rep = _split(table, primary, lambda row: (row["seed"],))
        out.append(_with_replication(name, lambda t, m=measure: depth_skip_interaction(  # type: ignore[misc]  # defaults bind the loop values
            t, m, log_scale=_LOG_SCALE.get(m, False), min_clusters=c.min_clusters, effect_of_interest=c.h2_effect_of_interest,
            **common), pri, rep))
    if c.h2_norm_configs:
        arm = completed(group, "lambda_max")
        arm = arm[arm["config"].isin(c.h2_norm_configs)] if not arm.empty else arm
        if arm.empty or arm["norm"].nunique() < 2:
            out.append(not_tested("H2[norm]", f"input missing: no measured runs of {c.h2_experiment!r} configs {list(c.h2_norm_configs)}"))
        else:
            pri, rep = _split(arm, primary, lambda row: (row["seed"],))
            out.append(_with_replication("H2[norm]", lambda t: norm_flattens(t, "lambda_max", **common), pri, rep))
    return out


def _h3(tables: Tables, c: HypothesesConfig, layout: Layout) -> list[Member]:
    """H3 from the dose-response arms (``scaled`` trials) of the primary seeds; the
    replication seeds' fit, the replication verdict and the descriptive per-arm rates go to ``extra``."""
    esc = tables.escape
    if esc.empty:
        return [not_tested("H3", f"input missing: {layout.relative(layout.escape_trials)}")]
    if "seed_set" not in esc or not (esc["noise_type"] == "scaled").any():
        where = layout.relative(layout.escape_trials)
        return [not_tested("H3", f"input missing: no dose-response trials (noise type 'scaled') in {where}")]
    family = esc[esc["noise_type"] == "scaled"]
    primary, replication = family[family["seed_set"] == "primary"], family[family["seed_set"] == "replication"]
    if primary.empty:
        return [not_tested("H3", "input missing: no dose-response trials on the primary seeds")]

    def build() -> HypothesisResult:
        res = h3_dose_response(primary, alpha=c.alpha, ci_level=c.ci_level)
        starts = esc.drop_duplicates("seed")
        extra: dict[str, Any] = {**res.extra, "seed_set": "primary", "arms": escape_arms(esc),
                                 "start_points": {"n": len(starts), "loss_max": float(starts["loss_start"].max()),
                                                  "grad_norm_max": float(starts["grad_norm_start"].max())},
                                 "power": dose_response_power_at(primary, seed=c.seed, alpha=c.alpha)}
        try:  # the same test on the replication seeds (landscape.stats.replication applies the rule)
            rep = h3_dose_response(replication, name="H3[replication]", alpha=c.alpha, ci_level=c.ci_level)
            power = dose_response_power_at(replication, seed=c.seed, alpha=c.alpha)
            extra["replication"] = dataclasses.replace(rep, extra={**rep.extra, "power": power}).to_dict()
        except (ValueError, KeyError) as err:  # no replication seeds, or no escape among them
            extra["replication"], extra["replication_status"] = None, f"not tested: {err}"
        return dataclasses.replace(res, extra=extra)

    return [attempt("H3", len(primary), build)]


def _h4(tables: Tables, c: HypothesesConfig, layout: Layout) -> list[Member]:
    """H4 on the bounds of the trained networks (:func:`landscape.stats.bounds_h4.h4_replicated`):
    the primary seeds of each bounded group tested, the rest its replication."""
    bound_cols = [f"bound_{b}" for b in (c.h4_bound, *c.h4_baselines)]
    h4 = completed(tables.runs, *bound_cols)
    if h4.empty:
        # bounds/runs/<experiment>/<config>/seed<k>/bounds.json
        where = layout.relative(layout.bounds_run("*", "*", "*"))  # type: ignore[arg-type]  # "*" globs the seed for the message
        return [not_tested("H4", f"input missing: no {where} with {bound_cols}")]
    groups = sorted(h4["experiment"].unique())
    split = {g: tables.seed_split.get(g, (sorted(h4.loc[h4["experiment"] == g, "seed"].unique()), [])) for g in groups}
    primary = sorted({int(s) for g in groups for s in split[g][0]})
    replication = sorted({int(s) for g in groups for s in split[g][1]} - set(primary))
    describe = [col for col in h4.columns if col.startswith("bound_") and col not in bound_cols]
    test = cast(PairedTest, c.paired_test)
    return [attempt("H4", len(h4), lambda: h4_replicated(h4, bound=bound_cols[0], baselines=bound_cols[1:], test=test,
                                                         primary_seeds=primary, replication_seeds=replication, alpha=c.alpha,
                                                         ci_level=c.ci_level, describe=describe))]


#: The pre-registered family, in report order: name -> builder of its member(s) from the tables.
HYPOTHESES: dict[str, Builder] = {"H1": _h1, "H2": _h2, "H3": _h3, "H4": _h4}


def _regressions(tables: Tables, c: HypothesesConfig) -> list[Member]:
    out: list[Member] = []
    for target in c.regression_targets:
        for measure in c.regression_measures:
            name = f"tau[{measure},{target}]"
            table = completed(tables.runs, measure, target)
            if table.empty:
                out.append(not_tested(name, f"input missing: no runs with {measure!r} and {target!r}"))
                continue
            result = attempt(name, len(table), lambda t=table, m=measure, g=target: curvature_regressions(  # type: ignore[misc]  # defaults bind loop values
                t, [m], g, n_boot=c.n_boot, seed=c.seed, alpha=c.alpha, ci_level=c.ci_level)[0])
            if isinstance(result, HypothesisResult):
                verdict = tables.invariance.get(measure)
                extra = {**result.extra, "invariance_verdict": verdict if verdict is not None else "not audited"}
                result = HypothesisResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__}, "extra": extra})
            out.append(result)
    return out


def evaluate_family(tables: Tables, config: HypothesesConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Run H1-H4 (:data:`HYPOTHESES`) and the regressions on ``tables``; Holm within each family.

    Args:
        tables: The inputs (:func:`landscape.pipeline.tables.hypothesis_tables`).
        config: The stage's settings.
        layout: The artifact tree (named in ``input missing`` reasons).

    Returns:
        ``{"hypotheses": [...], "regressions": [...], "inputs": ..., "invariance": ..., "families": ...}``;
        each entry is a :class:`HypothesisResult` dict with ``status: "tested"`` or a
        ``not tested`` record with the reason.
    """
    layout = layout or Layout()
    family = [member for build in HYPOTHESES.values() for member in build(tables, config, layout)]
    records = replicated_records(holm_records(family, config.alpha))
    for entry in records:  # H2's page and headline read the rule's outcome in extra
        if entry.get("verdict_detail") and isinstance(entry.get("extra"), dict):
            entry["extra"] = {**entry["extra"], "replication_rule": {**entry["verdict_detail"], "verdict": entry["verdict"]}}
    return {
        "hypotheses": records,
        "regressions": holm_records(_regressions(tables, config), config.alpha),
        "inputs": tables.found,
        "invariance": tables.invariance,
        "families": {"hypotheses": "Holm over the tested members of H1-H4 (H2 one member per measure and the normalisation arm; "
                                   "replications are judged outside the family, each at its own p)",
                     "regressions": "Holm over the tested Kendall-tau regressions (exploratory)"},
    }


def load_config(params: Mapping[str, Any]) -> HypothesesConfig:
    """The ``hypotheses`` section of params, validated."""
    return parse_config(HypothesesConfig, section(params, "hypotheses"), "hypotheses")


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Read the tables, test the family, write ``hypotheses/{results,metrics}.json``."""
    cfg = load_config(params)
    experiments, seeds = section(params, "experiments"), section(params, "seeds")
    results = evaluate_family(hypothesis_tables(layout, experiments, seeds), cfg, layout)
    write_json(layout.results("hypotheses"), {"profile": params.get("profile"), "seeds": seeds, **results})
    write_json(layout.metrics("hypotheses"), headline(results))
    for entry in results["hypotheses"]:
        if entry["status"] == "tested":
            print(f"{entry['name']}: effect={entry['effect']:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}] "
                  f"p={entry['p_value']:.3g} p_holm={entry['p_holm']:.3g} supported={entry['supported']} n={entry['n_runs']} "
                  f"verdict={entry['verdict']}")
        else:
            print(f"{entry['name']}: {entry['status']}")
    return results
