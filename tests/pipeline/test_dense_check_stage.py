"""The dense_check stage on a tiny measured run: its exact spectrum equals an independent dense
double-backward Hessian, and it scores the measure stage's own estimates (read from its outputs)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance

from landscape.curvature.slq import quadrature_from_tridiagonals
from landscape.io import read_json
from landscape.pipeline import dense_check, measure
from landscape.pipeline.layout import Layout
from landscape.pipeline.runs import load_run
from landscape.schema import ConfigError
from tests.pipeline.test_measure_stage import CURVATURE, PARAMS, _write_inputs

SETTINGS = {"runs": ["exp/a"], "seed": 0, "dtype": "float64", "ci_level": 0.95, "max_params": 2000}


def _params() -> dict:
    params = copy.deepcopy(PARAMS)
    params["seeds"] = [0]
    params["curvature"]["exp"] = {**CURVATURE, "at_init": False, "per_layer": False, "noise_examples": 0, "diag_probes": 0}
    params["dense_check"] = dict(SETTINGS)
    return params


def _double_backward_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """Row by row: d/dtheta of each gradient entry of the mean loss (eval-mode BN), float64."""
    model = model.double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n = x.shape[0]
    loss = sum(F.cross_entropy(model(x[i : i + batch].double()), y[i : i + batch], reduction="sum") for i in range(0, n, batch)) / n
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    rows = [torch.cat([t.reshape(-1) for t in torch.autograd.grad(g[i], params, retain_graph=True)]) for i in range(g.numel())]
    return torch.stack(rows)


def test_stage_scores_the_measured_estimates_against_the_exact_spectrum(tmp_path) -> None:
    layout = Layout(tmp_path)
    _write_inputs(layout)
    params = _params()
    measure.run(params, layout, "exp", "a")
    out = dense_check.run(params, layout)
    res = read_json(layout.results("dense_check"))
    (r,) = res["runs"]
    assert r["status"] == "checked" and r["estimator_settings"]["slq_steps"] == CURVATURE["slq_steps"]
    spectrum = np.load(layout.dense_spectrum("exp", "a", 0))
    ev = spectrum["eigenvalues"]

    data = torch.load(layout.prepared("toy"), weights_only=False)
    x, y = data["probe"]
    H = _double_backward_hessian(load_run(layout, "exp", "a", 0).model, x[:40], y[:40], 10)
    np.testing.assert_allclose(ev, torch.linalg.eigvalsh((H + H.T) / 2).numpy(), rtol=0, atol=1e-10 * abs(ev).max())
    c = r["check"]
    assert c["exact_trace"] == pytest.approx(float(torch.trace(H)), rel=1e-10)

    curv = read_json(layout.curvature("exp", "a", 0))
    assert c["top"]["estimates"] == curv["eigenvalues"]["values"]
    assert c["top"]["all_within_bound"] and c["top"]["max_rel_error"] < 1e-5  # eig_tol 1e-6 in float64
    assert c["bottom"]["estimates"] == curv["bottom_eigenvalues"]["values"]
    np.testing.assert_allclose(c["bottom"]["exact"], ev[:2], rtol=0, atol=0)
    kry = torch.load(layout.krylov("exp", "a", 0), weights_only=True)
    quad = quadrature_from_tridiagonals(kry["slq_alphas"], kry["slq_betas"])
    w1 = wasserstein_distance(quad.nodes.numpy().ravel(), ev, u_weights=quad.weights.numpy().ravel())
    assert c["slq"]["w1"] == pytest.approx(w1, rel=1e-9)
    eps = curv["logdet_eps"]
    assert c["logdet"]["exact"] == pytest.approx(float(np.log1p(np.clip(ev, 0, None) / eps).sum()), rel=1e-12)
    assert c["logdet"]["estimate"] == curv["logdet_curvature"]
    assert c["trace"]["estimate"] == curv["trace"]
    (row,) = read_json(layout.metrics("dense_check"))["table"]
    assert set(row) == set(dense_check.TABLE_COLUMNS) and row == out["table"][0]
    assert row["trace_rel_error"] == pytest.approx(abs(curv["trace"] - c["exact_trace"]) / abs(c["exact_trace"]))


def test_bad_settings_are_named(tmp_path) -> None:
    params = _params()
    params["dense_check"]["runs"] = ["exp/zzz"]
    with pytest.raises(ConfigError, match="exp/zzz"):
        dense_check.load_config(params)
    params["dense_check"] = {**SETTINGS, "seed": 7}
    with pytest.raises(ConfigError, match=r"dense_check\.seed=7"):
        dense_check.load_config(params)
    params["dense_check"] = {**SETTINGS, "runs": "exp/a"}
    with pytest.raises(ConfigError, match="runs"):
        dense_check.load_config(params)
    layout = Layout(tmp_path)
    _write_inputs(layout)
    params["dense_check"] = {**SETTINGS, "max_params": 10}
    measure.run(params, layout, "exp", "a")
    with pytest.raises(ConfigError, match="max_params=10"):
        dense_check.run(params, layout)
