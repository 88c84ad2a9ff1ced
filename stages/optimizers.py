"""optimizers stage: compare the optimizers of one experiment group over seeds.

Usage: python stages/optimizers.py

Reads runs/<group>/<config>/seed<k>/ (metrics.json and the DVCLive logs) of the group
named by ``optimizers.experiment``, runs ``landscape.stats.optimizers.run_optimizer_comparison``
and writes optimizers/results.json (table per config, paired tests per comparison, test-error
curves) and optimizers/metrics.json (headline numbers, for dvc metrics).
"""

from __future__ import annotations

from _common import ROOT, ConfigError, fail, load_params, section

from landscape.io import write_json
from landscape.schema import parse_config
from landscape.stats.optimizers import OptimizersConfig, headline, run_optimizer_comparison


def settings_from(params: dict) -> tuple[str, OptimizersConfig, dict]:
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


def main() -> None:
    params = load_params()
    try:
        experiment, cfg, configs = settings_from(params)
        seeds = section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    try:
        results = run_optimizer_comparison(ROOT, experiment, configs, seeds, cfg)
    except FileNotFoundError as exc:
        fail(str(exc))
    out = ROOT / "optimizers"
    write_json(out / "results.json", {"profile": params.get("profile"), "seeds": seeds, **results})
    write_json(out / "metrics.json", headline(results))
    for row in results["table"]:
        print(f"{row['config']}: test_error={row['test_error_mean']:.4f} (n={row['test_error_n']}), "
              f"diverged {row['n_diverged']}/{row['n_runs']}, {row['seconds_mean']:.2f} s, {row['hvps_mean']:.0f} HVPs")
    for entry in [*results["test_error"], *results["divergence"]]:
        if entry["status"] == "tested":
            print(f"{entry['name']}: effect={entry['effect']:+.4f} [{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}] "
                  f"p={entry['p_value']:.3g} p_holm={entry['p_holm']:.3g} n={entry['n_runs']}")
        else:
            print(f"{entry['name']}: {entry['status']}")


if __name__ == "__main__":
    main()
