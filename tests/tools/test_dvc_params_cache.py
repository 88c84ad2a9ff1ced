"""The opt-in params-file memo behind a fast no-op `dvc repro`: same answers as DVC's reader, edits
always seen, installed only on the pinned DVC version and only where a user enabled it."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import dpath
import pytest
import yaml

from tools import dvc_params_cache
from tools.dvc_params_cache import get_param, memoize_load_path

ROOT = Path(__file__).resolve().parents[2]


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


_PATCHED = "print(hasattr(p.load_path, '__wrapped__') and p.dpath.get.__name__ == 'get_param')"


def _fresh_interpreter(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def _patched_in_fresh_interpreter(env: dict[str, str]) -> str:
    code = f"import tools.dvc_params_cache as c; c.install(); import dvc.dependency.param as p; {_PATCHED}"
    return _fresh_interpreter(code, env).stdout.strip()


def test_hook_patches_dvc_on_import_and_can_be_turned_off():
    assert _patched_in_fresh_interpreter({}) == "True"
    assert _patched_in_fresh_interpreter({"LANDSCAPE_DVC_PARAMS_CACHE": "0"}) == "False"


def test_nothing_is_patched_unless_installed():
    """Importing the module (as tests do) installs nothing: the hook is opt-in."""
    code = f"import tools.dvc_params_cache; import dvc.dependency.param as p; {_PATCHED}"
    assert _fresh_interpreter(code).stdout.strip() == "False"


def test_pinned_version_is_read_from_constraints(tmp_path):
    pinned = dvc_params_cache.pinned_dvc_version()
    assert pinned is not None and f"dvc=={pinned}" in (ROOT / "constraints.txt").read_text().splitlines()
    other = tmp_path / "constraints.txt"
    other.write_text("dvc-data==3.18.3\n  DVC == 9.9.9  # pinned\n")
    assert dvc_params_cache.pinned_dvc_version(other) == "9.9.9"
    assert dvc_params_cache.pinned_dvc_version(tmp_path / "missing.txt") is None


def test_other_dvc_version_is_refused_with_one_warning_naming_both(capsys):
    def load_path(fs_path, fs):
        return {}

    module = types.SimpleNamespace(load_path=load_path, dpath=dpath)
    assert not dvc_params_cache._patch(module, "3.0.0", "3.67.1")
    assert module.load_path is load_path and module.dpath is dpath  # untouched
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "dvc 3.0.0" in err and "pinned dvc 3.67.1" in err
    assert dvc_params_cache._patch(module, "3.67.1", "3.67.1") and module.load_path.__wrapped__ is load_path
    assert capsys.readouterr().err == ""


def test_hook_refuses_another_installed_dvc_in_a_fresh_interpreter():
    pinned = dvc_params_cache.pinned_dvc_version()
    code = ("import dvc; dvc.__version__ = '0.0.1'; import tools.dvc_params_cache as c; c.install(); "
            f"import dvc.dependency.param as p; {_PATCHED}")
    proc = _fresh_interpreter(code)
    assert proc.stdout.strip() == "False"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "dvc 0.0.1" in warnings[0] and f"pinned dvc {pinned}" in warnings[0], proc.stderr


def test_enable_writes_a_pth_that_installs_the_hook_and_disable_removes_it(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    pth = dvc_params_cache.enable(site)
    assert pth == site / dvc_params_cache.PTH_NAME
    code = f"import site; site.addsitedir({str(site)!r}); import dvc.dependency.param as p; {_PATCHED}"
    assert _fresh_interpreter(code).stdout.strip() == "True"
    assert _fresh_interpreter(code, {"LANDSCAPE_DVC_PARAMS_CACHE": "0"}).stdout.strip() == "False"
    assert dvc_params_cache.disable(site) == pth and not pth.exists()
    assert dvc_params_cache.disable(site) is None
    assert _fresh_interpreter(code).stdout.strip() == "False"


def test_make_setup_writes_no_pth_and_fast_dvc_is_the_opt_in():
    recipes = {}  # target -> its recipe lines
    for block in (ROOT / "Makefile").read_text().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("#")]
        if lines and ":" in lines[0] and not lines[0].startswith("\t"):
            recipes[lines[0].split(":")[0]] = [line.strip() for line in lines[1:] if line.startswith("\t")]
    assert recipes["$(STAMP)"] and not any(".pth" in line and ">" in line for line in recipes["$(STAMP)"])
    assert recipes["fast-dvc"] == ["$(BIN)/python -m tools.dvc_params_cache enable"]
    assert recipes["slow-dvc"] == ["$(BIN)/python -m tools.dvc_params_cache disable"]


def _key_paths(node, prefix=()):
    """Every dict-key / list-index path of a parsed YAML tree, inner nodes included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        path = (*prefix, str(key))
        yield ".".join(path)
        yield from _key_paths(child, path)


@pytest.mark.parametrize("name", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_fast_get_answers_as_dpath_for_every_key_of_the_params_files(name):
    config = yaml.safe_load((ROOT / name).read_text())
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
