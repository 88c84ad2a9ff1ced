"""Stochastic Lanczos quadrature (SLQ): spectral density, moments and log-determinant.

For a probe ``v`` and ``m`` Lanczos steps from it, the eigen-decomposition
``T_m = U diag(theta) U^T`` of the tridiagonal gives the Gauss quadrature rule of the
spectral measure ``mu_v = sum_i (u_i^T v)^2 / ||v||^2 delta(lambda_i)`` of ``A``: nodes
``theta_j`` and weights ``tau_j = U[0, j]^2``, exact for polynomials of degree < 2m
(Golub & Meurant 1994/2010). Averaging over random probes with ``E[v v^T / v^T v] = I/P``
estimates the normalised spectral measure (1/P) sum_i delta(lambda_i), hence
``tr f(A) ~ P * mean_probes sum_j tau_j f(theta_j)`` (Ubaru, Chen & Saad, "Fast
estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl.
2017), and a Gaussian-broadened density of the Ritz nodes (Ghorbani, Krishnan & Xiao,
"An investigation into neural net optimization via Hessian eigenvalue density",
ICML 2019; Lin, Saad & Yang 2016).

One Krylov pass can be cached: :func:`spectral_density` keeps the tridiagonals, and
:func:`density_from_tridiagonals`, :func:`logdet_from_tridiagonals` and
:func:`quadrature_from_tridiagonals` rebuild everything from saved ``alphas``/``betas``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.lanczos import lanczos_tridiagonal
from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.curvature.trace import PROBE_KINDS, probe_blocks
from landscape.seeding import seeded_generator

__all__ = [
    "GaussQuadrature",
    "SpectralDensity",
    "LogDetEstimate",
    "spectral_density",
    "logdet",
    "quadrature_from_tridiagonals",
    "density_from_tridiagonals",
    "logdet_from_tridiagonals",
    "SpectralMass",
    "mass_below",
    "slq_tridiagonals",
    "NUM_MOMENTS",
]

NUM_MOMENTS = 4


@dataclass(frozen=True)
class GaussQuadrature:
    """Per-probe Gauss quadrature rules: ``nodes`` and ``weights`` of shape (probes, steps).

    Each row's weights sum to one; ``sum_j weights[l, j] f(nodes[l, j])`` approximates
    ``v_l^T f(A) v_l / v_l^T v_l``.
    """

    nodes: Tensor
    weights: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist()}


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ estimate of the eigenvalue density of a symmetric (P, P) operator.

    Attributes:
        nodes: (probes, steps) Ritz values (eigenvalue units).
        weights: (probes, steps) quadrature weights, each row summing to one.
        alphas: (probes, steps) Lanczos diagonals.
        betas: (probes, steps - 1) Lanczos off-diagonals.
        grid: (G,) evaluation points (eigenvalue units).
        density: (G,) Gaussian-broadened density on ``grid`` (per eigenvalue unit;
            integrates to one).
        sigma: standard deviation of the broadening Gaussian (eigenvalue units).
        moments: (4,) estimates of ``tr(A^j) / P`` for j = 1..4.
        moments_stderr: (4,) standard errors of ``moments`` across probes (NaN for one probe).
        dim: P.
        num_matvecs: operator-vector products spent (0 when rebuilt from saved tridiagonals).
    """

    nodes: Tensor
    weights: Tensor
    alphas: Tensor
    betas: Tensor
    grid: Tensor
    density: Tensor
    sigma: float
    moments: Tensor
    moments_stderr: Tensor
    dim: int
    num_matvecs: int

    @property
    def num_probes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.nodes.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "num_probes": self.num_probes,
            "num_steps": self.num_steps,
            "num_matvecs": self.num_matvecs,
            "sigma": self.sigma,
            "moments": self.moments.tolist(),
            "moments_stderr": self.moments_stderr.tolist(),
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "alphas": self.alphas.tolist(),
            "betas": self.betas.tolist(),
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
        }


