"""Estimators against the exact spectrum: the dense check of a small operator.

For an operator small enough to materialise (``P`` up to ~10^4), the dense matrix (for a
:class:`~landscape.curvature.operators.HessianOperator`: one double-backward product per
column of the identity, :meth:`~landscape.curvature.linop.SymmetricOperator.to_dense`) and
its eigenvalues in float64 are the ground truth against which the Krylov estimates are
scored: the top-k and bottom-k Ritz values (error and whether it lies within the Ritz
residual certificate), the trace estimate (error and whether the exact trace lies in its
normal interval), the SLQ spectral measure (Wasserstein-1 distance to the exact spectral
measure ``(1/P) sum_i delta(lambda_i)``, both as discrete measures) and the log-det
curvature part ``sum_i ln(1 + max(lambda_i, 0) / eps)``.

Certificates: a Ritz pair ``(theta, u)`` with residual ``||A u - theta u|| <= r`` has an
eigenvalue of ``A`` within ``r`` of ``theta`` (Parlett, *The Symmetric Eigenvalue Problem*,
1998, Thm 4.5.1); ``within_bound`` checks the i-th Ritz value against the i-th exact
eigenvalue, ``nearest_within_bound`` the guarantee itself (the nearest eigenvalue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.linop import SymmetricOperator, as_operator

__all__ = ["EndCheck", "DenseCheck", "dense_matrix", "exact_eigenvalues", "compare_with_exact", "wasserstein1"]

# relative floating-point slack of a certificate check: a bound of exactly the error counts
_SLACK = 1e-9


def _negative_fraction(ev: np.ndarray, unit_roundoff: float) -> float:
    """Fraction of eigenvalues below ``-P u max|lambda|`` (a rounded zero eigenvalue is not negative)."""
    tol = ev.size * unit_roundoff * float(np.abs(ev).max(initial=0.0))
    return float(np.mean(ev < -tol)) if ev.size else math.nan


def dense_matrix(op: SymmetricOperator | Tensor) -> tuple[Tensor, float]:
    """The (P, P) float64 matrix of ``op`` and its relative asymmetry ``||A - A^T||_F / ||A||_F``.

    An operator is materialised by its products with the identity (for the Hessian
    operators: exact double-backward products, never ``torch.func.hessian``); the matrix is
    returned symmetrised, ``(A + A^T) / 2``, on the CPU.
    """
    A = as_operator(op).to_dense().detach().to(device="cpu", dtype=torch.float64)
    norm = float(torch.linalg.matrix_norm(A))
    asym = float(torch.linalg.matrix_norm(A - A.T)) / norm if norm > 0 else 0.0
    return (A + A.T) / 2, asym


def exact_eigenvalues(matrix: Tensor) -> np.ndarray:
    """All eigenvalues of a symmetric matrix, ascending, in float64 (LAPACK ``syevd``)."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
    return torch.linalg.eigvalsh(matrix.detach().to(device="cpu", dtype=torch.float64)).numpy()


def wasserstein1(nodes: np.ndarray, weights: np.ndarray, eigenvalues: np.ndarray) -> float:
    """W1 between the discrete measure ``sum_j weights_j delta(nodes_j)`` (weights normalised
    to one) and the uniform measure on ``eigenvalues`` (eigenvalue units)."""
    from scipy.stats import wasserstein_distance

    nodes, weights = np.asarray(nodes, float).ravel(), np.asarray(weights, float).ravel()
    if nodes.shape != weights.shape or nodes.size == 0:
        raise ValueError(f"nodes and weights must be non-empty and of one shape, got {nodes.shape} and {weights.shape}")
    if np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return float(wasserstein_distance(nodes, np.asarray(eigenvalues, float), u_weights=weights))


@dataclass(frozen=True)
class EndCheck:
    """Ritz values of one end of the spectrum against the exact eigenvalues.

    Attributes:
        which: ``"top"`` (largest algebraic first) or ``"bottom"`` (smallest first).
        estimates: (k,) Ritz values. exact: (k,) the exact eigenvalues of the same ranks.
        bounds: (k,) absolute residual bounds of the Ritz values.
        abs_errors, rel_errors: ``|theta_i - lambda_i|`` and that over ``|lambda_i|``.
        within_bound: ``|theta_i - lambda_i| <= bound_i`` (rank-matched).
        nearest_within_bound: an exact eigenvalue lies within ``bound_i`` of ``theta_i``.
    """

    which: str
    estimates: tuple[float, ...]
    exact: tuple[float, ...]
    bounds: tuple[float, ...]
    abs_errors: tuple[float, ...]
    rel_errors: tuple[float, ...]
    within_bound: tuple[bool, ...]
    nearest_within_bound: tuple[bool, ...]

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors) if self.rel_errors else math.nan

    @property
    def all_within_bound(self) -> bool:
        return all(self.within_bound)

    @property
    def max_excess(self) -> float:
        """``max_i (|theta_i - lambda_i| - bound_i)``, floored at 0: how far the worst error exceeds its certificate."""
        return max([0.0, *(e - b for e, b in zip(self.abs_errors, self.bounds, strict=True))])

    def to_dict(self) -> dict[str, Any]:
        return {"which": self.which, "k": len(self.estimates), "estimates": list(self.estimates), "exact": list(self.exact),
                "bounds": list(self.bounds), "abs_errors": list(self.abs_errors), "rel_errors": list(self.rel_errors),
                "within_bound": list(self.within_bound), "nearest_within_bound": list(self.nearest_within_bound),
                "max_rel_error": self.max_rel_error, "all_within_bound": self.all_within_bound, "max_excess": self.max_excess}


