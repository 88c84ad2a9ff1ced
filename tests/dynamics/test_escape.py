"""Escape from sharp minima (H3's experiment) on landscapes where the answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.dynamics.escape import (
    NOISE_TYPES,
    ModelLandscape,
    escape_study,
    lambda_max_at,
    noise_step,
    segment_barrier,
    trial_rows,
)

D = torch.float64
THREE = ("sgd", "isotropic", "projected")  # the three-arm design (the scaled family has its own test)


class DoubleWell:
    """``l_i(theta) = f(theta_0) + c/2 ||theta_{1:}||^2 + a_i . theta`` with a sharp well of
    ``f`` at -1 (curvature ~2 sharp) and a flat one at +1 (~2 flat).

    The per-example terms ``a_i`` (centred) are the only noise: along e_0 with size
    ``s`` (so SGD noise is aligned with the top Hessian direction at the sharp minimum)
    plus ``eps`` in the other directions.
    """

    def __init__(self, d=60, n=64, s=8.0, eps=0.5, sharp=8.0, flat=1.0, c=1.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        z = torch.tensor([1.0, -1.0], dtype=D).repeat(n // 2)
        A = torch.cat([s * z[:, None], eps * torch.randn(n, d - 1, generator=g, dtype=D)], dim=1)
        self.A = A - A.mean(0)
        self.sharp, self.flat, self.c, self.d = sharp, flat, c, d
        self.num_examples = n
        self.start = torch.zeros(d, dtype=D)
        self.start[0] = -1.0

    def _parts(self, x):
        """f(x), f'(x), f''(x) of the two-well profile (closed form)."""
        u, w = self.sharp * (x + 1) ** 2, self.flat * (x - 1) ** 2
        du, dw = 2 * self.sharp * (x + 1), 2 * self.flat * (x - 1)
        p = torch.softmax(torch.stack([-u, -w]), 0)
        m1 = p[0] * du + p[1] * dw
        second = p[0] * 2 * self.sharp + p[1] * 2 * self.flat - (p[0] * du**2 + p[1] * dw**2 - m1**2)
        return -torch.logsumexp(torch.stack([-u, -w]), 0), m1, second

    def loss(self, theta):
        return float(self._parts(theta[0])[0] + 0.5 * self.c * theta[1:].square().sum())

    def gradient(self, theta, index=None):
        g = self.c * theta.clone()
        g[0] = self._parts(theta[0])[1]
        return g if index is None else g + self.A[index].mean(0)

    def hvp(self, theta, v):
        out = self.c * v.clone()
        out[0] = self._parts(theta[0])[2] * v[0]
        return out


def _config(**over):
    """Keyword arguments of ``escape_study``."""
    base = dict(steps=150, step_size=1.0, batch_size=4, noise_types=THREE, restarts=8, top_k=1, check_every=50,
                lambda_drop=0.5, barrier_tol=0.05, barrier_points=21, eig_tol=1e-3, eig_matvecs=60, rule="any")
    return {**base, **over}


@pytest.fixture(scope="module")
def double_well_study():
    well = DoubleWell()
    basis = torch.zeros(well.d, 1, dtype=D)
    basis[0, 0] = 1.0
    return well, escape_study(well, well.start, basis=basis, seed=3, **_config())


def test_aligned_sgd_noise_escapes_and_the_others_do_not(double_well_study):
    _, study = double_well_study
    rate = {k: sum(t.escaped for t in study.trials if t.noise_type == k) / 8 for k in ("sgd", "isotropic", "projected")}
    assert rate["sgd"] >= 0.75
    assert rate["projected"] == 0.0  # no noise along the only unstable direction
    assert rate["isotropic"] <= 0.25
    for t in study.trials:
        if t.escaped_barrier:  # crossed into the flat well at some check
            assert min(c["lambda_max"] for c in t.checks) < 0.2 * t.lambda_start
            assert max(c["barrier"] for c in t.checks) > 0.5
        if not t.escaped:  # stayed in the sharp well: curvature and escape time unchanged
            assert t.lambda_end == pytest.approx(t.lambda_start, rel=0.1)
            assert t.escape_step == 150
        else:
            assert t.escape_step in (50, 100, 150)
    assert sum(t.escaped_barrier for t in study.trials) >= 4


