"""bench/gpu_check.py: it imports with a GPU machine's bare Python (no DVC, DVCLive, tqdm,
scikit-learn, mlxtend, papermill), and its own pieces (the PyHessian-algorithm baseline, the
equal-accuracy matching, the section budget) do what the JSON claims."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
ABSENT = ("dvc", "dvclive", "tqdm", "sklearn", "mlxtend", "papermill", "nbformat", "nbconvert", "selenium", "ruamel", "pytest")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_without_the_pipeline_tools():
    code = (f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None\n"
            f"import runpy\nns = runpy.run_path({str(SCRIPT)!r}, run_name='imported')\n"
            "assert 'main' in ns and not any(m in sys.modules and sys.modules[m] is not None for m in " + repr(ABSENT) + ")\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_deflated_power_iteration_finds_a_known_spectrum():
    gc = _module()
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([10.0, 6.0, 3.0], dtype=torch.float64), torch.linspace(0.0, 1.0, 37, dtype=torch.float64)])
    from landscape.curvature.linop import as_operator

    op = as_operator((Q * spectrum) @ Q.T)
    values, products = gc.power_iteration_deflated(op, k=3, tol=1e-10, seed=0)
    assert torch.allclose(values, spectrum[:3], rtol=1e-6) and 3 <= products <= 300
    loose, few = gc.power_iteration_deflated(op, k=3, tol=1e-2, seed=0)
    assert few < products and torch.allclose(loose, spectrum[:3], rtol=0.05)


def test_equal_accuracy_takes_the_fastest_run_at_least_as_accurate():
    gc = _module()
    runs = [
        {"method": "ours", "k": 1, "tol": 1e-2, "seconds": 1.0, "rel_error": 1e-3},
        {"method": "ours", "k": 1, "tol": 1e-3, "seconds": 2.0, "rel_error": 1e-6},
        {"method": "base", "k": 1, "tol": 1e-3, "seconds": 4.0, "rel_error": 1e-3},
        {"method": "base", "k": 1, "tol": 1e-5, "seconds": 8.0, "rel_error": 1e-5},
        {"method": "base", "k": 1, "tol": 1e-6, "seconds": 9.0, "rel_error": 1e-9},
    ]
    rows = gc.equal_accuracy(runs, "base")
    assert [r["ours_tol"] for r in rows] == [1e-2, 1e-3, None]
    assert [r["time_ratio_ours_over_baseline"] for r in rows] == [0.25, 0.25, None]


def test_a_section_past_its_cap_is_stopped():
    gc = _module()
    budget = gc.Budget(100.0)
    with pytest.raises(gc.BudgetExceeded, match="section stopped"), budget.section(1.5):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass
    with pytest.raises(gc.BudgetExceeded, match="no time left"), gc.Budget(0.5).section(10.0):
        pass
