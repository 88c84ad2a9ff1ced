"""Tests of landscape.probes.connectivity: known barriers, exact end points, Bezier training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from probe_helpers import DUMMY, Surface, classification_batches, identity_loss, make_mlp

from landscape.io import to_jsonable
from landscape.probes.connectivity import BezierCurve, barrier_heights, evaluate_path, fit_bezier, linear_path, plot_paths
from landscape.probes.functional import evaluate, flatten_params, parameter_dict

KW = dict(loss_fn=identity_loss, bn_mode="eval")
ANG = math.radians(20.0)
# two minima on the ring r = 1 of L = (r^2 - 1)^2, joined by a chord at height sin(20 deg)
RING_A = torch.tensor([-math.cos(ANG), math.sin(ANG)], dtype=torch.float64)
RING_B = torch.tensor([math.cos(ANG), math.sin(ANG)], dtype=torch.float64)


def ring(t: torch.Tensor) -> torch.Tensor:
    return (t @ t - 1.0) ** 2


def test_barrier_heights_closed_forms():
    ts = np.linspace(0, 1, 5)
    # convex profile between unequal end points: mean variant > 0, chord variant = 0 (max at t=1 end)
    v = np.array([0.0, 0.25, 0.5, 0.75, 1.0]) ** 2
    b, bi, tm = barrier_heights(ts, v)
    assert b == pytest.approx(0.5) and bi == pytest.approx(0.0) and tm == 1.0
    bump = np.array([1.0, 2.0, 4.0, 3.5, 3.0])
    b, bi, tm = barrier_heights(ts, bump)
    assert b == pytest.approx(2.0) and bi == pytest.approx(4.0 - 2.0) and tm == 0.5
    with pytest.raises(ValueError, match="strictly increasing grid from 0 to 1"):
        barrier_heights(np.array([0.0, 0.5]), np.array([1.0, 2.0]))


def test_straight_line_barrier_on_double_well_is_known():
    model = Surface(lambda t: (t[0] ** 2 - 1) ** 2 + t[1] ** 2, torch.zeros(2))
    path = linear_path(model, torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0]), DUMMY, **KW)
    np.testing.assert_allclose(path.losses, ((2 * path.ts - 1) ** 2 - 1) ** 2, atol=1e-14)
    assert path.barrier == pytest.approx(1.0, abs=1e-14) and path.barrier_interp == pytest.approx(1.0, abs=1e-14)
    assert path.t_max == 0.5 and path.bn_mode == "eval" and path.path == "linear"
    ring_path = linear_path(Surface(ring, torch.zeros(2)), RING_A, RING_B, DUMMY, **KW)
    assert ring_path.barrier == pytest.approx(math.cos(ANG) ** 4, rel=1e-12)


@pytest.mark.parametrize("bn", [False, True])
def test_barrier_between_model_and_itself_is_zero(bn):
    batches = classification_batches()
    model = make_mlp(bn=bn)
    theta = parameter_dict(model)
    mode = "recalibrate" if bn else "eval"
    path = linear_path(model, theta, theta, batches, bn_mode=mode, recal_batches=batches[:2])
    assert path.barrier == 0.0 and path.barrier_interp == 0.0 and path.error_barrier == 0.0


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "recalibrate"])
def test_curves_reproduce_endpoint_losses_exactly(bn_mode):
    batches = classification_batches()
    a_model, b_model = make_mlp(seed=0, bn=True), make_mlp(seed=1, bn=True)
    ta, tb = parameter_dict(a_model), parameter_dict(b_model)
    kw = dict(bn_mode=bn_mode, recal_batches=batches[:2])
    la = evaluate(a_model, ta, batches, **kw).loss
    lb = evaluate(a_model, tb, batches, **kw).loss
    line = linear_path(a_model, ta, tb, batches, **kw)
    assert line.losses[0] == la and line.losses[-1] == lb
    g = torch.Generator().manual_seed(0)
    fa, fb = flatten_params(ta), flatten_params(tb)
    cp = torch.stack([fa, torch.randn(fa.shape, generator=g, dtype=torch.float64), torch.randn(fa.shape, generator=g, dtype=torch.float64), fb])
    curve = evaluate_path(a_model, BezierCurve(cp), batches, ts=[0.0, 0.3, 1.0], **kw)
    assert curve.losses[0] == la and curve.losses[-1] == lb
    assert torch.equal(BezierCurve(cp).point(0.0), fa) and torch.equal(BezierCurve(cp).point(1.0), fb)


def test_bezier_point_is_bernstein_combination():
    cp = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 0.0]], dtype=torch.float64)
    t = 0.3
    expected = (1 - t) ** 2 * cp[0] + 2 * t * (1 - t) * cp[1] + t**2 * cp[2]
    torch.testing.assert_close(BezierCurve(cp).point(t), expected, rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        BezierCurve(cp).point(1.5)


@pytest.mark.parametrize(
    "objective,extra",
    [("expected", {"ts_per_step": 2}), ("minimax", {"surrogate": "logsumexp", "temperature": 0.02}), ("minimax", {"surrogate": "topk", "top_k": 2})],
)
def test_bezier_finds_low_path_around_ring(objective, extra):
    model = Surface(ring, torch.zeros(2))
    straight = linear_path(model, RING_A, RING_B, DUMMY, **KW).barrier
    res = fit_bezier(model, RING_A, RING_B, DUMMY, objective=objective, steps=120, lr=0.05, seed=0, **extra, **KW)
    # the best quadratic curve (bend near (0, 2 - sin 20deg)) has a barrier of a few 1e-2
    assert res.train.barrier < 0.1 * straight
    assert res.train.losses[0] == ring(RING_A).item() and res.train.losses[-1] == ring(RING_B).item()
    assert res.curve.control_points.shape == (3, 2) and res.curve.control_points[1, 1] > 1.0
    assert res.history.shape == (120,) and res.test is None
    assert res.settings["objective"] == objective and res.settings["bn_mode"] == "eval"
    json.dumps(to_jsonable(res))


def test_bezier_on_bn_network_reports_train_and_test():
    batches = classification_batches(seed=0)
    test_batches = classification_batches(seed=1)
    m0, m1 = make_mlp(seed=0, bn=True), make_mlp(seed=1, bn=True)
    snap = {k: v.clone() for k, v in m0.state_dict().items()}
    res = fit_bezier(m0, parameter_dict(m0), parameter_dict(m1), batches, steps=30, lr=0.01, test_batches=test_batches, bn_mode="recalibrate", recal_batches=batches, eval_ts=np.linspace(0, 1, 5))
    assert res.test is not None and res.train.bn_mode == res.test.bn_mode == "recalibrate"
    assert res.settings["train_bn"] == "batch"
    assert np.isfinite(res.train.barrier) and np.isfinite(res.test.barrier)
    # history: the expected loss went down from the straight line's
    assert res.history[-5:].mean() < res.history[:5].mean()
    assert all(torch.equal(v, snap[k]) for k, v in m0.state_dict().items())
    assert all(p.grad is None for p in m0.parameters())


def test_fit_bezier_argument_errors():
    model = Surface(ring, torch.zeros(2))
    args = (model, RING_A, RING_B, DUMMY)
    with pytest.raises(ValueError, match="objective must be one of"):
        fit_bezier(*args, objective="max", **KW)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        fit_bezier(*args, surrogate="softmax", **KW)
    with pytest.raises(ValueError, match="num_bends must be an integer >= 1"):
        fit_bezier(*args, num_bends=0, **KW)
    with pytest.raises(ValueError, match="lr must be > 0"):
        fit_bezier(*args, lr=0.0, **KW)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        fit_bezier(*args, temperature=-1.0, **KW)
    with pytest.raises(ValueError, match="top_k must be <="):
        fit_bezier(*args, objective="minimax", surrogate="topk", top_k=10, **KW)
    with pytest.raises(ValueError, match="minimax_ts must be a non-empty 1-D grid inside"):
        fit_bezier(*args, objective="minimax", minimax_ts=[0.0, 0.5], **KW)
    with pytest.raises(ValueError, match="ts must be a strictly increasing grid"):
        linear_path(*args, ts=[0.2, 1.0], **KW)
    with pytest.raises(ValueError, match="control points must have shape"):
        evaluate_path(model, BezierCurve(torch.zeros(3, 5)), DUMMY, **KW)


def test_known_end_evaluations_are_reused_not_recomputed(monkeypatch):
    batches = classification_batches()
    model = make_mlp(seed=0, bn=True)
    ta, tb = parameter_dict(model), parameter_dict(make_mlp(seed=1, bn=True))
    kw = dict(bn_mode="recalibrate", recal_batches=batches[:2], ts=np.linspace(0, 1, 5))
    full = linear_path(model, ta, tb, batches, **kw)
    ends = (evaluate(model, ta, batches, bn_mode="recalibrate", recal_batches=batches[:2]),
            evaluate(model, tb, batches, bn_mode="recalibrate", recal_batches=batches[:2]))
    from landscape.probes import functional

    calls = []
    original = functional.Objective.evaluate
    monkeypatch.setattr(functional.Objective, "evaluate", lambda self, p, b=None: calls.append(1) or original(self, p, b))
    reused = linear_path(model, ta, tb, batches, end_evals=ends, **kw)
    assert len(calls) == 3  # interior points only
    np.testing.assert_array_equal(reused.losses, full.losses)
    np.testing.assert_array_equal(reused.errors, full.errors)
    assert reused.barrier == full.barrier
    calls.clear()
    half = linear_path(model, ta, tb, batches, end_evals=(ends[0], None), **kw)
    assert len(calls) == 4 and half.losses[-1] == full.losses[-1]
    with pytest.raises(ValueError, match=r"same batches and policy: got 96 examples with bn_mode='recalibrate', path uses 32"):
        linear_path(model, ta, tb, batches[:1], end_evals=ends, **kw)
    with pytest.raises(ValueError, match=r"end_evals must be a pair"):
        linear_path(model, ta, tb, batches, end_evals=ends[:1], **kw)


def test_plot_paths_draws_each_path_with_its_barrier():
    from matplotlib.figure import Figure

    model = make_mlp()
    batches = classification_batches()
    a, b = parameter_dict(model), {n: t + 0.3 for n, t in parameter_dict(model).items()}
    path = linear_path(model, a, b, batches, ts=np.linspace(0, 1, 5), bn_mode="eval")
    fig = plot_paths({"linear": path}, metric="error")
    assert isinstance(fig, Figure)
    (legend,) = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == f"linear (barrier {path.error_barrier:.3g})"
    fig.canvas.draw()
    with pytest.raises(ValueError, match="metric must be 'loss' or 'error', got 'acc'"):
        plot_paths({"linear": path}, metric="acc")
    with pytest.raises(ValueError, match="needs at least one path"):
        plot_paths({})
