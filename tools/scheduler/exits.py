"""How a command ended: the signal that killed it, read from its exit status (standard library only,
so the coordinator imports it without submitit and a cluster job imports it with nothing else)."""

from __future__ import annotations

__all__ = ["killed_signal"]


def killed_signal(code: int) -> int | None:
    """The signal that ended a command with exit status ``code`` (``-N`` from Python's
    subprocess, ``128 + N`` from a shell whose child it killed), else None."""
    if code < 0:
        return -code
    if 128 < code <= 128 + 64:
        return code - 128
    return None
