"""Validation of a whole ``params.yaml`` before any stage runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landscape.data.config import DataConfig
from landscape.pipeline.layout import Layout
from landscape.pipeline.measure import CurvatureConfig
from landscape.schema import ConfigError, check_key_name, parse_config
from landscape.training.config import RunConfig

__all__ = ["validate_all", "validate_analysis_sections", "run", "validate_pipeline_params"]


def _check_seeds(seeds: Any, where: str) -> None:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{where}={seeds!r} is not allowed; allowed: a non-empty list of ints >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}={seeds!r} repeats a seed")


def validate_pipeline_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a whole ``params.yaml`` mapping before any stage runs.

    Checks the ``seeds`` list, every ``datasets`` entry (:class:`DataConfig`, registered
    loader name and its options), every ``experiments.<exp>.configs.<cfg>`` entry
    (:class:`RunConfig`, registered model name, data set key) and the ``curvature``
    entries (:class:`CurvatureConfig`; keys are experiments, and an experiment without an
    entry is not measured: the pipeline's validation checks that every measure stage has one).

    Returns:
        ``{"datasets": {key: DataConfig}, "runs": {(exp, cfg): RunConfig}}``.

    Raises:
        ConfigError: the first problem found, naming its key path and value.
    """
    import torch

    from landscape.data import DATASETS
    from landscape.models import MODEL_NAMES, OUR_MODEL_NAMES, build_model

    known_top = {"profile", "seeds", "datasets", "templates", "experiments"}
    sections = {"curvature", "probes", "bounds", "escape", "eos", "hypotheses", "report", "phi", "optimizers", "spectra_scaling",
                "dense_check", "class_structure"}
    extra = sorted(set(params) - known_top - sections)
    if extra:
        raise ConfigError(f"unknown top-level key {extra[0]!r} in params.yaml; allowed: {sorted(known_top)} and stage sections")
    _check_seeds(params.get("seeds"), "seeds")
    datasets: dict[str, DataConfig] = {}
    for key, values in (params.get("datasets") or {}).items():
        cfg = parse_config(DataConfig, values, f"datasets.{key}")
        if cfg.name not in DATASETS:
            raise ConfigError(f"datasets.{key}.name={cfg.name!r} is not a registered data set; valid: {sorted(DATASETS)}")
        allowed = set(DATASETS[cfg.name].options())
        unknown = sorted(set(cfg.options) - allowed)
        if unknown:
            raise ConfigError(f"unknown key datasets.{key}.options.{unknown[0]}; {cfg.name!r} accepts: {sorted(allowed)}")
        datasets[key] = cfg
    experiments = params.get("experiments")
    if not isinstance(experiments, Mapping) or not experiments:
        raise ConfigError("params.yaml needs a non-empty `experiments` mapping")
    runs: dict[tuple[str, str], RunConfig] = {}
    for exp, spec in experiments.items():
        check_key_name(exp, "experiments.<name>")
        if not isinstance(spec, Mapping) or not {"dataset", "configs"} <= set(spec) or set(spec) - {"dataset", "configs", "seeds"}:
            raise ConfigError(f"experiments.{exp} must have the keys ['configs', 'dataset'] and optionally 'seeds', got {spec!r}")
        if "seeds" in spec:
            _check_seeds(spec["seeds"], f"experiments.{exp}.seeds")
        if spec.get("dataset") not in datasets:
            raise ConfigError(f"experiments.{exp}.dataset={spec.get('dataset')!r} is not a key of `datasets`; valid: {sorted(datasets)}")
        configs = spec.get("configs")
        if not isinstance(configs, Mapping):  # empty: the experiment is off in this profile
            raise ConfigError(f"experiments.{exp}.configs must be a mapping of config names (empty: no runs), got {configs!r}")
        for name, values in configs.items():
            check_key_name(name, f"experiments.{exp}.configs.<name>")
            where = f"experiments.{exp}.configs.{name}"
            run = parse_config(RunConfig, values, where)
            if run.model["name"] not in MODEL_NAMES:
                raise ConfigError(f"{where}.model.name={run.model['name']!r} is not a registered model; valid: {sorted(MODEL_NAMES)}")
            runs[(exp, name)] = run
            options = {k: v for k, v in run.model.items() if k != "name"}
            if run.model["name"] in OUR_MODEL_NAMES:  # catches misspelt or impossible options now
                try:  # on the meta device: shapes and options checked, no weights drawn (the paper grid took 20 s)
                    with torch.device("meta"):
                        build_model(run.model["name"], num_classes=10, in_chans=1, img_size=32, seed=0, **options)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{where}.model: {exc}") from None
    curvature = params.get("curvature")
    if not isinstance(curvature, Mapping) or not curvature:
        raise ConfigError(f"curvature must be a non-empty mapping of experiment -> measure settings, got {curvature!r}")
    unknown = sorted(set(curvature) - set(experiments))
    if unknown:  # an experiment without an entry is not measured (no measure_<experiment> stage)
        raise ConfigError(f"unknown key curvature.{unknown[0]}: not an experiment; allowed: {sorted(experiments)}")
    measure = {exp: parse_config(CurvatureConfig, curvature[exp], f"curvature.{exp}") for exp in experiments if exp in curvature}
    checked = {"datasets": datasets, "runs": runs, "curvature": measure}
    if "bounds" in params:
        from landscape.pipeline.bounds import (  # the bounds stage's own section
            BoundsConfig,
            parse_bounds_section,
        )

        bounds = parse_bounds_section(params["bounds"], experiments)
        checked["bounds"] = {**bounds, "settings": parse_config(BoundsConfig, bounds["settings"], "bounds.settings")}
    return checked



