"""Runs stale, independent DVC stage entries in waves, N at a time (see :mod:`tools.scheduler.prerun`).

``python -m tools.scheduler [--jobs 2] [--no-preload] [WAVE ...]`` from the repo root; plain
``python`` stage commands run in forks of one pre-imported interpreter (:mod:`tools.scheduler.zygote`).
"""

from tools.scheduler.prerun import DEFAULT_PRELOAD, DEFAULT_WAVES, WaveResult, prerun

__all__ = ["DEFAULT_PRELOAD", "DEFAULT_WAVES", "WaveResult", "prerun"]
