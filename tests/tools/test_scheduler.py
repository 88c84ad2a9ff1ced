"""tools.scheduler (prerun) on a small DVC repo of shell stages: what it commits, defers and refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.scheduler import prerun

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
        "script": {
            "matrix": {"n": [1, 2]},
            "cmd": "python write.py ${item.n}",
            "deps": ["write.py", "base.txt"],
            "outs": ["script${item.n}.json"],
        },
    }
}

# Run through the zygote: records how it was started; n == 2 fails with a message, as fail() does.
WRITE_PY = """
import json, os, sys
n = int(sys.argv[1])
if n == 2:
    sys.exit("error: n=2 is refused")
with open(f"script{n}.json", "w") as fh:
    json.dump({"argv": sys.argv, "name": __name__, "stage": os.environ["DVC_STAGE"], "path0": sys.path[0],
               "preloaded": "email.mime.text" in sys.modules, "cwd": os.getcwd()}, fh)
print("done", n)
"""


def _git_dvc_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.autostage", "false"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (path / "write.py").write_text(WRITE_PY)
    return path


def _status(path: Path, skip: str = "script@") -> set[str]:
    """Stale entries, leaving out the names starting with ``skip``."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=path, capture_output=True, text=True, check=True).stdout
    return {name for name in json.loads(out) if not name.startswith(skip)}


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
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro", "join"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "Running stage 'leaf@3'" in repro and "Running stage 'join'" in repro
    assert "Running stage 'leaf@1'" not in repro and "Running stage 'source'" not in repro
    assert _status(repo) == set()
    assert (repo / "join.txt").read_text() == "base\n1\nbase\n2\nbase\n3\n"

    # Nothing stale among the shell stages: nothing runs.
    (again,) = prerun([["source", "leaf@*", "join"]], jobs=2, root=repo)
    assert again.committed == again.failed == again.deferred == []


def test_later_waves_take_the_entries_committed_earlier_in_the_run_as_up_to_date(tmp_path, monkeypatch):
    from dvc.stage import Stage

    repo = _git_dvc_repo(tmp_path / "toy")
    checked: list[str] = []
    changed = Stage.changed

    def recording(self, *args, **kwargs):
        checked.append(self.addressing)
        return changed(self, *args, **kwargs)

    monkeypatch.setattr(Stage, "changed", recording)
    results = prerun([["source"], ["leaf@*"], ["join"]], jobs=2, root=repo)
    assert [sorted(r.committed) for r in results] == [["source"], ["leaf@1", "leaf@2", "leaf@3"], ["join"]]
    # Each entry is hashed once, when it is a candidate: source not again as the leaves' upstream,
    # nor the leaves and source as join's.
    assert sorted(checked) == ["join", "leaf@1", "leaf@2", "leaf@3", "source"]
    assert _status(repo) == set()


def test_python_entries_run_in_forks_of_the_preloaded_interpreter(tmp_path, monkeypatch):
    repo = _git_dvc_repo(tmp_path / "toy")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # `python` is this interpreter
    prerun([["source"]], jobs=1, root=repo)
    (wave,) = prerun([["script@*"]], jobs=2, root=repo, preload=("email.mime.text",))
    assert wave.committed == ["script@1"] and wave.failed == ["script@2"]
    got = json.loads((repo / "script1.json").read_text())
    assert got == {"argv": ["write.py", "1"], "name": "__main__", "stage": "script@1", "path0": str(repo),
                   "preloaded": True, "cwd": str(repo)}
    assert (repo / ".dvc" / "tmp" / "prerun" / "script@1.log").read_text() == "done 1\n"
    assert (repo / ".dvc" / "tmp" / "prerun" / "script@2.log").read_text() == "error: n=2 is refused\n"
    # Without preload the same entry runs in a fresh process: same output but the module marker.
    (repo / "script1.json").unlink()
    (plain,) = prerun([["script@1"]], jobs=1, root=repo, preload=())
    assert plain.committed == ["script@1"]
    assert json.loads((repo / "script1.json").read_text()) == {**got, "preloaded": False}


