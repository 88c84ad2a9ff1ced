"""Intrinsic dimension by training in random subspaces.

Li, Farkhoor, Liu & Yosinski 2018, *Measuring the intrinsic dimension of objective
landscapes*: train only ``z in R^d`` in ``theta = theta_0 + P z`` (``theta_0`` the
initial point, ``P`` a fixed random ``D x d`` matrix with unit-norm columns, ``z_0 = 0``)
and call ``d_int90`` the smallest ``d`` whose trained performance reaches 90% of the
full-space baseline.

* Projections: ``"dense"`` (i.i.d. Gaussian entries, columns normalised to unit norm, as in
  Li et al.), ``"sparse"`` (very sparse random projections, Li, Hastie & Church 2006:
  about ``density * D`` non-zeros ``+-1`` per column, default ``density = 1/sqrt(D)``,
  columns normalised exactly; stored as a torch sparse matrix, memory ``O(d sqrt(D))``),
  and ``"identity"`` (``d = D``: the full-space baseline through the same code path).
  The Fastfood transform of Li et al. is not implemented.
* :func:`train_subspace`: Adam or SGD on ``z`` for a number of epochs over the batches.
* :func:`search_intrinsic_dim`: geometric grid ``d_min, d_min * factor, ...`` up to
  ``d_max`` until the target is reached, then bisection between the last failing and the
  first passing ``d``, down to one integer or, with ``rtol > 0``, until the bracket is
  within ``rtol`` of the passing end (each subspace training at large ``d`` is costly,
  and a 5% bracket is finer than the seed-to-seed spread). This assumes performance is
  non-decreasing in ``d``; with noisy training it finds *a* crossing, which is why
  :func:`intrinsic_dim_ci` repeats the search over seeds (new projection per seed) and
  reports a percentile bootstrap interval of the mean ``d_int`` (:func:`bootstrap_ci`).

BatchNorm: training uses batch statistics unless ``bn_mode == "eval"``; the final
evaluation follows ``bn_mode`` (``"recalibrate"`` recomputes the statistics at the trained
point).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.seeding import seeded_generator

from .functional import Batch, BNMode, LossFn, Objective, Params

__all__ = [
    "PROJECTIONS",
    "RandomProjection",
    "make_projection",
    "SubspaceResult",
    "train_subspace",
    "subspace_performance",
    "IntrinsicDimResult",
    "search_intrinsic_dim",
    "IntrinsicDimCI",
    "intrinsic_dim_ci",
    "bootstrap_ci",
]

PROJECTIONS: tuple[str, ...] = ("dense", "sparse", "identity")

#: Performance of a trained point: "accuracy" (1 - error on the evaluation batches),
#: "neg_loss" (minus the mean loss), or a callable of the flat parameter vector.
Performance = str | Callable[[Tensor], float]


def _check_int(name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


@dataclass(frozen=True)
class RandomProjection:
    """A fixed ``D x d`` projection ``P`` (dense, sparse or identity).

    Attributes:
        kind: ``"dense"``, ``"sparse"`` or ``"identity"``.
        num_params: ``D``.
        dim: ``d``.
        matrix: (D, d) dense or sparse COO tensor (None for the identity).
        seed: Seed it was drawn with.
    """

    kind: str
    num_params: int
    dim: int
    matrix: Tensor | None
    seed: int

    def __call__(self, z: Tensor) -> Tensor:
        """``P z`` (D,) for ``z`` (d,); differentiable in ``z``."""
        if z.shape != (self.dim,):
            raise ValueError(f"z must have shape ({self.dim},), got {tuple(z.shape)}")
        if self.matrix is None:
            return z
        if self.matrix.is_sparse:
            return torch.sparse.mm(self.matrix, z[:, None])[:, 0]
        return self.matrix @ z


def make_projection(
    num_params: int,
    dim: int,
    *,
    kind: str = "dense",
    seed: int = 0,
    density: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> RandomProjection:
    """Draw a random projection with unit-norm columns (CPU generator, then moved).

    Args:
        num_params: ``D``.
        dim: ``d`` (``d = D`` for ``"identity"``).
        kind: ``"dense"``, ``"sparse"`` or ``"identity"``.
        seed: Seed.
        density: Fraction of non-zeros per column (``"sparse"``; default ``1/sqrt(D)``).
        dtype: Dtype of ``P``.
        device: Device of ``P``.

    Raises:
        ValueError: Unknown ``kind``, ``dim`` not in ``[1, D]`` (``!= D`` for identity),
            or ``density`` not in (0, 1].
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"projection kind must be one of {list(PROJECTIONS)}, got {kind!r}")
    _check_int("num_params", num_params)
    _check_int("dim", dim)
    if dim > num_params:
        raise ValueError(f"dim must be <= num_params = {num_params}, got {dim}")
    if kind == "identity":
        if dim != num_params:
            raise ValueError(f"the identity projection needs dim == num_params = {num_params}, got {dim}")
        return RandomProjection(kind, num_params, dim, None, int(seed))
    gen = seeded_generator(seed)
    if kind == "dense":
        P = torch.randn(num_params, dim, generator=gen, dtype=torch.float64)
        P = P / P.norm(dim=0, keepdim=True)
        return RandomProjection(kind, num_params, dim, P.to(device=device, dtype=dtype), int(seed))
    rho = 1.0 / math.sqrt(num_params) if density is None else density
    if not (isinstance(rho, (int, float)) and 0 < rho <= 1):
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    k = max(1, round(rho * num_params))
    rows = torch.randint(num_params, (k, dim), generator=gen)
    cols = torch.arange(dim).expand(k, dim)
    signs = torch.randint(0, 2, (k, dim), generator=gen, dtype=torch.float64) * 2 - 1
    P = torch.sparse_coo_tensor(
        torch.stack([rows.reshape(-1), cols.reshape(-1)]), signs.reshape(-1), (num_params, dim), check_invariants=False
    ).coalesce()
    idx, vals = P.indices(), P.values()
    norms = torch.zeros(dim, dtype=torch.float64).index_add_(0, idx[1], vals * vals).sqrt()
    vals = vals / norms[idx[1]].clamp(min=torch.finfo(torch.float64).tiny)  # a column cancelled to 0 stays 0
    P = torch.sparse_coo_tensor(idx, vals, (num_params, dim), check_invariants=False).coalesce()
    return RandomProjection(kind, num_params, dim, P.to(device=device, dtype=dtype), int(seed))


