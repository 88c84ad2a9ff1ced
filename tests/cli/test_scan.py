"""``landscape scan`` from the fresh venv: 1D and 2D filter-normalised random-direction scans.

Ground truth: the loss at a grid point recomputed here, in float64, at ``theta + a d`` with
``d`` drawn as the library draws it (``random_direction`` with ``seeded_generator(seed)``,
Li et al. 2018's filter normalisation, biases not moved); within 1e-12. The 1D line is the
2D plane's ``y = 0`` axis for the same seed (bit-identical within one machine).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_line_error
from torch.func import functional_call

from landscape.data import TensorData, load_dataset, subset
from landscape.models import create_model, read_checkpoint
from landscape.probes import parameter_dict, random_direction
from landscape.seeding import seeded_generator

SEED = 4


def checkpoint_model(path):
    ck = read_checkpoint(path)
    model = create_model(ck.name, **ck.kwargs)
    model.load_state_dict(ck.state_dict)
    return model.double().eval()


@pytest.fixture(scope="module")
def scans(cli, tiny_problem):
    out = {}
    for dims in (1, 2):
        path, plot = tiny_problem["root"] / f"scan{dims}.json", tiny_problem["root"] / f"scan{dims}.png"
        proc = cli.run("scan", "--checkpoint", tiny_problem["model"], "--data", tiny_problem["data"], "--dims", dims, "--points", "5",
                       "--extent", "0.5", "--seed", SEED, "--dtype", "float64", "--out", path, "--plot", plot, cwd=tiny_problem["root"])
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert f"scan {dims}d" in proc.stderr and proc.stdout == ""
        out[dims] = {"json": json.loads(path.read_text()), "plot": plot}
    return out


def test_line_values_are_the_losses_at_theta_plus_a_d(scans, tiny_problem):
    model = checkpoint_model(tiny_problem["model"])
    data = torch.load(tiny_problem["data"])
    theta = parameter_dict(model)
    d = random_direction(theta, generator=seeded_generator(SEED), bias_policy="zero")
    assert all(float(d[n].abs().max()) == 0 for n in theta if theta[n].ndim == 1)  # biases not moved
    for n in theta:  # each filter (row) of d has the norm of the matching row of theta
        if theta[n].ndim == 2:
            assert torch.allclose(d[n].norm(dim=1), theta[n].norm(dim=1), rtol=1e-12)
    scan = scans[1]["json"]["scan"]
    assert scan["alphas"] == pytest.approx([-0.5, -0.25, 0.0, 0.25, 0.5], abs=1e-15)
    for a, loss in zip(scan["alphas"], scan["losses"], strict=True):
        point = {n: theta[n] + a * d[n] for n in theta}
        expected = F.cross_entropy(functional_call(model, point, (data["inputs"],)), data["targets"])
        assert loss == pytest.approx(float(expected), abs=1e-12)


def test_the_line_is_the_planes_y0_axis_and_both_plots_are_pngs(scans):
    line, plane = scans[1]["json"]["scan"], scans[2]["json"]["scan"]
    Z, Y = np.asarray(plane["Z"]), np.asarray(plane["Y"])
    assert Z.shape == (5, 5) and np.all(Y[2] == 0)
    assert np.array_equal(Z[2], np.asarray(line["losses"]))
    assert plane["settings"]["seed"] == SEED and plane["settings"]["bias_policy"] == "zero"
    for dims in (1, 2):
        assert scans[dims]["json"]["bn_mode"] == "eval" and scans[dims]["json"]["dims"] == dims
        assert scans[dims]["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_timm_model_on_a_registered_data_set(cli, tmp_path):
    """timm's test_resnet (BatchNorm) randomly initialised from --seed: the centre is its loss on the seeded subset."""
    out = tmp_path / "scan.json"
    proc = cli.run("scan", "--model", "test_resnet", "--data", "digits", "--num-examples", "16", "--seed", "2", "--points", "3",
                   "--bn-mode", "recalibrate", "--quiet", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    ds = load_dataset("digits")
    data = subset(TensorData(ds.x, ds.y, "digits"), 16, seed=2)
    model = create_model("test_resnet", seed=2, num_classes=10, in_chans=1).eval()
    assert r["model"]["description"]["has_batchnorm"] and r["scan"]["bn_mode"] == "recalibrate"
    with torch.no_grad():
        # recalibrated statistics at the centre = the batch's own statistics (one batch, cumulative average)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(data.inputs)
        model.eval()
        expected = float(F.cross_entropy(model(data.inputs), data.targets))
    assert r["scan"]["losses"][1] == pytest.approx(expected, rel=1e-5)  # float32


def test_pretrained_weights_come_from_the_local_cache(cli, tmp_path):
    """--pretrained reads timm's weights from a Hugging Face cache laid out by hand (no network):
    the scan equals the scan of the same weights given as a checkpoint."""
    from safetensors.torch import save_file

    model = create_model("test_resnet", seed=5)  # 1000 classes, 3 channels: timm adapts nothing
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(repo / "snapshots" / revision / "model.safetensors"))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    g = torch.Generator().manual_seed(0)
    torch.save({"inputs": torch.rand(8, 3, 16, 16, generator=g), "targets": torch.randint(0, 1000, (8,), generator=g)},
               tmp_path / "images.pt")
    common = ("scan", "--model", "test_resnet", "--model-kwargs", '{"num_classes": 1000}', "--data", tmp_path / "images.pt",
              "--points", "3", "--quiet")
    cached = cli.run(*common, "--pretrained", "--out", tmp_path / "p.json", cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert cached.returncode == 0, cached.stderr[-4000:]
    given = cli.run(*common, "--checkpoint", tmp_path / "weights.pt", "--out", tmp_path / "c.json", cwd=tmp_path)
    assert given.returncode == 0, given.stderr[-4000:]
    p, c = (json.loads((tmp_path / f).read_text()) for f in ("p.json", "c.json"))
    assert p["model"]["origin"] == "timm pretrained (local cache)"
    assert p["scan"]["losses"] == c["scan"]["losses"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--dims", "3"], r"--dims must be 1 or 2, got 3$", id="dims"),
        pytest.param(["--bn-mode", "running"], r"unknown --bn-mode 'running'; accepted: eval, batch, recalibrate$", id="bn-mode"),
        pytest.param(["--bias-policy", "scale"], r"unknown --bias-policy 'scale'; accepted: zero, keep, normalize$", id="bias-policy"),
        pytest.param(["--data-options", "[1]"], r"argument --data-options: expected a JSON object", id="data-options"),
        pytest.param(["--points", "1"], r"--points must be >= 2, got 1$", id="points"),
    ],
)
def test_bad_input_stops_with_one_line_naming_the_problem(cli, tiny_problem, args, expected):
    proc = cli.run("scan", "--checkpoint", tiny_problem["model"], "--data", tiny_problem["data"], *args, cwd=tiny_problem["root"])
    assert re.search(expected, one_line_error(proc, "scan")), proc.stderr

