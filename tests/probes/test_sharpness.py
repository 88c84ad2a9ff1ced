"""Tests of landscape.probes.sharpness against closed forms on quadratics."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from probe_helpers import DUMMY, Surface, classification_batches, identity_loss, make_mlp, make_quadratic

from landscape.io import to_jsonable
from landscape.probes.functional import parameter_dict
from landscape.probes.sharpness import adaptive_sharpness, average_sharpness, worst_case_sharpness

A, EIGS = make_quadratic([4.0, 2.0, 1.0, 0.5], seed=3)
B = torch.tensor([0.5, -1.0, 0.3, 0.8], dtype=torch.float64)
THETA_STAR = -torch.linalg.solve(A, B)
KW = dict(loss_fn=identity_loss, bn_mode="eval")


def quad(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * t @ A @ t + B @ t


def model() -> Surface:
    return Surface(quad, torch.zeros(4))


def test_l2_worst_case_at_minimum_is_eps2_lambda_max_over_2():
    eps = 0.3
    res = worst_case_sharpness(model(), THETA_STAR, DUMMY, eps=eps, steps=30, restarts=2, seed=0, **KW)
    expected = eps**2 * EIGS.max().item() / 2
    assert res.value == pytest.approx(expected, rel=1e-3)
    assert res.value <= expected * (1 + 1e-12)  # a feasible point: never above the true max
    assert res.delta_norm <= eps * (1 + 1e-12)
    assert res.norm == "l2" and res.step_size == eps and res.bn_mode == "eval" and res.restart_values.shape == (2,)
    json.dumps(to_jsonable(res))


def _vertex_max(theta: torch.Tensor, scale: torch.Tensor, eps: float) -> float:
    base = quad(theta).item()
    return max(quad(theta + eps * scale * torch.tensor(v, dtype=torch.float64)).item() - base for v in itertools.product([-1.0, 1.0], repeat=4))


@pytest.mark.parametrize("adaptive", [False, True])
def test_linf_worst_case_on_convex_quadratic_is_best_vertex(adaptive):
    # a convex function attains its max over a box at a vertex: brute force the 16 vertices
    theta = THETA_STAR + torch.tensor([0.2, -0.1, 0.05, 0.3], dtype=torch.float64)
    eps = 0.2
    scale = theta.abs() if adaptive else torch.ones(4, dtype=torch.float64)
    res = worst_case_sharpness(model(), theta, DUMMY, eps=eps, norm="linf", steps=20, restarts=3, adaptive=adaptive, seed=1, **KW)
    assert res.value == pytest.approx(_vertex_max(theta, scale, eps), rel=1e-10)
    assert res.delta_norm == pytest.approx(eps)


def test_adaptive_l2_at_minimum_is_top_eigenvalue_of_scaled_hessian():
    eps = 0.2
    S = torch.diag(THETA_STAR.abs())
    expected = eps**2 * torch.linalg.eigvalsh(S @ A @ S).max().item() / 2
    res = adaptive_sharpness(model(), THETA_STAR, DUMMY, eps=eps, steps=40, restarts=2, seed=0, **KW)
    assert res.adaptive and res.xi == 0.0
    assert res.value == pytest.approx(expected, rel=1e-3)


def test_cosine_schedule_converges_too():
    eps = 0.3
    res = worst_case_sharpness(model(), THETA_STAR, DUMMY, eps=eps, steps=40, schedule="cosine", seed=2, **KW)
    assert res.value == pytest.approx(eps**2 * EIGS.max().item() / 2, rel=1e-3) and res.schedule == "cosine"


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_sharpness_is_unbiased_over_seeds(adaptive):
    sigma = 0.1
    scale = THETA_STAR.abs() if adaptive else torch.ones(4, dtype=torch.float64)
    truth = sigma**2 * torch.trace(torch.diag(scale) @ A @ torch.diag(scale)).item() / 2
    runs = [average_sharpness(model(), THETA_STAR, DUMMY, sigma=sigma, num_samples=40, adaptive=adaptive, seed=s, **KW) for s in range(20)]
    z = np.array([(r.value - truth) / r.stderr for r in runs])
    assert np.mean(np.abs(z) < 3) >= 0.9  # each run within 3 stderr (P(miss) = 0.3% each)
    pooled = np.mean([r.value for r in runs])
    pooled_se = np.sqrt(np.mean([r.stderr**2 for r in runs]) / len(runs))
    assert abs(pooled - truth) < 3 * pooled_se
    assert runs[0].num_samples == 40 and runs[0].sigma == sigma and runs[0].adaptive == adaptive


def test_seed_determinism_and_no_side_effects_on_bn_network():
    batches = classification_batches()
    net = make_mlp(bn=True)
    snap = {k: v.clone() for k, v in net.state_dict().items()}
    kw = dict(eps=0.05, steps=3, seed=5, bn_mode="recalibrate", recal_batches=batches[:2])
    r1 = worst_case_sharpness(net, parameter_dict(net), batches, **kw)
    r2 = worst_case_sharpness(net, parameter_dict(net), batches, **kw)
    assert r1.value == r2.value and r1.value > 0 and r1.bn_mode == "recalibrate"
    a1 = average_sharpness(net, parameter_dict(net), batches, sigma=0.01, num_samples=3, seed=1, bn_mode="batch")
    assert a1.bn_mode == "batch" and np.isfinite(a1.stderr)
    assert all(torch.equal(v, snap[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_sharpness_argument_errors():
    m = model()
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.0, **KW)
    with pytest.raises(ValueError, match="norm must be one of"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.1, norm="l1", **KW)
    with pytest.raises(ValueError, match="schedule must be one of"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.1, schedule="step", **KW)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.1, steps=0, **KW)
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.1, restarts=0, **KW)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        worst_case_sharpness(m, THETA_STAR, DUMMY, eps=0.1, step_size=-1.0, **KW)
    with pytest.raises(ValueError, match="xi must be >= 0"):
        adaptive_sharpness(m, THETA_STAR, DUMMY, eps=0.1, xi=-0.1, **KW)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        average_sharpness(m, THETA_STAR, DUMMY, sigma=float("nan"), **KW)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        average_sharpness(m, THETA_STAR, DUMMY, sigma=0.1, num_samples=1, **KW)
