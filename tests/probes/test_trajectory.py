"""Tests of landscape.probes.trajectory on gradient descent on a diagonal quadratic.

The loss is ``0.5 (w - w*)^T A (w - w*)`` with ``A = diag(a)`` over the parameters of a
tiny module (a (2, 3) weight and a (2,) bias, P = 8). Gradient descent with step ``eta``
(run with autograd on the module) gives ``w_t - w* = r^t * (w_0 - w*)`` elementwise with
``r = 1 - eta a``, so the offsets from the final point ``w_T`` are
``m_t,i = e_i (r_i^t - r_i^T)`` and the Gram matrix of the (T+1, P) offset matrix has the
closed form ``G_ij = e_i e_j sum_t (r_i^t - r_i^T)(r_j^t - r_j^T)`` (geometric sums): its top
eigenvectors are the principal directions and its eigenvalues over its trace the explained
variances.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from landscape.io import to_jsonable
from landscape.probes import trajectory_pca, trajectory_scan
from landscape.probes.functional import filter_normalize, unflatten_params
from landscape.probes.trajectory import plot_trajectory

ETA = 0.5
STEPS = 20  # snapshots t = 0..STEPS, the last is the final point


class Quadratic(nn.Module):
    """Parameters ``weight`` (2, 3) and ``bias`` (2,); the output is the loss itself."""

    def __init__(self, a: Tensor, w_star: Tensor, w0: Tensor):
        super().__init__()
        self.weight = nn.Parameter(w0[:6].reshape(2, 3).clone())
        self.bias = nn.Parameter(w0[6:].clone())
        self.a, self.w_star = a, w_star

    def flat(self) -> Tensor:
        return torch.cat([self.weight.reshape(-1), self.bias])

    def forward(self, x: Tensor) -> Tensor:
        d = self.flat() - self.w_star
        return 0.5 * (self.a * d * d).sum()


def identity_loss(out: Tensor, y: Tensor) -> Tensor:
    return out


DUMMY = [(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))]
KW = dict(loss_fn=identity_loss, bn_mode="eval")


def gd_path(a: Tensor, w_star: Tensor, e0: Tensor, steps: int = STEPS, eta: float = ETA) -> tuple[Quadratic, list[Tensor]]:
    """Gradient descent by autograd from ``w* + e0``: the module (at the final point) and the snapshots."""
    model = Quadratic(a, w_star, w_star + e0)
    snaps = [model.flat().detach().clone()]
    for _ in range(steps):
        model.zero_grad()
        model(None).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= eta * p.grad
        snaps.append(model.flat().detach().clone())
    return model, snaps


def closed_form_gram(a: np.ndarray, e0: np.ndarray, steps: int = STEPS, eta: float = ETA) -> np.ndarray:
    """``G = M^T M`` of the offsets from the final point, by geometric sums over t = 0..steps."""
    r = 1.0 - eta * a
    n = steps + 1

    def geo(q: np.ndarray) -> np.ndarray:  # sum_{t=0}^{steps} q^t
        return np.where(np.isclose(q, 1.0), float(n), (1.0 - q**n) / (1.0 - np.where(np.isclose(q, 1.0), 0.0, q)))

    rr = np.outer(r, r)
    rT = r**steps
    s = geo(rr) - np.outer(geo(r), rT) - np.outer(rT, geo(r)) + n * np.outer(rT, rT)
    return np.outer(e0, e0) * s


def subspace_sines(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sines of the principal angles between the row spaces of ``u`` (k, P) and ``v`` (k, P)
    (singular values of ``(I - Q_v Q_v^T) Q_u``; accurate for small angles, unlike arccos)."""
    qu, _ = np.linalg.qr(u.T)
    qv, _ = np.linalg.qr(v.T)
    return np.linalg.svd(qu - qv @ (qv.T @ qu), compute_uv=False)


def quad_loss(model: Quadratic, theta: Tensor) -> float:
    d = theta - model.w_star
    return float(0.5 * (model.a * d * d).sum())


A = torch.tensor([0.1, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 1.9], dtype=torch.float64)  # r = 1 - a/2 in (0.05, 0.95)
W_STAR = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)


