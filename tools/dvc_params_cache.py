"""Opt-in: parse an unchanged params file once per DVC process, so a no-op ``dvc repro`` stays fast.

``dvc status`` and ``dvc repro`` compare every stage entry's params with ``dvc.lock`` by
parsing the params file once per entry (``dvc.dependency.param.read_param_file`` calls
``load_path``). With this pipeline's ~200 entries that is ~200 parses of the same
``params.yaml``: about half of a no-op ``dvc repro`` (measured: 15 s -> 8 s with both parts).

Nothing installs this by default: it patches private DVC internals. Opt in per virtual
environment with ``make fast-dvc`` (``python -m tools.dvc_params_cache enable``), which writes
``landscape_dvc_params_cache.pth`` into the environment's site-packages; every interpreter of
that environment then loads this file by its absolute path and calls :func:`install`.
``make slow-dvc`` (``... disable``) removes it; ``... status`` says whether it is on.
``LANDSCAPE_DVC_PARAMS_CACHE=0`` turns an enabled hook off for one command.

:func:`install` only registers an import hook; when (and only if) DVC imports
``dvc.dependency.param``, the hook first compares ``dvc.__version__`` with the version pinned
in ``constraints.txt``. On any other version it patches nothing and prints one warning line
to stderr naming both versions (the internals it relies on may have changed); on the pinned
version it replaces that module's ``load_path`` by :func:`memoize_load_path` of it. The memo
is keyed by the file's absolute path, size and ``st_mtime_ns``, so an edited file is always
parsed afresh; it hands out deep copies, so a caller that mutates its result cannot change
another's; and it caches only files on the local filesystem (params of another git revision
go through DVC's reader unchanged).

The hook also gives that module a faster ``dpath.get``. DVC looks each listed param key up
with ``dpath.get(config, "a.b.c", separator=".")``, which walks every node of the whole
params tree to match the key as a glob: ~7 ms per key on this ``params.yaml``, 3.6 s of a
no-op ``dvc repro`` (483 lookups). :func:`get_param` descends the key's segments directly
when the key has no glob characters and every segment names a dict key or a list index, and
hands everything else to ``dpath.get`` itself, so its answers are dpath's.
"""

from __future__ import annotations

import argparse
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["memoize_load_path", "get_param", "pinned_dvc_version", "install", "enable", "disable", "PTH_NAME"]

_TARGET = "dvc.dependency.param"
_GLOB_CHARS = frozenset("*?[]!")
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
PTH_NAME = "landscape_dvc_params_cache.pth"
"""The file ``enable`` writes into site-packages (``make setup`` writes none)."""
OFF_SWITCH = "LANDSCAPE_DVC_PARAMS_CACHE"


def memoize_load_path(load_path: Callable[..., Any]) -> Callable[..., Any]:
    """``load_path(fs_path, fs, **kwargs)`` with a stat-keyed memo for local files."""
    cache: dict[tuple, Any] = {}

    def cached_load_path(fs_path: str, fs: Any, **kwargs: Any) -> Any:
        if getattr(fs, "protocol", None) != "local" or kwargs:
            return load_path(fs_path, fs, **kwargs)
        try:
            st = os.stat(fs_path)
        except OSError:
            return load_path(fs_path, fs, **kwargs)  # DVC raises its own error for a missing file
        key = (os.path.abspath(fs_path), st.st_size, st.st_mtime_ns)
        if key not in cache:
            cache[key] = load_path(fs_path, fs)
        return copy.deepcopy(cache[key])

    cached_load_path.__wrapped__ = load_path  # type: ignore[attr-defined]
    return cached_load_path


def get_param(obj: Any, glob: str, separator: str = "/", **kwargs: Any) -> Any:
    """``dpath.get(obj, glob, separator, ...)``: a direct descent for a plain key path, else dpath."""
    import dpath

    segments = glob.split(separator) if isinstance(glob, str) and not _GLOB_CHARS.intersection(glob) else [""]
    if kwargs or not all(segments):  # a glob, a non-string path, or an empty segment ("", ".a", "a..b")
        return dpath.get(obj, glob, separator=separator, **kwargs)
    node = obj
    for segment in segments:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and str(int(segment)) == segment and int(segment) < len(node):
            node = node[int(segment)]  # a canonical index ("1", not "01"), as dpath matches str(index)
        else:  # missing, a non-string key, a scalar: dpath decides (and raises KeyError if absent)
            return dpath.get(obj, glob, separator=separator)
    return node


