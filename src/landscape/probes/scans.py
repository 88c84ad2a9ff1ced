"""1D and 2D loss scans: lines between solutions, lines along directions, and planes.

* Line scan between two solutions, ``theta(alpha) = (1 - alpha) theta_0 + alpha theta_1``
  on ``alpha in [-0.5, 1.5]`` (first research plan, section 3.3; Goodfellow, Vinyals &
  Saxe 2015, *Qualitatively characterizing neural network optimization problems*).
* Line scan along a direction, ``theta + alpha d``, given or filter-normalised random.
* Plane scans ``theta + x d_1 + y d_2`` along

  - two zero-mean Gaussian directions, filter-normalised (Li, Xu, Taylor, Studer &
    Goldstein 2018, *Visualizing the loss landscape of neural nets*). Policy for biases
    and normalisation-layer parameters (every parameter with ``ndim <= 1``): set by
    ``bias_policy``; the default ``"zero"`` (Li et al.'s choice) leaves them unperturbed,
    ``"keep"`` leaves the drawn Gaussian entries unnormalised, ``"normalize"`` scales the
    whole vector to the parameter's norm (see :func:`~landscape.probes.functional.filter_normalize`);
  - two given directions such as the top-2 Hessian eigenvectors (normalised to unit L2
    norm and orthogonalised, so coordinates are Euclidean distances in parameter space);
  - the plane through three solutions (Garipov, Izmailov, Podoprikhin, Vetrov & Wilson
    2018, *Loss surfaces, mode connectivity, and fast ensembling of DNNs*, figure 1):
    origin ``theta_a``, ``u = (theta_b - theta_a) / ||.||`` and ``v`` the Gram-Schmidt
    orthonormalisation of ``theta_c - theta_a`` against ``u``; the three solutions sit at
    ``(0, 0)``, ``(||theta_b - theta_a||, 0)`` and ``(<theta_c - theta_a, u>, <theta_c - theta_a, v>)``.

Every point is evaluated through ``torch.func.functional_call`` under the given
``bn_mode`` (see :mod:`landscape.probes.functional`), recorded in the result. The plotting
helpers draw on a fresh ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.seeding import seeded_generator

from .functional import Batch, BNMode, LossFn, Objective, Params, random_direction

__all__ = [
    "LineScan",
    "PlaneScan",
    "PlaneBasis",
    "line_scan",
    "direction_scan",
    "random_line_scan",
    "plane_scan",
    "random_plane_scan",
    "hessian_plane_scan",
    "three_point_plane",
    "three_point_plane_scan",
    "plot_line",
    "plot_contour",
    "plot_surface",
]


@dataclass(frozen=True)
class LineScan:
    """Loss and error along a line.

    Attributes:
        alphas: (K,) line coordinates.
        losses: (K,) mean loss at each point.
        errors: (K,) error rate at each point (NaN when not a classification task).
        kind: ``"interpolation"`` (``(1 - a) theta_0 + a theta_1``) or ``"direction"``
            (``theta + a d``).
        bn_mode: BatchNorm policy used.
        step_norm: L2 norm of ``theta_1 - theta_0`` or of ``d`` (length of one unit of alpha).
    """

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray
    kind: str
    bn_mode: str
    step_norm: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "losses": self.losses.tolist(),
            "errors": self.errors.tolist(),
            "kind": self.kind,
            "bn_mode": self.bn_mode,
            "step_norm": self.step_norm,
        }


@dataclass(frozen=True)
class PlaneScan:
    """Loss and error on a grid of a 2D plane ``theta + x d_1 + y d_2``.

    Attributes:
        X: (ny, nx) first coordinates (``np.meshgrid(xs, ys)``).
        Y: (ny, nx) second coordinates.
        Z: (ny, nx) mean loss; ``Z[i, j]`` is the loss at ``(xs[j], ys[i])``.
        errors: (ny, nx) error rate (NaN when not a classification task).
        kind: ``"directions"``, ``"random"``, ``"hessian"`` or ``"three_points"``.
        bn_mode: BatchNorm policy used.
        points: (k, 2) plane coordinates of marked points (the centre, or the solutions).
        point_labels: k labels of ``points``.
        settings: Scan settings (seed, bias policy, direction norms, ...).
    """

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    errors: np.ndarray
    kind: str
    bn_mode: str
    points: np.ndarray
    point_labels: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "X": self.X.tolist(),
            "Y": self.Y.tolist(),
            "Z": self.Z.tolist(),
            "errors": self.errors.tolist(),
            "kind": self.kind,
            "bn_mode": self.bn_mode,
            "points": self.points.tolist(),
            "point_labels": list(self.point_labels),
            "settings": dict(self.settings),
        }


@dataclass(frozen=True)
class PlaneBasis:
    """Orthonormal basis of the plane through three points.

    Attributes:
        origin: (P,) the first point.
        u: (P,) unit vector towards the second point.
        v: (P,) unit vector orthogonal to ``u`` in the span of the three points.
        coords: (3, 2) coordinates of the three points in the ``(u, v)`` frame.
    """

    origin: Tensor
    u: Tensor
    v: Tensor
    coords: np.ndarray


def _grid(values: Sequence[float] | np.ndarray | None, default: np.ndarray, name: str) -> np.ndarray:
    arr = default if values is None else np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    return arr


def _scan_points(obj: Objective, origin: Tensor, dirs: Sequence[Tensor], coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss and error at ``origin + sum_k coords[i, k] dirs[k]`` for each row i."""
    losses = np.empty(len(coords))
    errors = np.empty(len(coords))
    for i, c in enumerate(coords):
        point = origin.clone()
        for ck, d in zip(c, dirs, strict=True):
            point = point + float(ck) * d
        ev = obj.evaluate(point)
        losses[i], errors[i] = ev.loss, ev.error
    return losses, errors


