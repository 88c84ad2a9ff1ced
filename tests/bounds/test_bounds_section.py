"""The params.yaml `bounds` section: run list, random-label sanity pair, settings."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from landscape.bounds.run_bounds import BoundsConfig
from landscape.pipeline.validate import parse_bounds_section, validate_pipeline_params
from landscape.schema import ConfigError

REPO = Path(__file__).resolve().parents[2]
MLP = {"name": "mlp", "width": 8, "depth": 1}
TRAIN = {"epochs": 2, "batch_size": 16}
EXPERIMENTS = {
    "h1": {"dataset": "d", "configs": {"b16": {"model": MLP, "train": {**TRAIN, "snapshot_every": 1}},
                                        "b32": {"model": MLP, "train": {**TRAIN, "batch_size": 32}}}},
    "sanity": {"dataset": "d", "configs": {"random": {"model": MLP, "train": {**TRAIN, "random_labels": True}}}},
}
GOOD = {"runs": ["h1/b16", "sanity/random"], "sanity": {"real": "h1/b16", "random": "sanity/random"}, "settings": {"mc_draws": 10}}


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_every_profile_has_a_valid_bounds_section(profile):
    params = yaml.safe_load((REPO / profile).read_text())
    checked = validate_pipeline_params(params)
    bounds = checked["bounds"]
    assert isinstance(bounds["settings"], BoundsConfig)
    assert bounds["sanity"]["random"] in params["bounds"]["runs"]
    assert all(cfg in params["experiments"][exp]["configs"] for exp, cfg in bounds["runs"])


def test_good_section_parses():
    out = parse_bounds_section(GOOD, EXPERIMENTS)
    assert out == {"runs": [("h1", "b16"), ("sanity", "random")], "sanity": GOOD["sanity"], "settings": {"mc_draws": 10}}
    assert parse_bounds_section({"runs": ["h1/b32"]}, EXPERIMENTS)["sanity"] is None


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b.update(extra=1), "unknown key bounds.extra"),
        (lambda b: b.update(runs=[]), "bounds.runs=\\[\\] is not allowed"),
        (lambda b: b.update(runs=["h1/b16", "h1/b16"]), "repeats a run"),
        (lambda b: b.update(runs=["h1/b64", "sanity/random"]), "'h1/b64' is not an experiment config; valid: \\['h1/b16'"),
        (lambda b: b.update(runs=["nope/b16"]), "'nope/b16' is not an experiment config"),
        (lambda b: b.update(sanity={"real": "h1/b16"}), "bounds.sanity=.* is not allowed"),
        (lambda b: b.update(sanity={"real": "h1/b32", "random": "sanity/random"}), "bounds.sanity.real='h1/b32' must be one of bounds.runs"),
        (lambda b: b.update(sanity={"real": "sanity/random", "random": "h1/b16"}), "random_labels false for real"),
        (lambda b: b.update(settings=[1]), "bounds.settings must be a mapping"),
    ],
)
def test_bad_sections_name_the_key(edit, match):
    section = copy.deepcopy(GOOD)
    edit(section)
    with pytest.raises(ConfigError, match=match):
        parse_bounds_section(section, EXPERIMENTS)


def test_sanity_pair_must_be_the_same_network_and_training():
    experiments = copy.deepcopy(EXPERIMENTS)
    experiments["sanity"]["configs"]["random"]["train"]["batch_size"] = 32
    with pytest.raises(ConfigError, match="must be the same network and training except random_labels"):
        parse_bounds_section(GOOD, experiments)
    experiments = copy.deepcopy(EXPERIMENTS)
    experiments["sanity"]["configs"]["random"]["model"] = {**MLP, "width": 16}
    with pytest.raises(ConfigError, match="same network"):
        parse_bounds_section(GOOD, experiments)


def test_pipeline_validation_checks_bounds_settings():
    params = yaml.safe_load((REPO / "profiles/ci.yaml").read_text())
    params["bounds"]["settings"]["prior_fraction"] = 1.5
    with pytest.raises(ConfigError, match="bounds.settings.prior_fraction=1.5 is not allowed"):
        validate_pipeline_params(params)
    params["bounds"]["settings"]["prior_fraction"] = 0.5
    params["bounds"]["runs"].append("h2_arch/missing")
    with pytest.raises(ConfigError, match="'h2_arch/missing' is not an experiment config"):
        validate_pipeline_params(params)