def test_path_in_two_eigendirections_gives_exactly_their_plane():
    # e0 excites eigen-directions 0 (a = 0.1, slow) and 5 (a = 1.2, fast): the path stays in their plane
    e0 = torch.zeros(8, dtype=torch.float64)
    e0[0], e0[5] = 2.0, -1.5
    _, snaps = gd_path(A, W_STAR, e0)
    pca = trajectory_pca(snaps)
    basis = np.zeros((2, 8))
    basis[0, 0] = basis[1, 5] = 1.0
    assert subspace_sines(pca.directions.numpy(), basis).max() < 1e-12
    assert pca.plane_fraction == pytest.approx(1.0, abs=1e-13)
    assert np.all(pca.residuals < 1e-12)
    # projection is exact: theta_f + c_i V reproduces every snapshot
    recon = pca.origin + torch.as_tensor(pca.coords) @ pca.directions
    torch.testing.assert_close(recon, torch.stack(snaps), rtol=0, atol=1e-12)
    # explained variances: the eigenvalues of the closed-form 2x2 Gram over its trace
    g = closed_form_gram(A.numpy(), e0.numpy())[np.ix_([0, 5], [0, 5])]
    lam = np.linalg.eigvalsh(g)[::-1]
    np.testing.assert_allclose(pca.explained_variance_ratio, lam / lam.sum(), rtol=1e-11)
    np.testing.assert_allclose(pca.singular_values[:2], np.sqrt(lam), rtol=1e-11)
    assert pca.singular_values[2] < 1e-12 * pca.singular_values[0]
    np.testing.assert_array_equal(pca.coords[-1], [0.0, 0.0])


@pytest.mark.parametrize("slow_offset", [1.0, 3.0])
def test_principal_plane_matches_the_closed_form_gram_eigenspace(slow_offset):
    # every eigen-direction excited; a = 0.1 decays slowest (r = 0.95), the next r = 0.85
    e0 = torch.ones(8, dtype=torch.float64)
    e0[0] = slow_offset
    _, snaps = gd_path(A, W_STAR, e0, steps=40)
    pca = trajectory_pca(snaps)
    g = closed_form_gram(A.numpy(), e0.numpy(), steps=40)
    lam, vec = np.linalg.eigh(g)
    lam, vec = lam[::-1], vec[:, ::-1]
    # the recovered plane is the closed-form top-2 eigenspace, and each direction its eigenvector
    assert subspace_sines(pca.directions.numpy(), vec[:, :2].T).max() < 1e-12
    for k in range(2):
        assert abs(float(pca.directions[k].numpy() @ vec[:, k])) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio, lam[:2] / lam.sum(), rtol=1e-12)
    np.testing.assert_allclose(pca.singular_values**2, lam, rtol=1e-9, atol=1e-12 * lam[0])


def test_top_direction_is_the_slowest_eigendirection_when_it_carries_the_path():
    # Davis-Kahan: sin(angle(v_1, e_slow)) <= ||G[slow, rest]|| / (G[slow, slow] - lambda_max(G[rest, rest])).
    # With the slow direction 3x as far from the minimum as the others, over 40 steps, the bound is 0.40.
    # (With equal offsets it is not: the fast directions' joint transient at t ~ 0 is PC1; measured sin = 0.81.)
    e0 = torch.ones(8, dtype=torch.float64)
    e0[0] = 3.0
    _, snaps = gd_path(A, W_STAR, e0, steps=40)
    pca = trajectory_pca(snaps)
    g = closed_form_gram(A.numpy(), e0.numpy(), steps=40)
    rest = np.arange(1, 8)
    gap = g[0, 0] - np.linalg.eigvalsh(g[np.ix_(rest, rest)]).max()
    bound = np.linalg.norm(g[0, rest]) / gap
    sin_angle = math.sqrt(max(0.0, 1.0 - float(pca.directions[0, 0]) ** 2))
    assert 0 < bound < 0.45
    assert sin_angle <= bound  # measured 0.33


