"""tools.scheduler.lockfile against DVC's own writer: the spliced dvc.lock equals dump_stages' byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.scheduler.lockfile import HEADER, record, split_entries

LONG = "--label " + "x" * 70  # folds the cmd over two lines in DVC's dumper (width 80)
DVC_YAML = {
    "stages": {
        "grid": {
            "foreach": [1, 2, 3],
            "do": {"cmd": f"python write.py out${{item}}.txt ${{item}} {LONG}", "deps": ["write.py"],
                   "params": ["grid.lr", "grid.names", "grid.models"], "outs": ["out${item}.txt"]},
        },
        "folder": {"cmd": "mkdir -p folder && cp out1.txt out2.txt folder/ && echo 1.5 > score.json", "deps": ["out1.txt", "out2.txt"],
                   "params": ["grid"], "outs": ["folder"], "metrics": [{"score.json": {"cache": False}}]},
    }
}
SHARED = {"name": "mlp", "width": 8}  # written as a YAML anchor: DVC's lock then holds anchors and aliases
PARAMS = {"grid": {"lr": [1e-06, 3e-05, 0.1], "names": ["yes", "1.0", "a: b"], "depth": 3,
                   "models": {"a": SHARED, "b": SHARED, "c": {"inner": SHARED}}, "order": {}}}
FIRST, SECOND = [1, 2], [3, 4]  # SECOND's alias comes first: ruamel numbers it before FIRST
PARAMS["grid"]["order"] = {"p": FIRST, "q": SECOND, "r": SECOND, "s": FIRST}
WRITE_PY = "import sys\nopen(sys.argv[1], 'w').write(sys.argv[2] * 3)\n"


@pytest.fixture(autouse=True)
def _restore_cwd(monkeypatch):
    monkeypatch.chdir(os.getcwd())  # the tests chdir into their repos; monkeypatch puts the cwd back


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A repo whose dvc.lock DVC itself wrote (dvc repro)."""
    path = tmp_path_factory.mktemp("lock") / "repo"
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (path / "write.py").write_text(WRITE_PY)
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(path)}
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=path, check=True, env=env)
    return path


def _changed_copy(built: Path, dest: Path, lock_text: str) -> Path:
    """``built`` with a param and two outputs changed since its lock, and dvc.lock = ``lock_text``."""
    repo = dest / "repo"
    shutil.copytree(built, repo, symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["grid"]["lr"][1] = 1e-05
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "out2.txt").write_text("changed")
    (repo / "folder" / "out2.txt").write_text("changed")
    (repo / "dvc.lock").write_text(lock_text)
    return repo


def _write(repo: Path, names: list[str], writer: str) -> tuple[str, str]:
    """Save the entries ``names`` and write their lock entries with ``writer`` (``ours`` or ``dvc``)."""
    from dvc.repo import Repo

    os.chdir(repo)  # stage addresses are relative to the working directory (put back by _restore_cwd)
    dvc = Repo(".")
    try:
        stages = [s for s in dvc.index.stages if s.addressing in names]
        assert sorted(s.addressing for s in stages) == sorted(names)
        for stage in stages:
            stage.save()
        how = record(stages) if writer == "ours" else (stages[0].dvcfile.dump_stages(stages, update_pipeline=False), "dvc")[1]
    finally:
        dvc.close()
    return how, (repo / "dvc.lock").read_text()


def _without(text: str, name: str) -> str:
    """``text`` with entry ``name`` removed, the other bytes unchanged (a valid lock: both writers start from it)."""
    entries = split_entries(text)
    assert entries is not None and name in dict(entries)
    return HEADER + "".join(body for key, body in entries if key != name)


def test_split_entries_reads_dvcs_lock_back_exactly(built):
    text = (built / "dvc.lock").read_text()
    entries = split_entries(text)
    assert entries is not None
    assert HEADER + "".join(body for _, body in entries) == text
    assert [name for name, _ in entries] == list(yaml.safe_load(text)["stages"]) == ["grid@1", "grid@2", "grid@3", "folder"]
    assert any(line.startswith("      ") and ":" not in line for line in entries[0][1].splitlines()), "the folded cmd is in the test"
    # anchors numbered through the document, in the order of first aliases (folder: id005 is SECOND)
    assert [text.count(f"&id00{i}") for i in range(1, 7)] == [1] * 6 and "&id007" not in text
    assert "p: &id006" in entries[3][1] and "q: &id005" in entries[3][1] and "s: *id006" in entries[3][1]


