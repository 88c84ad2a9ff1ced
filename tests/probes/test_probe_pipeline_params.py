"""The probes section of params.yaml and the profiles against dvc.yaml's probe stages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from landscape.probes.run_probes import ProbeConfig, validate_probe_params

REPO = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PROBE_GROUPS = [name[len("probe_"):] for name in STAGES if name.startswith("probe_")]
PARAM_FILES = [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))]


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.stem)
def test_every_profile_has_valid_settings_for_every_probe_stage(path):
    params = yaml.safe_load(path.read_text())
    out = validate_probe_params(params, required=[*PROBE_GROUPS, "intrinsic_dim", "sde"])
    for group in PROBE_GROUPS:
        section = params["probes"][group]
        # dvc.yaml tracks each setting by name: every one must be written out
        assert set(section) == {f.name for f in dataclasses.fields(ProbeConfig)}, f"{path.name}: probes.{group}"
        assert all(out["probe"][group].probes_for(c) for c in section["configs"]), "every listed config gets a probe"


@pytest.mark.parametrize("group", PROBE_GROUPS)
def test_probe_stage_reads_every_setting_but_not_the_configs_list(group):
    stage = STAGES[f"probe_{group}"]
    tracked = {p[len(f"probes.{group}."):] for p in stage["params"] if p.startswith(f"probes.{group}.")}
    assert tracked == {f.name for f in dataclasses.fields(ProbeConfig)} - {"configs"}
    assert stage["matrix"] == {"config": f"${{probes.{group}.configs}}"}
    assert f"runs/{group}/${{item.config}}" in stage["deps"] and f"measure/{group}/${{item.config}}/seeds" in stage["deps"]


def test_validate_stage_names_the_bad_probe_key(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["probes"]["h2_arch"]["bezier"]["steps"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "validate.py"), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: probes.h2_arch.bezier.steps=0 is not allowed; allowed: an int >= 1" in proc.stderr
