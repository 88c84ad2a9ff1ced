"""The ``local`` executor: entries as child processes of this machine, N at a time, one GPU each.

A plain ``python stages/<x>.py ARGS`` command runs in a fork of one interpreter that has
imported torch, timm and dvclive once (tools/scheduler/zygote.py; about 5 s of CPU saved
per entry); anything else, or ``preload=()``, runs in a fresh shell process.

GPUs: the devices this process may use (``CUDA_VISIBLE_DEVICES`` if set, else those
``nvidia-smi -L`` lists, or an explicit list) form a pool. An entry whose resources ask for
``gpus: k`` waits for k free devices and runs with ``CUDA_VISIBLE_DEVICES`` set to them; an
entry that asks for none runs with ``CUDA_VISIBLE_DEVICES=""`` (CPU), so two entries never
share a device. On a machine without GPUs the pool is empty and GPU requests are ignored:
everything runs on the CPU, as the CPU profiles expect.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from tools.scheduler.executor import Entry, Executor, Outcome, outcome_of, shell_command

__all__ = ["LocalExecutor", "visible_gpus"]


def visible_gpus() -> list[str]:
    """Device ids this process may give out: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``'s."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(i) for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


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
    """One running entry: :class:`_ShellJob` and :class:`_ForkJob` say how it runs."""

    forked = False

    def __init__(self, entry: Entry, gpus: tuple[str, ...]):
        self.entry, self.gpus = entry, gpus

    def exit_code(self) -> int | None:
        """The exit code once the entry has ended (``-N``: killed by signal N), else None."""
        raise NotImplementedError

    def terminate(self) -> None:
        """Stop the entry and its process group."""
        raise NotImplementedError


class _ShellJob(_Job):
    def __init__(self, entry: Entry, gpus: tuple[str, ...], proc: subprocess.Popen[bytes]):
        super().__init__(entry, gpus)
        self.proc = proc

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        self.proc.wait()


class _ForkJob(_Job):
    forked = True

    def __init__(self, entry: Entry, gpus: tuple[str, ...], zygote: _Zygote, job_id: int):
        super().__init__(entry, gpus)
        self.zygote, self.id = zygote, job_id

    def exit_code(self) -> int | None:
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


class LocalExecutor(Executor):
    """Entries as child processes of this machine, ``jobs`` at a time, GPUs given out one set per entry.

    Args:
        jobs: entries running at once (>= 1).
        preload: modules the zygote imports once; ``()`` runs every entry in a fresh process.
        gpus: device ids to give out (default :func:`visible_gpus`; ``[]``: CPU only).
        root: working directory of the zygote (the repo root).
    """

    name = "local"

    def __init__(self, jobs: int = 2, preload: tuple[str, ...] = (), gpus: list[str] | None = None,
                 root: str | os.PathLike[str] = "."):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.free = list(self.gpus)
        self.running = 0
        self.zygote = _Zygote(Path(root), preload) if preload else None

    def gpus_for(self, entry: Entry) -> int:
        """Devices ``entry`` gets: its request, or none on a machine without GPUs.

        Raises:
            ValueError: it asks for more GPUs than this machine gives out in all.
        """
        want = entry.resources.gpus if self.gpus else 0
        if want > len(self.gpus):
            raise ValueError(f"{entry.name} asks for gpus: {want}; this machine gives out {len(self.gpus)} "
                             f"({','.join(self.gpus)}): lower it in the resources file or pass more devices")
        return want

    def can_start(self, entry: Entry) -> bool:
        return self.running < self.jobs and len(self.free) >= self.gpus_for(entry)

    def start(self, entry: Entry) -> _Job:
        want = self.gpus_for(entry)
        gpus, self.free = tuple(self.free[:want]), self.free[want:]
        env = dict(os.environ, **entry.env)
        if self.gpus:  # a GPU machine: each entry sees only its own devices (none: the CPU)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        entry.log.parent.mkdir(parents=True, exist_ok=True)
        self.running += 1
        script = _python_script(entry.cmds[0]) if len(entry.cmds) == 1 else None
        if script is not None and self.zygote is not None and self.zygote.alive:
            job_id = self.zygote.start(script, entry.wdir, env, entry.log)
            if job_id is not None:
                return _ForkJob(entry, gpus, self.zygote, job_id)
        with open(entry.log, "wb") as fh:
            proc = subprocess.Popen(["/bin/sh", "-c", shell_command(entry.cmds)], cwd=entry.wdir, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        return _ShellJob(entry, gpus, proc)

    def poll(self, handles: list[_Job]) -> list[tuple[_Job, Outcome]]:
        ended = []
        for job in handles:
            code = job.exit_code()
            if code is None:
                continue
            self.running -= 1
            self.free += [g for g in self.gpus if g in job.gpus]  # back in the pool, in device order
            self.free.sort(key=self.gpus.index)
            ended.append((job, outcome_of(code)))
        return ended

    def cancel(self, handle: _Job) -> None:
        handle.terminate()

    def forked(self, handle: _Job) -> bool:
        return handle.forked

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