class _DpathWithFastGet:
    """The ``dpath`` module as seen by ``dvc.dependency.param``, with :func:`get_param` as ``get``."""

    def __init__(self, module: Any):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    get = staticmethod(get_param)


def pinned_dvc_version(constraints: Path = CONSTRAINTS) -> str | None:
    """The ``dvc==X`` version pinned in ``constraints``; None when absent or unreadable."""
    try:
        lines = constraints.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, version = line.split("#", 1)[0].partition("==")
        if sep and name.strip().lower() == "dvc":
            return version.strip()
    return None


def _patch(module: Any, dvc_version: str, pinned: str | None) -> bool:
    """Patch ``module`` (DVC's ``dvc.dependency.param``) if ``dvc_version`` is ``pinned``; else warn once."""
    if dvc_version != pinned:
        print(f"warning: DVC params cache (tools/dvc_params_cache.py) not installed: dvc {dvc_version} is not the "
              f"pinned dvc {pinned} of constraints.txt; DVC runs unpatched", file=sys.stderr)
        return False
    module.load_path = memoize_load_path(module.load_path)
    module.dpath = _DpathWithFastGet(module.dpath)
    return True


def _patch_guarded(module: Any) -> bool:
    if hasattr(module.load_path, "__wrapped__"):  # patched already (by another copy of this file)
        return True
    dvc = sys.modules.get("dvc")
    return _patch(module, str(getattr(dvc, "__version__", "unknown")), pinned_dvc_version())


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``dvc.dependency.param`` to patch it after execution."""

    landscape_dvc_params_cache = True  # marks the hook whichever copy of this file registered it

    def find_spec(self, name: str, path: Sequence[str] | None,  # noqa: ARG002  (MetaPathFinder's signature)
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:  # noqa: ARG002
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _patch_guarded(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register the hook (idempotent; the version check runs when DVC loads its params module).

    A no-op when ``LANDSCAPE_DVC_PARAMS_CACHE=0``.
    """
    if os.environ.get(OFF_SWITCH, "1") == "0":
        return
    if _TARGET in sys.modules:  # DVC already imported: patch in place
        _patch_guarded(sys.modules[_TARGET])
        return
    if not any(getattr(f, "landscape_dvc_params_cache", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def pth_line(module_file: Path) -> str:
    """The ``.pth`` line that loads ``module_file`` by path and calls its ``install()`` (nothing if it is gone)."""
    path = str(Path(module_file).resolve())
    return ("import os, sys, importlib.util as u; p = " + repr(path) + "; "
            "s = os.path.isfile(p) and u.spec_from_file_location('landscape_dvc_params_cache', p); "
            "m = s and u.module_from_spec(s); "
            "m and (sys.modules.setdefault(s.name, m), s.loader.exec_module(m), m.install())\n")


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def enable(site_packages: Path | None = None) -> Path:
    """Write :data:`PTH_NAME` into ``site_packages`` (default: this interpreter's); returns its path.

    Raises:
        RuntimeError: when the installed DVC is not the version pinned in constraints.txt.
    """
    import dvc

    pinned = pinned_dvc_version()
    if dvc.__version__ != pinned:
        raise RuntimeError(f"dvc {dvc.__version__} is installed, constraints.txt pins dvc {pinned}: the cache "
                           "patches DVC internals and supports only the pinned version")
    target = (site_packages or _site_packages()) / PTH_NAME
    target.write_text(pth_line(Path(__file__)))
    return target


def disable(site_packages: Path | None = None) -> Path | None:
    """Remove :data:`PTH_NAME` from ``site_packages``; returns the removed path, or None if absent."""
    target = (site_packages or _site_packages()) / PTH_NAME
    if not target.exists():
        return None
    target.unlink()
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.dvc_params_cache {enable,disable,status}``."""
    parser = argparse.ArgumentParser(description="Opt-in DVC params cache for this virtual environment.")
    parser.add_argument("action", choices=["enable", "disable", "status"])
    action = parser.parse_args(argv).action
    if action == "enable":
        try:
            print(f"DVC params cache enabled: {enable()} ({OFF_SWITCH}=0 turns it off per command)")
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    elif action == "disable":
        removed = disable()
        print(f"DVC params cache disabled: removed {removed}" if removed else "DVC params cache was not enabled")
    else:
        on = (_site_packages() / PTH_NAME).exists()
        print(f"DVC params cache: {'enabled' if on else 'disabled'} ({_site_packages() / PTH_NAME}); "
              f"pinned dvc {pinned_dvc_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
