"""Run stale, mutually independent DVC stage entries N at a time and commit each one.

Usage: python -m tools.scheduler [--jobs 2] [--no-preload] [WAVE ...]   (from the repo root)
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

A plain ``python stages/<x>.py ARGS`` command runs in a fork of one interpreter that has
imported torch, timm and dvclive once per wave (tools/scheduler/zygote.py; about 5 s of CPU saved
per entry); anything else, or ``--no-preload``, runs in a fresh shell process. The
pipeline test checks that an entry rerun by plain ``dvc repro`` reproduces the forked
entry's outputs bit for bit.

What it never does: run an entry whose upstream is stale (left to ``dvc repro``, which
orders it), or commit a failed entry (``dvc repro`` reruns it and stops with its error).
Each entry's output goes to .dvc/tmp/prerun/<entry>.log; a failure prints its tail.
Interrupting stops the running entries; their checkpoints resume on the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # dvc ships no type information: these are Any to mypy, names to the reader
    from dvc.repo import Repo
    from dvc.stage import Stage

ROOT = Path(__file__).resolve().parents[2]
# Stages of dvc.yaml in dependency order; the entries of one wave never depend on each other.
DEFAULT_WAVES = (("validate",), ("prepare@*",), ("train_*", "intrinsic_dim", "sde"), ("measure_*", "optimizers"),
                 ("probe_*", "escape", "bounds", "phi_search", "spectra_scaling"))
# Imported once per wave by the zygote (tools/scheduler/zygote.py) instead of once per entry; landscape
# first: it pins the CPU kernel dispatch (landscape.reproducibility) before torch loads.
DEFAULT_PRELOAD = ("landscape", "torch", "timm", "dvclive", "landscape.models", "landscape.training", "landscape.curvature")


@dataclass
class WaveResult:
    """Entries of one wave: committed, failed (not committed), left to dvc repro."""

    committed: list[str] = field(default_factory=list)
    forked: int = 0  # of the entries run, how many in forks of the zygote
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _log_path(stage: Stage) -> Path:
    return Path(stage.repo.root_dir) / ".dvc" / "tmp" / "prerun" / f"{stage.addressing}.log"


def select_entries(repo: Repo, patterns: list[str]) -> tuple[list[Stage], list[Stage]]:
    """Stale entries matching ``patterns`` whose upstream is up to date, and those deferred.

    Returns ``(ready, deferred)``, each a list of dvc ``Stage`` objects in pipeline order.
    """
    import networkx as nx

    graph = repo.index.graph
    order = list(reversed(list(nx.topological_sort(graph))))  # dependencies first
    changed: dict[Stage, bool] = {}

    def is_changed(stage: Stage) -> bool:
        if stage not in changed:
            changed[stage] = bool(stage.changed())
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


_SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~=%{}")


def _python_script(cmd: str) -> list[str] | None:
    """``[script, *args]`` when ``cmd`` is a plain ``python <script>.py ARGS``, else None."""
    try:
        tokens = shlex.split(cmd)
    except ValueError:
        return None
    if len(tokens) < 2 or tokens[0] not in ("python", "python3") or not tokens[1].endswith(".py"):
        return None
    found = shutil.which(tokens[0])  # the interpreter the shell would run must be the zygote's
    if found is None or os.path.realpath(found) != os.path.realpath(sys.executable):
        return None
    if any(ch in _SHELL_SYNTAX for ch in cmd):
        return None
    return tokens[1:]


class _Job:
    """One running entry: its stage and log; :class:`_ShellJob` and :class:`_ForkJob` say how it runs."""

    forked = False

    def __init__(self, stage: Stage, log: Path):
        self.stage, self.log = stage, log

    def poll(self) -> int | None:
        """The exit code once the entry has ended, else None."""
        raise NotImplementedError

    def terminate(self) -> None:
        """Stop the entry and its process group."""
        raise NotImplementedError


class _ShellJob(_Job):
    """One running entry in a shell subprocess."""

    def __init__(self, stage: Stage, log: Path, proc: subprocess.Popen[bytes]):
        super().__init__(stage, log)
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        self.proc.wait()


class _ForkJob(_Job):
    """One running entry, a forked child of the zygote."""

    forked = True

    def __init__(self, stage: Stage, log: Path, zygote: _Zygote, job_id: int):
        super().__init__(stage, log)
        self.zygote, self.id = zygote, job_id

    def poll(self) -> int | None:
        return self.zygote.exit_code(self.id)

    def terminate(self) -> None:
        pid = self.zygote.pids.get(self.id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 15)


class _Zygote:
    """Client of tools/scheduler/zygote.py: entries run in forks of one pre-imported interpreter."""

    def __init__(self, root: Path, preload: tuple[str, ...]):
        self.root, self.preload = root, preload
        self.proc: subprocess.Popen[bytes] | None = None  # started by the first python entry
        self.pids: dict[int, int] = {}
        self.exits: dict[int, int] = {}
        self.next_id = 0
        self.alive = True
        self._buffer = b""

    def _handle(self, line: bytes) -> None:
        msg = json.loads(line)
        if "pid" in msg:
            self.pids[msg["id"]] = msg["pid"]
        else:
            self.exits[msg["id"]] = msg["exit"]

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        """The zygote's stdin and stdout (it is started on the first call)."""
        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py")), *self.preload],
                                         cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        if self.proc.stdin is None or self.proc.stdout is None:  # unreachable: both are pipes
            raise RuntimeError("zygote started without pipes")
        return self.proc.stdin, self.proc.stdout

    def start(self, script: list[str], cwd: str, env: dict[str, str], log: Path) -> int | None:
        """Fork ``python script...`` in the zygote; the job id, or None if the zygote is gone."""
        stdin, _ = self._pipes()
        job_id, self.next_id = self.next_id, self.next_id + 1
        request = {"id": job_id, "script": script[0], "args": script[1:], "cwd": cwd, "env": env, "log": str(log)}
        try:
            stdin.write((json.dumps(request) + "\n").encode())
            stdin.flush()
            while job_id not in self.pids:
                if not self._read():
                    raise BrokenPipeError
        except (BrokenPipeError, OSError):
            self.alive = False
            return None
        return job_id

    def exit_code(self, job_id: int) -> int | None:
        if job_id not in self.exits and select.select([self._pipes()[1]], [], [], 0)[0] and not self._read():
            self.alive = False  # the zygote died: its children's fate is unknown, count them failed
            return self.exits.get(job_id, 1)
        return self.exits.get(job_id)

    def _read(self) -> bool:
        """Read what the zygote wrote (waiting for it); False at end of file."""
        chunk = os.read(self._pipes()[1].fileno(), 65536)
        if not chunk:
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(line)
        return True

    def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self._pipes()[0].close()
        self.proc.wait()


