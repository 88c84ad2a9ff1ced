"""``landscape connect`` from the fresh venv: the linear path and a Bezier curve between two MLPs.

A is a train-stage ``model.pt`` (architecture recorded), B a plain state_dict of the same
architecture (``--model mlp --model-kwargs``). Ground truth, float64 within 1e-12: the loss
at ``t`` is the loss at ``(1 - t) theta_a + t theta_b`` recomputed here; the barriers are
``max_t L - (L_0 + L_1) / 2`` and ``max_t [L - chord]`` of the reported profile. The curve
starts on the line and is trained on the data, so it passes through the same end points and
lies lower on average (untrained end points: the loss can fall anywhere between them).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_line_error, run_main, tiny_mlp
from torch.func import functional_call

from landscape.probes import parameter_dict

MODEL_ARGS = ("--model", "mlp", "--model-kwargs", '{"width": 6, "depth": 1}')


@pytest.fixture(scope="module")
def connected(cli, tiny_problem):
    out, plot = tiny_problem["root"] / "connect.json", tiny_problem["root"] / "connect.png"
    proc = cli.run("connect", tiny_problem["model"], tiny_problem["state_dict"], *MODEL_ARGS, "--data", tiny_problem["data"],
                   "--points", "11", "--bezier", "--steps", "150", "--lr", "0.05", "--dtype", "float64", "--out", out, "--plot", plot,
                   cwd=tiny_problem["root"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "linear path" in proc.stderr and "bezier" in proc.stderr
    return {"json": json.loads(out.read_text()), "plot": plot}


def test_linear_path_losses_and_barriers(connected, tiny_problem):
    r = connected["json"]
    line = r["linear"]
    data = torch.load(tiny_problem["data"])
    a, b = parameter_dict(tiny_mlp(0)), parameter_dict(tiny_mlp(1))
    model = tiny_mlp(0).eval()
    ts = np.asarray(line["ts"])
    assert ts == pytest.approx(np.linspace(0, 1, 11), abs=1e-15)
    for t, loss in zip(ts, line["losses"], strict=True):
        point = {n: a[n] + float(t) * (b[n] - a[n]) for n in a}
        expected = F.cross_entropy(functional_call(model, point, (data["inputs"],)), data["targets"])
        assert loss == pytest.approx(float(expected), abs=1e-12)
    L = np.asarray(line["losses"])
    assert line["barrier"] == pytest.approx(L.max() - (L[0] + L[-1]) / 2, abs=1e-12)
    assert line["barrier_interp"] == pytest.approx(np.max(L - (L[0] + ts * (L[-1] - L[0]))), abs=1e-12)
    distance = float(torch.cat([(b[n] - a[n]).reshape(-1) for n in a]).norm())
    assert r["distance"] == pytest.approx(distance, rel=1e-12)


def test_the_bezier_curve_keeps_the_end_points_and_lies_lower(connected):
    r = connected["json"]
    line, curve = r["linear"], r["bezier"]["train"]
    assert curve["ts"] == line["ts"] and curve["path"] == "bezier" and r["bezier"]["num_bends"] == 1
    assert curve["losses"][0] == pytest.approx(line["losses"][0], abs=1e-12)
    assert curve["losses"][-1] == pytest.approx(line["losses"][-1], abs=1e-12)
    assert np.mean(curve["losses"]) < np.mean(line["losses"])
    assert connected["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_networks_of_different_widths_are_refused(tiny_problem):
    proc = run_main("connect", tiny_problem["model"], tiny_problem["wide"], *MODEL_ARGS, "--data", tiny_problem["data"],
                   cwd=tiny_problem["root"])
    line = one_line_error(proc, "connect")
    assert re.search(r"checkpoint B .*wide\.pt does not match the architecture MLP .*shape mismatches: "
                     r"layers\.0\.linear\.weight \(7, 4\) vs model \(6, 4\)", line), line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["{model}", "{root}/missing.pt", "--data", "{data}"], r"checkpoint .*missing\.pt does not exist$", id="missing-file"),
        pytest.param(["{model}", "{state_dict}", "--data", "{data}", "--objective", "max"],
                     r"unknown --objective 'max'; accepted: expected, minimax$", id="objective"),
        pytest.param(["{model}", "{state_dict}", "--data", "{data}", "--bn-mode", "train"],
                     r"unknown --bn-mode 'train'; accepted: eval, batch, recalibrate$", id="bn-mode"),
        pytest.param(["{model}", "--data", "{data}"], r"the following arguments are required: B", id="one-checkpoint"),
    ],
)
def test_bad_input_stops_with_one_line_naming_the_problem(tiny_problem, args, expected):
    paths = {k: str(v) for k, v in tiny_problem.items()}
    proc = run_main("connect", *[a.format(**paths) for a in args], cwd=tiny_problem["root"])
    assert re.search(expected, one_line_error(proc, "connect")), proc.stderr
