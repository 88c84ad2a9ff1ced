"""Params validation: every bad value stops with a message naming key, value and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from landscape.data.config import DataConfig
from landscape.pipeline.validate import validate_pipeline_params
from landscape.schema import ConfigError, parse_config
from landscape.training.config import RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_defaults_and_float_coercion():
    cfg = parse_config(TrainConfig, {"lr": 1, "batch_size": 32}, "train")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.batch_size == 32
    assert parse_config(TrainConfig, None, "train") == TrainConfig()


@pytest.mark.parametrize(
    "values, match",
    [
        ({"lr": 0}, r"train\.lr=0 is not allowed; allowed: a float > 0"),
        ({"lr": -1e-3}, r"train\.lr=-0\.001 is not allowed"),
        ({"lr": "fast"}, r"train\.lr='fast' has the wrong type"),
        ({"batch_size": 1.5}, r"train\.batch_size=1\.5 has the wrong type; allowed: an int >= 1"),
        ({"batch_size": 0}, r"train\.batch_size=0 is not allowed"),
        ({"epochs": True}, r"train\.epochs=True has the wrong type"),
        ({"momentum": 1.0}, r"train\.momentum=1\.0 is not allowed; allowed: a float in \[0, 1\)"),
        ({"optimizer": "lbfgs"}, r"train\.optimizer='lbfgs' is not allowed; allowed: one of \['sgd', 'adam', 'adamw', 'curvature_adaptive', 'hybrid'\]"),
        ({"schedule": "linear"}, r"train\.schedule='linear' is not allowed"),
        ({"lrr": 0.1}, r"unknown key train\.lrr \(value 0\.1\); allowed keys: \['amp'"),
        ({"nesterov": True, "momentum": 0.0}, r"nesterov=true needs optimizer 'sgd' or 'curvature_adaptive' with momentum > 0"),
        ({"lr": float("nan")}, r"train\.lr=nan has the wrong type"),
        ({"optimizer": "hybrid", "amp": True}, r"train\.amp=true is not supported with optimizer 'hybrid'"),
        ({"curvature_gamma": -0.1}, r"train\.curvature_gamma=-0\.1 is not allowed; allowed: a float >= 0"),
    ],
)
def test_train_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(TrainConfig, values, "train")


def test_nested_errors_name_the_full_path():
    with pytest.raises(ConfigError, match=r"experiments\.h1\.configs\.b16\.train\.lr=0"):
        parse_config(RunConfig, {"model": {"name": "mlp"}, "train": {"lr": 0}}, "experiments.h1.configs.b16")
    with pytest.raises(ConfigError, match=r"missing required key x\.model"):
        parse_config(RunConfig, {"train": {}}, "x")
    with pytest.raises(ConfigError, match=r"datasets\.d\.test_fraction=1\.5 is not allowed"):
        parse_config(DataConfig, {"name": "digits", "test_fraction": 1.5}, "datasets.d")


def test_default_and_profile_params_validate(default_params):
    checked = validate_pipeline_params(default_params)
    assert ("h2_arch", "resnet_noskip_bn") in checked["runs"]
    assert checked["runs"][("h1_batch", "b16")].train.batch_size == 16
    for profile in sorted((REPO / "profiles").glob("*.yaml")):
        validate_pipeline_params(yaml.safe_load(profile.read_text()))


def _edit(params, path, value):
    params = copy.deepcopy(params)
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return params


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("experiments", "h1_batch", "configs", "b16", "model", "name"), "resnet9000",
         r"model\.name='resnet9000' is not a registered model; valid: \[.*'mlp'.*'resnet_small'"),
        (("experiments", "h1_batch", "configs", "b16", "model", "widht"), 64,
         r"b16\.model: .*unknown keyword argument 'widht'"),
        (("experiments", "h2_arch", "configs", "mlp_bn", "model", "norm"), "groupnorm",
         r"mlp_bn\.model: .*norm"),
        (("experiments", "h1_batch", "configs", "b16", "train", "lr"), 0.0, r"b16\.train\.lr=0\.0 is not allowed"),
        (("experiments", "h1_batch", "dataset"), "imagenet", r"dataset='imagenet' is not a key of `datasets`"),
        (("datasets", "mnist14", "name"), "mnist4k", r"name='mnist4k' is not a registered data set; valid: \[.*'mnist5k'"),
        (("datasets", "mnist14", "options", "image_sz"), 14, r"unknown key datasets\.mnist14\.options\.image_sz"),
        (("seeds",), [0, 0, 1], r"repeats a seed"),
        (("seeds",), [0, -1], r"seeds=\[0, -1\] is not allowed"),
        (("epochs",), 3, r"unknown top-level key 'epochs'"),
    ],
)
def test_pipeline_param_errors(default_params, path, value, match):
    with pytest.raises(ConfigError, match=match):
        validate_pipeline_params(_edit(default_params, path, value))


@pytest.mark.parametrize("where", ["config", "experiment"])
def test_dotted_names_stop_before_dvc_drops_their_params(default_params, where):
    """DVC splits `experiments.<exp>.configs.<cfg>` at dots: a config named `lr_0.02` would
    make its params invisible to `dvc status` (an edit would rerun nothing)."""
    params = copy.deepcopy(default_params)
    if where == "config":
        configs = params["experiments"]["h1_batch"]["configs"]
        configs["lr_0.02"] = configs.pop("b16")
        match = r"experiments\.h1_batch\.configs\.<name>='lr_0\.02' is not a valid name: .*'lr_0p02'"
    else:
        params["experiments"]["h1.batch"] = params["experiments"].pop("h1_batch")
        match = r"experiments\.<name>='h1\.batch' is not a valid name"
    with pytest.raises(ConfigError, match=match):
        validate_pipeline_params(params)


def test_curvature_entries_name_experiments_and_may_leave_one_unmeasured(default_params):
    checked = validate_pipeline_params(default_params)
    assert "optimizers" in default_params["experiments"] and "optimizers" not in checked["curvature"]
    assert checked["curvature"]["h1_batch"].top_k == default_params["curvature"]["h1_batch"]["top_k"]
    with pytest.raises(ConfigError, match=r"unknown key curvature\.nope: not an experiment"):
        validate_pipeline_params(_edit(default_params, ("curvature", "nope"), default_params["curvature"]["h1_batch"]))
    with pytest.raises(ConfigError, match=r"curvature must be a non-empty mapping"):
        validate_pipeline_params(_edit(default_params, ("curvature",), {}))
