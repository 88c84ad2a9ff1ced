"""The optimisation path on its top principal plane, with the loss surface underneath.

Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the loss landscape of neural nets*,
section 7: random directions are nearly orthogonal to a path in high dimension, so the path
is drawn on the plane of the top-2 principal directions of the snapshots' offsets from the
final point. Given snapshots ``theta_0, ..., theta_{T-1}`` in time order (the last is the
final point ``theta_f``):

* ``M`` is the (T, P) matrix with rows ``theta_i - theta_f`` (the last row is zero). Its thin
  SVD ``M = U S V^T`` (memory O(T P)) gives the principal directions ``v_1, v_2`` (rows of
  ``V^T``), and ``M``'s best rank-2 approximation (Eckart-Young) is the projection on
  ``span(v_1, v_2)``: the plane through ``theta_f`` that holds the most of the path in the
  least-squares sense. The offsets are not mean-centred: the surface is drawn around
  ``theta_f``, so the plane must contain it. (Li et al.'s code runs scikit-learn's PCA,
  which centres on the mean offset, then draws the plane through ``theta_f`` parallel to
  those directions; it then does not contain the best plane through ``theta_f``.)
* Explained variance of direction ``k``: ``s_k^2 / sum_j s_j^2``, the fraction of
  ``sum_i ||theta_i - theta_f||^2`` along ``v_k``.
* Coordinates ``c_i = (<theta_i - theta_f, v_1>, <theta_i - theta_f, v_2>)`` and the residual
  ``r_i = ||theta_i - theta_f - c_i1 v_1 - c_i2 v_2||`` off the plane, so that
  ``||theta_i - theta_f||^2 = |c_i|^2 + r_i^2``: how much of the path the plane holds is
  read off the residuals, snapshot by snapshot.
* Sign: each direction is oriented so that the snapshot farthest along it has a positive
  coordinate (SVD signs are arbitrary).

Normalisation of the scanned directions (``normalization``):

* ``"none"`` (default, Li et al.'s choice for trajectories: their PCA directions are used as
  they are): the scan's directions are the unit principal directions, coordinates are
  Euclidean distances in parameter space, and the path's projection is exactly the PCA
  projection whose explained variances label the axes.
* ``"filter"``: each principal direction is filter-normalised to ``theta_f``
  (:func:`~landscape.probes.functional.filter_normalize`, with ``bias_policy``), as the
  random-direction scans are, so a unit of each axis is a filter-norm-sized step. The
  rescaling is per filter, so the two directions span a *different* plane: the snapshots'
  coordinates are then their least-squares coordinates in that (non-orthogonal) basis and
  the residuals are measured off that plane (with ``bias_policy="zero"`` every move of a
  bias is off it). The result records both planes' fractions of the path.

The loss on the plane is evaluated through :class:`~landscape.probes.functional.Objective`
under its BatchNorm policy on a grid covering the path's coordinates and ``theta_f`` plus
a margin, with the scans' plane machinery (:mod:`landscape.probes.scans`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import BIAS_POLICIES, Batch, BNMode, LossFn, Objective, Params, filter_normalize
from .scans import PlaneScan, _covering_grid, _plane, _scan_points, plot_contour

__all__ = [
    "NORMALIZATIONS",
    "TrajectoryPCA",
    "TrajectoryScan",
    "trajectory_pca",
    "trajectory_scan",
    "plot_trajectory",
]

#: Normalisations of the scanned directions (module docstring).
NORMALIZATIONS: tuple[str, ...] = ("none", "filter")


@dataclass(frozen=True)
class TrajectoryPCA:
    """Top-2 principal plane of a path of snapshots around its final point.

    Attributes:
        origin: (P,) the final snapshot ``theta_f`` (float64).
        directions: (2, P) orthonormal principal directions ``v_1, v_2`` (float64).
        singular_values: (min(T, P),) singular values of the (T, P) offset matrix.
        explained_variance_ratio: (2,) ``s_k^2 / sum_j s_j^2``.
        coords: (T, 2) coordinates of every snapshot on the plane (the last is (0, 0)).
        residuals: (T,) distance of every snapshot from the plane.
        distances: (T,) ``||theta_i - theta_f||``.
    """

    origin: Tensor
    directions: Tensor
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    residuals: np.ndarray
    distances: np.ndarray

    @property
    def plane_fraction(self) -> float:
        """Fraction of ``sum_i ||theta_i - theta_f||^2`` on the plane (sum of the two ratios)."""
        return float(self.explained_variance_ratio.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (the (P,) vectors are left out)."""
        return {
            "num_snapshots": len(self.coords),
            "num_params": int(self.origin.numel()),
            "singular_values": self.singular_values.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "plane_fraction": self.plane_fraction,
            "coords": self.coords.tolist(),
            "residuals": self.residuals.tolist(),
            "distances": self.distances.tolist(),
        }


