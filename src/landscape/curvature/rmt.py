"""Random-matrix fits to Hessian/GGN spectra: semicircle bulk, Marchenko-Pastur bulk, spikes.

* Wigner semicircle (Wigner 1958): density ``sqrt(4 s^2 - (x - c)^2) / (2 pi s^2)`` on
  ``[c - 2s, c + 2s]``, the limit spectrum of a symmetric matrix with independent entries of
  variance ``s^2 / P``.
* Marchenko-Pastur (Marchenko & Pastur 1967): the limit spectrum of ``X^T X / N`` for
  ``X`` (N, P) with i.i.d. entries of variance ``scale`` and ``ratio = P / N``: density
  ``sqrt((b - x)(x - a)) / (2 pi scale ratio x)`` on ``[a, b] = scale (1 -+ sqrt(ratio))^2``
  plus an atom ``1 - 1/ratio`` at zero when ``ratio > 1`` (PSD spectra such as the GGN).
* Spiked models (Baik, Ben Arous & Peche 2005; Benaych-Georges & Nadakuditi 2011): a few
  eigenvalues separate from the bulk edge; :func:`spiked_outliers` lists them.

Both fits are quantile (Q-Q) regressions of the sorted bulk on the model's quantile
function, iterated with outlier trimming at the fitted edge times ``1 + tol``; the
shape-aware regression does not shrink the fit the way trimmed moments would. Weighted
input (Ritz nodes and weights of an SLQ density) uses mid-step weighted quantiles. The
goodness of fit is the Kolmogorov-Smirnov distance between the (weighted) empirical CDF
of the bulk and the fitted CDF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

__all__ = [
    "SemicircleFit",
    "MarchenkoPasturFit",
    "fit_semicircle",
    "fit_marchenko_pastur",
    "spiked_outliers",
    "SpikeCount",
    "SpikedBulkFit",
    "count_spikes",
    "fit_spiked_bulk",
    "quadrature_ks",
    "semicircle_density",
    "semicircle_cdf",
    "marchenko_pastur_density",
    "marchenko_pastur_cdf",
]


@dataclass(frozen=True)
class SemicircleFit:
    """A semicircle fit to a spectrum.

    Attributes:
        sigma: fitted ``s`` (eigenvalue units); the bulk radius is ``2 s``.
        centre: fitted centre ``c`` (0 when not fitted).
        lower_edge: ``c - 2 s``.
        upper_edge: ``c + 2 s``.
        outlier_indices: input indices outside ``c +- 2 s (1 + tol)``, ascending.
        num_outliers: their number.
        outlier_mass: their share of the total weight (count / n for plain eigenvalues).
        ks_distance: Kolmogorov-Smirnov distance of the bulk against the fitted CDF.
        num_bulk: number of input points in the bulk.
        tol: relative edge tolerance used for the outlier rule.
        converged: the bulk/outlier split stopped changing within ``max_iter``.
    """

    sigma: float
    centre: float
    lower_edge: float
    upper_edge: float
    outlier_indices: tuple[int, ...]
    num_outliers: int
    outlier_mass: float
    ks_distance: float
    num_bulk: int
    tol: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "centre": self.centre,
            "lower_edge": self.lower_edge,
            "upper_edge": self.upper_edge,
            "outlier_indices": list(self.outlier_indices),
            "num_outliers": self.num_outliers,
            "outlier_mass": self.outlier_mass,
            "ks_distance": self.ks_distance,
            "num_bulk": self.num_bulk,
            "tol": self.tol,
            "converged": self.converged,
        }


@dataclass(frozen=True)
class MarchenkoPasturFit:
    """A Marchenko-Pastur fit to a PSD spectrum.

    Attributes:
        ratio: fitted aspect ratio ``P / N`` (> 1 means an atom of mass ``1 - 1/ratio`` at 0).
        scale: fitted entry variance (eigenvalue units); the spectral mean is ``scale``.
        lower_edge: ``scale (1 - sqrt(ratio))^2``.
        upper_edge: ``scale (1 + sqrt(ratio))^2``.
        outlier_indices: input indices above ``upper_edge (1 + tol)``, ascending.
        num_outliers: their number.
        outlier_mass: their share of the total weight.
        ks_distance: Kolmogorov-Smirnov distance of the bulk against the fitted CDF.
        num_bulk: number of input points in the bulk.
        tol: relative edge tolerance used for the outlier rule.
        converged: the bulk/outlier split stopped changing within ``max_iter``.
    """

    ratio: float
    scale: float
    lower_edge: float
    upper_edge: float
    outlier_indices: tuple[int, ...]
    num_outliers: int
    outlier_mass: float
    ks_distance: float
    num_bulk: int
    tol: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "scale": self.scale,
            "lower_edge": self.lower_edge,
            "upper_edge": self.upper_edge,
            "outlier_indices": list(self.outlier_indices),
            "num_outliers": self.num_outliers,
            "outlier_mass": self.outlier_mass,
            "ks_distance": self.ks_distance,
            "num_bulk": self.num_bulk,
            "tol": self.tol,
            "converged": self.converged,
        }


# ----------------------------------------------------------------------------- semicircle


def _std_semicircle_cdf(u: np.ndarray) -> np.ndarray:
    """CDF of the semicircle of radius 1 centred at 0."""
    u = np.clip(u, -1.0, 1.0)
    return 0.5 + (u * np.sqrt(1.0 - u * u) + np.arcsin(u)) / math.pi


def _std_semicircle_quantile(p: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_std_semicircle_cdf` by vectorised bisection (to ~1e-16)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    lo = -np.ones_like(p)
    hi = np.ones_like(p)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _std_semicircle_cdf(mid) < p
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def semicircle_density(x: Tensor | np.ndarray, sigma: float, centre: float = 0.0) -> np.ndarray:
    """Semicircle density ``sqrt(4 s^2 - (x - c)^2) / (2 pi s^2)`` (zero outside the support)."""
    x = np.asarray(x, dtype=np.float64) - centre
    return np.sqrt(np.clip(4 * sigma * sigma - x * x, 0.0, None)) / (2 * math.pi * sigma * sigma)


def semicircle_cdf(x: Tensor | np.ndarray, sigma: float, centre: float = 0.0) -> np.ndarray:
    """Semicircle CDF at ``x`` for parameters ``sigma`` and ``centre``."""
    return _std_semicircle_cdf((np.asarray(x, dtype=np.float64) - centre) / (2 * sigma))


# ----------------------------------------------------------------------------- helpers


def _values_weights(values: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten values (or an SLQ density's nodes) and normalised weights to float64 NumPy."""
    if hasattr(values, "nodes") and hasattr(values, "weights") and weights is None:
        w = np.asarray(torch.as_tensor(values.weights).detach().cpu(), dtype=np.float64).reshape(-1)
        x = np.asarray(torch.as_tensor(values.nodes).detach().cpu(), dtype=np.float64).reshape(-1)
    else:
        x = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64).reshape(-1)
        w = np.ones_like(x) if weights is None else np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=np.float64).reshape(-1)
    if x.size < 3:
        raise ValueError(f"a spectral fit needs at least 3 values, got {x.size}")
    if w.shape != x.shape:
        raise ValueError(f"weights must match values in shape, got {w.shape} and {x.shape}")
    if not (np.isfinite(x).all() and np.isfinite(w).all()):
        raise ValueError("values and weights must be finite")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return x, w / w.sum()


