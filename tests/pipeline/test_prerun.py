"""stages/prerun.py on a small DVC repo of shell stages: what it commits, defers and refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "stages"))

from prerun import prerun  # noqa: E402

DVC_YAML = {
    "stages": {
        "source": {"cmd": "echo base > base.txt", "outs": ["base.txt"]},
        "leaf": {
            "matrix": {"n": [1, 2, 3]},
            "cmd": "cat base.txt > leaf${item.n}.txt && echo ${item.n} >> leaf${item.n}.txt && (test ${item.n} != 3 || test ! -e fail3)",
            "deps": ["base.txt"],
            "outs": ["leaf${item.n}.txt"],
        },
        "join": {"cmd": "cat leaf1.txt leaf2.txt leaf3.txt > join.txt", "deps": ["leaf1.txt", "leaf2.txt", "leaf3.txt"], "outs": ["join.txt"]},
    }
}


def _git_dvc_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.autostage", "false"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    return path


def _status(path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=path, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_prerun_commits_ready_entries_defers_stale_upstream_and_skips_failures(tmp_path):
    repo = _git_dvc_repo(tmp_path / "toy")
    (repo / "fail3").write_text("")
    # leaf@* wait on source (stale and not in the wave): nothing runs, all deferred.
    (first,) = prerun([["leaf@*"]], jobs=2, root=repo)
    assert first.committed == [] and sorted(first.deferred) == ["leaf@1", "leaf@2", "leaf@3"]
    assert not (repo / "leaf1.txt").exists()

    results = prerun([["source"], ["leaf@*", "join"]], jobs=2, root=repo)
    assert results[0].committed == ["source"]
    assert sorted(results[1].committed) == ["leaf@1", "leaf@2"]
    assert results[1].failed == ["leaf@3"]  # exits 1: not committed
    assert results[1].deferred == ["join"]  # its upstream leaf@3 is stale
    assert (repo / "leaf2.txt").read_text() == "base\n2\n"
    assert _status(repo) == {"leaf@3", "join"}
    assert (repo / ".dvc" / "tmp" / "prerun" / "leaf@3.log").is_file()

    # Once the failure is gone, dvc repro runs only what prerun left.
    (repo / "fail3").unlink()
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "Running stage 'leaf@3'" in repro and "Running stage 'join'" in repro
    assert "Running stage 'leaf@1'" not in repro and "Running stage 'source'" not in repro
    assert _status(repo) == set()
    assert (repo / "join.txt").read_text() == "base\n1\nbase\n2\nbase\n3\n"

    # Nothing stale: nothing runs.
    (again,) = prerun([["*"]], jobs=2, root=repo)
    assert again.committed == again.failed == again.deferred == []


def test_prerun_rejects_zero_jobs(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        prerun([["*"]], jobs=0, root=tmp_path)