def test_start_curvature_step_size_and_alignment(double_well_study):
    well, study = double_well_study
    assert study.lambda_start == pytest.approx(2 * well.sharp, rel=0.05)
    assert study.lr == pytest.approx(1.0 / study.lambda_start)
    by = {k: [t.alignment for t in study.trials if t.noise_type == k] for k in ("sgd", "isotropic", "projected")}
    energy_along = well.A[:, 0].square().mean() / well.A.square().sum(1).mean()
    assert sum(by["sgd"]) / 8 == pytest.approx(float(energy_along), rel=0.15)
    assert max(by["projected"]) < 1e-12
    assert sum(by["isotropic"]) / 8 == pytest.approx(1 / well.d, rel=0.3)
    rows = trial_rows([(7, study)])
    assert len(rows) == 24 and {r["seed"] for r in rows} == {7}
    assert all(r["escape"] in (0, 1) for r in rows)


def test_noise_types_share_minibatches_and_match_energy(double_well_study):
    _, study = double_well_study
    for r in range(3):
        energies = {t.noise_type: t.noise_energy for t in study.trials if t.restart == r}
        # projected noise is rescaled to the SGD draw's norm at every step; isotropic in expectation
        assert energies["isotropic"] == pytest.approx(energies["sgd"], rel=0.35)


def test_noise_step_exact_properties():
    g = torch.Generator().manual_seed(0)
    P, k = 50, 3
    basis = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=D))[0]
    xi = torch.randn(P, generator=g, dtype=D)
    assert torch.equal(noise_step("sgd", xi, basis, g), xi)
    assert set(THREE) < set(NOISE_TYPES)
    proj = noise_step("projected", xi, basis, g)
    assert torch.allclose(basis.T @ proj, torch.zeros(k, dtype=D), atol=1e-12)
    assert proj.norm() == pytest.approx(float(xi.norm()), rel=1e-12)
    draws = torch.stack([noise_step("isotropic", xi, basis, g) for _ in range(4000)])
    assert draws.square().sum(1).mean() == pytest.approx(float(xi.square().sum()), rel=0.02)
    assert draws.mean(0).abs().max() < 5 * math.sqrt(float(xi.square().sum()) / P / 4000)
    with pytest.raises(ValueError, match="unknown noise type 'levy'"):
        noise_step("levy", xi, basis, g)


def test_segment_barrier_and_lambda_max_on_the_double_well():
    well = DoubleWell()
    other = well.start.clone()
    other[0] = 1.0
    assert segment_barrier(well, well.start, other, 41) > 1.0  # the two wells are separated
    near = well.start.clone()
    near[0] = -0.9
    assert segment_barrier(well, well.start, near, 11) <= 1e-12  # same convex well
    lam, v = lambda_max_at(well, well.start, tol=1e-6, max_matvecs=60)
    assert lam == pytest.approx(2 * well.sharp, rel=0.05)
    assert abs(float(v[0])) == pytest.approx(1.0, abs=1e-6)


def test_deterministic_for_a_seed_and_basis_computed_when_missing():
    well = DoubleWell(d=20)
    cfg = _config(steps=20, restarts=1, check_every=10)
    a = escape_study(well, well.start, seed=1, **cfg)
    b = escape_study(well, well.start, seed=1, **cfg)
    assert a.basis_source == "lanczos"
    assert [t.to_dict() for t in a.trials] == [t.to_dict() for t in b.trials]
    c = escape_study(well, well.start, seed=2, **cfg)
    assert [t.alignment for t in a.trials] != [t.alignment for t in c.trials]


def test_model_landscape_gradients_and_hvp_match_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(30, 4, dtype=D), torch.randint(0, 3, (30,))
    land = ModelLandscape(model, (x, y), chunk_size=7)
    theta = land.theta0
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert torch.allclose(land.gradient(theta), torch.cat([g.reshape(-1) for g in grads]), atol=1e-12)
    assert land.loss(theta) == pytest.approx(float(loss.detach()), rel=1e-12)
    idx = torch.tensor([0, 5, 9])
    sub = nn.functional.cross_entropy(model(x[idx]), y[idx])
    gsub = torch.autograd.grad(sub, list(model.parameters()))
    assert torch.allclose(land.gradient(theta, idx), torch.cat([g.reshape(-1) for g in gsub]), atol=1e-12)
    v = torch.randn(theta.numel(), dtype=D)
    h = 1e-5
    fd = (land.gradient(theta + h * v) - land.gradient(theta - h * v)) / (2 * h)
    assert torch.allclose(land.hvp(theta, v), fd, atol=1e-7)


