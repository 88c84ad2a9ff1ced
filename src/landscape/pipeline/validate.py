"""Validation of a whole ``params.yaml`` before any stage runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from landscape.data.config import DataConfig
from landscape.pipeline.measure import CurvatureConfig
from landscape.schema import ConfigError, check_key_name, parse_config
from landscape.training.config import RunConfig

__all__ = ["validate_pipeline_params", "parse_bounds_section"]


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
    extra = sorted(set(params) - known_top - {"curvature", "probes", "bounds", "escape", "hypotheses", "report", "phi", "optimizers", "spectra_scaling"})
    if extra:
        raise ConfigError(f"unknown top-level key {extra[0]!r} in params.yaml; allowed: {sorted(known_top)} and stage sections")
    seeds = params.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"seeds={seeds!r} is not allowed; allowed: a non-empty list of ints >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds!r} repeats a seed")
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
        if not isinstance(spec, Mapping) or set(spec) - {"dataset", "configs"}:
            raise ConfigError(f"experiments.{exp} must have exactly the keys ['configs', 'dataset'], got {spec!r}")
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
        from landscape.bounds.run_bounds import BoundsConfig  # moves to landscape.pipeline.bounds

        bounds = parse_bounds_section(params["bounds"], experiments)
        checked["bounds"] = {**bounds, "settings": parse_config(BoundsConfig, bounds["settings"], "bounds.settings")}
    return checked


def parse_bounds_section(values: Any, experiments: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``bounds`` section's run list and sanity pair against ``experiments``.

    ``bounds.runs`` is a non-empty list of distinct ``"<experiment>/<config>"`` names;
    ``bounds.sanity`` is null or ``{real: <run>, random: <run>}``, both in ``runs``, the
    same model and training except ``random_labels`` (true for ``random`` only) and
    ``snapshot_every``; ``bounds.settings`` is left to ``BoundsConfig``.

    Returns:
        ``{"runs": [(experiment, config), ...], "sanity": {"real", "random"} | None,
        "settings": mapping}``.

    Raises:
        ConfigError: naming the key and value at fault.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"bounds must be a mapping with keys ['runs', 'sanity', 'settings'], got {values!r}")
    unknown = sorted(set(values) - {"runs", "sanity", "settings"})
    if unknown:
        raise ConfigError(f"unknown key bounds.{unknown[0]}; allowed keys: ['runs', 'sanity', 'settings']")
    names = values.get("runs")
    if not isinstance(names, list) or not names or not all(isinstance(r, str) for r in names):
        raise ConfigError(f"bounds.runs={names!r} is not allowed; allowed: a non-empty list of '<experiment>/<config>' strings")
    if len(set(names)) != len(names):
        raise ConfigError(f"bounds.runs={names!r} repeats a run")
    runs = []
    for name in names:
        exp, _, cfg = name.partition("/")
        configs = (experiments.get(exp) or {}).get("configs") if isinstance(experiments.get(exp), Mapping) else None
        if not configs or cfg not in configs:
            valid = [f"{e}/{c}" for e, spec in experiments.items() if isinstance(spec, Mapping) for c in (spec.get("configs") or {})]
            raise ConfigError(f"bounds.runs entry {name!r} is not an experiment config; valid: {valid}")
        runs.append((exp, cfg))
    sanity = values.get("sanity")
    if sanity is not None:
        if not isinstance(sanity, Mapping) or set(sanity) != {"real", "random"}:
            raise ConfigError(f"bounds.sanity={sanity!r} is not allowed; allowed: null or {{real: <run>, random: <run>}}")
        specs = {}
        for role in ("real", "random"):
            if sanity[role] not in names:
                raise ConfigError(f"bounds.sanity.{role}={sanity[role]!r} must be one of bounds.runs {names}")
            exp, _, cfg = sanity[role].partition("/")
            specs[role] = parse_config(RunConfig, experiments[exp]["configs"][cfg], f"experiments.{exp}.configs.{cfg}")
        if specs["real"].train.random_labels or not specs["random"].train.random_labels:
            raise ConfigError(
                f"bounds.sanity needs random_labels false for real={sanity['real']!r} and true for random={sanity['random']!r}"
            )
        same = lambda t: {**dataclasses.asdict(t), "random_labels": None, "snapshot_every": None}  # noqa: E731
        if dict(specs["real"].model) != dict(specs["random"].model) or same(specs["real"].train) != same(specs["random"].train):
            raise ConfigError(
                f"bounds.sanity: {sanity['real']!r} and {sanity['random']!r} must be the same network and training "
                "except random_labels (and snapshot_every)"
            )
        sanity = {"real": sanity["real"], "random": sanity["random"]}
    settings = values.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"bounds.settings must be a mapping, got {settings!r}")
    return {"runs": runs, "sanity": sanity, "settings": dict(settings)}
