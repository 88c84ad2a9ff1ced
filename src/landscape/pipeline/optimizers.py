"""optimizers stage: compare the optimizers of one experiment group over seeds.

Reads ``runs/<group>/<config>/seed<k>/`` (``metrics.json`` and the DVCLive logs) of the group
named by ``optimizers.experiment`` (:func:`landscape.pipeline.tables.optimizer_runs`),
summarises every config and runs the paired test families of
:mod:`landscape.stats.optimizers`, and writes ``optimizers/results.json`` (table per config,
paired tests per comparison, test-error curves) and ``optimizers/metrics.json`` (headline
numbers, for ``dvc metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from landscape.io import write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import group_seeds, section
from landscape.pipeline.tables import optimizer_runs
from landscape.schema import Checked, ConfigError, int_at_least, parse_config, rule
from landscape.stats.multiple import holm_records
from landscape.stats.optimizers import (
    compare_divergence,
    compare_test_error,
    curve_bands,
    headline,
    summarize_configs,
)
from landscape.stats.result import plain

__all__ = ["OptimizersConfig", "compare_optimizers", "load_config", "run"]

_LEVEL = rule("a float in (0, 1)", lambda x: isinstance(x, float) and 0 < x < 1)


@dataclass(frozen=True)
class OptimizersConfig(Checked):
    """Settings of the ``optimizers`` stage (``optimizers`` in params.yaml, less ``experiment``).

    Attributes:
        levels: Learning-rate level name -> the configs of the experiment group trained at
            that level (one per optimizer). Every config of the group is in exactly one level.
        comparisons: ``[treated, reference]`` optimizer names, each compared at every level.
        alpha: Family-wise level of the verdicts (Holm within each family).
        ci_level: Coverage of every interval.
        min_pairs: Fewest seeds with both runs completed for the paired test-error test
            (fewer: ``not tested``, with the reason).
    """

    levels: Mapping[str, tuple[str, ...]]
    comparisons: tuple[tuple[str, str], ...]
    alpha: float = field(default=0.05, metadata=_LEVEL)
    ci_level: float = field(default=0.95, metadata=_LEVEL)
    min_pairs: int = field(default=3, metadata=int_at_least(2))

    def _extra_checks(self) -> None:
        levels = self.levels
        ok = isinstance(levels, Mapping) and levels and all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and v and all(isinstance(c, str) for c in v) for k, v in levels.items())
        if not ok:
            raise ConfigError(f"optimizers.levels={levels!r} is not allowed; allowed: a non-empty mapping of level name -> "
                              "non-empty list of config names")
        names = [c for v in levels.values() for c in v]
        if len(set(names)) != len(names):
            raise ConfigError(f"optimizers.levels={dict(levels)!r} lists a config twice; allowed: each config in one level")
        object.__setattr__(self, "levels", {k: tuple(v) for k, v in levels.items()})
        pairs = self.comparisons
        pairs_ok = isinstance(pairs, (list, tuple)) and pairs and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(o, str) for o in p) and p[0] != p[1] for p in pairs)
        if not pairs_ok:
            shown = [list(p) if isinstance(p, (list, tuple)) else p for p in pairs] if isinstance(pairs, (list, tuple)) else pairs
            raise ConfigError(f"optimizers.comparisons={shown!r} is not allowed; allowed: a non-empty list of "
                              "[treated, reference] pairs of two different optimizer names")
        pairs = tuple((str(a), str(b)) for a, b in pairs)
        if len(set(pairs)) != len(pairs):
            raise ConfigError(f"optimizers.comparisons={list(map(list, pairs))!r} repeats a pair")
        object.__setattr__(self, "comparisons", pairs)

    def assign(self, configs: Mapping[str, Mapping[str, Any]], where: str = "experiments.optimizers.configs") -> dict[str, dict[str, Any]]:
        """Map every config of the group to its level, optimizer and learning rate.

        Args:
            configs: ``experiments.<group>.configs`` of params.yaml (``train.optimizer``
                defaults to ``sgd`` and ``train.lr`` to 0.05, as in ``TrainConfig``).
            where: Key path of ``configs`` for error messages.

        Raises:
            ConfigError: A level names an unknown config, a config is in no level, two
                configs of one level share an optimizer, or a compared optimizer is missing
                from a level.
        """
        listed = {c: lvl for lvl, cs in self.levels.items() for c in cs}
        unknown = sorted(set(listed) - set(configs))
        if unknown:
            raise ConfigError(f"optimizers.levels names {unknown[0]!r}, not a key of {where}; valid: {sorted(configs)}")
        unplaced = sorted(set(configs) - set(listed))
        if unplaced:
            raise ConfigError(f"{where}.{unplaced[0]} is in no optimizers.levels entry; allowed: every config in exactly one level")
        out: dict[str, dict[str, Any]] = {}
        for level, names in self.levels.items():
            seen: dict[str, str] = {}
            for name in names:
                train = (configs[name] or {}).get("train") or {}
                opt = train.get("optimizer", "sgd")
                if opt in seen:
                    raise ConfigError(f"optimizers.levels.{level} has two configs with optimizer {opt!r}: {seen[opt]!r} and {name!r}")
                seen[opt] = name
                out[name] = {"level": level, "optimizer": opt, "lr": float(train.get("lr", 0.05))}
            for treated, reference in self.comparisons:
                missing = [o for o in (treated, reference) if o not in seen]
                if missing:
                    raise ConfigError(f"optimizers.comparisons needs optimizer {missing[0]!r} at level {level!r}; "
                                      f"optimizers.levels.{level} has {sorted(seen)}")
        return out


def load_config(params: Mapping[str, Any]) -> tuple[str, OptimizersConfig, dict[str, Any]]:
    """``(experiment, settings, configs)`` of the ``optimizers`` section, checked against the group."""
    values = dict(section(params, "optimizers"))
    experiment = values.pop("experiment", None)
    if not isinstance(experiment, str) or experiment not in (params.get("experiments") or {}):
        raise ConfigError(f"optimizers.experiment={experiment!r} is not allowed; allowed: a key of experiments "
                          f"{sorted(params.get('experiments') or {})}")
    cfg = parse_config(OptimizersConfig, values, "optimizers")
    configs = section(params, "experiments", experiment, "configs")
    cfg.assign(configs, f"experiments.{experiment}.configs")
    return experiment, cfg, configs


def compare_optimizers(
    layout: Layout,
    experiment: str,
    configs: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    config: OptimizersConfig,
) -> dict[str, Any]:
    """Read the group's runs, summarise every config, run both test families.

    Args:
        layout: The artifact tree.
        experiment: The experiment group (``experiments.<experiment>`` in params.yaml).
        configs: ``experiments.<experiment>.configs``.
        seeds: Seeds of the sweep.
        config: The stage's settings.

    Returns:
        ``{"table": [ConfigSummary dicts], "test_error": [...], "divergence": [...],
        "curves": [...], "runs": [per-run rows], "families": ..., "settings": ...}``.
    """
    assignment = config.assign(configs, f"experiments.{experiment}.configs")
    tables = optimizer_runs(layout, experiment, assignment, seeds)
    runs = tables.runs
    common = {"alpha": config.alpha, "ci_level": config.ci_level}
    errors, divergence = [], []
    for level in config.levels:
        for treated, reference in config.comparisons:
            errors.append(compare_test_error(runs, level, treated, reference, min_pairs=config.min_pairs, **common))
            divergence.append(compare_divergence(runs, level, treated, reference, **common))
    return {
        "experiment": experiment,
        "table": [s.to_dict() for s in summarize_configs(runs, config.ci_level)],
        "test_error": holm_records(errors, config.alpha),
        "divergence": holm_records(divergence, config.alpha),
        "curves": curve_bands(tables.curves, config.ci_level),
        "runs": plain(runs.to_dict(orient="records")),
        "families": {"test_error": "Holm over the tested paired test-error comparisons (all levels)",
                     "divergence": "Holm over the tested paired divergence comparisons (all levels)"},
        "settings": {"levels": {k: list(v) for k, v in config.levels.items()}, "comparisons": [list(p) for p in config.comparisons],
                     "alpha": config.alpha, "ci_level": config.ci_level, "min_pairs": config.min_pairs},
    }


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Compare the optimizers and write ``optimizers/{results,metrics}.json``."""
    experiment, cfg, configs = load_config(params)
    seeds = group_seeds(params, experiment)
    results = compare_optimizers(layout, experiment, configs, seeds, cfg)
    write_json(layout.results("optimizers"), {"profile": params.get("profile"), "seeds": seeds, **results})
    write_json(layout.metrics("optimizers"), headline(results))
    for row in results["table"]:
        print(f"{row['config']}: test_error={row['test_error_mean']:.4f} (n={row['test_error_n']}), "
              f"diverged {row['n_diverged']}/{row['n_runs']}, {row['seconds_mean']:.2f} s, {row['hvps_mean']:.0f} HVPs")
    for entry in [*results["test_error"], *results["divergence"]]:
        if entry["status"] == "tested":
            print(f"{entry['name']}: effect={entry['effect']:+.4f} [{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}] "
                  f"p={entry['p_value']:.3g} p_holm={entry['p_holm']:.3g} n={entry['n_runs']}")
        else:
            print(f"{entry['name']}: {entry['status']}")
    return results
