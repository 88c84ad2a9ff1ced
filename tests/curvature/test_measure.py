"""measure_curvature: its summary agrees with a dense double-backward Hessian of a small model."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.curvature.measure import measure_curvature
from landscape.curvature.slq import logdet_from_tridiagonals


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, [(x[:25], y[:25]), (x[25:], y[25:])], x, y


def _dense_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i : i + math.prod(s)].reshape(s)
            i += math.prod(s)
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


def test_summary_matches_dense_hessian():
    model, batches, x, y = _setup()
    H = _dense_hessian(model, x, y)
    exact = torch.linalg.eigvalsh(H).flip(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = measure_curvature(model, F.cross_entropy, batches, top_k=4, eig_tol=1e-8, trace_matvecs=250,
                          slq_probes=4, slq_steps=20, noise_examples=40, diag_probes=8, seed=0)
    s = m.summary
    assert s["eigenvalues"]["values"] == pytest.approx(exact[:4].tolist(), rel=1e-6)
    assert all(b <= 1e-6 * abs(v) + 1e-12 for b, v in zip(s["eigenvalues"]["residual_bounds"], s["eigenvalues"]["values"]))
    # P = 83 <= 250 // 3: the Hutch++ sketch spans the whole space, so the trace is exact.
    assert s["trace"] == pytest.approx(float(torch.trace(H)), rel=1e-8)
    assert s["density"]["moments"][0] == pytest.approx(float(torch.trace(H)) / H.shape[0], rel=0.3)
    ld = logdet_from_tridiagonals(m.krylov["slq_alphas"], m.krylov["slq_betas"], H.shape[0], s["logdet_eps"])
    assert ld.value == pytest.approx(s["logdet"])
    assert m.krylov["ritz_vectors"].shape == (H.shape[0], 4)
    assert 0 <= s["noise"]["kappa"] <= s["noise"]["kappa_max"] + 1e-12 <= 1 + 1e-12
    assert s["noise"]["difficulty_index"] == pytest.approx(exact[0].item() ** 2 / torch.trace(H).item() * s["noise"]["kappa"], rel=1e-6)
    assert {layer["name"] for layer in s["per_layer"]} == {"0", "2"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_rmt_block_uses_the_spike_estimator():
    from landscape.curvature.rmt import count_spikes, fit_spiked_bulk
    from landscape.curvature.slq import quadrature_from_tridiagonals

    model, batches, x, y = _setup()
    exact = torch.linalg.eigvalsh(_dense_hessian(model, x, y)).flip(0)
    kw = dict(eig_tol=1e-8, trace_matvecs=30, slq_probes=4, slq_steps=20, per_layer=False, noise_examples=0, seed=0)
    m = measure_curvature(model, F.cross_entropy, batches, top_k=12, **kw)
    rmt = m.summary["rmt"]
    assert rmt["status"] == "ok"
    assert rmt["outlier_count"] == count_spikes(exact[:12]).num_spikes
    quad = quadrature_from_tridiagonals(m.krylov["slq_alphas"], m.krylov["slq_betas"])
    ref = fit_spiked_bulk(exact[:12], quad.nodes, quad.weights, dim=exact.numel())
    assert rmt["bulk_sigma"] == pytest.approx(ref.sigma, rel=1e-6)
    assert rmt["ks_semicircle"] == pytest.approx(ref.ks_semicircle, abs=1e-9)
    few = measure_curvature(model, F.cross_entropy, batches, top_k=4, **kw).summary["rmt"]
    assert few["status"].startswith("spiked bulk fit failed: count_spikes needs k >= ") and math.isnan(few["outlier_count"])


def test_snapshot_summary_gradient_ranks_match_a_dense_covariance():
    from landscape.curvature.measure import sharpness_summary

    model, batches, x, y = _setup()
    s = sharpness_summary(model, F.cross_entropy, batches, eig_tol=1e-8, trace_matvecs=10, noise_examples=30, seed=0)
    assert s["lambda_max"] == pytest.approx(torch.linalg.eigvalsh(_dense_hessian(model, x, y))[-1].item(), rel=1e-6)
    # per-example gradients one at a time, centred covariance, its spectrum
    rows = []
    for i in range(30):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    G = torch.stack(rows)
    Gc = G - G.mean(0)
    evals = torch.linalg.eigvalsh(Gc.T @ Gc / 30).flip(0).clamp_min(0)
    energy = torch.cumsum(evals, 0) / evals.sum()
    assert s["noise_examples"] == 30 and s["energy_rank_90"] == int((energy < 0.9).sum()) + 1
    assert s["trace_sigma"] == pytest.approx(evals.sum().item(), rel=1e-8)
    assert s["stable_rank_gradients"] == pytest.approx((evals.sum() / evals[0]).item(), rel=1e-8)
    assert "energy_rank_90" not in sharpness_summary(model, F.cross_entropy, batches, trace_matvecs=10)