def _stack(snapshots: Sequence[Tensor] | Tensor) -> Tensor:
    """(T, P) float64 matrix of flat snapshots, validated."""
    if isinstance(snapshots, Tensor):
        if snapshots.ndim != 2:
            raise ValueError(f"snapshots as one tensor must be (T, P), got shape {tuple(snapshots.shape)}")
        rows = list(snapshots)
    else:
        rows = [torch.as_tensor(s) for s in snapshots]
    if len(rows) < 3:
        raise ValueError(f"need at least 3 snapshots (the final point and two more to span a plane), got {len(rows)}")
    first = rows[0]
    for i, s in enumerate(rows):
        if s.ndim != 1:
            raise ValueError(f"every snapshot must be a flat (P,) vector; snapshot {i} has shape {tuple(s.shape)}")
        if s.shape != first.shape:
            raise ValueError(f"snapshots differ in length: snapshot {i} has {s.numel()} entries, snapshot 0 has {first.numel()}")
        if s.device != first.device:
            raise ValueError(f"snapshots are on different devices: snapshot {i} on {s.device}, snapshot 0 on {first.device}")
    mat = torch.stack([s.detach().to(torch.float64) for s in rows])
    if not bool(torch.isfinite(mat).all()):
        bad = int((~torch.isfinite(mat)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"snapshot {bad} has non-finite entries")
    return mat


def trajectory_pca(snapshots: Sequence[Tensor] | Tensor) -> TrajectoryPCA:
    """Principal plane of a path around its final point (Li et al. 2018, section 7).

    Args:
        snapshots: T >= 3 flat (P,) parameter vectors in time order (or one (T, P) tensor);
            the last one is the final point and the origin of the plane.

    Returns:
        A :class:`TrajectoryPCA` (computed in float64 on the snapshots' device).

    Raises:
        ValueError: Fewer than 3 snapshots, snapshots of different lengths or devices, not
            flat, non-finite, or a path that does not span two directions (all snapshots
            equal, or all on one line through the final point).
    """
    mat = _stack(snapshots)
    origin = mat[-1]
    offsets = mat - origin  # (T, P); the last row is zero
    _, s, vh = torch.linalg.svd(offsets, full_matrices=False)
    tol = max(offsets.shape) * torch.finfo(torch.float64).eps * float(s[0])
    if not float(s[0]) > 0:
        raise ValueError("all snapshots equal the final one: the path spans no direction")
    if not float(s[1]) > tol:
        raise ValueError(f"the snapshots' offsets from the final point span one direction only (singular values {s[:2].tolist()}): "
                         "a straight path has no principal plane")
    dirs = vh[:2].clone()  # (2, P)
    coords = offsets @ dirs.T  # (T, 2)
    far = coords.abs().argmax(dim=0)
    signs = torch.sign(coords[far, torch.arange(2)])
    dirs, coords = dirs * signs[:, None], coords * signs
    dist = offsets.norm(dim=1)
    resid = (offsets - coords @ dirs).norm(dim=1)
    s2 = s.pow(2)
    return TrajectoryPCA(
        origin=origin,
        directions=dirs,
        singular_values=s.cpu().numpy(),
        explained_variance_ratio=(s2[:2] / s2.sum()).cpu().numpy(),
        coords=coords.cpu().numpy(),
        residuals=resid.cpu().numpy(),
        distances=dist.cpu().numpy(),
    )


@dataclass(frozen=True)
class TrajectoryScan:
    """A path on its principal plane and the loss surface of that plane.

    Attributes:
        pca: The principal plane (:func:`trajectory_pca`).
        plane: The loss on the grid ``theta_f + x d_1 + y d_2`` (kind ``"trajectory"``; its
            ``points`` are the snapshots' coordinates).
        directions: (2, P) the scanned directions ``d_1, d_2`` (float64): the principal
            directions, or their filter-normalised versions.
        coords: (T, 2) coordinates of the snapshots in the ``(d_1, d_2)`` basis
            (least squares when the directions are filter-normalised).
        residuals: (T,) distance of every snapshot from the scanned plane.
        path_losses: (T,) loss at every snapshot itself.
        projected_losses: (T,) loss at every snapshot's projection on the plane (what the
            surface shows under the path).
        normalization: ``"none"`` or ``"filter"``.
        labels: T labels of the snapshots (e.g. epochs).
        settings: Scan settings (margin, grid size, bias policy, direction norms).
    """

    pca: TrajectoryPCA
    plane: PlaneScan
    directions: Tensor
    coords: np.ndarray
    residuals: np.ndarray
    path_losses: np.ndarray
    projected_losses: np.ndarray
    normalization: str
    labels: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def plane_fraction(self) -> float:
        """Fraction of ``sum_i ||theta_i - theta_f||^2`` on the scanned plane
        (``1 - sum r_i^2 / sum ||theta_i - theta_f||^2``; the PCA's when not normalised)."""
        total = float(np.sum(self.pca.distances**2))
        return 1.0 - float(np.sum(self.residuals**2)) / total

    def to_dict(self) -> dict[str, Any]:
        return {
            "pca": self.pca.to_dict(),
            "plane": self.plane.to_dict(),
            "normalization": self.normalization,
            "coords": self.coords.tolist(),
            "residuals": self.residuals.tolist(),
            "plane_fraction": self.plane_fraction,
            "path_losses": self.path_losses.tolist(),
            "projected_losses": self.projected_losses.tolist(),
            "labels": list(self.labels),
            "settings": dict(self.settings),
        }


def _scanned_basis(
    obj: Objective, pca: TrajectoryPCA, snapshots: Sequence[Tensor], normalization: str, bias_policy: str
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """(directions (2, P), snapshot coords (T, 2), residuals (T,)) of the scanned plane, float64."""
    if normalization == "none":
        return pca.directions, pca.coords, pca.residuals
    origin = obj.unflatten(pca.origin)
    dirs = torch.stack([
        torch.cat([t.reshape(-1) for t in filter_normalize(obj.unflatten(v), origin, bias_policy=bias_policy).values()])
        for v in pca.directions
    ])  # (2, P) in the template's order, as obj.unflatten reads it
    gram = dirs @ dirs.T
    if not float(torch.linalg.det(gram)) > 1e-12 * float(gram.diagonal().prod()):
        raise ValueError(f"the filter-normalised principal directions (bias_policy={bias_policy!r}) do not span a plane: "
                         "the path moves only parameters that this policy leaves out; use normalization='none'")
    offsets = _stack(snapshots) - pca.origin  # (T, P)
    coords = torch.linalg.solve(gram, dirs @ offsets.T).T  # least squares in the (d_1, d_2) basis
    resid = (offsets - coords @ dirs).norm(dim=1)
    return dirs, coords.cpu().numpy(), resid.cpu().numpy()


def trajectory_scan(
    model: nn.Module,
    snapshots: Sequence[Params],
    batches: Sequence[Batch],
    *,
    num: int = 21,
    margin: float = 0.2,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    normalization: str = "none",
    bias_policy: str = "zero",
    labels: Sequence[str] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> TrajectoryScan:
    """The loss surface on a path's principal plane, with the path on it (Li et al. 2018, sec. 7).

    Args:
        model: Any module (used through ``functional_call`` only).
        snapshots: T >= 3 points in time order (flat (P,) vectors or parameter dicts); the
            last is the final point, the origin of the plane.
        batches: Evaluation batches.
        num: Grid points per axis when ``xs``/``ys`` are not given.
        margin: Extra fraction of the path's bounding box (with the origin) on each side.
        xs, ys: Explicit grid coordinates (override ``num``/``margin``).
        normalization: ``"none"`` (unit principal directions) or ``"filter"``
            (filter-normalised to the final point; module docstring).
        bias_policy: ``"zero"``, ``"keep"`` or ``"normalize"`` for ``ndim <= 1`` parameters
            under ``"filter"``.
        labels: T labels of the snapshots (default ``"0"``, ``"1"``, ...).
        loss_fn, bn_mode, recal_batches, buffers: As :func:`~landscape.probes.scans.plane_scan`.

    Returns:
        A :class:`TrajectoryScan`.

    Raises:
        ValueError: Bad snapshots (see :func:`trajectory_pca`), unknown ``normalization`` or
            ``bias_policy``, ``num < 2``, ``margin < 0``, ``labels`` of the wrong length, or
            filter-normalised directions that do not span a plane.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    if bias_policy not in BIAS_POLICIES:
        raise ValueError(f"bias_policy must be one of {list(BIAS_POLICIES)}, got {bias_policy!r}")
    obj = Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers)
    flat = [obj.flat(s) for s in snapshots]
    names = tuple(str(i) for i in range(len(flat))) if labels is None else tuple(str(x) for x in labels)
    if len(names) != len(flat):
        raise ValueError(f"labels must have one entry per snapshot ({len(flat)}), got {len(names)}")
    pca = trajectory_pca(flat)
    dirs, coords, resid = _scanned_basis(obj, pca, flat, normalization, bias_policy)
    gx, gy = _covering_grid(np.vstack([coords, np.zeros((1, 2))]), num, margin, xs, ys)
    origin, d1, d2 = (t.to(dtype=obj.dtype) for t in (pca.origin, dirs[0], dirs[1]))
    settings = {"margin": margin, "num": num, "normalization": normalization, "bias_policy": bias_policy}
    plane = _plane(obj, origin, d1, d2, gx, gy, "trajectory", coords, names, settings)
    path_losses = np.array([obj.evaluate(p).loss for p in flat])
    projected_losses, _ = _scan_points(obj, origin, [d1, d2], coords)
    return TrajectoryScan(pca, plane, dirs, coords, resid, path_losses, projected_losses, normalization, names, plane.settings)


def plot_trajectory(result: TrajectoryScan, *, log: bool = True, levels: int = 20, ax: Any = None) -> Any:
    """Contours of the loss on the path's plane with the path on top; returns the Figure.

    The path is a line with a marker per snapshot, its start a white circle and its end a
    red star; the axes carry each direction's explained variance in % (of the PCA), and the
    title the scanned plane's fraction of the path.

    Args:
        result: A :func:`trajectory_scan` result.
        log: Contour ``log10`` of the loss.
        levels: Contour levels.
        ax: Axes to draw on (default: a new Agg figure).
    """
    ends = np.vstack([result.coords[0], result.coords[-1]])
    marked = dataclasses.replace(result.plane, points=ends, point_labels=(f"start ({result.labels[0]})", f"end ({result.labels[-1]})"))
    fig = plot_contour(marked, metric="loss", levels=levels, log=log, ax=ax)
    ax = ax if ax is not None else fig.axes[0]
    x, y = result.coords[:, 0], result.coords[:, 1]
    ax.plot(x, y, "-", color="white", lw=1.5, zorder=4)
    ax.plot(x, y, "o", color="white", mec="k", mew=0.5, ms=4, zorder=5)
    ax.plot(x[0], y[0], "o", color="white", mec="k", ms=9, zorder=6)
    ax.plot(x[-1], y[-1], "*", color="red", mec="k", ms=13, zorder=6)
    ev = 100 * result.pca.explained_variance_ratio
    unit = "filter-normalised" if result.normalization == "filter" else "parameter distance"
    ax.set_xlabel(f"PC1: {ev[0]:.1f}% of variance ({unit})")
    ax.set_ylabel(f"PC2: {ev[1]:.1f}% of variance ({unit})")
    ax.set_title(f"optimisation path on its PCA plane: {100 * result.plane_fraction:.1f}% of the path "
                 f"(bn={result.plane.bn_mode})", fontsize=9)
    return fig
