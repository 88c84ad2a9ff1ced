"""Gradient noise: per-sample gradients, covariance, ranks, alignment, kappa, D, diag(H) checks."""

from __future__ import annotations

import math

import pytest
import torch
from models import bn_cnn, bn_mlp, classification_batches, model_state, reference_hessian, rel_err, tanh_mlp
from torch import nn

from landscape.curvature.linop import DenseOperator
from landscape.curvature.covariance import GradientCovariance, gradient_covariance, per_sample_gradients
from landscape.curvature.noise import (
    difficulty_index,
    gradient_rank,
    noise_alignment,
    noise_curvature_correlation,
    operator_diagonal,
    subspace_alignment,
)
from landscape.curvature.operators import HessianOperator

CE = nn.CrossEntropyLoss()
F64 = torch.float64


def _loop_grads(model, data, params=None):
    """Per-example gradients by a Python loop of autograd calls on an eval-mode copy."""
    import copy

    ref = copy.deepcopy(model).eval()
    named = dict(ref.named_parameters())
    names = params or [n for n, _ in ref.named_parameters()]
    rows = []
    for x, y in data:
        for i in range(x.shape[0]):
            loss = CE(ref(x[i : i + 1]), y[i : i + 1])
            grads = torch.autograd.grad(loss, [named[n] for n in names])
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_per_sample_gradients_match_autograd_loop(chunk_size):
    model = bn_cnn(2)
    model.train()  # must be evaluated in eval mode and left in train mode
    before = model_state(model)
    data = classification_batches((5, 4), (1, 5, 5), seed=2)
    G = per_sample_gradients(model, CE, data, chunk_size=chunk_size)
    assert G.shape == (9, 51) and G.dtype == F64
    assert rel_err(G, _loop_grads(model, data)) < 1e-12
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model_state(model).items())
    assert all(p.grad is None for p in model.parameters())
    # their mean is the gradient of the mean loss (eval mode)
    op = HessianOperator(model, CE, data, bn_mode="eval")
    assert rel_err(G.mean(0), op.gradient()) < 1e-12


def test_per_sample_gradients_parameter_subset_and_dropout():
    model = bn_mlp(3, dropout=0.5).train()
    data = classification_batches((6,), seed=3)
    names = ["4.weight", "0.bias"]
    G = per_sample_gradients(model, CE, data, params=names)
    # flattened in named_parameters order: 0.bias, then 4.weight
    assert rel_err(G, _loop_grads(model, data, ["0.bias", "4.weight"])) < 1e-12


def _dense_cov(G):
    g = G.mean(0)
    return G.T @ G / G.shape[0] - torch.outer(g, g)


@pytest.mark.parametrize("shape", [(7, 20), (30, 6)], ids=["N<P", "N>P"])
def test_covariance_operator_and_exact_eigenpairs(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(4), dtype=F64) + 0.3
    S = _dense_cov(G)
    sigma = GradientCovariance(G)
    assert rel_err(sigma.to_dense(), S) < 1e-12
    assert sigma.trace() == pytest.approx(float(torch.trace(S)), rel=1e-12)
    assert rel_err(sigma.diagonal(), torch.diagonal(S)) < 1e-12
    assert rel_err(sigma.second_moment_diagonal(), torch.diagonal(G.T @ G) / shape[0]) < 1e-12
    evals, evecs = torch.linalg.eigh(S)
    evals, evecs = evals.flip(0), evecs.flip(1)
    rank = min(shape[0] - 1, shape[1])  # centring removes one dimension
    eig = sigma.eigenpairs()
    assert eig.numerical_rank == rank
    assert rel_err(eig.values, evals[:rank]) < 1e-10
    assert rel_err(eig.vectors.T @ eig.vectors, torch.eye(rank, dtype=F64)) < 1e-10
    assert rel_err(S @ eig.vectors, eig.vectors * eig.values) < 1e-10
    assert sigma.frobenius_norm_sq() == pytest.approx(float((S * S).sum()), rel=1e-10)
    with pytest.raises(ValueError, match=f"numerical rank = {rank}"):
        sigma.eigenpairs(rank + 1)


def test_gradient_covariance_from_model():
    model = tanh_mlp(1)
    data = classification_batches((4, 4), seed=1)
    sigma = gradient_covariance(model, CE, data)
    assert rel_err(sigma.to_dense(), _dense_cov(_loop_grads(model, data))) < 1e-12


