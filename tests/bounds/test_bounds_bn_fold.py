"""BatchNorm folding: the folded network equals the eval-mode one; its KL against dense references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence
from torch.func import functional_call

from landscape.bounds.bn_fold import batchnorm_fold, kl_lowrank_folded
from landscape.bounds.gaussians import LowRankGaussian, kl_lowrank

F64 = torch.float64


def _bn_net(seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2),
    ).to(F64)
    for m in net.modules():  # trained-looking statistics and affine parameters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=F64) * 3 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
    return net.eval()


def _flat(net: nn.Module) -> tuple[list[str], torch.Tensor]:
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    return names, torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _params(net: nn.Module, names: list[str], v: torch.Tensor) -> dict[str, torch.Tensor]:
    shapes = [p.shape for p in net.parameters()]
    sizes = [math.prod(s) for s in shapes]
    return {n: c.reshape(s) for n, c, s in zip(names, v.split(sizes), shapes)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_network_with_reset_statistics_equals_eval_network(seed):
    net = _bn_net(seed)
    names, theta = _flat(net)
    fold = batchnorm_fold(net, names)
    assert fold.modules == ("1", "5") and set(fold.buffers) == {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"}
    x = torch.randn(7, 1, 6, 6, generator=torch.Generator().manual_seed(seed + 10), dtype=F64)
    ref = net(x)
    folded = functional_call(net, {**fold.buffers, **_params(net, names, fold.apply(theta))}, (x,))
    torch.testing.assert_close(folded, ref, rtol=1e-12, atol=1e-12)
    # Any perturbed theta maps to the same function too (T is what makes the class data-free).
    delta = 0.1 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    a = functional_call(net, _params(net, names, theta + delta), (x,))
    b = functional_call(net, {**fold.buffers, **_params(net, names, fold.apply(theta + delta))}, (x,))
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_fold_matrix_logdet_and_frobenius_match_dense():
    net = _bn_net(3)
    names, theta = _flat(net)
    fold = batchnorm_fold(net, names)
    P = theta.shape[0]
    T = fold.apply(torch.eye(P, dtype=F64))
    sign, logabsdet = torch.linalg.slogdet(T)
    assert float(sign) == 1.0 and fold.logdet() == pytest.approx(float(logabsdet), rel=1e-12)
    assert fold.frobenius_sq() == pytest.approx(float((T**2).sum()), rel=1e-12)
    torch.testing.assert_close(fold.apply(theta), T @ theta, rtol=1e-13, atol=1e-13)


def _posterior(P: int, k: int, seed: int, mean: torch.Tensor) -> LowRankGaussian:
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=F64))
    return LowRankGaussian(mean, V, torch.rand(k, generator=g, dtype=F64) * 0.05 + 1e-3, 0.02)


@pytest.mark.parametrize("var_p", [0.005, 0.03, 0.5])
def test_folded_kl_matches_dense_pushforward(var_p):
    net = _bn_net(4)
    names, theta = _flat(net)
    fold = batchnorm_fold(net, names)
    P = theta.shape[0]
    post = _posterior(P, 4, seed=5, mean=theta)
    mean_p = 0.3 * torch.randn(P, generator=torch.Generator().manual_seed(6), dtype=F64)
    T = fold.apply(torch.eye(P, dtype=F64))
    S = T @ post.to_dense() @ T.T
    ref = kl_divergence(
        MultivariateNormal(T @ theta, 0.5 * (S + S.T)), MultivariateNormal(mean_p, var_p * torch.eye(P, dtype=F64))
    )
    got = kl_lowrank_folded(post, fold, mean_p, var_p)
    assert got.kl == pytest.approx(float(ref), rel=1e-9)
    assert got.trace == pytest.approx(float(torch.trace(S)) / var_p, rel=1e-12)


def test_identity_fold_reduces_to_kl_lowrank():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).to(F64)
    names, theta = _flat(net)
    fold = batchnorm_fold(net, names)
    assert fold.is_identity and fold.buffers == {}
    torch.testing.assert_close(fold.apply(theta), theta, rtol=0, atol=0)
    post = _posterior(theta.shape[0], 3, seed=1, mean=theta)
    mean_p = torch.zeros_like(theta)
    assert kl_lowrank_folded(post, fold, mean_p, 0.1).kl == pytest.approx(kl_lowrank(post, mean_p, 0.1).kl, rel=1e-10)


def test_unfoldable_layers_are_left_alone():
    net = _bn_net(0)
    net[1] = nn.BatchNorm2d(3, affine=False).to(F64)  # no (gamma, beta) to fold into
    net[5].weight.requires_grad_(False)  # frozen gamma: not in the flat vector
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    fold = batchnorm_fold(net, names)
    assert fold.is_identity and fold.modules == ()


def test_errors():
    net = _bn_net(0)
    names, theta = _flat(net)
    fold = batchnorm_fold(net, names)
    post = _posterior(theta.shape[0], 2, seed=0, mean=theta)
    with pytest.raises(ValueError, match="var_p must be a finite float > 0"):
        kl_lowrank_folded(post, fold, theta, 0.0)
    with pytest.raises(ValueError, match="mean_p must have shape"):
        kl_lowrank_folded(post, fold, theta[:-1], 0.1)
    with pytest.raises(ValueError, match="fold acts on"):
        kl_lowrank_folded(_posterior(10, 2, seed=0, mean=torch.zeros(10, dtype=F64)), fold, torch.zeros(10, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="X must have shape"):
        fold.apply(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="lacks: \\['nope'\\]|the model lacks"):
        batchnorm_fold(net, ["nope"])
    with pytest.raises(ValueError, match="must not repeat"):
        batchnorm_fold(net, [names[0], names[0]])
