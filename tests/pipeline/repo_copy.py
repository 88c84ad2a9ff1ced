"""Helpers of the end-to-end tests: a temporary git copy of this repo on one profile (`ci`,
`paper_smoke`), and subprocess wrappers for its stages and DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}:{out['PATH']}"
    out["OMP_NUM_THREADS"] = "1"
    out.pop("DVC_ROOT", None)
    return out


def run(args: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def edit_params(repo: Path, edit: Callable[[dict], object]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_on_ci_profile(dest: Path) -> Path:
    """:func:`copy_on_profile` with the ``ci`` profile."""
    return copy_on_profile(dest, "ci")


def copy_on_profile(dest: Path, profile: str, before_commit: Callable[[Path], object] | None = None) -> Path:
    """Tracked and untracked (not ignored) files of this checkout, without results, committed
    to a fresh git repo at ``dest`` with ``profiles/<profile>.yaml`` as params.yaml and its
    generated dvc.yaml. ``before_commit(dest)`` may add files first (data). Not validated here:
    every caller runs the ``validate`` stage first (the scheduler's first wave), as ``make repro`` does."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith(("reports/", "runs/", "data/")):
            dst = dest / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    shutil.copy2(dest / "profiles" / f"{profile}.yaml", dest / "params.yaml")
    run([sys.executable, "-m", "landscape.pipeline.dvcfile"], dest)  # as `make profile PROFILE=<profile>`
    if before_commit is not None:
        before_commit(dest)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ci copy", "--allow-empty"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"{profile} profile"], dest)
    return dest


@contextmanager
def restored(repo: Path, *dirs: Path) -> Iterator[None]:
    """Put ``dirs``, ``dvc.lock``, ``dvc.yaml`` and ``params.yaml`` back as they were on exit: tests share
    a repo, and one that reruns entries must leave it as it found it for the next."""
    backup = repo.parent / f"backup-{time.monotonic_ns()}"
    backup.mkdir()
    for path in dirs:
        shutil.copytree(path, backup / path.relative_to(repo))
    for name in ("dvc.lock", "dvc.yaml", "params.yaml"):
        shutil.copy2(repo / name, backup / name)
    try:
        yield
    finally:
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(backup / path.relative_to(repo), path)
        for name in ("dvc.lock", "dvc.yaml", "params.yaml"):
            shutil.copy2(backup / name, repo / name)
        shutil.rmtree(backup)
