"""The one interface between the coordinator (prerun.py) and the places entries run.

The coordinator owns ``dvc.lock`` and the DVC cache: it picks the stale entries, removes
their outputs, hands each one to an executor as an :class:`Entry` (its own command, working
directory and environment, exactly what ``dvc repro`` would run), and commits those whose
:class:`Outcome` is ``done``. An executor only runs commands and reports how they ended:
``local`` (forks on this machine, one GPU each, tools/scheduler/local.py) and ``slurm``
(submitit jobs, tools/scheduler/cluster.py) implement it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tools.scheduler.exits import killed_signal
from tools.scheduler.resources import Resources

__all__ = ["Entry", "Outcome", "Executor", "shell_command", "outcome_of"]


@dataclass(frozen=True)
class Entry:
    """One stage entry to run: what ``dvc repro`` would run for it, and what it asks for.

    Attributes:
        name: the entry's DVC address (``train_h1_batch@b32-0``); also its job name.
        cmds: its commands, run in order in one shell, stopping at the first failure.
        wdir: its working directory (absolute).
        env: variables DVC sets for it (``DVC_ROOT``, ``DVC_STAGE``), added to the worker's own.
        log: file that receives its stdout and stderr.
        resources: GPUs, CPUs, memory, time and partition (tools/scheduler/resources.py).
        attempt: 1 for its first run, 2 for the first requeue, ...
    """

    name: str
    cmds: tuple[str, ...]
    wdir: str
    env: dict[str, str]
    log: Path
    resources: Resources = field(default_factory=Resources)
    attempt: int = 1


@dataclass(frozen=True)
class Outcome:
    """How an entry's run ended.

    ``done``: its command exited 0 (commit it). ``failed``: its command exited non-zero
    (leave it to ``dvc repro``, which shows the error). ``killed``: the run was stopped from
    outside (a signal, ``scancel``, preemption, node failure, time limit): the coordinator
    requeues it, and a train entry resumes from its checkpoint.
    """

    state: Literal["done", "failed", "killed"]
    code: int | None = None
    detail: str = ""


def shell_command(cmds: tuple[str, ...]) -> str:
    """The entry's commands as one ``/bin/sh -c`` string, each in a subshell, as DVC chains them."""
    return " && ".join(f"({c})" for c in cmds)


def outcome_of(code: int) -> Outcome:
    """The outcome of a finished command from its exit status: 0 ``done``; death by a signal
    (``-N`` from Python, ``128 + N`` from the shell that ran it) ``killed``; else ``failed``."""
    if code == 0:
        return Outcome("done", 0)
    signal = killed_signal(code)
    if signal is not None:
        return Outcome("killed", code, f"killed by signal {signal}")
    return Outcome("failed", code, f"exited {code}")


class Executor(ABC):
    """Runs entries and reports their :class:`Outcome`; never touches ``dvc.lock``."""

    name: str = "executor"

    @abstractmethod
    def can_start(self, entry: Entry) -> bool:
        """Whether ``entry`` can start now (a free slot, and GPUs where it asks for them)."""

    @abstractmethod
    def start(self, entry: Entry) -> Any:
        """Start ``entry``; returns a handle for :meth:`poll` and :meth:`cancel`."""

    @abstractmethod
    def poll(self, handles: list[Any]) -> list[tuple[Any, Outcome]]:
        """The handles among ``handles`` whose runs have ended, with their outcomes."""

    @abstractmethod
    def cancel(self, handle: Any) -> None:
        """Stop a running entry (the coordinator was interrupted)."""

    def forked(self, handle: Any) -> bool:  # noqa: ARG002  (a default: only the local executor forks)
        """Whether the entry runs in a fork of the pre-imported interpreter (local only)."""
        return False

    def close(self) -> None:  # noqa: B027  (optional hook: most executors hold nothing)
        """Release what the executor holds (the zygote, pipes)."""