def _end_check(which: str, values: Any, bounds: Any, eigenvalues: np.ndarray) -> EndCheck:
    theta = np.asarray(values, dtype=float).ravel()
    r = np.asarray(bounds, dtype=float).ravel()
    if theta.shape != r.shape:
        raise ValueError(f"{which}: {theta.size} Ritz values but {r.size} residual bounds")
    if theta.size > eigenvalues.size:
        raise ValueError(f"{which}: {theta.size} Ritz values for a spectrum of {eigenvalues.size} eigenvalues")
    order = eigenvalues[::-1] if which == "top" else eigenvalues
    exact = order[: theta.size]
    err = np.abs(theta - exact)
    slack = _SLACK * max(float(np.abs(eigenvalues).max(initial=0.0)), np.finfo(float).tiny)
    nearest = np.array([np.abs(eigenvalues - t).min() for t in theta]) if theta.size else np.zeros(0)
    rel = err / np.maximum(np.abs(exact), np.finfo(float).tiny)
    return EndCheck(which=which, estimates=tuple(theta.tolist()), exact=tuple(exact.tolist()), bounds=tuple(r.tolist()),
                    abs_errors=tuple(err.tolist()), rel_errors=tuple(rel.tolist()),
                    within_bound=tuple(bool(e <= b + slack) for e, b in zip(err, r, strict=True)),
                    nearest_within_bound=tuple(bool(e <= b + slack) for e, b in zip(nearest, r, strict=True)))


@dataclass(frozen=True)
class DenseCheck:
    """Estimates of one symmetric operator scored against its exact spectrum.

    Attributes:
        dim: P.
        eigenvalues: (P,) exact eigenvalues, ascending (float64).
        asymmetry: relative asymmetry of the materialised matrix (0 for a symmetric input).
        unit_roundoff: relative precision u of the matrix entries; eigenvalues above
            ``-P u max|lambda|`` count as zero, not negative (``negative_fraction``).
        exact_trace: ``sum_i lambda_i``.
        top, bottom: the Ritz-value checks (None: not given).
        trace: estimate, stderr, interval at ``ci_level``, relative error and whether the
            exact trace lies in the interval (None: not given).
        slq: W1 between the SLQ quadrature measure (every probe's nodes, weights / probes)
            and the exact spectral measure, also divided by the spectral width
            ``lambda_max - lambda_min`` (None: not given).
        logdet: eps, the estimated and exact curvature parts
            ``sum_i ln(1 + max(lambda_i, 0) / eps)``, relative error, the estimate's stderr
            and whether the error is within ``z * stderr`` (None: not given).
    """

    dim: int
    eigenvalues: np.ndarray
    asymmetry: float
    exact_trace: float
    unit_roundoff: float = float(np.finfo(np.float64).eps)
    top: EndCheck | None = None
    bottom: EndCheck | None = None
    trace: dict[str, Any] | None = None
    slq: dict[str, Any] | None = None
    logdet: dict[str, Any] | None = None

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    def to_dict(self) -> dict[str, Any]:
        """Everything but the eigenvalue array (save that separately)."""
        ev = self.eigenvalues
        return {
            "dim": self.dim, "asymmetry": self.asymmetry, "lambda_max": self.lambda_max, "lambda_min": self.lambda_min,
            "exact_trace": self.exact_trace, "unit_roundoff": self.unit_roundoff,
            "negative_fraction": _negative_fraction(ev, self.unit_roundoff),
            "top": self.top.to_dict() if self.top else None, "bottom": self.bottom.to_dict() if self.bottom else None,
            "trace": self.trace, "slq": self.slq, "logdet": self.logdet,
        }


