"""Validated, frozen configuration objects built from plain mappings (``params.yaml``).

Every stage turns its section of ``params.yaml`` into one of these dataclasses before any
work starts. An unknown key, a value of the wrong type or an impossible value raises
``ValueError`` naming the key path, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "DataConfig",
    "TrainConfig",
    "RunConfig",
    "CurvatureConfig",
    "parse_config",
    "parse_bounds_section",
    "OPTIMIZERS",
    "SCHEDULES",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "curvature_adaptive", "hybrid")
SCHEDULES = ("constant", "cosine", "step")

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter failed validation; the message names the key, value and what is allowed."""


def _rule(allowed: str, check: Callable[[Any], bool]) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _positive(x: Any) -> bool:
    return x > 0


def _nonneg(x: Any) -> bool:
    return x >= 0


@dataclass(frozen=True)
class DataConfig:
    """One prepared data set: which loader, its options, and how it is split.

    Attributes:
        name: registered data set name (see ``landscape.data.DATASETS``).
        options: keyword arguments of the loader (e.g. ``image_size``, ``n``, ``dim``).
        root: directory searched for data sets that live on disk.
        download: let torchvision download missing files (needs a network).
        test_fraction: share of examples held out as the test split.
        probe_size: size of the fixed probe subset of the train split (curvature is
            measured there).
        split_seed: seed of the deterministic split.
        max_train: cap on the number of training examples (``None`` for all).
        normalize: standardise inputs with train-split statistics.
        official_split: keep the data set's official train/test split (torchvision sets)
            instead of a random stratified one.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    root: str = "data/raw"
    download: bool = False
    test_fraction: float = field(default=0.2, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    probe_size: int = field(default=1000, metadata=_rule("an int >= 1", lambda x: x >= 1))
    split_seed: int = 0
    max_train: int | None = field(default=None, metadata=_rule("null or an int >= 1", lambda x: x is None or x >= 1))
    normalize: bool = True
    official_split: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained (optimizer, schedule, budget, checkpoints).

    Attributes:
        epochs: passes over the training split.
        batch_size: examples per SGD step.
        optimizer: one of ``OPTIMIZERS``.
        lr: base learning rate.
        momentum: heavy-ball momentum (SGD) in [0, 1).
        nesterov: Nesterov momentum (SGD; needs momentum > 0).
        weight_decay: L2 coefficient (decoupled for AdamW).
        schedule: one of ``SCHEDULES``; ``step`` multiplies the rate by ``step_gamma``
            every ``step_epochs`` epochs.
        augment: random crop (pad 2 / 4 px) and horizontal flip for image inputs.
        amp: mixed precision on CUDA (bf16, or fp16 with loss scaling); ignored with a
            warning on CPU.
        amp_dtype: ``bf16`` or ``fp16``.
        checkpoint_every: epochs between atomic checkpoints.
        divergence_loss: a training loss above this (or NaN/Inf) marks the run diverged.
        eval_batch_size: batch size of evaluation passes.
        random_labels: replace the training labels by uniformly random classes, fixed
            per seed (the memorisation control of the bounds study).
        lr_reference_batch: if set, the linear scaling rule
            ``lr * batch_size / lr_reference_batch``; ``null`` keeps ``lr`` fixed.
        snapshot_every: keep the weights every this many epochs (and at epoch 0) beside
            the checkpoint, for curvature along training; 0 keeps none.
        curvature_gamma: ``curvature_adaptive`` (SGD with momentum) uses
            ``lr / (1 + curvature_gamma * ||H_t||_2)``; 0 is plain SGD.
        hybrid_mu: ``hybrid`` (Adam) adds ``lr * hybrid_mu`` times the unit top Hessian
            eigenvector; 0 is plain Adam.
        curvature_every: steps between the power-iteration estimates of those two.
        power_steps: warm-started power iterations (Hessian-vector products) per estimate.
    """

    epochs: int = field(default=10, metadata=_rule("an int >= 1", lambda x: x >= 1))
    batch_size: int = field(default=128, metadata=_rule("an int >= 1", lambda x: x >= 1))
    optimizer: str = field(default="sgd", metadata=_rule(f"one of {list(OPTIMIZERS)}", lambda x: x in OPTIMIZERS))
    lr: float = field(default=0.05, metadata=_rule("a float > 0", _positive))
    momentum: float = field(default=0.9, metadata=_rule("a float in [0, 1)", lambda x: 0 <= x < 1))
    nesterov: bool = False
    weight_decay: float = field(default=0.0, metadata=_rule("a float >= 0", _nonneg))
    schedule: str = field(default="cosine", metadata=_rule(f"one of {list(SCHEDULES)}", lambda x: x in SCHEDULES))
    step_epochs: int = field(default=10, metadata=_rule("an int >= 1", lambda x: x >= 1))
    step_gamma: float = field(default=0.1, metadata=_rule("a float in (0, 1]", lambda x: 0 < x <= 1))
    augment: bool = False
    amp: bool = False
    amp_dtype: str = field(default="bf16", metadata=_rule("one of ['bf16', 'fp16']", lambda x: x in ("bf16", "fp16")))
    checkpoint_every: int = field(default=1, metadata=_rule("an int >= 1", lambda x: x >= 1))
    divergence_loss: float = field(default=1e4, metadata=_rule("a float > 0", _positive))
    eval_batch_size: int = field(default=1000, metadata=_rule("an int >= 1", lambda x: x >= 1))
    random_labels: bool = False
    lr_reference_batch: int | None = field(
        default=None, metadata=_rule("null or an int >= 1", lambda x: x is None or x >= 1)
    )
    snapshot_every: int = field(default=0, metadata=_rule("an int >= 0", _nonneg))
    curvature_gamma: float = field(default=0.0, metadata=_rule("a float >= 0", _nonneg))
    hybrid_mu: float = field(default=0.0, metadata=_rule("a float >= 0", _nonneg))
    curvature_every: int = field(default=10, metadata=_rule("an int >= 1", lambda x: x >= 1))
    power_steps: int = field(default=3, metadata=_rule("an int >= 1", lambda x: x >= 1))

    def __post_init__(self) -> None:
        if self.nesterov and (self.optimizer not in ("sgd", "curvature_adaptive") or self.momentum == 0):
            raise ConfigError(
                f"train.nesterov=true needs optimizer 'sgd' or 'curvature_adaptive' with momentum > 0, "
                f"got optimizer={self.optimizer!r}, momentum={self.momentum}"
            )
        if self.amp and self.optimizer in ("curvature_adaptive", "hybrid"):
            raise ConfigError(
                f"train.amp=true is not supported with optimizer {self.optimizer!r} (its Hessian-vector "
                "products need an unscaled float32 graph); allowed: amp=false"
            )


