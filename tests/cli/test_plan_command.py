"""``landscape plan`` from the fresh venv: the planner on a one-config profile.

Ground truth: the product counts follow from the settings (training: epochs * floor(n / B)
gradients; measure: the SLQ and trace products it is asked for, at least), the per-stage
totals are the sums over the entries, and a stated memory below an entry's estimate is
refused with exit code 1 naming that entry, while bad input exits 2 with one line.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from cli_helpers import one_line_error, run_main

PROFILE = {
    "profile": "cli_plan",
    "seeds": [0],
    "datasets": {"gmm": {"name": "gaussian_mixture", "options": {"num_classes": 4, "dim": 16, "separation": 3.0, "n": 400, "seed": 0},
                         "test_fraction": 0.25, "probe_size": 64, "split_seed": 0, "normalize": True}},
    "experiments": {"curv": {"dataset": "gmm", "configs": {"w32": {"model": {"name": "mlp", "depth": 2, "activation": "relu",
                                                                               "norm": "none", "width": 32},
                                                                     "train": {"epochs": 2, "batch_size": 50}}}}},
    "curvature": {"curv": {"num_examples": 64, "batch_size": 32, "top_k": 4, "eig_tol": 0.01, "trace_matvecs": 12, "slq_probes": 2,
                           "slq_steps": 10, "per_layer": False, "noise_examples": 32, "diag_probes": 2}},
}


@pytest.fixture(scope="module")
def planned(cli, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_plan")
    (root / "p.yaml").write_text(yaml.safe_dump(PROFILE))
    proc = cli.run("plan", "--profile", "p.yaml", "--device", "cpu", "--device-memory", "64GiB", "--costs", "costs.json",
                   "--json", "plan.json", cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, proc, json.loads((root / "plan.json").read_text())


def test_counts_follow_the_settings_and_totals_add_up(planned):
    _, proc, plan = planned
    entries = {e["entry"]: e for e in plan["entries"]}
    assert entries["train_curv@w32-0"]["products"]["gradients"] == 2 * (300 // 50)  # 400 examples, a quarter for test
    c = PROFILE["curvature"]["curv"]
    assert entries["measure_curv@w32"]["products"]["hvps"] >= c["trace_matvecs"] + c["slq_probes"] * c["slq_steps"]
    assert entries["measure_curv@w32"]["products"]["per_sample_gradients"] == c["noise_examples"]
    for stage, total in plan["by_stage"].items():
        members = [e for e in plan["entries"] if e["stage"] == stage]
        assert total["entries"] == len(members)
        assert total["peak_bytes"] == pytest.approx(max(e["peak_bytes"] for e in members))
    assert plan["gpu_hours"] == pytest.approx(sum(e["gpu_seconds"] for e in plan["entries"]) / 3600)
    assert "total:" in proc.stdout and "GPU-hours" in proc.stdout


def test_an_entry_above_the_stated_memory_is_named_and_exits_1(cli, planned):
    root, _, plan = planned
    need = {e["entry"]: e["peak_bytes"] for e in plan["entries"] if e["peak_bytes"]}
    stated = (min(need.values()) + max(need.values())) / 2  # the smaller fits, the larger does not
    proc = cli.run("plan", "--profile", "p.yaml", "--device", "cpu", "--device-memory", f"{stated / 2**20:.3f}MiB",
                   "--costs", "costs.json", cwd=root)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("landscape plan: error: ")]
    biggest = max(need, key=need.get)
    assert len(errors) == 1 and errors[0].startswith(f"landscape plan: error: {biggest} needs about "), proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--profile", "p.yaml", "--device-memory", "lots"], r"device memory must look like '80GiB'.*got 'lots'$", id="memory"),
        pytest.param(["--profile", "missing.yaml"], r"missing\.yaml", id="missing-profile"),
    ],
)
def test_bad_input_stops_with_one_line_naming_the_problem(planned, args, expected):
    root, _, _ = planned
    proc = run_main("plan", *args, cwd=root)
    assert re.search(expected, one_line_error(proc, "plan")), proc.stderr