def _check_tol(tol: float, max_iter: int) -> None:
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")


def _weighted_quantile(x_sorted: np.ndarray, w_sorted: np.ndarray, q: float) -> float:
    cum = np.cumsum(w_sorted) - 0.5 * w_sorted
    return float(np.interp(q * w_sorted.sum(), cum, x_sorted))


def _midpoints(w: np.ndarray) -> np.ndarray:
    """Mid-step cumulative positions of sorted points with weights w (renormalised)."""
    w = w / w.sum()
    return np.cumsum(w) - 0.5 * w


def _ks(x_sorted: np.ndarray, w_sorted: np.ndarray, cdf: np.ndarray, cdf_left: np.ndarray | None = None) -> float:
    """KS distance ``sup_x |F_emp(x) - F(x)|`` of a weighted empirical CDF (sorted points).

    ``cdf`` holds the model CDF at the points and ``cdf_left`` its left limits (default:
    equal, a continuous model). Tied points form one jump of the empirical CDF.
    """
    w = w_sorted / w_sorted.sum()
    cum = np.cumsum(w)
    _, first, counts = np.unique(x_sorted, return_index=True, return_counts=True)
    last = first + counts - 1
    after = cum[last]
    before = cum[first] - w[first]
    left = cdf if cdf_left is None else cdf_left
    return float(np.max(np.maximum(np.abs(after - cdf[first]), np.abs(before - left[first]))))


