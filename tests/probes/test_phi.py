"""Phi: the formula and the measurement against a closed-form Hessian and gradient covariance
(linear softmax regression)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.probes.phi import measure_phi, phi, rank_value


def test_phi_formula_and_argument_checks():
    assert phi(50.0, 100, 5.0, 4.0, 20) == pytest.approx(0.5 / 5 * 4 / 20)
    assert phi(-10.0, 10, 2.0, 1.0, 1) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="spectral_norm must be a finite number > 0, got 0"):
        phi(1.0, 10, 0.0, 1.0, 2)
    with pytest.raises(ValueError, match="num_params must be an int >= 1"):
        phi(1.0, 0, 1.0, 1.0, 2)
    with pytest.raises(ValueError, match="data_dim must be an int >= 1"):
        phi(1.0, 10, 1.0, 1.0, 2.5)
    with pytest.raises(ValueError, match="grad_rank must be a finite number >= 0"):
        phi(1.0, 10, 1.0, -1.0, 2)
    with pytest.raises(ValueError, match="rank kind must be one of"):
        rank_value({}, "numerical")
    assert math.isnan(rank_value({"energy_rank_90": 3}, "stable")) and rank_value({"energy_rank_90": 3}, "energy90") == 3.0


def closed_form(W, b, X, y):
    """Hessian and per-example gradients of mean cross-entropy of logits W x + b, in the
    flattening of nn.Linear (weight row-major, then bias): H = mean J_i^T (diag p - p p^T) J_i,
    g_i = J_i^T (p_i - e_{y_i}), J_i = [I_K kron x_i^T, I_K]."""
    K, D = W.shape
    H = np.zeros((K * D + K, K * D + K))
    G = []
    for x, t in zip(X, y):
        z = W @ x + b
        p = np.exp(z - z.max())
        p /= p.sum()
        J = np.hstack([np.kron(np.eye(K), x[None, :]), np.eye(K)])
        H += J.T @ (np.diag(p) - np.outer(p, p)) @ J / len(X)
        G.append(J.T @ (p - np.eye(K)[t]))
    return H, np.array(G)


@pytest.mark.parametrize("rank_kind", ["stable", "energy90"])
def test_measure_phi_matches_the_closed_form_of_softmax_regression(rank_kind):
    rng = np.random.default_rng(0)
    N, D, K = 60, 4, 3
    X, y = rng.normal(size=(N, D)), rng.integers(0, K, N)
    W, b = rng.normal(0, 0.5, (K, D)), rng.normal(0, 0.5, K)
    model = nn.Linear(D, K).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(W))
        model.bias.copy_(torch.from_numpy(b))
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    m = measure_phi(model, [(xt, yt)], (xt[:40], yt[:40]), D, rank_kind=rank_kind, trace_matvecs=45, eig_tol=1e-8, seed=0)

    H, G = closed_form(W, b, X, y)
    evals = np.linalg.eigvalsh(H)
    Gc = G[:40] - G[:40].mean(0)
    sig = np.clip(np.linalg.eigvalsh(Gc.T @ Gc / 40)[::-1], 0, None)
    stable = sig.sum() / sig[0]
    energy = int(np.searchsorted(np.cumsum(sig), 0.9 * sig.sum()) + 1)
    P = K * D + K
    assert m.num_params == P and m.trace == pytest.approx(np.trace(H), rel=1e-8)  # Hutch++ exact: budget covers P = 15
    assert m.spectral_norm == pytest.approx(np.abs(evals).max(), rel=1e-8)
    assert m.stable_rank == pytest.approx(stable, rel=1e-8) and m.energy_rank_90 == energy
    rank = stable if rank_kind == "stable" else energy
    assert m.phi == pytest.approx(np.trace(H) / P / np.abs(evals).max() * rank / D, rel=1e-7)
    assert m.phi_stable == pytest.approx(np.trace(H) / P / np.abs(evals).max() * stable / D, rel=1e-7)


def test_measure_phi_of_an_isotropic_quadratic_direction():
    # Zero weights, inputs on orthogonal axes: H = A kron M with A = (I - 11^T/K)/K, M = mean x~ x~^T,
    # so tr(H) = tr(A) tr(M) and ||H||_2 = lambda_max(A) lambda_max(M) = lambda_max(M) / K.
    K, D = 4, 3
    X = torch.eye(D, dtype=torch.float64).repeat(4, 1) * 2.0  # 12 examples, 4 per axis
    y = torch.arange(12) % K
    model = nn.Linear(D, K).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    m = measure_phi(model, [(X, y)], (X, y), D, trace_matvecs=60, eig_tol=1e-10, seed=1)
    Xa = torch.cat([X, torch.ones(12, 1, dtype=torch.float64)], 1)
    M = (Xa.T @ Xa / 12).numpy()
    assert m.trace == pytest.approx((K - 1) / K * np.trace(M), rel=1e-8)
    assert m.spectral_norm == pytest.approx(np.linalg.eigvalsh(M).max() / K, rel=1e-8)