@dataclass(frozen=True)
class SubspaceResult:
    """Outcome of training in one random subspace.

    Attributes:
        dim: ``d``.
        performance: The performance measure at the trained point.
        train_loss: Mean training loss at the trained point (under ``bn_mode``).
        eval_loss: Mean loss on the evaluation batches.
        eval_error: Error rate on the evaluation batches (NaN if not classification).
        z: (d,) trained coordinates.
        settings: Projection kind, seed, optimiser, lr, epochs, bn_mode, performance name.
    """

    dim: int
    performance: float
    train_loss: float
    eval_loss: float
    eval_error: float
    z: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "performance": self.performance,
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "eval_error": self.eval_error,
            "settings": dict(self.settings),
        }


def train_subspace(
    model: nn.Module,
    theta0: Params,
    dim: int,
    train_batches: Sequence[Batch],
    eval_batches: Sequence[Batch] | None = None,
    *,
    projection: str = "dense",
    density: float | None = None,
    epochs: int = 10,
    optimizer: str = "adam",
    lr: float = 1e-2,
    momentum: float = 0.9,
    performance: Performance = "accuracy",
    seed: int = 0,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
) -> SubspaceResult:
    """Train ``z`` in ``theta = theta_0 + P z`` (Li et al. 2018) and score the result.

    Args:
        model: Any module (used through ``functional_call`` only).
        theta0: Starting point (flat (P,) vector or parameter dict).
        dim: Subspace dimension ``d``.
        train_batches: Training batches; one optimiser step per batch, batch order
            shuffled each epoch with ``seed``.
        eval_batches: Batches scored for the performance (default: the training batches).
        projection: ``"dense"``, ``"sparse"`` or ``"identity"``.
        density: Sparse projection density.
        epochs: Passes over ``train_batches``.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: Learning rate (units of ``z``).
        momentum: SGD momentum.
        performance: ``"accuracy"``, ``"neg_loss"`` or a callable of the flat parameters.
        seed: Seed of the projection and of the batch order.
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        bn_mode: BatchNorm policy of the evaluation.
        recal_batches: Batches for ``"recalibrate"``.

    Raises:
        ValueError: Unknown ``optimizer``/``performance``, non-positive ``lr``/``epochs``.
    """
    _check_int("epochs", epochs)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(performance, str) and performance not in ("accuracy", "neg_loss"):
        raise ValueError(f"performance must be 'accuracy', 'neg_loss' or a callable, got {performance!r}")
    obj = Objective(model, train_batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches)
    theta = obj.flat(theta0)
    proj = make_projection(obj.num_params, dim, kind=projection, seed=seed, density=density, dtype=obj.dtype, device=obj.device)
    z = torch.zeros(dim, dtype=obj.dtype, device=obj.device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=float(lr)) if optimizer == "adam" else torch.optim.SGD([z], lr=float(lr), momentum=float(momentum))
    gen = seeded_generator(int(seed) + 1)
    for _ in range(epochs):
        for i in torch.randperm(len(train_batches), generator=gen).tolist():
            loss = obj.training_loss(theta + proj(z), train_batches[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    final = (theta + proj(z)).detach()
    train_ev = obj.evaluate(final)
    eval_ev = train_ev if eval_batches is None else obj.evaluate(final, eval_batches)
    if callable(performance):
        perf = float(performance(final))
    elif performance == "accuracy":
        if math.isnan(eval_ev.error):
            raise ValueError("performance='accuracy' needs a classification task (outputs (N, C), integer targets)")
        perf = 1.0 - eval_ev.error
    else:
        perf = -eval_ev.loss
    settings = {
        "projection": projection,
        "seed": int(seed),
        "optimizer": optimizer,
        "lr": float(lr),
        "epochs": epochs,
        "bn_mode": obj.bn_mode,
        "performance": performance if isinstance(performance, str) else getattr(performance, "__name__", "callable"),
    }
    return SubspaceResult(dim, perf, train_ev.loss, eval_ev.loss, eval_ev.error, z.detach(), settings)


def subspace_performance(
    model: nn.Module,
    theta0: Params,
    train_batches: Sequence[Batch],
    eval_batches: Sequence[Batch] | None = None,
    **kwargs: Any,
) -> Callable[[int, int], float]:
    """``(d, seed) -> performance`` of :func:`train_subspace` with fixed other arguments
    (the callable that :func:`search_intrinsic_dim` and :func:`intrinsic_dim_ci` consume)."""

    def fn(dim: int, seed: int) -> float:
        return train_subspace(model, theta0, dim, train_batches, eval_batches, seed=seed, **kwargs).performance

    return fn


@dataclass(frozen=True)
class IntrinsicDimResult:
    """Outcome of one ``d_int`` search.

    Attributes:
        d_int: Smallest passing ``d`` found (NaN if ``d_max`` does not pass).
        reached: Whether the target was reached.
        target: ``threshold * baseline``.
        threshold: Fraction of the baseline (0.9 for ``d_int90``).
        baseline: Full-space performance.
        dims: Evaluated dimensions, in evaluation order.
        performances: Their performances.
        bracket: ``d_int`` minus the largest failing ``d`` below it (or ``d_min - 1``);
            1 is exact; NaN if not reached.
    """

    d_int: float
    reached: bool
    target: float
    threshold: float
    baseline: float
    dims: tuple[int, ...]
    performances: tuple[float, ...]
    bracket: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__)}