def test_gradient_rank_on_known_spectrum():
    # 4 per-sample gradients +-a e1, +-b e2 (mean 0): Sigma = diag(a^2/2, b^2/2, 0, ...)
    a, b, P = 3.0, 1.0, 6
    e = torch.eye(P, dtype=F64)
    G = torch.stack([a * e[0], -a * e[0], b * e[1], -b * e[1]])
    sigma = GradientCovariance(G)
    lam1, lam2 = a * a / 2, b * b / 2
    r = gradient_rank(sigma, energy=0.9)
    assert r.energy_rank == 1  # 9/10 of the energy is in the first direction
    assert gradient_rank(sigma, energy=0.95).energy_rank == 2
    assert r.numerical_rank == 2
    assert r.stable_rank_gradients == pytest.approx((lam1 + lam2) / lam1)
    assert r.stable_rank_covariance == pytest.approx((lam1**2 + lam2**2) / lam1**2)
    assert r.participation_ratio == pytest.approx((lam1 + lam2) ** 2 / (lam1**2 + lam2**2))
    assert r.status == "ok" and r.to_dict()["energy_rank"] == 1
    flat = gradient_rank(GradientCovariance(torch.ones(3, 4, dtype=F64)))
    assert flat.status == "zero covariance" and math.isnan(flat.stable_rank_gradients)
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        gradient_rank(sigma, energy=0.0)


def test_subspace_alignment_known_angles():
    g = torch.Generator().manual_seed(5)
    U = torch.randn(12, 3, generator=g, dtype=F64)
    same = subspace_alignment(U, U @ torch.randn(3, 3, generator=g, dtype=F64))  # same span, other basis
    assert torch.allclose(same.principal_angles, torch.zeros(3, dtype=F64), atol=1e-12)
    assert same.overlap == pytest.approx(1.0, abs=1e-12)
    e = torch.eye(12, dtype=F64)
    ortho = subspace_alignment(e[:, :2], e[:, 2:5])
    assert torch.allclose(ortho.principal_angles, torch.full((2,), math.pi / 2, dtype=F64), atol=1e-12)
    assert ortho.overlap == pytest.approx(0.0, abs=1e-24)
    thetas = torch.tensor([1e-9, 0.3, 1.2], dtype=F64)
    W = torch.cos(thetas) * e[:, :3] + torch.sin(thetas) * e[:, 3:6]
    res = subspace_alignment(e[:, :3], W)
    assert torch.allclose(res.principal_angles, thetas, rtol=1e-9, atol=1e-15)  # small angle from sines
    assert res.overlap == pytest.approx(float((torch.cos(thetas) ** 2).mean()), rel=1e-12)
    bigger = subspace_alignment(e[:, :5], e[:, [1]])  # a line inside a 5-dim subspace
    assert bigger.principal_angles.shape == (1,) and bigger.overlap == pytest.approx(1.0)
    with pytest.raises(ValueError, match="linearly dependent"):
        subspace_alignment(torch.ones(5, 2, dtype=F64), e[:5, :1])
    with pytest.raises(ValueError, match="same number of rows"):
        subspace_alignment(e[:, :1], torch.ones(4, 1, dtype=F64))


def test_kappa_and_difficulty_index_on_constructed_case():
    a, b, P = 2.0, 1.0, 5
    e = torch.eye(P, dtype=F64)
    sigma = GradientCovariance(torch.stack([a * e[0], -a * e[0], b * e[1], -b * e[1]]))  # diag(2, .5, 0, 0, 0)
    H = torch.diag(torch.tensor([10.0, 1.0, 3.0, 0.5, 0.5], dtype=F64))
    top1 = e[:, [0]]  # top Hessian eigenvector
    na = noise_alignment(top1, sigma)
    assert na.kappa == pytest.approx(a * a / (a * a + b * b))  # 0.8
    assert na.kappa_max == pytest.approx(0.8) and na.kappa_random == pytest.approx(1 / P)
    assert float(na.alignment.principal_angles[0]) == pytest.approx(0.0, abs=1e-12)
    top2 = e[:, [0, 2]]  # top-2 Hessian eigenvectors (10 and 3): the second carries no noise
    na2 = noise_alignment(top2, sigma)
    assert na2.kappa == pytest.approx(0.8) and na2.kappa_max == pytest.approx(1.0)
    assert torch.allclose(na2.alignment.principal_angles, torch.tensor([0.0, math.pi / 2], dtype=F64), atol=1e-12)
    misaligned = noise_alignment(e[:, [3]], sigma)
    assert misaligned.kappa == 0.0
    lam_max, tr = 10.0, float(torch.trace(H))  # 15
    D = difficulty_index(lam_max, tr, na.kappa)
    assert D.value == pytest.approx(100.0 / 15.0 * 0.8) and D.status == "ok"
    assert D.to_dict()["kappa"] == pytest.approx(0.8)
    undefined = difficulty_index(1.0, -2.0, 0.5)
    assert math.isnan(undefined.value) and undefined.status.startswith("undefined")
    with pytest.raises(ValueError, match=r"kappa must be in \[0, 1\]"):
        difficulty_index(1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="must be finite"):
        difficulty_index(math.inf, 1.0, 0.5)
    with pytest.raises(ValueError, match="rows but Sigma is 5-dimensional"):
        noise_alignment(torch.ones(4, 1, dtype=F64), sigma)


