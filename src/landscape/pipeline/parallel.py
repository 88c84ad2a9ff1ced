"""The one worker pool of the pipeline: independent, seeded tasks in forked CPU processes.

Every task of a stage (one seed pair's barrier, one Bezier curve, one seed's
sharpness, one ``d_int`` search, one ``(eta, B)`` setting of the SDE study) carries its own
seed, so results do not depend on the number of workers or on the order tasks finish in.
Workers are forked (POSIX only): they inherit the caller's models and tensors without
pickling them; only task descriptions go out and results come back (pickled).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from landscape.pipeline.runtime import cpu_workers

__all__ = ["map_forked", "cpu_workers"]

T = TypeVar("T")

_JOB: tuple[Callable[[Any], Any], list[Any]] | None = None


def _call(index: int) -> Any:
    if _JOB is None:  # set by the parent before the fork
        raise RuntimeError("no map_forked job in this process")
    fn, tasks = _JOB
    return fn(tasks[index])


def map_forked(fn: Callable[[Any], T], tasks: Sequence[Any], workers: int = 1) -> list[T]:
    """``[fn(t) for t in tasks]``, computed by up to ``workers`` forked processes.

    Tasks are handed out one at a time in the given order (put the costliest first for
    a balanced load); results come back in task order. ``fn`` may be a closure (workers
    are forked, not spawned); its results must be picklable. With ``workers <= 1`` or a
    single task everything runs in the calling process. Not re-entrant: ``fn`` must not
    call :func:`map_forked` itself with ``workers > 1``.

    Args:
        fn: The task function.
        tasks: Task descriptions.
        workers: Number of worker processes.

    Raises:
        ValueError: ``workers`` is not an int >= 1.
        RuntimeError: Called from inside a running :func:`map_forked`.
    """
    global _JOB  # noqa: PLW0603  (the job reaches forked workers through the module)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    tasks = list(tasks)
    if workers == 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    if _JOB is not None:
        raise RuntimeError("map_forked is not re-entrant: a task function called it again")
    _JOB = (fn, tasks)
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            return pool.map(_call, range(len(tasks)), chunksize=1)
    finally:
        _JOB = None
