"""Mode connectivity: straight-line barriers and trained Bezier curves between two solutions.

* Straight line ``theta(t) = theta_a + t (theta_b - theta_a)``, ``t in [0, 1]``, on a grid
  (Goodfellow et al. 2015; Frankle, Dziugaite, Roy & Carbin 2020, *Linear mode
  connectivity and the lottery ticket hypothesis*).
* Bezier curves of degree ``n = num_bends + 1`` with fixed end points ``p_0 = theta_a``,
  ``p_n = theta_b`` and trainable interior control points (Garipov, Izmailov, Podoprikhin,
  Vetrov & Wilson 2018, *Loss surfaces, mode connectivity, and fast ensembling of DNNs*):
  ``phi(t) = sum_j C(n, j) t^j (1 - t)^(n - j) p_j``; ``num_bends = 1`` (quadratic) is the
  common case. The bends start on the straight line (``p_j = theta_a + j/n (theta_b -
  theta_a)``, so the initial curve *is* the line) and are trained with Adam on

  - ``"expected"``: ``E_{t ~ U(0,1)} L(phi(t))`` (Garipov et al.'s objective), ``t`` drawn
    with the given seed, ``ts_per_step`` draws per step;
  - ``"minimax"``: eq. (10) of the first research plan, ``min_p max_t L(phi(t))``. The max
    over ``t`` is replaced by a surrogate on a fixed grid of interior ``t`` values:
    ``"logsumexp"``, ``tau * log sum_i exp(L(t_i) / tau)`` (a smooth upper bound on the
    grid max, within ``tau * log(K)`` of it; ``tau`` in loss units), or ``"topk"``, the
    mean of the ``k`` largest ``L(t_i)`` (``k = 1`` is the plain max, whose gradient only
    follows the current worst point).

Barrier heights (reported for the loss and for the error rate) on a grid ``t_0 = 0 < ...
< t_K = 1``:

* ``barrier`` (mean-endpoint variant): ``max_t L(t) - (L(0) + L(1)) / 2``;
* ``barrier_interp`` (interpolated-endpoint variant, Frankle et al. 2020):
  ``max_t [L(t) - ((1 - t) L(0) + t L(1))]``, which measures the bump above the chord and
  is 0 for a convex profile even when the end losses differ.

Both are 0 for a path between a model and itself; they may be negative when the path dips
below the end points (no clipping). Training uses BatchNorm batch statistics (running
statistics if ``bn_mode == "eval"``); every reported value uses ``bn_mode``, and for
networks with BatchNorm ``bn_mode="recalibrate"`` recomputes the statistics at each point
of the curve, as Garipov et al. do. The curve reproduces the end points exactly at
``t = 0`` and ``t = 1`` (the end points are returned as they are, not recombined), so its
losses there equal the end points' losses under the same policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.seeding import seeded_generator

from .functional import Batch, BNMode, Evaluation, LossFn, Objective, Params
from .scans import _figure

__all__ = [
    "OBJECTIVES",
    "SURROGATES",
    "PathEvaluation",
    "BezierCurve",
    "BezierResult",
    "barrier_heights",
    "linear_path",
    "evaluate_path",
    "fit_bezier",
    "plot_paths",
]

OBJECTIVES: tuple[str, ...] = ("expected", "minimax")
SURROGATES: tuple[str, ...] = ("logsumexp", "topk")


def barrier_heights(ts: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Barrier heights of a profile ``values`` on the grid ``ts`` (``ts[0] = 0``, ``ts[-1] = 1``).

    Returns:
        ``(barrier, barrier_interp, t_max)``: mean-endpoint and interpolated-endpoint
        barriers (module docstring) and the ``t`` of the highest point of the profile.

    Raises:
        ValueError: Grid not strictly increasing from 0 to 1, or lengths differ.
    """
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape or t.size < 2 or t[0] != 0.0 or t[-1] != 1.0 or np.any(np.diff(t) <= 0):
        raise ValueError(f"ts must be a strictly increasing grid from 0 to 1 matching values, got {t!r}")
    if np.any(np.isnan(v)):
        return math.nan, math.nan, math.nan
    i = int(np.argmax(v))
    barrier = float(v[i] - 0.5 * (v[0] + v[-1]))
    chord = v[0] + t * (v[-1] - v[0])
    return barrier, float(np.max(v - chord)), float(t[i])


