"""Per-group seeds: a group may list its own seeds (replication), and every reader follows them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from landscape.pipeline.dvcfile import generate, render
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import group_seeds, load_params, replication_split, seeds_of
from landscape.pipeline.tables import hypothesis_tables
from landscape.pipeline.validate import validate_pipeline_params
from landscape.schema import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(REPO / "params.yaml")


def _with_group_seeds(params: dict, group: str, seeds: list[int]) -> dict:
    changed = copy.deepcopy(params)
    changed["experiments"][group]["seeds"] = seeds
    return changed


def test_a_group_without_seeds_uses_the_top_level_list(params: dict) -> None:
    assert group_seeds(params, "h1_batch") == params["seeds"]
    assert replication_split(params, "h1_batch") == (params["seeds"], [])
    assert seeds_of({}, (3, 4)) == [3, 4]


def test_a_group_with_its_own_seeds_splits_into_primary_and_replication(params: dict) -> None:
    changed = _with_group_seeds(params, "sweeps", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert group_seeds(changed, "sweeps") == list(range(10))
    assert replication_split(changed, "sweeps") == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert group_seeds(changed, "h1_batch") == params["seeds"]  # other groups keep theirs


@pytest.mark.parametrize("seeds, match", [([], "non-empty list"), ([1, 1], "repeats a seed"), ([-1], "ints >= 0"),
                                          ("0-9", "non-empty list")])
def test_bad_group_seeds_name_the_key(params: dict, seeds: object, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"experiments\.sweeps\.seeds=.*{match}"):
        validate_pipeline_params(_with_group_seeds(params, "sweeps", seeds))  # type: ignore[arg-type]


def test_an_unknown_group_key_is_still_refused(params: dict) -> None:
    bad = copy.deepcopy(params)
    bad["experiments"]["sweeps"]["replicas"] = 2
    with pytest.raises(ConfigError, match="optionally 'seeds'"):
        validate_pipeline_params(bad)


def test_dvc_yaml_entries_of_a_group_run_over_its_own_seeds(params: dict) -> None:
    stages = generate(_with_group_seeds(params, "sweeps", [0, 5]))["stages"]
    assert stages["train_sweeps"]["matrix"]["seed"] == "${experiments.sweeps.seeds}"
    assert "experiments.sweeps.seeds" in stages["measure_sweeps"]["params"]
    assert "seeds" not in stages["measure_sweeps"]["params"]
    assert stages["train_h1_batch"]["matrix"]["seed"] == "${seeds}"
    assert "experiments.sweeps.seeds" in stages["hypotheses"]["params"]


def test_dvc_resolves_the_group_seed_matrix(params: dict, tmp_path: Path) -> None:
    """DVC itself expands ``${experiments.<group>.seeds}``: one train entry per (config, seed)."""
    changed = _with_group_seeds(params, "sweeps", [0, 7])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
    (tmp_path / "dvc.yaml").write_text(render(changed, Layout(REPO)))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.split()
    assert sorted(s for s in out if s.startswith("train_sweeps@")) == ["train_sweeps@lr_high-0", "train_sweeps@lr_high-7"]


def test_tables_read_each_groups_own_seeds(params: dict, tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    changed = _with_group_seeds(params, "sweeps", [0, 7])
    for seed in (0, 7, 3):  # seed 3 is a top-level seed the group does not list: not read
        run = layout.run("sweeps", "lr_high", seed)
        run.metrics.parent.mkdir(parents=True, exist_ok=True)
        run.metrics.write_text('{"status": "completed", "test_error": 0.1}')
    tables = hypothesis_tables(layout, {"sweeps": changed["experiments"]["sweeps"]}, changed["seeds"])
    assert sorted(tables.runs["seed"]) == [0, 7]


@pytest.mark.parametrize("profile", ["params.yaml", *sorted(p.name for p in (Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml"))])
def test_load_params_reads_every_profile_as_pyyamls_safe_loader(profile: str) -> None:
    """libyaml's parser (load_params) against PyYAML's pure-Python safe loader: the same document,
    anchors and merge keys included (value for value, and shared objects where the file shares them)."""
    repo = Path(__file__).resolve().parents[2]
    path = repo / profile if profile == "params.yaml" else repo / "profiles" / profile
    expected = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    got = load_params(path)
    assert got == expected and repr(got) == repr(expected)  # repr: also the key order and the int/float types
