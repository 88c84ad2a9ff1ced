"""dvc.yaml is generated: per-group stages from params, code deps from import closures."""

from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from landscape.pipeline.dvcfile import check, code_deps, generate, import_closure, render
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import load_params

REPO = Path(__file__).resolve().parents[2]
PROFILES = [REPO / "params.yaml", REPO / "profiles" / "ci.yaml", REPO / "profiles" / "paper.yaml"]


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    _tree(tmp_path, {
        "stages/_common.py": "import landscape\n",
        "stages/run.py": "import _common\nfrom landscape.pkg import front\n",
        "src/landscape/__init__.py": "",
        "src/landscape/pkg/__init__.py": "",
        "src/landscape/pkg/front.py": "from . import helper\n\ndef go():\n    from landscape.lazy import deep  # lazy: runs on some path\n",
        "src/landscape/pkg/helper.py": "import numpy\n",
        "src/landscape/lazy/__init__.py": "",
        "src/landscape/lazy/deep.py": "",
        "src/landscape/lazy/unused.py": "",
        "src/landscape/other.py": "",
        "notebooks/page.ipynb": json.dumps({"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "import landscape.other\n"]}]}),
    })
    return tmp_path


def test_closure_follows_relative_lazy_and_sibling_script_imports(toy_repo: Path) -> None:
    files = {p.relative_to(toy_repo).as_posix() for p in import_closure([toy_repo / "stages/run.py"], toy_repo)}
    assert files == {"stages/run.py", "stages/_common.py", "src/landscape/__init__.py", "src/landscape/pkg/__init__.py",
                     "src/landscape/pkg/front.py", "src/landscape/pkg/helper.py", "src/landscape/lazy/__init__.py",
                     "src/landscape/lazy/deep.py"}


def test_code_deps_list_a_fully_imported_package_as_its_directory(toy_repo: Path) -> None:
    deps = code_deps([toy_repo / "stages/run.py"], toy_repo)
    assert deps == ["stages/_common.py", "stages/run.py", "src/landscape/__init__.py", "src/landscape/lazy/__init__.py",
                    "src/landscape/lazy/deep.py", "src/landscape/pkg"]


def test_notebook_imports_count_and_magics_are_skipped(toy_repo: Path) -> None:
    deps = code_deps([toy_repo / "notebooks/page.ipynb"], toy_repo)
    assert "src/landscape/other.py" in deps


@pytest.mark.parametrize("params_file", PROFILES, ids=lambda p: p.name)
def test_every_stage_script_import_is_a_dep_of_its_entries(params_file: Path) -> None:
    """The generated deps cover the closure of each stage's script (the property hand-kept deps lost)."""
    stages = generate(load_params(params_file))["stages"]
    edges: dict[Path, list[Path]] = {}  # each file's imports, resolved once for all the stages' closures
    for name, entry in stages.items():
        entry = entry.get("do", entry)
        script = REPO / entry["cmd"].split()[1]
        closure = import_closure([script], REPO, edges)
        deps = [REPO / d for d in entry["deps"]]
        uncovered = [p for p in closure if not any(p == d or d in p.parents for d in deps)]
        assert not uncovered, f"{name}: {sorted(map(str, uncovered))}"


def test_measuring_curvature_does_not_import_bounds_probes_or_stats() -> None:
    deps = generate(load_params(REPO / "params.yaml"))["stages"]["measure_h1_batch"]["deps"]
    assert not [d for d in deps if d.startswith(("src/landscape/bounds", "src/landscape/probes", "src/landscape/stats"))], deps


def test_committed_dvc_yaml_is_the_generated_one() -> None:
    problems = check(load_params(REPO / "params.yaml"), Layout(REPO))
    assert not problems, "dvc.yaml is stale; run `make dvc.yaml`: " + "; ".join(problems)
    assert (REPO / "dvc.yaml").read_text() == render(load_params(REPO / "params.yaml"), Layout(REPO))


def test_a_new_experiment_group_gets_its_entries_and_a_stale_file_is_named() -> None:
    params = load_params(REPO / "params.yaml")
    changed = copy.deepcopy(params)
    changed["experiments"]["wd_ablation"] = copy.deepcopy(params["experiments"]["sweeps"])
    changed["curvature"]["wd_ablation"] = copy.deepcopy(params["curvature"]["sweeps"])
    stages = generate(changed)["stages"]
    assert stages["train_wd_ablation"]["matrix"] == {"config": "${experiments.wd_ablation.configs}", "seed": "${seeds}"}
    assert "experiments.wd_ablation.configs.${item.config}" in stages["train_wd_ablation"]["params"]
    assert stages["measure_wd_ablation"]["cmd"].endswith("--experiment wd_ablation --config ${item.config}")
    problems = check(changed, Layout(REPO))
    assert problems[:2] == ["stage 'train_wd_ablation' is missing from dvc.yaml", "stage 'measure_wd_ablation' is missing from dvc.yaml"]
    # the analyses read every measured group's runs: their data deps grow with it
    assert set(problems[2:]) <= {f"stage '{s}' differs from the generated one" for s in ("phi_search", "hypotheses", "report")}


def test_every_entry_depends_on_validation_first() -> None:
    stages = generate(load_params(REPO / "params.yaml"))["stages"]
    for name, entry in stages.items():
        if name != "validate":
            assert "data/params_validated.json" in entry.get("do", entry)["deps"], name
    assert yaml.safe_load(render(load_params(REPO / "params.yaml")))["stages"]["validate"]["outs"] == ["data/params_validated.json"]


def _declared(entry: dict) -> list[tuple[str, dict]]:
    """(path, options) of every output, metric and plot of a dvc.yaml entry."""
    out = []
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind, []):
            out += list(item.items()) if isinstance(item, dict) else [(item, {})]
    return out


def test_every_output_is_in_the_dvc_cache_but_the_report_pages_which_git_tracks() -> None:
    """A remote can share every result: only outputs that git versions (the pages and
    reports/headline.json) may stay out of the cache."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split())
    for profile in PROFILES:
        params = load_params(profile)
        uncached = []
        for name, entry in generate(params)["stages"].items():
            for path, options in _declared(entry.get("do", entry)):
                assert options.get("persist") is not True or options.get("cache", True), (name, path)
                if options.get("cache", True) is False:
                    uncached.append(path)
        pages = [f"reports/{page}.html" for page in params["report"]["pages"]] + ["reports/headline.json"]
        assert sorted(uncached) == sorted(pages), profile
    default_pages = load_params(REPO / "params.yaml")["report"]["pages"]
    assert {f"reports/{page}.html" for page in default_pages} <= tracked


def test_tensorboard_directories_are_outputs_of_the_groups_that_log_them() -> None:
    params = load_params(REPO / "params.yaml")
    tb = "runs/h1_batch/${item.config}/seed${item.seed}/tb"
    assert all(tb not in str(o) for o in generate(params)["stages"]["train_h1_batch"]["outs"])  # default profile: off
    changed = copy.deepcopy(params)
    first = next(iter(changed["experiments"]["h1_batch"]["configs"].values()))
    first["train"] = {**first["train"], "tensorboard": True}
    stages = generate(changed)["stages"]
    assert tb in stages["train_h1_batch"]["outs"]
    assert all("/tb" not in str(o) for o in stages["train_h2_arch"]["outs"])
    paper = generate(load_params(REPO / "profiles" / "paper.yaml"))["stages"]
    assert tb in paper["train_h1_batch"]["outs"]
