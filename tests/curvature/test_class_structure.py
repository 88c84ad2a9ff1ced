"""Top-100 Lanczos of the Hessian and the GGN against dense float64 eigendecompositions (double
backward; explicit J^T H_z J), and the class-structure tests on planted matrices: a GGN built from
class-structured gradients has C - 1 outliers, which the spike count and the gap test find; a
planted C(C - 1) tier is separated at rank C^2 - 1, a smooth spectrum is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.curvature.class_structure import class_structure, tier_gap
from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.operators import GGNOperator, HessianOperator
from tests.curvature.conftest import from_spectrum
from tests.curvature.models import classification_batches, reference_ggn, reference_hessian

C = 10


def _mlp(seed: int = 0) -> nn.Module:
    """8 -> 16 -> tanh -> 10 (314 parameters), float64."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, C)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net


@pytest.mark.parametrize("which", ["hessian", "ggn"])
def test_top_100_lanczos_matches_the_dense_spectrum(which: str) -> None:
    model = _mlp()
    batches = classification_batches([30, 30], in_shape=(8,), num_classes=C)
    if which == "hessian":
        op, dense = HessianOperator(model, F.cross_entropy, batches), reference_hessian(model, F.cross_entropy, batches)
    else:
        op, dense = GGNOperator(model, F.cross_entropy, batches), reference_ggn(model, F.cross_entropy, batches)
    exact = torch.linalg.eigvalsh((dense + dense.T) / 2).flip(0)[:100].numpy()
    eig = top_eigenpairs(op, k=100, which="LA", tol=1e-9, seed=0, verify=True, check_multiplicity=False, max_matvecs=3000)
    assert eig.converged
    theta = eig.values.numpy()
    bounds = eig.residual_norms(op).numpy()  # explicit ||A y - theta y||: an eigenvalue lies within it
    np.testing.assert_allclose(theta, exact, rtol=0, atol=1e-7 * abs(exact[0]))
    assert np.all(np.abs(theta - exact) <= bounds + 1e-12 * abs(exact[0]))
    if which == "ggn":
        assert exact.min() >= -1e-12  # PSD


def _planted_ggn(P: int = 400, N: int = 2000, strength: float = 6.0, seed: int = 0) -> torch.Tensor:
    """``(1/N) sum_i g_i g_i^T`` with ``g_i = mu_(y_i) + noise``: C class means summing to zero (a
    (C - 1)-dimensional span, Papyan's class structure) over isotropic unit noise (a Marchenko-Pastur bulk)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(C, P, generator=g, dtype=torch.float64)
    mu = mu - mu.mean(0)
    mu = mu / mu.norm(dim=1, keepdim=True) * strength * math.sqrt(P / N) ** 0.5 * math.sqrt(C)
    y = torch.arange(N) % C
    grads = mu[y] + torch.randn(N, P, generator=g, dtype=torch.float64) / math.sqrt(P) * math.sqrt(P / 4)
    return grads.T @ grads / N


def test_planted_class_structure_gives_c_minus_1_spikes() -> None:
    G = _planted_ggn()
    exact = torch.linalg.eigvalsh(G).flip(0)
    eig = top_eigenpairs(G, k=30, which="LA", tol=1e-8, seed=1, verify=False, check_multiplicity=False)
    np.testing.assert_allclose(eig.values.numpy(), exact[:30].numpy(), rtol=1e-6)
    s = class_structure(eig.values, C)
    assert s.spikes.num_spikes == C - 1 and s.equals_c_minus_1
    assert s.outliers.separated and s.outliers.ratio > 3
    assert s.cross_class.status.startswith("untestable") and not s.cross_class.separated  # k = 30 < 99 + 5
    # the Hessian-like H = G + a small symmetric residual keeps the C - 1 outliers
    g = torch.Generator().manual_seed(5)
    W = torch.randn(G.shape, generator=g, dtype=torch.float64)
    H = G + 0.02 * (W + W.T) / math.sqrt(2 * G.shape[0])
    assert class_structure(top_eigenpairs(H, k=30, which="LA", tol=1e-8, seed=1).values, C).spikes.num_spikes == C - 1
    # no class structure (strength 0): no outliers at C - 1
    flat = class_structure(torch.linalg.eigvalsh(_planted_ggn(strength=0.0)).flip(0)[:30], C)
    assert flat.spikes.num_spikes < C - 1 and not flat.outliers.separated


def test_planted_cross_class_tier_is_separated_at_c_squared_minus_1() -> None:
    g = torch.Generator().manual_seed(2)
    P = 400
    bulk = 3.0 * torch.rand(P - C * C + 1, generator=g, dtype=torch.float64)
    outliers = torch.linspace(60.0, 30.0, C - 1, dtype=torch.float64)
    tier = torch.linspace(14.0, 8.0, C * (C - 1), dtype=torch.float64)
    A = from_spectrum(torch.cat([outliers, tier, bulk]), seed=3).matrix
    eig = top_eigenpairs(A, k=110, which="LA", tol=1e-9, seed=0, verify=False, check_multiplicity=False, max_matvecs=4000)
    s = class_structure(eig.values, C)
    assert s.outliers.separated and s.cross_class.separated and s.cross_class.status == "ok"
    assert s.cross_class.rank == C * C - 1 and s.cross_class.gap == pytest.approx(8.0 - float(bulk.max()), rel=1e-6)
    # a smooth spectrum (no tier): the gap at rank 99 does not clear its threshold
    smooth = from_spectrum(torch.cat([outliers, 14.0 * torch.exp(-torch.arange(P - C + 1, dtype=torch.float64) / 40)]), seed=3).matrix
    s = class_structure(top_eigenpairs(smooth, k=110, which="LA", tol=1e-9, seed=0, max_matvecs=4000).values, C)
    assert s.outliers.separated and not s.cross_class.separated and s.cross_class.ratio < 1


def test_tier_gap_closed_form_and_errors() -> None:
    # below rank 2 the values continue an exact edge law lambda_j = 1 - 0.1 (j - 1)^(2/3): delta = 0.2
    j = np.arange(3, 9)
    values = np.concatenate([[5.0, 4.0], 1 - 0.1 * (j - 1.0) ** (2 / 3)])
    t = tier_gap(values, 2, edge_points=5)
    assert t.delta == pytest.approx(0.2) and t.gap == pytest.approx(4.0 - values[2]) and t.separated
    assert tier_gap(values, 5, edge_points=5).status == "untestable: needs k >= rank + edge_points = 10 eigenvalues, got k = 8"
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        tier_gap(values, 0)
    with pytest.raises(ValueError, match="edge_points must be an int >= 3"):
        tier_gap(values, 1, edge_points=2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        class_structure(values, 1)
    with pytest.raises(ValueError, match="finite"):
        class_structure([1.0, math.nan, 0.5, 0.4, 0.3, 0.2, 0.1], 2)
