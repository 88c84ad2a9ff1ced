"""The ``slurm`` executor: one SLURM job per entry, submitted through submitit.

Each entry becomes a batch job named after it (``squeue`` shows ``train_h1_batch@b32-0``),
with its resources (tools/scheduler/resources.py) as ``sbatch`` options; the job runs
:class:`tools.scheduler.worker.EntryCommand` (the entry's own command) on the shared
filesystem. The coordinator polls the queue and reads each job's result (submitit's result
file, on the shared filesystem):

- a result: the command's exit code (0 ``done``, else ``failed``);
- no result and the job has left the queue: the job was killed (``scancel``, preemption
  with ``PreemptMode=CANCEL``, node failure, out of memory): ``killed``, and the coordinator
  submits it again;
- still queued: pending, running, or requeued by SLURM itself (preemption with
  ``PreemptMode=REQUEUE``, ``scontrol requeue``, or submitit's requeue at the time limit),
  in which case the same job runs the command again and a train entry resumes from its
  checkpoint.

The queue is read with ``squeue`` (one call per poll for all jobs), not ``sacct``: it needs
no accounting database. ``backend="local"`` runs the same jobs through submitit's local
executor (processes of this machine): the code path of a cluster, for tests without SLURM.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from tools.scheduler.executor import Entry, Executor, Outcome, shell_command
from tools.scheduler.worker import EntryCommand

__all__ = ["SlurmExecutor", "slurm_parameters"]


def slurm_parameters(entry: Entry, signal_delay_s: int) -> dict[str, Any]:
    """submitit ``SlurmExecutor.update_parameters`` keywords for ``entry``'s resources."""
    r = entry.resources
    params: dict[str, Any] = {
        "job_name": entry.name,
        "cpus_per_task": r.cpus,
        "mem": f"{round(r.mem_gb * 1024)}M",
        "time": r.time_min,
        "signal_delay_s": signal_delay_s,
        "stderr_to_stdout": True,
    }
    if r.partition:
        params["partition"] = r.partition
    if r.gpus:
        params["gpus_per_node"] = r.gpus
    if r.slurm:
        params["additional_parameters"] = {k.replace("-", "_"): v for k, v in r.slurm.items()}
    return params


class _Job:
    """A submitted entry: its submitit job, and since when it is missing from the queue."""

    def __init__(self, entry: Entry, job: Any):
        self.entry, self.job = entry, job
        self.gone_since: float | None = None

    @property
    def id(self) -> str:
        return str(self.job.job_id)


