"""Diagonal estimators against exact diagonals: diag(F_emp), diag(Sigma) and diag(G) from per-example
gradients against per-example autograd loops and the dense double-backward GGN; the Hutchinson
diag(H) (plain and with G as control variate) against the dense double-backward Hessian's diagonal,
its stated standard error covering at its level over many seeds; the comparison's closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.curvature.diagonals import compare_diagonals, gradient_diagonals, hutchinson_diagonal
from landscape.curvature.operators import GGNOperator, HessianOperator
from tests.curvature.models import classification_batches, reference_ggn, reference_hessian

C = 10


def _mlp(seed: int = 0) -> nn.Module:
    """8 -> 12 -> tanh -> 10 (238 parameters), float64, weights N(0, 0.5^2)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, C)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net


@pytest.fixture(scope="module")
def case():
    model = _mlp()
    batches = classification_batches([25, 15], in_shape=(8,), num_classes=C)
    return model, batches


def _per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, P) per-example gradients, one autograd call per example."""
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def test_exact_diagonals_match_per_example_loops_and_the_dense_ggn(case) -> None:
    model, batches = case
    d = gradient_diagonals(model, F.cross_entropy, batches, chunk_size=7)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    N = x.shape[0]
    G = _per_example(model, x, y)
    sq = G * G
    np.testing.assert_allclose(d.empirical_fisher.numpy(), sq.mean(0).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d.empirical_fisher_stderr.numpy(), (sq.std(0) / math.sqrt(N)).numpy(), rtol=1e-9, atol=1e-15)
    centred = (G - G.mean(0)) ** 2
    np.testing.assert_allclose(d.covariance.numpy(), centred.mean(0).numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(d.covariance_stderr.numpy(), (centred.std(0) / math.sqrt(N)).numpy(), rtol=1e-7, atol=1e-13)
    # diag(G) against the dense J^T H_z J of the concatenated loss (reverse-mode Jacobian, explicit H_z)
    ggn = reference_ggn(model, F.cross_entropy, batches)
    np.testing.assert_allclose(d.ggn.numpy(), torch.diagonal(ggn).numpy(), rtol=1e-10, atol=1e-15)
    # its stderr: sd over examples of each example's own diag(J_i^T H_i J_i)
    terms = torch.stack([torch.diagonal(reference_ggn(model, F.cross_entropy, [(x[i : i + 1], y[i : i + 1])])) for i in range(N)])
    np.testing.assert_allclose(d.ggn_stderr.numpy(), (terms.std(0) / math.sqrt(N)).numpy(), rtol=1e-8, atol=1e-15)
    assert d.num_examples == N and d.num_classes == C and d.per_sample_passes == 1 + C


def test_hutchinson_with_control_variate_is_unbiased_and_its_stderr_covers(case) -> None:
    model, batches = case
    H = reference_hessian(model, F.cross_entropy, batches)
    exact = torch.diagonal(H).numpy()
    hess = HessianOperator(model, F.cross_entropy, batches)
    ggn = GGNOperator(model, F.cross_entropy, batches)
    dg = gradient_diagonals(model, F.cross_entropy, batches).ggn
    probes, seeds = 24, 40
    est = [hutchinson_diagonal(hess, probes, seed=s, control=ggn, control_diagonal=dg) for s in range(seeds)]
    values = np.stack([e.values.numpy() for e in est])
    se = np.stack([e.stderr.numpy() for e in est])
    assert est[0].method == "hutchinson_control_variate" and est[0].num_matvecs == 2 * probes
    # stated 95 % normal intervals cover the exact diagonal at about their level (t with 23 df: ~0.94)
    covered = np.abs(values - exact) <= 1.96 * se + 1e-12 * np.abs(exact).max()
    assert 0.90 <= covered.mean() <= 0.98, covered.mean()
    # unbiased: the mean over seeds is within its own standard error (z^2 averaging ~1 over entries);
    # rows where H - G vanishes (the output bias: f is affine in it) are exact up to rounding and left out
    spread = values.std(0, ddof=1)
    live = spread > 1e-8 * np.abs(exact).max()
    assert live.sum() > 150
    z = (values.mean(0) - exact)[live] / (spread[live] / math.sqrt(seeds))
    assert 0.6 <= float(np.mean(z * z)) <= 1.5
    assert np.all(np.abs(values - exact)[:, ~live] <= 1e-9 * np.abs(exact).max())
    # the control variate only sees H - G: smaller errors than plain Hutchinson with the same probes (here,
    # random weights and labels, where H - G is large, by ~20 %)
    plain = [hutchinson_diagonal(hess, probes, seed=s) for s in range(10)]
    assert np.mean([e.stderr.numpy().mean() for e in plain]) > 1.1 * se[:10].mean()
    assert plain[0].method == "hutchinson" and plain[0].num_matvecs == probes


def test_plain_hutchinson_on_a_dense_matrix_covers() -> None:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(60, 60, generator=g, dtype=torch.float64)
    A = A + A.T
    exact = torch.diagonal(A).numpy()
    est = [hutchinson_diagonal(A, 50, seed=s) for s in range(40)]
    values, se = np.stack([e.values.numpy() for e in est]), np.stack([e.stderr.numpy() for e in est])
    assert 0.91 <= float((np.abs(values - exact) <= 1.96 * se).mean()) <= 0.98
    # exact control: the residual is zero, so the estimate is exact with stderr 0
    e = hutchinson_diagonal(A, 4, control=A, control_diagonal=torch.diagonal(A))
    np.testing.assert_allclose(e.values.numpy(), exact, rtol=0, atol=1e-12)
    assert float(e.stderr.max()) <= 1e-12


def test_compare_diagonals_closed_forms() -> None:
    b = torch.linspace(1.0, 3.0, 50, dtype=torch.float64)
    c = compare_diagonals(2 * b, b)
    assert c.relative_error == pytest.approx(1.0) and c.scale == pytest.approx(0.5)
    assert c.scaled_relative_error == pytest.approx(0.0, abs=1e-12) and c.pearson == pytest.approx(1.0)
    assert c.spearman == pytest.approx(1.0) and c.pearson_corrected == pytest.approx(1.0) and c.num_params == 50
    # noise removal: an error made only of noise of the stated size is removed exactly
    noise = torch.full((50,), 0.1, dtype=torch.float64)
    signs = torch.where(torch.arange(50) % 2 == 0, 1.0, -1.0).double()
    c = compare_diagonals(b + noise * signs, b, a_stderr=noise)
    assert c.relative_error == pytest.approx(float(noise.norm() / b.norm()))
    assert c.relative_error_denoised == pytest.approx(0.0, abs=1e-6)  # sqrt of a rounding-size difference
    # attenuation: reliability 1 - mean(se^2) / var(a)
    assert c.reliability_a == pytest.approx(1 - 0.01 / float((b + noise * signs).var(unbiased=False)))


def test_bad_inputs_are_named(case) -> None:
    model, batches = case
    with pytest.raises(ValueError, match="softmax cross-entropy"):
        gradient_diagonals(model, F.mse_loss, batches)
    with pytest.raises(ValueError, match="softmax cross-entropy"):
        gradient_diagonals(model, nn.CrossEntropyLoss(label_smoothing=0.1), batches)
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_probes must be an int >= 2"):
        hutchinson_diagonal(A, 1)
    with pytest.raises(ValueError, match="give both or neither"):
        hutchinson_diagonal(A, 4, control=A)
    with pytest.raises(ValueError, match=r"\(5,\) control_diagonal"):
        hutchinson_diagonal(A, 4, control=A, control_diagonal=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        compare_diagonals(torch.ones(5), torch.ones(6))
    with pytest.raises(ValueError, match="a_stderr"):
        compare_diagonals(torch.arange(5.0), torch.arange(5.0), a_stderr=-torch.ones(5))