# ----------------------------------------------------------------------------- fits


def fit_semicircle(
    values: Any,
    weights: Any = None,
    *,
    tol: float = 0.05,
    fit_centre: bool = True,
    max_iter: int = 50,
) -> SemicircleFit:
    """Fit a Wigner semicircle to the bulk of a spectrum and flag the outliers.

    Starts from the weighted median and interquartile range (the semicircle's quartiles are
    ``c +- 0.4040 * 2s``), then alternates (i) bulk = points within
    ``c +- 2s (1 + tol)`` and (ii) weighted least squares of the sorted bulk on the
    standard semicircle quantiles ``x_i ~ c + 2 s G(p_i)``, until the bulk stops changing.

    Args:
        values: eigenvalues (any shape; flattened), or a :class:`~.slq.SpectralDensity`
            whose Ritz nodes and weights are used (outlier indices then index the
            flattened (probes * steps) nodes; ``outlier_mass`` estimates the fraction of
            eigenvalues outside the bulk).
        weights: optional non-negative weights of ``values``.
        tol: relative tolerance on the edge for the outlier rule (the largest bulk
            eigenvalue of a finite matrix fluctuates past ``2 s`` by O(P^{-2/3})).
        fit_centre: fit the centre ``c``; otherwise ``c = 0``.
        max_iter: bound on the trimming iterations.
    """
    _check_tol(tol, max_iter)
    x, w = _values_weights(values, weights)
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    u75 = float(_std_semicircle_quantile(np.array([0.75]))[0])
    if fit_centre:
        c = _weighted_quantile(xs, ws, 0.5)
        radius = (_weighted_quantile(xs, ws, 0.75) - _weighted_quantile(xs, ws, 0.25)) / (2 * u75)
    else:
        c = 0.0
        ao = np.argsort(np.abs(xs), kind="stable")
        radius = _weighted_quantile(np.abs(xs)[ao], ws[ao], 0.5) / u75
    if not radius > 0:
        raise ValueError("the spectrum has no spread (interquartile range 0); a semicircle cannot be fitted")
    bulk = np.ones_like(xs, dtype=bool)
    converged = False
    for it in range(max_iter):
        new_bulk = np.abs(xs - c) <= radius * (1 + tol)
        if new_bulk.sum() < 3:
            raise ValueError("fewer than 3 points remain in the semicircle bulk; the spectrum is not semicircle-like")
        if it > 0 and np.array_equal(new_bulk, bulk):
            converged = True
            break
        bulk = new_bulk
        xb, wb = xs[bulk], ws[bulk]
        u = _std_semicircle_quantile(_midpoints(wb))
        wn = wb / wb.sum()
        if fit_centre:
            um, xm = float(wn @ u), float(wn @ xb)
            radius = float(wn @ ((u - um) * (xb - xm))) / float(wn @ ((u - um) ** 2))
            c = xm - radius * um
        else:
            radius = float(wn @ (u * xb)) / float(wn @ (u * u))
        if not radius > 0:
            raise ValueError("the quantile regression gave a non-positive radius; the spectrum is not semicircle-like")
    xb, wb = xs[bulk], ws[bulk]
    ks = _ks(xb, wb, _std_semicircle_cdf((xb - c) / radius))
    out_sorted = np.nonzero(~bulk)[0]
    outliers = tuple(sorted(int(i) for i in order[out_sorted]))
    sigma = radius / 2
    return SemicircleFit(
        sigma=float(sigma),
        centre=float(c),
        lower_edge=float(c - radius),
        upper_edge=float(c + radius),
        outlier_indices=outliers,
        num_outliers=len(outliers),
        outlier_mass=float(ws[~bulk].sum()),
        ks_distance=ks,
        num_bulk=int(bulk.sum()),
        tol=float(tol),
        converged=converged,
    )


_MP_GRID = 4096