@dataclass(frozen=True)
class LogDetEstimate:
    """SLQ estimate of ``log det(A + eps I)``.

    Attributes:
        value: the estimate (natural log).
        stderr: P * (std across probes) / sqrt(probes); NaN for one probe.
        eps: the shift.
        floor: nodes of ``A + eps I`` below ``floor`` were replaced by ``floor``.
        clamped_mass: mean over probes of the quadrature weight on clamped nodes, i.e. an
            estimate of the fraction of eigenvalues with ``lambda + eps < floor``.
        num_probes: number of probes.
        num_steps: Lanczos steps per probe.
        num_matvecs: operator-vector products spent.
        dim: P.
    """

    value: float
    stderr: float
    eps: float
    floor: float
    clamped_mass: float
    num_probes: int
    num_steps: int
    num_matvecs: int
    dim: int

    @property
    def curvature_part(self) -> float:
        """``log det(A + eps I) - P ln eps = sum_i ln(1 + lambda_i / eps)``, the part of the
        log-determinant that curvature adds to the flat ``P ln eps`` (with the default
        ``floor = eps``, each term is ``ln(1 + max(lambda_i, 0) / eps)``); same ``stderr``.
        NaN for ``eps = 0``."""
        if self.eps <= 0:
            return math.nan
        return self.value - self.dim * math.log(self.eps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "stderr": self.stderr,
            "eps": self.eps,
            "floor": self.floor,
            "clamped_mass": self.clamped_mass,
            "num_probes": self.num_probes,
            "num_steps": self.num_steps,
            "num_matvecs": self.num_matvecs,
            "dim": self.dim,
        }


def _as_batch(alphas: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    """Validate tridiagonals and return them as (n, m), (n, m-1) float64 tensors."""
    alphas = torch.as_tensor(alphas)
    betas = torch.as_tensor(betas)
    if alphas.ndim == 1:
        alphas = alphas.unsqueeze(0)
        betas = betas.reshape(1, -1)
    if alphas.ndim != 2 or betas.ndim != 2 or alphas.shape[1] < 1:
        raise ValueError(f"alphas must be (m,) or (n, m) with m >= 1, got {tuple(alphas.shape)}")
    n, m = alphas.shape
    if tuple(betas.shape) != (n, m - 1):
        raise ValueError(f"betas must have shape ({n}, {m - 1}) to match alphas {tuple(alphas.shape)}, got {tuple(betas.shape)}")
    return alphas.to(torch.float64), betas.to(torch.float64)


def quadrature_from_tridiagonals(alphas: Tensor, betas: Tensor) -> GaussQuadrature:
    """Gauss quadrature nodes and weights from Lanczos tridiagonals.

    Args:
        alphas: (m,) or (n, m) diagonals.
        betas: (m-1,) or (n, m-1) off-diagonals.

    Returns:
        :class:`GaussQuadrature` with (n, m) float64 nodes and weights (n = 1 for 1-D input).
    """
    a, b = _as_batch(alphas, betas)
    # torch has no tridiagonal eigensolver; the symmetric dense eigh of these small (m, m)
    # matrices is batched over probes and stays on the device.
    T = torch.diag_embed(a) + torch.diag_embed(b, offset=1) + torch.diag_embed(b, offset=-1)
    nodes, U = torch.linalg.eigh(T)
    weights = U[:, 0, :] ** 2
    return GaussQuadrature(nodes=nodes, weights=weights)


def _probe_groups(P: int, num_probes: int, seed: int, probe: str, probes: Tensor | None, dtype: torch.dtype,
                  device: torch.device, batch: int | None) -> Iterator[Tensor]:
    """The probes, at most ``batch`` at a time (the same probes for every ``batch``)."""
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"probe_batch_size must be an int >= 1 or None, got {batch!r}")
    if probes is not None:
        if probes.ndim != 2 or probes.shape[0] != P or probes.shape[1] < 1:
            raise ValueError(f"probes must have shape ({P}, n) with n >= 1, got {tuple(probes.shape)}")
        step = probes.shape[1] if batch is None else batch
        return (probes[:, i : i + step].detach().to(device=device, dtype=dtype) for i in range(0, probes.shape[1], step))
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be an int >= 1, got {num_probes!r}")
    if probe not in PROBE_KINDS:
        raise ValueError(f"probe must be one of {PROBE_KINDS}, got {probe!r}")
    gen = seeded_generator(seed)
    return probe_blocks(P, num_probes, generator=gen, kind=probe, dtype=dtype, device=device, batch_size=batch)


