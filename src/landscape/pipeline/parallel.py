"""The one worker pool of the pipeline: independent, seeded tasks in forked CPU processes.

Every task of a stage (one seed pair's barrier, one Bezier curve, one seed's
sharpness, one ``d_int`` search, one ``(eta, B)`` setting of the SDE study) carries its own
seed, so results do not depend on the number of workers or on the order tasks finish in.
Workers are forked (POSIX only): they inherit the caller's models and tensors without
pickling them; only task descriptions go out and results come back (pickled).

On several accelerators, :func:`map_on_devices` spreads the tasks: task ``i`` runs on device
``i mod k`` (:func:`~landscape.pipeline.runtime.assign_devices`), one spawned process per
device (a CUDA context cannot be forked), each running its tasks in order.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from landscape.pipeline.runtime import assign_devices, configure_torch, cpu_workers

__all__ = ["map_forked", "map_on_devices", "cpu_workers"]

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


def _device_worker(fn: Callable[[Any, torch.device], T], tasks: list[Any], device: torch.device,
                   setup: Callable[[], Any] | None) -> list[T]:
    """One spawned process: its process-wide settings, then its tasks in order on ``device``."""
    if setup is not None:
        setup()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return [fn(t, device) for t in tasks]


def map_on_devices(fn: Callable[[Any, torch.device], T], tasks: Sequence[Any], devices: Sequence[torch.device],
                   workers: int = 1, setup: Callable[[], Any] | None = configure_torch) -> list[T]:
    """``[fn(t, devices[i % k]) for i, t in enumerate(tasks)]`` with ``k = len(devices)``.

    - Only CPU devices: ``fn(t, devices[0])`` through :func:`map_forked` with ``workers``
      forked processes (the CPU path, unchanged).
    - One accelerator: every task in this process, in order.
    - ``k > 1`` devices: ``min(k, len(tasks))`` spawned processes, process ``j`` runs tasks
      ``j, j + k, ...`` in order on ``devices[j]`` after calling ``setup`` (process-wide
      settings such as deterministic algorithms do not cross a spawn). ``fn``, the tasks and
      the results are pickled: ``fn`` must be importable (a module-level function or a
      ``functools.partial`` of one), and the processes re-import the main module, which must
      guard its entry point with ``if __name__ == "__main__"``.

    Every task carries its own seed, so the results do not depend on ``k`` or ``workers``
    (on the same kind of device). Results come back in task order.

    Raises:
        ValueError: ``devices`` is empty or mixes the CPU with accelerators; ``workers`` < 1.
    """
    devices = [torch.device(d) for d in devices]
    if not devices:
        raise ValueError("devices must not be empty")
    tasks = list(tasks)
    if all(d.type == "cpu" for d in devices):
        return map_forked(functools.partial(_call_on, fn, devices[0]), tasks, workers)
    if any(d.type == "cpu" for d in devices):
        raise ValueError(f"devices must be all CPU or all accelerators, got {[str(d) for d in devices]}")
    return _map_spawned(fn, tasks, devices, setup)


def _call_on(fn: Callable[[Any, torch.device], T], device: torch.device, task: Any) -> T:
    return fn(task, device)


def _map_spawned(fn: Callable[[Any, torch.device], T], tasks: list[Any], devices: list[torch.device],
                 setup: Callable[[], Any] | None) -> list[T]:
    """The ``k``-device branch of :func:`map_on_devices` (any device type; the CPU in tests)."""
    if len(devices) == 1 or len(tasks) <= 1:
        return [fn(t, devices[0]) for t in tasks]
    owner = assign_devices(len(tasks), len(devices))
    groups = [[i for i, d in enumerate(owner) if d == j] for j in range(len(devices))]
    groups = [g for g in groups if g]
    jobs = [(fn, [tasks[i] for i in g], devices[owner[g[0]]], setup) for g in groups]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        per_group = pool.starmap(_device_worker, jobs, chunksize=1)
    out: list[Any] = [None] * len(tasks)
    for g, results in zip(groups, per_group, strict=True):
        for i, r in zip(g, results, strict=True):
            out[i] = r
    return out