def compare_with_exact(
    op: SymmetricOperator | Tensor,
    *,
    eigenvalues: np.ndarray | None = None,
    top_values: Any = None,
    top_bounds: Any = None,
    bottom_values: Any = None,
    bottom_bounds: Any = None,
    trace_value: float | None = None,
    trace_stderr: float | None = None,
    slq_nodes: Any = None,
    slq_weights: Any = None,
    logdet_eps: float | None = None,
    logdet_curvature: float | None = None,
    logdet_stderr: float | None = None,
    ci_level: float = 0.95,
    unit_roundoff: float | None = None,
) -> DenseCheck:
    """Score estimates of a symmetric operator against its exact eigenvalues.

    Args:
        op: the operator or dense (P, P) symmetric tensor (materialised by
            :func:`dense_matrix` unless ``eigenvalues`` are given).
        eigenvalues: (P,) exact eigenvalues if already computed (skips the dense step).
        top_values, top_bounds: (k,) top Ritz values (descending) and absolute residual bounds.
        bottom_values, bottom_bounds: the same for the bottom end (ascending).
        trace_value, trace_stderr: a trace estimate and its standard error.
        slq_nodes, slq_weights: (probes, steps) SLQ Gauss quadrature (rows summing to one).
        logdet_eps: the shift of ``log det(A + eps I)`` (eigenvalue units, > 0).
        logdet_curvature, logdet_stderr: the estimated curvature part and its stderr.
        ci_level: level of the trace and log-det intervals (``value +- z stderr``).
        unit_roundoff: relative precision of the matrix (default: that of ``op``'s dtype).

    Returns:
        A :class:`DenseCheck`; a part whose estimates were not given is None.

    Raises:
        ValueError: mismatched shapes, ``ci_level`` outside (0, 1), ``logdet_eps <= 0``.
    """
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    asym = 0.0
    if eigenvalues is None:
        matrix, asym = dense_matrix(op)
        ev = exact_eigenvalues(matrix)
    else:
        ev = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
        if ev.size != as_operator(op).shape[0]:
            raise ValueError(f"{ev.size} eigenvalues for an operator of size {as_operator(op).shape[0]}")
    u = float(torch.finfo(as_operator(op).dtype).eps) if unit_roundoff is None else float(unit_roundoff)
    z = NormalDist().inv_cdf(0.5 + ci_level / 2)
    exact_tr = float(ev.sum())
    top = _end_check("top", top_values, top_bounds, ev) if top_values is not None else None
    bottom = _end_check("bottom", bottom_values, bottom_bounds, ev) if bottom_values is not None else None
    tr = None
    if trace_value is not None:
        se = math.nan if trace_stderr is None else float(trace_stderr)
        low, high = trace_value - z * se, trace_value + z * se
        tr = {"estimate": float(trace_value), "stderr": se, "exact": exact_tr, "ci_level": ci_level, "ci_low": low, "ci_high": high,
              "rel_error": abs(trace_value - exact_tr) / max(abs(exact_tr), np.finfo(float).tiny),
              "within_interval": bool(low <= exact_tr <= high) if math.isfinite(se) else False}
    slq = None
    if slq_nodes is not None:
        nodes, weights = np.atleast_2d(np.asarray(slq_nodes, float)), np.atleast_2d(np.asarray(slq_weights, float))
        if nodes.shape != weights.shape:
            raise ValueError(f"slq_nodes {nodes.shape} and slq_weights {weights.shape} differ in shape")
        w1 = wasserstein1(nodes, weights / nodes.shape[0], ev)
        width = float(ev[-1] - ev[0])
        slq = {"w1": w1, "w1_over_width": w1 / width if width > 0 else math.nan, "spectral_width": width,
               "num_probes": int(nodes.shape[0]), "num_steps": int(nodes.shape[1])}
    ld = None
    if logdet_curvature is not None:
        if logdet_eps is None or not logdet_eps > 0:
            raise ValueError(f"logdet_eps must be > 0 with a log-det estimate, got {logdet_eps!r}")
        exact_ld = float(np.log1p(np.maximum(ev, 0.0) / logdet_eps).sum())
        se = math.nan if logdet_stderr is None else float(logdet_stderr)
        err = abs(logdet_curvature - exact_ld)
        ld = {"eps": float(logdet_eps), "estimate": float(logdet_curvature), "exact": exact_ld, "stderr": se,
              "rel_error": err / max(abs(exact_ld), np.finfo(float).tiny),
              "within_interval": bool(err <= z * se) if math.isfinite(se) else False, "ci_level": ci_level,
              "clamped_fraction": _negative_fraction(ev, u)}
    return DenseCheck(dim=int(ev.size), eigenvalues=ev, asymmetry=asym, exact_trace=exact_tr, unit_roundoff=u, top=top, bottom=bottom,
                      trace=tr, slq=slq, logdet=ld)
