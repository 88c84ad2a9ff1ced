"""The ci profile's train and measure entries as jobs of a single-node SLURM started on this
machine (tests/pipeline/slurm_cluster.py: slurmctld, slurmd and munge, stopped by pid): they
give the local run's dvc.lock md5s, and a job cancelled mid-training is requeued and resumes
bit-identical. On a copy of the ci repo that the whole test run shares (repo_copy.shared_repo).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from landscape.pipeline.params import group_seeds
from lock_compare import compare_outputs, pipeline_entries
from repo_copy import Built, measure_entries, private_copy, shared_repo
from repo_copy import dvc as _dvc
from repo_copy import edit_params as _edit_params
from repo_copy import env as _env

pytestmark = [pytest.mark.slow]

LOGS: dict[str, str] = {}


@pytest.fixture(scope="session")
def ci_repo(tmp_path_factory) -> Built:
    """The shared ci repo as `make repro` leaves it: read only (the SLURM reruns work on a copy)."""
    return shared_repo(tmp_path_factory, "ci")


SLURM_RESOURCES = "default: {gpus: 0, cpus: 1, mem_gb: 1, time_min: 30}\n"


@pytest.fixture(scope="session")
def slurm_env():
    from slurm_cluster import Unavailable, cluster

    try:
        with cluster() as extra:
            yield {**_env(), **extra}
    except Unavailable as exc:
        print(f"single-node SLURM unavailable: {exc}")
        pytest.skip(f"single-node SLURM unavailable: {exc}")


# The entries rerun as SLURM jobs: the BatchNorm ResNets (with and without skips) of one group, trained
# and measured; one job per entry, so the rest of the ci profile's 47 (the MLP groups included: the
# same stage scripts) would only repeat these code paths at about 9 s a job.
SLURM_GROUPS = ("h2_arch",)
# The queue read every 0.5 s (default 2 s) and a job gone without its result requeued after 3 s
# (default 10 s: a shared filesystem's lag; this one is local).
SLURM_POLLING = ("--poll-s", "0.5", "--grace-s", "3")


@pytest.fixture(scope="session")
def slurm_repo(ci_repo, slurm_env, tmp_path_factory) -> Path:
    """A copy of ci_repo whose train and measure entries of SLURM_GROUPS were rerun as SLURM jobs."""
    repo = private_copy(ci_repo, tmp_path_factory.mktemp("slurm") / "repo")
    for group in SLURM_GROUPS:
        shutil.rmtree(repo / "runs" / group)
        shutil.rmtree(repo / "measure" / group)
    (repo / "resources.slurm.yaml").write_text(SLURM_RESOURCES)
    start = time.monotonic()
    waves = [",".join(f"{kind}_{group}@*" for group in SLURM_GROUPS) for kind in ("train", "measure")]
    proc = subprocess.run([sys.executable, "-m", "tools.scheduler", "--executor", "slurm", "--resources", "resources.slurm.yaml",
                           *SLURM_POLLING, *waves], cwd=repo, env=slurm_env, capture_output=True, text=True, timeout=900)
    LOGS["slurm"] = proc.stdout + proc.stderr
    print(f"train and measure entries as SLURM jobs: {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, LOGS["slurm"][-3000:]
    return repo


def test_train_and_measure_entries_as_slurm_jobs_give_the_local_runs_dvc_lock_md5s(ci_repo, slurm_repo):
    ci_repo = ci_repo.repo
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    n_train = sum(len(params["experiments"][g]["configs"]) * len(group_seeds(params, g)) for g in SLURM_GROUPS)
    n_measure = len({e for e in measure_entries(params) if e.split("@")[0] in {f"measure_{g}" for g in SLURM_GROUPS}})
    assert n_train == 4 and n_measure == 2
    assert f"prerun train_h2_arch@*: {n_train} committed (0 forked), 0 failed" in LOGS["slurm"], LOGS["slurm"][-3000:]
    assert f"prerun measure_h2_arch@*: {n_measure} committed (0 forked), 0 failed" in LOGS["slurm"], LOGS["slurm"][-3000:]
    for entry in ("train_h2_arch@resnet_skip_bn-1", "train_h2_arch@resnet_noskip_bn-0", "measure_h2_arch@resnet_noskip_bn"):
        log = (slurm_repo / ".dvc" / "tmp" / "prerun" / f"{entry}.log").read_text()
        assert re.match(rf"== {re.escape(entry)}: job \d+ \(restart 0\)", log), log[:300]  # ran as a SLURM job
    names = {n for n in pipeline_entries(ci_repo) if n.startswith(tuple(f"{k}_{g}@" for k in ("train", "measure") for g in SLURM_GROUPS))}
    assert len(names) == n_train + n_measure
    count, problems = compare_outputs(ci_repo, slurm_repo, names)
    assert problems == [] and count > 10 * n_train
    assert "up to date" in _dvc("status", *sorted(names), cwd=slurm_repo).stdout  # each committed as dvc repro would
    # (the analyses downstream are stale: their inputs' wall-clock fields changed)


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # not written yet, or being replaced
        return -1


def test_scancel_mid_training_requeues_the_job_and_it_resumes_bit_identical(slurm_repo, slurm_env):
    stage, epochs = "train_h1_batch@b32-0", 8
    run = slurm_repo / "runs" / "h1_batch" / "b32" / "seed0"

    def longer(p):  # the bounds' sanity pair must stay the same training but for the labels: edit both
        for exp, cfg in (("h1_batch", "b32"), ("sanity", "random_labels")):
            p["experiments"][exp]["configs"][cfg]["train"].update(epochs=epochs, batch_size=16)
    _edit_params(slurm_repo, longer)
    shutil.rmtree(run / "checkpoints")
    coordinator = subprocess.Popen([sys.executable, "-m", "tools.scheduler", "--executor", "slurm", "--resources",
                                    "resources.slurm.yaml", *SLURM_POLLING, "validate", stage], cwd=slurm_repo, env=slurm_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while _epoch(run / "checkpoints" / "last.pt") < 2:
            assert coordinator.poll() is None and time.monotonic() < deadline, "the job ended before it could be cancelled"
            time.sleep(0.05)
        job = subprocess.run(["squeue", "-h", "-n", stage, "-o", "%i"], env=slurm_env, capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["scancel", job], env=slurm_env, check=True)
        killed_at = _epoch(run / "checkpoints" / "last.pt")
        out, _ = coordinator.communicate(timeout=300)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 0 and 2 <= killed_at < epochs, out[-3000:]
    assert f"{stage} job {job} ended without a result (JobState=CANCELLED" in out and "requeued (attempt 2 of at most 4)" in out, out[-3000:]
    assert f"prerun {stage}: 1 committed (0 forked), 0 failed, 0 left to dvc repro, 1 requeued" in out, out[-3000:]
    headers = re.findall(r"== train_h1_batch@b32-0: job (\d+) \(restart 0\)", (slurm_repo / ".dvc" / "tmp" / "prerun" / f"{stage}.log").read_text())
    assert len(headers) == 2 and headers[0] == job != headers[1]  # cancelled job, then the resubmitted one
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] >= killed_at
    resumed_model = (run / "model.pt").read_bytes()
    assert "up to date" in _dvc("status", stage, cwd=slurm_repo).stdout

    shutil.rmtree(run / "checkpoints")  # the same entry uninterrupted, from scratch, by plain dvc repro
    _dvc("repro", "--force", "--single-item", stage, cwd=slurm_repo)
    uninterrupted = json.loads((run / "metrics.json").read_text())
    assert uninterrupted["resumed_from_epoch"] == 0 and resumed["state_hash"] == uninterrupted["state_hash"]
    assert (run / "model.pt").read_bytes() == resumed_model
    lines = (run / "dvclive" / "plots" / "metrics" / "train_loss.tsv").read_text().strip().splitlines()
    assert len(lines) == 1 + epochs
