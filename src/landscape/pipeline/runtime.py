"""Process settings of a stage entry: deterministic torch, its device, its worker count."""

from __future__ import annotations

import os

import torch

from landscape.reproducibility import check_cpu_kernels

__all__ = ["configure_torch", "pick_device", "cpu_workers"]


def configure_torch() -> None:
    """Deterministic algorithms, pinned CPU kernels (checked) and a fixed CPU thread count
    (``LANDSCAPE_THREADS``, default 1).

    One thread by default: small models gain little from more on a 2-core machine, and a
    fixed count keeps CPU results bit-identical across machines with different core counts.
    """
    check_cpu_kernels()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(int(os.environ.get("LANDSCAPE_THREADS", "1")))


def pick_device() -> torch.device:
    """``LANDSCAPE_DEVICE`` if set, else CUDA when available, else CPU."""
    return torch.device(os.environ.get("LANDSCAPE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


def cpu_workers(device: torch.device | str, tasks: int | None = None) -> int:
    """Forked worker processes for a stage's independent tasks: ``LANDSCAPE_WORKERS``
    (default: the CPU count, at most 2) on the CPU, capped at ``tasks``; 1 on an accelerator
    (forked workers cannot share a CUDA context)."""
    if getattr(device, "type", str(device)) != "cpu":
        return 1
    default = min(2, os.cpu_count() or 1)
    workers = max(1, int(os.environ.get("LANDSCAPE_WORKERS", default)))
    return workers if tasks is None else max(1, min(workers, tasks))
