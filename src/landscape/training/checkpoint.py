"""Atomic training checkpoints: everything needed to resume bit-identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from landscape.io import torch_save

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "save_snapshot", "list_snapshots", "clear_snapshots"]

CHECKPOINT_NAME = "last.pt"
SNAPSHOT_PATTERN = "snapshot_epoch*.pt"


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/last.pt`` atomically and return the path.

    A process killed mid-write leaves the previous checkpoint intact.
    """
    path = Path(directory) / CHECKPOINT_NAME
    torch_save(path, state)
    return path


def load_checkpoint(directory: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """Load ``directory/last.pt`` if it exists and was written for the same run.

    Args:
        directory: checkpoint directory of the run.
        fingerprint: identity of the run (config, seed, data hash); a checkpoint written
            for another fingerprint is ignored, so an edited config never resumes from a
            stale state.

    Returns:
        The checkpoint dictionary, or ``None`` when there is nothing to resume.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None
    return state


def save_snapshot(directory: str | Path, epoch: int, state_dict: dict[str, Any]) -> Path:
    """Keep the weights after ``epoch`` epochs as ``snapshot_epochNNNN.pt`` (atomic)."""
    path = Path(directory) / f"snapshot_epoch{epoch:04d}.pt"
    torch_save(path, {"epoch": epoch, "state_dict": state_dict})
    return path


def list_snapshots(directory: str | Path) -> list[Path]:
    """Snapshot files of a run, in epoch order."""
    return sorted(Path(directory).glob(SNAPSHOT_PATTERN))


def clear_snapshots(directory: str | Path) -> None:
    """Remove the snapshots of a previous (different) run before a fresh start."""
    for path in list_snapshots(directory):
        path.unlink()