def validate_analysis_sections(params: Mapping[str, Any], layout: Layout) -> None:
    """The escape, eos, hypotheses, report, phi, optimizers, spectra_scaling, dense_check and
    class_structure sections (each optional; checked when present)."""
    from landscape.pipeline.class_structure import load_config as class_structure_config
    from landscape.pipeline.dense_check import load_config as dense_check_config
    from landscape.pipeline.eos import EosConfig
    from landscape.pipeline.escape import SOURCE_EXPERIMENT, EscapeConfig
    from landscape.pipeline.hypotheses import HypothesesConfig
    from landscape.pipeline.optimizers import load_config as optimizers_config
    from landscape.pipeline.phi_search import load_config as phi_config
    from landscape.pipeline.report import pages_from
    from landscape.pipeline.spectra_scaling import SpectraScalingConfig

    experiments = params.get("experiments") or {}
    if "escape" in params:
        esc = params["escape"]
        if not isinstance(esc, Mapping) or set(esc) != {"config", "settings"}:
            raise ConfigError(f"escape must have exactly the keys ['config', 'settings'], got {esc!r}")
        configs = (experiments.get(SOURCE_EXPERIMENT) or {}).get("configs") or {}
        if esc["config"] not in configs:
            raise ConfigError(f"escape.config={esc['config']!r} is not a config of experiments.{SOURCE_EXPERIMENT}; "
                              f"valid: {sorted(configs)}")
        parse_config(EscapeConfig, esc["settings"], "escape.settings")
    if "eos" in params:
        eos = parse_config(EosConfig, params["eos"], "eos")
        if eos.dataset not in (params.get("datasets") or {}):
            raise ConfigError(f"eos.dataset={eos.dataset!r} is not a key of `datasets`; valid: {sorted(params.get('datasets') or {})}")
    if "hypotheses" in params:
        parse_config(HypothesesConfig, params["hypotheses"], "hypotheses")
    if "spectra_scaling" in params:
        ss = parse_config(SpectraScalingConfig, params["spectra_scaling"], "spectra_scaling")
        for key in ("scaling_experiment", "batch_experiment"):
            if getattr(ss, key) not in experiments:
                raise ConfigError(f"spectra_scaling.{key}={getattr(ss, key)!r} is not an experiment group; valid: {sorted(experiments)}")
        for entry in ss.plot_configs:
            exp, cfg = entry.split("/")
            if cfg not in ((experiments.get(exp) or {}).get("configs") or {}):
                raise ConfigError(f"spectra_scaling.plot_configs names {entry!r}, which is not an <experiment>/<config> of experiments")
    if "report" in params:
        pages_from(params, layout)
    if "phi" in params:
        phi_config(params)
    if "optimizers" in params:
        optimizers_config(params)
    if "dense_check" in params:
        dense_check_config(params)
    if "class_structure" in params:
        class_structure_config(params)


def validate_all(params: Mapping[str, Any], layout: Layout) -> str:
    """Every section of ``params`` and the currency of ``dvc.yaml``, before any stage runs.

    Returns:
        A one-line summary.

    Raises:
        ConfigError: the first problem found, naming its key path and value; or ``dvc.yaml``
            does not match ``params.yaml`` (a new experiment group, a changed import), naming
            the stages and the command that regenerates it.
    """
    from landscape.pipeline.dvcfile import check
    from landscape.pipeline.probe import validate_probe_params

    checked = validate_pipeline_params(params)
    validate_analysis_sections(params, layout)
    probes = validate_probe_params(params)
    stale = check(params, layout)
    if stale:
        raise ConfigError("dvc.yaml does not match params.yaml and the stage scripts' imports: " + "; ".join(stale)
                          + ". Regenerate it with `make dvc.yaml` (python -m landscape.pipeline.dvcfile); "
                          "`make repro` does this itself")
    return (f"params ok: {len(checked['datasets'])} data sets, {len(checked['runs'])} run configs, "
            f"probes for {sum(len(c.configs) for c in probes['probe'].values())} configs; dvc.yaml current")


def run(params: Mapping[str, Any], layout: Layout, stamp: bool = False) -> None:
    """The ``validate`` stage: check everything; with ``stamp``, write the constant file every
    entry depends on (so plain ``dvc repro`` validates before any work)."""
    from landscape.io import write_json
    from landscape.pipeline.dvcfile import VALIDATED

    print(validate_all(params, layout))
    if stamp:
        write_json(layout.root / VALIDATED, {"params": "validated"})
