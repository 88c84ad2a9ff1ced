"""Edge of stability: the exact threshold on quadratics, lambda_max against dense Hessians,
and the plateau detector on planted series."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.dynamics.eos import GDTrajectory, edge_of_stability, gradient_descent, stability_threshold
from landscape.dynamics.escape import ModelLandscape

D = torch.float64


class Quadratic:
    """``L(theta) = 1/2 (theta - c)^T A (theta - c)`` with A = Q diag(a) Q^T: constant Hessian."""

    def __init__(self, eigenvalues: list[float], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        p = len(eigenvalues)
        q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=D))
        self.A = q @ torch.diag(torch.tensor(eigenvalues, dtype=D)) @ q.T
        self.c = torch.randn(p, generator=g, dtype=D)
        self.num_examples = 1
        self.start = self.c + torch.randn(p, generator=g, dtype=D)

    def loss(self, theta):
        d = theta - self.c
        return float(0.5 * d @ self.A @ d)

    def gradient(self, theta, index=None):  # noqa: ARG002  (the Landscape protocol)
        return self.A @ (theta - self.c)

    def hvp(self, theta, v):  # noqa: ARG002  (constant Hessian)
        return self.A @ v


EIGS = [4.0, 2.5, 1.0, 0.3, 0.05, 0.01]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_gd_on_a_quadratic_is_stable_exactly_below_2_1_plus_beta_over_eta(momentum):
    """eta a_max = 2 (1 + beta) (1 -+ 1%): converges below the line, diverges above it."""
    quad = Quadratic(EIGS)
    critical = 2 * (1 + momentum) / max(EIGS)
    assert stability_threshold(critical, momentum) == pytest.approx(max(EIGS), rel=1e-15)
    l0 = quad.loss(quad.start)
    below, theta = gradient_descent(quad, quad.start, lr=0.99 * critical, momentum=momentum, steps=3000, eig_every=1000)
    assert below.status == "completed" and below.steps_run == 3000
    assert below.losses[-1] < 1e-12 * l0  # the slowest direction (a = 0.01) contracts by 1 - 0.99 * 0.005 per step
    assert torch.allclose(theta, quad.c, atol=1e-5)
    above, _ = gradient_descent(quad, quad.start, lr=1.01 * critical, momentum=momentum, steps=3000, eig_every=1000)
    assert above.status == "diverged" and above.steps_run < 3000
    assert above.losses[-1] > 1e6 * l0


def test_sharpness_trace_equals_the_known_eigenvalue_and_ratio_is_eta_amax_over_2():
    quad = Quadratic(EIGS, seed=3)
    lr = 0.3
    traj, _ = gradient_descent(quad, quad.start, lr=lr, steps=50, eig_every=7, eig_tol=1e-8, eig_matvecs=40)
    assert traj.sharpness_steps == (0, 7, 14, 21, 28, 35, 42, 49, 50)
    np.testing.assert_allclose(traj.sharpness, max(EIGS), rtol=1e-8)
    eos = edge_of_stability(traj)
    assert eos.status == "no onset" and eos.ratio is None  # a constant Hessian never sharpens
    assert eos.initial_ratio == pytest.approx(lr * max(EIGS) / 2, rel=1e-8)


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1 = nn.Linear(4, 5).to(D)
        self.fc2 = nn.Linear(5, 3).to(D)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _mse(out, y):
    return 0.5 * (out - nn.functional.one_hot(y, 3).to(out.dtype)).square().sum(1).mean()


def _dense_hessian(model: nn.Module, theta: torch.Tensor, x, y) -> torch.Tensor:
    """Dense Hessian of the mean MSE loss at flat ``theta`` by double backward, row by row."""
    shapes = [(n, p.shape) for n, p in model.named_parameters()]
    t = theta.detach().clone().requires_grad_(True)
    params, i = {}, 0
    for n, s in shapes:
        k = math.prod(s)
        params[n] = t[i : i + k].view(s)
        i += k
    loss = _mse(torch.func.functional_call(model, params, (x,)), y)
    (g,) = torch.autograd.grad(loss, t, create_graph=True)
    return torch.stack([torch.autograd.grad(g[j], t, retain_graph=True)[0] for j in range(t.numel())])


def test_network_sharpness_matches_dense_float64_hessian_along_the_gd_path():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 4, generator=g, dtype=D), torch.randint(0, 3, (24,), generator=g)
    model = _TinyNet()
    land = ModelLandscape(model, (x, y), loss_fn=_mse, chunk_size=10)
    lr = 0.05
    traj, theta = gradient_descent(land, land.theta0, lr=lr, steps=6, eig_every=3, eig_tol=1e-9, eig_matvecs=60)
    # replay the path by hand: GD on the dense gradient, sharpness from eigvalsh of the dense Hessian
    t = land.theta0.clone()
    expected = []
    for step in range(7):
        if step in traj.sharpness_steps:
            expected.append(float(torch.linalg.eigvalsh(_dense_hessian(model, t, x, y))[-1]))
        assert traj.losses[step] == pytest.approx(land.loss(t), rel=1e-12)
        if step < 6:
            t = t - lr * land.gradient(t)
    assert traj.sharpness_steps == (0, 3, 6)
    np.testing.assert_allclose(traj.sharpness, expected, rtol=1e-7)
    torch.testing.assert_close(theta, t, rtol=1e-12, atol=1e-12)
    assert traj.num_hvps > 0 and traj.status == "completed"


def _planted(series: np.ndarray, threshold: float, losses: np.ndarray | None = None, every: int = 1) -> GDTrajectory:
    steps = tuple(range(0, every * len(series), every))
    losses = np.exp(-np.arange(steps[-1] + 1) / 500) if losses is None else losses
    return GDTrajectory(2.0 / threshold, 0.0, threshold, tuple(losses), steps, tuple(series * threshold), "completed", steps[-1], 0, 0.0)


def _ar1(n: int, phi: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(0, sd * math.sqrt(1 - phi**2), n)
    out = np.empty(n)
    out[0] = rng.normal(0, sd)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + e[i]
    return out


def test_plateau_detector_finds_the_planted_onset_and_level():
    """Sharpening from 0.3 to 1 over 300 measurements (every 2 steps), then AR(1) noise
    around a planted level 1.05; the loss falls with a period-2 oscillation on top."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.3, 1.0, 300)
    plateau = 1.05 + _ar1(1000, 0.7, 0.02, rng)
    steps = np.arange(2 * 1300 - 1)
    losses = np.exp(-steps / 2000) * (1 + 0.05 * (steps % 2))
    eos = edge_of_stability(_planted(np.concatenate([ramp, plateau]), 8.0, losses, every=2), onset_fraction=0.9)
    onset_index = int(np.flatnonzero(ramp >= 0.9)[0])
    assert eos.status == "plateau" and eos.onset_step == 2 * onset_index
    assert eos.num_points == 1300 - onset_index
    assert eos.sharpening and eos.sharpening_factor == pytest.approx(ramp[onset_index] / 0.3, rel=1e-12)
    assert eos.ratio is not None and eos.ratio.low < 1.05 < eos.ratio.high  # the ramp's tail is < 4% of the window
    assert eos.ratio.high - eos.ratio.low < 0.02
    assert eos.loss_decreased is True and eos.increase_fraction == pytest.approx(0.5, abs=0.01)
    assert eos.threshold == 8.0 and eos.initial_ratio == pytest.approx(0.3)