def test_coordinates_and_residuals_decompose_every_offset():
    e0 = torch.tensor([1.0, -0.5, 0.7, 0.2, -1.1, 0.4, 0.9, -0.3], dtype=torch.float64)
    _, snaps = gd_path(A, W_STAR, e0)
    pca = trajectory_pca(snaps)
    mat = torch.stack(snaps)
    offsets = (mat - mat[-1]).numpy()
    torch.testing.assert_close(pca.directions @ pca.directions.T, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-14)
    np.testing.assert_allclose(pca.distances, np.linalg.norm(offsets, axis=1), rtol=1e-14)
    # ||theta_i - theta_f||^2 = |c_i|^2 + r_i^2 (Pythagoras on the plane), and the residual is what is left
    np.testing.assert_allclose(pca.distances**2, (pca.coords**2).sum(axis=1) + pca.residuals**2, rtol=1e-12, atol=1e-14)
    left = offsets - pca.coords @ pca.directions.numpy()
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), pca.residuals, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(left @ pca.directions.numpy().T, 0.0, atol=1e-12)  # off the plane
    assert pca.plane_fraction == pytest.approx(1.0 - np.sum(pca.residuals**2) / np.sum(pca.distances**2), rel=1e-12)
    assert 0.0 < pca.residuals.max() and pca.plane_fraction < 1.0  # this path leaves the plane
    # sign convention: the snapshot farthest along each direction has a positive coordinate
    for k in range(2):
        assert pca.coords[np.argmax(np.abs(pca.coords[:, k])), k] > 0
    json.dumps(pca.to_dict())


@pytest.mark.parametrize("normalization", ["none", "filter"])
def test_surface_on_the_plane_equals_the_closed_form(normalization):
    e0 = torch.tensor([1.0, -0.5, 0.7, 0.2, -1.1, 0.4, 0.9, -0.3], dtype=torch.float64)
    model, snaps = gd_path(A, W_STAR, e0)
    res = trajectory_scan(model, snaps, DUMMY, num=7, margin=0.3, normalization=normalization, bias_policy="keep", **KW)
    origin, d = res.pca.origin, res.directions
    for i in range(res.plane.Z.shape[0]):
        for j in range(res.plane.Z.shape[1]):
            theta = origin + float(res.plane.X[i, j]) * d[0] + float(res.plane.Y[i, j]) * d[1]
            assert res.plane.Z[i, j] == pytest.approx(quad_loss(model, theta), rel=1e-12, abs=1e-15)
    # the grid covers the path and the final point with the margin
    lo, hi = np.minimum(res.coords.min(0), 0.0), np.maximum(res.coords.max(0), 0.0)
    span = hi - lo
    np.testing.assert_allclose([res.plane.X.min(), res.plane.Y.min()], lo - 0.3 * span, rtol=1e-12)
    np.testing.assert_allclose([res.plane.X.max(), res.plane.Y.max()], hi + 0.3 * span, rtol=1e-12)
    np.testing.assert_allclose(res.path_losses, [quad_loss(model, s) for s in snaps], rtol=1e-12)
    proj = [quad_loss(model, origin + float(c[0]) * d[0] + float(c[1]) * d[1]) for c in res.coords]
    np.testing.assert_allclose(res.projected_losses, proj, rtol=1e-12)
    assert res.plane.kind == "trajectory" and res.plane.bn_mode == "eval" and res.labels == tuple(str(i) for i in range(STEPS + 1))
    np.testing.assert_array_equal(res.plane.points, res.coords)
    json.dumps(to_jsonable(res.to_dict()))


def test_unnormalised_scan_uses_the_pca_plane_and_filter_normalised_the_rescaled_directions():
    e0 = torch.tensor([1.0, -0.5, 0.7, 0.2, -1.1, 0.4, 0.9, -0.3], dtype=torch.float64)
    model, snaps = gd_path(A, W_STAR, e0)
    plain = trajectory_scan(model, snaps, DUMMY, num=3, **KW)
    torch.testing.assert_close(plain.directions, plain.pca.directions, rtol=0, atol=0)
    np.testing.assert_array_equal(plain.coords, plain.pca.coords)
    assert plain.plane_fraction == pytest.approx(plain.pca.plane_fraction, rel=1e-12)

    for policy in ("keep", "zero"):
        filt = trajectory_scan(model, snaps, DUMMY, num=3, normalization="filter", bias_policy=policy, **KW)
        like = {n: p.detach() for n, p in model.named_parameters()}
        origin = unflatten_params(filt.pca.origin, like)
        for k in range(2):
            want = filter_normalize(unflatten_params(filt.pca.directions[k], like), origin, bias_policy=policy)
            torch.testing.assert_close(filt.directions[k], torch.cat([t.reshape(-1) for t in want.values()]), rtol=1e-14, atol=0)
        offsets = (torch.stack(snaps) - filt.pca.origin).numpy()
        coef, *_ = np.linalg.lstsq(filt.directions.numpy().T, offsets.T, rcond=None)
        np.testing.assert_allclose(filt.coords, coef.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(filt.residuals, np.linalg.norm(offsets - coef.T @ filt.directions.numpy(), axis=1), rtol=1e-10, atol=1e-12)
        # the rescaled plane is another plane: it holds no more of the path than the principal one
        assert filt.plane_fraction <= plain.pca.plane_fraction + 1e-12
    # with the biases left out, the bias part of every offset is off the plane
    assert np.all(filt.directions[:, 6:].numpy() == 0)


def test_plot_draws_the_path_and_labels_the_explained_variance():
    e0 = torch.tensor([1.0, -0.5, 0.7, 0.2, -1.1, 0.4, 0.9, -0.3], dtype=torch.float64)
    model, snaps = gd_path(A, W_STAR, e0)
    res = trajectory_scan(model, snaps, DUMMY, num=5, labels=[f"epoch {t}" for t in range(STEPS + 1)], **KW)
    fig = plot_trajectory(res)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    ev = 100 * res.pca.explained_variance_ratio
    assert f"{ev[0]:.1f}%" in ax.get_xlabel() and f"{ev[1]:.1f}%" in ax.get_ylabel()
    path = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == STEPS + 1]
    assert path and np.array_equal(path[0].get_xdata(), res.coords[:, 0])
    texts = [t.get_text() for t in ax.texts]
    assert "start (epoch 0)" in texts and f"end (epoch {STEPS})" in texts