def test_study_errors():
    well = DoubleWell(d=10)
    with pytest.raises(ValueError, match="top_k=10 must be below the 10 parameters"):
        escape_study(well, well.start, **_config(top_k=10))
    with pytest.raises(ValueError, match="basis must have shape"):
        escape_study(well, well.start, basis=torch.zeros(10, 1, dtype=D), **_config(top_k=2))
    with pytest.raises(ValueError, match="batch_size=100 exceeds"):
        escape_study(well, well.start, basis=torch.eye(10, dtype=D)[:, :1], **_config(batch_size=100, steps=2, restarts=1))
    with pytest.raises(ValueError, match="unknown escape rule 'either'"):
        escape_study(well, well.start, basis=torch.eye(10, dtype=D)[:, :1], **_config(rule="either", steps=2, restarts=1))


def test_model_landscape_hvp_through_fused_attention():
    """A ViT keeps its fused attention for losses and gradients; the HVP takes the math path."""
    from landscape.models import build_model

    model = build_model("vit_small_32", seed=0, in_chans=1, img_size=8, num_classes=3, patch_size=4, embed_dim=8,
                        depth=1, num_heads=2).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 8, 8, generator=g, dtype=D), torch.randint(0, 3, (6,), generator=g)
    land = ModelLandscape(model, (x, y), chunk_size=4)
    theta = land.theta0
    v = torch.randn(theta.numel(), generator=g, dtype=D)
    v /= v.norm()
    h = 1e-3  # fourth-order stencil of the fused-path gradient: truncation ~ h^4
    fd = (-land.gradient(theta + 2 * h * v) + 8 * land.gradient(theta + h * v) - 8 * land.gradient(theta - h * v)
          + land.gradient(theta - 2 * h * v)) / (12 * h)
    hv = land.hvp(theta, v)
    assert float((hv - fd).norm() / fd.norm()) < 1e-8
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


@pytest.mark.parametrize("scale", [0.0, 0.25, 1.0, 3.0])
def test_scaled_noise_keeps_the_energy_and_sets_the_alignment_exactly(scale):
    """||xi_s|| = ||xi|| for every draw, and the top-k share is s^2 f / (s^2 f + 1 - f) with f the draw's own share."""
    g = torch.Generator().manual_seed(1)
    P, k = 40, 4
    basis = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=D))[0]
    xi = torch.randn(P, generator=g, dtype=D)
    out = noise_step("scaled", xi, basis, g, scale)
    f = float((basis.T @ xi).square().sum() / xi.square().sum())
    assert out.norm() == pytest.approx(float(xi.norm()), rel=1e-12)
    share = float((basis.T @ out).square().sum() / out.square().sum())
    assert share == pytest.approx(scale**2 * f / (scale**2 * f + 1 - f), abs=1e-12)
    if scale == 1.0:
        assert torch.allclose(out, xi, atol=1e-14)
    if scale == 0.0:
        assert torch.allclose(out, noise_step("projected", xi, basis, g), atol=1e-14)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        noise_step("scaled", xi, basis, g, -1.0)


def test_dose_response_on_the_double_well_at_fixed_energy():
    """Noise drawn at the minimum with its top-1 component scaled by s: every arm has exactly the
    SGD draw's energy at each step (same minibatches), the alignment rises with s, Zhu's
    tr(H Sigma) rises with it, and escapes from the sharp well rise with the dose (basin rule)."""
    well = DoubleWell(s=4.0, eps=1.0)
    basis = torch.zeros(well.d, 1, dtype=D)
    basis[0, 0] = 1.0
    study = escape_study(well, well.start, basis=basis, seed=5, **_config(
        noise_types=(), scales=(0.0, 0.5, 1.0, 3.0), restarts=8, steps=150, check_every=10, rule="basin",
        noise_at="start", noise_scale=2.0, indicator_every=5))
    by = {s: [t for t in study.trials if t.scale == s] for s in (0.0, 0.5, 1.0, 3.0)}
    for r in range(8):  # the same draws at every dose: equal energy per restart, to rounding
        energies = [t.noise_energy for s in by for t in by[s] if t.restart == r]
        assert max(energies) == pytest.approx(min(energies), rel=1e-10)
    align = [sum(t.alignment for t in by[s]) / 8 for s in by]
    assert align == sorted(align) and align[0] < 1e-12
    ths = [sum(t.trace_h_sigma for t in by[s]) / 8 for s in by]
    assert ths == sorted(ths)
    escapes = [sum(t.escaped for t in by[s]) for s in by]
    assert escapes[0] == 0 and escapes[-1] >= 6 and escapes[-1] > escapes[1]
    for t in study.trials:
        if t.escaped:  # the basin rule: crossed at the escape step and at every later check
            assert all(c["barrier"] > 0.05 for c in t.checks if c["step"] >= t.escape_step)
        else:
            assert t.escape_step == 150
