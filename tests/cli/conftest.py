"""The ``landscape`` console script, installed into a fresh virtual environment, run as a subprocess.

How the environment is made (once per test session and worker, about 10 s):

1. ``python -m venv --without-pip`` from the base interpreter of the test run: an empty venv.
2. Its site-packages receives symbolic links to exactly the distributions that
   ``pyproject.toml``'s ``[project] dependencies`` require, transitively (environment markers
   evaluated, requested extras followed), taken from the development ``.venv`` where they are
   already installed. Nothing else is visible: no pytest, ruff, mypy, pip or the checkout's
   ``src/``. (Links, not copies: installing torch and its CUDA wheels again would take minutes.)
3. The project is built as a wheel from a copy of ``pyproject.toml`` and ``src/`` (pip wheel,
   no dependencies, no build isolation) and installed into the venv from that wheel, not
   editable, with the development pip acting on the venv's interpreter (``pip --python``).
4. ``pip check`` in the venv must find every declared requirement satisfied.

The tests then run ``<venv>/bin/landscape`` (the console script pip generated from
``[project.scripts]``) in a scratch directory, with no ``PYTHONPATH``, an empty Hugging Face
cache, ``HF_HUB_OFFLINE=1``, one CPU thread and bytecode caching on (as ``make`` runs).
The bad-input checks that stop before any computation call the script's entry point,
``landscape.cli.main``, in the test process instead (``cli_helpers.run_main``: the same exit
code and streams, without a fresh interpreter's 3.5 s of imports each).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from cli_helpers import REPO, save_run_checkpoint, tiny_mlp
from packaging.requirements import Requirement

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_closure() -> list[md.Distribution]:
    """Installed distributions that the project's declared dependencies need, transitively."""
    installed: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        installed.setdefault(_norm(dist.metadata["Name"]), dist)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted: dict[str, set[str]] = {}  # name -> extras requested of it
    todo = [Requirement(r) for r in project["dependencies"]]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _norm(req.name)
        known = wanted.get(key)
        if known is not None and set(req.extras) <= known:
            continue
        extras = (known or set()) | set(req.extras)
        wanted[key] = extras
        if key not in installed:
            raise RuntimeError(f"declared requirement {req} is not installed in {sys.prefix}")
        for text in installed[key].requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *sorted(extras))):
                todo.append(Requirement(str(sub).split(";")[0]))
    return [installed[k] for k in sorted(wanted)]


def _top_levels(dist: md.Distribution) -> set[str]:
    """First path components of a distribution's files inside site-packages (its packages,
    modules, extension libraries and its .dist-info directory)."""
    tops = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if parts and parts[0] not in ("..", "__pycache__"):
            tops.add(parts[0])
    if not dist.files:
        tops.update((dist.read_text("top_level.txt") or "").split())
        tops.add(Path(str(dist._path)).name)  # type: ignore[attr-defined]
    return tops


@dataclasses.dataclass(frozen=True)
class CliEnv:
    """The fresh venv: its ``landscape`` script and the environment to run it in."""

    root: Path
    python: Path
    script: Path
    env: dict[str, str]

    def run(self, *args: str | os.PathLike, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """``landscape ARGS`` in ``cwd``; ``env`` entries override the venv's environment."""
        return subprocess.run([str(self.script), *map(str, args)], cwd=cwd, env=self.env | (env or {}), capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> CliEnv:
    root = tmp_path_factory.mktemp("cli_venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    site = Path(purelib)
    for dist in declared_closure():
        base = Path(str(dist.locate_file("")))
        for top in _top_levels(dist):
            link, target = site / top, base / top
            if target.exists() and not link.exists():
                link.symlink_to(target, target_is_directory=target.is_dir())
    build = root / "build"
    build.mkdir()
    shutil.copy2(REPO / "pyproject.toml", build / "pyproject.toml")
    shutil.copytree(REPO / "src" / "landscape", build / "src" / "landscape", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(build)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("landscape-*.whl")
    subprocess.run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", "--no-compile", str(wheel)],
                   check=True, capture_output=True)
    checked = subprocess.run([*pip, "--python", str(python), "check"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"the fresh venv misses declared requirements:\n{checked.stdout}{checked.stderr}"
    # PYTHONDONTWRITEBYTECODE goes, as in the Makefile: with it every run compiled torch, timm and torchvision from source
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]), HF_HUB_OFFLINE="1",
               HF_HOME=str(root / "hf_home"), HF_HUB_CACHE=str(root / "hf_home" / "hub"), OMP_NUM_THREADS="1")
    return CliEnv(root=root, python=python, script=venv / "bin" / "landscape", env=env)


@pytest.fixture(scope="session")
def tiny_problem(tmp_path_factory) -> dict[str, Path]:
    """A data file (40 examples, 4 features, 3 classes, float64) and checkpoints of tiny MLPs."""
    root = tmp_path_factory.mktemp("cli_problem")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.save({"inputs": x, "targets": y}, root / "data.pt")
    save_run_checkpoint(root / "model.pt", tiny_mlp(0))
    torch.save(tiny_mlp(1).state_dict(), root / "state_dict.pt")
    torch.save(tiny_mlp(2, width=7).state_dict(), root / "wide.pt")
    torch.save((torch.randn(40, 5, generator=g, dtype=torch.float64), y), root / "five_features.pt")
    return {"root": root, "data": root / "data.pt", "model": root / "model.pt", "state_dict": root / "state_dict.pt",
            "wide": root / "wide.pt", "five_features": root / "five_features.pt"}
