"""The whole engine on real networks: HessianOperator + estimators against a dense float64
double-backward Hessian (the issue's ground truth), for a tanh MLP, a CNN with BN in eval
mode, an MLP with LayerNorm and a BN MLP in batch-statistics mode."""

import pytest
import torch
import torch.nn.functional as F

from landscape.curvature import HVP_MODES, HessianOperator, logdet, spectral_density, top_eigenpairs, trace
from landscape.models import build_model
from models import bn_cnn, bn_mlp, classification_batches, ln_mlp, reference_hessian, tanh_mlp

CASES = {
    "tanh_mlp": (tanh_mlp, (4,), "eval"),
    "bn_cnn_eval": (bn_cnn, (1, 5, 5), "eval"),
    "ln_mlp": (ln_mlp, (4,), "eval"),
    "bn_mlp_batch": (bn_mlp, (4,), "batch"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    build, in_shape, bn_mode = CASES[request.param]
    model = build(seed=3)
    batches = classification_batches([7, 5, 6], in_shape=in_shape, seed=3)
    op = HessianOperator(model, F.cross_entropy, batches, bn_mode=bn_mode)
    H = reference_hessian(model, F.cross_entropy, batches, bn_mode=bn_mode)
    return op, H, torch.linalg.eigvalsh(H)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_top5_within_1e6_of_dense(case, which):
    op, H, evals = case
    res = top_eigenpairs(op, k=5, which=which, tol=1e-10, seed=0)
    expected = {
        "LA": evals.flip(0)[:5],
        "SA": evals[:5],
        "LM": evals[evals.abs().argsort(descending=True)][:5],
    }[which]
    assert res.converged
    torch.testing.assert_close(res.values, expected, rtol=1e-6, atol=1e-9 * evals.abs().max().item())
    # each Ritz pair is a true eigenpair of the dense matrix
    resid = (H @ res.vectors - res.vectors * res.values).norm(dim=0)
    assert (resid <= 1e-6 * evals.abs().max()).all()


def _same_draws(estimate, op, H, seeds=(0, 1)) -> None:
    """``estimate(A, seed)`` through the network's operator equals the same call on its dense
    Hessian: the probes are the same draws, so the many-seed statistics below, taken on the
    dense matrix for speed, are the statistics of the operator's estimates."""
    for s in seeds:
        via_op, via_dense = estimate(op, s), estimate(H, s)
        torch.testing.assert_close(torch.tensor(via_op), torch.tensor(via_dense), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_trace_unbiased_over_200_seeds(case, method):
    op, H, _ = case
    estimate = lambda A, s: trace(A, num_matvecs=12, method=method, seed=s).value
    _same_draws(estimate, op, H)
    exact = torch.trace(H).item()
    values = torch.tensor([estimate(H, s) for s in range(200)], dtype=torch.float64)
    se = values.std() / 200**0.5
    assert abs(values.mean().item() - exact) <= 3 * se.item() + 1e-12


def test_hutchpp_variance_below_hutchinson(case):
    op, H, _ = case
    estimates = {m: (lambda A, s, m=m: trace(A, num_matvecs=24, method=m, seed=s).value) for m in ("hutchinson", "hutch++")}
    for estimate in estimates.values():
        _same_draws(estimate, op, H, seeds=(0,))
    hutch, hpp = (torch.tensor([estimates[m](H, s) for s in range(100)]) for m in ("hutchinson", "hutch++"))
    assert hpp.var() < hutch.var()


def test_slq_moments_exact_and_logdet_within_error(case):
    op, H, evals = case
    P = H.shape[0]
    V = torch.randn(P, 3, generator=torch.Generator().manual_seed(0), dtype=H.dtype)
    dens = spectral_density(op, num_steps=10, probes=V)
    # Gauss quadrature with m = 10 nodes integrates lambda^j exactly for j < 2m:
    # sum_i w_i theta_i^j = v^T H^j v / v^T v for every probe v.
    for j in (1, 2, 3, 5):
        quadrature = (dens.weights * dens.nodes**j).sum(1)
        exact = (V * (torch.linalg.matrix_power(H, j) @ V)).sum(0) / (V * V).sum(0)
        torch.testing.assert_close(quadrature, exact, rtol=1e-9, atol=1e-12 * evals.abs().max().item() ** j)
    # log det(H + eps I), eigenvalues below 0 counted at the floor eps (the documented policy):
    # the 3-standard-error interval covers the exact value for most seeds.
    eps = 1e-2
    exact_logdet = torch.log(torch.clamp(evals + eps, min=eps)).sum().item()
    estimate = lambda A, s: logdet(A, eps=eps, num_probes=4, num_steps=P, seed=s)
    _same_draws(lambda A, s: [estimate(A, s).value, estimate(A, s).stderr], op, H, seeds=(0,))
    estimates = [estimate(H, s) for s in range(10)]
    covered = [abs(e.value - exact_logdet) <= 3 * e.stderr + 1e-8 for e in estimates]
    assert sum(covered) >= 8


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
def test_transformer_lm_hvp_and_top_eigenvalues_match_dense(hvp_mode):
    """Through causal attention, LayerNorm and the embedding lookup (the WikiText-2 model)."""
    model = build_model("lm_transformer", num_classes=7, in_features=5, embed_dim=4, depth=1, num_heads=2,
                        seed=1).double()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randint(0, 7, (n, 5), generator=g).double(), torch.randint(0, 7, (n,), generator=g))
               for n in (6, 4)]
    op = HessianOperator(model, F.cross_entropy, batches, hvp_mode=hvp_mode)
    H = reference_hessian(model, F.cross_entropy, batches)
    V = torch.randn(H.shape[0], 3, dtype=torch.float64, generator=g)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-10)
    evals = torch.linalg.eigvalsh(H)
    res = top_eigenpairs(op, k=3, which="LA", tol=1e-10, seed=0)
    torch.testing.assert_close(res.values, evals.flip(0)[:3], rtol=1e-6, atol=1e-9)
