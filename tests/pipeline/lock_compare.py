"""Compare the outputs two runs recorded in their dvc.lock, file by file, through the DVC cache.

Two runs of an entry give the same bytes except where a file records wall-clock time: the
train checkpoint's history, DVCLive's ``epoch_time_s`` curve and summary, and the measure
entry's timings. Those files must agree once the timing fields are dropped; every other
file's md5 must be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

TIMING_KEYS = frozenset({"wall_time_s", "timings_s", "epoch_time_s", "cpu_time_s"})
"""Fields that hold wall-clock seconds (checkpoints' history rows, curvature.json, DVCLive's summary)."""
TIMED_FILES = ("checkpoints/last.pt", "dvclive/metrics.json", "dvclive/plots/metrics/epoch_time_s.tsv", "curvature.json")


def pipeline_entries(repo: Path) -> set[str]:
    """Names of the entries of ``repo``'s dvc.yaml (its dvc.lock may also hold entries of another profile)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def lock_outs(repo: Path, names: set[str]) -> dict[str, str]:
    """``{output path: md5}`` of the entries ``names`` of ``repo``'s dvc.lock."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for name, st in stages.items() if name in names for o in st.get("outs", [])}


def files_of(repo: Path, path: str, md5: str) -> dict[str, str]:
    """``{file: md5}`` of one output (a directory's listing comes from the cache's ``.dir`` object)."""
    if not md5.endswith(".dir"):
        return {path: md5}
    listing = json.loads((repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_text())
    return {f"{path}/{row['relpath']}": row["md5"] for row in listing}


def _drop_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_drop_timings(v) for v in obj]
    return obj


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_but_timings(a: Path, b: Path) -> bool:
    """Whether two versions of a timed file agree in everything but wall-clock fields."""
    if a.suffix == ".json":
        return _drop_timings(json.loads(a.read_text())) == _drop_timings(json.loads(b.read_text()))
    if a.suffix == ".pt":
        load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
        return _equal(_drop_timings(load(a)), _drop_timings(load(b)))
    if a.suffix == ".tsv":  # the curve of the timings themselves: the same steps
        col = lambda p: [line.split("\t")[0] for line in p.read_text().splitlines()]  # noqa: E731
        return col(a) == col(b)
    raise ValueError(f"no timing rule for {a}")


def compare_outputs(local: Path, other: Path, names: set[str]) -> tuple[int, list[str]]:
    """Number of files the entries ``names`` wrote, and the differences between two runs (empty:
    every md5 equal but the timed files', which agree without their timings; those are read
    from the workspaces)."""
    ours, theirs = lock_outs(local, names), lock_outs(other, names)
    problems = [f"{p}: output of one run only" for p in sorted(set(ours) ^ set(theirs))]
    count = 0
    for path in sorted(set(ours) & set(theirs)):
        a, b = files_of(local, path, ours[path]), files_of(other, path, theirs[path])
        problems += [f"{f}: file of one run only" for f in sorted(set(a) ^ set(b))]
        for f in sorted(set(a) & set(b)):
            count += 1
            if a[f] == b[f]:
                continue
            if not f.endswith(TIMED_FILES):
                problems.append(f"{f}: md5 {a[f]} != {b[f]}")
            elif not same_but_timings(local / f, other / f):
                problems.append(f"{f}: differs beyond its wall-clock timings")
    return count, problems
