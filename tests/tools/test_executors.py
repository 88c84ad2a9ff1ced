"""The scheduler's executors on small DVC repos of shell stages: resources per entry, one GPU
per entry on the local executor, and the cluster code path (submitit's local executor: the
same jobs, results and requeues as on SLURM, without a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from landscape.schema import ConfigError
from tools.scheduler import prerun
from tools.scheduler.cluster import slurm_parameters
from tools.scheduler.executor import Entry, outcome_of
from tools.scheduler.resources import Resources, load_resources


def _repo(path: Path, stages: dict) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.autostage", "false"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return path


def _stale(path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=path, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- resources


def test_resources_merge_default_and_every_matching_pattern_in_file_order(tmp_path):
    table = load_resources(_write(tmp_path / "r.yaml", """
default: {cpus: 2, mem_gb: 8, time_min: 30}
stages:
  "train_*": {gpus: 1, cpus: 4, time_min: 600}
  "train_lm": {partition: long, slurm: {account: lab, qos: high}}
  "measure_h1_batch@b32": {mem_gb: 64.5}
"""))
    assert table.for_entry("train_lm@gpt-0") == Resources(gpus=1, cpus=4, mem_gb=8.0, time_min=600, partition="long",
                                                          slurm={"account": "lab", "qos": "high"})
    assert table.for_entry("train_h1_batch@b32-0") == Resources(gpus=1, cpus=4, mem_gb=8.0, time_min=600)
    assert table.for_entry("measure_h1_batch@b32") == Resources(cpus=2, mem_gb=64.5, time_min=30)
    assert table.for_entry("measure_h1_batch@b128") == Resources(cpus=2, mem_gb=8.0, time_min=30)
    entry = Entry("train_lm@gpt-0", ("python stages/train.py",), "/repo", {}, tmp_path / "log", table.for_entry("train_lm@gpt-0"))
    assert slurm_parameters(entry, signal_delay_s=90) == {
        "job_name": "train_lm@gpt-0", "cpus_per_task": 4, "mem": "8192M", "time": 600, "signal_delay_s": 90,
        "stderr_to_stdout": True, "partition": "long", "gpus_per_node": 1, "additional_parameters": {"account": "lab", "qos": "high"}}


@pytest.mark.parametrize(("text", "match"), [
    ("defaults: {}", r"unknown key 'defaults' in .*r.yaml; allowed keys: \['default', 'stages'\]"),
    ("stages: {'train_*': {gpu: 1}}", r"unknown key .*stages.train_\*.gpu \(value 1\); allowed keys: \['cpus', 'gpus'"),
    ("stages: {'train_*': {gpus: -1}}", r"stages.train_\*.gpus=-1 is not allowed; allowed: an int >= 0"),
    ("default: {mem_gb: 0}", r"default.mem_gb=0 is not allowed; allowed: a number > 0"),
    ("stages: {'*': {slurm: {time: 5}}}", r"slurm=\{'time': 5\} is not allowed; allowed: a mapping of further sbatch options \(not"),
    ("[1, 2]", r"must be a mapping with keys 'default' and 'stages'"),
])
def test_bad_resources_files_name_the_key_and_what_is_allowed(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_resources(_write(tmp_path / "r.yaml", text))


def test_a_missing_resources_file_is_an_error_and_the_exit_status_of_a_command_says_how_it_ended(tmp_path):
    with pytest.raises(ConfigError, match=r"resources file .*nope.yaml does not exist"):
        load_resources(tmp_path / "nope.yaml")
    assert [outcome_of(c).state for c in (0, 1, 2, 127, -9, 137, 143, 140)] == ["done", "failed", "failed", "failed",
                                                                                "killed", "killed", "killed", "killed"]


# ---------------------------------------------------------------------------- local: one GPU per entry

# Each entry holds a lock file per device it was given while it runs (noclobber: creating one
# that exists fails the entry), so two entries sharing a device at once would fail one of them.
GPU_CMD = ("set -eC; d=$CUDA_VISIBLE_DEVICES; for g in $(echo $d | tr , ' '); do : > lock_$g; done; "
           "sleep 0.3; echo \"[$d]\" > out_${item.n}.txt; for g in $(echo $d | tr , ' '); do rm lock_$g; done")


def test_local_executor_gives_each_entry_its_own_gpus(tmp_path):
    repo = _repo(tmp_path / "gpu", {
        "one": {"matrix": {"n": [1, 2, 3, 4, 5]}, "cmd": GPU_CMD, "outs": ["out_${item.n}.txt"]},
        "pair": {"cmd": GPU_CMD.replace("${item.n}", "pair"), "outs": ["out_pair.txt"]},
        "cpu": {"cmd": GPU_CMD.replace("${item.n}", "cpu"), "outs": ["out_cpu.txt"]},
    })
    resources = _write(tmp_path / "r.yaml", "stages: {'one': {gpus: 1}, 'pair': {gpus: 2}}")
    (wave,) = prerun([["one@*", "pair", "cpu"]], jobs=4, root=repo, preload=(), resources=resources, gpus=["0", "1"])
    assert sorted(wave.committed) == ["cpu", "one@1", "one@2", "one@3", "one@4", "one@5", "pair"] and wave.failed == []
    seen = {p.stem[4:]: p.read_text().strip() for p in repo.glob("out_*.txt")}
    assert {seen[f"{n}"] for n in range(1, 6)} == {"[0]", "[1]"}  # one device each, both used
    assert seen["pair"] == "[0,1]" and seen["cpu"] == "[]"  # no GPU asked: none visible
    assert _stale(repo) == set()


def test_local_executor_refuses_an_entry_that_asks_for_more_gpus_than_the_machine_has(tmp_path):
    repo = _repo(tmp_path / "gpu", {"pair": {"cmd": "true > p.txt", "outs": ["p.txt"]}})
    resources = _write(tmp_path / "r.yaml", "stages: {pair: {gpus: 2}}")
    with pytest.raises(ValueError, match=r"pair asks for gpus: 2; this machine gives out 1 \(0\)"):
        prerun([["pair"]], root=repo, preload=(), resources=resources, gpus=["0"])
    (wave,) = prerun([["pair"]], root=repo, preload=(), resources=resources, gpus=[])  # no GPUs: CPU
    assert wave.committed == ["pair"]


# ---------------------------------------------------------------------------- the cluster code path

STAGES = {
    "ok": {"matrix": {"n": [1, 2]}, "cmd": "echo $DVC_STAGE ${item.n} > ok${item.n}.txt", "outs": ["ok${item.n}.txt"]},
    # killed (SIGKILL of its shell) on its first attempt; the requeued attempt finds the marker
    "preempted": {"cmd": "echo start >> attempts.txt; test -e marker || { touch marker; kill -9 $$; }; cp attempts.txt pre.txt",
                  "outs": ["pre.txt"]},
    "broken": {"cmd": "echo oops; exit 3", "outs": ["never.txt"]},
    "doomed": {"cmd": "kill -9 $$", "outs": ["doomed.txt"]},
}


def test_submitit_jobs_commit_results_requeue_killed_entries_and_leave_failures(tmp_path, capsys):
    repo = _repo(tmp_path / "toy", STAGES)
    results = prerun([["ok@*", "preempted", "broken", "doomed"]], jobs=8, root=repo, executor="submitit-local",
                     max_requeues=1, poll_s=0.2, grace_s=0.5)
    (wave,) = results
    assert sorted(wave.committed) == ["ok@1", "ok@2", "preempted"]
    assert sorted(wave.failed) == ["broken", "doomed"]
    assert sorted(wave.requeued) == ["doomed", "preempted"]  # doomed: once (max_requeues=1), then failed
    assert (repo / "ok2.txt").read_text() == "ok@2 2\n"  # DVC's variables, the entry's working directory
    assert (repo / "pre.txt").read_text() == "start\nstart\n"
    out = capsys.readouterr().out
    assert "broken exited 3 (job" in out and "oops" in out  # the tail of its log
    assert "doomed job" in out and "ended without a result" in out
    log = (repo / ".dvc" / "tmp" / "prerun" / "preempted.log").read_text()
    assert log.count("== preempted: job ") == 2  # one header per attempt
    assert _stale(repo) == {"broken", "doomed"}
    assert (repo / ".dvc" / "cache").is_dir() and "pre.txt" in (repo / "dvc.lock").read_text()