def test_bad_input_is_refused_with_what_was_wrong():
    v = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 3 snapshots .* got 2"):
        trajectory_pca([v, v + 1])
    with pytest.raises(ValueError, match="differ in length: snapshot 2 has 5 entries, snapshot 0 has 4"):
        trajectory_pca([v, v + 1, torch.zeros(5, dtype=torch.float64)])
    with pytest.raises(ValueError, match=r"flat \(P,\) vector; snapshot 1 has shape \(2, 2\)"):
        trajectory_pca([v, torch.zeros(2, 2), v])
    with pytest.raises(ValueError, match=r"must be \(T, P\)"):
        trajectory_pca(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="snapshot 1 has non-finite"):
        trajectory_pca([v, torch.full((4,), math.nan), v + 2])
    with pytest.raises(ValueError, match="all snapshots equal the final one"):
        trajectory_pca([v, v, v])
    with pytest.raises(ValueError, match="straight path has no principal plane"):
        trajectory_pca([v + 3, v + 2, v + 1, v])
    # gradient descent on an isotropic quadratic goes straight to the minimum
    model, snaps = gd_path(torch.full((8,), 0.7, dtype=torch.float64), W_STAR, torch.ones(8, dtype=torch.float64), steps=5)
    with pytest.raises(ValueError, match="span one direction only"):
        trajectory_scan(model, snaps, DUMMY, **KW)
    model, snaps = gd_path(A, W_STAR, torch.ones(8, dtype=torch.float64), steps=5)
    with pytest.raises(ValueError, match="expected a flat vector of length 8"):
        trajectory_scan(model, [*snaps, torch.zeros(7, dtype=torch.float64)], DUMMY, **KW)
    with pytest.raises(ValueError, match=r"normalization must be one of \['none', 'filter'\], got 'pca'"):
        trajectory_scan(model, snaps, DUMMY, normalization="pca", **KW)
    with pytest.raises(ValueError, match="bias_policy must be one of"):
        trajectory_scan(model, snaps, DUMMY, normalization="filter", bias_policy="drop", **KW)
    with pytest.raises(ValueError, match=r"labels must have one entry per snapshot \(6\), got 2"):
        trajectory_scan(model, snaps, DUMMY, labels=["a", "b"], **KW)
    with pytest.raises(ValueError, match="num must be an integer >= 2"):
        trajectory_scan(model, snaps, DUMMY, num=1, **KW)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        trajectory_scan(model, snaps, DUMMY, margin=-0.1, **KW)
    # a path that moves the biases only: with bias_policy="zero" the filter-normalised directions vanish
    e0 = torch.zeros(8, dtype=torch.float64)
    e0[6], e0[7] = 1.0, -2.0
    model, snaps = gd_path(A, W_STAR, e0, steps=5)
    with pytest.raises(ValueError, match="do not span a plane"):
        trajectory_scan(model, snaps, DUMMY, normalization="filter", bias_policy="zero", **KW)