class SlurmExecutor(Executor):
    """Entries as SLURM jobs (or, with ``backend="local"``, as submitit's local processes).

    Args:
        folder: submitit's folder (job scripts, pickles, results); must be on the shared filesystem.
        max_jobs: entries submitted and not yet ended, at most.
        backend: ``"slurm"`` (``sbatch``) or ``"local"`` (submitit's local executor, for tests).
        poll_s: seconds between two reads of the queue.
        grace_s: how long a job may be missing from the queue without a result before it counts
            as killed (a result written just before the job ended may take that long to show
            on a network filesystem).
        signal_delay_s: SLURM sends ``SIGUSR2`` this long before the time limit; submitit then
            requeues the job (the entry resumes from its checkpoint).
    """

    name = "slurm"

    def __init__(self, folder: str | os.PathLike[str], max_jobs: int = 256, backend: Literal["slurm", "local"] = "slurm",
                 poll_s: float = 2.0, grace_s: float = 10.0, signal_delay_s: int = 90):
        if backend not in ("slurm", "local"):
            raise ValueError(f"backend must be 'slurm' or 'local', got {backend!r}")
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        if backend == "slurm" and shutil.which("sbatch") is None:
            raise RuntimeError("the slurm executor needs SLURM's sbatch and squeue on PATH (run the coordinator on a "
                               "login node that sees the shared filesystem), or use --executor local")
        self.folder, self.backend = Path(folder).resolve(), backend
        self.max_jobs, self.poll_s, self.grace_s, self.signal_delay_s = max_jobs, poll_s, grace_s, signal_delay_s
        self.submitted = 0
        self._last_poll = float("-inf")
        import cloudpickle  # type: ignore[import-untyped]

        from tools.scheduler import exits, worker

        # The job unpickles EntryCommand with the code inside: it needs submitit, not this repo on its sys.path.
        cloudpickle.register_pickle_by_value(worker)
        cloudpickle.register_pickle_by_value(exits)

    def _executor(self, entry: Entry) -> Any:
        import submitit

        if self.backend == "slurm":
            slurm = submitit.SlurmExecutor(folder=self.folder / "%j")
            slurm.update_parameters(**slurm_parameters(entry, self.signal_delay_s))
            return slurm
        local = submitit.LocalExecutor(folder=self.folder / "%j")
        local.update_parameters(timeout_min=entry.resources.time_min, signal_delay_s=self.signal_delay_s)
        return local

    def can_start(self, entry: Entry) -> bool:  # noqa: ARG002  (SLURM places by resources; only the count is capped)
        return self.submitted < self.max_jobs

    def start(self, entry: Entry) -> _Job:
        entry.log.parent.mkdir(parents=True, exist_ok=True)
        if entry.attempt == 1:
            entry.log.write_bytes(b"")  # each attempt's job appends to it
        command = EntryCommand(entry.name, shell_command(entry.cmds), entry.wdir, dict(entry.env), str(entry.log))
        job = self._executor(entry).submit(command)
        self.submitted += 1
        return _Job(entry, job)

    def _queued(self) -> set[str] | None:
        """Ids of this user's jobs that SLURM still holds (pending, running, completing, requeued);
        None when squeue cannot be read (then nothing is judged this round)."""
        proc = subprocess.run(["squeue", "-h", "-o", "%i", "-u", getpass.getuser()], capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode != 0:
            return None
        return {line.strip() for line in proc.stdout.splitlines() if line.strip()}

    def _final_state(self, job: _Job) -> str:
        """``JobState`` and ``Reason`` from ``scontrol show job`` (best effort: SLURM forgets jobs after MinJobAge)."""
        if self.backend != "slurm":
            return str(job.job.state)
        proc = subprocess.run(["scontrol", "-o", "show", "job", job.id], capture_output=True, text=True, timeout=60, check=False)
        fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
        return " ".join(f"{k}={fields[k]}" for k in ("JobState", "Reason", "ExitCode") if k in fields) or "no longer known to SLURM"

    def _result(self, job: _Job) -> Outcome | None:
        from submitit.core.utils import pickle_load

        path = job.job.paths.result_pickle
        if not path.exists():
            return None
        kind, value = pickle_load(path)
        if kind == "success":
            code = int(value)
            return Outcome("done", 0) if code == 0 else Outcome("failed", code, f"exited {code} (job {job.id})")
        last = [line for line in str(value).splitlines() if line.strip()][-1:]
        return Outcome("failed", None, f"job {job.id} raised {last[0] if last else 'an error'}")

    def poll(self, handles: list[_Job]) -> list[tuple[_Job, Outcome]]:
        now = time.monotonic()
        if not handles or now - self._last_poll < self.poll_s:
            return []
        self._last_poll = now
        queued = self._queued() if self.backend == "slurm" else None
        ended = []
        for job in handles:
            outcome = self._result(job)
            if outcome is None:
                if self.backend == "slurm":
                    if queued is None or job.id in queued:
                        job.gone_since = None
                        continue
                elif not job.job.done():
                    continue
                job.gone_since = job.gone_since or now
                if now - job.gone_since < self.grace_s:
                    continue
                outcome = self._result(job) or Outcome("killed", None, f"job {job.id} ended without a result ({self._final_state(job)})")
            ended.append((job, outcome))
            self.submitted -= 1
        return ended

    def cancel(self, handle: _Job) -> None:
        handle.job.cancel(check=False)
