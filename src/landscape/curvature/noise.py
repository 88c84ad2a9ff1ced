"""Gradient noise: the geometry of the gradient covariance against the Hessian.

* Per-sample gradients and the gradient covariance ``Sigma = (1/N) sum_i g_i g_i^T - g g^T``
  (eq. (5) of the first research plan), dense or streamed in bounded memory, live in
  :mod:`landscape.curvature.covariance` (re-exported here).
* Gradient rank (energy rank, stable ranks), principal angles between subspaces
  (Bjorck & Golub 1973; small angles from sines as in Knyazev & Argentati 2002), the
  share of noise energy in the sharp Hessian directions (cf. Zhu et al. 2019, "The
  anisotropic noise in stochastic gradient descent") and the landscape difficulty index
  ``D = lambda_max(H)^2 / tr(H) * kappa`` (eq. (9) of the first plan).
* The second plan's ``C ~ diag(H)`` check: Pearson and Spearman correlation of the
  diagonal of the gradient second moment (and of Sigma) with ``diag(H)``, the latter exact
  (unit-vector products) or by the stochastic diagonal estimator of Bekas, Kokiopoulou &
  Saad 2007 (``E[z * Hz]``, Rademacher z).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.covariance import GradientCovariance
from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.io import to_jsonable
from landscape.seeding import seeded_generator

__all__ = [
    "GradientRank",
    "gradient_rank",
    "SubspaceAlignment",
    "subspace_alignment",
    "NoiseAlignment",
    "noise_alignment",
    "DifficultyIndex",
    "difficulty_index",
    "DiagonalEstimate",
    "operator_diagonal",
    "DiagonalCorrelation",
    "noise_curvature_correlation",
]

DIAGONAL_METHODS: tuple[str, ...] = ("exact", "hutchinson")


def _fields_dict(obj: Any) -> dict[str, Any]:
    return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


# --------------------------------------------------------------------------------------
# Gradient rank
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GradientRank:
    """Rank summaries of a gradient covariance ``Sigma`` with eigenvalues ``lambda_i``.

    Attributes:
        energy_rank: smallest r with ``sum_{i<=r} lambda_i >= energy * tr(Sigma)``.
        energy: the fraction used.
        stable_rank_gradients: ``tr(Sigma) / lambda_max(Sigma)``; this equals the stable
            rank ``||A||_F^2 / ||A||_2^2`` of the scaled centred gradient matrix
            ``A = Gc / sqrt(N)`` (since ``Sigma = A^T A``).
        stable_rank_covariance: ``||Sigma||_F^2 / ||Sigma||_2^2``, the stable rank of
            Sigma itself (``<= stable_rank_gradients``).
        participation_ratio: ``tr(Sigma)^2 / ||Sigma||_F^2``.
        numerical_rank: eigenvalues above ``max(N, P) * eps * lambda_max``.
        trace: tr(Sigma).
        lambda_max: largest eigenvalue of Sigma.
        num_samples: N.
        status: "ok", or why the ratios are NaN (zero covariance).
    """

    energy_rank: int
    energy: float
    stable_rank_gradients: float
    stable_rank_covariance: float
    participation_ratio: float
    numerical_rank: int
    trace: float
    lambda_max: float
    num_samples: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def gradient_rank(sigma: GradientCovariance, energy: float = 0.9) -> GradientRank:
    """Energy rank and stable ranks of a gradient covariance (exact, from its spectrum).

    Args:
        sigma: the covariance.
        energy: fraction of ``tr(Sigma)`` the energy rank must carry, in (0, 1].
    """
    if not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    evals = sigma.eigenvalues().double()
    rank = sigma.numerical_rank
    total = float(evals.sum())
    lam_max = float(evals[0])
    if total <= 0:
        nan = math.nan
        return GradientRank(0, float(energy), nan, nan, nan, 0, total, lam_max, sigma.num_samples, "zero covariance")
    cum = torch.cumsum(evals, 0)
    # The smallest r whose cumulative energy reaches the fraction (ties at the boundary count as reached).
    energy_rank = int((cum < energy * total).sum()) + 1
    energy_rank = min(energy_rank, int(evals.numel()))
    fro2 = float((evals**2).sum())
    return GradientRank(
        energy_rank=energy_rank,
        energy=float(energy),
        stable_rank_gradients=total / lam_max,
        stable_rank_covariance=fro2 / lam_max**2,
        participation_ratio=total**2 / fro2,
        numerical_rank=rank,
        trace=total,
        lambda_max=lam_max,
        num_samples=sigma.num_samples,
        status="ok",
    )


# --------------------------------------------------------------------------------------
# Subspace alignment, kappa, difficulty index
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SubspaceAlignment:
    """Principal angles between span(U) and span(W).

    Attributes:
        principal_angles: (min(k_u, k_w),) angles in radians, ascending.
        cosines: (min(k_u, k_w),) their cosines (singular values of ``Q_u^T Q_w``), descending.
        overlap: ``||Q_u^T Q_w||_F^2 / min(k_u, k_w)`` = mean squared cosine, in [0, 1]
            (1: the smaller subspace lies in the larger one).
        dim_u: dimension of span(U).
        dim_w: dimension of span(W).
    """

    principal_angles: Tensor
    cosines: Tensor
    overlap: float
    dim_u: int
    dim_w: int

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def _orthonormal_basis(X: Tensor, what: str) -> Tensor:
    if X.ndim == 1:
        X = X.unsqueeze(1)
    if X.ndim != 2 or X.shape[1] == 0 or X.shape[1] > X.shape[0]:
        raise ValueError(f"{what} must be a (P, k) block with 1 <= k <= P, got shape {tuple(X.shape)}")
    Q, R = torch.linalg.qr(X)
    diag = torch.diagonal(R).abs()
    if float(diag.min()) <= X.shape[0] * torch.finfo(X.dtype).eps * float(diag.max()):
        raise ValueError(f"{what} has linearly dependent columns")
    return Q


def subspace_alignment(U: Tensor, W: Tensor) -> SubspaceAlignment:
    """Principal angles between the column spans of U (P, k_u) and W (P, k_w).

    Cosines are the singular values of ``Q_u^T Q_w``; angles below pi/4 are taken from the
    sines (singular values of ``(I - Q_u Q_u^T) Q_w``), which are accurate for small
    angles where ``arccos`` is not.
    """
    if U.shape[0] != W.shape[0]:
        raise ValueError(f"U and W must have the same number of rows, got {U.shape[0]} and {W.shape[0]}")
    dtype = torch.promote_types(U.dtype, W.dtype)
    Qu = _orthonormal_basis(U.to(dtype), "U")
    Qw = _orthonormal_basis(W.to(device=U.device, dtype=dtype), "W")
    ku, kw = Qu.shape[1], Qw.shape[1]
    if kw > ku:  # angles are symmetric; project the smaller basis onto the larger
        Qu, Qw = Qw, Qu
    M = Qu.T @ Qw
    cos = torch.linalg.svdvals(M).clamp(0, 1)  # descending
    sin = torch.linalg.svdvals(Qw - Qu @ M).clamp(0, 1).flip(0)  # ascending, paired with cos
    angles = torch.where(sin * sin < 0.5, torch.arcsin(sin), torch.arccos(cos))
    k = min(ku, kw)
    return SubspaceAlignment(
        principal_angles=angles,
        cosines=cos,
        overlap=float((M * M).sum()) / k,
        dim_u=ku,
        dim_w=kw,
    )


@dataclasses.dataclass(frozen=True)
class NoiseAlignment:
    """Alignment of gradient noise with the top-k Hessian eigenvectors.

    ``P_k`` is the orthogonal projector on the span of the given Hessian eigenvectors.

    Attributes:
        k: subspace dimension.
        kappa: ``tr(P_k Sigma P_k) / tr(Sigma)`` (= ``tr(P_k Sigma) / tr(Sigma)``), the
            share of gradient-noise energy in the k sharpest directions, in [0, 1].
        kappa_max: ``sum_{i<=k} lambda_i(Sigma) / tr(Sigma)``, the largest kappa any
            k-dimensional subspace can reach (Ky Fan), reached by Sigma's top-k subspace.
        kappa_random: ``k / P``, the expected kappa of a uniformly random subspace.
        alignment: principal angles between the Hessian subspace and Sigma's top-k
            eigenvector subspace (fewer when Sigma's rank is below k).
        status: "ok", or why kappa is NaN.
    """

    k: int
    kappa: float
    kappa_max: float
    kappa_random: float
    alignment: SubspaceAlignment | None
    status: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def noise_alignment(hessian_vectors: Tensor, sigma: GradientCovariance) -> NoiseAlignment:
    """kappa and principal angles between top-k Hessian eigenvectors and gradient noise.

    Args:
        hessian_vectors: (P, k) top-k Hessian eigenvectors (e.g. ``top_eigenpairs(...).vectors``);
            orthonormalised here.
        sigma: the gradient covariance.
    """
    if hessian_vectors.ndim == 1:
        hessian_vectors = hessian_vectors.unsqueeze(1)
    if hessian_vectors.shape[0] != sigma.shape[0]:
        raise ValueError(f"hessian_vectors has {hessian_vectors.shape[0]} rows but Sigma is {sigma.shape[0]}-dimensional")
    Q = _orthonormal_basis(hessian_vectors.to(device=sigma.device, dtype=sigma.dtype), "hessian_vectors")
    k = Q.shape[1]
    P = sigma.shape[0]
    total = sigma.trace()
    if total <= 0:
        return NoiseAlignment(k, math.nan, math.nan, k / P, None, "zero covariance")
    captured = sigma.projected_energy(Q)
    evals = sigma.eigenvalues()
    kappa = min(max(captured / total, 0.0), 1.0)  # exact ratio of non-negatives; clamp rounding only
    kappa_max = float(evals[:k].sum()) / total
    eig = sigma.eigenpairs(min(k, sigma.numerical_rank))
    alignment = subspace_alignment(Q, eig.vectors) if eig.vectors.shape[1] > 0 else None
    return NoiseAlignment(k=k, kappa=kappa, kappa_max=min(kappa_max, 1.0), kappa_random=k / P, alignment=alignment, status="ok")


@dataclasses.dataclass(frozen=True)
class DifficultyIndex:
    """``D = lambda_max(H)^2 / tr(H) * kappa`` (eq. (9) of the first research plan).

    ``lambda_max^2 / tr(H)`` is large when curvature concentrates in few sharp directions
    (it is ``lambda_max`` times the share of the trace in the top eigenvalue); ``kappa``
    (see :class:`NoiseAlignment`) is the share of gradient-noise energy in the top-k
    Hessian directions. Units: those of H.

    Attributes:
        value: D, NaN when undefined.
        lambda_max: top Hessian eigenvalue.
        trace: tr(H).
        kappa: alignment in [0, 1].
        status: "ok" or why D is undefined.
    """

    value: float
    lambda_max: float
    trace: float
    kappa: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def difficulty_index(lambda_max: float, trace: float, kappa: float) -> DifficultyIndex:
    """Landscape difficulty index ``D = lambda_max^2 / tr(H) * kappa``.

    Args:
        lambda_max: largest Hessian eigenvalue.
        trace: Hessian trace; D is undefined (NaN, with a status) when ``trace <= 0``.
        kappa: ``tr(P_k Sigma P_k) / tr(Sigma)`` from :func:`noise_alignment`, in [0, 1].
    """
    lam, tr, kap = float(lambda_max), float(trace), float(kappa)
    if not (math.isfinite(lam) and math.isfinite(tr)):
        raise ValueError(f"lambda_max and trace must be finite, got {lambda_max!r} and {trace!r}")
    if not (0.0 <= kap <= 1.0):
        raise ValueError(f"kappa must be in [0, 1], got {kappa!r}")
    if tr <= 0:
        return DifficultyIndex(math.nan, lam, tr, kap, f"undefined: tr(H) = {tr} <= 0")
    return DifficultyIndex(lam * lam / tr * kap, lam, tr, kap, "ok")


# --------------------------------------------------------------------------------------
# Diagonals and the C ~ diag(H) check
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiagonalEstimate:
    """Diagonal of a symmetric operator.

    Attributes:
        values: (P,) diagonal (exact or estimated).
        stderr: (P,) per-entry standard error (zeros when exact).
        num_matvecs: operator-vector products spent.
        method: "exact" or "hutchinson".
        num_probes: probes for "hutchinson" (0 for "exact").
    """

    values: Tensor
    stderr: Tensor
    num_matvecs: int
    method: str
    num_probes: int

    def to_dict(self) -> dict[str, Any]:
        return {"num_matvecs": self.num_matvecs, "method": self.method, "num_probes": self.num_probes}


def operator_diagonal(
    op: SymmetricOperator | Tensor,
    method: str = "exact",
    num_probes: int = 100,
    seed: int = 0,
    block_size: int = 64,
) -> DiagonalEstimate:
    """Diagonal of a symmetric operator (e.g. diag(H)).

    Args:
        op: (P, P) operator or dense tensor.
        method: "exact" (products with unit vectors, P matvecs in blocks) or "hutchinson"
            (``mean_s z_s * (A z_s)`` with Rademacher ``z_s``; unbiased since ``z_i^2 = 1``;
            Bekas, Kokiopoulou & Saad 2007).
        num_probes: probes for "hutchinson" (>= 2, for the standard error).
        seed: probe seed (CPU generator).
        block_size: columns per operator call.
    """
    op = as_operator(op)
    if method not in DIAGONAL_METHODS:
        raise ValueError(f"unknown diagonal method {method!r}; allowed values are {list(DIAGONAL_METHODS)}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    P = op.shape[0]
    if method == "exact":
        diag = torch.empty(P, dtype=op.dtype, device=op.device)
        for start in range(0, P, block_size):
            stop = min(start + block_size, P)
            E = torch.zeros(P, stop - start, dtype=op.dtype, device=op.device)
            idx = torch.arange(start, stop, device=op.device)
            E[idx, idx - start] = 1
            diag[start:stop] = (op @ E)[idx, idx - start]
        return DiagonalEstimate(diag, torch.zeros_like(diag), P, "exact", 0)
    if not isinstance(num_probes, int) or num_probes < 2:
        raise ValueError(f"num_probes must be an int >= 2, got {num_probes!r}")
    g = seeded_generator(seed)
    s1 = torch.zeros(P, dtype=op.dtype, device=op.device)
    s2 = torch.zeros(P, dtype=op.dtype, device=op.device)
    for start in range(0, num_probes, block_size):
        b = min(block_size, num_probes - start)
        Z = (torch.randint(0, 2, (P, b), generator=g) * 2 - 1).to(device=op.device, dtype=op.dtype)
        S = Z * (op @ Z)
        s1 += S.sum(1)
        s2 += (S * S).sum(1)
    mean = s1 / num_probes
    var = (s2 - num_probes * mean * mean).clamp_min(0) / (num_probes - 1)
    return DiagonalEstimate(mean, torch.sqrt(var / num_probes), num_probes, "hutchinson", num_probes)


@dataclasses.dataclass(frozen=True)
class DiagonalCorrelation:
    """Correlation across parameters between gradient-noise diagonals and diag(H).

    Attributes:
        pearson_second_moment: Pearson r of diag(C), ``C = (1/N) sum_i g_i g_i^T``, with diag(H).
        spearman_second_moment: Spearman rho of diag(C) with diag(H).
        pearson_covariance: Pearson r of diag(Sigma) with diag(H).
        spearman_covariance: Spearman rho of diag(Sigma) with diag(H).
        pvalues: two-sided p-values of the four coefficients (same keys).
        num_params: P.
        diag_method: how diag(H) was obtained ("exact", "hutchinson", or "given").
        num_probes: Hutchinson probes (0 otherwise).
        status: "ok", or why coefficients are NaN (a constant vector).
    """

    pearson_second_moment: float
    spearman_second_moment: float
    pearson_covariance: float
    spearman_covariance: float
    pvalues: dict[str, float]
    num_params: int
    diag_method: str
    num_probes: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, math.nan
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    return float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue)


def noise_curvature_correlation(diag_h: Tensor | DiagonalEstimate, sigma: GradientCovariance) -> DiagonalCorrelation:
    """The ``C ~ diag(H)`` check: correlate diag(C) and diag(Sigma) with diag(H) over parameters.

    Args:
        diag_h: (P,) diag(H), or a :class:`DiagonalEstimate` from :func:`operator_diagonal`.
        sigma: gradient covariance of the same parameters.
    """
    if isinstance(diag_h, DiagonalEstimate):
        h, method, probes = diag_h.values, diag_h.method, diag_h.num_probes
    else:
        h, method, probes = diag_h, "given", 0
    if h.ndim != 1 or h.shape[0] != sigma.shape[0]:
        raise ValueError(f"diag_h must have shape ({sigma.shape[0]},), got {tuple(h.shape)}")
    hn = h.detach().double().cpu().numpy()
    c = sigma.second_moment_diagonal().double().cpu().numpy()
    s = sigma.diagonal().double().cpu().numpy()
    pc, pc_p, sc, sc_p = _correlations(c, hn)
    ps, ps_p, ss, ss_p = _correlations(s, hn)
    constant = [name for name, v in (("diag(H)", hn), ("diag(C)", c), ("diag(Sigma)", s)) if np.ptp(v) == 0]
    return DiagonalCorrelation(
        pearson_second_moment=pc,
        spearman_second_moment=sc,
        pearson_covariance=ps,
        spearman_covariance=ss,
        pvalues={
            "pearson_second_moment": pc_p,
            "spearman_second_moment": sc_p,
            "pearson_covariance": ps_p,
            "spearman_covariance": ss_p,
        },
        num_params=int(hn.shape[0]),
        diag_method=method,
        num_probes=probes,
        status="ok" if not constant else f"constant vector(s): {', '.join(constant)}",
    )
