"""measure_curvature: its summary agrees with a dense double-backward Hessian of a small model."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.curvature.linop import DenseOperator
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
    ev = s["noise"]["eigenvalues_sigma"]  # the covariance's whole spectrum: min(N, P) = 40 values summing to its trace
    assert len(ev) == 40 and ev == sorted(ev, reverse=True) and min(ev) > -1e-6 * ev[0]
    assert sum(ev) == pytest.approx(s["noise"]["trace_sigma"], rel=1e-6) and ev[0] == pytest.approx(s["noise"]["lambda_max_sigma"], rel=1e-6)
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


class _Planted(DenseOperator):
    """Q diag(lambda) Q^T in place of the Hessian (``measure_curvature(hessian=...)``), with an operator report."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__(matrix)
        self.report = SimpleNamespace(to_dict=lambda: {"kind": "planted", "num_params": matrix.shape[0]})


def _planted(lam: list[float], rest: int, lo: float, hi: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = torch.cat([torch.tensor(lam, dtype=torch.float64), torch.empty(rest, dtype=torch.float64).uniform_(lo, hi, generator=g)])
    Q, _ = torch.linalg.qr(torch.randn(values.numel(), values.numel(), generator=g, dtype=torch.float64))
    A = (Q * values) @ Q.T
    return 0.5 * (A + A.T), values.sort().values


@pytest.mark.parametrize(("lam", "end"), [
    ([-12.0, -7.0, -3.0, 5.0, 4.0, 3.5], "bottom"),  # indefinite, |lambda_min| > lambda_max: the bottom end is ||H||_2
    ([-2.0, -1.5, 9.0, 6.0], "top"),
])
def test_bottom_k_and_spectral_norm_on_a_known_negative_spectrum(lam, end):
    A, values = _planted(lam, 54, -1.0, 1.0, seed=3)
    model, batches, _, _ = _setup()
    m = measure_curvature(model, F.cross_entropy, batches, top_k=3, bottom_k=3, eig_tol=1e-8, bottom_max_matvecs=None,
                          trace_matvecs=30, slq_probes=4, slq_steps=60, per_layer=False, noise_examples=0,
                          hessian=lambda *_a, **_k: _Planted(A))
    s = m.summary
    assert s["bottom_eigenvalues"]["values"] == pytest.approx(values[:3].tolist(), rel=1e-7)
    assert s["bottom_eigenvalues"]["converged"] and s["lambda_min"] == pytest.approx(float(values[0]), rel=1e-7)
    assert all(abs(v - float(values[i])) <= b + 1e-12 for i, (v, b) in
               enumerate(zip(s["bottom_eigenvalues"]["values"], s["bottom_eigenvalues"]["residual_bounds"], strict=True)))
    assert s["lambda_max"] == pytest.approx(float(values[-1]), rel=1e-7)
    assert s["spectral_norm_end"] == end
    assert s["spectral_norm"] == pytest.approx(float(values.abs().max()), rel=1e-7)
    assert s["spectral_norm_err"] == (s["lambda_min_err"] if end == "bottom" else s["lambda_max_err"])
    assert m.krylov["bottom_ritz_values"].tolist() == s["bottom_eigenvalues"]["values"]
    # slq_steps = P: every probe's Gauss rule is exact, so the mass below t is within its stated error of the truth
    neg = s["negative_mass"]
    tau = 3.0 * s["density"]["sigma_broadening"]
    assert neg["tau"] == pytest.approx(tau) and neg["tau_broadenings"] == 3.0
    for key, t in (("below_zero", 0.0), ("below_minus_tau", -tau)):
        truth = float((values < t).double().mean())
        assert abs(neg[key] - truth) <= 4 * neg[f"{key}_stderr"] + 1e-12, key
    # log-det at eps = 1e-3 lambda_max and its curvature part, rebuilt from the cached tridiagonals
    eps = 1e-3 * s["lambda_max"]
    assert s["logdet_eps"] == pytest.approx(eps) and s["logdet_eps_relative"] == 1e-3 and s["logdet_status"] == "ok"
    ld = logdet_from_tridiagonals(m.krylov["slq_alphas"], m.krylov["slq_betas"], A.shape[0], eps)
    assert s["logdet_curvature"] == pytest.approx(ld.curvature_part, rel=1e-12)
    exact = float(torch.log1p(values.clamp_min(0) / eps).sum())
    assert abs(s["logdet_curvature"] - exact) <= 4 * s["logdet_curvature_stderr"]


def test_bottom_pass_budget_and_bad_settings():
    A, values = _planted([-12.0, 5.0], 58, -1.0, 1.0, seed=4)
    model, batches, _, _ = _setup()
    kw = {"top_k": 2, "eig_tol": 1e-10, "trace_matvecs": 8, "slq_probes": 1, "slq_steps": 10, "per_layer": False,
          "noise_examples": 0, "hessian": lambda *_a, **_k: _Planted(A)}
    s = measure_curvature(model, F.cross_entropy, batches, bottom_k=3, bottom_max_matvecs=6, **kw).summary
    b = s["bottom_eigenvalues"]
    assert b["num_matvecs"] <= 6 and not b["converged"]
    assert b["values"][0] >= float(values[0]) - 1e-12  # a Ritz value never lies below lambda_min (interlacing)
    none = measure_curvature(model, F.cross_entropy, batches, bottom_k=0, **kw).summary
    assert "lambda_min" not in none and none["spectral_norm_end"] == "top only" and none["spectral_norm"] == abs(none["lambda_max"])
    with pytest.raises(ValueError, match=r"bottom_k must be an int >= 0, got -1"):
        measure_curvature(model, F.cross_entropy, batches, bottom_k=-1, **kw)
    with pytest.raises(ValueError, match=r"logdet_eps_relative must be a finite number > 0, got 0"):
        measure_curvature(model, F.cross_entropy, batches, logdet_eps_relative=0, **kw)
    with pytest.raises(ValueError, match=r"negative_tau must be a finite number >= 0"):
        measure_curvature(model, F.cross_entropy, batches, negative_tau=-1.0, **kw)