def _mp_table(ratio: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Tabulate the continuous part of MP(ratio, scale=1): (x, cumulative mass, atom at 0).

    Uses ``x = (a + b)/2 - (b - a)/2 cos(phi)``, which turns ``rho dx`` into the smooth
    ``((b - a)/2)^2 sin^2(phi) / (2 pi ratio x) dphi``, integrated by the midpoint rule and
    normalised to its exact mass ``min(1, 1/ratio)``.
    """
    sr = math.sqrt(ratio)
    a, b = (1 - sr) ** 2, (1 + sr) ** 2
    phi = np.linspace(0.0, math.pi, _MP_GRID + 1)
    mid = 0.5 * (phi[1:] + phi[:-1])
    xm = 0.5 * (a + b) - 0.5 * (b - a) * np.cos(mid)
    g = (0.5 * (b - a)) ** 2 * np.sin(mid) ** 2 / (2 * math.pi * ratio * xm)
    cum = np.concatenate([[0.0], np.cumsum(g)])
    mass = min(1.0, 1.0 / ratio)
    cum = cum * (mass / cum[-1])
    x = 0.5 * (a + b) - 0.5 * (b - a) * np.cos(phi)
    return x, cum, 1.0 - mass


def marchenko_pastur_density(x: Tensor | np.ndarray, ratio: float, scale: float = 1.0) -> np.ndarray:
    """Continuous part of the MP density (the atom ``1 - 1/ratio`` at 0 is not included)."""
    x = np.asarray(x, dtype=np.float64)
    sr = math.sqrt(ratio)
    a, b = scale * (1 - sr) ** 2, scale * (1 + sr) ** 2
    inside = (x > a) & (x < b) & (x > 0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((b - xi) * (xi - a)) / (2 * math.pi * scale * ratio * xi)
    return out


def marchenko_pastur_cdf(x: Tensor | np.ndarray, ratio: float, scale: float = 1.0) -> np.ndarray:
    """MP CDF at ``x`` (atom at 0 included)."""
    x = np.asarray(x, dtype=np.float64) / scale
    tx, tc, atom = _mp_table(ratio)
    return np.where(x >= 0, atom, 0.0) + np.interp(x, tx, tc, left=0.0, right=tc[-1])


def _mp_quantile(p: np.ndarray, ratio: float) -> np.ndarray:
    tx, tc, atom = _mp_table(ratio)
    return np.where(p <= atom, 0.0, np.interp(p - atom, tc, tx))


def fit_marchenko_pastur(
    values: Any,
    weights: Any = None,
    *,
    tol: float = 0.05,
    max_iter: int = 20,
    ratio_bounds: tuple[float, float] = (1e-3, 1e3),
    zero_tol: float | None = None,
) -> MarchenkoPasturFit:
    """Fit a Marchenko-Pastur law (ratio and scale) to the bulk of a PSD spectrum.

    For a given ratio the scale has a closed form (least squares of the sorted bulk on the
    MP quantiles through the origin); the ratio minimises the remaining squared error over
    ``ratio_bounds`` (a log-spaced scan, then a bounded Brent refinement). Points above
    ``upper_edge (1 + tol)`` are trimmed as outliers and the fit repeated until the split
    is stable. Only upper outliers are flagged (GGN spikes are large); values near zero
    belong to the atom when ``ratio > 1``.

    Args:
        values: eigenvalues (flattened), or a :class:`~.slq.SpectralDensity`.
        weights: optional non-negative weights of ``values``.
        tol: relative tolerance on the upper edge for the outlier rule.
        max_iter: bound on the trimming iterations.
        ratio_bounds: search interval of the ratio, ``0 < lo < hi``.
        zero_tol: values with ``|x| <= zero_tol`` count as exact zeros (the atom) in the
            goodness of fit; default ``1e-6 * max |x|`` (eigensolvers return the null
            space as rounding noise of either sign).
    """
    _check_tol(tol, max_iter)
    lo, hi = ratio_bounds
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"ratio_bounds must satisfy 0 < lo < hi < inf, got {ratio_bounds!r}")
    x, w = _values_weights(values, weights)
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    if xs[-1] <= 0:
        raise ValueError("a Marchenko-Pastur fit needs a spectrum with positive values")
    if zero_tol is None:
        zero_tol = 1e-6 * float(np.abs(xs).max())
    elif not (isinstance(zero_tol, (int, float)) and math.isfinite(zero_tol) and zero_tol >= 0):
        raise ValueError(f"zero_tol must be a finite number >= 0 or None, got {zero_tol!r}")

    def solve(xb: np.ndarray, wb: np.ndarray, pmax: float = 1.0) -> tuple[float, float]:
        p = _midpoints(wb)
        keep = p <= pmax
        p, xb, wb = p[keep], xb[keep], wb[keep]
        wn = wb / wb.sum()

        def sse_scale(log_ratio: float) -> tuple[float, float]:
            q = _mp_quantile(p, math.exp(log_ratio))
            qq = float(wn @ (q * q))
            scale = float(wn @ (q * xb)) / qq if qq > 0 else 0.0
            return float(wn @ (xb - scale * q) ** 2), scale

        grid = np.linspace(math.log(lo), math.log(hi), 121)
        errs = np.array([sse_scale(g)[0] for g in grid])
        i = int(np.argmin(errs))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        best = minimize_scalar(lambda t: sse_scale(t)[0], bounds=(a, b), method="bounded", options={"xatol": 1e-10})
        t = float(best.x) if best.fun <= errs[i] else float(grid[i])
        return math.exp(t), sse_scale(t)[1]

    bulk = np.ones_like(xs, dtype=bool)
    # First pass on the lower 90% of the mass: a few large spikes would otherwise pull the
    # least-squares fit to a degenerate law (huge ratio, everything in the atom).
    ratio, scale = solve(xs, ws, pmax=0.9)
    converged = False
    for it in range(max_iter):
        upper = scale * (1 + math.sqrt(ratio)) ** 2
        new_bulk = xs <= upper * (1 + tol)
        if new_bulk.sum() < 3:
            raise ValueError("fewer than 3 points remain in the Marchenko-Pastur bulk")
        if it > 0 and np.array_equal(new_bulk, bulk):
            converged = True
            break
        bulk = new_bulk
        ratio, scale = solve(xs[bulk], ws[bulk])
    if not scale > 0:
        raise ValueError("the Marchenko-Pastur fit gave a non-positive scale; the spectrum is not PSD-like")
    xb, wb = xs[bulk], ws[bulk]
    xz = np.where(np.abs(xb) <= zero_tol, 0.0, xb)  # sorted order is kept: only near-zeros move to 0
    cdf = marchenko_pastur_cdf(xz, ratio, scale)
    atom = max(0.0, 1.0 - 1.0 / ratio)
    ks = _ks(xz, wb, cdf, np.where(xz == 0.0, cdf - atom, cdf))
    outliers = tuple(sorted(int(i) for i in order[np.nonzero(~bulk)[0]]))
    sr = math.sqrt(ratio)
    return MarchenkoPasturFit(
        ratio=float(ratio),
        scale=float(scale),
        lower_edge=float(scale * (1 - sr) ** 2),
        upper_edge=float(scale * (1 + sr) ** 2),
        outlier_indices=outliers,
        num_outliers=len(outliers),
        outlier_mass=float(ws[~bulk].sum()),
        ks_distance=ks,
        num_bulk=int(bulk.sum()),
        tol=float(tol),
        converged=converged,
    )


def spiked_outliers(values: Any, edge: float | tuple[float, float], *, margin: float = 0.0) -> Tensor:
    """Indices of eigenvalues outside a bulk edge, most extreme first.

    Args:
        values: (n,) eigenvalues.
        edge: upper edge (only values above it count), or ``(lower, upper)``.
        margin: extra distance beyond the edge before a value counts (eigenvalue units, >= 0).

    Returns:
        (num_outliers,) int64 CPU tensor of indices, ordered by decreasing distance beyond
        the edge.
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    x = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64).reshape(-1)
    if isinstance(edge, (tuple, list)):
        if len(edge) != 2 or not edge[0] <= edge[1]:
            raise ValueError(f"edge must be a float or a (lower, upper) pair with lower <= upper, got {edge!r}")
        lower, upper = float(edge[0]), float(edge[1])
    else:
        lower, upper = -math.inf, float(edge)
    beyond = np.maximum(x - (upper + margin), (lower - margin) - x)
    idx = np.nonzero(beyond > 0)[0]
    idx = idx[np.argsort(-beyond[idx], kind="stable")]
    return torch.as_tensor(idx, dtype=torch.int64)


