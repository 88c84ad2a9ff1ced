"""Reruns of single entries and bad input, on a private copy of the ci profile's repo as
`make repro` leaves it (built once per test run, repo_copy.shared_repo); the entries rerun are
h1_batch/b32's: both seeds' training and their measure entry.

A SIGKILLed train entry resumes from its checkpoint on the next `dvc repro` and ends
bit-identical to an uninterrupted run; entries that prerun forked from a pre-imported
interpreter equal plain `dvc repro --force` reruns in fresh processes; bad params and a
missing data set stop with clear errors. Runs beside test_dvc_pipeline.py and test_slurm.py
(other xdist units, on copies of their own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from repo_copy import env, private_copy, restored, shared_repo
from repo_copy import dvc as _dvc
from repo_copy import edit_params as _edit_params
from repo_copy import run as _run

pytestmark = [pytest.mark.slow]

ENTRIES = ("train_h1_batch@b32-0", "train_h1_batch@b32-1", "measure_h1_batch@b32")
LOGS: dict[str, str] = {}


@pytest.fixture(scope="session")
def b32_repo(tmp_path_factory) -> Path:
    built = shared_repo(tmp_path_factory, "ci")
    LOGS.update(built.logs)
    repo = private_copy(built, tmp_path_factory.mktemp("reruns") / "repo")
    assert "up to date" in _dvc("status", *ENTRIES, cwd=repo).stdout
    return repo


def test_forked_entries_match_fresh_processes_bit_for_bit(b32_repo):
    """prerun ran the train and measure entries in forks of a pre-imported interpreter; plain
    `dvc repro --force` of the same entries (fresh processes, from scratch) gives identical results."""
    for wave in ("train_", "measure_"):  # every entry of both waves forked
        counts = re.search(rf"prerun {wave}\*[^:]*: (\d+) committed \((\d+) forked\), 0 failed", LOGS["prerun"])
        assert counts and counts[1] == counts[2] and int(counts[1]) > 0, LOGS["prerun"][-2000:]
    stage, run = "train_h1_batch@b32-0", b32_repo / "runs" / "h1_batch" / "b32" / "seed0"
    measured = b32_repo / "measure" / "h1_batch" / "b32"
    model_md5 = lambda: next(o["md5"] for o in yaml.safe_load((b32_repo / "dvc.lock").read_text())["stages"][stage]["outs"]
                             if o["path"].endswith("model.pt"))
    # The reruns rewrite wall times; the other tests share this repo, so restore it afterwards.
    with restored(b32_repo, run, measured):
        before = model_md5()
        shutil.rmtree(run / "checkpoints")  # else the rerun resumes from the final checkpoint
        _dvc("repro", "--force", "--single-item", stage, cwd=b32_repo)
        assert model_md5() == before  # same bytes: torch_save writes equal objects identically
        curvature = measured / "seeds" / "seed0" / "curvature.json"
        keys = ("lambda_max", "trace", "logdet", "eigenvalues", "density")  # all but wall times
        before = {k: json.loads(curvature.read_text())[k] for k in keys}
        _dvc("repro", "--force", "--single-item", "measure_h1_batch@b32", cwd=b32_repo)
        assert {k: json.loads(curvature.read_text())[k] for k in keys} == before
    assert "up to date" in _dvc("status", *ENTRIES, cwd=b32_repo).stdout


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # not written yet, or being replaced
        return -1


def test_sigkill_then_repro_resumes_bit_identical(b32_repo):
    stage = "train_h1_batch@b32-0"
    run = b32_repo / "runs" / "h1_batch" / "b32" / "seed0"
    epochs = 8
    with restored(b32_repo, run):  # the edited, rerun entry would leave its dependants stale
        def longer(p):  # the bounds' sanity pair must stay the same training but for the labels: edit both
            for exp, cfg in (("h1_batch", "b32"), ("sanity", "random_labels")):
                p["experiments"][exp]["configs"][cfg]["train"].update(epochs=epochs, batch_size=16)
        _edit_params(b32_repo, longer)
        shutil.rmtree(run / "checkpoints")  # the 2-epoch run's checkpoint must not be mistaken for progress
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", stage], cwd=b32_repo, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(run / "checkpoints" / "last.pt") < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = _checkpoint_epoch(run / "checkpoints" / "last.pt")
        assert 2 <= killed_at < epochs

        _dvc("repro", stage, cwd=b32_repo)
        resumed = json.loads((run / "metrics.json").read_text())
        assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] >= killed_at

        shutil.rmtree(run / "checkpoints")
        _dvc("repro", "--force", "--single-item", stage, cwd=b32_repo)
        uninterrupted = json.loads((run / "metrics.json").read_text())
        assert uninterrupted["resumed_from_epoch"] == 0
        assert resumed["state_hash"] == uninterrupted["state_hash"]
        lines = (run / "dvclive" / "plots" / "metrics" / "train_loss.tsv").read_text().strip().splitlines()
        assert len(lines) == 1 + epochs  # header + every epoch exactly once after the resume
    assert "up to date" in _dvc("status", *ENTRIES, cwd=b32_repo).stdout


def test_bad_params_and_missing_data_stop_with_clear_errors(b32_repo):
    bad = _run([sys.executable, "stages/train.py", "--experiment", "h1_batch", "--config", "nope", "--seed", "0"], b32_repo, check=False)
    assert bad.returncode == 2 and "missing key experiments.h1_batch.configs.nope" in bad.stderr
    original = (b32_repo / "params.yaml").read_text()
    try:
        _edit_params(b32_repo, lambda p: p["datasets"].update(cifar={"name": "cifar10", "root": "no/such/dir"}))
        missing = _run([sys.executable, "stages/prepare.py", "--dataset", "cifar"], b32_repo, check=False)
        assert missing.returncode == 2
        assert "cifar10" in missing.stderr and "no/such/dir" in missing.stderr and "download" in missing.stderr
        _edit_params(b32_repo, lambda p: p["experiments"]["h1_batch"]["configs"]["b32"]["train"].update(batch_size=5000))
        too_big = _run([sys.executable, "stages/train.py", "--experiment", "h1_batch", "--config", "b32", "--seed", "0"], b32_repo, check=False)
        assert too_big.returncode == 2 and "batch_size=5000 exceeds the" in too_big.stderr
    finally:
        (b32_repo / "params.yaml").write_text(original)


def test_bounds_priors_resume_after_sigkill_and_finished_priors_are_skipped(b32_repo):
    """The bounds stage trains one prior network per seed (paper profile: 50 in one stage):
    killed while training the second, the rerun keeps the first (bytes unchanged), resumes the
    second from its checkpoint, and bounds exactly as an uninterrupted run."""
    priors, runs = b32_repo / "bounds" / "priors" / "h1_batch" / "b32", b32_repo / "bounds" / "runs"
    ignore, epochs = ("wall_time_s", "cpu_time_s"), 300  # timings; about 10 ms an epoch: a window of seconds for the kill
    with restored(b32_repo):
        def one_run(p):
            p["bounds"].update(runs=["h1_batch/b32"], sanity=None)
            p["bounds"]["settings"].update(prior_epochs=epochs, mc_draws=200)
        _edit_params(b32_repo, one_run)
        _run([sys.executable, "-m", "landscape.pipeline.dvcfile"], b32_repo)  # bounds now reads runs/h1_batch alone
        shutil.rmtree(b32_repo / "bounds" / "priors")  # the ci run's priors (another fingerprint: they would be retrained anyway)
        sequential = {**env(), "LANDSCAPE_WORKERS": "1"}  # seed 0's prior, then seed 1's
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", "bounds"], cwd=b32_repo, env=sequential,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while not (priors / "seed0" / "prior.pt").is_file() or _checkpoint_epoch(priors / "seed1" / "checkpoints" / "last.pt") < 2:
            assert proc.poll() is None, "the stage ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = _checkpoint_epoch(priors / "seed1" / "checkpoints" / "last.pt")
        assert 2 <= killed_at < epochs and not (priors / "seed1" / "prior.pt").exists()
        first = (priors / "seed0" / "prior.pt").read_bytes()

        _dvc("repro", "--single-item", "bounds", cwd=b32_repo)
        assert (priors / "seed0" / "prior.pt").read_bytes() == first  # finished prior: loaded, not retrained
        resumed = torch.load(priors / "seed1" / "prior.pt", map_location="cpu", weights_only=False)
        assert resumed["status"] == "completed" and resumed["epochs_completed"] == epochs
        assert resumed["resumed_from_epoch"] >= killed_at and not (priors / "seed1" / "checkpoints").exists()
        bounded = {s: json.loads((runs / "h1_batch" / "b32" / f"seed{s}" / "bounds.json").read_text()) for s in (0, 1)}

        shutil.rmtree(b32_repo / "bounds" / "priors")
        _dvc("repro", "--single-item", "--force", "bounds", cwd=b32_repo)
        fresh = torch.load(priors / "seed1" / "prior.pt", map_location="cpu", weights_only=False)
        assert fresh["resumed_from_epoch"] == 0 and fresh["state_hash"] == resumed["state_hash"]
        for s in (0, 1):
            again = json.loads((runs / "h1_batch" / "b32" / f"seed{s}" / "bounds.json").read_text())
            assert {k: v for k, v in again.items() if k not in ignore} == {k: v for k, v in bounded[s].items() if k not in ignore}
            assert bounded[s]["prior"]["kind"] == "trained" and bounded[s]["prior"]["epochs"] == epochs
    shutil.rmtree(b32_repo / "bounds")
