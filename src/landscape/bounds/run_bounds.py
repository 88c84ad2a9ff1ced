"""All generalization bounds of one trained network: parameter count vs. isotropic vs. eq (8).

:func:`bounds_for_run` is the one call of the ``bounds`` stage (hypothesis H4 of the first
plan: PAC-Bayes bounds whose posterior covariance follows the Hessian beat naive
parameter-count bounds). For a network trained from the initialisation ``theta_0`` to
``theta*`` on n examples it reports three upper bounds on a true 0-1 risk:

1. **occam**: the Occam / description-length bound of the deterministic float32 network
   (Langford 2005, Thm 4.1; :func:`~landscape.bounds.naive.occam_bound`), complexity
   ``32 ln 2`` nats per stored float (every parameter and floating buffer, BatchNorm
   statistics included): the raw parameter count.
2. **isotropic**: the PAC-Bayes-kl bound (Seeger 2002; Maurer 2004;
   :mod:`~landscape.bounds.pacbayes`) of the Gibbs classifier ``Q = N(theta*, sigma^2 I)``
   against the prior ``P_j = N(theta_0, lambda_j I)``.
3. **hessian**: the same bound for the eq (8) posterior ``Q = N(theta*, c (H + eps I)^-1)``
   built from the top-k Ritz pairs of H cached by the ``measure`` stage and the mean
   complement curvature ``(tr H - sum_i lambda_i) / (P - k)`` on the rest
   (:func:`~landscape.bounds.gaussians.hessian_posterior`, Woodbury / determinant lemma, KL
   in closed form), with the exact KL split into its effective-rank, log-det and trace
   forms (:func:`~landscape.bounds.effective.complexity_summary`) beside it.

The Gibbs classifiers' empirical risk ``emp(Q)`` is estimated from m networks drawn from Q,
each evaluated on all n training examples, and replaced by its Langford-Caruana (2001)
upper confidence value ``kl^-1(e_hat, ln(2/delta') / m)`` (:mod:`~landscape.bounds.mc`);
the final number is ``kl^-1(that, (KL + ln(2 sqrt n / delta) + union cost) / n)``.

What the union bounds pay (so that every reported number is a valid bound):

* **Prior variance**: Dziugaite & Roy's (2017) countable grid ``lambda_j = prior_c
  exp(-j / prior_b)``, j >= 1, with weights ``6 / (pi^2 j^2)``
  (:class:`~landscape.bounds.pacbayes.PriorVarianceGrid`). The bound reported for prior j
  pays ``2 ln j + ln(pi^2 / 6)`` extra nats in the PAC-Bayes numerator; the best j is taken
  over a window of ``2 prior_b + 1`` indices around the KL-optimal variance
  ``(tr S_q + |theta* - theta_0|^2) / P``, and any subset of a countable grid is valid.
* **Posterior scale** (sigma, or (c, eps)): free on the PAC-Bayes side, which holds for
  every posterior at once. On the Monte-Carlo side, with ``pilot_samples > 0`` the scale
  is chosen from ``pilot_samples`` draws per candidate on the first ``pilot_examples``
  training examples (a plug-in estimate, never reported as a bound) and the reported
  estimate uses m *fresh* draws from the chosen posterior, so it costs nothing either.
  With ``pilot_samples = 0`` every candidate gets m full draws and delta' is split over
  the C candidates: ``ln C`` more nats in the sample-convergence budget.
* **Data-dependent fixed tensors.** The networks are evaluated in eval mode (the shared BN
  policy), and a BatchNorm layer then reads running statistics estimated from the training
  data, which a prior may not depend on. Every affine BatchNorm layer whose ``weight`` and
  ``bias`` are trainable is *folded* (:mod:`~landscape.bounds.bn_fold`): its statistics are
  absorbed into ``(gamma, beta)`` by a linear map T, the hypothesis class becomes the same
  network with its statistics reset to the data-free ``(0, 1)``, and both posteriors live
  in those coordinates (the isotropic one directly, eq (8) as the push-forward ``T# Q`` of
  the posterior built where H was measured, its KL in closed form). This costs nothing
  but changes the geometry: ``|T theta* - theta_0|`` can be much larger than
  ``|theta* - theta_0|`` (reported as ``dist_sq``). Any other floating buffer or
  non-trainable parameter is charged by description length: the prior is the Gaussian
  times the uniform distribution over the tensors' bit strings, the posterior a point mass
  on the stored ones, so ``bits ln 2`` nats per entry (32 for float32) are added to every
  KL (``fixed_nats``). Integer buffers (BatchNorm's ``num_batches_tracked``) are not read
  in eval mode and cost nothing.

Confidence: each PAC-Bayes bound holds with probability >= ``1 - delta - delta'`` (the
PAC-Bayes event and its own Monte-Carlo event); both hold together with probability >=
``1 - delta - 2 delta'`` (one PAC-Bayes event serves all posteriors). The Occam bound is
computed at ``delta + delta'`` so that all three are at the same confidence. Sampled
networks are rounded to the model's dtype before evaluation; the bound then covers the
rounded classifier (the KL of the rounded distributions is at most the Gaussian one by the
data-processing inequality, and the rounded prior is still fixed before the data).

Sanity checks: every bound must be at least the corresponding test error (the Monte-Carlo
test error of the posterior's m draws, the deterministic network's test error for Occam);
a violation raises ``RuntimeError`` naming the numbers. The ordering of the three bounds
is reported, never assumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.bounds.bn_fold import BatchNormFold, batchnorm_fold, kl_lowrank_folded
from landscape.bounds.effective import ComplexitySummary, complexity_summary
from landscape.bounds.gaussians import (
    GaussianKL,
    LowRankGaussian,
    complement_curvature,
    hessian_posterior,
    kl_isotropic,
    kl_lowrank,
    sample_diagonal,
    sample_lowrank,
)
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.mc import SampleConvergenceResult, sample_convergence_bound
from landscape.bounds.naive import occam_bound
from landscape.bounds.pacbayes import (
    BoundResult,
    PriorVarianceGrid,
    grid_pac_bayes_bound,
    pac_bayes_kl_bound,
)
from landscape.config import ConfigError

__all__ = ["BoundsConfig", "PosteriorBound", "RunBounds", "bounds_for_run"]

_F64 = torch.float64
_FORMS = ("exact", "logdet", "effective_rank", "trace")


def _rule(allowed: str, check: Callable[[Any], bool]) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _grid_ok(values: Any) -> bool:
    return (
        isinstance(values, (list, tuple))
        and len(values) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    )


_GRID = "a non-empty list of finite floats > 0"
# Grid fields are annotated ``tuple[Real, ...]`` (stored as tuples of floats): parse_config
# would try float() on a whole list annotated ``tuple[float, ...]``.


@dataclass(frozen=True)
class BoundsConfig:
    """Settings of the ``bounds`` stage (build with ``landscape.config.parse_config``).

    Attributes:
        delta: Failure probability of the PAC-Bayes side, in (0, 1).
        mc_delta: Failure probability delta' of the Monte-Carlo side, in (0, 1);
            ``delta + mc_delta < 1``.
        mc_samples: m, networks drawn from the chosen posterior, each evaluated on all n
            training examples (and on the test split, for the sanity check).
        pilot_samples: Draws per candidate posterior used to choose its scale (0: no
            pilot; every candidate gets ``mc_samples`` draws and delta' is split over them).
        pilot_examples: Training examples (the first ones) the pilot draws are scored on.
        prior_c: Largest prior variance of the countable grid ``prior_c exp(-j / prior_b)``.
        prior_b: Grid points per e-fold of prior variance.
        sigmas: Candidate posterior standard deviations of the isotropic family.
        posterior_c: Candidate scales c of the eq (8) family.
        eps: Candidate dampings eps of the eq (8) family (units of Hessian eigenvalues).
        top_k: Ritz pairs used (the leading ones); ``None`` uses all that were cached.
        eval_batch_size: Examples per forward pass.
        bn_mode: BatchNorm policy; only ``"eval"`` (stored running statistics) is valid
            for these bounds (batch statistics would make a prediction depend on the
            other examples of its batch).
    """

    delta: float = field(default=0.025, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    mc_delta: float = field(default=0.01, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    mc_samples: int = field(default=200, metadata=_rule("an int >= 1", lambda x: x >= 1))
    pilot_samples: int = field(default=4, metadata=_rule("an int >= 0", lambda x: x >= 0))
    pilot_examples: int = field(default=1000, metadata=_rule("an int >= 1", lambda x: x >= 1))
    prior_c: float = field(default=1.0, metadata=_rule("a float > 0", lambda x: x > 0))
    prior_b: float = field(default=100.0, metadata=_rule("a float > 0", lambda x: x > 0))
    sigmas: tuple[Real, ...] = field(
        default=(2e-3, 5e-3, 1e-2, 2e-2, 3e-2, 5e-2, 7e-2, 0.1, 0.15, 0.2, 0.3), metadata=_rule(_GRID, _grid_ok)
    )
    posterior_c: tuple[Real, ...] = field(
        default=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), metadata=_rule(_GRID, _grid_ok)
    )
    eps: tuple[Real, ...] = field(default=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0), metadata=_rule(_GRID, _grid_ok))
    top_k: int | None = field(default=None, metadata=_rule("null or an int >= 1", lambda x: x is None or x >= 1))
    eval_batch_size: int = field(default=2000, metadata=_rule("an int >= 1", lambda x: x >= 1))
    bn_mode: str = field(default="eval", metadata=_rule("'eval'", lambda x: x == "eval"))

    def __post_init__(self) -> None:
        # Direct construction is validated too (parse_config checks the same rules first).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("sigmas", "posterior_c", "eps") and isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            check = f.metadata.get("check")
            if check is not None and not check(value):
                raise ConfigError(f"{f.name}={value!r} is not allowed; allowed: {f.metadata['allowed']}")
        for name in ("mc_samples", "pilot_samples", "pilot_examples", "eval_batch_size", "top_k"):
            value = getattr(self, name)
            if (not isinstance(value, int) or isinstance(value, bool)) and not (name == "top_k" and value is None):
                raise ConfigError(f"{name}={value!r} must be an int")
        if self.delta + self.mc_delta >= 1.0:
            raise ConfigError(f"delta + mc_delta must be < 1, got {self.delta} + {self.mc_delta}")
        object.__setattr__(self, "sigmas", tuple(float(v) for v in self.sigmas))
        object.__setattr__(self, "posterior_c", tuple(float(v) for v in self.posterior_c))
        object.__setattr__(self, "eps", tuple(float(v) for v in self.eps))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PosteriorBound:
    """Monte-Carlo PAC-Bayes-kl bound of one Gaussian posterior family at its chosen scale.

    Attributes:
        family: ``"isotropic"`` or ``"hessian"``.
        scale: The chosen scale: ``{"sigma": s}`` or ``{"c": c, "eps": eps}``.
        bound: Upper bound on the posterior's true 0-1 risk (probability >= 1 - delta_total).
        delta_total: ``delta + mc_delta``.
        prior_index: j of the chosen prior variance on the countable grid.
        prior_var: ``lambda_j``.
        kl: ``KL(Q || P_j)`` of the Gaussians over trainable parameters, with its terms.
        fixed_nats: Description length of the fixed data-dependent tensors, added to
            ``kl.kl`` in the bound.
        pac_bayes: The PAC-Bayes part (``kl`` there includes ``fixed_nats``; its
            ``union_cost`` is the prior-grid cost).
        sample: The Monte-Carlo part (training errors of the m draws).
        test_error: Mean test error of the same m draws (MC estimate of the posterior's risk).
        test_error_stderr: Its standard error.
        selection: ``"pilot"`` or ``"union"`` (see the module docstring).
        candidates: Per candidate scale: its pilot (or full) mean training error, the bound
            that estimate gives (a plug-in score, not a bound, in pilot mode) and the KL.
        complexity: eq (8) only: the exact KL split into mismatch / curvature / distance
            terms with the effective-rank, log-det and trace forms. With BatchNorm folded
            it splits the KL in the trained coordinates (against ``N(theta_0, prior_var I)``
            there), not the KL of the bound.
        bounds_by_form: eq (8) only, and only without folded BatchNorm: the bound with the
            curvature term replaced by each form (each is an upper bound on the exact
            term, so each is a valid bound); ``None`` otherwise.
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
    selection: str
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
            "selection": self.selection,
            "candidates": [dict(c) for c in self.candidates],
            "complexity": None if self.complexity is None else self.complexity.to_dict(),
            "bounds_by_form": None if self.bounds_by_form is None else dict(self.bounds_by_form),
        }


@dataclass(frozen=True)
class RunBounds:
    """The three bounds of one trained network, their inputs and their ordering.

    Attributes:
        n_train: n, training examples the bounds are over.
        n_test: Test examples of the sanity check.
        num_params: P, trainable parameters (dimension of the Gaussians).
        num_fixed: Entries of the floating tensors charged by description length (buffers
            other than folded BN statistics, non-trainable parameters; 0 for our models).
        fixed_nats: Their description length, nats (see the module docstring).
        dist_sq: ``|T theta* - theta_0|^2`` (T the BatchNorm fold; the identity without BN).
        top_k: Ritz pairs used by the eq (8) posterior.
        ritz_values: (k,) those eigenvalues.
        lambda_rest: Curvature assigned to the complement of their span.
        trace: ``tr(H)`` estimate it came from.
        train_error: 0-1 training error of the deterministic network (eval mode).
        test_error: Its test error.
        occam: Parameter-count bound of the deterministic network (confidence
            ``1 - delta - mc_delta``).
        isotropic: :class:`PosteriorBound` of ``N(T theta*, sigma^2 I)``.
        hessian: :class:`PosteriorBound` of ``T# N(theta*, c (H + eps I)^-1)``.
        ordering: Family names sorted by bound, smallest first.
        hessian_below_isotropic: ``hessian.bound < isotropic.bound``.
        isotropic_below_occam: ``isotropic.bound < occam.bound``.
        hessian_below_occam: ``hessian.bound < occam.bound``.
        folded_batchnorm: BatchNorm modules whose statistics were folded into their affine
            parameters (:mod:`~landscape.bounds.bn_fold`); empty for networks without BN.
        seed: Seed of every Monte-Carlo draw.
        config: The settings used.
    """

    n_train: int
    n_test: int
    num_params: int
    num_fixed: int
    fixed_nats: float
    dist_sq: float
    top_k: int
    ritz_values: tuple[float, ...]
    lambda_rest: float
    trace: float
    train_error: float
    test_error: float
    occam: BoundResult
    isotropic: PosteriorBound
    hessian: PosteriorBound
    ordering: tuple[str, ...]
    hessian_below_isotropic: bool
    isotropic_below_occam: bool
    hessian_below_occam: bool
    folded_batchnorm: tuple[str, ...]
    seed: int
    config: BoundsConfig

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python fields for JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["bounds"] = {"occam": self.occam.bound, "isotropic": self.isotropic.bound, "hessian": self.hessian.bound}
        return out


# --------------------------------------------------------------------------------------
# Networks as functions of a flat parameter vector
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode (BN running statistics, no dropout); flags restored after."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@dataclass(frozen=True, eq=False)
class _FlatNet:
    """``model`` with its trainable parameters replaced by a flat vector (P,)."""

    model: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtype: torch.dtype
    batch_size: int
    buffers: dict[str, Tensor]  # used with every flat vector (the folded BN statistics)

    @property
    def dim(self) -> int:
        """P, the number of trainable parameters."""
        return sum(math.prod(s) for s in self.shapes)

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        chunks = flat.to(self.dtype).split(sizes)
        return {n: c.reshape(s) for n, c, s in zip(self.names, chunks, self.shapes)}

    @torch.no_grad()
    def errors(self, flat: Tensor | None, data: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Number of misclassified examples (0-d tensors) on each ``(x, y)`` of ``data``.

        ``flat=None`` evaluates the model as it is (own parameters and buffers).
        """
        params = {} if flat is None else {**self.buffers, **self.params(flat)}
        out = []
        for x, y in data:
            wrong = torch.zeros((), dtype=torch.long, device=y.device)
            for i in range(0, y.shape[0], self.batch_size):
                logits = functional_call(self.model, params, (x[i : i + self.batch_size],))
                wrong = wrong + (logits.argmax(dim=-1) != y[i : i + self.batch_size]).sum()
            out.append(wrong)
        return out


def _draw_errors(
    net: _FlatNet,
    sampler: Callable[[torch.Generator], Tensor],
    generator: torch.Generator,
    num_samples: int,
    data: Sequence[tuple[Tensor, Tensor]],
) -> list[np.ndarray]:
    """(m,) error rates of ``num_samples`` draws on each data set of ``data``."""
    counts: list[list[Tensor]] = [[] for _ in data]
    for _ in range(num_samples):
        for store, wrong in zip(counts, net.errors(sampler(generator), data)):
            store.append(wrong)
    return [
        torch.stack(c).to("cpu", _F64).numpy() / float(y.shape[0]) for c, (_, y) in zip(counts, data)
    ]


def _generator(device: torch.device, seed: int, stream: int) -> torch.Generator:
    """An independent generator for (seed, stream) (derived by NumPy's SeedSequence)."""
    state = int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


# --------------------------------------------------------------------------------------
# Candidate posteriors and the prior grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Candidate:
    scale: dict[str, float]
    sampler: Callable[[torch.Generator], Tensor]
    kl_of: Callable[[float], GaussianKL]
    cov_trace: float  # tr(S_q)
    posterior: LowRankGaussian | None = None


@dataclass(frozen=True)
class _PriorChoice:
    index: int
    variance: float
    cost: float
    kl: GaussianKL
    bound: float


def _prior_window(grid: PriorVarianceGrid, cov_trace: float, dist_sq: float, dim: int) -> np.ndarray:
    """Grid indices within ``prior_b`` of the KL-optimal variance ``(tr S_q + d^2) / P``."""
    best = grid.nearest_index((cov_trace + dist_sq) / dim)
    width = max(1, math.ceil(grid.b))
    return np.arange(max(1, best - width), best + width + 1)


def _best_prior(
    cand: _Candidate,
    emp_upper: float,
    grid: PriorVarianceGrid,
    dist_sq: float,
    dim: int,
    fixed_nats: float,
    n: int,
    delta: float,
) -> tuple[_PriorChoice, BoundResult]:
    """Smallest PAC-Bayes-kl bound over the prior window, every prior paying its grid cost."""
    js = _prior_window(grid, cand.cov_trace, dist_sq, dim)
    variances = np.asarray(grid.variance(js), dtype=np.float64)
    kls = [cand.kl_of(float(v)) for v in variances]
    table = grid_pac_bayes_bound(
        np.full((js.size, 1), emp_upper),
        np.array([[k.kl + fixed_nats] for k in kls]),
        n,
        delta,
        union_costs=np.asarray(grid.union_cost(js), dtype=np.float64),
        countable=True,
    )
    r = table.prior_index
    choice = _PriorChoice(int(js[r]), float(variances[r]), float(table.union_costs[r]), kls[r], table.best.bound)
    return choice, table.best


def _isotropic_candidates(theta_star: Tensor, theta_0: Tensor, sigmas: Sequence[float]) -> list[_Candidate]:
    """``N(theta*, sigma^2 I)`` in the coordinates of the prior (folded when BN is folded)."""
    P = theta_star.shape[0]
    out = []
    for s in sigmas:
        var = float(s) ** 2
        out.append(
            _Candidate(
                scale={"sigma": float(s)},
                sampler=lambda g, var=var: sample_diagonal(theta_star, var, g),
                kl_of=lambda lam, var=var: kl_isotropic(theta_star, var, theta_0, lam),
                cov_trace=P * var,
            )
        )
    return out


def _rescaled_kl(unit: GaussianKL, var_p: float) -> GaussianKL:
    """The KL against ``N(m_0, var_p I)`` from the one against ``N(m_0, I)`` (same posterior).

    ``tr`` and the Mahalanobis term scale as ``1 / var_p`` and ``ln det S_p = P ln var_p``;
    used where recomputing an O(P k) KL for every prior on the grid would dominate.
    """
    P = unit.dim
    trace, mahal, logdet_p = unit.trace / var_p, unit.mahalanobis / var_p, P * math.log(var_p)
    # >= 0 mathematically; the clamp only removes rounding of the O(P) cancelling terms.
    kl = max(0.0, 0.5 * (trace + mahal - P + logdet_p - unit.logdet_posterior))
    return GaussianKL(kl=kl, trace=trace, mahalanobis=mahal, logdet_prior=logdet_p, logdet_posterior=unit.logdet_posterior, dim=P)


def _hessian_candidates(
    theta_star: Tensor,
    theta_0: Tensor,
    eigvals: Tensor,
    eigvecs: Tensor,
    lambda_rest: float,
    cs: Sequence[float],
    epss: Sequence[float],
    fold: BatchNormFold,
) -> list[_Candidate]:
    """eq (8) in the trained coordinates (where H was measured), pushed through the BN fold."""
    out = []
    frob = fold.frobenius_sq()
    for eps in epss:
        unit = hessian_posterior(theta_star, eigvals, eigvecs, c=1.0, eps=float(eps), lambda_rest=lambda_rest)
        col_sq = (fold.apply(unit.basis) ** 2).sum(0)  # |T v_i|^2
        for c in cs:
            post = LowRankGaussian(unit.mean, unit.basis, unit.eigvar * float(c), unit.tau * float(c))
            if fold.is_identity:
                sampler = lambda g, post=post: sample_lowrank(post, g)  # noqa: E731
                kl_of = lambda lam, post=post: kl_lowrank(post, theta_0, lam)  # noqa: E731
            else:
                sampler = lambda g, post=post: fold.apply(sample_lowrank(post, g))  # noqa: E731
                kl_of = functools.partial(_rescaled_kl, kl_lowrank_folded(post, fold, theta_0, 1.0))
            out.append(
                _Candidate(
                    scale={"c": float(c), "eps": float(eps)},
                    sampler=sampler,
                    kl_of=kl_of,
                    cov_trace=post.tau * frob + float(((post.eigvar - post.tau) * col_sq).sum()),
                    posterior=post,
                )
            )
    return out


def _bound_family(
    family: str,
    cands: list[_Candidate],
    net: _FlatNet,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    grid: PriorVarianceGrid,
    dist_sq: float,
    fixed_nats: float,
    config: BoundsConfig,
    device: torch.device,
    seed: int,
    stream: int,
) -> tuple[PosteriorBound, _Candidate]:
    """Choose a scale, draw m networks, and bound the chosen posterior (module docstring)."""
    n = int(train[1].shape[0])
    P = net.dim
    m = config.mc_samples
    rows: list[dict[str, float]] = []
    if config.pilot_samples > 0:
        k = min(config.pilot_examples, n)
        pilot = (train[0][:k], train[1][:k])
        gen = _generator(device, seed, 2 * stream)
        scores = []
        for cand in cands:
            (err,) = _draw_errors(net, cand.sampler, gen, config.pilot_samples, [pilot])
            mean = float(err.mean())
            # Score: the bound the final m draws would give if their mean matched the pilot's.
            upper = float(kl_inv_upper(mean, math.log(2.0 / config.mc_delta) / m))
            choice, _ = _best_prior(cand, upper, grid, dist_sq, P, fixed_nats, n, config.delta)
            scores.append(choice.bound)
            rows.append({**cand.scale, "pilot_error": mean, "pilot_score": choice.bound, "kl": choice.kl.kl})
        best = int(np.argmin(scores))
        chosen = cands[best]
        train_err, test_err = _draw_errors(net, chosen.sampler, _generator(device, seed, 2 * stream + 1), m, [train, test])
        num_candidates, selection = 1, "pilot"
    else:
        gen = _generator(device, seed, 2 * stream + 1)
        draws = [_draw_errors(net, cand.sampler, gen, m, [train, test]) for cand in cands]
        bounds = []
        for cand, (tr_err, _) in zip(cands, draws):
            sample = sample_convergence_bound(tr_err, config.mc_delta, num_candidates=len(cands))
            choice, _ = _best_prior(cand, sample.upper, grid, dist_sq, P, fixed_nats, n, config.delta)
            bounds.append(choice.bound)
            rows.append({**cand.scale, "mean_error": sample.mean_error, "bound": choice.bound, "kl": choice.kl.kl})
        best = int(np.argmin(bounds))
        chosen = cands[best]
        train_err, test_err = draws[best]
        num_candidates, selection = len(cands), "union"

    sample = sample_convergence_bound(train_err, config.mc_delta, num_candidates=num_candidates)
    choice, pb = _best_prior(chosen, sample.upper, grid, dist_sq, P, fixed_nats, n, config.delta)
    test_mean = float(test_err.mean())
    test_se = float(test_err.std(ddof=1) / math.sqrt(m)) if m > 1 else math.nan
    result = PosteriorBound(
        family=family,
        scale=dict(chosen.scale),
        bound=pb.bound,
        delta_total=config.delta + config.mc_delta,
        prior_index=choice.index,
        prior_var=choice.variance,
        kl=choice.kl,
        fixed_nats=fixed_nats,
        pac_bayes=pb,
        sample=sample,
        test_error=test_mean,
        test_error_stderr=test_se,
        selection=selection,
        candidates=tuple(rows),
    )
    return result, chosen


# --------------------------------------------------------------------------------------
# The one call
# --------------------------------------------------------------------------------------


def _check_data(data: Any, name: str, device: torch.device) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        raise ValueError(f"{name} must be a pair (inputs, labels) of tensors, got {type(data).__name__}")
    x, y = data
    if y.ndim != 1 or y.shape[0] < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} must hold N >= 1 inputs and N labels (labels of shape (N,)), "
            f"got inputs {tuple(x.shape)} and labels {tuple(y.shape)}"
        )
    return x.to(device), y.to(device)


def _fixed_tensors(model: nn.Module, exclude: Sequence[str] = ()) -> tuple[int, int]:
    """(entries, bits) of the floating tensors the networks read but the posterior does not move.

    Non-trainable parameters and floating buffers, except the buffers named in ``exclude``
    (the folded BatchNorm statistics, replaced by data-free constants).
    """
    fixed = [p for _, p in model.named_parameters() if not p.requires_grad]
    fixed += [b for n, b in model.named_buffers() if b.is_floating_point() and n not in exclude]
    entries = sum(t.numel() for t in fixed)
    bits = sum(t.numel() * torch.finfo(t.dtype).bits for t in fixed)
    return int(entries), int(bits)


def bounds_for_run(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    krylov: Mapping[str, Tensor],
    trace: float,
    *,
    config: BoundsConfig | None = None,
    seed: int,
) -> RunBounds:
    """Occam, isotropic and eq (8) PAC-Bayes bounds of one trained network (module docstring).

    Args:
        model: The trained classifier (logits (N, classes)); left unchanged (evaluated in
            eval mode through ``torch.func.functional_call``, flags restored).
        init_state: Its parameters at initialisation (e.g. the ``state_dict()`` of the model
            rebuilt from the training seed): the prior mean. Must hold every trainable
            parameter name of ``model`` with the same shape.
        train_data: ``(x, y)``, all n examples the model was trained on (labels as trained).
        test_data: ``(x, y)`` held-out examples (sanity check only).
        krylov: ``ritz_values`` (k,) descending and ``ritz_vectors`` (P, k), top eigenpairs of
            the Hessian of the training loss at ``theta*`` over the trainable parameters in
            ``model.named_parameters()`` order (the ``measure`` stage's ``krylov.pt``).
        trace: ``tr(H)`` estimate for the same Hessian (sets the complement curvature).
        config: Settings (default :class:`BoundsConfig()`).
        seed: Seed of every Monte-Carlo draw (the result is a deterministic function of it).

    Returns:
        :class:`RunBounds`.

    Raises:
        ValueError: On a bad config or seed, missing / misshapen initial parameters, bad data,
            a ``krylov`` whose vectors do not have P rows or fewer than ``top_k`` columns, or a
            non-finite ``trace``.
        RuntimeError: If a bound falls below the test error it should cover.
    """
    config = BoundsConfig() if config is None else config
    if not isinstance(config, BoundsConfig):
        raise ValueError(f"config must be a BoundsConfig, got {type(config).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    names = tuple(n for n, _ in named)
    shapes = tuple(p.shape for _, p in named)
    device, dtype = named[0][1].device, named[0][1].dtype
    missing = [n for n in names if n not in init_state]
    if missing:
        raise ValueError(f"init_state lacks the trainable parameters {missing[:5]} (has {sorted(init_state)[:5]}...)")
    for n, s in zip(names, shapes):
        if tuple(init_state[n].shape) != tuple(s):
            raise ValueError(f"init_state[{n!r}] has shape {tuple(init_state[n].shape)}, the model's has {tuple(s)}")
    theta_star = torch.cat([p.detach().reshape(-1).to(_F64) for _, p in named])
    theta_0 = torch.cat([init_state[n].detach().reshape(-1).to(device=device, dtype=_F64) for n in names])
    P = int(theta_star.shape[0])
    # Coordinates of the data-free class: BN statistics folded into (gamma, beta).
    fold = batchnorm_fold(model, names)
    theta_fold = fold.apply(theta_star)
    dist_sq = float(((theta_fold - theta_0) ** 2).sum())

    train = _check_data(train_data, "train_data", device)
    test = _check_data(test_data, "test_data", device)
    n = int(train[1].shape[0])

    if not isinstance(krylov, Mapping) or "ritz_values" not in krylov or "ritz_vectors" not in krylov:
        have = sorted(krylov) if isinstance(krylov, Mapping) else type(krylov).__name__
        raise ValueError(f"krylov must map 'ritz_values' and 'ritz_vectors' to tensors, got {have}")
    vals = torch.as_tensor(krylov["ritz_values"]).reshape(-1)
    vecs = torch.as_tensor(krylov["ritz_vectors"])
    if vecs.ndim != 2 or vecs.shape[0] != P or vecs.shape[1] != vals.shape[0]:
        raise ValueError(
            f"krylov ritz_vectors must have shape (P={P}, k={vals.shape[0]}) to match the model's trainable "
            f"parameters and ritz_values, got {tuple(vecs.shape)}"
        )
    k = vals.shape[0] if config.top_k is None else config.top_k
    if k > vals.shape[0] or k < 1:
        raise ValueError(f"top_k={config.top_k} needs that many cached Ritz pairs, krylov has {vals.shape[0]}")
    if not (isinstance(trace, (int, float)) and math.isfinite(trace)):
        raise ValueError(f"trace must be a finite float, got {trace!r}")
    lam = vals[:k].to(device=device, dtype=_F64)
    V = vecs[:, :k].to(device=device, dtype=_F64)
    lambda_rest = complement_curvature(float(trace), lam.cpu(), P)

    num_fixed, fixed_bits = _fixed_tensors(model, exclude=tuple(fold.buffers))
    fixed_nats = fixed_bits * math.log(2.0)
    grid = PriorVarianceGrid(config.prior_c, config.prior_b)
    net = _FlatNet(model, names, shapes, dtype, config.eval_batch_size, fold.buffers)
    common = dict(grid=grid, dist_sq=dist_sq, fixed_nats=fixed_nats, config=config, device=device, seed=seed)
    with _eval_mode(model):
        wrong_train, wrong_test = net.errors(None, [train, test])
        iso, _ = _bound_family(
            "isotropic", _isotropic_candidates(theta_fold, theta_0, config.sigmas), net, train, test, stream=1, **common
        )
        hes, chosen = _bound_family(
            "hessian",
            _hessian_candidates(theta_star, theta_0, lam, V, lambda_rest, config.posterior_c, config.eps, fold),
            net,
            train,
            test,
            stream=2,
            **common,
        )
    train_error = float(wrong_train) / n
    test_error = float(wrong_test) / int(test[1].shape[0])

    # Effective-rank / log-det / trace forms of the chosen eq (8) posterior's KL. They split
    # the KL in the trained coordinates; with BN folded that is not the KL of the bound, so
    # the split is kept (against the unfolded distance) but no bound is computed from it.
    spectrum = torch.cat([lam.cpu(), torch.tensor([lambda_rest], dtype=_F64)])
    mult = torch.cat([torch.ones(k, dtype=_F64), torch.tensor([float(P - k)], dtype=_F64)])
    summary = complexity_summary(
        spectrum,
        eps=hes.scale["eps"],
        c=hes.scale["c"],
        prior_var=hes.prior_var,
        dist_sq=float(((theta_star - theta_0) ** 2).sum()),
        multiplicities=mult,
    )
    forms = None if not fold.is_identity else {
        f: pac_bayes_kl_bound(
            hes.sample.upper,
            summary.kl_with(f) + fixed_nats,
            n,
            config.delta,
            union_cost=hes.pac_bayes.union_cost,
            grid_size=None,
        ).bound
        for f in _FORMS
    }
    hes = dataclasses.replace(hes, complexity=summary, bounds_by_form=forms)

    # Parameter-count baseline: the stored network as it is evaluated, i.e. every trainable
    # parameter plus every floating buffer (BN statistics included) and frozen parameter.
    _, stored_fixed_bits = _fixed_tensors(model)
    bits = {torch.finfo(p.dtype).bits for _, p in named}
    param_bits = sum(p.numel() * torch.finfo(p.dtype).bits for _, p in named)
    total_bits = param_bits + stored_fixed_bits
    b = next(iter(bits)) if len(bits) == 1 and total_bits % next(iter(bits)) == 0 else 1
    occam = occam_bound(train_error, total_bits // b, n, config.delta + config.mc_delta, bits_per_param=b)

    for name, bound, err in (
        ("occam", occam.bound, test_error),
        ("isotropic", iso.bound, iso.test_error),
        ("hessian", hes.bound, hes.test_error),
    ):
        if not bound >= err:
            raise RuntimeError(
                f"{name} bound {bound:.6g} is below the test error {err:.6g} it must cover "
                f"(n={n}, seed={seed}): a bug or a broken input (prior not independent of the data?)"
            )
    values = {"occam": occam.bound, "isotropic": iso.bound, "hessian": hes.bound}
    return RunBounds(
        n_train=n,
        n_test=int(test[1].shape[0]),
        num_params=P,
        num_fixed=num_fixed,
        fixed_nats=fixed_nats,
        dist_sq=dist_sq,
        top_k=int(k),
        ritz_values=tuple(float(v) for v in lam.cpu()),
        lambda_rest=float(lambda_rest),
        trace=float(trace),
        train_error=train_error,
        test_error=test_error,
        occam=occam,
        isotropic=iso,
        hessian=hes,
        ordering=tuple(sorted(values, key=lambda key: values[key])),
        hessian_below_isotropic=hes.bound < iso.bound,
        isotropic_below_occam=iso.bound < occam.bound,
        hessian_below_occam=hes.bound < occam.bound,
        folded_batchnorm=fold.modules,
        seed=seed,
        config=config,
    )