# ----------------------------------------------------------------------------- spiked bulk


def _np(x: Any) -> np.ndarray:
    """A tensor, array or sequence as a float64 NumPy array (CPU copy)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float64)



@dataclass(frozen=True)
class SpikeCount:
    """Number of spikes above the bulk by an edge-calibrated eigengap rule (Onatski 2010).

    Attributes:
        num_spikes: estimated number of eigenvalues separated from the bulk (r).
        max_spikes: the cap ``r_max`` (the estimate never exceeds it).
        at_max: ``num_spikes == max_spikes`` (the true count may be larger).
        delta: the gap threshold ``2 |b|`` (eigenvalue units).
        edge_slope: ``b``, the slope of ``lambda_j`` on ``(j - 1)^(2/3)`` over
            ``j = r_max + 1 .. r_max + edge_points`` (eigenvalue units).
        gaps: ``lambda_i - lambda_(i+1)`` for i = 1 .. max_spikes (descending values).
    """

    num_spikes: int
    max_spikes: int
    at_max: bool
    delta: float
    edge_slope: float
    gaps: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_spikes": self.num_spikes,
            "max_spikes": self.max_spikes,
            "at_max": self.at_max,
            "delta": self.delta,
            "edge_slope": self.edge_slope,
            "gaps": list(self.gaps),
        }


def count_spikes(values: Any, *, max_spikes: int | None = None, edge_points: int = 5) -> SpikeCount:
    """Count the eigenvalues separated from the top of the bulk (Onatski 2010's ED rule).

    Near a square-root bulk edge (semicircle, Marchenko-Pastur) the j-th largest bulk
    eigenvalue sits at ``edge + b (j - 1)^(2/3)`` to leading order, so gaps between bulk
    eigenvalues are of order ``|b|`` while the gap below the last spike stays of order one.
    With ``lambda_1 >= ... >= lambda_k``: regress ``lambda_j`` on ``(j - 1)^(2/3)`` (with an
    intercept) for ``j = r_max + 1 .. r_max + edge_points``, set ``delta = 2 |b|`` and
    ``r = max{i <= r_max : lambda_i - lambda_(i+1) >= delta}`` (0 if none) (Onatski,
    "Determining the number of factors from empirical distribution of eigenvalues",
    Rev. Econ. Stat. 92(4), 2010). Onatski then re-runs the regression from ``j = r + 1``;
    we keep the first step, whose regression holds bulk eigenvalues whenever r <= r_max:
    on spiked Wigner matrices with spikes clustered near the threshold the iteration
    collapsed to r = 0 (an underestimate puts spikes into the regression, which raises
    delta), the single step did not.

    Args:
        values: the k largest eigenvalues (any order; sorted here), e.g. Lanczos Ritz values.
        max_spikes: ``r_max``, default ``k - edge_points``; needs ``r_max + edge_points <= k``.
        edge_points: number of eigenvalues in the edge regression (Onatski uses 5), >= 3.
    """
    x = np.sort(_np(values).reshape(-1))[::-1]
    if not np.isfinite(x).all():
        raise ValueError("eigenvalues must be finite")
    if isinstance(edge_points, bool) or not isinstance(edge_points, int) or edge_points < 3:
        raise ValueError(f"edge_points must be an int >= 3, got {edge_points!r}")
    k = x.size
    if max_spikes is None:
        if k < edge_points + 1:
            raise ValueError(f"count_spikes needs k >= edge_points + 1 = {edge_points + 1} eigenvalues, got k = {k}")
        max_spikes = k - edge_points
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, int) or max_spikes < 1:
        raise ValueError(f"max_spikes must be an int >= 1, got {max_spikes!r} (k = {k} eigenvalues, edge_points = {edge_points})")
    if max_spikes + edge_points > k:
        raise ValueError(f"count_spikes needs k >= max_spikes + edge_points = {max_spikes + edge_points} eigenvalues, got k = {k}")
    gaps = x[:max_spikes] - x[1 : max_spikes + 1]
    idx = np.arange(max_spikes + 1, max_spikes + 1 + edge_points)  # 1-based indices
    t = (idx - 1.0) ** (2.0 / 3.0)
    tc = t - t.mean()
    slope = float(tc @ (x[idx - 1] - x[idx - 1].mean()) / (tc @ tc))
    delta = 2.0 * abs(slope)
    above = np.nonzero(gaps >= delta)[0]
    r = int(above[-1]) + 1 if above.size else 0
    return SpikeCount(
        num_spikes=r,
        max_spikes=max_spikes,
        at_max=r == max_spikes,
        delta=delta,
        edge_slope=slope,
        gaps=tuple(float(g) for g in gaps),
    )


@dataclass(frozen=True)
class SpikedBulkFit:
    """A spiked semicircle model fitted to top eigenvalues plus an SLQ density.

    Attributes:
        num_spikes: spikes found by :func:`count_spikes` on the top eigenvalues.
        spikes: their values, descending (eigenvalue units).
        count: the :class:`SpikeCount` behind ``num_spikes``.
        bulk_top: largest eigenvalue that is not a spike (``lambda_(r+1)``).
        cut: quadrature nodes above this value are assigned to the spikes
            (midway between ``lambda_r`` and ``lambda_(r+1)``; +inf when r = 0).
        sigma: semicircle parameter of the bulk, ``sqrt`` of the bulk variance (the
            semicircle of radius ``2 sigma`` has variance ``sigma^2``).
        centre: bulk mean.
        lower_edge, upper_edge: ``centre -+ 2 sigma``.
        beyond_edge: top eigenvalues above ``upper_edge`` (the plain edge rule's count).
        beyond_edge_is_lower_bound: every top eigenvalue was beyond the edge.
        spike_mass: quadrature weight above ``cut`` (estimates ``r / P``).
        ks_semicircle: distance of the semicircle CDF from the Gauss-quadrature bracket
            (see :func:`quadrature_ks`); 0 = consistent with the SLQ measure.
        ks_spiked: the same for the spiked model (bulk mass ``1 - r/P`` plus r atoms).
        dim: the matrix size P used for the spikes' mass (None: the mass is neglected).
    """

    num_spikes: int
    spikes: tuple[float, ...]
    count: SpikeCount
    bulk_top: float
    cut: float
    sigma: float
    centre: float
    lower_edge: float
    upper_edge: float
    beyond_edge: int
    beyond_edge_is_lower_bound: bool
    spike_mass: float
    ks_semicircle: float
    ks_spiked: float
    dim: int | None

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "count"}
        out["spikes"] = list(self.spikes)
        out["count"] = self.count.to_dict()
        return out


def quadrature_ks(nodes: Any, weights: Any, cdf: Any) -> float:
    """Largest distance of a model CDF from the bracket that Gauss quadrature puts on the true CDF.

    For a probe's m-point Gauss rule (nodes ``theta_1 < ... < theta_m``, weights w) of a
    measure mu, the Chebyshev-Markov-Stieltjes inequalities give
    ``sum_(i<j) w_i <= mu(-inf, theta_j)`` and ``mu(-inf, theta_j] <= sum_(i<=j) w_i``
    (Golub & Meurant 2010, ch. 6; used for SLQ by Chen, Trogdon & Ubaru, ICML 2021), and
    between nodes the looser bracket of the two neighbours. The probe-averaged bracket is the
    average of the probes' brackets. Returns ``sup_x dist(F(x), [L(x), U(x)])`` over all
    nodes: 0 when the model is consistent with every rule, at most 1. Plain KS against the
    quadrature's step CDF would be at least half the largest weight whatever the model.

    Args:
        nodes: (probes, m) Ritz values. weights: (probes, m), rows summing to one.
        cdf: callable mapping an array of points to the model CDF there.
    """
    n = np.atleast_2d(_np(nodes))
    w = np.atleast_2d(_np(weights))
    if n.shape != w.shape:
        raise ValueError(f"nodes and weights must have one shape, got {n.shape} and {w.shape}")
    xq = np.unique(n)
    lower = np.zeros_like(xq)
    upper = np.zeros_like(xq)
    for theta_row, w_row in zip(n, w, strict=True):
        o = np.argsort(theta_row, kind="stable")
        theta, wt = theta_row[o], w_row[o] / w_row.sum()
        cum = np.cumsum(wt)
        le = np.searchsorted(theta, xq, side="right") - 1  # largest node <= x (-1: none)
        has = le >= 0
        safe = np.clip(le, 0, theta.size - 1)
        is_node = has & (theta[safe] == xq)
        lower += np.where(has, cum[safe] - wt[safe], 0.0)
        nxt = np.clip(le + 1, 0, theta.size - 1)
        upper += np.where(is_node, cum[safe], np.where(le + 1 < theta.size, cum[nxt], 1.0))
    lower /= n.shape[0]
    upper /= n.shape[0]
    f = np.asarray(cdf(xq), dtype=np.float64)
    return float(np.max(np.maximum(0.0, np.maximum(f - upper, lower - f))))


def fit_spiked_bulk(
    top_values: Any,
    nodes: Any,
    weights: Any = None,
    *,
    dim: int | None = None,
    max_spikes: int | None = None,
    edge_points: int = 5,
) -> SpikedBulkFit:
    """Spikes from the top eigenvalues, the bulk semicircle from the SLQ measure without them.

    A trained network's Hessian has a bulk concentrated near zero, far narrower than SLQ
    resolves, and a few isolated large eigenvalues that the Ritz values resolve one by one;
    a quantile fit of the Ritz nodes (:func:`fit_semicircle`) then has no bulk to work on.
    Here (i) :func:`count_spikes` finds r from the gaps among the top eigenvalues,
    (ii) quadrature nodes above the cut midway between ``lambda_r`` and ``lambda_(r+1)``
    are assigned to the spikes, (iii) the bulk semicircle takes the mean and variance of
    the remaining quadrature measure (Gauss quadrature reproduces the first 2m - 1 moments
    of each probe's measure exactly), and (iv) both models are scored by
    :func:`quadrature_ks`.

    Args:
        top_values: (k,) largest eigenvalues (e.g. Lanczos Ritz values), k >= max_spikes + edge_points.
        nodes: (probes, m) SLQ Ritz nodes, or a :class:`~.slq.SpectralDensity` / quadrature
            with ``nodes`` and ``weights`` (then ``weights`` must be None).
        weights: (probes, m) quadrature weights, rows summing to one.
        dim: matrix size P (the spikes' mass in the spiked model is ``1/P`` each).
        max_spikes, edge_points: passed to :func:`count_spikes`.
    """
    if hasattr(nodes, "nodes") and hasattr(nodes, "weights") and weights is None:
        nodes, weights = nodes.nodes, nodes.weights
    if weights is None:
        raise ValueError("weights are required with plain quadrature nodes")
    n = np.atleast_2d(_np(nodes))
    w = np.atleast_2d(_np(weights))
    if n.shape != w.shape or n.size < 3:
        raise ValueError(f"nodes and weights must share a shape with >= 3 entries, got {n.shape} and {w.shape}")
    if not (np.isfinite(n).all() and np.isfinite(w).all()) or (w < 0).any():
        raise ValueError("quadrature nodes and weights must be finite, weights >= 0")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be None or an int >= 1, got {dim!r}")
    top = np.sort(_np(top_values).reshape(-1))[::-1]
    count = count_spikes(top, max_spikes=max_spikes, edge_points=edge_points)
    r = count.num_spikes
    spikes = top[:r]
    cut = 0.5 * (top[r - 1] + top[r]) if r > 0 else math.inf
    wn = w / w.sum(axis=1, keepdims=True) / w.shape[0]
    bulk = n < cut
    bulk_w = wn[bulk]
    if bulk_w.sum() <= 0:
        raise ValueError("no quadrature weight below the spikes; the bulk cannot be fitted")
    pb = bulk_w / bulk_w.sum()
    centre = float(pb @ n[bulk])
    sigma = float(math.sqrt(max(float(pb @ (n[bulk] - centre) ** 2), 0.0)))
    if not sigma > 0:
        raise ValueError("the bulk has zero variance; a semicircle cannot be fitted")
    upper_edge = centre + 2 * sigma
    beyond = int((top > upper_edge).sum())
    spike_frac = r / dim if dim is not None else 0.0

    def sc_cdf(x: np.ndarray) -> np.ndarray:
        return semicircle_cdf(x, sigma, centre)

    def spiked_cdf(x: np.ndarray) -> np.ndarray:
        atoms = (x[:, None] >= spikes[None, :]).sum(axis=1) if r else np.zeros_like(x)
        return (1 - spike_frac) * sc_cdf(x) + (spike_frac / r if r else 0.0) * atoms

    return SpikedBulkFit(
        num_spikes=r,
        spikes=tuple(float(s) for s in spikes),
        count=count,
        bulk_top=float(top[r]),
        cut=float(cut),
        sigma=sigma,
        centre=centre,
        lower_edge=centre - 2 * sigma,
        upper_edge=upper_edge,
        beyond_edge=beyond,
        beyond_edge_is_lower_bound=beyond == top.size,
        spike_mass=float(wn[~bulk].sum()),
        ks_semicircle=quadrature_ks(n, w, sc_cdf),
        ks_spiked=quadrature_ks(n, w, spiked_cdf),
        dim=dim,
    )