@dataclass(frozen=True)
class PathEvaluation:
    """Loss and error along a path ``t -> theta(t)``, with barrier heights.

    Attributes:
        ts: (K,) grid on [0, 1] (end points included).
        losses: (K,) mean loss.
        errors: (K,) error rate (NaN when not a classification task).
        barrier: ``max_t L(t) - (L(0) + L(1)) / 2``.
        barrier_interp: ``max_t [L(t) - ((1 - t) L(0) + t L(1))]``.
        t_max: ``t`` of the highest loss.
        error_barrier: Mean-endpoint barrier of the error rate.
        error_barrier_interp: Interpolated-endpoint barrier of the error rate.
        bn_mode: BatchNorm policy used.
        path: ``"linear"`` or ``"bezier"``.
    """

    ts: np.ndarray
    losses: np.ndarray
    errors: np.ndarray
    barrier: float
    barrier_interp: float
    t_max: float
    error_barrier: float
    error_barrier_interp: float
    bn_mode: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts.tolist(),
            "losses": self.losses.tolist(),
            "errors": self.errors.tolist(),
            "barrier": self.barrier,
            "barrier_interp": self.barrier_interp,
            "t_max": self.t_max,
            "error_barrier": self.error_barrier,
            "error_barrier_interp": self.error_barrier_interp,
            "bn_mode": self.bn_mode,
            "path": self.path,
        }


def _bernstein(t: float, degree: int) -> list[float]:
    return [math.comb(degree, j) * t**j * (1.0 - t) ** (degree - j) for j in range(degree + 1)]


@dataclass(frozen=True)
class BezierCurve:
    """A Bezier curve in parameter space.

    Attributes:
        control_points: (n + 1, P) control points; rows 0 and n are the fixed end points.
    """

    control_points: Tensor

    @property
    def degree(self) -> int:
        return int(self.control_points.shape[0]) - 1

    def point(self, t: float) -> Tensor:
        """``phi(t)`` (P,); exactly ``p_0`` at ``t = 0`` and ``p_n`` at ``t = 1``."""
        return _curve_point(self.control_points, float(t))


def _curve_point(cp: Tensor, t: float) -> Tensor:
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t!r}")
    if t == 0.0:
        return cp[0]
    if t == 1.0:
        return cp[-1]
    w = torch.tensor(_bernstein(t, cp.shape[0] - 1), dtype=cp.dtype, device=cp.device)
    return w @ cp


