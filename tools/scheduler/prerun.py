"""The coordinator: run stale, mutually independent DVC stage entries on an executor, commit each one.

Usage: python -m tools.scheduler [--executor local|slurm] [--jobs N] [--resources FILE]
                                 [--gpus 0,1,...] [--max-requeues 3] [--no-preload] [WAVE ...]
       (from the repo root; a WAVE is a comma-separated list of stage-name patterns, e.g.
       'train_*,sde'; default: the waves of this repo's dvc.yaml, DEFAULT_WAVES; `make repro`
       runs this and then `dvc repro`)

``dvc repro`` runs one entry at a time. This process runs the stale entries of each wave, in
order, on an executor (tools/scheduler/executor.py), exactly as ``dvc repro`` would run them
(the entry's own command, in its working directory, with DVC_ROOT and DVC_STAGE set, its
non-persistent outputs removed first), and records each success as ``dvc commit`` would
(outputs into the cache; hashes into dvc.lock in DVC's own format, by replacing that entry's
lines instead of DVC's 12 s whole-file rewrite: tools/scheduler/lockfile.py). It is the only
writer of ``dvc.lock`` and of the cache: it holds DVC's repo lock for each wave, and executors
only run commands. The default waves end with the hypotheses and the report, so the ``dvc
repro`` that follows checks that everything is up to date and reruns only what failed here.

Executors:

- ``local`` (default): child processes of this machine, ``--jobs`` at a time (default 2,
  or LANDSCAPE_JOBS). A plain ``python stages/<x>.py ARGS`` command runs in a fork of one
  interpreter that imported torch, timm and dvclive once per run (tools/scheduler/zygote.py;
  about 5 s of CPU saved per entry); ``--no-preload`` runs every entry in a fresh process.
  On a GPU machine each entry gets GPUs of its own (its ``gpus`` resource; none: the CPU)
  through CUDA_VISIBLE_DEVICES (tools/scheduler/local.py).
- ``slurm``: one SLURM job per entry through submitit, with its resources (GPUs, CPUs,
  memory, time, partition) from ``--resources`` (tools/scheduler/resources.py); up to
  ``--jobs`` submitted at once (default 256). Run the coordinator where ``sbatch`` works
  and the repo, its ``.venv`` and its DVC cache are on the filesystem the nodes share
  (tools/scheduler/cluster.py).

A run that is killed from outside (a signal, ``scancel``, preemption, node failure, the time
limit) is submitted again, up to ``--max-requeues`` times per entry; a train entry resumes
from its last checkpoint (``persist: true`` outputs are kept between attempts) and ends
bit-identical to an uninterrupted run. A command that exits non-zero is not retried.

What it never does: run an entry whose upstream is stale (left to ``dvc repro``, which
orders it), or commit a failed entry (``dvc repro`` reruns it and stops with its error).
Each entry's output goes to .dvc/tmp/prerun/<entry>.log; a failure prints its tail.
The coordinator (``python -m tools.scheduler``) parses an unchanged params.yaml once
(tools/dvc_params_cache.py, installed in its own process; ``LANDSCAPE_DVC_PARAMS_CACHE=0``
turns it off) instead of once per entry.
Interrupting stops (or ``scancel``s) the running entries; their checkpoints resume on the next run.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.scheduler.executor import Entry, Executor, Outcome
from tools.scheduler.lockfile import record
from tools.scheduler.resources import ResourceTable, load_resources

if TYPE_CHECKING:  # dvc ships no type information: these are Any to mypy, names to the reader
    from dvc.repo import Repo
    from dvc.stage import Stage

ROOT = Path(__file__).resolve().parents[2]
# Stages of dvc.yaml in dependency order; the entries of one wave never depend on each other.
DEFAULT_WAVES = (("validate",), ("prepare@*",), ("train_*", "intrinsic_dim", "sde", "eos"), ("measure_*", "optimizers"),
                 ("probe_*", "escape", "bounds", "phi_search", "spectra_scaling", "dense_check", "class_structure"),
                 ("hypotheses",), ("report",))
# Imported once per scheduler run by the zygote (tools/scheduler/zygote.py) instead of once per entry;
# landscape first: it pins the CPU kernel dispatch (landscape.reproducibility) before torch loads.
# dvc.repo (DVCLive opens the repo in every entry) and torch.utils.tensorboard (the train entries'
# event files) were 0.25 s of a 0.71 s paper_smoke train entry; landscape.stats (statsmodels and
# scipy.stats) was 0.9 s of CPU in each of the ~25 paper_smoke entries that import it (probes, the
# analyses, the report stage); matplotlib (0.5 s) in each entry that draws its figures.
DEFAULT_PRELOAD = ("landscape", "torch", "timm", "dvclive", "dvc.repo", "torch.utils.tensorboard", "landscape.models",
                   "landscape.training", "landscape.curvature", "landscape.stats", "matplotlib.figure",
                   "matplotlib.backends.backend_agg")
DEFAULT_RESOURCES = "resources.yaml"
"""The resources file at the repo root, read when it exists and no other is named."""
EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class WaveResult:
    """Entries of one wave: committed, failed (not committed), left to dvc repro, and requeued (killed, run again)."""

    committed: list[str] = field(default_factory=list)
    forked: int = 0  # of the entries run, how many in forks of the zygote
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # one name per requeue
    seconds: float = 0.0


def _log_path(stage: Stage) -> Path:
    return Path(stage.repo.root_dir) / ".dvc" / "tmp" / "prerun" / f"{stage.addressing}.log"


def select_entries(repo: Repo, patterns: list[str], known_clean: Collection[str] = ()) -> tuple[list[Stage], list[Stage]]:
    """Stale entries matching ``patterns`` whose upstream is up to date, and those deferred.

    ``known_clean``: addresses of entries committed earlier in this scheduler run, taken as up
    to date without hashing their dependencies again (a later wave's check of its upstream
    otherwise rehashed every earlier entry's: 670 checks instead of 160 on paper_smoke).

    Returns ``(ready, deferred)``, each a list of dvc ``Stage`` objects in pipeline order.
    """
    import networkx as nx

    graph = repo.index.graph
    order = list(reversed(list(nx.topological_sort(graph))))  # dependencies first
    changed: dict[Stage, bool] = {}

    def is_changed(stage: Stage) -> bool:
        if stage not in changed:
            changed[stage] = getattr(stage, "addressing", None) not in known_clean and bool(stage.changed())
        return changed[stage]

    ready: list[Stage] = []
    deferred: list[Stage] = []
    for stage in order:
        name = getattr(stage, "addressing", str(stage))
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns) or not getattr(stage, "cmd", None):
            continue
        if stage.frozen or not is_changed(stage):
            continue
        upstream = [s for s in nx.descendants(graph, stage) if getattr(s, "cmd", None)]
        (deferred if any(is_changed(s) for s in upstream) else ready).append(stage)
    return ready, deferred


def _tail(path: Path, lines: int = 20) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def entry_of(stage: Stage, resources: ResourceTable, attempt: int = 1) -> Entry:
    """What ``dvc repro`` would run for ``stage``: its commands, working directory and variables."""
    cmds = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
    return Entry(name=stage.addressing, cmds=tuple(cmds), wdir=str(Path(stage.wdir).resolve()),
                 env={"DVC_ROOT": str(Path(stage.repo.root_dir).resolve()), "DVC_STAGE": stage.addressing},
                 log=_log_path(stage), resources=resources.for_entry(stage.addressing), attempt=attempt)


def run_wave(stages: list[Stage], executor: Executor, resources: ResourceTable | None = None, max_requeues: int = 3,
             record_every_s: float = 5.0) -> WaveResult:
    """Run ``stages`` on ``executor``; commit each one that ends ``done``, requeue each one killed.

    A finished entry's slot is refilled before its outputs are hashed and cached; lock
    entries are written in batches, every ``record_every_s`` and at the end (each write
    rereads and splices the whole dvc.lock, tools/scheduler/lockfile.py: about 50 ms on the
    default profile's 1.8 MB, once per entry otherwise). An entry finished but not yet
    recorded when the wave is interrupted is recorded; one still running is stopped.
    An entry killed from outside is started again (outputs not removed: a train entry's
    checkpoints are ``persist``) up to ``max_requeues`` times, then counted failed.
    """
    from tqdm import tqdm

    resources = resources or ResourceTable()
    result = WaveResult()
    start = last_record = time.monotonic()
    pending = [(stage, entry_of(stage, resources)) for stage in stages]
    running: dict[Any, Stage] = {}
    attempts: dict[Stage, int] = {}
    unrecorded: list[Stage] = []
    bar = tqdm(total=len(stages), desc=f"prerun ({executor.name})", unit="entry", file=sys.stdout, disable=not stages)
    try:
        while pending or running:
            finished: list[tuple[Stage, Outcome]] = []
            for handle, outcome in executor.poll(list(running)):
                finished.append((running.pop(handle), outcome))
            requeue = [(stage, outcome) for stage, outcome in finished if outcome.state == "killed" and attempts[stage] <= max_requeues]
            for stage, outcome in requeue:
                tqdm.write(f"prerun: {stage.addressing} {outcome.detail}; requeued "
                           f"(attempt {attempts[stage] + 1} of at most {max_requeues + 1})")
                result.requeued.append(stage.addressing)
                pending.insert(0, (stage, entry_of(stage, resources, attempts[stage] + 1)))
            for stage, entry in [item for item in pending if executor.can_start(item[1])]:  # first fit, in order
                if not executor.can_start(entry):  # an earlier start took the slot or the GPUs
                    continue
                pending.remove((stage, entry))
                if stage not in attempts:
                    stage.remove_outs(ignore_remove=False, force=False)  # as dvc repro; persistent outputs stay
                attempts[stage] = attempts.get(stage, 0) + 1
                handle = executor.start(entry)
                running[handle] = stage
                result.forked += executor.forked(handle)
            for stage, outcome in finished:
                if (stage, outcome) in requeue:
                    continue
                if outcome.state == "done":
                    try:
                        stage.save()  # hashes of deps and outs, as dvc repro records them
                        stage.commit()  # outputs into the cache
                    except Exception as exc:  # noqa: BLE001  (reported; e.g. a declared output missing: dvc repro reruns it and says so)
                        tqdm.write(f"prerun: {stage.addressing} exited 0 but cannot be committed "
                                   f"({type(exc).__name__}: {exc}); left to dvc repro")
                        result.failed.append(stage.addressing)
                    else:
                        unrecorded.append(stage)
                        result.committed.append(stage.addressing)
                else:
                    result.failed.append(stage.addressing)
                    log = _log_path(stage)
                    tqdm.write(f"prerun: {stage.addressing} {outcome.detail} (left to dvc repro); log {log}:\n{_tail(log)}")
                bar.update(1)
            if unrecorded and time.monotonic() - last_record > record_every_s:
                record(unrecorded)
                unrecorded, last_record = [], time.monotonic()
            if not finished:
                time.sleep(0.1)
    finally:
        for handle in running:  # interrupted: stop the entries, commit nothing partial
            executor.cancel(handle)
        record(unrecorded)
        bar.close()
    result.seconds = time.monotonic() - start
    return result


def make_executor(kind: str, jobs: int | None = None, preload: tuple[str, ...] = DEFAULT_PRELOAD, gpus: list[str] | None = None,
                  folder: str | os.PathLike[str] | None = None, **options: Any) -> Executor:
    """An executor by name (``local``, ``slurm``, ``submitit-local``) for the repo in the working directory.

    ``jobs``: entries at once (local, default 2) or submitted at once (slurm, default 256).
    ``folder``: submitit's job folder (default ``.dvc/tmp/prerun/submitit``, on the shared filesystem).
    ``options``: further keywords of :class:`tools.scheduler.cluster.SlurmExecutor` (``poll_s``, ``grace_s``, ...).
    """
    if kind == "local":
        from tools.scheduler.local import LocalExecutor

        return LocalExecutor(jobs=2 if jobs is None else jobs, preload=preload, gpus=gpus, root=Path.cwd())
    if kind in ("slurm", "submitit-local"):
        from tools.scheduler.cluster import SlurmExecutor

        return SlurmExecutor(Path(folder or Path(".dvc", "tmp", "prerun", "submitit")).resolve(),
                             max_jobs=256 if jobs is None else jobs, backend="slurm" if kind == "slurm" else "local", **options)
    raise ValueError(f"unknown executor {kind!r}; executors: {list(EXECUTORS)}")


def prerun_wave(patterns: list[str], executor: Executor, resources: ResourceTable | None = None, max_requeues: int = 3,
                known_clean: Collection[str] = ()) -> WaveResult:
    """One wave in the DVC repo of the working directory (dvc.yaml and dvc.lock read afresh);
    ``known_clean`` as :func:`select_entries`."""
    from dvc.repo import Repo, lock_repo

    repo = Repo(".")
    try:
        with lock_repo(repo):  # as dvc repro does: no other dvc command writes meanwhile
            ready, deferred = select_entries(repo, patterns, known_clean)
            result = run_wave(ready, executor, resources, max_requeues)
        result.deferred = [s.addressing for s in deferred]
    finally:
        repo.close()
    requeued = f", {len(result.requeued)} requeued" if result.requeued else ""
    print(f"prerun {','.join(patterns)}: {len(result.committed)} committed ({result.forked} forked), {len(result.failed)} failed, "
          f"{len(result.deferred)} left to dvc repro{requeued}, {result.seconds:.0f} s")
    return result


def prerun(waves: list[list[str]], jobs: int | None = 2, root: str | os.PathLike[str] = ROOT,
           preload: tuple[str, ...] = DEFAULT_PRELOAD, executor: str = "local", resources: str | os.PathLike[str] | None = None,
           gpus: list[str] | None = None, max_requeues: int = 3, **options: Any) -> list[WaveResult]:
    """Run each wave of stage patterns in turn in the DVC repo at ``root``; see the module docstring.

    ``resources``: a resources file (default: ``root/resources.yaml`` when it exists, else every
    entry gets :class:`tools.scheduler.resources.Resources` defaults).
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if max_requeues < 0:
        raise ValueError(f"max_requeues must be >= 0, got {max_requeues}")
    default = Path(root, DEFAULT_RESOURCES)
    table = load_resources(resources if resources is not None else default if default.is_file() else None)
    cwd = os.getcwd()
    os.chdir(root)  # stage addresses (and DVC_STAGE) are relative to the working directory
    try:
        runner = make_executor(executor, jobs, preload, gpus, **options)
        try:
            results: list[WaveResult] = []
            committed: set[str] = set()  # up to date until this run ends (later waves only read them)
            for patterns in waves:
                results.append(prerun_wave(patterns, runner, table, max_requeues, frozenset(committed)))
                committed.update(results[-1].committed)
            return results
        finally:
            runner.close()
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("waves", nargs="*", help="comma-separated stage-name patterns, one argument per wave (default: DEFAULT_WAVES)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where entries run: local processes, SLURM jobs, or submitit's local executor (tests)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="entries at once (local; default LANDSCAPE_JOBS or 2) or submitted at once (slurm; default 256)")
    parser.add_argument("--resources", default=None, help=f"resources file (default: {DEFAULT_RESOURCES} at the repo root)")
    parser.add_argument("--gpus", default=None, help="local: comma-separated device ids to give out (default: CUDA_VISIBLE_DEVICES "
                                                     "or every GPU nvidia-smi lists; '' for none)")
    parser.add_argument("--max-requeues", type=int, default=3, help="times a killed entry is submitted again (default 3)")
    parser.add_argument("--no-preload", action="store_true", help="local: run every entry in a fresh process (no zygote)")
    parser.add_argument("--poll-s", type=float, default=None, help="slurm: seconds between two reads of the queue (default 2)")
    parser.add_argument("--grace-s", type=float, default=None,
                        help="slurm: seconds a job may be gone from the queue without its result file before it counts as "
                             "killed and is requeued (default 10; the result may lag on a shared filesystem)")
    args = parser.parse_args()
    cluster = {k: v for k, v in (("poll_s", args.poll_s), ("grace_s", args.grace_s)) if v is not None}
    for key, value in cluster.items():
        if args.executor == "local" or not value > 0:
            parser.error(f"--{key.replace('_', '-')} is a positive number of seconds for --executor slurm or submitit-local")
    waves = [[p for p in w.split(",") if p] for w in args.waves] or [list(w) for w in DEFAULT_WAVES]
    jobs = args.jobs if args.jobs is not None else int(os.environ["LANDSCAPE_JOBS"]) if (
        args.executor == "local" and "LANDSCAPE_JOBS" in os.environ) else None
    gpus = None if args.gpus is None else [g for g in args.gpus.split(",") if g.strip()]
    logging.getLogger("dvc").setLevel(logging.WARNING)  # one "Updating lock file" line per commit otherwise
    # The coordinator reads params.yaml for every entry it checks or commits (DVC parses it once per
    # entry: 10 s of a paper_smoke wave's 18 s selection); the params cache parses it once per
    # version of the file, in this process only (the entries' commands, and callers of prerun() in
    # their own process, run stock DVC code).
    from tools import dvc_params_cache

    dvc_params_cache.install()
    try:
        prerun(waves, jobs=jobs, preload=() if args.no_preload else DEFAULT_PRELOAD, executor=args.executor,
               resources=args.resources, gpus=gpus, max_requeues=args.max_requeues, **cluster)
    except (ValueError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
