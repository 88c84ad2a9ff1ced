"""Curvature-aware optimizers: exact reductions to SGD/Adam, hand-computed steps on a
quadratic, power iteration against a dense eigendecomposition, exact resume, training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.training.config import TrainConfig
from landscape.optim import CurvatureAdaptiveSGD, HybridAdam, gradients_with_graph, power_iteration
from landscape.training import train_model

A = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)  # eigenvalues 3 +- sqrt(2)
B = torch.tensor([1.0, -2.0], dtype=torch.float64)
LAMBDA_MAX = 3.0 + math.sqrt(2.0)


def quadratic(w: torch.Tensor) -> torch.Tensor:
    """0.5 w^T A w - b^T w: Hessian A everywhere, gradient A w - b."""
    return 0.5 * w @ A @ w - B @ w


def top_eigvec() -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(A)
    return vecs[:, -1]


def small_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, x, y


def run_steps(model, optimizer, x, y, steps: int, uses_backward: bool) -> None:
    for i in range(steps):
        xb, yb = x[(i * 16) % 64 :][:16], y[(i * 16) % 64 :][:16]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        if uses_backward:
            optimizer.backward(loss)
        else:
            loss.backward()
        optimizer.step()


def test_power_iteration_matches_dense_top_eigenpair():
    w = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    grads = gradients_with_graph(quadratic(w), [w])
    gen = torch.Generator().manual_seed(0)
    est = power_iteration(grads, [w], None, steps=60, generator=gen)
    assert est.value == pytest.approx(LAMBDA_MAX, rel=1e-10)
    assert abs(float(est.vector[0] @ top_eigvec())) == pytest.approx(1.0, abs=1e-10)
    assert est.num_hvps == 60
    # warm start from the converged vector: one product already gives the eigenvalue
    again = power_iteration(grads, [w], est.vector, steps=1)
    assert again.value == pytest.approx(LAMBDA_MAX, rel=1e-12)


def test_power_iteration_rejects_bad_arguments():
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    grads = gradients_with_graph(quadratic(w), [w])
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        power_iteration(grads, [w], None, steps=0)
    with pytest.raises(ValueError, match="start vector .* is zero"):
        power_iteration(grads, [w], [torch.zeros(2, dtype=torch.float64)], steps=2)


def test_adaptive_sgd_step_on_quadratic_matches_hand_computation():
    w0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    lr, gamma = 0.1, 0.5
    opt = CurvatureAdaptiveSGD([w], lr=lr, gamma=gamma, every=1, power_steps=80)
    opt.zero_grad()
    opt.backward(quadratic(w))
    opt.step()
    expected = w0 - lr / (1.0 + gamma * LAMBDA_MAX) * (A @ w0 - B)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    assert opt.lr_factor == pytest.approx(1.0 / (1.0 + gamma * LAMBDA_MAX), rel=1e-12)
    assert opt.num_hvps == 80
    assert opt.param_groups[0]["lr"] == lr  # the factor is applied per step, not stored


def test_hybrid_step_on_quadratic_matches_hand_computation():
    w0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    lr, mu, eps = 0.01, 0.5, 1e-8
    opt = HybridAdam([w], lr=lr, eps=eps, mu=mu, every=1, power_steps=80)
    opt.zero_grad()
    opt.backward(quadratic(w))
    opt.step()
    g = A @ w0 - B
    adam_direction = g / (g.abs() + eps)  # first Adam step: m_hat = g, v_hat = g^2
    v = top_eigvec()
    v = v if float(v @ g) >= 0 else -v  # oriented along the gradient: -v descends
    expected = w0 - lr * (adam_direction + mu * v)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-10)


def test_gamma_zero_is_plain_sgd_bit_for_bit():
    model_a, x, y = small_problem()
    model_b, _, _ = small_problem()
    sgd = torch.optim.SGD(model_a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    ours = CurvatureAdaptiveSGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True, gamma=0.0)
    run_steps(model_a, sgd, x, y, 12, uses_backward=False)
    run_steps(model_b, ours, x, y, 12, uses_backward=True)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
    assert ours.num_hvps == 0


def test_mu_zero_is_plain_adam_bit_for_bit():
    model_a, x, y = small_problem()
    model_b, _, _ = small_problem()
    adam = torch.optim.Adam(model_a.parameters(), lr=1e-2, weight_decay=1e-3)
    ours = HybridAdam(model_b.parameters(), lr=1e-2, weight_decay=1e-3, mu=0.0)
    run_steps(model_a, adam, x, y, 12, uses_backward=False)
    run_steps(model_b, ours, x, y, 12, uses_backward=True)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make", [
    lambda p: CurvatureAdaptiveSGD(p, lr=0.1, momentum=0.9, gamma=0.3, every=3, power_steps=2),
    lambda p: HybridAdam(p, lr=1e-2, mu=0.05, every=3, power_steps=2),
])
def test_resume_from_state_dict_is_exact(make):
    model_a, x, y = small_problem()
    opt_a = make(model_a.parameters())
    run_steps(model_a, opt_a, x, y, 10, uses_backward=True)

    model_b, _, _ = small_problem()
    opt_b = make(model_b.parameters())
    run_steps(model_b, opt_b, x, y, 5, uses_backward=True)
    saved_model, saved_opt = model_b.state_dict(), opt_b.state_dict()
    model_c, _, _ = small_problem(seed=1)  # different weights, overwritten by the load
    model_c.load_state_dict(saved_model)
    opt_c = make(model_c.parameters())
    opt_c.load_state_dict(saved_opt)
    for i in range(5, 10):  # the same batches as steps 5..9 of the uninterrupted run
        xb, yb = x[(i * 16) % 64 :][:16], y[(i * 16) % 64 :][:16]
        opt_c.zero_grad(set_to_none=True)
        opt_c.backward(nn.functional.cross_entropy(model_c(xb), yb))
        opt_c.step()
    for a, c in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(a, c)
    assert opt_c.num_hvps == opt_a.num_hvps > 0


def test_adaptive_rate_shrinks_with_curvature():
    """A sharper quadratic gets a smaller effective rate: factor = 1 / (1 + gamma lambda)."""
    factors = []
    for scale in (1.0, 10.0):
        w = nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))
        opt = CurvatureAdaptiveSGD([w], lr=0.1, gamma=1.0, every=1, power_steps=60)
        opt.zero_grad()
        opt.backward(scale * quadratic(w))
        opt.step()
        factors.append(opt.lr_factor)
    assert factors[0] == pytest.approx(1 / (1 + LAMBDA_MAX), rel=1e-9)
    assert factors[1] == pytest.approx(1 / (1 + 10 * LAMBDA_MAX), rel=1e-9)


@pytest.mark.parametrize("name, knob", [("curvature_adaptive", "curvature_gamma"), ("hybrid", "hybrid_mu")])
def test_training_loop_drives_curvature_optimizers(name, knob):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=gen)
    y = (x[:, 0] > 0).long()
    train, test = (x[:96], y[:96]), (x[96:], y[96:])
    base = dict(epochs=2, batch_size=32, lr=0.05 if name == "curvature_adaptive" else 1e-2, schedule="constant", weight_decay=0.0)

    def fit(optimizer: str, **extra) -> tuple[str, list[dict]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
        result = train_model(model, train, test, TrainConfig(optimizer=optimizer, **base, **extra), seed=0)
        return result.state_hash, result.history

    plain_name = "sgd" if name == "curvature_adaptive" else "adam"
    plain_hash, _ = fit(plain_name)
    off_hash, off_history = fit(name, **{knob: 0.0})
    assert off_hash == plain_hash  # the knob at 0 is the plain optimizer, through the loop
    assert off_history[-1]["hvps_total"] == 0
    on_hash, on_history = fit(name, **{knob: 0.5, "curvature_every": 2, "power_steps": 3})
    assert on_hash != plain_hash
    assert on_history[-1]["hvps_total"] == 3 * math.ceil(2 * 3 / 2)  # 6 steps, estimate every 2nd
    assert on_history[-1]["curvature_estimate"] > 0


def test_training_loop_estimates_curvature_through_fused_attention():
    """Estimate steps build their loss on attention's math path; the model keeps fused kernels."""
    from landscape.models import build_model

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 8, 8, generator=gen)
    y = torch.randint(0, 3, (48,), generator=gen)
    model = build_model("vit_small_32", seed=0, in_chans=1, img_size=8, num_classes=3, patch_size=4, embed_dim=8,
                        depth=1, num_heads=2)
    cfg = TrainConfig(optimizer="curvature_adaptive", epochs=1, batch_size=16, lr=0.05, schedule="constant",
                      weight_decay=0.0, curvature_gamma=0.5, curvature_every=2, power_steps=2)
    result = train_model(model, (x[:32], y[:32]), (x[32:], y[32:]), cfg, seed=0)
    assert result.history[-1]["hvps_total"] == 2 * 1  # 2 steps, one estimate of 2 products
    assert result.history[-1]["curvature_estimate"] != 0
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
