"""``landscape trajectory`` from the fresh venv: a gradient-descent path of a tiny MLP on its plane.

The path: eight full-batch gradient-descent snapshots of the tiny MLP on the test data, saved as
the train stage saves them (``checkpoints/snapshot_epochNNNN.pt``, then ``model.pt``). Ground
truth, float64: the thin SVD of the offsets ``theta_i - theta_f`` computed here gives the
explained variances, the coordinates on the top-2 plane (up to the sign of each direction) and
the residuals off it; the loss at each snapshot is recomputed with ``functional_call``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_line_error, run_main, save_run_checkpoint, tiny_mlp
from torch.func import functional_call

from landscape.probes import parameter_dict

STEPS = 8


@pytest.fixture(scope="module")
def path_run(tiny_problem):
    """A run directory with STEPS - 1 snapshots and model.pt, and the flat snapshots (STEPS, P)."""
    run = tiny_problem["root"] / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    data = torch.load(tiny_problem["data"])
    model = tiny_mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    flats = []
    for epoch in range(STEPS):
        flats.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
        if epoch < STEPS - 1:
            torch.save({"state_dict": model.state_dict(), "epoch": epoch}, run / "checkpoints" / f"snapshot_epoch{epoch:04d}.pt")
            opt.zero_grad()
            F.cross_entropy(model(data["inputs"]), data["targets"]).backward()
            opt.step()
    save_run_checkpoint(run / "model.pt", model)
    return run, torch.stack(flats)


@pytest.fixture(scope="module")
def traced(cli, tiny_problem, path_run):
    run, _ = path_run
    out, plot = tiny_problem["root"] / "trajectory.json", tiny_problem["root"] / "trajectory.png"
    proc = cli.run("trajectory", "--run", run, "--data", tiny_problem["data"], "--points", "7", "--dtype", "float64",
                   "--out", out, "--plot", plot, cwd=tiny_problem["root"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "trajectory" in proc.stderr  # the progress bar
    return {"json": json.loads(out.read_text()), "plot": plot}


def test_the_plane_is_the_top_two_principal_directions_of_the_offsets(traced, path_run):
    _, flats = path_run
    offsets = (flats - flats[-1]).numpy()
    _, s, vt = np.linalg.svd(offsets, full_matrices=False)
    r = traced["json"]["trajectory"]
    assert r["pca"]["explained_variance_ratio"] == pytest.approx((s[:2] ** 2 / np.sum(s**2)).tolist(), rel=1e-9)
    coords = np.asarray(r["coords"])
    expected = offsets @ vt[:2].T
    assert np.abs(coords) == pytest.approx(np.abs(expected), abs=1e-9)  # each direction's sign is a convention
    resid = np.linalg.norm(offsets - expected @ vt[:2], axis=1)
    assert r["residuals"] == pytest.approx(resid.tolist(), abs=1e-9)
    assert r["plane_fraction"] == pytest.approx(float(np.sum(s[:2] ** 2) / np.sum(s**2)), rel=1e-9)
    assert r["labels"] == [f"epoch {e}" for e in range(STEPS - 1)] + ["final"]


def test_path_losses_are_the_losses_at_the_snapshots_and_the_plot_is_a_png(traced, path_run, tiny_problem):
    _, flats = path_run
    data = torch.load(tiny_problem["data"])
    model = tiny_mlp(0).eval()
    names = list(parameter_dict(model))
    shapes = [p.shape for p in model.parameters()]
    for flat, loss in zip(flats, traced["json"]["trajectory"]["path_losses"], strict=True):
        point = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes, strict=True)), strict=True))
        expected = F.cross_entropy(functional_call(model, point, (data["inputs"],)), data["targets"])
        assert loss == pytest.approx(float(expected), abs=1e-12)
    plane = traced["json"]["trajectory"]["plane"]
    assert np.asarray(plane["Z"]).shape == (7, 7) and np.isfinite(plane["Z"]).all()
    assert np.asarray(plane["points"]) == pytest.approx(np.asarray(traced["json"]["trajectory"]["coords"]), abs=1e-12)
    assert traced["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_files_in_time_order_give_the_same_result_as_the_run_directory(cli, tiny_problem, path_run, traced):
    run, _ = path_run
    files = sorted((run / "checkpoints").glob("snapshot_epoch*.pt")) + [run / "model.pt"]
    out = tiny_problem["root"] / "trajectory_files.json"
    proc = cli.run("trajectory", *files, "--data", tiny_problem["data"], "--points", "7", "--dtype", "float64", "--quiet",
                   "--out", out, cwd=tiny_problem["root"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == ""  # --quiet: no bar
    assert json.loads(out.read_text())["trajectory"] == traced["json"]["trajectory"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["{model}", "{state_dict}"], r"a plane needs at least 3 snapshots .* got 2;", id="two-snapshots"),
        pytest.param(["{wide}", "{state_dict}", "{model}"], r"snapshot 1 .*wide\.pt does not match the architecture MLP", id="mismatch"),
        pytest.param(["--run", "{root}/nowhere"], r"--run .*nowhere is not a directory", id="no-run-dir"),
        pytest.param(["{state_dict}", "{state_dict}", "{model}", "--normalization", "pca"],
                     r"unknown --normalization 'pca'; accepted: none, filter$", id="normalization"),
        pytest.param(["{state_dict}", "{state_dict}", "{model}", "--margin", "-1"], r"--margin must be >= 0, got -1.0$", id="margin"),
        pytest.param(["{model}", "{model}", "{model}"], r"all snapshots equal the final one: the path spans no direction$", id="no-extent"),
    ],
)
def test_bad_input_stops_with_one_line_naming_the_problem(tiny_problem, args, expected):
    filled = [a.format(**{k: str(v) for k, v in tiny_problem.items()}) for a in args]
    proc = run_main("trajectory", *filled, "--data", tiny_problem["data"], cwd=tiny_problem["root"])
    assert re.search(expected, one_line_error(proc, "trajectory")), proc.stderr