def slq_tridiagonals(
    op: SymmetricOperator | Tensor,
    num_probes: int = 8,
    num_steps: int = 100,
    seed: int = 0,
    *,
    probe: str = "rademacher",
    probes: Tensor | None = None,
    dtype: torch.dtype | None = None,
    probe_batch_size: int | None = None,
    basis_device: torch.device | str | None = None,
    reorthogonalize: bool = True,
) -> tuple[Tensor, Tensor, int]:
    """The Krylov pass of SLQ: Lanczos tridiagonals from random probes.

    Args:
        op: symmetric (P, P) operator or dense tensor, P >= 1.
        num_probes: number of random probes (ignored when ``probes`` is given).
        num_steps: Lanczos steps per probe; capped at P.
        seed: seed of the probes and of fresh vectors after a breakdown.
        probe: "rademacher", "gaussian" or "sphere" (see :func:`random_probes`).
        probes: explicit (P, n) probes instead of random ones.
        dtype: dtype of the Lanczos bases (default: the operator's).
        probe_batch_size: probes run side by side per group (default: all), and the most
            probes materialised at once; the bases hold ``probe_batch_size * num_steps * P``
            numbers (:func:`~landscape.curvature.lanczos.tridiagonal_basis_bytes`). The
            probes are the same for every group size; after a Lanczos breakdown (rare: an
            invariant Krylov space) the fresh vector is drawn per group, so the tridiagonals
            then depend on the grouping.
        basis_device: where the bases live (default: the operator's device).
        reorthogonalize: False: no stored bases, ``3 * probe_batch_size * P`` numbers
            instead (the quadrature stays accurate without reorthogonalisation; see
            :func:`~landscape.curvature.lanczos.lanczos_tridiagonal`).

    Returns:
        ``(alphas (n, m), betas (n, m-1), num_matvecs)``.
    """
    op = as_operator(op)
    P = op.shape[0]
    if P == 0:
        raise ValueError("the operator has dimension 0; SLQ needs P >= 1")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    wdtype = op.dtype if dtype is None else dtype
    device = op.device if basis_device is None else torch.device(basis_device)
    alphas, betas, mv = [], [], 0
    for g, V in enumerate(_probe_groups(P, num_probes, seed, probe, probes, wdtype, device, probe_batch_size)):
        tri = lanczos_tridiagonal(op, V, num_steps, dtype=wdtype, seed=seed + 7919 * (g + 1), basis_device=device,
                                  reorthogonalize=reorthogonalize)
        alphas.append(tri.alpha)
        betas.append(tri.beta)
        mv += tri.num_matvecs
    return torch.cat(alphas), torch.cat(betas), mv


def _default_sigma(nodes: Tensor) -> float:
    lo, hi = float(nodes.min()), float(nodes.max())
    spread = hi - lo
    if spread > 0:
        return 0.01 * spread
    scale = max(abs(lo), abs(hi))
    return 0.01 * scale if scale > 0 else 1.0