def search_intrinsic_dim(
    performance_fn: Callable[[int], float],
    baseline: float,
    *,
    threshold: float = 0.9,
    d_min: int = 1,
    d_max: int,
    factor: float = 2.0,
    rtol: float = 0.0,
) -> IntrinsicDimResult:
    """Smallest ``d`` with ``performance_fn(d) >= threshold * baseline``.

    Geometric grid then bisection (module docstring); each ``d`` is evaluated at most
    once. The returned ``d_int`` passes and ``d_int - bracket`` fails (or is below
    ``d_min``), where the final bracket is 1 or at most ``rtol * d_int``.

    Args:
        performance_fn: ``d -> performance`` (e.g. ``lambda d: f(d, seed)``).
        baseline: Full-space performance (> 0: the target is a fraction of it).
        threshold: Fraction in (0, 1].
        d_min: Smallest dimension tried.
        d_max: Largest dimension tried.
        factor: Grid ratio (> 1).
        rtol: Relative stop tolerance of the bisection in [0, 1) (0: exact integer).

    Raises:
        ValueError: ``baseline <= 0``, ``threshold`` outside (0, 1], ``d_min > d_max``,
            ``factor <= 1`` or ``rtol`` outside [0, 1).
    """
    if not (isinstance(baseline, (int, float)) and baseline > 0 and math.isfinite(baseline)):
        raise ValueError(f"baseline must be a finite performance > 0, got {baseline!r}")
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    _check_int("d_min", d_min)
    _check_int("d_max", d_max)
    if d_min > d_max:
        raise ValueError(f"d_min must be <= d_max, got {d_min} > {d_max}")
    if not (isinstance(factor, (int, float)) and factor > 1):
        raise ValueError(f"factor must be > 1, got {factor!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1), got {rtol!r}")
    target = threshold * baseline
    seen: dict[int, float] = {}

    def passes(d: int) -> bool:
        if d not in seen:
            seen[d] = float(performance_fn(d))
        return seen[d] >= target

    lo, hi = 0, None  # lo: largest failing d (0 = none), hi: smallest passing d
    d = d_min
    while True:
        if passes(d):
            hi = d
            break
        lo = d
        if d == d_max:
            break
        d = min(d_max, max(d + 1, math.ceil(d * factor)))
    if hi is not None:
        lo = max(lo, d_min - 1)
        while hi - lo > 1 and hi - lo > rtol * hi:
            mid = (lo + hi) // 2
            if passes(mid):
                hi = mid
            else:
                lo = mid
    return IntrinsicDimResult(
        d_int=float(hi) if hi is not None else math.nan,
        reached=hi is not None,
        target=target,
        threshold=float(threshold),
        baseline=float(baseline),
        dims=tuple(seen.keys()),
        performances=tuple(seen.values()),
        bracket=float(hi - lo) if hi is not None else math.nan,
    )


