"""Tests of landscape.dynamics.sde: surfaces, eq. (7), SGD noise, and simulated occupancy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from landscape.io import to_jsonable
from landscape.dynamics.sde import (
    GaussianWells,
    TiltedDoubleWell,
    assign_basins,
    effective_temperature,
    gibbs_occupancy,
    occupancy_study,
    predicted_occupancy,
    simulate_sde,
    simulate_sgd,
    whitened_noise_data,
)

#: two basins: a flat one (kappa 1) on the left, 0.2 deeper, and a sharp one (kappa 4)
WELL = TiltedDoubleWell(height=1.0, tilt=0.1, kappa_left=1.0, kappa_right=4.0, width=0.1)


def test_double_well_minima_and_hessians_closed_form():
    h, tilt = 1.0, 0.1
    roots = np.sort(np.roots([4 * h, 0, -4 * h, tilt]).real)
    basins = WELL.minima()
    for b, x in zip(basins, roots[[0, 2]]):
        np.testing.assert_allclose(b.center, [x, 0.0], atol=1e-12)
        assert b.loss == pytest.approx(h * (x * x - 1) ** 2 + tilt * x, abs=1e-12)
        kappa = 1.0 + 3.0 / (1 + math.exp(-x / 0.1))
        np.testing.assert_allclose(b.hessian, np.diag([12 * h * x * x - 4 * h, kappa]), atol=1e-10)
        torch.testing.assert_close(WELL.grad(torch.as_tensor(b.center)[None]), torch.zeros(1, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    pts = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(WELL.grad(pts), torch.func.vmap(torch.func.grad(lambda p: WELL.loss(p[None])[0]))(pts))
    assert WELL.saddle_losses()[0] == pytest.approx(h * (roots[1] ** 2 - 1) ** 2 + tilt * roots[1])


def test_predicted_occupancy_closed_form():
    # no tilt: equal depths, so Pr(left)/Pr(right) = sqrt(det H_right / det H_left)
    well = TiltedDoubleWell(kappa_left=1.0, kappa_right=4.0, width=0.1)
    b = well.minima()
    p = predicted_occupancy(b, 0.3)
    assert p[0] / p[1] == pytest.approx(math.sqrt(b[1].det_hessian / b[0].det_hessian), rel=1e-12)
    # depth factor: exp(-(L_0 - L_1)/T)
    q = predicted_occupancy(WELL.minima(), 0.25)
    d = WELL.minima()
    expected = math.exp(-(d[0].loss - d[1].loss) / 0.25) * math.sqrt(d[1].det_hessian / d[0].det_hessian)
    assert q[0] / q[1] == pytest.approx(expected, rel=1e-12)
    assert effective_temperature(0.1, 4, 2.0) == pytest.approx(0.1 * 4.0 / 8)


def test_laplace_is_accurate_at_low_temperature_and_breaks_at_high():
    wells = GaussianWells(centers=[[-1.5, 0.0], [1.5, 0.0]], depths=[1.0, 1.3], widths=[0.8, 0.35])
    b = wells.minima()
    assert len(b) == 2 and all(np.all(np.linalg.eigvalsh(x.hessian) > 0) for x in b)
    err_low = np.abs(predicted_occupancy(b, 0.05) - gibbs_occupancy(wells, 0.05, grid=121)).max()
    err_high = np.abs(predicted_occupancy(b, 1.0) - gibbs_occupancy(wells, 1.0, grid=121)).max()
    assert err_low < 2e-3 and err_high > 0.03


def test_sgd_noise_has_known_covariance():
    z = whitened_noise_data(50, seed=0)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(z.T @ z / 50, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-13)
    # one SGD step from a fixed point: theta' - (theta - eta grad L) = -eta s zbar, Cov = eta^2 s^2 / B I
    eta, bsz, s, runs = 0.1, 5, 2.0, 20000
    start = torch.tensor([[0.3, -0.2]], dtype=torch.float64).expand(runs, 2).clone()
    out = simulate_sgd(WELL, eta=eta, batch_size=bsz, noise_scale=s, dataset_size=50, horizon=eta, num_runs=runs, init=start, seed=3)
    noise = out - (start - eta * WELL.grad(start))
    cov = torch.cov(noise.T)
    target = eta**2 * s**2 / bsz
    # sampling sd of a variance estimate is ~ target * sqrt(2 / runs) (z has kurtosis ~3)
    np.testing.assert_allclose(torch.diagonal(cov).numpy(), target, rtol=4 * math.sqrt(2 / runs) * 1.5)
    assert abs(cov[0, 1].item()) < 4 * target / math.sqrt(runs)
    assert noise.mean(0).abs().max().item() < 4 * math.sqrt(target / runs)


def test_sde_and_sgd_occupancy_match_eq7_at_low_temperature():
    # T = 1/3 (barrier / T = 2.7): Laplace (eq. 7) and the exact Gibbs masses differ by 0.003,
    # below the Wilson half-width (~0.02); the horizon 50 is ~4 relaxation times.
    T = 1.0 / 3.0
    sde = occupancy_study(WELL, [(2 * T, 1)], method="sde", noise_scale=1.0, dt=0.01, horizon=50.0, num_runs=3000, confidence=0.99, seed=0)
    row = sde.rows[0]
    shallow = max(b.loss for b in WELL.minima())
    assert row.temperature == pytest.approx(T) and row.barrier_over_t == pytest.approx((WELL.saddle_losses()[0] - shallow) / T)
    assert 2.5 < row.barrier_over_t < 3.0
    assert row.ci_high[0] - row.ci_low[0] < 0.05
    assert row.agrees and row.gibbs_agrees and row.mixed and row.verdict == "agrees", row.to_dict()
    assert abs(row.predicted[0] - 0.5) > 0.2  # the prediction is far from the 50/50 start
    eta, bsz = 0.01, 4
    sgd = occupancy_study(WELL, [(eta, bsz)], method="sgd", noise_scale=math.sqrt(2 * bsz * T / eta), horizon=40.0, num_runs=1500, confidence=0.99, seed=1)
    assert sgd.rows[0].temperature == pytest.approx(T)
    assert sgd.rows[0].agrees, sgd.rows[0].to_dict()
    json.dumps(to_jsonable(sgd))


def test_eq7_breakdown_at_high_temperature_is_flagged():
    # T = 0.8 ~ the barrier: runs mix fast and match the exact Gibbs masses, while eq. (7)
    # over-weights the flat basin (0.82 predicted vs 0.72 exact)
    wells = GaussianWells(centers=[[-1.5, 0.0], [1.5, 0.0]], depths=[1.0, 1.3], widths=[0.8, 0.35])
    row = occupancy_study(wells, [(1.6, 1)], method="sde", dt=0.01, horizon=20.0, num_runs=1500, quadrature_grid=121, seed=2).rows[0]
    assert row.mixed and row.gibbs_agrees, row.to_dict()
    assert row.verdict == "disagrees" and row.predicted[0] > row.ci_high[0]


def test_frozen_runs_are_flagged_as_not_mixed():
    # barrier / T ~ 9 and a short horizon: runs stay where they started
    study = occupancy_study(WELL, [(0.2, 1)], method="sde", horizon=5.0, num_runs=400, quadrature_grid=61)
    row = study.rows[0]
    assert not row.mixed and row.init_memory > 0.9 and row.verdict == "not mixed"
    assert not row.agrees  # the frozen 50/50 split is far from eq. (7)


def test_assign_basins_on_known_points():
    b = WELL.minima()
    pts = torch.tensor([[-1.5, 2.0], [-0.4, -1.0], [0.5, 0.3], [2.1, -3.0]], dtype=torch.float64)
    assert assign_basins(WELL, pts, b).tolist() == [0, 0, 1, 1]


def test_sde_argument_errors():
    with pytest.raises(ValueError, match=r"\|tilt\| must be <"):
        TiltedDoubleWell(tilt=2.0)
    with pytest.raises(ValueError, match="kappa_left must be a finite number > 0"):
        TiltedDoubleWell(kappa_left=0.0)
    with pytest.raises(ValueError, match="centers must have shape"):
        GaussianWells(centers=[[0.0, 0.0]], depths=[1.0], widths=[1.0])
    with pytest.raises(ValueError, match="depths must be 2 positive"):
        GaussianWells(centers=[[0.0, 0.0], [1.0, 0.0]], depths=[1.0, -1.0], widths=[1.0, 1.0])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        predicted_occupancy(WELL.minima(), 0.0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        effective_temperature(0.1, 0, 1.0)
    with pytest.raises(ValueError, match="init must be 'minima', 'uniform'"):
        simulate_sde(WELL, eta=0.1, batch_size=1, horizon=0.1, num_runs=2, init="saddle")
    with pytest.raises(ValueError, match="noise_sqrt must be a"):
        simulate_sde(WELL, eta=0.1, batch_size=1, horizon=0.1, num_runs=2, noise_sqrt=torch.eye(3))
    with pytest.raises(ValueError, match="method must be 'sde' or 'sgd'"):
        occupancy_study(WELL, [(0.1, 1)], method="langevin")
    with pytest.raises(ValueError, match="at least one"):
        occupancy_study(WELL, [])
    with pytest.raises(ValueError, match="n must be an integer >= 3"):
        whitened_noise_data(2, seed=0)
