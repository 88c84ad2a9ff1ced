"""Tests of landscape.probes.intrinsic_dim: projections, search logic, a known-d* synthetic task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from probe_helpers import classification_batches, make_mlp
from torch import nn

from landscape.io import to_jsonable
from landscape.probes.functional import parameter_dict
from landscape.probes.intrinsic_dim import (
    bootstrap_ci,
    intrinsic_dim_ci,
    make_projection,
    search_intrinsic_dim,
    subspace_performance,
    train_subspace,
)

D_STAR, D = 5, 40


class LowRankRegression(nn.Module):
    """Linear regression whose loss depends on theta (two tensors, D = 40) only through
    u = A theta in R^5, A = sqrt(D/d*) Q^T with orthonormal Q: exactly d* = 5 directions matter."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        q, _ = torch.linalg.qr(torch.randn(D, D_STAR, generator=g, dtype=torch.float64))
        self.register_buffer("A", math.sqrt(D / D_STAR) * q.T)
        self.a = nn.Parameter(torch.zeros(25, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(15, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.A @ torch.cat([self.a, self.b]))


def _task():
    model = LowRankRegression()
    g = torch.Generator().manual_seed(1)
    w = torch.randn(D_STAR, generator=g, dtype=torch.float64)
    x, xe = (torch.randn(200, D_STAR, generator=g, dtype=torch.float64) for _ in range(2))
    y, ye = x @ w, xe @ w
    tol = 0.05 * ye.std()

    def within_tolerance(theta: torch.Tensor) -> float:
        """Fraction of held-out targets predicted to within 5% of their std."""
        return float(((xe @ (model.A @ theta) - ye).abs() < tol).double().mean())

    return model, [(x, y)], within_tolerance


def test_projections_have_unit_columns_and_are_seeded():
    for kind in ("dense", "sparse"):
        p = make_projection(400, 7, kind=kind, seed=3, dtype=torch.float64)
        dense = p.matrix.to_dense() if p.matrix.is_sparse else p.matrix
        torch.testing.assert_close(dense.norm(dim=0), torch.ones(7, dtype=torch.float64))
        z = torch.randn(7, dtype=torch.float64)
        torch.testing.assert_close(p(z), dense @ z)
        again = make_projection(400, 7, kind=kind, seed=3, dtype=torch.float64).matrix
        assert torch.equal(dense, again.to_dense() if again.is_sparse else again)
    sp = make_projection(400, 7, kind="sparse", seed=3, dtype=torch.float64).matrix
    nnz_per_col = sp._nnz() / 7
    assert nnz_per_col <= 20 and nnz_per_col >= 15  # ~ sqrt(400) = 20 draws, few collisions
    ident = make_projection(5, 5, kind="identity")
    z = torch.arange(5.0)
    assert torch.equal(ident(z), z)


def test_search_recovers_step_function_exactly():
    for d_star in (1, 2, 7, 13, 64, 100):
        calls = []

        def perf(d, d_star=d_star):
            calls.append(d)
            return 1.0 if d >= d_star else 0.2

        res = search_intrinsic_dim(perf, 1.0, d_min=1, d_max=100)
        assert res.d_int == d_star and res.reached
        assert len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(100)) + 1
    res = search_intrinsic_dim(lambda d: 0.1, 1.0, d_max=50)
    assert not res.reached and math.isnan(res.d_int) and max(res.dims) == 50
    json.dumps(to_jsonable(res))


def test_bootstrap_ci_on_known_values():
    values = {0: 4, 1: 5, 2: 5, 3: 6}
    ci = intrinsic_dim_ci(lambda d, s: 1.0 if d >= values[s] else 0.0, 1.0, [0, 1, 2, 3], d_max=16, num_bootstrap=4000)
    np.testing.assert_array_equal(ci.values, [4, 5, 5, 6])
    assert ci.mean == 5.0 and 4.0 <= ci.ci_low < 5.0 < ci.ci_high <= 6.0


def test_synthetic_intrinsic_dimension_is_recovered():
    model, batches, within = _task()
    theta0 = parameter_dict(model)
    kw = dict(loss_fn=F.mse_loss, bn_mode="eval", performance=within, epochs=100, lr=0.3)
    baseline = train_subspace(model, theta0, D, batches, projection="identity", **kw)
    assert baseline.performance == 1.0 and baseline.train_loss < 1e-4
    fn = subspace_performance(model, theta0, batches, **kw)
    ci = intrinsic_dim_ci(fn, baseline.performance, seeds=list(range(1, 6)), d_min=3, d_max=8)
    # ground truth: below d* no subspace can fit the 5 constraints, so d_int >= d* always;
    # at d* the fit succeeds unless the random d*-dim system is ill-conditioned (then the
    # step budget runs out and a larger d passes): most seeds recover d* exactly
    assert np.all(ci.values >= D_STAR), ci.values
    assert np.median(ci.values) == D_STAR, ci.values
    assert ci.ci_low <= D_STAR <= ci.ci_high, (ci.values, ci.ci_low, ci.ci_high)


def test_train_subspace_classification_accuracy_and_no_side_effects():
    batches = classification_batches()
    net = make_mlp(bn=True)
    snap = {k: v.clone() for k, v in net.state_dict().items()}
    res = train_subspace(net, parameter_dict(net), 8, batches, batches, projection="sparse", epochs=3, lr=0.05, bn_mode="recalibrate", recal_batches=batches, seed=0)
    assert res.performance == pytest.approx(1 - res.eval_error) and res.settings["bn_mode"] == "recalibrate"
    assert res.z.shape == (8,)
    assert all(torch.equal(v, snap[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    sgd = train_subspace(net, parameter_dict(net), 4, batches, optimizer="sgd", epochs=1, lr=0.01, performance="neg_loss", bn_mode="eval")
    assert sgd.performance == pytest.approx(-sgd.eval_loss)


def test_intrinsic_dim_argument_errors():
    with pytest.raises(ValueError, match="projection kind must be one of"):
        make_projection(10, 2, kind="fastfood")
    with pytest.raises(ValueError, match="dim must be <= num_params"):
        make_projection(10, 11)
    with pytest.raises(ValueError, match="identity projection needs dim == num_params"):
        make_projection(10, 3, kind="identity")
    with pytest.raises(ValueError, match="density must be in"):
        make_projection(10, 3, kind="sparse", density=2.0)
    with pytest.raises(ValueError, match="baseline must be a finite performance > 0"):
        search_intrinsic_dim(lambda d: 1.0, 0.0, d_max=4)
    with pytest.raises(ValueError, match="threshold must be in"):
        search_intrinsic_dim(lambda d: 1.0, 1.0, threshold=1.5, d_max=4)
    with pytest.raises(ValueError, match="d_min must be <= d_max"):
        search_intrinsic_dim(lambda d: 1.0, 1.0, d_min=5, d_max=4)
    with pytest.raises(ValueError, match="factor must be > 1"):
        search_intrinsic_dim(lambda d: 1.0, 1.0, d_max=4, factor=1.0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        intrinsic_dim_ci(lambda d, s: 1.0, 1.0, [0], d_max=4)
    model, batches, _ = _task()
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        train_subspace(model, parameter_dict(model), 2, batches, optimizer="lbfgs", loss_fn=F.mse_loss, bn_mode="eval")
    with pytest.raises(ValueError, match="needs a classification task"):
        train_subspace(model, parameter_dict(model), 2, batches, epochs=1, loss_fn=F.mse_loss, bn_mode="eval")
    with pytest.raises(ValueError, match="performance must be 'accuracy', 'neg_loss' or a callable"):
        train_subspace(model, parameter_dict(model), 2, batches, performance="r2", loss_fn=F.mse_loss, bn_mode="eval")


def test_relative_tolerance_brackets_the_crossing_with_fewer_trainings():
    for d_star in (37, 137, 1000, 3000):
        exact = search_intrinsic_dim(lambda d, d_star=d_star: float(d >= d_star), 1.0, d_min=16, d_max=4096)
        assert exact.d_int == d_star and exact.bracket == 1.0
        for rtol in (0.05, 0.2):
            res = search_intrinsic_dim(lambda d, d_star=d_star: float(d >= d_star), 1.0, d_min=16, d_max=4096, rtol=rtol)
            # d_int passes, d_int - bracket fails: the true crossing lies in between
            assert res.d_int - res.bracket < d_star <= res.d_int
            assert res.bracket <= max(1.0, rtol * res.d_int)
            assert len(res.dims) <= len(exact.dims)
        assert len(search_intrinsic_dim(lambda d, d_star=d_star: float(d >= d_star), 1.0, d_min=16, d_max=4096, rtol=0.2).dims) < len(exact.dims)
    with pytest.raises(ValueError, match=r"rtol must be in \[0, 1\), got 1.0"):
        search_intrinsic_dim(lambda d: 1.0, 1.0, d_max=8, rtol=1.0)


def test_bootstrap_ci_of_separate_searches_matches_the_combined_call():
    values = {0: 4, 1: 5, 2: 7}
    fn = lambda d, s: 1.0 if d >= values[s] else 0.0  # noqa: E731
    combined = intrinsic_dim_ci(fn, 1.0, [0, 1, 2], d_max=16)
    searches = [search_intrinsic_dim(lambda d, s=s: fn(d, s), 1.0, d_max=16) for s in (0, 1, 2)]
    separate = bootstrap_ci(searches, [0, 1, 2])
    assert (separate.mean, separate.ci_low, separate.ci_high) == (combined.mean, combined.ci_low, combined.ci_high)
    with pytest.raises(ValueError, match=r"need one search per seed, got 2 searches for 3 seeds"):
        bootstrap_ci(searches[:2], [0, 1, 2])
