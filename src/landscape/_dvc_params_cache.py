"""Parse an unchanged params file once per DVC process, so a no-op ``dvc repro`` stays fast.

``dvc status`` and ``dvc repro`` compare every stage entry's params with ``dvc.lock`` by
parsing the params file once per entry (``dvc.dependency.param.read_param_file`` calls
``load_path``). With this pipeline's ~200 entries that is ~200 parses of the same
``params.yaml``: about half of a no-op ``dvc repro`` (measured: 19 s -> 10 s).

``make setup`` writes a ``.pth`` file into the virtual environment that imports this module
at interpreter start-up. Importing it only registers an import hook; when (and only if) DVC
imports ``dvc.dependency.param``, the hook replaces that module's ``load_path`` by
:func:`memoize_load_path` of it. The memo is keyed by the file's absolute path, size and
``st_mtime_ns``, so an edited file is always parsed afresh; it hands out deep copies, so a
caller that mutates its result cannot change another's; and it caches only files on the
local filesystem (params of another git revision go through DVC's reader unchanged). Set
``LANDSCAPE_DVC_PARAMS_CACHE=0`` to turn it off.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.util
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["memoize_load_path", "install"]

_TARGET = "dvc.dependency.param"


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


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``dvc.dependency.param`` to patch it after execution."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
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
            module.load_path = memoize_load_path(module.load_path)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register the hook (idempotent); a no-op when ``LANDSCAPE_DVC_PARAMS_CACHE=0``."""
    if os.environ.get("LANDSCAPE_DVC_PARAMS_CACHE", "1") == "0":
        return
    if _TARGET in sys.modules:  # DVC already imported: patch in place
        module = sys.modules[_TARGET]
        if not hasattr(module.load_path, "__wrapped__"):
            module.load_path = memoize_load_path(module.load_path)
        return
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


install()