def test_prerun_rejects_zero_jobs(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        prerun([["*"]], jobs=0, root=tmp_path)


@pytest.mark.parametrize("args", [["--poll-s", "1"], ["--executor", "slurm", "--grace-s", "0"]], ids=["local", "zero"])
def test_queue_timings_are_refused_where_they_mean_nothing(args):
    proc = subprocess.run([sys.executable, "-m", "tools.scheduler", *args], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "is a positive number of seconds for --executor slurm" in proc.stderr, proc.stderr


def test_entry_that_exits_0_without_its_outputs_is_left_to_dvc_repro(tmp_path, capsys):
    repo = _git_dvc_repo(tmp_path / "toy")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "good": {"cmd": "echo ok > good.txt", "outs": ["good.txt"]},
        "silent": {"cmd": "true", "outs": ["never.txt"]},
    }}, sort_keys=False))
    (result,) = prerun([["good", "silent"]], jobs=2, root=repo)
    assert result.committed == ["good"] and result.failed == ["silent"]
    assert "silent exited 0 but cannot be committed" in capsys.readouterr().out
    assert _status(repo, skip="none") == {"silent"}


def test_zygote_imports_landscape_first_even_when_not_listed(tmp_path):
    """The forked child finds landscape (the CPU kernel pin) imported before the listed modules."""
    from tools.scheduler import zygote

    script = tmp_path / "probe.py"
    script.write_text("import json, sys\n"
                      "mods = list(sys.modules)\n"
                      "json.dump({'landscape': 'landscape' in mods, 'first': mods.index('landscape') < mods.index('email.mime.text')},"
                      " open('probe.json', 'w'))\n")
    request = {"id": 7, "script": str(script), "args": [], "cwd": str(tmp_path), "env": dict(os.environ), "log": str(tmp_path / "log")}
    proc = subprocess.run([sys.executable, zygote.__file__, "email.mime.text"], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, check=True, timeout=120)
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert replies[0]["id"] == 7 and "pid" in replies[0] and replies[1] == {"id": 7, "exit": 0}, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "probe.json").read_text()) == {"landscape": True, "first": True}



@pytest.mark.parametrize("profile", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml", "profiles/paper_smoke.yaml"])
def test_default_waves_cover_every_stage_after_its_upstream(profile):
    """Every generated stage matches a pattern of a default wave, in a wave after those of every
    stage it depends on: `make repro`'s dvc repro then has nothing left to run one entry at a time."""
    from fnmatch import fnmatch

    from landscape.pipeline.dvcfile import generate
    from landscape.pipeline.params import load_params
    from tools.scheduler import DEFAULT_WAVES

    repo = Path(__file__).resolve().parents[2]
    stages = generate(load_params(repo / profile))["stages"]

    def wave_of(stage: str) -> int | None:
        matches = (i for i, wave in enumerate(DEFAULT_WAVES) if any(fnmatch(stage, p.split("@")[0]) or fnmatch(stage, p) for p in wave))
        return next(matches, None)

    waves = {s: wave_of(s) for s in stages}
    assert [s for s, w in waves.items() if w is None] == []
    outs = {str(o if isinstance(o, str) else next(iter(o))).split("${")[0]: s for s, spec in stages.items()
            for o in spec.get("outs", []) + spec.get("metrics", [])}
    edges = [(s, dep, outs[out]) for s, spec in stages.items() for dep in spec.get("deps", [])
             for out in outs if out and str(dep).startswith(out) and outs[out] != s]  # (stage, its dep, the stage writing it)
    assert len(edges) > 20 and ("hypotheses", "bounds/metrics.json", "bounds") in edges
    early = [edge for edge in edges if waves[edge[2]] >= waves[edge[0]]]
    assert early == [], early
