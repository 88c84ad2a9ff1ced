"""The params-file memo behind a fast no-op `dvc repro`: same answers as DVC's reader, edits always seen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dpath
import pytest
import yaml

from landscape._dvc_params_cache import get_param, memoize_load_path

SRC = Path(__file__).resolve().parents[1] / "src"


class _GitFS:
    protocol = "git"


def test_unchanged_file_parsed_once_edits_seen_and_copies_handed_out(tmp_path):
    from dvc.utils.serialize import load_path

    calls = []

    def counting(fs_path, fs, **kwargs):
        calls.append(fs_path)
        return load_path(fs_path, fs, **kwargs) if fs.protocol == "local" else {"from": fs.protocol}

    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    params = tmp_path / "params.yaml"
    params.write_text("a: {b: 1, c: [1, 2]}\n")
    cached = memoize_load_path(counting)
    first = cached(str(params), fs)
    first["a"]["c"].append(3)  # a caller mutating its result changes nobody else's
    assert cached(str(params), fs) == {"a": {"b": 1, "c": [1, 2]}} == load_path(str(params), fs)
    assert len(calls) == 1
    params.write_text("a: {b: 2, c: [1, 2]}\n")
    os.utime(params, ns=(params.stat().st_atime_ns, params.stat().st_mtime_ns + 1_000_000))
    assert cached(str(params), fs)["a"]["b"] == 2 and len(calls) == 2
    for expected_calls in (3, 4):  # another filesystem (a git revision): never cached
        assert cached(str(params), _GitFS()) == {"from": "git"} and len(calls) == expected_calls


def _patched_in_fresh_interpreter(env: dict[str, str]) -> str:
    code = ("import landscape._dvc_params_cache, dvc.dependency.param as p; "
            "print(hasattr(p.load_path, '__wrapped__') and p.dpath.get.__name__ == 'get_param')")
    env = {**os.environ, **env, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_hook_patches_dvc_on_import_and_can_be_turned_off():
    assert _patched_in_fresh_interpreter({}) == "True"
    assert _patched_in_fresh_interpreter({"LANDSCAPE_DVC_PARAMS_CACHE": "0"}) == "False"


def _key_paths(node, prefix=()):
    """Every dict-key / list-index path of a parsed YAML tree, inner nodes included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        path = (*prefix, str(key))
        yield ".".join(path)
        yield from _key_paths(child, path)


@pytest.mark.parametrize("name", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_fast_get_answers_as_dpath_for_every_key_of_the_params_files(name):
    config = yaml.safe_load((SRC.parent / name).read_text())
    keys = list(_key_paths(config))
    assert len(keys) > 200
    for key in keys:
        assert get_param(config, key, separator=".") is dpath.get(config, key, separator="."), key


def _dpath_outcome(obj, key):
    try:
        return "value", dpath.get(obj, key, separator=".")
    except (KeyError, ValueError) as exc:
        return "error", type(exc)


@pytest.mark.parametrize("key", ["a.b", "a.missing", "a.b.c", "l.1", "l.01", "l.5", "l.-1", "n.1", "*.b", "a.*",
                                 "a.[bc]", "", ".a", "a..b", "a.b.0", "d.x.y"])
def test_fast_get_defers_to_dpath_off_the_plain_path(key):
    # int dict keys, zero-padded and negative list indices, globs, empty segments, scalars
    obj = {"a": {"b": 1, "c": 2}, "l": [10, 20], "n": {1: "one"}, "d": {"x": {"y": None}}}
    try:
        ours = "value", get_param(obj, key, separator=".")
    except (KeyError, ValueError) as exc:
        ours = "error", type(exc)
    assert ours == _dpath_outcome(obj, key)
