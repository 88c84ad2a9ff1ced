"""params.yaml is validated as a whole before any work: the analysis sections, and dvc.yaml's
currency against params.yaml."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml

from landscape.pipeline import validate as _validate
from landscape.pipeline.layout import Layout
from landscape.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
validate_analysis_sections = functools.partial(_validate.validate_analysis_sections, layout=Layout(ROOT))


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_every_profile_is_valid(profile):
    validate_analysis_sections(yaml.safe_load((ROOT / profile).read_text()))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p["escape"].update(config="b3"), r"escape.config='b3' is not a config of experiments.h3_minima"),
        (lambda p: p["escape"].update(extra=1), "escape must have exactly the keys"),
        (lambda p: p["escape"]["settings"].update(restarts=0), "escape.settings.restarts=0"),
        (lambda p: p["escape"]["settings"].update(noise_types=["sgd", "sgd"]), "escape.settings.noise_types"),
        (lambda p: p["hypotheses"].update(alpha=0.0), "hypotheses.alpha=0.0"),
        (lambda p: p["hypotheses"].update(colour=1), "unknown key hypotheses.colour"),
        (lambda p: p["spectra_scaling"].update(num_classes=1), "spectra_scaling.num_classes=1 is not allowed"),
        (lambda p: p["spectra_scaling"].update(targets=["lambda_max", "width"]), "spectra_scaling.targets="),
        (lambda p: p["spectra_scaling"].update(colour=1), "unknown key spectra_scaling.colour"),
        (lambda p: p["spectra_scaling"].update(scaling_experiment="grid"), "spectra_scaling.scaling_experiment='grid' is not an experiment group"),
        (lambda p: p["spectra_scaling"].update(plot_configs=["h1_batch/b3"]), "plot_configs names 'h1_batch/b3'"),
        (lambda p: p["spectra_scaling"].update(plot_configs=["b64"]), "entries '<experiment>/<config>'"),
        (lambda p: p["report"].update(pages=["index", "nope"]), r"report.pages names \['nope'\]"),
        (lambda p: p["report"].update(pages=[]), "report.pages=\\[\\] is not allowed"),
    ],
)
def test_bad_values_name_key_and_value(params, edit, match):
    bad = copy.deepcopy(params)
    edit(bad)
    with pytest.raises(ConfigError, match=match):
        validate_analysis_sections(bad)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p["phi"].update(dataset="nope"), r"missing key datasets.nope"),
        (lambda p: p["phi"].update(primary_experiment="h1_batch", run_experiments=["scaling"]), r"phi.primary_experiment='h1_batch' must be one of"),
        (lambda p: p["phi"].update(run_experiments=["scaling", "nope"]), r"phi: experiment 'nope' is not a key of experiments"),
        (lambda p: p["phi"]["search"]["grid"].update(depths=[0]), r"phi.search.grid.depths=\[0\] is not allowed"),
        (lambda p: p["phi"]["search"]["probe"].update(rank="numerical"), r"phi.search.probe.rank='numerical' is not allowed"),
        (lambda p: p["phi"]["search"].update(colour=1), r"unknown key phi.search.colour"),
    ],
)
def test_bad_phi_values_name_key_and_value(params, edit, match):
    bad = copy.deepcopy(params)
    edit(bad)
    with pytest.raises(ConfigError, match=match):
        validate_analysis_sections(bad)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p["optimizers"].update(experiment="nope"), r"optimizers.experiment='nope' is not allowed; allowed: a key of experiments"),
        (lambda p: p["optimizers"].update(colour=1), r"unknown key optimizers.colour"),
        (lambda p: p["optimizers"]["levels"]["large"].append("sgd_normal"), r"lists a config twice"),
        (lambda p: p["optimizers"]["levels"]["large"].remove("hybrid_large"), r"experiments.optimizers.configs.hybrid_large is in no optimizers.levels entry"),
        (lambda p: p["optimizers"].update(comparisons=[["lbfgs", "sgd"]]), r"needs optimizer 'lbfgs' at level 'normal'"),
        (lambda p: p["optimizers"].update(min_pairs=1), r"optimizers.min_pairs=1 is not allowed; allowed: an int >= 2"),
    ],
)
def test_bad_optimizers_section_names_key_and_value(params, edit, match):
    bad = copy.deepcopy(params)
    edit(bad)
    with pytest.raises(ConfigError, match=match):
        validate_analysis_sections(bad)


def test_a_measured_group_without_its_curvature_entry_leaves_dvc_yaml_stale(params):
    """measure_<group> entries are generated from the curvature section: dropping one makes the
    committed dvc.yaml stale, and validation names the stage and the command that fixes it."""
    assert _validate.validate_all(params, Layout(ROOT)).endswith("dvc.yaml current")
    bad = copy.deepcopy(params)
    del bad["curvature"]["sanity"]
    with pytest.raises(ConfigError, match=r"stage 'measure_sanity' in dvc.yaml is not generated from params.yaml.*make dvc.yaml"):
        _validate.validate_all(bad, Layout(ROOT))