@dataclass(frozen=True)
class RunConfig:
    """One training run: the model (name + keyword arguments for ``build_model``) and how to train it."""

    model: Mapping[str, Any]
    train: TrainConfig

    def __post_init__(self) -> None:
        if not isinstance(self.model.get("name"), str):
            raise ConfigError(f"model.name must be a model name string, got {self.model.get('name')!r}")


@dataclass(frozen=True)
class CurvatureConfig:
    """Settings of the ``measure`` stage (keyword arguments of ``measure_curvature``).

    Attributes:
        num_examples: examples of the fixed probe subset the Hessian is taken over.
        batch_size: examples per forward pass when forming products.
        at_init: also measure the network at its initialisation (rebuilt from the seed).
        bn_mode: BatchNorm policy, ``eval`` or ``batch``.
        top_k: top eigenpairs by Lanczos (their Ritz vectors are cached).
        eig_tol: relative Ritz residual tolerance.
        trace_matvecs: Hessian-vector products of the trace estimate.
        trace_method: ``hutch++``, ``hutchinson`` or ``xtrace``.
        slq_probes, slq_steps: stochastic Lanczos quadrature budget (density and log-det).
        logdet_eps: eps of ``log det(H + eps I)``.
        per_layer: per-module top eigenvalue and trace.
        per_layer_matvecs: trace budget per module.
        per_layer_tol: relative Ritz residual tolerance of each module's top eigenvalue
            (looser than ``eig_tol``: one Lanczos run per module, each product a full one).
        noise_examples: examples for per-sample gradients and the noise covariance, at the final
            weights and at every training snapshot (0 skips).
        diag_probes: Hutchinson probes for diag(H) (the ``C ~ diag(H)`` check; 0 skips).
        along_training_matvecs: trace budget at each training snapshot (lambda_max and
            trace along training, when the run kept snapshots).
    """

    num_examples: int = field(default=1000, metadata=_rule("an int >= 2", lambda x: x >= 2))
    batch_size: int = field(default=500, metadata=_rule("an int >= 1", lambda x: x >= 1))
    at_init: bool = False
    bn_mode: str = field(default="eval", metadata=_rule("one of ['eval', 'batch']", lambda x: x in ("eval", "batch")))
    top_k: int = field(default=10, metadata=_rule("an int >= 1", lambda x: x >= 1))
    eig_tol: float = field(default=1e-3, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    trace_matvecs: int = field(default=60, metadata=_rule("an int >= 4", lambda x: x >= 4))
    trace_method: str = field(
        default="hutch++", metadata=_rule("one of ['hutch++', 'hutchinson', 'xtrace']", lambda x: x in ("hutch++", "hutchinson", "xtrace"))
    )
    slq_probes: int = field(default=4, metadata=_rule("an int >= 1", lambda x: x >= 1))
    slq_steps: int = field(default=40, metadata=_rule("an int >= 2", lambda x: x >= 2))
    logdet_eps: float = field(default=1e-3, metadata=_rule("a float > 0", _positive))
    per_layer: bool = True
    per_layer_matvecs: int = field(default=20, metadata=_rule("an int >= 4", lambda x: x >= 4))
    per_layer_tol: float = field(default=1e-2, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    noise_examples: int = field(default=256, metadata=_rule("an int >= 0", _nonneg))
    diag_probes: int = field(default=20, metadata=_rule("an int >= 0", _nonneg))
    along_training_matvecs: int = field(default=20, metadata=_rule("an int >= 4", lambda x: x >= 4))


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a (simple) type annotation; ints are accepted as floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin is not None and issubclass(origin, Mapping) or annotation is Mapping:
        return isinstance(value, Mapping)
    return True


def parse_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``values``, validating every key.

    Args:
        cls: one of the config dataclasses (fields may be nested config dataclasses).
        values: the mapping read from YAML (``None`` means all defaults).
        where: the key path of ``values`` in ``params.yaml``, used in error messages.

    Raises:
        ConfigError: unknown key, wrong type or a value outside the allowed range.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (value {values[unknown[0]]!r}); allowed keys: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in values:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default and not dataclasses.is_dataclass(hints[name]):
                raise ConfigError(f"missing required key {key}")
            if no_default:
                kwargs[name] = parse_config(hints[name], None, key)
            continue
        value = values[name]
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = parse_config(hints[name], value, key)
            continue
        rule = f.metadata
        if not _type_ok(value, hints[name]):
            allowed = rule.get("allowed", getattr(hints[name], "__name__", str(hints[name])))
            raise ConfigError(f"{key}={value!r} has the wrong type; allowed: {allowed}")
        if "check" in rule and not rule["check"](value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {rule['allowed']}")
        if hints[name] is float or (typing.get_origin(hints[name]) is not None and float in typing.get_args(hints[name])):
            value = float(value) if value is not None else None
        kwargs[name] = dict(value) if isinstance(value, Mapping) else value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_KEY_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_key_name(name: Any, where: str) -> None:
    """Experiment and config names become DVC param paths (``experiments.<exp>.configs.<cfg>``,
    split at dots) and stage names: a dot would make DVC silently stop tracking the entry's params."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise ConfigError(f"{where}={name!r} is not a valid name: use letters, digits, '_' and '-' only "
                          "(DVC splits param paths at dots), e.g. 'lr_0p02' for a learning rate of 0.02")


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
        _check_key_name(exp, "experiments.<name>")
        if not isinstance(spec, Mapping) or set(spec) - {"dataset", "configs"}:
            raise ConfigError(f"experiments.{exp} must have exactly the keys ['configs', 'dataset'], got {spec!r}")
        if spec.get("dataset") not in datasets:
            raise ConfigError(f"experiments.{exp}.dataset={spec.get('dataset')!r} is not a key of `datasets`; valid: {sorted(datasets)}")
        configs = spec.get("configs")
        if not isinstance(configs, Mapping):  # empty: the experiment is off in this profile
            raise ConfigError(f"experiments.{exp}.configs must be a mapping of config names (empty: no runs), got {configs!r}")
        for name, values in configs.items():
            _check_key_name(name, f"experiments.{exp}.configs.<name>")
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
        from landscape.bounds.run_bounds import BoundsConfig

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
