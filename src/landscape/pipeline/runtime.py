"""Process settings of a stage entry: deterministic torch, its devices, its worker count, and
its place in a ``torchrun`` group."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from landscape.reproducibility import check_cpu_kernels, configure_determinism

__all__ = [
    "configure_torch",
    "pick_device",
    "visible_devices",
    "device_for",
    "assign_devices",
    "cpu_workers",
    "DistributedContext",
    "distributed_context",
    "process_group",
]


def configure_torch(warn_only: bool = True) -> dict[str, Any]:
    """Deterministic algorithms and CUDA settings (:func:`~landscape.reproducibility.configure_determinism`),
    pinned CPU kernels (checked) and a fixed CPU thread count (``LANDSCAPE_THREADS``, default 1).

    One thread by default: small models gain little from more on a 2-core machine, and a
    fixed count keeps CPU results bit-identical across machines with different core counts.
    Process-wide settings: a spawned worker process calls this again.

    Returns:
        The settings (recorded in the stage's outputs), ``threads`` included.
    """
    check_cpu_kernels()
    settings = configure_determinism(warn_only=warn_only)
    threads = int(os.environ.get("LANDSCAPE_THREADS", "1"))
    torch.set_num_threads(threads)
    return {**settings, "threads": threads}


def visible_devices() -> list[torch.device]:
    """The devices a stage may use: ``[LANDSCAPE_DEVICE]`` if set, else every visible CUDA
    device (``cuda:0 .. cuda:k-1``, as ``CUDA_VISIBLE_DEVICES`` exposes them), else ``[cpu]``.

    On a CUDA machine this starts the CUDA driver (``cudaGetDeviceCount``), after which
    forked processes cannot use CUDA: workers on accelerators are spawned
    (:func:`~landscape.pipeline.parallel.map_on_devices`). On a CPU-only machine it changes nothing.
    """
    if os.environ.get("LANDSCAPE_DEVICE"):
        return [torch.device(os.environ["LANDSCAPE_DEVICE"])]
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def assign_devices(num_tasks: int, num_devices: int) -> list[int]:
    """Device index of each task: task ``i`` runs on device ``i mod num_devices``.

    Raises:
        ValueError: a count is not an int (``num_tasks >= 0``, ``num_devices >= 1``).
    """
    for name, value, low in (("num_tasks", num_tasks, 0), ("num_devices", num_devices, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return [i % num_devices for i in range(num_tasks)]


def device_for(index: int, devices: Sequence[torch.device] | None = None) -> torch.device:
    """The device of task (seed) ``index``: ``devices[index mod len(devices)]`` (default:
    :func:`visible_devices`), the rule of :func:`assign_devices`.

    Raises:
        ValueError: ``index`` is not an int >= 0, or ``devices`` is empty.
    """
    devices = list(visible_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must not be empty")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be an int >= 0, got {index!r}")
    return devices[index % len(devices)]


def pick_device() -> torch.device:
    """``LANDSCAPE_DEVICE`` if set, else the first CUDA device when available, else CPU."""
    return device_for(0)


def cpu_workers(device: torch.device | str, tasks: int | None = None) -> int:
    """Forked worker processes for a stage's independent tasks: ``LANDSCAPE_WORKERS``
    (default: the CPU count, at most 2) on the CPU, capped at ``tasks``; 1 on an accelerator
    (forked workers cannot share a CUDA context; :func:`~landscape.pipeline.parallel.map_on_devices`
    spreads tasks over several accelerators instead)."""
    if getattr(device, "type", str(device)) != "cpu":
        return 1
    default = min(2, os.cpu_count() or 1)
    workers = max(1, int(os.environ.get("LANDSCAPE_WORKERS", default)))
    return workers if tasks is None else max(1, min(workers, tasks))


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` group (from its environment variables).

    Attributes:
        rank: global rank (``RANK``).
        world_size: processes in the group (``WORLD_SIZE``).
        local_rank: rank on this machine (``LOCAL_RANK``); its CUDA device index.
    """

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the entry's outputs."""
        return self.rank == 0

    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else the CPU (``LANDSCAPE_DEVICE`` wins)."""
        if os.environ.get("LANDSCAPE_DEVICE"):
            return torch.device(os.environ["LANDSCAPE_DEVICE"])
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def backend(self, device: torch.device) -> str:
        """NCCL for CUDA devices, gloo for the CPU."""
        return "nccl" if device.type == "cuda" else "gloo"


def distributed_context() -> DistributedContext | None:
    """The ``torchrun`` context when ``WORLD_SIZE`` > 1, else None (a plain process).

    Raises:
        ValueError: ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` is not a valid integer.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"torchrun environment is incomplete or not integer (WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
            f"RANK={os.environ.get('RANK')!r}, LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}): {exc}"
        ) from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    return DistributedContext(rank=rank, world_size=world, local_rank=local)


@contextlib.contextmanager
def process_group(world: DistributedContext, device: torch.device, timeout_s: float = 1800.0) -> Iterator[None]:
    """The default ``torch.distributed`` group of a ``torchrun`` entry for the block's duration.

    Initialised from ``torchrun``'s environment (``env://``: ``MASTER_ADDR``, ``MASTER_PORT``,
    ``RANK``, ``WORLD_SIZE``) with NCCL on CUDA devices and gloo on the CPU, and destroyed on
    exit. An already initialised group (a caller's) is used as it is and left alone.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(world.backend(device), init_method="env://", rank=world.rank, world_size=world.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()