@pytest.mark.parametrize("case", ["replace", "append"])
def test_record_equals_dvc_dump_stages_byte_for_byte(built, tmp_path, case):
    """Entries replaced in place (grid@2, folder) and, in ``append``, grid@2 absent from the lock first
    (DVC appends it at the end): the spliced file is the one DVC's round-trip rewrite produces."""
    start = (built / "dvc.lock").read_text()
    if case == "append":
        start = _without(start, "grid@2")
    names = ["grid@2", "folder"]
    ours_how, ours = _write(_changed_copy(built, tmp_path / "ours", start), names, "ours")
    _, theirs = _write(_changed_copy(built, tmp_path / "dvc", start), names, "dvc")
    assert ours_how == "spliced"
    assert ours == theirs
    assert ((tmp_path / "ours" / "repo" / "dvc.lock").stat().st_mode & 0o777) == ((built / "dvc.lock").stat().st_mode & 0o777)
    assert ours != start and "1e-05" in ours  # the entries did change
    order = [name for name, _ in split_entries(ours) or []]
    assert order == (["grid@1", "grid@2", "grid@3", "folder"] if case == "replace" else ["grid@1", "grid@3", "folder", "grid@2"])


def test_unchanged_entries_leave_the_file_untouched(built, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(built, repo, symlinks=True)
    before = (repo / "dvc.lock").stat()
    how, text = _write(repo, ["grid@1", "grid@3"], "ours")
    assert how == "spliced" and text == (built / "dvc.lock").read_text()
    assert (repo / "dvc.lock").stat().st_mtime_ns == before.st_mtime_ns


def test_split_entries_refuses_what_it_cannot_read_back(built):
    text = (built / "dvc.lock").read_text()
    entries = split_entries(text) or []
    assert split_entries(text + entries[0][1]) is None  # grid@1 twice
    assert split_entries(text.replace("  grid@1:", "  grid@1: {}", 1)) is None  # a value on the key's line
    assert split_entries(text + "datasets: []\n") is None  # another top-level key
    assert split_entries(text.replace("schema: '2.0'", "schema: '3.0'")) is None


@pytest.mark.parametrize("shape", ["comment", "blank line", "absent"])
def test_a_lock_not_in_dvcs_shape_goes_through_dump_stages(built, tmp_path, shape):
    text = (built / "dvc.lock").read_text()
    start = {"comment": "# edited by hand\n" + text,
             "blank line": text.replace("\n  grid@2:", "\n\n  grid@2:", 1),
             "absent": ""}[shape]
    assert split_entries(start) is None
    names = ["grid@2"]
    ours_repo = _changed_copy(built, tmp_path / "ours", start)
    dvc_repo = _changed_copy(built, tmp_path / "dvc", start)
    if shape == "absent":
        (ours_repo / "dvc.lock").unlink()
        (dvc_repo / "dvc.lock").unlink()
    how, ours = _write(ours_repo, names, "ours")
    _, theirs = _write(dvc_repo, names, "dvc")
    assert how == "dvc" and ours == theirs


def test_record_refuses_stages_of_two_dvc_files(built, tmp_path):
    from dvc.repo import Repo

    repo = tmp_path / "repo"
    shutil.copytree(built, repo, symlinks=True)
    (repo / "sub").mkdir()
    (repo / "sub" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"other": {"cmd": "true"}}}))
    os.chdir(repo)
    dvc = Repo(".")
    try:
        stages = [s for s in dvc.index.stages if s.addressing in ("grid@1", "sub/dvc.yaml:other")]
        assert len(stages) == 2
        with pytest.raises(ValueError, match=r"stages of one dvc\.yaml"):
            record(stages)
    finally:
        dvc.close()


def test_objects_shared_across_entries_are_detected_and_within_one_are_not():
    """ruamel would alias an object shared by two entries across them (one dump of both);
    record then leaves the write to DVC. Sharing inside one entry is what the anchors handle."""
    from tools.scheduler.lockfile import _shares_objects

    shared = {"name": "mlp"}
    assert _shares_objects([{"a": shared}, {"b": [shared]}])
    assert not _shares_objects([{"a": shared, "b": shared}, {"c": {"name": "mlp"}}])
    assert not _shares_objects([{"a": 1, "b": "x"}, {"a": 1, "b": "x"}])  # equal scalars are not objects ruamel aliases
