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

The hook also gives that module a faster ``dpath.get``. DVC looks each listed param key up
with ``dpath.get(config, "a.b.c", separator=".")``, which walks every node of the whole
params tree to match the key as a glob: ~7 ms per key on this ``params.yaml``, 3.6 s of a
no-op ``dvc repro`` (483 lookups). :func:`get_param` descends the key's segments directly
when the key has no glob characters and every segment names a dict key or a list index, and
hands everything else to ``dpath.get`` itself, so its answers are dpath's.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["memoize_load_path", "get_param", "install"]

_TARGET = "dvc.dependency.param"
_GLOB_CHARS = frozenset("*?[]!")


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


def _patch(module: Any) -> None:
    module.load_path = memoize_load_path(module.load_path)
    module.dpath = _DpathWithFastGet(module.dpath)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``dvc.dependency.param`` to patch it after execution."""

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
            _patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register the hook (idempotent); a no-op when ``LANDSCAPE_DVC_PARAMS_CACHE=0``."""
    if os.environ.get("LANDSCAPE_DVC_PARAMS_CACHE", "1") == "0":
        return
    if _TARGET in sys.modules:  # DVC already imported: patch in place
        module = sys.modules[_TARGET]
        if not hasattr(module.load_path, "__wrapped__"):
            _patch(module)
        return
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


install()
