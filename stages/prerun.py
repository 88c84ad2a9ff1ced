"""Run stale, mutually independent DVC stage entries N at a time and commit each one.

Usage: python stages/prerun.py [--jobs 2] [WAVE ...]
       (a WAVE is a comma-separated list of stage-name patterns, e.g. 'train_*,sde';
       default: the waves of this repo's dvc.yaml, DEFAULT_WAVES; `make repro` runs this
       and then `dvc repro`)

``dvc repro`` runs one entry at a time. On a 2-core CPU that leaves a core idle: training
is single-threaded (bit-identical results need it) and each entry spends about 4.5 s on
imports. This script runs the stale entries of each wave, in order, ``--jobs`` at a time,
exactly as ``dvc repro`` would run them (the entry's own command, in its working
directory, with DVC_ROOT and DVC_STAGE set, its non-persistent outputs removed first), and
records each success with ``dvc commit`` (hashes into dvc.lock, outputs into the cache).
The ``dvc repro`` that follows finds those entries up to date and runs the rest.

What it never does: run an entry whose upstream is stale (left to ``dvc repro``, which
orders it), or commit a failed entry (``dvc repro`` reruns it and stops with its error).
Each entry's output goes to .dvc/tmp/prerun/<entry>.log; a failure prints its tail.
Interrupting stops the running entries; their checkpoints resume on the next run.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Stages of dvc.yaml in dependency order; the entries of one wave never depend on each other.
DEFAULT_WAVES = (("prepare@*",), ("train_*", "intrinsic_dim", "sde"), ("measure_*",), ("probe_*", "escape", "bounds", "spectra_scaling"))


@dataclass
class WaveResult:
    """Entries of one wave: committed, failed (not committed), left to dvc repro."""

    committed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _log_path(stage) -> Path:
    return Path(stage.repo.root_dir) / ".dvc" / "tmp" / "prerun" / f"{stage.addressing}.log"


def select_entries(repo, patterns: list[str]) -> tuple[list, list]:
    """Stale entries matching ``patterns`` whose upstream is up to date, and those deferred.

    Returns ``(ready, deferred)``, each a list of dvc ``Stage`` objects in pipeline order.
    """
    import networkx as nx

    graph = repo.index.graph
    order = list(reversed(list(nx.topological_sort(graph))))  # dependencies first
    changed: dict = {}

    def is_changed(stage) -> bool:
        if stage not in changed:
            changed[stage] = bool(stage.changed())
        return changed[stage]

    ready, deferred = [], []
    for stage in order:
        name = getattr(stage, "addressing", str(stage))
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns) or not getattr(stage, "cmd", None):
            continue
        if stage.frozen or not is_changed(stage):
            continue
        upstream = [s for s in nx.descendants(graph, stage) if getattr(s, "cmd", None)]
        (deferred if any(is_changed(s) for s in upstream) else ready).append(stage)
    return ready, deferred


def _launch(stage) -> subprocess.Popen:
    """Start ``stage``'s command as ``dvc repro`` would (outputs removed, env set)."""
    stage.remove_outs(ignore_remove=False, force=False)
    env = dict(os.environ, DVC_ROOT=stage.repo.root_dir, DVC_STAGE=stage.addressing)
    _log_path(stage).parent.mkdir(parents=True, exist_ok=True)
    log = open(_log_path(stage), "wb")
    cmds = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
    script = " && ".join(f"({c})" for c in cmds)
    proc = subprocess.Popen(["/bin/sh", "-c", script], cwd=stage.wdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_wave(repo, stages: list, jobs: int) -> WaveResult:
    """Run ``stages`` ``jobs`` at a time; commit each one that exits 0, as it finishes."""
    from tqdm import tqdm

    result = WaveResult()
    start = time.monotonic()
    pending = list(stages)
    running: dict = {}
    bar = tqdm(total=len(stages), desc="prerun", unit="entry", file=sys.stdout, disable=not stages)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                stage = pending.pop(0)
                running[stage] = _launch(stage)
            time.sleep(0.2)
            for stage, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                proc.log.close()
                del running[stage]
                if proc.returncode == 0:
                    repo.commit(stage.addressing, force=True)
                    result.committed.append(stage.addressing)
                else:
                    result.failed.append(stage.addressing)
                    log = _log_path(stage)
                    tqdm.write(f"prerun: {stage.addressing} exited {proc.returncode} (left to dvc repro); log {log}:\n{_tail(log)}")
                bar.update(1)
    finally:
        for proc in running.values():  # interrupted: stop the children, commit nothing partial
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
            proc.wait()
            proc.log.close()
        bar.close()
    result.seconds = time.monotonic() - start
    return result


def prerun_wave(patterns: list[str], jobs: int) -> WaveResult:
    """One wave in the DVC repo of the working directory (dvc.yaml and dvc.lock read afresh)."""
    from dvc.repo import Repo, lock_repo

    repo = Repo(".")
    try:
        with lock_repo(repo):  # as dvc repro does: no other dvc command writes meanwhile
            ready, deferred = select_entries(repo, patterns)
            result = run_wave(repo, ready, jobs)
        result.deferred = [s.addressing for s in deferred]
    finally:
        repo.close()
    print(f"prerun {','.join(patterns)}: {len(result.committed)} committed, {len(result.failed)} failed, "
          f"{len(result.deferred)} left to dvc repro, {result.seconds:.0f} s")
    return result


def prerun(waves: list[list[str]], jobs: int = 2, root: str | os.PathLike = ROOT) -> list[WaveResult]:
    """Run each wave of stage patterns in turn in the DVC repo at ``root``; see the module docstring."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    cwd = os.getcwd()
    os.chdir(root)  # stage addresses (and DVC_STAGE) are relative to the working directory
    try:
        return [prerun_wave(patterns, jobs) for patterns in waves]
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("waves", nargs="*", help="comma-separated stage-name patterns, one argument per wave (default: DEFAULT_WAVES)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("LANDSCAPE_JOBS", "2")))
    args = parser.parse_args()
    waves = [[p for p in w.split(",") if p] for w in args.waves] or [list(w) for w in DEFAULT_WAVES]
    logging.getLogger("dvc").setLevel(logging.WARNING)  # one "Updating lock file" line per commit otherwise
    try:
        prerun(waves, jobs=args.jobs)
    except ValueError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
