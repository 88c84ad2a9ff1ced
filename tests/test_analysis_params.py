"""The escape, hypotheses and report sections of params.yaml are validated before any work."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

from validate import validate_analysis_sections  # noqa: E402

from landscape.schema import ConfigError


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_every_profile_is_valid(profile):
    validate_analysis_sections(yaml.safe_load((ROOT / profile).read_text()))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p["escape"].update(config="b3"), r"escape.config='b3' is not a config of experiments.h1_batch"),
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


def test_measure_stages_need_their_curvature_entry(params):
    from validate import check_measured, measure_sections

    assert "optimizers" not in measure_sections() and "h1_batch" in measure_sections()
    check_measured(params, measure_sections())
    bad = copy.deepcopy(params)
    del bad["curvature"]["sanity"]
    with pytest.raises(ConfigError, match=r"missing key curvature.sanity: dvc.yaml has a measure_sanity stage"):
        check_measured(bad, measure_sections())