def test_plateau_detector_skips_a_catapult_and_reports_missing_or_short_plateaus():
    # starts above the line (catapult), drops, then rises again: the onset is the return
    series = np.concatenate([[1.5, 1.2], np.linspace(0.5, 1.0, 50), np.full(40, 1.0)])
    eos = edge_of_stability(_planted(series, 4.0))
    assert eos.onset_step == 2 + int(np.flatnonzero(np.linspace(0.5, 1.0, 50) >= 0.9)[0])
    assert eos.sharpening and eos.ratio is not None
    assert edge_of_stability(_planted(np.full(60, 1.2), 4.0)).status == "no onset"  # never below the line
    assert edge_of_stability(_planted(np.linspace(0.2, 0.8, 60), 4.0)).status == "no onset"
    short = edge_of_stability(_planted(np.concatenate([np.linspace(0.2, 1.0, 60), np.ones(5)]), 4.0))
    assert short.status == "too short" and short.ratio is None and short.num_points < 20
    flat = edge_of_stability(_planted(np.concatenate([np.full(30, 0.85), np.full(30, 0.95)]), 4.0))
    assert flat.status == "plateau" and not flat.sharpening  # 0.95 / 0.85 < 1.25: no progressive sharpening
    diverged = GDTrajectory(0.5, 0.0, 4.0, (1.0, math.inf), (0,), (1.0,), "diverged", 1, 0, 0.0)
    assert edge_of_stability(diverged).status == "diverged"


def test_bad_arguments_are_named():
    quad = Quadratic(EIGS)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got -0.1"):
        gradient_descent(quad, quad.start, lr=-0.1, steps=3)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        gradient_descent(quad, quad.start, lr=0.1, steps=3, momentum=1.0)
    with pytest.raises(ValueError, match=r"eig_every must be an int >= 1, got 0"):
        gradient_descent(quad, quad.start, lr=0.1, steps=3, eig_every=0)
    traj = _planted(np.ones(40), 2.0)
    with pytest.raises(ValueError, match=r"onset_fraction must be in \(0, 1\], got 1.5"):
        edge_of_stability(traj, onset_fraction=1.5)
    with pytest.raises(ValueError, match=r"min_points must be an int >= 2 \* num_batches = 20, got 5"):
        edge_of_stability(traj, min_points=5)