@dataclass(frozen=True)
class IntrinsicDimCI:
    """``d_int`` across seeds with a bootstrap confidence interval of the mean.

    Attributes:
        values: (S,) ``d_int`` per seed (NaN where not reached).
        seeds: The seeds.
        mean: Mean over the seeds that reached the target.
        ci_low: Lower percentile-bootstrap bound of the mean.
        ci_high: Upper bound.
        confidence: Level.
        num_bootstrap: Bootstrap resamples.
        searches: The per-seed search results.
    """

    values: np.ndarray
    seeds: tuple[int, ...]
    mean: float
    ci_low: float
    ci_high: float
    confidence: float
    num_bootstrap: int
    searches: tuple[IntrinsicDimResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values.tolist(),
            "seeds": list(self.seeds),
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "num_bootstrap": self.num_bootstrap,
            "searches": [s.to_dict() for s in self.searches],
        }


def intrinsic_dim_ci(
    performance_fn: Callable[[int, int], float],
    baseline: float,
    seeds: Sequence[int],
    *,
    threshold: float = 0.9,
    d_min: int = 1,
    d_max: int,
    factor: float = 2.0,
    rtol: float = 0.0,
    confidence: float = 0.95,
    num_bootstrap: int = 2000,
    bootstrap_seed: int = 0,
) -> IntrinsicDimCI:
    """Repeat :func:`search_intrinsic_dim` over seeds; percentile bootstrap CI of the mean.

    Other arguments as :func:`search_intrinsic_dim`.

    Args:
        performance_fn: ``(d, seed) -> performance`` (e.g. :func:`subspace_performance`).
        baseline: Full-space performance.
        seeds: At least 2 seeds.
        confidence: CI level in (0, 1).
        num_bootstrap: Resamples (>= 100).
        bootstrap_seed: Seed of the resampling (NumPy generator).

    Raises:
        ValueError: Fewer than 2 seeds, bad ``confidence`` or ``num_bootstrap``.
    """
    _check_ci_args(seeds, confidence, num_bootstrap)
    searches = [
        search_intrinsic_dim(lambda d, s=s: performance_fn(d, s),  # type: ignore[misc]  # s bound per seed
                             baseline, threshold=threshold, d_min=d_min, d_max=d_max, factor=factor, rtol=rtol)
        for s in seeds
    ]
    return bootstrap_ci(searches, seeds, confidence=confidence, num_bootstrap=num_bootstrap, bootstrap_seed=bootstrap_seed)


def _check_ci_args(seeds: Sequence[int], confidence: float, num_bootstrap: int) -> None:
    if len(seeds) < 2:
        raise ValueError(f"need at least 2 seeds for a confidence interval, got {list(seeds)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    _check_int("num_bootstrap", num_bootstrap, minimum=100)


def bootstrap_ci(
    searches: Sequence[IntrinsicDimResult],
    seeds: Sequence[int],
    *,
    confidence: float = 0.95,
    num_bootstrap: int = 2000,
    bootstrap_seed: int = 0,
) -> IntrinsicDimCI:
    """Percentile-bootstrap interval of the mean ``d_int`` over per-seed searches (run
    separately, e.g. in parallel; seeds that did not reach the target are left out).

    Args:
        searches: One :func:`search_intrinsic_dim` result per seed.
        seeds: Their seeds (at least 2).
        confidence: CI level in (0, 1).
        num_bootstrap: Resamples (>= 100).
        bootstrap_seed: Seed of the resampling (NumPy generator).

    Raises:
        ValueError: Fewer than 2 seeds, lengths differ, bad ``confidence`` or ``num_bootstrap``.
    """
    _check_ci_args(seeds, confidence, num_bootstrap)
    if len(searches) != len(seeds):
        raise ValueError(f"need one search per seed, got {len(searches)} searches for {len(seeds)} seeds")
    searches = tuple(searches)
    values = np.array([r.d_int for r in searches], dtype=np.float64)
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return IntrinsicDimCI(values, tuple(seeds), math.nan, math.nan, math.nan, confidence, num_bootstrap, searches)
    rng = np.random.default_rng(bootstrap_seed)
    means = rng.choice(ok, size=(num_bootstrap, ok.size), replace=True).mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return IntrinsicDimCI(values, tuple(int(s) for s in seeds), float(ok.mean()), float(lo), float(hi), confidence, num_bootstrap, searches)
