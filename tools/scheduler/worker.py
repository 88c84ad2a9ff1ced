"""What a cluster job runs: one entry's own command, as ``dvc repro`` would, on the shared filesystem.

:class:`EntryCommand` is the callable that the SLURM executor (tools/scheduler/cluster.py)
submits through submitit. In the job it runs the entry's commands in one ``/bin/sh``, in the
entry's working directory, with the job's environment plus DVC's variables (``DVC_ROOT``,
``DVC_STAGE``), appending stdout and stderr to the entry's log. It never touches
``dvc.lock`` or the DVC cache: the coordinator records and caches the outputs once the job
has ended.

Ending: the command's exit code is the job's result (the coordinator commits on 0). If the
command was killed by a signal (``scancel``, preemption, the time limit's ``SIGUSR2``), the
job is being stopped from outside: the worker exits without a result, so the coordinator
sees a killed job and requeues it. On the time-limit signal submitit itself requeues the job
(``Checkpointable``: the same command again); a train entry resumes from its last checkpoint.

Imports only the standard library, submitit and tools.scheduler.exits: the job imports this
module to unpickle the callable, from the repo root on the shared filesystem.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from submitit.helpers import Checkpointable

from tools.scheduler.exits import killed_signal

__all__ = ["EntryCommand"]


class EntryCommand(Checkpointable):
    """The callable of one entry's job: run its commands, return their exit code.

    Args:
        name: the entry's DVC address (for the log header).
        command: its commands as one shell string (``(c1) && (c2)``, as DVC chains them).
        wdir: its working directory.
        env: DVC's variables for it, added to the job's environment.
        log: file that receives the command's output (appended: one header per attempt).
    """

    def __init__(self, name: str, command: str, wdir: str, env: dict[str, str], log: str):
        self.name, self.command, self.wdir, self.env, self.log = name, command, wdir, env, log

    def __call__(self) -> int:
        env = dict(os.environ, **self.env)
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?")
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            fh.write(f"== {self.name}: job {job} (restart {restarts}) on {socket.gethostname()}, "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            fh.flush()
            code = subprocess.run(["/bin/sh", "-c", self.command], cwd=self.wdir, env=env, stdout=fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False).returncode
        signal = killed_signal(code)
        if signal is not None:  # stopped from outside: no result, the coordinator requeues the entry
            raise SystemExit(f"{self.name}: command killed by signal {signal}; the job ends without a result")
        return code