def _ts(ts: Sequence[float] | np.ndarray | None, num: int = 21) -> np.ndarray:
    t = np.linspace(0.0, 1.0, num) if ts is None else np.asarray(ts, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or t[0] != 0.0 or t[-1] != 1.0 or np.any(np.diff(t) <= 0):
        raise ValueError(f"ts must be a strictly increasing grid from 0 to 1, got {ts!r}")
    return t


def _check_end_evals(end_evals: Any, obj: Objective) -> tuple[Evaluation | None, Evaluation | None]:
    if end_evals is None:
        return None, None
    if not (isinstance(end_evals, (tuple, list)) and len(end_evals) == 2):
        raise ValueError(f"end_evals must be a pair (Evaluation at t=0, Evaluation at t=1), got {end_evals!r}")
    n = sum(int(b[1].shape[0]) if b[1].ndim > 0 else 1 for b in obj.batches)
    for ev in end_evals:
        if ev is None:
            continue
        if not isinstance(ev, Evaluation):
            raise ValueError(f"end_evals entries must be Evaluation or None, got {type(ev).__name__}")
        if ev.bn_mode != obj.bn_mode or ev.num_examples != n:
            raise ValueError(
                f"an end point evaluation must come from the same batches and policy: got {ev.num_examples} examples with "
                f"bn_mode={ev.bn_mode!r}, path uses {n} with {obj.bn_mode!r}"
            )
    return end_evals[0], end_evals[1]


def _path_eval(
    obj: Objective,
    points: Sequence[Tensor],
    ts: np.ndarray,
    path: str,
    end_evals: tuple[Evaluation | None, Evaluation | None] = (None, None),
) -> PathEvaluation:
    losses = np.empty(len(ts))
    errors = np.empty(len(ts))
    last = len(ts) - 1
    for i, p in enumerate(points):
        known = end_evals[0] if i == 0 else end_evals[1] if i == last else None
        ev = known if known is not None else obj.evaluate(p)
        losses[i], errors[i] = ev.loss, ev.error
    b, bi, tm = barrier_heights(ts, losses)
    eb, ebi, _ = barrier_heights(ts, errors)
    return PathEvaluation(ts, losses, errors, b, bi, tm, eb, ebi, obj.bn_mode, path)


def linear_path(
    model: nn.Module,
    theta_a: Params,
    theta_b: Params,
    batches: Sequence[Batch],
    *,
    ts: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    end_evals: tuple[Evaluation | None, Evaluation | None] | None = None,
) -> PathEvaluation:
    """Loss, error and barriers along the straight line ``theta_a + t (theta_b - theta_a)``.

    Args:
        model: Any module (used through ``functional_call`` only).
        theta_a: First end point (flat (P,) vector or parameter dict).
        theta_b: Second end point.
        batches: Evaluation batches.
        ts: Grid from 0 to 1 (default 21 points).
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        bn_mode: ``"eval"``, ``"batch"`` or ``"recalibrate"``.
        recal_batches: Batches for ``"recalibrate"``.
        buffers: Buffers used instead of the model's.
        end_evals: Known evaluations ``(at theta_a, at theta_b)`` on the same batches
            under the same policy (either may be None), used instead of evaluating the
            end points again (e.g. one seed's evaluation shared by all its pairs).

    Raises:
        ValueError: Bad grid, or an ``end_evals`` entry from other batches or policy.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    grid = _ts(ts)
    ends = _check_end_evals(end_evals, obj)
    a, b = obj.flat(theta_a), obj.flat(theta_b)
    diff = b - a
    points = [a if t == 0 else b if t == 1 else a + float(t) * diff for t in grid]
    return _path_eval(obj, points, grid, "linear", ends)


def evaluate_path(
    model: nn.Module,
    curve: BezierCurve,
    batches: Sequence[Batch],
    *,
    ts: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    end_evals: tuple[Evaluation | None, Evaluation | None] | None = None,
) -> PathEvaluation:
    """Loss, error and barriers along a Bezier curve (arguments as :func:`linear_path`)."""
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    grid = _ts(ts)
    ends = _check_end_evals(end_evals, obj)
    cp = curve.control_points.detach().to(device=obj.device, dtype=obj.dtype)
    if cp.ndim != 2 or cp.shape[1] != obj.num_params:
        raise ValueError(f"control points must have shape (n + 1, {obj.num_params}), got {tuple(cp.shape)}")
    return _path_eval(obj, [_curve_point(cp, float(t)) for t in grid], grid, "bezier", ends)


@dataclass(frozen=True)
class BezierResult:
    """A trained Bezier curve and its evaluation.

    Attributes:
        curve: The curve (control points detached).
        train: Path evaluation on the training batches.
        test: Path evaluation on the test batches (None if none were given).
        history: (steps,) training objective per step (surrogate value for minimax).
        settings: Objective, surrogate, steps, lr, seed, ... as passed.
    """

    curve: BezierCurve
    train: PathEvaluation
    test: PathEvaluation | None
    history: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.to_dict(),
            "test": None if self.test is None else self.test.to_dict(),
            "history": self.history.tolist(),
            "settings": dict(self.settings),
            "num_bends": self.curve.degree - 1,
        }


def _check_pos_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def fit_bezier(
    model: nn.Module,
    theta_a: Params,
    theta_b: Params,
    train_batches: Sequence[Batch],
    *,
    num_bends: int = 1,
    objective: str = "expected",
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    ts_per_step: int = 1,
    minimax_ts: Sequence[float] | np.ndarray | None = None,
    surrogate: str = "logsumexp",
    temperature: float = 0.05,
    top_k: int = 1,
    eval_ts: Sequence[float] | np.ndarray | None = None,
    test_batches: Sequence[Batch] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    end_evals: Mapping[str, tuple[Evaluation | None, Evaluation | None]] | None = None,
) -> BezierResult:
    """Train the interior control points of a Bezier curve between two solutions.

    Each step uses one training batch (cycling through ``train_batches`` in order) and
    one Adam update of the ``num_bends`` interior control points.

    Args:
        model: Any module (used through ``functional_call`` only).
        theta_a: First end point (flat (P,) vector or parameter dict), fixed.
        theta_b: Second end point, fixed.
        train_batches: Training batches (also the default evaluation set).
        num_bends: Interior control points (1: quadratic curve).
        objective: ``"expected"`` (``t ~ U(0, 1)``) or ``"minimax"`` (plan eq. (10)).
        steps: Adam steps.
        lr: Adam learning rate (parameter units).
        seed: Seed of the ``t`` draws (``"expected"``).
        ts_per_step: ``t`` draws averaged per step (``"expected"``).
        minimax_ts: Interior grid for the minimax surrogate (default 9 points
            ``0.1, ..., 0.9``).
        surrogate: ``"logsumexp"`` or ``"topk"`` (module docstring).
        temperature: ``tau`` of the log-sum-exp surrogate, in loss units.
        top_k: ``k`` of the top-k surrogate.
        eval_ts: Evaluation grid from 0 to 1 (default 21 points).
        test_batches: Optional test batches: the test barrier is reported too.
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        bn_mode: Policy of the evaluation (``"recalibrate"`` recommended with BatchNorm).
        recal_batches: Batches for ``"recalibrate"`` (used for train and test evaluation).
        buffers: Buffers used instead of the model's.
        end_evals: Known end point evaluations by split, ``{"train": (ev_a, ev_b),
            "test": ...}`` (see :func:`linear_path`); the curve passes through the end
            points exactly, so the straight line's evaluations serve it too.

    Raises:
        ValueError: Unknown ``objective``/``surrogate``, a non-positive count, ``lr`` or
            ``temperature``, ``top_k`` larger than the minimax grid, or unusable ``end_evals``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {list(SURROGATES)}, got {surrogate!r}")
    _check_pos_int("num_bends", num_bends)
    _check_pos_int("steps", steps)
    _check_pos_int("ts_per_step", ts_per_step)
    _check_pos_int("top_k", top_k)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    grid_mm = np.linspace(0.1, 0.9, 9) if minimax_ts is None else np.asarray(minimax_ts, dtype=np.float64)
    if grid_mm.ndim != 1 or grid_mm.size == 0 or np.any(grid_mm <= 0) or np.any(grid_mm >= 1):
        raise ValueError(f"minimax_ts must be a non-empty 1-D grid inside (0, 1), got {minimax_ts!r}")
    if objective == "minimax" and surrogate == "topk" and top_k > grid_mm.size:
        raise ValueError(f"top_k must be <= the {grid_mm.size} minimax grid points, got {top_k}")
    grid_eval = _ts(eval_ts)
    obj = Objective(model, train_batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    a, b = obj.flat(theta_a), obj.flat(theta_b)
    n = num_bends + 1
    fractions = torch.arange(1, n, dtype=a.dtype, device=a.device) / n
    bends = (a[None, :] + fractions[:, None] * (b - a)[None, :]).clone().requires_grad_(True)
    opt = torch.optim.Adam([bends], lr=float(lr))
    gen = seeded_generator(seed)
    history = []
    for step in range(steps):
        batch = train_batches[step % len(train_batches)]
        cp = torch.cat([a[None, :], bends, b[None, :]])
        if objective == "expected":
            draws = torch.rand(ts_per_step, generator=gen, dtype=torch.float64).tolist()
            value = torch.stack([obj.training_loss(_curve_point(cp, t), batch) for t in draws]).mean()
        else:
            losses = torch.stack([obj.training_loss(_curve_point(cp, float(t)), batch) for t in grid_mm])
            if surrogate == "logsumexp":
                value = temperature * torch.logsumexp(losses / temperature, dim=0)
            else:
                value = torch.topk(losses, top_k).values.mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        history.append(value.detach())
    curve = BezierCurve(torch.cat([a[None, :], bends.detach(), b[None, :]]))
    known = dict(end_evals or {})
    common: dict[str, Any] = {"ts": grid_eval, "loss_fn": loss_fn, "bn_mode": bn_mode, "recal_batches": recal_batches, "buffers": buffers}
    train = evaluate_path(model, curve, train_batches, end_evals=known.get("train"), **common)
    test = None
    if test_batches is not None:
        test = evaluate_path(model, curve, test_batches, end_evals=known.get("test"), **common)
    settings = {
        "num_bends": num_bends,
        "objective": objective,
        "steps": steps,
        "lr": float(lr),
        "seed": int(seed),
        "ts_per_step": ts_per_step,
        "minimax_ts": grid_mm.tolist() if objective == "minimax" else None,
        "surrogate": surrogate if objective == "minimax" else None,
        "temperature": float(temperature) if objective == "minimax" and surrogate == "logsumexp" else None,
        "top_k": top_k if objective == "minimax" and surrogate == "topk" else None,
        "bn_mode": obj.bn_mode,
        "train_bn": "running" if obj.bn_mode == "eval" else "batch",
    }
    return BezierResult(curve, train, test, torch.stack(history).cpu().numpy(), settings)


def plot_paths(paths: Mapping[str, PathEvaluation], *, metric: str = "loss", log: bool = False) -> Any:
    """Loss (or error) along each path against ``t``, end points marked; returns the Figure.

    Args:
        paths: Evaluations by legend label (e.g. ``{"linear": ..., "bezier": ...}``).
        metric: ``"loss"`` or ``"error"``.
        log: Logarithmic y axis.

    Raises:
        ValueError: No paths or an unknown ``metric``.
    """
    if not paths:
        raise ValueError("plot_paths needs at least one path evaluation")
    if metric not in ("loss", "error"):
        raise ValueError(f"metric must be 'loss' or 'error', got {metric!r}")
    fig = _figure((5.0, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for label, ev in paths.items():
        values = ev.losses if metric == "loss" else ev.errors
        barrier = ev.barrier if metric == "loss" else ev.error_barrier
        ax.plot(ev.ts, values, marker=".", label=f"{label} (barrier {barrier:.3g})")
    ax.set_xlabel("t")
    ax.set_ylabel(f"{metric} (bn={next(iter(paths.values())).bn_mode})")
    if log:
        ax.set_yscale("log")
    ax.legend()
    return fig