def test_exact_diagonal_of_hessian_operator():
    model = bn_cnn(3)
    data = classification_batches((4, 3), (1, 5, 5), seed=3)
    H = reference_hessian(model, CE, data)
    op = HessianOperator(model, CE, data)
    d = operator_diagonal(op, "exact", block_size=16)
    assert rel_err(d.values, torch.diagonal(H)) < 1e-10
    assert d.num_matvecs == op.shape[0] and torch.all(d.stderr == 0)


def test_hutchinson_diagonal_unbiased_over_seeds():
    g = torch.Generator().manual_seed(6)
    A = torch.randn(15, 15, generator=g, dtype=F64)
    A = A + A.T
    op = DenseOperator(A)
    runs = torch.stack([operator_diagonal(op, "hutchinson", num_probes=4, seed=s).values for s in range(300)])
    mean, se = runs.mean(0), runs.std(0) / math.sqrt(runs.shape[0])
    assert torch.all((mean - torch.diagonal(A)).abs() < 3.5 * se)  # 15 entries, 3.5 SE each
    one = operator_diagonal(op, "hutchinson", num_probes=50, seed=0)
    assert one.num_matvecs == 50 and one.num_probes == 50 and torch.all(one.stderr > 0)
    # reported stderr matches the spread across seeds
    spread = torch.stack([operator_diagonal(op, "hutchinson", num_probes=50, seed=s).values for s in range(200)]).std(0)
    assert rel_err(one.stderr, spread) < 0.35


def test_noise_curvature_correlation():
    # per-sample gradients whose diag(C) is a known function of diag(H)
    P = 8
    h = torch.linspace(0.5, 4.0, P, dtype=F64)
    G = torch.stack([torch.sqrt(h), -torch.sqrt(h)])  # diag(C) = h, mean 0 so diag(Sigma) = h
    res = noise_curvature_correlation(h, GradientCovariance(G))
    assert res.pearson_second_moment == pytest.approx(1.0) and res.spearman_second_moment == pytest.approx(1.0)
    assert res.pearson_covariance == pytest.approx(1.0) and res.diag_method == "given"
    cubic = noise_curvature_correlation(h**3, GradientCovariance(G))  # monotone, not linear
    assert cubic.spearman_second_moment == pytest.approx(1.0) and cubic.pearson_second_moment < 0.99
    shifted = torch.stack([torch.sqrt(h) + 1.0, -torch.sqrt(h) + 1.0])  # mean 1: C = h + 1, Sigma = h
    anti = noise_curvature_correlation(-h, GradientCovariance(shifted))
    assert anti.spearman_covariance == pytest.approx(-1.0) and anti.pearson_second_moment == pytest.approx(-1.0)
    const = noise_curvature_correlation(torch.ones(P, dtype=F64), GradientCovariance(G))
    assert math.isnan(const.pearson_second_moment) and "diag(H)" in const.status
    est = operator_diagonal(DenseOperator(torch.diag(h)), "exact")
    assert noise_curvature_correlation(est, GradientCovariance(G)).diag_method == "exact"
    with pytest.raises(ValueError, match=r"diag_h must have shape \(8,\)"):
        noise_curvature_correlation(torch.ones(3, dtype=F64), GradientCovariance(G))


def test_argument_errors():
    model = tanh_mlp()
    data = classification_batches((3,))
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None"):
        per_sample_gradients(model, CE, data, chunk_size=0)
    with pytest.raises(ValueError, match="data yielded no examples"):
        per_sample_gradients(model, CE, [])
    with pytest.raises(ValueError, match=r"N >= 2"):
        GradientCovariance(torch.ones(1, 3, dtype=F64))
    with pytest.raises(ValueError, match="unknown diagonal method 'lanczos'"):
        operator_diagonal(torch.eye(3, dtype=F64), "lanczos")
    with pytest.raises(ValueError, match="num_probes must be an int >= 2"):
        operator_diagonal(torch.eye(3, dtype=F64), "hutchinson", num_probes=1)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        operator_diagonal(torch.eye(3, dtype=F64), block_size=0)