def _launch(stage: Stage, zygote: _Zygote | None) -> _Job:
    """Start ``stage``'s command as ``dvc repro`` would (outputs removed, env set)."""
    stage.remove_outs(ignore_remove=False, force=False)
    env = dict(os.environ, DVC_ROOT=stage.repo.root_dir, DVC_STAGE=stage.addressing)
    log = _log_path(stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmds = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
    script = _python_script(cmds[0]) if len(cmds) == 1 else None
    if script is not None and zygote is not None and zygote.alive:
        job_id = zygote.start(script, stage.wdir, env, log)
        if job_id is not None:
            return _ForkJob(stage, log, zygote, job_id)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["/bin/sh", "-c", " && ".join(f"({c})" for c in cmds)], cwd=stage.wdir, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return _ShellJob(stage, log, proc)


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _record(stages: list[Stage]) -> None:
    """Write the lock entries of saved and committed ``stages`` (one dvc.lock rewrite for all)."""
    if stages:
        stages[0].dvcfile.dump_stages(stages, update_pipeline=False)


def run_wave(stages: list[Stage], jobs: int, record_every_s: float = 30.0, preload: tuple[str, ...] = ()) -> WaveResult:
    """Run ``stages`` ``jobs`` at a time; commit each one that exits 0.

    A finished entry's slot is refilled before its outputs are hashed and cached; lock
    entries are written in batches (every ``record_every_s`` and at the end), since one
    dvc.lock rewrite costs about as much as an entry's start-up. An entry finished but not
    yet recorded when the wave is interrupted is recorded; one still running is stopped.
    With ``preload`` (module names), plain ``python stages/<x>.py`` commands run in forks
    of one interpreter that imported those modules once (tools/scheduler/zygote.py).
    """
    from tqdm import tqdm

    result = WaveResult()
    start = last_record = time.monotonic()
    pending = list(stages)
    running: dict[Stage, _Job] = {}
    unrecorded: list[Stage] = []
    bar = tqdm(total=len(stages), desc="prerun", unit="entry", file=sys.stdout, disable=not stages)
    zygote = _Zygote(Path.cwd(), preload) if preload and stages else None
    try:
        while pending or running:
            finished = []
            for stage, job in list(running.items()):
                code = job.poll()
                if code is not None:
                    del running[stage]
                    finished.append((stage, code))
            while pending and len(running) < jobs:
                stage = pending.pop(0)
                running[stage] = _launch(stage, zygote)
                result.forked += running[stage].forked
            for stage, code in finished:
                if code == 0:
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
                    tqdm.write(f"prerun: {stage.addressing} exited {code} (left to dvc repro); log {log}:\n{_tail(log)}")
                bar.update(1)
            if unrecorded and time.monotonic() - last_record > record_every_s:
                _record(unrecorded)
                unrecorded, last_record = [], time.monotonic()
            if not finished:
                time.sleep(0.1)
    finally:
        for job in running.values():  # interrupted: stop the children, commit nothing partial
            job.terminate()
        if zygote is not None:
            zygote.close()
        _record(unrecorded)
        bar.close()
    result.seconds = time.monotonic() - start
    return result


def prerun_wave(patterns: list[str], jobs: int, preload: tuple[str, ...] = DEFAULT_PRELOAD) -> WaveResult:
    """One wave in the DVC repo of the working directory (dvc.yaml and dvc.lock read afresh)."""
    from dvc.repo import Repo, lock_repo

    repo = Repo(".")
    try:
        with lock_repo(repo):  # as dvc repro does: no other dvc command writes meanwhile
            ready, deferred = select_entries(repo, patterns)
            result = run_wave(ready, jobs, preload=preload)
        result.deferred = [s.addressing for s in deferred]
    finally:
        repo.close()
    print(f"prerun {','.join(patterns)}: {len(result.committed)} committed ({result.forked} forked), {len(result.failed)} failed, "
          f"{len(result.deferred)} left to dvc repro, {result.seconds:.0f} s")
    return result


def prerun(waves: list[list[str]], jobs: int = 2, root: str | os.PathLike[str] = ROOT,
           preload: tuple[str, ...] = DEFAULT_PRELOAD) -> list[WaveResult]:
    """Run each wave of stage patterns in turn in the DVC repo at ``root``; see the module docstring."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    cwd = os.getcwd()
    os.chdir(root)  # stage addresses (and DVC_STAGE) are relative to the working directory
    try:
        return [prerun_wave(patterns, jobs, preload) for patterns in waves]
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("waves", nargs="*", help="comma-separated stage-name patterns, one argument per wave (default: DEFAULT_WAVES)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("LANDSCAPE_JOBS", "2")))
    parser.add_argument("--no-preload", action="store_true", help="run every entry in a fresh process (no zygote)")
    args = parser.parse_args()
    waves = [[p for p in w.split(",") if p] for w in args.waves] or [list(w) for w in DEFAULT_WAVES]
    logging.getLogger("dvc").setLevel(logging.WARNING)  # one "Updating lock file" line per commit otherwise
    try:
        prerun(waves, jobs=args.jobs, preload=() if args.no_preload else DEFAULT_PRELOAD)
    except ValueError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
