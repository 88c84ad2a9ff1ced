"""Phi: the formula, the measurement against a closed-form Hessian and gradient covariance
(linear softmax regression), the search configuration, and a tiny real search."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.schema import ConfigError, parse_config
from landscape.probes.phi import PhiSearchConfig, SearchData, measure_phi, phi, rank_value, run_phi_search


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


def small_cfg(**over):
    values = {"seeds": [0], "mixture_dims": [4], "mixture_classes": 3, "mixture_separation": 4.0, "mixture_test": 100,
              "grid": {"widths": [4, 16], "depths": [1]},
              "probe": {"num_examples": 64, "noise_examples": 32, "trace_matvecs": 8},
              "training": {"train_examples": 128, "epochs": 2, "batch_size": 32}}
    values.update(over)
    return parse_config(PhiSearchConfig, values, "phi.search")


def test_search_config_rejects_bad_values_with_the_key():
    with pytest.raises(ConfigError, match="unknown key phi.search.grid.heights"):
        parse_config(PhiSearchConfig, {"grid": {"heights": [1]}}, "phi.search")
    with pytest.raises(ConfigError, match="widths=.* is not allowed"):
        parse_config(PhiSearchConfig, {"grid": {"widths": [0, 4]}}, "phi.search")
    with pytest.raises(ConfigError, match="rank='numerical' is not allowed"):
        parse_config(PhiSearchConfig, {"probe": {"rank": "numerical"}}, "phi.search")
    with pytest.raises(ConfigError, match="noise_examples=600 exceeds num_examples=500"):
        parse_config(PhiSearchConfig, {"probe": {"noise_examples": 600}}, "phi.search")
    with pytest.raises(ConfigError, match="select_at='trained' needs also_trained=true"):
        parse_config(PhiSearchConfig, {"probe": {"select_at": "trained"}}, "phi.search")
    with pytest.raises(ConfigError, match="probe.num_examples=500 exceeds training.train_examples=100"):
        parse_config(PhiSearchConfig, {"training": {"train_examples": 100, "batch_size": 10}}, "phi.search")


def mixture_data():
    from landscape.data.synthetic import gaussian_mixture

    ds = gaussian_mixture(num_classes=3, dim=4, separation=4.0, n=228, seed=0)
    return SearchData("gm4", (ds.x[:128], ds.y[:128]), (ds.x[128:], ds.y[128:]), 3, "gaussian_mixture")


def test_tiny_search_rows_are_complete_and_independent_of_workers():
    cfg = small_cfg(probe={"num_examples": 64, "noise_examples": 32, "trace_matvecs": 8, "also_trained": True})
    data = mixture_data()
    rows = run_phi_search(cfg, [data], workers=1)
    assert [(r["width"], r["depth"]) for r in rows] == [(4, 1), (16, 1)]
    for r in rows:
        assert r["status"] == "completed" and r["steps"] == 2 * (128 // 32) and 0 <= r["test_error"] <= 1
        assert r["phi"] == r["init"]["phi"] and math.isfinite(r["phi"]) and r["init"]["noise_examples"] == 32
        assert r["num_params"] == r["width"] * 4 + r["width"] + r["width"] * 3 + 3 and "trained" in r
    forked = run_phi_search(cfg, [data], workers=2)
    assert [r["phi"] for r in forked] == [r["phi"] for r in rows]
    assert [r["test_error"] for r in forked] == [r["test_error"] for r in rows]
