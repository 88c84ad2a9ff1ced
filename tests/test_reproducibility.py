"""Every way a process starts gets the pinned CPU kernels before torch runs anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from landscape.reproducibility import PINNED_CPU_KERNELS, check_cpu_kernels, pin_cpu_kernels, pinning_applies

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p for p in (REPO / "stages").glob("*.py") if not p.name.startswith("_"))

# Runs a script's module level (its imports) with a hook that records the pinned variables
# at the moment torch or numpy is first imported, then stops the script there (what follows
# cannot change what that import saw, and importing torch in each of ~15 processes cost about
# 2 minutes of the suite); ``run_name`` other than __main__ skips main(). A script that never
# imports either runs its module level to the end.
_PROBE = r"""
import importlib.abc, json, os, runpy, sys
seen = {}
class Seen(BaseException):  # past any "except Exception" around an import
    pass
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "numpy") and not seen:
            seen.update({k: os.environ.get(k) for k in %(keys)r})
            raise Seen(name)
        return None
sys.meta_path.insert(0, Hook())
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
try:
    runpy.run_path(sys.argv[1], run_name="imported")
except Seen:
    pass
print(json.dumps(seen))
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_CPU_KERNELS and not k.startswith("LANDSCAPE_")}
    env["PYTHONPATH"] = str(REPO / "src")
    return env


pytestmark = pytest.mark.skipif(not pinning_applies(), reason="kernel pins apply to x86 only")


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.name)
def test_stage_script_pins_kernels_before_torch_or_numpy_is_imported(script: Path) -> None:
    import json

    code = _PROBE % {"keys": sorted(PINNED_CPU_KERNELS)}
    out = subprocess.run([sys.executable, "-c", code, str(script)], env=_clean_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if seen:  # scripts that never import torch or numpy need no pin
        assert seen == PINNED_CPU_KERNELS, f"{script.name} imports torch or numpy before the pins: {seen}"


def test_import_landscape_pins_and_torch_dispatches_avx2() -> None:
    code = "import landscape, os; from landscape.reproducibility import check_cpu_kernels as c; print(c(), os.environ['ONEDNN_MAX_CPU_ISA'])"
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    capability, isa = out.stdout.split()
    assert capability in {"AVX2", "DEFAULT"} and isa == "AVX2"


def test_pins_are_inherited_by_child_processes() -> None:
    code = "import landscape, subprocess, sys; subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"ATEN_CPU_CAPABILITY\"])'])"
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "avx2"


def test_opt_out_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDSCAPE_NATIVE_CPU_KERNELS", "1")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert pin_cpu_kernels() == {}
    assert "ATEN_CPU_CAPABILITY" not in os.environ


def test_this_test_process_runs_pinned() -> None:
    from landscape.reproducibility import numpy_dispatch

    assert check_cpu_kernels() in {"AVX2", "DEFAULT"}
    assert "X86_V4" not in numpy_dispatch() and "AVX512_ICL" not in numpy_dispatch()


def test_numpy_imported_before_the_pins_is_refused() -> None:
    """On an AVX-512 machine numpy imported first keeps its AVX-512 loops: the check says so."""
    code = ("import numpy, landscape\nfrom landscape.reproducibility import check_cpu_kernels, numpy_dispatch\n"
            "print('X86_V4' in numpy_dispatch())\ntry:\n    check_cpu_kernels()\nexcept RuntimeError as e:\n    print('refused', e)")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    has_v4, *rest = out.stdout.splitlines()
    if has_v4 == "True":  # an AVX-512 machine
        assert rest and rest[0].startswith("refused NumPy dispatches its AVX-512 (X86_V4) loops"), out.stdout
    else:  # an AVX2 machine: nothing to pin, nothing refused
        assert rest == [], out.stdout