def density_from_tridiagonals(
    alphas: Tensor,
    betas: Tensor,
    dim: int,
    *,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_grid: int = 1000,
    num_matvecs: int = 0,
) -> SpectralDensity:
    """Build a :class:`SpectralDensity` from (saved) Lanczos tridiagonals.

    The density is ``rho(t) = (1/n) sum_l sum_j tau_lj N(t; theta_lj, sigma^2)``; the
    moments are ``mean_l sum_j tau_lj theta_lj^i`` for i = 1..4 with standard errors
    std_l / sqrt(n) (exact per probe for i < 2m, so 4 moments need m >= 3).

    Args:
        alphas: (n, m) or (m,) diagonals.
        betas: (n, m-1) or (m-1,) off-diagonals.
        dim: P, the operator's dimension.
        sigma: broadening standard deviation (eigenvalue units); default 1% of the
            spread of the Ritz nodes (1% of their magnitude, or 1, if they coincide).
        grid: (G,) evaluation points; default ``num_grid`` points spanning the nodes
            padded by 6 sigma on each side.
        num_grid: grid size when ``grid`` is None (>= 2).
        num_matvecs: products spent on the tridiagonals, recorded in the result.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    quad = quadrature_from_tridiagonals(alphas, betas)
    a, b = _as_batch(alphas, betas)
    nodes, weights = quad.nodes, quad.weights
    n = nodes.shape[0]
    if sigma is None:
        sigma = _default_sigma(nodes)
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number > 0 or None, got {sigma!r}")
    if grid is None:
        if isinstance(num_grid, bool) or not isinstance(num_grid, int) or num_grid < 2:
            raise ValueError(f"num_grid must be an int >= 2, got {num_grid!r}")
        lo, hi = float(nodes.min()) - 6 * sigma, float(nodes.max()) + 6 * sigma
        grid = torch.linspace(lo, hi, num_grid, dtype=torch.float64, device=nodes.device)
    else:
        grid = torch.as_tensor(grid).to(device=nodes.device, dtype=torch.float64).reshape(-1)
    flat_nodes = nodes.reshape(-1)
    flat_w = weights.reshape(-1) / n
    z = (grid.unsqueeze(1) - flat_nodes.unsqueeze(0)) / sigma
    density = (torch.exp(-0.5 * z * z) @ flat_w) / (sigma * math.sqrt(2 * math.pi))
    powers = torch.stack([(weights * nodes**j).sum(dim=1) for j in range(1, NUM_MOMENTS + 1)], dim=1)  # (n, 4)
    moments = powers.mean(dim=0)
    if n > 1:
        moments_stderr = powers.std(dim=0, correction=1) / math.sqrt(n)
    else:
        moments_stderr = torch.full((NUM_MOMENTS,), math.nan, dtype=torch.float64, device=nodes.device)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        alphas=a,
        betas=b,
        grid=grid,
        density=density,
        sigma=float(sigma),
        moments=moments,
        moments_stderr=moments_stderr,
        dim=dim,
        num_matvecs=num_matvecs,
    )


def spectral_density(
    op: SymmetricOperator | Tensor,
    num_probes: int = 8,
    num_steps: int = 100,
    seed: int = 0,
    *,
    probe: str = "rademacher",
    probes: Tensor | None = None,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_grid: int = 1000,
    dtype: torch.dtype | None = None,
    probe_batch_size: int | None = None,
    basis_device: torch.device | str | None = None,
    reorthogonalize: bool = True,
) -> SpectralDensity:
    """SLQ eigenvalue density of a symmetric operator (Ubaru et al. 2017; Ghorbani et al. 2019).

    Runs ``num_steps`` Lanczos steps (full reorthogonalisation) from each of
    ``num_probes`` random probes, then :func:`density_from_tridiagonals`. Costs exactly
    ``num_probes * min(num_steps, P)`` products.

    Args:
        op: symmetric (P, P) operator or dense tensor, P >= 1.
        num_probes: number of random probes.
        num_steps: Lanczos steps per probe; capped at P.
        seed: seed of the probes.
        probe: "rademacher", "gaussian" or "sphere".
        probes: explicit (P, n) probes instead of random ones.
        sigma: broadening (eigenvalue units); default 1% of the Ritz-node spread.
        grid: evaluation points; default ``num_grid`` points over the nodes +- 6 sigma.
        num_grid: grid size when ``grid`` is None.
        dtype: dtype of the Lanczos bases (default: the operator's).
        probe_batch_size: probes run side by side per group (default: all; see
            :func:`slq_tridiagonals`).
        basis_device: where the Lanczos bases live (default: the operator's device).
        reorthogonalize: False: the three-term recurrence without stored bases
            (:func:`slq_tridiagonals`).
    """
    op = as_operator(op)
    alphas, betas, mv = slq_tridiagonals(op, num_probes, num_steps, seed, probe=probe, probes=probes, dtype=dtype,
                                         probe_batch_size=probe_batch_size, basis_device=basis_device,
                                         reorthogonalize=reorthogonalize)
    return density_from_tridiagonals(alphas, betas, op.shape[0], sigma=sigma, grid=grid, num_grid=num_grid, num_matvecs=mv)


@dataclass(frozen=True)
class SpectralMass:
    """SLQ estimate of the fraction of eigenvalues below a threshold.

    Attributes:
        threshold: t (eigenvalue units); the estimate is of ``#{i: lambda_i < t} / P``.
        value: ``mean_l sum_j tau_lj [theta_lj < t]``, in [0, 1].
        stderr: std across probes / sqrt(probes); NaN for one probe.
        num_probes: number of probes.
    """

    threshold: float
    value: float
    stderr: float
    num_probes: int

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "value": self.value, "stderr": self.stderr, "num_probes": self.num_probes}


def mass_below(alphas: Tensor, betas: Tensor, threshold: float = 0.0) -> SpectralMass:
    """Fraction of the spectral measure below ``threshold`` from (saved) SLQ tridiagonals.

    The SLQ quadrature measure ``(1/n) sum_l sum_j tau_lj delta(theta_lj)`` estimates the
    normalised spectral measure (1/P) sum_i delta(lambda_i) (Ubaru, Chen & Saad 2017), so its
    mass below ``t`` estimates the eigenvalue fraction below ``t``: unbiased over probes for
    ``f = 1[lambda < t]`` only up to the Gauss rule's error for a step function, which vanishes
    once the Krylov space resolves the eigenvalues near ``t`` (exact with ``probes = I`` and
    ``num_steps = P``). Read from the Ritz nodes, not the broadened density, so no broadening
    mass leaks across ``t``; with ``t = -tau`` for tau a few broadening widths the estimate
    counts only eigenvalues clearly negative at the density's resolution.

    Args:
        alphas: (n, m) or (m,) diagonals.
        betas: (n, m-1) or (m-1,) off-diagonals.
        threshold: t (eigenvalue units), finite.
    """
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    quad = quadrature_from_tridiagonals(alphas, betas)
    per_probe = (quad.weights * (quad.nodes < threshold)).sum(dim=1)
    n = int(per_probe.shape[0])
    stderr = float(per_probe.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
    return SpectralMass(threshold=float(threshold), value=float(per_probe.mean()), stderr=stderr, num_probes=n)


def _check_eps_floor(eps: float, floor: float | None) -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if floor is None:
        if eps == 0:
            raise ValueError("eps = 0 needs an explicit floor > 0 for non-positive nodes")
        return float(eps)
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a finite number > 0 or None, got {floor!r}")
    return float(floor)


def logdet_from_tridiagonals(
    alphas: Tensor,
    betas: Tensor,
    dim: int,
    eps: float = 1e-3,
    *,
    floor: float | None = None,
    num_matvecs: int = 0,
) -> LogDetEstimate:
    """``log det(A + eps I)`` by SLQ from (saved) tridiagonals; see :func:`logdet` for the policy."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    floor_v = _check_eps_floor(eps, floor)
    quad = quadrature_from_tridiagonals(alphas, betas)
    shifted = quad.nodes + eps
    clamped = shifted < floor_v
    per_probe = (quad.weights * torch.log(shifted.clamp_min(floor_v))).sum(dim=1)
    mass = (quad.weights * clamped).sum(dim=1).mean()
    n, m = quad.nodes.shape
    value = dim * float(per_probe.mean())
    stderr = dim * float(per_probe.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
    return LogDetEstimate(
        value=value,
        stderr=stderr,
        eps=float(eps),
        floor=floor_v,
        clamped_mass=float(mass),
        num_probes=n,
        num_steps=m,
        num_matvecs=num_matvecs,
        dim=dim,
    )


def logdet(
    op: SymmetricOperator | Tensor,
    eps: float = 1e-3,
    seed: int = 0,
    *,
    num_probes: int = 8,
    num_steps: int = 100,
    floor: float | None = None,
    probe: str = "rademacher",
    probes: Tensor | None = None,
    dtype: torch.dtype | None = None,
    probe_batch_size: int | None = None,
    basis_device: torch.device | str | None = None,
    reorthogonalize: bool = True,
) -> LogDetEstimate:
    """``log det(A + eps I) = tr log(A + eps I)`` by stochastic Lanczos quadrature.

    ``value = P * mean_l sum_j tau_lj log(max(theta_lj + eps, floor))`` and ``stderr =
    P * std_l / sqrt(n)`` (Ubaru, Chen & Saad 2017).

    Clamping policy: the log is undefined where ``A + eps I`` is not positive, so every
    Ritz node with ``theta + eps < floor`` is replaced by ``floor``, and the quadrature
    mass so clamped is reported as ``clamped_mass`` (an estimate of the fraction of
    eigenvalues below ``floor - eps``). The default ``floor = eps`` counts negative
    curvature as zero curvature, ``log(max(theta, 0) + eps)``, which is continuous in
    ``theta``; pass a smaller ``floor`` to keep negative nodes above ``-eps`` unclamped.
    With ``eps = 0`` a ``floor`` is required. For P = 0 the value is 0 (empty product).

    Args:
        op: symmetric (P, P) operator or dense tensor.
        eps: shift >= 0 (eigenvalue units).
        seed: seed of the probes.
        num_probes: number of random probes.
        num_steps: Lanczos steps per probe; capped at P.
        floor: clamp level for nodes of ``A + eps I`` (default ``eps``).
        probe: "rademacher", "gaussian" or "sphere".
        probes: explicit (P, n) probes; with ``probes = I`` and ``num_steps = P`` the
            result is ``sum_i log(max(lambda_i + eps, floor))`` exactly.
        dtype: dtype of the Lanczos bases (default: the operator's).
        probe_batch_size: probes run side by side per group (default: all; see
            :func:`slq_tridiagonals`).
        basis_device: where the Lanczos bases live (default: the operator's device).
        reorthogonalize: False: the three-term recurrence without stored bases
            (:func:`slq_tridiagonals`).
    """
    op = as_operator(op)
    floor_v = _check_eps_floor(eps, floor)
    if op.shape[0] == 0:
        return LogDetEstimate(0.0, 0.0, float(eps), floor_v, 0.0, 0, 0, 0, 0)
    alphas, betas, mv = slq_tridiagonals(op, num_probes, num_steps, seed, probe=probe, probes=probes, dtype=dtype,
                                         probe_batch_size=probe_batch_size, basis_device=basis_device,
                                         reorthogonalize=reorthogonalize)
    return logdet_from_tridiagonals(alphas, betas, op.shape[0], eps, floor=floor_v, num_matvecs=mv)
