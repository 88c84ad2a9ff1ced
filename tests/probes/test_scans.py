"""Tests of landscape.probes.scans against closed forms on a 2D quadratic and a double well."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from probe_helpers import DUMMY, Surface, classification_batches, identity_loss, make_mlp, make_quadratic

from landscape.io import to_jsonable
from landscape.probes.functional import evaluate, flatten_params, parameter_dict, random_direction
from landscape.probes.scans import (
    direction_scan,
    hessian_plane_scan,
    line_scan,
    plane_scan,
    plot_contour,
    plot_line,
    plot_surface,
    random_line_scan,
    random_plane_scan,
    three_point_plane,
    three_point_plane_scan,
)

A, EIGS = make_quadratic([3.0, 0.5], seed=2)
B = torch.tensor([0.3, -0.7], dtype=torch.float64)


def quad(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * t @ A @ t + B @ t


def double_well(t: torch.Tensor) -> torch.Tensor:
    return (t[0] ** 2 - 1) ** 2 + t[1] ** 2


KW = dict(loss_fn=identity_loss, bn_mode="eval")


def test_line_scan_equals_closed_form_on_quadratic():
    model = Surface(quad, torch.zeros(2))
    t0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t1 = torch.tensor([-0.5, 0.25], dtype=torch.float64)
    scan = line_scan(model, t0, t1, DUMMY, **KW)
    assert scan.alphas[0] == -0.5 and scan.alphas[-1] == 1.5 and len(scan.alphas) == 61
    assert 0.0 in scan.alphas and 1.0 in scan.alphas
    expected = [quad((1 - a) * t0 + a * t1).item() for a in scan.alphas]
    np.testing.assert_allclose(scan.losses, expected, rtol=1e-13, atol=1e-14)
    assert scan.kind == "interpolation" and scan.bn_mode == "eval"
    assert scan.step_norm == pytest.approx((t1 - t0).norm().item())
    assert np.isnan(scan.errors).all()
    json.dumps(to_jsonable(scan))


def test_line_scan_on_double_well_has_known_profile():
    model = Surface(double_well, torch.zeros(2))
    t0, t1 = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])
    scan = line_scan(model, t0, t1, DUMMY, alphas=np.linspace(0, 1, 11), **KW)
    np.testing.assert_allclose(scan.losses, ((2 * scan.alphas - 1) ** 2 - 1) ** 2, atol=1e-14)
    assert scan.losses.max() == pytest.approx(1.0, abs=1e-14)


def test_direction_and_plane_scans_equal_closed_form():
    model = Surface(quad, torch.zeros(2))
    theta = torch.tensor([0.2, -0.1], dtype=torch.float64)
    d1 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    d2 = torch.tensor([0.5, -2.0], dtype=torch.float64)
    line = direction_scan(model, theta, d1, DUMMY, **KW)
    np.testing.assert_allclose(line.losses, [quad(theta + a * d1).item() for a in line.alphas], rtol=1e-13, atol=1e-14)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    plane = plane_scan(model, theta, d1, d2, DUMMY, xs=xs, ys=ys, **KW)
    assert plane.Z.shape == (3, 5)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert plane.Z[i, j] == pytest.approx(quad(theta + x * d1 + y * d2).item(), rel=1e-13, abs=1e-14)


def test_hessian_plane_at_minimum_is_quadratic_form_of_eigenvalues():
    model = Surface(quad, torch.zeros(2))
    theta_star = -torch.linalg.solve(A, B)
    evals, evecs = torch.linalg.eigh(A)
    v1, v2 = 3.0 * evecs[:, 1], -evecs[:, 0]  # unnormalised: the scan normalises
    scan = hessian_plane_scan(model, theta_star, v1, v2, DUMMY, xs=np.linspace(-1, 1, 7), **KW)
    l_star = quad(theta_star).item()
    np.testing.assert_allclose(scan.Z - l_star, 0.5 * (evals[1].item() * scan.X**2 + evals[0].item() * scan.Y**2), atol=1e-13)
    with pytest.raises(ValueError, match="must not be parallel"):
        hessian_plane_scan(model, theta_star, v1, 2 * v1, DUMMY, **KW)
    with pytest.raises(ValueError, match="non-zero"):
        hessian_plane_scan(model, theta_star, 0 * v1, v2, DUMMY, **KW)


def test_three_point_plane_coordinates_and_scan():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3))
    basis = three_point_plane(a, b, c)
    assert basis.u @ basis.v == pytest.approx(0.0, abs=1e-14)
    assert basis.u.norm().item() == pytest.approx(1.0) and basis.v.norm().item() == pytest.approx(1.0)
    for point, (x, y) in zip((a, b, c), basis.coords):
        torch.testing.assert_close(basis.origin + x * basis.u + y * basis.v, point, rtol=0, atol=1e-13)
    A5, _ = make_quadratic([1.0, 2.0, 3.0, 4.0, 5.0], seed=1)
    model = Surface(lambda t: 0.5 * t @ A5 @ t, torch.zeros(5))
    xs = np.sort(np.unique(np.r_[basis.coords[:, 0], np.linspace(-1, 3, 4)]))
    ys = np.sort(np.unique(np.r_[basis.coords[:, 1], np.linspace(-1, 3, 4)]))
    scan = three_point_plane_scan(model, a, b, c, DUMMY, xs=xs, ys=ys, **KW)
    assert scan.point_labels == ("a", "b", "c") and scan.kind == "three_points"
    for point, (x, y) in zip((a, b, c), scan.points):
        i, j = int(np.argmin(abs(ys - y))), int(np.argmin(abs(xs - x)))
        assert scan.Z[i, j] == pytest.approx((0.5 * point @ A5 @ point).item(), rel=1e-12)
    default = three_point_plane_scan(model, a, b, c, DUMMY, num=5, **KW)
    assert default.X.min() < 0 < basis.coords[1, 0] < default.X.max()
    with pytest.raises(ValueError, match="must not be parallel"):
        three_point_plane(a, b, a + 2 * (b - a))
    with pytest.raises(ValueError, match="num must be an integer >= 2"):
        three_point_plane_scan(model, a, b, c, DUMMY, num=1, **KW)


def test_random_plane_is_filter_normalised_and_reproducible():
    batches = classification_batches()
    model = make_mlp()
    theta = parameter_dict(model)
    xs = np.array([-0.5, 0.0, 0.5])
    scan = random_plane_scan(model, theta, batches, seed=7, xs=xs, bn_mode="eval")
    assert scan.Z[1, 1] == pytest.approx(evaluate(model, theta, batches, bn_mode="eval").loss, rel=1e-13)
    gen = torch.Generator().manual_seed(7)
    d1 = random_direction(theta, generator=gen)
    d2 = random_direction(theta, generator=gen)
    assert all(torch.count_nonzero(d1[n]) == 0 for n in theta if theta[n].ndim == 1)  # biases zeroed
    flat = flatten_params(theta)
    point = flat + 0.5 * flatten_params(d1) - 0.5 * flatten_params(d2)
    assert scan.Z[0, 2] == pytest.approx(evaluate(model, point, batches, bn_mode="eval").loss, rel=1e-13)
    again = random_plane_scan(model, theta, batches, seed=7, xs=xs, bn_mode="eval")
    np.testing.assert_array_equal(scan.Z, again.Z)
    assert scan.settings["seed"] == 7 and scan.settings["bias_policy"] == "zero"
    with pytest.raises(ValueError, match="bias_policy must be one of"):
        random_plane_scan(model, theta, batches, seed=7, bias_policy="skip", bn_mode="eval")


def test_scan_argument_errors():
    model = Surface(quad, torch.zeros(2))
    t = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="alphas must be a non-empty 1-D"):
        line_scan(model, t, t, DUMMY, alphas=[], **KW)
    with pytest.raises(ValueError, match="flat vector of length 2"):
        line_scan(model, t, torch.zeros(3), DUMMY, **KW)
    with pytest.raises(ValueError, match="unknown bn_mode"):
        line_scan(model, t, t, DUMMY, loss_fn=identity_loss, bn_mode="none")


def test_plots_return_figures():
    model = Surface(double_well, torch.zeros(2))
    t0, t1 = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])
    line = line_scan(model, t0, t1, DUMMY, alphas=np.linspace(-0.5, 1.5, 9), **KW)
    plane = plane_scan(model, torch.zeros(2), t1, torch.tensor([0.0, 1.0]), DUMMY, xs=np.linspace(-1.5, 1.5, 7), **KW)
    for fig in (plot_line(line, log=True), plot_contour(plane, log=True), plot_surface(plane)):
        assert isinstance(fig, Figure)
        fig.canvas.draw()
    with pytest.raises(ValueError, match="metric must be 'loss' or 'error'"):
        plot_line(line, metric="acc")


def test_hessian_plane_with_curvature_eigenvectors_matches_local_quadratic():
    """Integration with landscape.curvature: its flat layout is ours, so its Ritz vectors
    plug into the scan; near theta the scan follows L + g.v x + lambda x^2 / 2."""
    from landscape.curvature.lanczos import top_eigenpairs
    from landscape.curvature.operators import HessianOperator

    batches = classification_batches()
    model = make_mlp()
    op = HessianOperator(model, torch.nn.functional.cross_entropy, batches, bn_mode="eval")
    theta = parameter_dict(model)
    torch.testing.assert_close(op.parameter_vector(), flatten_params(theta), rtol=0, atol=0)
    pairs = top_eigenpairs(op, k=2, tol=1e-8, seed=0)
    v1, v2 = pairs.vectors[:, 0], pairs.vectors[:, 1]
    h = 1e-3
    scan = hessian_plane_scan(model, theta, v1, v2, batches, xs=[-h, 0.0, h], ys=[0.0], bn_mode="eval")
    curvature_x = (scan.Z[0, 0] - 2 * scan.Z[0, 1] + scan.Z[0, 2]) / h**2
    assert curvature_x == pytest.approx(pairs.values[0].item(), rel=1e-4)


def test_random_line_is_the_random_planes_first_axis():
    batches = classification_batches()
    model = make_mlp()
    theta = parameter_dict(model)
    xs = np.array([-0.5, 0.0, 0.5])
    line = random_line_scan(model, theta, batches, seed=7, alphas=xs, bn_mode="eval")
    plane = random_plane_scan(model, theta, batches, seed=7, xs=xs, bn_mode="eval")
    np.testing.assert_array_equal(line.losses, plane.Z[1])  # y = 0 row
    d1 = random_direction(theta, generator=torch.Generator().manual_seed(7))
    assert line.kind == "direction" and line.step_norm == pytest.approx(float(flatten_params(d1).norm()), rel=1e-13)
    point = flatten_params(theta) + 0.5 * flatten_params(d1)
    assert line.losses[2] == pytest.approx(evaluate(model, point, batches, bn_mode="eval").loss, rel=1e-13)
