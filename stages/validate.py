"""Validate params.yaml as a whole before `dvc repro` starts any work.

Usage: python stages/validate.py [params.yaml]
"""

from __future__ import annotations

import sys

import yaml
from _common import LAYOUT, ROOT, ConfigError, fail, load_params

from landscape.pipeline.validate import validate_pipeline_params
from landscape.schema import parse_config
from landscape.probes.run_probes import validate_probe_params


def validate_analysis_sections(params: dict) -> None:
    """The escape, hypotheses, report, phi, optimizers and spectra_scaling sections (each optional; checked when present)."""
    from landscape.probes.escape import EscapeConfig
    from landscape.pipeline.hypotheses import HypothesesConfig
    from landscape.pipeline.spectra_scaling import SpectraScalingConfig
    from landscape.pipeline.report import pages_from

    if "escape" in params:
        esc = params["escape"]
        if not isinstance(esc, dict) or set(esc) != {"config", "settings"}:
            raise ConfigError(f"escape must have exactly the keys ['config', 'settings'], got {esc!r}")
        configs = params["experiments"].get("h1_batch", {}).get("configs", {})
        if esc["config"] not in configs:
            raise ConfigError(f"escape.config={esc['config']!r} is not a config of experiments.h1_batch; valid: {sorted(configs)}")
        parse_config(EscapeConfig, esc["settings"], "escape.settings")
    if "hypotheses" in params:
        parse_config(HypothesesConfig, params["hypotheses"], "hypotheses")
    if "spectra_scaling" in params:
        ss = parse_config(SpectraScalingConfig, params["spectra_scaling"], "spectra_scaling")
        experiments = params.get("experiments", {})
        for key in ("scaling_experiment", "batch_experiment"):
            if getattr(ss, key) not in experiments:
                raise ConfigError(f"spectra_scaling.{key}={getattr(ss, key)!r} is not an experiment group; valid: {sorted(experiments)}")
        for entry in ss.plot_configs:
            exp, cfg = entry.split("/")
            if cfg not in experiments.get(exp, {}).get("configs", {}):
                raise ConfigError(f"spectra_scaling.plot_configs names {entry!r}, which is not an <experiment>/<config> of experiments")
    if "report" in params:
        pages_from(params, LAYOUT)
    if "phi" in params:
        from landscape.pipeline.phi_search import load_config

        load_config(params)
    if "optimizers" in params:
        from landscape.pipeline.optimizers import load_config as optimizers_config

        optimizers_config(params)


def measure_sections() -> list[str]:
    """Experiments that dvc.yaml measures (``measure_<experiment>`` stages): each needs ``curvature.<experiment>``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")).get("stages", {})
    return [name[len("measure_"):] for name in stages if name.startswith("measure_")]


def check_measured(params: dict, required: list[str]) -> None:
    """Every experiment with a measure stage has its ``curvature`` entry."""
    missing = [exp for exp in required if exp not in (params.get("curvature") or {})]
    if missing:
        raise ConfigError(f"missing key curvature.{missing[0]}: dvc.yaml has a measure_{missing[0]} stage (required: {sorted(required)})")


def probe_sections() -> list[str]:
    """Keys of ``probes`` that dvc.yaml's stages read: ``probe_<experiment>``, ``intrinsic_dim``, ``sde``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")).get("stages", {})
    return [name[len("probe_"):] for name in stages if name.startswith("probe_")] + [n for n in ("intrinsic_dim", "sde") if n in stages]


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        params = load_params(path)
        checked = validate_pipeline_params(params)
        check_measured(params, measure_sections())
        validate_analysis_sections(params)
        probes = validate_probe_params(params, required=probe_sections())
    except (ConfigError, FileNotFoundError) as exc:
        fail(str(exc))
    print(f"params ok: {len(checked['datasets'])} data sets, {len(checked['runs'])} run configs, "
          f"probes for {sum(len(c.configs) for c in probes['probe'].values())} configs")


if __name__ == "__main__":
    main()
