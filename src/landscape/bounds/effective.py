"""Effective-dimension, log-det and trace forms of the eq (8) PAC-Bayes complexity.

The first plan's goal (Sec. 2.3) is a bound whose complexity is an effective rank or a
trace rather than the raw parameter count P. This module makes that explicit for the
Hessian-informed posterior ``Q = N(theta*, c (H + eps I)^-1)`` (eq (8), eigenvalues
clipped at 0 as in :mod:`landscape.bounds.gaussians`) against the isotropic prior
``P = N(theta_0, sigma_p^2 I)``.

Derivation. Write ``x_i = max(lambda_i, 0) / eps`` for the eigenvalues of H and
``rho = c / (sigma_p^2 eps)`` (posterior-to-prior variance ratio in flat directions). The
eigenvalues of ``S_p^-1 S_q`` are ``r_i = rho / (1 + x_i)``, and with
``phi(r) = r - 1 - ln r``, ``phi(rho / (1 + x)) = phi(rho) + ln(1 + x) - rho x / (1 + x)``, so

    KL(Q || P) = 1/2 P phi(rho)                                  (mismatch)
               + 1/2 sum_i [ ln(1 + x_i) - rho x_i / (1 + x_i) ]   (curvature)
               + |theta* - theta_0|^2 / (2 sigma_p^2)            (distance).

With the matched prior ``sigma_p^2 = c / eps`` (rho = 1) the P-proportional mismatch term
vanishes and

    KL = 1/2 [ ln det(I + H+/eps) - d_eff(eps) ] + eps |theta* - theta_0|^2 / (2 c),
    d_eff(eps) = sum_i x_i / (1 + x_i) = tr(H+ (H+ + eps I)^-1)   (effective dimension).

Upper bounds on the curvature term reported beside the exact value (each holds for any
rho > 0; ``(t)+ = max(t, 0)``):

* log-det form:        1/2 sum_i ln(1 + x_i) = 1/2 ln det(I + H+/eps);
* effective-rank form: 1/2 d_eff(eps) [ln(1 + x_max) + (1 - rho)+], from
  ``ln(1+x) - x/(1+x) <= x ln(1+x) / (1+x)`` (equivalent to ``ln(1+x) <= x``);
* trace form:          tr(H+) / (2 eps) >= log-det form, from ``ln(1+x) <= x``.

Directions with ``lambda_i << eps`` contribute ~0 to all of them: only the number of
eigenvalues above the damping, not P, enters (apart from the mismatch term, which a
well-chosen prior variance on the grid of :mod:`landscape.bounds.pacbayes` makes small).

Spectra may be given with multiplicities: top-k eigenvalues plus ``P - k`` copies of a
complement value, or the nodes and (P-scaled) weights of a stochastic Lanczos quadrature.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from landscape.bounds.kl import _x_minus_log1p

__all__ = [
    "ComplexitySummary",
    "effective_dimension",
    "logdet_form",
    "trace_form",
    "complexity_summary",
]


def _spectrum(eigvals: ArrayLike, multiplicities: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(eigvals, torch.Tensor):
        eigvals = eigvals.detach().to("cpu", torch.float64).numpy()
    lam = np.asarray(eigvals, dtype=np.float64).reshape(-1)
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"eigvals must be a non-empty array of finite values, got {lam[:5].tolist()}")
    if multiplicities is None:
        mult = np.ones_like(lam)
    else:
        if isinstance(multiplicities, torch.Tensor):
            multiplicities = multiplicities.detach().to("cpu", torch.float64).numpy()
        mult = np.asarray(multiplicities, dtype=np.float64).reshape(-1)
        if mult.shape != lam.shape:
            raise ValueError(f"multiplicities must have shape {lam.shape} like eigvals, got {mult.shape}")
        if not np.all(np.isfinite(mult) & (mult >= 0)):
            raise ValueError(f"multiplicities must be finite and >= 0, got {mult[:5].tolist()}")
    return np.clip(lam, 0.0, None), mult


def _check_positive(value: float, name: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def effective_dimension(eigvals: ArrayLike, eps: float, multiplicities: ArrayLike | None = None) -> float:
    """``d_eff = sum_i m_i x_i / (1 + x_i)``, ``x_i = max(lambda_i, 0) / eps``.

    Args:
        eigvals: (k,) eigenvalues of H (negative ones count as 0).
        eps: Damping of eq (8), > 0.
        multiplicities: (k,) non-negative counts (default all 1).

    Returns:
        The effective dimension, in [0, sum m_i].

    Raises:
        ValueError: On non-finite eigenvalues, bad multiplicities or ``eps <= 0``.
    """
    _check_positive(eps, "eps")
    lam, mult = _spectrum(eigvals, multiplicities)
    return float((mult * (lam / (lam + eps))).sum())


def logdet_form(eigvals: ArrayLike, eps: float, multiplicities: ArrayLike | None = None) -> float:
    """``1/2 sum_i m_i ln(1 + max(lambda_i, 0) / eps) = 1/2 ln det(I + H+/eps)``, nats.

    Args:
        eigvals: (k,) eigenvalues of H.
        eps: Damping, > 0.
        multiplicities: (k,) non-negative counts (default all 1).

    Returns:
        The log-det complexity, nats.

    Raises:
        ValueError: As :func:`effective_dimension`.
    """
    _check_positive(eps, "eps")
    lam, mult = _spectrum(eigvals, multiplicities)
    return float(0.5 * (mult * np.log1p(lam / eps)).sum())


def trace_form(eigvals: ArrayLike, eps: float, multiplicities: ArrayLike | None = None) -> float:
    """``tr(H+) / (2 eps) = sum_i m_i max(lambda_i, 0) / (2 eps)``, nats.

    Args:
        eigvals: (k,) eigenvalues of H.
        eps: Damping, > 0.
        multiplicities: (k,) non-negative counts (default all 1).

    Returns:
        The trace complexity, nats (an upper bound on :func:`logdet_form`).

    Raises:
        ValueError: As :func:`effective_dimension`.
    """
    _check_positive(eps, "eps")
    lam, mult = _spectrum(eigvals, multiplicities)
    return float((mult * lam).sum() / (2.0 * eps))


@dataclasses.dataclass(frozen=True)
class ComplexitySummary:
    """The eq (8) KL split into its terms, with effective-rank and trace upper bounds.

    Attributes:
        dim: P, the total multiplicity.
        eps: Damping.
        c: Posterior scale.
        prior_var: ``sigma_p^2``.
        rho: ``c / (sigma_p^2 eps)``.
        effective_dim: ``d_eff(eps)``.
        mismatch_term: ``P phi(rho) / 2`` (0 for the matched prior).
        distance_term: ``|theta* - theta_0|^2 / (2 sigma_p^2)``.
        curvature_exact: ``1/2 sum [ln(1+x) - rho x/(1+x)]``.
        curvature_logdet: Log-det upper bound on ``curvature_exact``.
        curvature_effective_rank: Effective-rank upper bound on ``curvature_exact``.
        curvature_trace: Trace upper bound (>= the log-det one).
        kl: ``mismatch_term + curvature_exact + distance_term`` = exact ``KL(Q || P)``.
    """

    dim: float
    eps: float
    c: float
    prior_var: float
    rho: float
    effective_dim: float
    mismatch_term: float
    distance_term: float
    curvature_exact: float
    curvature_logdet: float
    curvature_effective_rank: float
    curvature_trace: float
    kl: float

    def kl_with(self, curvature: str) -> float:
        """KL (or its upper bound) using the named curvature term.

        Args:
            curvature: One of ``"exact"``, ``"logdet"``, ``"effective_rank"``, ``"trace"``.

        Raises:
            ValueError: For another name.
        """
        names = ("exact", "logdet", "effective_rank", "trace")
        if curvature not in names:
            raise ValueError(f"curvature must be one of {names}, got {curvature!r}")
        return self.mismatch_term + self.distance_term + getattr(self, f"curvature_{curvature}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return dataclasses.asdict(self)


def complexity_summary(
    eigvals: ArrayLike,
    *,
    eps: float,
    c: float,
    prior_var: float | None = None,
    dist_sq: float = 0.0,
    multiplicities: ArrayLike | None = None,
) -> ComplexitySummary:
    """Exact eq (8) KL and its effective-rank / log-det / trace forms (module docstring).

    Args:
        eigvals: (k,) eigenvalues of H (with ``multiplicities`` they describe all P).
        eps: Damping, > 0.
        c: Posterior scale, > 0.
        prior_var: ``sigma_p^2``; default the matched ``c / eps``.
        dist_sq: ``|theta* - theta_0|^2``, >= 0.
        multiplicities: (k,) non-negative counts (default all 1, i.e. the full spectrum).

    Returns:
        :class:`ComplexitySummary`.

    Raises:
        ValueError: On non-positive ``eps``, ``c`` or ``prior_var``, negative ``dist_sq``,
            or a bad spectrum.
    """
    _check_positive(eps, "eps")
    _check_positive(c, "c")
    sp2 = c / eps if prior_var is None else prior_var
    _check_positive(sp2, "prior_var")
    if not (math.isfinite(dist_sq) and dist_sq >= 0):
        raise ValueError(f"dist_sq must be finite and >= 0, got {dist_sq}")
    lam, mult = _spectrum(eigvals, multiplicities)
    P = float(mult.sum())
    rho = c / (sp2 * eps)
    x = lam / eps
    u = x / (1.0 + x)  # in [0, 1)
    # ln(1+x) - x/(1+x) = -ln(1-u) - u = g(-u) with g(t) = t - log1p(t): no cancellation.
    base = _x_minus_log1p(-u)
    curvature_exact = 0.5 * float((mult * (base + (1.0 - rho) * u)).sum())
    logdet = 0.5 * float((mult * np.log1p(x)).sum())
    d_eff = float((mult * u).sum())
    x_max = float(x[mult > 0].max()) if np.any(mult > 0) else 0.0
    eff_rank = 0.5 * d_eff * (math.log1p(x_max) + max(0.0, 1.0 - rho))
    trace = 0.5 * float((mult * x).sum())
    mismatch = 0.5 * P * float(_x_minus_log1p(np.array([rho - 1.0]))[0])  # phi(rho)
    distance = dist_sq / (2.0 * sp2)
    return ComplexitySummary(
        dim=P,
        eps=float(eps),
        c=float(c),
        prior_var=float(sp2),
        rho=float(rho),
        effective_dim=d_eff,
        mismatch_term=mismatch,
        distance_term=distance,
        curvature_exact=curvature_exact,
        curvature_logdet=logdet,
        curvature_effective_rank=eff_rank,
        curvature_trace=trace,
        kl=mismatch + curvature_exact + distance,
    )
