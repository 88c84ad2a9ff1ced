"""Gaussian posteriors over a network's flat parameters: families, prior choice, 0-1 draws.

The building blocks of Monte-Carlo PAC-Bayes bounds of any classifier (Dziugaite & Roy
2017, "Computing nonvacuous generalization bounds for deep (stochastic) neural networks
with many more parameters than training data"):

* :class:`FlatClassifier`: a network as a function of a flat parameter vector (P,) or a
  batch of them (B, P), evaluated in 0-1 loss through ``torch.func.functional_call``
  (the caller's model is never edited), per example or per (network, example) pair.
* :class:`GaussianFamily`: a zero-mean Gaussian ``N(0, S)`` given by ``tr S``, ``ln det S``
  and a batched sampler; :func:`isotropic_family` (``S = sigma^2 I``) and
  :func:`hessian_family` (eq (8): ``S = c (H + eps I)^-1`` from top-k Ritz pairs and the
  mean complement curvature, pushed through a BatchNorm fold T,
  :mod:`~landscape.bounds.bn_fold`).
* :func:`best_prior`: the prior variance of Dziugaite & Roy's countable grid
  ``lambda_j = c exp(-j / b)`` with weights ``6 / (pi^2 j^2)`` (prior j pays ``2 ln j +
  ln(pi^2 / 6)`` nats, :class:`~landscape.bounds.pacbayes.PriorVarianceGrid`) that gives the
  smallest PAC-Bayes-kl bound, searched over a window around the KL-optimal
  ``(tr S + |mu - m0|^2) / P``.
* :func:`paired_wrong`: N independent pairs (example drawn uniformly, network drawn from
  Q), each scored on its one example: i.i.d. Bernoulli indicators with mean exactly the
  Gibbs classifier's empirical risk (:func:`~landscape.bounds.mc.paired_draws_bound`).
  Families share the pairs' examples and standard normals (common random numbers).
* :func:`split_indices`: the seeded, data-free split of a sample into the part that trains
  a data-dependent prior and the part the bound is taken over (Parrado-Hernandez et al.
  2012; Dziugaite et al. 2021).
* :func:`fixed_tensors`: entries and bits of the floating tensors a network reads but the
  posterior does not move (charged by description length, ``bits ln 2`` nats).

Draws are made in the model's dtype with torch's normal generator and treated as exact
Gaussian draws, as in all Monte-Carlo PAC-Bayes work.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from landscape.bounds.bn_fold import BatchNormFold
from landscape.bounds.effective import ComplexitySummary
from landscape.bounds.gaussians import GaussianKL, hessian_posterior
from landscape.bounds.mc import SampleConvergenceResult
from landscape.bounds.pacbayes import (
    BoundResult,
    PriorVarianceGrid,
    grid_pac_bayes_bound,
)
from landscape.seeding import seeded_generator

__all__ = [
    "PRIOR_WINDOW",
    "FlatClassifier",
    "GaussianFamily",
    "PosteriorBound",
    "PriorChoice",
    "PriorSummary",
    "best_prior",
    "check_pair",
    "draw_errors",
    "family_kl",
    "fixed_tensors",
    "hessian_family",
    "isotropic_family",
    "paired_wrong",
    "pilot_error",
    "split_indices",
]

PRIOR_WINDOW = 20
"""Grid indices :func:`best_prior` searches on each side of the KL-optimal prior variance."""


# --------------------------------------------------------------------------------------
# Networks as functions of a flat parameter vector
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FlatClassifier:
    """``model`` with its trainable parameters replaced by a flat vector (P,) or a batch (B, P).

    Attributes:
        model: The classifier (logits (N, classes)); used through ``functional_call`` only.
        names: Names of the trainable parameters, in flat-vector order.
        shapes: Their shapes.
        dtype: dtype the flat vectors are cast to.
        batch_size: Examples per forward pass of :meth:`wrong`.
        buffers: Tensors used with every flat vector (e.g. folded BatchNorm statistics).
    """

    model: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtype: torch.dtype
    batch_size: int
    buffers: dict[str, Tensor]

    @property
    def dim(self) -> int:
        """P, the number of trainable parameters."""
        return sum(math.prod(s) for s in self.shapes)

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        """Named tensors from (P,) or (B, P) (then each gets a leading B)."""
        lead = flat.shape[:-1]
        chunks = flat.to(self.dtype).split([math.prod(s) for s in self.shapes], dim=-1)
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    @torch.no_grad()
    def wrong(self, flat: Tensor | None, x: Tensor, y: Tensor) -> Tensor:
        """(N,) bool: is the network wrong on each example? ``flat=None``: the model as it is."""
        params = {} if flat is None else {**self.buffers, **self.params(flat)}
        out = [
            functional_call(self.model, params, (x[i : i + self.batch_size],)).argmax(-1) != y[i : i + self.batch_size]
            for i in range(0, y.shape[0], self.batch_size)
        ]
        return torch.cat(out)

    @torch.no_grad()
    def wrong_paired(self, flats: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """(B,) bool: network ``flats[r]`` (B, P) on example ``(x[r], y[r])`` only."""

        def one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
            return functional_call(self.model, {**self.buffers, **p}, (xi.unsqueeze(0),)).squeeze(0)

        logits = vmap(one)(self.params(flats), x)
        return logits.argmax(-1) != y


def split_indices(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded split of ``range(n)`` into (prior, bound) index sets, independent of the data.

    Args:
        n: Number of examples.
        fraction: Share for the prior, in [0, 1); ``floor(fraction n)`` examples.
        seed: The run's seed.

    Returns:
        ``(prior_idx, bound_idx)``, sorted (long tensors); ``bound_idx`` is never empty.

    Raises:
        ValueError: If the split leaves no bound example or fraction is out of range.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    k = math.floor(fraction * n)
    if k >= n:
        raise ValueError(f"prior_fraction={fraction} leaves no bound example out of n={n}")
    perm = torch.randperm(n, generator=seeded_generator(seed, 0))
    return perm[:k].sort().values, perm[k:].sort().values


def check_pair(data: object, name: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(inputs (N, ...), labels (N,))`` with N >= 1, moved to ``device``.

    Raises:
        ValueError: ``data`` is not such a pair; the message names ``name`` and the shapes.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        raise ValueError(f"{name} must be a pair (inputs, labels) of tensors, got {type(data).__name__}")
    x, y = data
    if y.ndim != 1 or y.shape[0] < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} must hold N >= 1 inputs and N labels (labels of shape (N,)), "
            f"got inputs {tuple(x.shape)} and labels {tuple(y.shape)}"
        )
    return x.to(device), y.to(device)


def fixed_tensors(model: nn.Module, exclude: Sequence[str] = ()) -> tuple[int, int]:
    """(entries, bits) of the floating tensors the networks read but the posterior does not move.

    Non-trainable parameters and floating buffers, except the buffers named in ``exclude``
    (e.g. folded BatchNorm statistics, replaced by data-free constants).
    """
    fixed: list[Tensor] = [p for _, p in model.named_parameters() if not p.requires_grad]
    fixed += [b for n, b in model.named_buffers() if b.is_floating_point() and n not in exclude]
    entries = sum(t.numel() for t in fixed)
    bits = sum(t.numel() * torch.finfo(t.dtype).bits for t in fixed)
    return int(entries), int(bits)


# --------------------------------------------------------------------------------------
# Posterior families: covariance statistics and batched noise
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GaussianFamily:
    """A zero-mean Gaussian noise family member: its KL statistics and a batched sampler.

    Attributes:
        scale: The member's parameters (``{"sigma"}`` or ``{"c", "eps"}``).
        cov_trace: ``tr(S)`` in the prior's coordinates.
        logdet: ``ln det S`` in the prior's coordinates.
        noise: Maps standard normals z (B, P) to draws (B, P) of ``N(0, S)``.
    """

    scale: dict[str, float]
    cov_trace: float
    logdet: float
    noise: Callable[[Tensor], Tensor]


def isotropic_family(P: int, sigmas: Sequence[float]) -> list[GaussianFamily]:
    """``N(0, sigma^2 I_P)`` for each sigma."""
    return [
        GaussianFamily({"sigma": float(s)}, P * float(s) ** 2, 2.0 * P * math.log(float(s)), functools.partial(torch.mul, other=float(s)))
        for s in sigmas
    ]


def hessian_family(
    theta_star: Tensor,
    eigvals: Tensor,
    eigvecs: Tensor,
    lambda_rest: float,
    cs: Sequence[float],
    epss: Sequence[float],
    fold: BatchNormFold,
    dtype: torch.dtype,
) -> list[GaussianFamily]:
    """eq (8) covariances ``c (H + eps I)^-1`` (trained coordinates) pushed through the fold T.

    Args:
        theta_star: (P,) the trained parameters (float64).
        eigvals: (k,) top Hessian eigenvalues; ``eigvecs`` (P, k) their vectors.
        lambda_rest: Curvature assigned to the complement of their span.
        cs: Scales c; ``epss``: dampings eps (eps-major order in the result, c ascending
            as given).
        fold: The BatchNorm fold T (identity without BatchNorm).
        dtype: dtype of the draws (the model's).
    """
    out: list[GaussianFamily] = []
    P = theta_star.shape[0]
    frob, logdet_T = fold.frobenius_sq(), fold.logdet()
    for eps in epss:
        unit = hessian_posterior(theta_star, eigvals, eigvecs, c=1.0, eps=float(eps), lambda_rest=lambda_rest)
        col_sq = (fold.apply(unit.basis) ** 2).sum(0)  # |T v_i|^2
        trace1 = unit.tau * frob + float(((unit.eigvar - unit.tau) * col_sq).sum())
        logdet1 = unit.logdet() + 2.0 * logdet_T
        V = unit.basis.to(dtype)
        st = math.sqrt(unit.tau)
        coef = (unit.eigvar.sqrt() - st).to(dtype)

        def noise(z: Tensor, rc: float, V: Tensor = V, st: float = st, coef: Tensor = coef) -> Tensor:
            # sqrt(c) M z with M M^T = S_1 (symmetric factor), in two passes over (B, P).
            x = (z @ V).mul_(coef * rc)
            x = torch.addmm(z.mul(rc * st), x, V.T)
            return x if fold.is_identity else fold.apply(x.T).T.to(dtype)

        out.extend(
            GaussianFamily(
                {"c": float(c), "eps": float(eps)},
                float(c) * trace1,
                P * math.log(float(c)) + logdet1,
                functools.partial(noise, rc=math.sqrt(float(c))),
            )
            for c in cs
        )
    return out


def family_kl(cov: GaussianFamily, dist_sq: float, var_p: float, P: int) -> GaussianKL:
    """``KL(N(mu, S) || N(m0, var_p I))`` from ``tr S``, ``ln det S`` and ``|mu - m0|^2``."""
    trace, mahal, logdet_p = cov.cov_trace / var_p, dist_sq / var_p, P * math.log(var_p)
    # >= 0 mathematically; the clamp only removes rounding of the O(P) cancelling terms.
    kl = max(0.0, 0.5 * (trace + mahal - P + logdet_p - cov.logdet))
    return GaussianKL(kl=kl, trace=trace, mahalanobis=mahal, logdet_prior=logdet_p, logdet_posterior=cov.logdet, dim=P)


@dataclass(frozen=True)
class PriorChoice:
    """The prior variance :func:`best_prior` chose: grid index j, ``lambda_j``, KL and bound."""

    index: int
    variance: float
    kl: GaussianKL
    result: BoundResult


def best_prior(
    cov: GaussianFamily, dist_sq: float, emp_upper: float, grid: PriorVarianceGrid, P: int, fixed_nats: float, n: int, delta: float
) -> PriorChoice:
    """Smallest PAC-Bayes-kl bound over the grid window, every prior paying its grid cost.

    Args:
        cov: The posterior's covariance; ``dist_sq``: ``|mu - m0|^2``.
        emp_upper: Upper bound on the posterior's empirical risk.
        grid: The countable prior-variance grid.
        P: Dimension; ``fixed_nats``: description length added to every KL.
        n: Examples the bound is over; ``delta``: its failure probability.
    """
    best = grid.nearest_index((cov.cov_trace + dist_sq) / P)
    # Any subset of the countable grid is valid; the optimum sits within a few indices of
    # the KL-optimal variance (KL grows ~ P/4 (ln lambda/lambda*)^2, the grid cost ~ 2 ln j).
    width = min(max(1, math.ceil(grid.b)), PRIOR_WINDOW)
    js = np.arange(max(1, best - width), best + width + 1)
    variances = np.asarray(grid.variance(js), dtype=np.float64)
    kls = [family_kl(cov, dist_sq, float(v), P) for v in variances]
    table = grid_pac_bayes_bound(
        np.full((js.size, 1), emp_upper),
        np.array([[k.kl + fixed_nats] for k in kls]),
        n,
        delta,
        union_costs=np.asarray(grid.union_cost(js), dtype=np.float64),
        countable=True,
    )
    r = table.prior_index
    return PriorChoice(int(js[r]), float(variances[r]), kls[r], table.best)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosteriorBound:
    """Monte-Carlo PAC-Bayes-kl bound of one Gaussian posterior family at its chosen scale.

    Attributes:
        family: ``"isotropic"`` or ``"hessian"``.
        scale: The chosen posterior: ``{"t": t, "sigma": s}`` or ``{"t": t, "c": c, "eps": eps}``.
        bound: Upper bound on the posterior's true 0-1 risk (probability >= 1 - delta_total).
        delta_total: ``delta + mc_delta``.
        prior_index: j of the chosen prior variance on the countable grid.
        prior_var: ``lambda_j``.
        kl: ``KL(Q || P_j)`` of the Gaussians over trainable parameters, with its terms.
        fixed_nats: Description length of the fixed data-dependent tensors, added to
            ``kl.kl`` in the bound.
        pac_bayes: The PAC-Bayes part (``kl`` there includes ``fixed_nats``; its
            ``union_cost`` is the prior-grid cost).
        sample: The Monte-Carlo part (paired draws on the bound examples).
        test_error: Mean test error of ``test_draws`` networks drawn from the posterior.
        test_error_stderr: Its standard error over the draws.
        dist_sq: ``|mu - prior mean|^2``.
        candidates: Per candidate: its pilot error, plug-in score (not a bound) and KL.
        complexity: eq (8) only: the exact KL split into mismatch / curvature / distance
            terms with the effective-rank, log-det and trace forms (``None`` with
            BatchNorm folded: the split describes unfolded coordinates only).
        bounds_by_form: eq (8) only, without folded BatchNorm: the bound with the
            curvature term replaced by each form (each an upper bound on the exact term,
            so each a valid bound); ``None`` otherwise.
    """

    family: str
    scale: Mapping[str, float]
    bound: float
    delta_total: float
    prior_index: int
    prior_var: float
    kl: GaussianKL
    fixed_nats: float
    pac_bayes: BoundResult
    sample: SampleConvergenceResult
    test_error: float
    test_error_stderr: float
    dist_sq: float
    candidates: tuple[Mapping[str, float], ...]
    complexity: ComplexitySummary | None = None
    bounds_by_form: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python fields for JSON."""
        return {
            "family": self.family,
            "scale": dict(self.scale),
            "bound": self.bound,
            "delta_total": self.delta_total,
            "prior_index": self.prior_index,
            "prior_var": self.prior_var,
            "kl": self.kl.to_dict(),
            "fixed_nats": self.fixed_nats,
            "pac_bayes": self.pac_bayes.to_dict(),
            "sample": self.sample.to_dict(),
            "test_error": self.test_error,
            "test_error_stderr": self.test_error_stderr,
            "dist_sq": self.dist_sq,
            "candidates": [dict(c) for c in self.candidates],
            "complexity": None if self.complexity is None else self.complexity.to_dict(),
            "bounds_by_form": None if self.bounds_by_form is None else dict(self.bounds_by_form),
        }


@dataclass(frozen=True)
class PriorSummary:
    """Where the prior mean came from.

    Attributes:
        kind: ``"init"`` (the initialisation) or ``"trained"`` (trained on ``S_prior``).
        n_prior: Examples it was trained on (0 for ``"init"``).
        status: Training status (``"completed"``, ``"diverged"``; ``"init"``).
        epochs: Epochs it was trained for.
        bound_error: 0-1 error of the prior network on the bound examples.
        test_error: Its test error.
        dist_sq_init: ``|T theta* - theta_0|^2``: the distance an init-centred prior pays.
        dist_sq_prior: ``|T theta* - T_p w_p|^2``: the distance to the prior mean.
    """

    kind: str
    n_prior: int
    status: str
    epochs: int
    bound_error: float
    test_error: float
    dist_sq_init: float
    dist_sq_prior: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------
# 0-1 errors of drawn networks
# --------------------------------------------------------------------------------------


def pilot_error(net: FlatClassifier, mean: Tensor, cov: GaussianFamily, z: Tensor, x: Tensor, y: Tensor) -> float:
    """Mean error of the networks ``mean + noise(z_r)`` (z: (R, P)) on ``(x, y)``."""
    flats = mean + cov.noise(z)
    return float(torch.stack([net.wrong(f, x, y).float().mean() for f in flats]).mean())


def paired_wrong(
    net: FlatClassifier, mean: Tensor, covs: Sequence[GaussianFamily], x: Tensor, y: Tensor, num: int, generator: torch.Generator
) -> list[Tensor]:
    """For each family: (num,) indicators of ``num`` independent (example, network) pairs.

    Examples are drawn uniformly with replacement; every family sees the same examples
    and standard normals (common random numbers).
    """
    P, B = mean.shape[0], net.batch_size
    idx = torch.randint(0, y.shape[0], (num,), generator=generator, device=y.device)
    out: list[list[Tensor]] = [[] for _ in covs]
    for start in range(0, num, B):
        sel = idx[start : start + B]
        z = torch.randn((sel.shape[0], P), generator=generator, dtype=mean.dtype, device=mean.device)
        for store, cov in zip(out, covs, strict=True):
            store.append(net.wrong_paired(cov.noise(z).add_(mean), x[sel], y[sel]))
    return [torch.cat(o).to(torch.float64) for o in out]


def draw_errors(
    net: FlatClassifier, mean: Tensor, covs: Sequence[GaussianFamily], x: Tensor, y: Tensor, num: int, generator: torch.Generator
) -> list[np.ndarray]:
    """For each family: (num,) error rates on ``(x, y)`` of ``num`` whole-network draws."""
    P = mean.shape[0]
    errs: list[list[float]] = [[] for _ in covs]
    for _ in range(num):
        z = torch.randn((1, P), generator=generator, dtype=mean.dtype, device=mean.device)
        for store, cov in zip(errs, covs, strict=True):
            store.append(float(net.wrong((mean + cov.noise(z))[0], x, y).float().mean()))
    return [np.asarray(e) for e in errs]