def line_scan(
    model: nn.Module,
    theta0: Params,
    theta1: Params,
    batches: Sequence[Batch],
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> LineScan:
    """Loss along ``theta(alpha) = (1 - alpha) theta_0 + alpha theta_1`` (plan section 3.3).

    Args:
        model: Any module (used through ``functional_call`` only).
        theta0: First solution (flat (P,) vector or parameter dict).
        theta1: Second solution.
        batches: Evaluation batches.
        alphas: Line coordinates; default 61 points on [-0.5, 1.5] (step 1/30, so 0 and 1
            are on the grid).
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        bn_mode: ``"eval"``, ``"batch"`` or ``"recalibrate"``.
        recal_batches: Batches for ``"recalibrate"``.
        buffers: Buffers used instead of the model's.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    a = _grid(alphas, np.linspace(-0.5, 1.5, 61), "alphas")
    t0, t1 = obj.flat(theta0), obj.flat(theta1)
    diff = t1 - t0
    losses = np.empty(len(a))
    errors = np.empty(len(a))
    for i, al in enumerate(a):
        point = t0 if al == 0 else t1 if al == 1 else t0 + float(al) * diff
        ev = obj.evaluate(point)
        losses[i], errors[i] = ev.loss, ev.error
    return LineScan(a, losses, errors, "interpolation", obj.bn_mode, float((t1 - t0).norm()))


def direction_scan(
    model: nn.Module,
    theta: Params,
    direction: Params,
    batches: Sequence[Batch],
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> LineScan:
    """Loss along ``theta + alpha d`` (``d`` used as given, not normalised).

    Args:
        alphas: Default 41 points on [-1, 1]. Other arguments as :func:`line_scan`.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    a = _grid(alphas, np.linspace(-1.0, 1.0, 41), "alphas")
    t, d = obj.flat(theta), obj.flat(direction)
    losses, errors = _scan_points(obj, t, [d], a[:, None])
    return LineScan(a, losses, errors, "direction", obj.bn_mode, float(d.norm()))


def _plane(
    obj: Objective,
    theta: Tensor,
    d1: Tensor,
    d2: Tensor,
    xs: np.ndarray,
    ys: np.ndarray,
    kind: str,
    points: np.ndarray,
    labels: tuple[str, ...],
    settings: dict[str, Any],
) -> PlaneScan:
    X, Y = np.meshgrid(xs, ys)
    coords = np.stack([X.ravel(), Y.ravel()], axis=1)
    losses, errors = _scan_points(obj, theta, [d1, d2], coords)
    settings = {**settings, "d1_norm": float(d1.norm()), "d2_norm": float(d2.norm())}
    return PlaneScan(X, Y, losses.reshape(X.shape), errors.reshape(X.shape), kind, obj.bn_mode, points, labels, settings)


def plane_scan(
    model: nn.Module,
    theta: Params,
    d1: Params,
    d2: Params,
    batches: Sequence[Batch],
    *,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> PlaneScan:
    """Loss on the grid ``theta + x d_1 + y d_2`` (directions used as given).

    Other arguments as :func:`line_scan`.

    Args:
        xs: First coordinates, default 21 points on [-1, 1].
        ys: Second coordinates, default as ``xs``.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    gx = _grid(xs, np.linspace(-1.0, 1.0, 21), "xs")
    gy = _grid(ys, gx, "ys")
    return _plane(obj, obj.flat(theta), obj.flat(d1), obj.flat(d2), gx, gy, "directions", np.zeros((1, 2)), ("theta",), {})


def _random_directions(obj: Objective, theta: Tensor, seed: int, bias_policy: str, count: int) -> list[Tensor]:
    """``count`` filter-normalised Gaussian directions at ``theta``, drawn in turn from ``seeded_generator(seed)``."""
    as_dict = obj.unflatten(theta)
    gen = seeded_generator(seed)
    return [obj.flat(random_direction(as_dict, generator=gen, bias_policy=bias_policy)) for _ in range(count)]


def random_line_scan(
    model: nn.Module,
    theta: Params,
    batches: Sequence[Batch],
    *,
    seed: int,
    bias_policy: str = "zero",
    alphas: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> LineScan:
    """Loss along ``theta + alpha d``, ``d`` one filter-normalised Gaussian direction (Li et al. 2018).

    ``d`` is the first direction :func:`random_plane_scan` draws with the same ``seed`` and
    ``bias_policy``, so this line is that plane's ``y = 0`` axis.

    Args:
        seed: Seed of the direction.
        bias_policy: ``"zero"`` (default), ``"keep"`` or ``"normalize"`` (module docstring).
        alphas: Default 41 points on [-1, 1]. Other arguments as :func:`line_scan`.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    a = _grid(alphas, np.linspace(-1.0, 1.0, 41), "alphas")
    t = obj.flat(theta)
    (d,) = _random_directions(obj, t, seed, bias_policy, 1)
    losses, errors = _scan_points(obj, t, [d], a[:, None])
    return LineScan(a, losses, errors, "direction", obj.bn_mode, float(d.norm()))


def random_plane_scan(
    model: nn.Module,
    theta: Params,
    batches: Sequence[Batch],
    *,
    seed: int,
    bias_policy: str = "zero",
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> PlaneScan:
    """Plane scan along two filter-normalised Gaussian directions (Li et al. 2018).

    ``d_1`` then ``d_2`` are drawn with ``seeded_generator(seed)`` by
    :func:`~landscape.probes.functional.random_direction` (same seed, same directions, on
    any device). They are not orthogonalised (in high dimension they nearly are).

    Other arguments as :func:`plane_scan`.

    Args:
        seed: Seed of the directions.
        bias_policy: ``"zero"`` (default), ``"keep"`` or ``"normalize"`` for ``ndim <= 1``
            parameters (module docstring).
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    gx = _grid(xs, np.linspace(-1.0, 1.0, 21), "xs")
    gy = _grid(ys, gx, "ys")
    t = obj.flat(theta)
    d1, d2 = _random_directions(obj, t, seed, bias_policy, 2)
    settings = {"seed": int(seed), "bias_policy": bias_policy, "cosine_d1_d2": float(d1 @ d2 / (d1.norm() * d2.norm()))}
    return _plane(obj, t, d1, d2, gx, gy, "random", np.zeros((1, 2)), ("theta",), settings)


def hessian_plane_scan(
    model: nn.Module,
    theta: Params,
    v1: Params,
    v2: Params,
    batches: Sequence[Batch],
    *,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> PlaneScan:
    """Plane scan along two given directions, typically the top-2 Hessian eigenvectors.

    ``v_1`` is normalised to unit norm and ``v_2`` is orthogonalised against it and
    normalised (eigenvectors of a symmetric matrix already are orthonormal; this guards
    against estimates that are not), so ``(x, y)`` are Euclidean distances.

    Raises:
        ValueError: ``v_1`` is zero or ``v_2`` is (numerically) parallel to it.
    Other arguments as :func:`plane_scan`.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    gx = _grid(xs, np.linspace(-1.0, 1.0, 21), "xs")
    gy = _grid(ys, gx, "ys")
    a, b = obj.flat(v1), obj.flat(v2)
    u, v = _orthonormal_pair(a, b, "v1", "v2")
    settings = {"cosine_v1_v2": float(a @ b / (a.norm() * b.norm()))}
    return _plane(obj, obj.flat(theta), u, v, gx, gy, "hessian", np.zeros((1, 2)), ("theta",), settings)


def _orthonormal_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    na = a.norm()
    if not bool(na > 0):
        raise ValueError(f"{name_a} must be a non-zero vector")
    u = a / na
    w = b - (u @ b) * u
    nw = w.norm()
    if not bool(nw > 1e-10 * b.norm()) or not bool(b.norm() > 0):
        raise ValueError(f"{name_b} must not be parallel to {name_a} (the three points/directions must span a plane)")
    return u, w / nw


def three_point_plane(theta_a: Tensor, theta_b: Tensor, theta_c: Tensor) -> PlaneBasis:
    """Orthonormal frame of the plane through three flat points (Gram-Schmidt).

    Raises:
        ValueError: The points are (numerically) collinear or two coincide.
    """
    for name, t in (("theta_b", theta_b), ("theta_c", theta_c)):
        if t.shape != theta_a.shape or theta_a.ndim != 1:
            raise ValueError(f"points must be flat vectors of equal length, got {tuple(theta_a.shape)} and {name} {tuple(t.shape)}")
    ab, ac = theta_b - theta_a, theta_c - theta_a
    u, v = _orthonormal_pair(ab, ac, "theta_b - theta_a", "theta_c - theta_a")
    coords = np.array([[0.0, 0.0], [float(ab.norm()), 0.0], [float(ac @ u), float(ac @ v)]])
    return PlaneBasis(theta_a, u, v, coords)


def three_point_plane_scan(
    model: nn.Module,
    theta_a: Params,
    theta_b: Params,
    theta_c: Params,
    batches: Sequence[Batch],
    *,
    num: int = 21,
    margin: float = 0.25,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> PlaneScan:
    """Plane scan through three solutions (Garipov et al. 2018), points at their coordinates.

    Other arguments as :func:`plane_scan`.

    Args:
        num: Grid points per axis when ``xs``/``ys`` are not given.
        margin: Extra fraction of the points' bounding box on each side (default grid).
        xs: Explicit first grid coordinates in the orthonormal frame (override ``num``).
        ys: Explicit second grid coordinates (override ``num``).

    Raises:
        ValueError: ``num < 2``, ``margin < 0``, or collinear points.
    """
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    basis = three_point_plane(obj.flat(theta_a), obj.flat(theta_b), obj.flat(theta_c))
    gx, gy = _covering_grid(basis.coords, num, margin, xs, ys)
    return _plane(obj, basis.origin, basis.u, basis.v, gx, gy, "three_points", basis.coords, ("a", "b", "c"), {"margin": margin})


def _covering_grid(
    points: np.ndarray,
    num: int,
    margin: float,
    xs: Sequence[float] | np.ndarray | None,
    ys: Sequence[float] | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes covering the (k, 2) plane coordinates ``points``: ``num`` points per axis
    over their bounding box widened by ``margin`` times its extent on each side (an axis of
    zero extent gets a pad of ``1e-12 * margin``); explicit ``xs``/``ys`` win.

    Raises:
        ValueError: ``num < 2`` or ``margin < 0``.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an integer >= 2, got {num!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-12)
    gx = _grid(xs, np.linspace(lo[0] - pad[0], hi[0] + pad[0], num), "xs")
    gy = _grid(ys, np.linspace(lo[1] - pad[1], hi[1] + pad[1], num), "ys")
    return gx, gy


# ------------------------------------------------------------------------ plotting


def _figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _metric(scan: LineScan | PlaneScan, metric: str) -> np.ndarray:
    if metric == "loss":
        return scan.losses if isinstance(scan, LineScan) else scan.Z
    if metric == "error":
        return scan.errors
    raise ValueError(f"metric must be 'loss' or 'error', got {metric!r}")


def plot_line(scan: LineScan, *, metric: str = "loss", ax: Any = None, label: str | None = None, log: bool = False) -> Any:
    """Plot a line scan; returns the ``matplotlib.figure.Figure``.

    Args:
        scan: The scan.
        metric: ``"loss"`` or ``"error"``.
        ax: Axes to draw on (default: a new Agg figure).
        label: Legend label.
        log: Logarithmic y axis.
    """
    values = _metric(scan, metric)
    if ax is None:
        fig = _figure((5.0, 3.5))
        ax = fig.add_subplot(1, 1, 1)
    ax.plot(scan.alphas, values, marker=".", label=label)
    if scan.kind == "interpolation":
        for a in (0.0, 1.0):
            ax.axvline(a, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("alpha")
    ax.set_ylabel(f"{metric} (bn={scan.bn_mode})")
    if log:
        ax.set_yscale("log")
    if label is not None:
        ax.legend()
    return ax.figure


def plot_contour(scan: PlaneScan, *, metric: str = "loss", levels: int = 20, log: bool = False, ax: Any = None) -> Any:
    """Contour plot of a plane scan with its marked points; returns the Figure.

    Args:
        log: Contour ``log10`` of the metric (non-positive values are clipped to the
            smallest positive value).
    """
    values = _metric(scan, metric)
    if log:
        pos = values[values > 0]
        floor = pos.min() if pos.size else 1.0
        values = np.log10(np.maximum(values, floor))
    if ax is None:
        fig = _figure((5.0, 4.5))
        ax = fig.add_subplot(1, 1, 1)
    cs = ax.contourf(scan.X, scan.Y, values, levels=levels, cmap="viridis")
    ax.contour(scan.X, scan.Y, values, levels=levels, colors="k", linewidths=0.3)
    ax.figure.colorbar(cs, ax=ax, label=("log10 " if log else "") + metric)
    ax.scatter(scan.points[:, 0], scan.points[:, 1], color="red", marker="x", zorder=3)
    for (px, py), lab in zip(scan.points, scan.point_labels, strict=True):
        ax.annotate(lab, (px, py), textcoords="offset points", xytext=(4, 4), color="red")
    ax.set_title(f"{scan.kind} plane (bn={scan.bn_mode})")
    ax.set_aspect("equal" if scan.kind in ("three_points", "hessian") else "auto")
    return ax.figure


def plot_surface(scan: PlaneScan, *, metric: str = "loss", log: bool = False) -> Any:
    """3D surface plot of a plane scan; returns the Figure."""
    values = _metric(scan, metric)
    if log:
        pos = values[values > 0]
        values = np.log10(np.maximum(values, pos.min() if pos.size else 1.0))
    fig = _figure((6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.plot_surface(scan.X, scan.Y, values, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel(("log10 " if log else "") + metric)
    ax.set_title(f"{scan.kind} plane (bn={scan.bn_mode})")
    return fig
