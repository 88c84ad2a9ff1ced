"""Helpers of the end-to-end tests: a temporary git copy of this repo on one profile (`ci`,
`paper_smoke`), the fully built ones shared by the modules of a test run, and subprocess
wrappers for its stages and DVC."""

from __future__ import annotations

import dataclasses
import fcntl
import json
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


def measure_entries(params: dict) -> set[str]:
    """The ``measure_<group>@<config>`` entries of a profile's params."""
    return {f"measure_{exp}@{cfg}" for exp, spec in params["experiments"].items() if exp in params["curvature"]
            for cfg in spec["configs"] or {}}


def copy_on_ci_profile(dest: Path) -> Path:
    """:func:`copy_on_profile` with the ``ci`` profile."""
    return copy_on_profile(dest, "ci")


def copy_on_profile(dest: Path, profile: str, before_commit: Callable[[Path], object] | None = None) -> Path:
    """Tracked and untracked (not ignored) files of this checkout, without results (nor the default
    profile's dvc.lock: its ~430 entries of other stages made every lock write of DVC's 7x slower), committed
    to a fresh git repo at ``dest`` with ``profiles/<profile>.yaml`` as params.yaml and its
    generated dvc.yaml. ``before_commit(dest)`` may add files first (data). Not validated here:
    every caller runs the ``validate`` stage first (the scheduler's first wave), as ``make repro`` does."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith(("reports/", "runs/", "data/")) and rel != "dvc.lock":
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


# ---------------------------------------------------------------------------- built once per run
# The end-to-end repositories (the whole ci profile; the paper_smoke profile) are built once per
# test run, whichever xdist worker asks first, under the workers' common temporary directory;
# each module that changes one works on a private copy (:func:`private_copy`). A worker that
# finds the repository it asked for being built by the other one builds another one that nobody
# has started meanwhile (work it would otherwise wait for), then waits.

#: Examples written per data set of the paper_smoke repo (official train, official test): enough
#: for the largest shrunk batch (the paper's 2048 / 16 = 128) and for the probe subsets (32).
PAPER_DATA_SIZES = {"cifar10": (200, 100), "cifar100": (200, 100), "mnist": (200, 100), "tiny_imagenet": (96, 32)}
TINY_CLASSES = ("n01443537", "n01629819", "n01641577", "n01644900")


def write_paper_data(repo: Path) -> None:
    """The paper profile's on-disk data sets under ``<repo>/data/raw`` (each set's own format)."""
    from data_files import write_cifar10, write_cifar100, write_mnist_family, write_tiny_imagenet, write_wikitext2

    root = repo / "data" / "raw"
    root.mkdir(parents=True)
    sizes = PAPER_DATA_SIZES
    write_cifar10(root, per_batch=sizes["cifar10"][0] // 5, n_test=sizes["cifar10"][1])
    write_cifar100(root, n_train=sizes["cifar100"][0], n_test=sizes["cifar100"][1])
    write_mnist_family(root, "MNIST", n_train=sizes["mnist"][0], n_test=sizes["mnist"][1])
    write_tiny_imagenet(root, per_class_train=sizes["tiny_imagenet"][0] // len(TINY_CLASSES),
                        per_class_val=sizes["tiny_imagenet"][1] // len(TINY_CLASSES), wnids=TINY_CLASSES)
    write_wikitext2(root, lines=40)


def _build_profile(profile: str, before_commit: Callable[[Path], object] | None = None) -> Callable[[Path], dict[str, str]]:
    def build(repo: Path) -> dict[str, str]:
        """As `make repro`: independent entries two at a time (the scheduler), then dvc repro for the rest."""
        started = time.perf_counter()
        copy_on_profile(repo, profile, before_commit)
        copied = time.perf_counter()
        prerun = run([sys.executable, "-m", "tools.scheduler"], repo).stdout
        scheduled = time.perf_counter()
        repro = dvc("repro", cwd=repo).stdout
        done = time.perf_counter()
        return {"prerun": prerun, "repro": repro,
                "seconds": f"copy {copied - started:.0f} s, scheduler {scheduled - copied:.0f} s, dvc repro {done - scheduled:.0f} s"}
    return build


#: name -> builder of the shared repositories (a builder returns its logs, kept beside the repo).
BUILDERS: dict[str, Callable[[Path], dict[str, str]]] = {
    "ci": _build_profile("ci"),
    "paper_smoke": _build_profile("paper_smoke", write_paper_data),
}


@dataclasses.dataclass(frozen=True)
class Built:
    """A shared repository: ``repo`` (do not change it; see :func:`private_copy`) and its build logs."""

    repo: Path
    logs: dict[str, str]


def _shared_root(tmp_path_factory) -> Path:
    base = Path(tmp_path_factory.getbasetemp())
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common directory


def _try_build(root: Path, name: str, blocking: bool) -> bool:
    """Build ``name`` under ``root`` unless it is built (or failed); False when another process holds it."""
    home = root / f"shared-{name}"
    home.mkdir(exist_ok=True)
    with open(home / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        if (home / "logs.json").exists() or (home / "failed.txt").exists():
            return True
        shutil.rmtree(home / "repo", ignore_errors=True)  # a build interrupted earlier
        try:
            logs = BUILDERS[name](home / "repo")
        except BaseException as exc:
            (home / "failed.txt").write_text(f"{type(exc).__name__}: {exc}")
            raise
        (home / "logs.json").write_text(json.dumps(logs))
        return True


def shared_repo(tmp_path_factory, name: str) -> Built:
    """The repository ``name`` of :data:`BUILDERS`, built once for the whole test run."""
    root = _shared_root(tmp_path_factory)
    if not _try_build(root, name, blocking=False):
        for other in BUILDERS:  # being built elsewhere: build one nobody has started meanwhile
            try:
                if other != name and _try_build(root, other, blocking=False):
                    break
            except Exception:  # noqa: BLE001  (recorded in its failed.txt: the module that asks for it reports it)
                break
        _try_build(root, name, blocking=True)
    home = root / f"shared-{name}"
    if (home / "failed.txt").exists():
        raise AssertionError(f"building the shared {name} repository failed: {(home / 'failed.txt').read_text()[-3000:]}")
    return Built(home / "repo", json.loads((home / "logs.json").read_text()))


def private_copy(built: Built, dest: Path) -> Path:
    """A copy of a shared repository (git, DVC cache and all) for a module that changes it."""
    shutil.copytree(built.repo, dest, symlinks=True)
    return dest
