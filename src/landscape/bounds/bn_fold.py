"""Fold BatchNorm running statistics into the affine parameters: a data-free hypothesis class.

A PAC-Bayes prior must be fixed before the data, but an eval-mode BatchNorm layer reads
running statistics ``(mu, v)`` estimated from the training data. In eval mode the layer is
the per-channel affine map

    gamma (z - mu) / sqrt(v + e) + beta  =  gamma' (z - mu_0) / sqrt(v_0 + e) + beta',
    gamma' = gamma sqrt(v_0 + e) / sqrt(v + e),
    beta'  = beta + gamma (mu_0 - mu) / sqrt(v + e),

for any constants ``(mu_0, v_0)``; with the reset values ``(0, 1)`` the right-hand side is
the same network with its statistics fixed at their initial values, a class indexed by
``theta'`` alone (Ioffe & Szegedy 2015 describe the eval-mode affine form; folding it into
neighbouring parameters is standard in inference engines). The change of coordinates
``theta' = T theta`` is linear and data-dependent: T scales each ``gamma`` coordinate by
``s = sqrt(v_0 + e) / sqrt(v + e)`` and adds ``u gamma`` to the matching ``beta`` with
``u = (mu_0 - mu) / sqrt(v + e)``; it is the identity elsewhere. Per channel it is the
triangular block ``[[s, 0], [u, 1]]``, so ``det T = prod s``.

A posterior over ``theta`` (e.g. the eq (8) Gaussian built from the Hessian in the trained
coordinates) is pushed forward to ``N(T m, T S T^T)`` in the data-free class, and

    KL(N(T m, T S T^T) || N(m_0, lam I)) = 1/2 [ tr(T S T^T) / lam + |T m - m_0|^2 / lam
                                                 - P + P ln lam - ln det S - 2 ln det T ],
    tr(T S T^T) = tau |T|_F^2 + sum_i (a_i - tau) |T v_i|^2       (S = tau I + V diag(a - tau) V^T)

(:func:`kl_lowrank_folded`), O(P k). The prior mean ``m_0`` is the initial network, whose
statistics are already ``(0, 1)``. Networks drawn this way are evaluated with the folded
parameters and the reset statistics, so the classifier depends on ``theta'`` only.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.bounds.gaussians import GaussianKL, LowRankGaussian

__all__ = ["BatchNormFold", "batchnorm_fold", "kl_lowrank_folded"]

_F64 = torch.float64


@dataclasses.dataclass(frozen=True, eq=False)
class BatchNormFold:
    """The linear map ``theta' = T theta`` of the module docstring over a flat vector (P,).

    Attributes:
        scale: (P,) float64 diagonal of T (``s`` on folded ``gamma`` coordinates, else 1).
        src: (F,) long indices of the folded ``gamma`` coordinates.
        dst: (F,) long indices of the matching ``beta`` coordinates.
        shear: (F,) float64 ``u``: ``theta'[dst] += u * theta[src]``.
        buffers: Reset statistics to evaluate the folded network with
            (``<module>.running_mean`` -> 0, ``<module>.running_var`` -> 1).
        modules: Names of the folded BatchNorm modules.
    """

    scale: Tensor
    src: Tensor
    dst: Tensor
    shear: Tensor
    buffers: dict[str, Tensor]
    modules: tuple[str, ...]

    @property
    def is_identity(self) -> bool:
        """True when no BatchNorm layer was folded."""
        return not self.modules

    def apply(self, X: Tensor) -> Tensor:
        """``T X`` for X (P,) or (P, k), float64."""
        Xd = X.to(_F64)
        if Xd.shape[0] != self.scale.shape[0] or Xd.ndim not in (1, 2):
            raise ValueError(f"X must have shape ({self.scale.shape[0]},) or ({self.scale.shape[0]}, k), got {tuple(X.shape)}")
        col = self.scale if Xd.ndim == 1 else self.scale[:, None]
        Y = Xd * col
        if self.modules:
            u = self.shear if Xd.ndim == 1 else self.shear[:, None]
            Y = Y.index_add(0, self.dst, u * Xd[self.src])
        return Y

    def frobenius_sq(self) -> float:
        """``|T|_F^2 = sum scale^2 + sum shear^2``."""
        return float((self.scale**2).sum() + (self.shear**2).sum())

    def logdet(self) -> float:
        """``ln det T = sum ln scale`` (T is triangular per channel, scale > 0)."""
        return float(torch.log(self.scale).sum())


def batchnorm_fold(model: nn.Module, names: Sequence[str]) -> BatchNormFold:
    """The fold of every foldable BatchNorm layer of ``model`` over the flat ``names`` vector.

    A layer is folded when it is affine, tracks running statistics and both its ``weight``
    and ``bias`` are among ``names``; other layers are left alone (their statistics stay
    data-dependent and the caller must account for them).

    Args:
        model: The network at its trained statistics.
        names: Parameter names of the flat vector, in order (trainable, as in
            ``model.named_parameters()``).

    Returns:
        :class:`BatchNormFold` (the identity when there is nothing to fold).

    Raises:
        ValueError: If ``names`` repeats or names a missing parameter.
    """
    params = dict(model.named_parameters())
    if len(set(names)) != len(names):
        raise ValueError("names must not repeat a parameter")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"names holds parameters the model lacks: {unknown[:5]}")
    offsets: dict[str, int] = {}
    total = 0
    for n in names:
        offsets[n] = total
        total += params[n].numel()
    device = params[names[0]].device if names else torch.device("cpu")
    scale = torch.ones(total, dtype=_F64, device=device)
    src, dst, shear, modules = [], [], [], []
    buffers: dict[str, Tensor] = {}
    for mod_name, m in model.named_modules():
        if not isinstance(m, _BatchNorm) or not (m.affine and m.track_running_stats):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        w, b = f"{prefix}weight", f"{prefix}bias"
        if w not in offsets or b not in offsets or m.running_mean is None or m.running_var is None:
            continue
        mu = m.running_mean.detach().to(_F64)
        inv = torch.rsqrt(m.running_var.detach().to(_F64) + m.eps)
        s = math.sqrt(1.0 + m.eps) * inv
        gamma_idx = torch.arange(offsets[w], offsets[w] + m.weight.numel(), device=device)
        beta_idx = torch.arange(offsets[b], offsets[b] + m.bias.numel(), device=device)
        scale[gamma_idx] = s
        src.append(gamma_idx)
        dst.append(beta_idx)
        shear.append(-mu * inv)
        buffers[f"{prefix}running_mean"] = torch.zeros_like(m.running_mean)
        buffers[f"{prefix}running_var"] = torch.ones_like(m.running_var)
        modules.append(mod_name)
    empty_long = torch.zeros(0, dtype=torch.long, device=device)
    return BatchNormFold(
        scale=scale,
        src=torch.cat(src) if src else empty_long,
        dst=torch.cat(dst) if dst else empty_long,
        shear=torch.cat(shear) if shear else torch.zeros(0, dtype=_F64, device=device),
        buffers=buffers,
        modules=tuple(modules),
    )


def kl_lowrank_folded(posterior: LowRankGaussian, fold: BatchNormFold, mean_p: Tensor, var_p: float) -> GaussianKL:
    """``KL(T# posterior || N(mean_p, var_p I))`` for a :class:`BatchNormFold` T (module docstring).

    Args:
        posterior: ``N(m, S)`` in the trained coordinates.
        fold: The map T.
        mean_p: (P,) prior mean in the folded coordinates.
        var_p: Isotropic prior variance, > 0.

    Returns:
        :class:`~landscape.bounds.gaussians.GaussianKL` (``logdet_posterior`` is that of
        ``T S T^T``).

    Raises:
        ValueError: On shape mismatch or a non-positive ``var_p``.
    """
    if not (isinstance(var_p, numbers.Real) and math.isfinite(var_p) and var_p > 0):
        raise ValueError(f"var_p must be a finite float > 0, got {var_p!r}")
    var_p = float(var_p)
    P = posterior.dim
    if fold.scale.shape != (P,):
        raise ValueError(f"fold acts on {fold.scale.shape[0]} coordinates, the posterior has P={P}")
    if not isinstance(mean_p, Tensor) or mean_p.shape != (P,):
        raise ValueError(f"mean_p must have shape ({P},), got {tuple(getattr(mean_p, 'shape', ()))}")
    TV = fold.apply(posterior.basis)
    trace = posterior.tau * fold.frobenius_sq() + float(((posterior.eigvar - posterior.tau) * (TV**2).sum(0)).sum())
    diff = fold.apply(posterior.mean) - mean_p.to(device=posterior.mean.device, dtype=_F64)
    mahal = float((diff * diff).sum()) / var_p
    logdet_q = posterior.logdet() + 2.0 * fold.logdet()
    logdet_p = P * math.log(var_p)
    kl = 0.5 * (trace / var_p + mahal - P + logdet_p - logdet_q)
    return GaussianKL(kl=kl, trace=trace / var_p, mahalanobis=mahal, logdet_prior=logdet_p, logdet_posterior=logdet_q, dim=P)
