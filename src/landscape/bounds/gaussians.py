"""Closed-form KL divergences between Gaussians over flat parameter vectors (float64).

    KL(N(mu_q, S_q) || N(mu_p, S_p))
        = 1/2 [ tr(S_p^-1 S_q) + (mu_p - mu_q)^T S_p^-1 (mu_p - mu_q) - P
                + ln det S_p - ln det S_q ].

Three posterior families, all against a prior that is isotropic (scalar variance) or,
for the first two, diagonal:

* isotropic ``N(mu, s I)`` and diagonal ``N(mu, diag(s))``;
* low-rank-plus-isotropic :class:`LowRankGaussian`, the Hessian-informed posterior of
  the first plan's eq (8), ``q = N(theta*, c (H + eps I)^-1)``, restricted to the top-k
  eigenpairs ``(lambda_i, v_i)`` of ``H`` (see :func:`hessian_posterior`):

      S_q = V diag(a) V^T + tau (I - V V^T),   a_i = c / (max(lambda_i, 0) + eps),
                                               tau = c / (max(lambda_rest, 0) + eps),

  i.e. ``S_q = tau I + V diag(s) V^T`` with ``s = a - tau`` and ``V`` (P, k) orthonormal.

For the low-rank family the matrix determinant lemma gives
``det(tau I + V diag(s) V^T) = tau^P det(I_k + diag(s) V^T V / tau) = tau^(P-k) prod(a)``
(``V^T V = I``), Woodbury gives ``S_q^-1 = I / tau + V diag(1/a - 1/tau) V^T``, and against
an isotropic prior ``sigma_p^2 I`` the eigenvalues of ``S_p^-1 S_q`` are ``a_i / sigma_p^2``
and ``tau / sigma_p^2`` (``P - k`` times). No P x P matrix is ever formed: O(P k) memory,
O(P k^2) time (the orthonormalisation of ``V``).

Numerics: the divergence is accumulated as ``1/2 [sum_i phi(r_i) + mahalanobis]`` with
``phi(r) = r - 1 - ln r >= 0`` over the eigenvalues ``r_i`` of ``S_p^-1 S_q`` (computed
without cancellation), so a KL much smaller than P keeps full relative precision; the
separate trace and log-det terms are still reported.

Negative or tiny Hessian eigenvalues: ``H + eps I`` is positive definite only when the
smallest eigenvalue exceeds ``-eps``, so eigenvalues are clipped at 0 before ``eps`` is
added (directions of negative curvature get the flat-direction variance ``c / eps``);
tiny eigenvalues are regularised by ``eps`` itself, as the plan says. Any choice keeps a
PAC-Bayes bound valid (the bound holds for every posterior); it only changes tightness.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "GaussianKL",
    "LowRankGaussian",
    "kl_isotropic",
    "kl_diagonal",
    "kl_lowrank",
    "hessian_posterior",
    "complement_curvature",
    "sample_diagonal",
    "sample_lowrank",
    "lowrank_log_prob",
]

_F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class GaussianKL:
    """``KL(Q || P)`` between Gaussians with its terms (all in nats / dimensionless).

    Attributes:
        kl: The divergence, nats.
        trace: ``tr(S_p^-1 S_q)``.
        mahalanobis: ``(mu_q - mu_p)^T S_p^-1 (mu_q - mu_p)``.
        logdet_prior: ``ln det S_p``.
        logdet_posterior: ``ln det S_q``.
        dim: Dimension ``P``.
    """

    kl: float
    trace: float
    mahalanobis: float
    logdet_prior: float
    logdet_posterior: float
    dim: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, eq=False)
class LowRankGaussian:
    """``N(mean, V diag(eigvar) V^T + tau (I - V V^T))`` with orthonormal ``V``.

    Construct with :func:`hessian_posterior` (eq (8)) or directly; ``__post_init__``
    checks shapes, positivity and orthonormality (``max|V^T V - I| <= 1e-8``).

    Attributes:
        mean: (P,) float64 mean.
        basis: (P, k) float64 orthonormal columns ``V`` (k may be 0).
        eigvar: (k,) float64 variances along the columns of ``V``, all > 0.
        tau: Variance on the orthogonal complement of ``span(V)``, > 0.
    """

    mean: Tensor
    basis: Tensor
    eigvar: Tensor
    tau: float

    def __post_init__(self) -> None:
        if self.mean.ndim != 1:
            raise ValueError(f"mean must be a vector (P,), got shape {tuple(self.mean.shape)}")
        P = self.mean.shape[0]
        if self.basis.ndim != 2 or self.basis.shape[0] != P:
            raise ValueError(f"basis must have shape ({P}, k), got {tuple(self.basis.shape)}")
        k = self.basis.shape[1]
        if k > P:
            raise ValueError(f"basis has k={k} columns but P={P}; need k <= P")
        if self.eigvar.shape != (k,):
            raise ValueError(f"eigvar must have shape ({k},), got {tuple(self.eigvar.shape)}")
        for name, t in (("mean", self.mean), ("basis", self.basis), ("eigvar", self.eigvar)):
            if t.dtype != _F64:
                raise ValueError(f"{name} must be float64, got {t.dtype}")
            if t.device != self.mean.device:
                raise ValueError(f"{name} is on {t.device} but mean is on {self.mean.device}")
        if not bool(torch.all(torch.isfinite(self.eigvar)).item()) or bool((self.eigvar <= 0).any().item()):
            raise ValueError(f"eigvar must be finite and > 0, got min {float(self.eigvar.min()) if k else 'n/a'}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be finite and > 0, got {self.tau}")
        if k:
            gram = self.basis.T @ self.basis
            err = float((gram - torch.eye(k, dtype=_F64, device=gram.device)).abs().max())
            if err > 1e-8:
                raise ValueError(f"basis columns must be orthonormal (max|V^T V - I| <= 1e-8), got {err:.3g}")

    @property
    def dim(self) -> int:
        """Dimension P."""
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        """Number k of explicit eigen-directions."""
        return int(self.basis.shape[1])

    def covariance_matmat(self, X: Tensor) -> Tensor:
        """``S_q @ X`` for X (P,) or (P, m), O(P k m)."""
        Xd = X.to(_F64)
        squeeze = Xd.ndim == 1
        Xd = Xd.reshape(self.dim, -1)
        coeff = self.basis.T @ Xd
        out = self.tau * Xd + self.basis @ ((self.eigvar - self.tau)[:, None] * coeff)
        return out.reshape(-1) if squeeze else out

    def precision_matmat(self, X: Tensor) -> Tensor:
        """``S_q^-1 @ X`` by Woodbury (``I/tau + V diag(1/a - 1/tau) V^T``), O(P k m)."""
        Xd = X.to(_F64)
        squeeze = Xd.ndim == 1
        Xd = Xd.reshape(self.dim, -1)
        coeff = self.basis.T @ Xd
        out = Xd / self.tau + self.basis @ ((1.0 / self.eigvar - 1.0 / self.tau)[:, None] * coeff)
        return out.reshape(-1) if squeeze else out

    def logdet(self) -> float:
        """``ln det S_q = sum_i ln a_i + (P - k) ln tau`` (matrix determinant lemma)."""
        return float(torch.log(self.eigvar).sum()) + (self.dim - self.rank) * math.log(self.tau)

    def to_dense(self) -> Tensor:
        """The (P, P) covariance (small P only, for tests)."""
        eye = torch.eye(self.dim, dtype=_F64, device=self.mean.device)
        return self.covariance_matmat(eye)


def _phi(r: Tensor) -> Tensor:
    """``r - 1 - ln r`` (>= 0) accurately near ``r = 1``; float64."""
    x = r - 1.0
    small = x.abs() < 1e-2
    # Series x^2/2 - x^3/3 + ... for small x (10 terms: truncation < 1e-21 x^2).
    acc = torch.zeros_like(x)
    for m in range(9, -1, -1):
        acc = (-1.0) ** m / (m + 2) + x * acc
    series = x * x * acc
    direct = x - torch.log1p(x)
    return torch.where(small, series, direct)


def _vec(x: Tensor | float, P: int, name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(x, dtype=_F64, device=device)
    if t.ndim == 0:
        t = t.expand(P)
    if t.shape != (P,):
        raise ValueError(f"{name} must be a scalar or have shape ({P},), got {tuple(t.shape)}")
    return t


def _check_mean(mean: Tensor, name: str) -> Tensor:
    if not isinstance(mean, Tensor) or mean.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor (P,), got {getattr(mean, 'shape', type(mean))}")
    return mean.to(_F64)


def _positive(t: Tensor, name: str) -> None:
    if not bool(torch.all(torch.isfinite(t) & (t > 0)).item()):
        raise ValueError(f"{name} must be finite and > 0, got min {float(t.min())}")


def _assemble(ratios: Tensor, counts: Tensor, mahal: float, logdet_p: float, logdet_q: float, P: int) -> GaussianKL:
    """KL from the eigenvalues ``ratios`` of S_p^-1 S_q (with multiplicities ``counts``)."""
    phi_sum = float((counts * _phi(ratios)).sum())
    trace = float((counts * ratios).sum())
    return GaussianKL(
        kl=0.5 * (phi_sum + mahal),
        trace=trace,
        mahalanobis=mahal,
        logdet_prior=logdet_p,
        logdet_posterior=logdet_q,
        dim=P,
    )


def kl_diagonal(
    mean_q: Tensor,
    var_q: Tensor | float,
    mean_p: Tensor,
    var_p: Tensor | float,
) -> GaussianKL:
    """``KL(N(mean_q, diag(var_q)) || N(mean_p, diag(var_p)))`` in float64.

    Args:
        mean_q: (P,) posterior mean.
        var_q: (P,) posterior variances, or a scalar for an isotropic posterior.
        mean_p: (P,) prior mean (data-independent, e.g. the initialisation).
        var_p: (P,) prior variances, or a scalar for an isotropic prior.

    Returns:
        :class:`GaussianKL` with all terms.

    Raises:
        ValueError: On shape mismatch or non-positive / non-finite variances.
    """
    mq = _check_mean(mean_q, "mean_q")
    mp = _check_mean(mean_p, "mean_p").to(mq.device)
    P = mq.shape[0]
    if mp.shape != (P,):
        raise ValueError(f"mean_p must have shape ({P},) like mean_q, got {tuple(mp.shape)}")
    vq = _vec(var_q, P, "var_q", mq.device)
    vp = _vec(var_p, P, "var_p", mq.device)
    _positive(vq, "var_q")
    _positive(vp, "var_p")
    diff = mq - mp
    mahal = float((diff * diff / vp).sum())
    return _assemble(
        vq / vp,
        torch.ones(P, dtype=_F64, device=mq.device),
        mahal,
        float(torch.log(vp).sum()),
        float(torch.log(vq).sum()),
        P,
    )


def kl_isotropic(mean_q: Tensor, var_q: float, mean_p: Tensor, var_p: float) -> GaussianKL:
    """``KL(N(mean_q, var_q I) || N(mean_p, var_p I))``, O(P).

    ``= 1/2 [P phi(var_q / var_p) + |mean_q - mean_p|^2 / var_p]`` with
    ``phi(r) = r - 1 - ln r``.

    Args:
        mean_q: (P,) posterior mean.
        var_q: Posterior variance per coordinate, > 0.
        mean_p: (P,) prior mean.
        var_p: Prior variance per coordinate, > 0.

    Returns:
        :class:`GaussianKL` with all terms.

    Raises:
        ValueError: On shape mismatch or a non-positive variance.
    """
    for name, v in (("var_q", var_q), ("var_p", var_p)):
        if not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite float > 0, got {v!r}")
    var_q, var_p = float(var_q), float(var_p)
    mq = _check_mean(mean_q, "mean_q")
    mp = _check_mean(mean_p, "mean_p").to(mq.device)
    P = mq.shape[0]
    if mp.shape != (P,):
        raise ValueError(f"mean_p must have shape ({P},) like mean_q, got {tuple(mp.shape)}")
    diff = mq - mp
    mahal = float((diff * diff).sum()) / var_p
    r = torch.tensor([var_q / var_p], dtype=_F64)
    return _assemble(
        r, torch.tensor([float(P)], dtype=_F64), mahal, P * math.log(var_p), P * math.log(var_q), P
    )


def kl_lowrank(posterior: LowRankGaussian, mean_p: Tensor, var_p: float) -> GaussianKL:
    """``KL(posterior || N(mean_p, var_p I))`` for a low-rank-plus-isotropic posterior.

    Eigenvalues of ``S_p^-1 S_q`` are ``a_i / var_p`` (i < k) and ``tau / var_p``
    (multiplicity ``P - k``); trace ``= (sum a + (P-k) tau) / var_p``, Mahalanobis
    ``= |mean - mean_p|^2 / var_p``, ``ln det S_q = sum ln a + (P-k) ln tau``. O(P k).

    Args:
        posterior: The :class:`LowRankGaussian`.
        mean_p: (P,) prior mean.
        var_p: Isotropic prior variance, > 0.

    Returns:
        :class:`GaussianKL` with all terms.

    Raises:
        ValueError: On shape mismatch or a non-positive ``var_p``.
    """
    if not (isinstance(var_p, numbers.Real) and math.isfinite(var_p) and var_p > 0):
        raise ValueError(f"var_p must be a finite float > 0, got {var_p!r}")
    var_p = float(var_p)
    P, k = posterior.dim, posterior.rank
    mp = _check_mean(mean_p, "mean_p").to(posterior.mean.device)
    if mp.shape != (P,):
        raise ValueError(f"mean_p must have shape ({P},) like the posterior mean, got {tuple(mp.shape)}")
    diff = posterior.mean - mp
    mahal = float((diff * diff).sum()) / var_p
    ratios = torch.cat([posterior.eigvar.cpu(), torch.tensor([posterior.tau], dtype=_F64)]) / var_p
    counts = torch.cat([torch.ones(k, dtype=_F64), torch.tensor([float(P - k)], dtype=_F64)])
    return _assemble(ratios, counts, mahal, P * math.log(var_p), posterior.logdet(), P)


def hessian_posterior(
    mean: Tensor,
    eigvals: Tensor,
    eigvecs: Tensor,
    *,
    c: float,
    eps: float,
    lambda_rest: float,
    orth_tol: float = 1e-4,
) -> LowRankGaussian:
    """The eq (8) posterior ``N(theta*, c (H + eps I)^-1)`` from top-k eigenpairs of H.

    Covariance ``c / (max(lambda_i, 0) + eps)`` along each ``v_i`` and
    ``c / (max(lambda_rest, 0) + eps)`` on the complement of ``span(V)``. The eigenvectors
    are cast to float64 and orthonormalised by the polar factor ``V (V^T V)^-1/2`` (the
    closest orthonormal matrix, O(P k^2)), after checking they are orthonormal to
    ``orth_tol`` (Lanczos Ritz vectors in float32 are typically ~1e-6 off).

    Args:
        mean: (P,) centre ``theta*`` (the trained parameters, flat).
        eigvals: (k,) eigenvalues of H for the columns of ``eigvecs``.
        eigvecs: (P, k) eigenvectors (columns).
        c: Posterior scale, > 0.
        eps: Damping, > 0 (same units as the eigenvalues).
        lambda_rest: Curvature assigned to the complement, e.g. from
            :func:`complement_curvature`; clipped at 0 like the eigenvalues.
        orth_tol: Largest accepted ``max|V^T V - I|`` before orthonormalisation.

    Returns:
        The :class:`LowRankGaussian` (float64, on ``mean``'s device).

    Raises:
        ValueError: On non-positive ``c``/``eps``, non-finite inputs, shape mismatch, or
            eigenvectors further than ``orth_tol`` from orthonormal.
    """
    for name, v in (("c", c), ("eps", eps)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not math.isfinite(lambda_rest):
        raise ValueError(f"lambda_rest must be finite, got {lambda_rest}")
    m = _check_mean(mean, "mean")
    P = m.shape[0]
    lam = torch.as_tensor(eigvals).to(dtype=_F64, device=m.device).reshape(-1)
    V = torch.as_tensor(eigvecs).to(dtype=_F64, device=m.device)
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != P or V.shape[1] != lam.shape[0]:
        raise ValueError(
            f"eigvecs must have shape ({P}, {lam.shape[0]}) to match mean and eigvals, got {tuple(V.shape)}"
        )
    if not bool(torch.all(torch.isfinite(lam)).item()) or not bool(torch.all(torch.isfinite(V)).item()):
        raise ValueError("eigvals and eigvecs must be finite")
    k = V.shape[1]
    if k:
        gram = V.T @ V
        eye = torch.eye(k, dtype=_F64, device=m.device)
        err = float((gram - eye).abs().max())
        if err > orth_tol:
            raise ValueError(f"eigvecs must be orthonormal to orth_tol={orth_tol}, got max|V^T V - I| = {err:.3g}")
        w, U = torch.linalg.eigh(gram)
        V = V @ (U @ torch.diag(w.rsqrt()) @ U.T)
    eigvar = c / (torch.clamp(lam, min=0.0) + eps)
    tau = c / (max(lambda_rest, 0.0) + eps)
    return LowRankGaussian(mean=m, basis=V, eigvar=eigvar, tau=tau)


def complement_curvature(trace: float, top_eigvals: Tensor, dim: int) -> float:
    """Mean curvature on the complement of the top-k eigenspace, clipped at 0.

    ``lambda_rest = max(0, (tr(H) - sum_i lambda_i) / (P - k))``: the average of the
    eigenvalues not computed, from a trace estimate (e.g. Hutchinson). This is the
    documented default choice for :func:`hessian_posterior`.

    Args:
        trace: ``tr(H)`` (exact or estimated).
        top_eigvals: (k,) the computed eigenvalues.
        dim: P.

    Returns:
        ``lambda_rest`` (0 when k = P).

    Raises:
        ValueError: If ``k > dim`` or ``trace`` is not finite.
    """
    lam = torch.as_tensor(top_eigvals, dtype=_F64).reshape(-1)
    k = lam.shape[0]
    if k > dim:
        raise ValueError(f"got k={k} eigenvalues for dim={dim}; need k <= dim")
    if not math.isfinite(trace):
        raise ValueError(f"trace must be finite, got {trace}")
    if k == dim:
        return 0.0
    return max(0.0, (trace - float(lam.sum())) / (dim - k))


def sample_diagonal(
    mean: Tensor,
    var: Tensor | float,
    generator: torch.Generator,
    num_samples: int | None = None,
) -> Tensor:
    """Draw from ``N(mean, diag(var))`` in float64.

    Args:
        mean: (P,) mean.
        var: (P,) variances or a scalar.
        generator: Source of randomness, on ``mean``'s device.
        num_samples: None for one (P,) draw, else the number of rows.

    Returns:
        (P,) or (num_samples, P) float64 samples.

    Raises:
        ValueError: On bad shapes, non-positive variances or ``num_samples < 1``.
    """
    m = _check_mean(mean, "mean")
    v = _vec(var, m.shape[0], "var", m.device)
    _positive(v, "var")
    shape = _sample_shape(m.shape[0], num_samples)
    z = torch.randn(shape, generator=generator, dtype=_F64, device=m.device)
    return m + v.sqrt() * z


def sample_lowrank(
    posterior: LowRankGaussian,
    generator: torch.Generator,
    num_samples: int | None = None,
) -> Tensor:
    """Draw from a :class:`LowRankGaussian` without forming P x P matrices.

    ``x = mu + sqrt(tau) z + V ((sqrt(a) - sqrt(tau)) * (V^T z))`` with ``z ~ N(0, I_P)``;
    the symmetric factor ``M = sqrt(tau) I + V diag(sqrt(a) - sqrt(tau)) V^T`` satisfies
    ``M M^T = S_q`` because ``V^T V = I``. O(P k) per sample.

    Args:
        posterior: The distribution.
        generator: Source of randomness, on the posterior's device.
        num_samples: None for one (P,) draw, else the number of rows.

    Returns:
        (P,) or (num_samples, P) float64 samples.

    Raises:
        ValueError: If ``num_samples < 1``.
    """
    P = posterior.dim
    shape = _sample_shape(P, num_samples)
    z = torch.randn(shape, generator=generator, dtype=_F64, device=posterior.mean.device)
    Z = z.reshape(-1, P)
    st = math.sqrt(posterior.tau)
    coeff = (Z @ posterior.basis) * (posterior.eigvar.sqrt() - st)
    X = posterior.mean + st * Z + coeff @ posterior.basis.T
    return X.reshape(shape)


def lowrank_log_prob(posterior: LowRankGaussian, x: Tensor) -> Tensor:
    """Log-density of a :class:`LowRankGaussian` at x (P,) or (m, P), via Woodbury.

    ``-1/2 [P ln 2 pi + ln det S_q + (x - mu)^T S_q^-1 (x - mu)]``.

    Args:
        posterior: The distribution.
        x: Points, (P,) or (m, P).

    Returns:
        Scalar or (m,) float64 log-densities.

    Raises:
        ValueError: If the last dimension of ``x`` is not P.
    """
    P = posterior.dim
    if x.shape[-1] != P or x.ndim not in (1, 2):
        raise ValueError(f"x must have shape ({P},) or (m, {P}), got {tuple(x.shape)}")
    d = (x.to(_F64) - posterior.mean).reshape(-1, P).T  # (P, m)
    quad = (d * posterior.precision_matmat(d)).sum(0)
    out = -0.5 * (P * math.log(2 * math.pi) + posterior.logdet() + quad)
    return out.reshape(()) if x.ndim == 1 else out


def _sample_shape(P: int, num_samples: int | None) -> tuple[int, ...]:
    if num_samples is None:
        return (P,)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    return (num_samples, P)
