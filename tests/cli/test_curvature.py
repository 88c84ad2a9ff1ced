"""``landscape curvature`` from the fresh venv, against dense float64 Hessians by double backward.

Ground truth: the Hessian of the mean cross-entropy over all examples at once (one forward
pass of the concatenated data), by ``torch.autograd.functional.hessian`` (double backward),
in float64; the CLI runs on three unequal batches (16, 16, 8), so the batch weighting is
tested too. Tolerances: each eigenvalue within its own certificate (residual norm, at most
1e-6 relative with ``--tol 1e-6``) of the matching dense one; stochastic estimates (trace, log-det) within 5 of their
reported standard errors; exact per-layer blocks within 1e-9.
"""

from __future__ import annotations

import json
import re
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_line_error, run_main
from torch.func import functional_call

from landscape.data import load_dataset, subset
from landscape.data.files import TensorData
from landscape.models import create_model, read_checkpoint

TOP_K = 4
LOGDET_EPS = 1e-2


def dense_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(P, P) Hessian of the mean cross-entropy over all of (x, y), double backward, float64."""
    model = model.double().eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, theta)


@pytest.fixture(scope="module")
def result(cli, tiny_problem):
    out, plot = tiny_problem["root"] / "curvature.json", tiny_problem["root"] / "density.png"
    proc = cli.run("curvature", "--checkpoint", tiny_problem["model"], "--data", tiny_problem["data"], "--dtype", "float64",
                   "--batch-size", "16", "--top-k", TOP_K, "--tol", "1e-6", "--trace-matvecs", "30", "--slq-probes", "8", "--slq-steps", "60",
                   "--logdet-eps", LOGDET_EPS, "--per-layer-matvecs", "30", "--out", out, "--plot", plot, cwd=tiny_problem["root"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    ck = read_checkpoint(tiny_problem["model"])
    model = create_model(ck.name, **ck.kwargs)
    model.load_state_dict(ck.state_dict)
    data = torch.load(tiny_problem["data"])
    H = dense_hessian(model, data["inputs"], data["targets"])
    return {"proc": proc, "json": json.loads(out.read_text()), "plot": plot, "H": H, "eig": torch.linalg.eigvalsh(H)}


def test_extreme_eigenvalues_match_the_dense_hessian_within_their_certificates(result):
    r, lam = result["json"], result["eig"]
    assert r["num_params"] == lam.numel() == 51 and r["operator"]["num_batches"] == 3
    for end, truth in (("top", lam.flip(0)[:TOP_K]), ("bottom", lam[:TOP_K])):
        values = torch.tensor(r[end]["values"], dtype=torch.float64)
        certs = torch.tensor(r[end]["residual_norms"], dtype=torch.float64)
        assert r[end]["converged"]
        nearest = (values[:, None] - lam[None, :]).abs().min(dim=1).values
        assert torch.all(nearest <= certs * (1 + 1e-6) + 1e-12)  # the certificate holds
        assert torch.all((values - truth).abs() <= certs * (1 + 1e-6) + 1e-12)  # and it is the matching one
        assert torch.all(certs <= 1e-6 * values.abs().clamp_min(1e-4 * float(lam.abs().max())))  # --tol 1e-6


def test_trace_interval_and_logdet_curvature_part_agree_with_the_dense_spectrum(result):
    r, lam = result["json"], result["eig"]
    tr = r["trace"]
    assert abs(tr["value"] - float(lam.sum())) <= 5 * tr["stderr"]
    half = 1.959963984540054 * tr["stderr"]
    assert tr["interval"] == pytest.approx([tr["value"] - half, tr["value"] + half], rel=1e-12)
    ld = r["logdet"]
    assert ld["status"] == "ok" and ld["eps_relative"] == LOGDET_EPS
    assert ld["eps"] == pytest.approx(LOGDET_EPS * r["top"]["values"][0], rel=1e-12)
    truth = float(torch.log1p(lam.clamp_min(0) / ld["eps"]).sum())
    assert abs(ld["curvature_part"] - truth) <= 5 * ld["stderr"]
    assert ld["curvature_part"] == pytest.approx(ld["logdet"] - lam.numel() * math.log(ld["eps"]), rel=1e-12)


def test_density_is_normalised_and_the_plot_is_a_png(result):
    dens = result["json"]["density"]
    grid, values = np.asarray(dens["grid"]), np.asarray(dens["density"])
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-3)
    assert dens["num_probes"] == 8 and dens["num_steps"] == 51  # capped at P
    assert result["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_layer_blocks_are_the_dense_diagonal_blocks(result):
    layers = {layer["name"]: layer for layer in result["json"]["per_layer"]}
    H = result["H"]
    for name, block in (("layers.0.linear", slice(0, 30)), ("head", slice(30, 51))):
        sub = H[block, block]
        assert layers[name]["num_params"] == sub.shape[0] and layers[name]["eigen_method"] == "dense"
        assert layers[name]["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(sub)[-1]), abs=1e-9)
        assert layers[name]["trace"] == pytest.approx(float(sub.trace()), abs=1e-9)


def test_the_run_records_its_settings_and_shows_progress_on_stderr(result):
    r, proc = result["json"], result["proc"]
    assert r["bn_mode"] == "eval" and r["loss"] == "cross_entropy" and r["model"]["name"] == "mlp"
    assert r["model"]["origin"] == "train-stage checkpoint" and r["data"]["num_examples"] == 40
    assert proc.stdout == ""
    for bar in ("lanczos LA", "lanczos SA", "trace", "slq", "per-layer"):
        assert bar in proc.stderr


def test_random_initialisation_on_a_registered_data_set(cli, tmp_path):
    """--model mlp on 64 of sklearn's digits (float32 default): lambda_max against the dense Hessian of the same network."""
    out = tmp_path / "r.json"
    proc = cli.run("curvature", "--model", "mlp", "--model-kwargs", '{"width": 4, "depth": 1}', "--data", "digits",
                   "--num-examples", "64", "--seed", "3", "--top-k", "1", "--trace-matvecs", "9", "--slq-probes", "2",
                   "--slq-steps", "10", "--no-per-layer", "--quiet", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == ""  # --quiet: no bars
    r = json.loads(out.read_text())
    ds = load_dataset("digits")
    data = subset(TensorData(ds.x, ds.y, "digits"), 64, seed=3)
    model = create_model("mlp", seed=3, num_classes=10, in_chans=1, img_size=8, width=4, depth=1)
    lam_max = float(torch.linalg.eigvalsh(dense_hessian(model, data.inputs, data.targets))[-1])
    assert r["model"]["origin"] == "random initialisation" and r["num_params"] == 64 * 4 + 4 + 4 * 10 + 10
    assert r["top"]["values"][0] == pytest.approx(lam_max, rel=1e-4)  # float32 products


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--model", "no_such_net", "--data", "{data}"],
                     r"unknown model 'no_such_net': not one of the registered models \[.*'mlp'.*\] and not a timm model either",
                     id="unknown-model"),
        pytest.param(["--checkpoint", "{wide}", "--model", "mlp", "--model-kwargs", '{{"width": 6, "depth": 1}}', "--data", "{data}"],
                     r"checkpoint .*wide\.pt does not match the architecture MLP .*shape mismatches: "
                     r"layers\.0\.linear\.weight \(7, 4\) vs model \(6, 4\)", id="state-dict-shapes"),
        pytest.param(["--checkpoint", "{state_dict}", "--model", "mlp", "--model-kwargs", '{{"width": 6, "depth": 2}}', "--data", "{data}"],
                     r"does not match the architecture MLP .*missing keys: layers\.1\.linear\.weight, layers\.1\.linear\.bias",
                     id="state-dict-keys"),
        pytest.param(["--checkpoint", "{state_dict}", "--data", "{data}"],
                     r"is a plain state_dict; name its architecture with --model", id="state-dict-without-model"),
        pytest.param(["--checkpoint", "{model}", "--data", "{five_features}"],
                     r"five_features\.pt has examples of shape \(5,\), but the model expects 4 features per example",
                     id="data-shape"),
        pytest.param(["--checkpoint", "{model}", "--data", "no_such_set"],
                     r"unknown data set 'no_such_set' \(and no such file\); registered data sets: .*digits.*mnist5k",
                     id="unknown-data-set"),
        pytest.param(["--checkpoint", "{model}", "--data", "{data}", "--bn-mode", "train"],
                     r"unknown --bn-mode 'train'; accepted: eval, batch$", id="bn-mode"),
    ],
)
def test_bad_input_stops_with_one_line_naming_the_problem(tiny_problem, args, expected):
    paths = {k: str(v) for k, v in tiny_problem.items()}
    proc = run_main("curvature", *[a.format(**paths) for a in args], cwd=tiny_problem["root"])
    line = one_line_error(proc, "curvature")
    assert re.search(expected, line), line


def test_the_installed_script_stops_with_one_line_when_pretrained_weights_are_not_cached(cli, tiny_problem):
    # the installed console script, in its venv's empty Hugging Face cache with HF_HUB_OFFLINE=1
    proc = cli.run("curvature", "--model", "test_resnet", "--pretrained", "--data", "digits", "--num-examples", "8",
                   cwd=tiny_problem["root"])
    line = one_line_error(proc, "curvature")
    assert re.search(r"pretrained weights of 'test_resnet' \(timm/test_resnet\.r160_in1k.*\) are not in the local Hugging Face "
                     r"cache .*nothing is downloaded", line), line
