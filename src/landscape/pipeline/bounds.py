"""bounds stage: PAC-Bayes bounds of the TRAINED network against hold-out and parameter-count baselines (H4).

:func:`bounds_for_run` bounds one trained network ``theta*`` (trained on all n examples of
S by the run's recipe); :func:`run` does it for every seed of every run in ``bounds.runs``.

**Data.** S is split by a seeded, data-free permutation into ``S_prior`` (floor(a n)
examples, ``prior_fraction = a``) and ``S_bound`` (the rest, n_bound examples). A copy of
the network is trained from the run's initialisation on ``S_prior`` alone with the run's
recipe: its weights ``w_p`` centre every PAC-Bayes prior ``P_j = N(w_p, lambda_j I)``
(Parrado-Hernandez et al. 2012; Dziugaite et al. 2021; Perez-Ortiz et al. 2021), so the
priors never see ``S_bound``. The posteriors may depend on all of S (PAC-Bayes bounds hold
for every posterior at once); every PAC-Bayes bound is over ``S_bound``.

**What each number certifies** (all upper bounds on a true 0-1 risk):

1. ``isotropic``: the Gibbs classifier ``N(theta*, sigma^2 I)``: mean AT the trained
   weights, sigma chosen by pilot draws (arm 1's isotropic baseline).
2. ``curvature``: ``N(theta*, c A^-1)``, ``A = diag(G) + eps I + V diag(g) V^T``: the exact
   GGN diagonal of the mean training loss at ``theta*`` (on ``curvature_examples`` examples
   of ``S_bound``) in every direction, plus the top-k Hessian eigenpairs of the ``measure``
   stage on top (:func:`~landscape.bounds.curvature_posterior.curvature_family`); (c, eps)
   chosen by pilot draws (arm 1).
3. ``optimized``: a diagonal Gaussian ``N(mu, diag(s))`` whose mean and variances are
   optimised from ``(theta*, s_0)`` on the Dziugaite-Roy objective
   (:func:`~landscape.bounds.optimize.optimize_diagonal_posterior`; cross-entropy surrogate
   on minibatches of ``S_bound``, prior centred at ``w_p``); the certificate is computed
   afterwards, with the 0-1 loss and fresh Monte-Carlo draws (arm 2).
4. ``holdout_prior``: the test-set bound (Langford 2005, Thm 3.3, kl form) of the
   deterministic prior network ``w_p`` (trained on ``S_prior`` only) on ``S_bound``: the
   same examples, a network that never saw them.
5. ``holdout_test``: the same bound of the deterministic ``theta*`` on the test split (the
   trained network saw ``S_bound``, so it cannot be certified on it this way).
6. ``occam``: the Occam bound (Langford 2005, Thm 4.1) of ``theta*`` uniformly quantised to
   b bits per parameter (b from ``quant_bits``, chosen at ``ln |quant_bits|`` nats; two
   float32 numbers per tensor) on all n training examples, with the quantised network's own
   training error (:func:`~landscape.bounds.curvature_posterior.quantized_occam_bound`).

**Choosing the posterior costs nothing** in a PAC-Bayes bound (it holds for every Q at
once); the Monte-Carlo estimate behind the reported number uses fresh draws, independent of
the pilot draws (``pilot_draws`` networks on the first ``pilot_examples`` bound examples)
that chose sigma and (c, eps), and of the optimiser's draws. The prior variance is chosen
from Dziugaite & Roy's countable grid and pays ``2 ln j + ln(pi^2/6)`` nats
(:func:`~landscape.bounds.posterior.best_prior`).

**Empirical risk by paired draws** (:func:`~landscape.bounds.posterior.paired_wrong`):
N = ``mc_draws`` (example, network) pairs give ``emp(Q) <= kl^-1(X_bar, ln(1/delta') / N)``
with probability >= 1 - delta'; the bound is ``kl^-1(that, (KL + fixed + ln(2 sqrt(n_bound)
/ delta) + union) / n_bound)``, valid with probability >= ``1 - delta - mc_delta``. Hold-out
and Occam bounds are taken at ``delta + mc_delta`` too. Each bound is valid on its own; the
comparison between arms is descriptive per seed and tested over seeds by ``hypotheses``.

**BatchNorm** is folded into data-free coordinates (:mod:`~landscape.bounds.bn_fold`); the
curvature diagonal is computed in those coordinates; the cached Hessian eigenvectors live in
the unfolded ones, so with BatchNorm folded the top-k part is dropped (k = 0, recorded).

Sanity checks: every PAC-Bayes bound must be at least its posterior's test error, the Occam
bound at least the quantised network's; a violation raises :class:`InvalidBoundError`.

Outputs (paths from :class:`~landscape.pipeline.layout.Layout`):
``bounds/runs/<exp>/<cfg>/seed<k>/bounds.json`` per seed (a diverged or unmeasured run is
recorded as skipped) and ``bounds/metrics.json`` (per run: per-seed bounds of every arm and
baseline, mean/sd, the random-label control ``bounds.sanity``). Each prior network is kept
in ``bounds/priors/<exp>/<cfg>/seed<k>/`` (``persist`` in DVC): a rerun reuses it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.bounds.bn_fold import batchnorm_fold
from landscape.bounds.curvature_posterior import (
    HoldoutBound,
    QuantizedOccam,
    curvature_family,
    ggn_diagonal,
    holdout_bound,
    quantize_uniform,
    quantized_occam_bound,
)
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.mc import paired_draws_bound
from landscape.bounds.optimize import optimize_diagonal_posterior
from landscape.bounds.pacbayes import PriorVarianceGrid
from landscape.bounds.posterior import (
    FlatClassifier,
    GaussianFamily,
    PosteriorBound,
    PriorSummary,
    best_prior,
    check_pair,
    draw_errors,
    fixed_tensors,
    isotropic_family,
    paired_wrong,
    pilot_error,
    split_indices,
)
from landscape.functional import eval_mode
from landscape.io import read_json, write_json
from landscape.pipeline.bounds_prior import train_prior
from landscape.pipeline.bounds_summary import sanity_summary, summarise
from landscape.pipeline.cli import StageError
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import experiment_dataset, group_seeds, section
from landscape.pipeline.runs import initial_model, load_run, run_status
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.schema import Checked, ConfigError, parse_config, rule
from landscape.seeding import seeded_generator
from landscape.training import randomize_labels
from landscape.training.config import RunConfig, TrainConfig

__all__ = [
    "ARMS",
    "BASELINES",
    "BoundsConfig",
    "InvalidBoundError",
    "RunBounds",
    "bounds_for_run",
    "parse_bounds_section",
    "run",
]

_F64 = torch.float64
ARMS = ("curvature", "optimized")
"""The bounds of the trained network H4 is about: arm 1 (curvature posterior at theta*) and arm 2."""
BASELINES = ("isotropic", "occam", "holdout_prior", "holdout_test")
FAMILIES = (*ARMS, *BASELINES)


class InvalidBoundError(RuntimeError):
    """A reported bound fell below the test error it must cover (a bug or a leaked prior)."""


def _grid_ok(values: Any, lo: float = 0.0, closed: bool = False) -> bool:
    def ok(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return v >= lo if closed else v > lo

    return isinstance(values, (list, tuple)) and len(values) > 0 and all(ok(v) for v in values)


def _bits_ok(values: Any) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 32 for v in values))


_GRID = "a non-empty list of finite floats > 0"
_GRIDS = ("sigmas", "posterior_c", "eps")
_INTS = ("mc_draws", "test_draws", "pilot_draws", "pilot_examples", "eval_batch_size", "top_k", "prior_epochs",
         "curvature_examples", "optimize_steps", "optimize_batch")
# Grid fields are annotated ``tuple[Real, ...]`` (stored as tuples of floats): parse_config
# would try float() on a whole list annotated ``tuple[float, ...]``. The type checker, which
# does not count float literals as ``numbers.Real``, reads them as tuples of floats.
if TYPE_CHECKING:
    _Grid = tuple[float, ...]
    _Bits = tuple[int, ...]
else:
    _Grid = tuple[Real, ...]
    _Bits = tuple[Real, ...]


@dataclass(frozen=True)
class BoundsConfig(Checked):
    """Settings of the ``bounds`` stage (``bounds.settings``; build with ``parse_config``).

    Attributes:
        delta: Failure probability of the PAC-Bayes side, in (0, 1).
        mc_delta: Failure probability delta' of the Monte-Carlo side, in (0, 1);
            ``delta + mc_delta < 1``.
        prior_fraction: Share of the training examples that train the prior mean, in
            (0, 0.95]: the hold-out baseline and a prior independent of ``S_bound`` need it.
        prior_epochs: Epochs of the prior's training (``None``: the run's own).
        mc_draws: N, (example, network) pairs of each final Monte-Carlo estimate.
        test_draws: Networks drawn from each posterior and evaluated on the whole test split.
        pilot_draws: Networks per candidate posterior that score it (selection only).
        pilot_examples: Bound examples (the first ones) the pilot networks are scored on.
        prior_c: Largest prior variance of the countable grid ``prior_c exp(-j / prior_b)``.
        prior_b: Grid points per e-fold of prior variance.
        sigmas: Candidate posterior standard deviations of the isotropic posterior.
        posterior_c: Candidate scales c of the curvature posterior.
        eps: Candidate dampings eps of the curvature posterior (units of GGN diagonal entries).
        top_k: Hessian eigenpairs added to the diagonal (the leading ones); ``None``: all
            that the measure stage cached; 0: the diagonal alone.
        curvature_examples: Bound examples (the first ones) the GGN diagonal is computed on.
        quant_bits: Bit widths the Occam baseline may quantise to (its union pays ln of the count).
        optimize_steps: Adam steps of the optimised posterior (arm 2).
        optimize_lr: Their learning rate.
        optimize_batch: Bound examples per step (a seeded random minibatch).
        eval_batch_size: Networks (paired draws) or examples per forward pass.
        bn_mode: BatchNorm policy; only ``"eval"`` (stored running statistics) is valid.
    """

    delta: float = field(default=0.025, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    mc_delta: float = field(default=0.01, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    prior_fraction: float = field(default=0.5, metadata=rule("a float in (0, 0.95]", lambda x: 0 < x <= 0.95))
    prior_epochs: int | None = field(default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1))
    mc_draws: int = field(default=4000, metadata=rule("an int >= 1", lambda x: x >= 1))
    test_draws: int = field(default=8, metadata=rule("an int >= 1", lambda x: x >= 1))
    pilot_draws: int = field(default=4, metadata=rule("an int >= 1", lambda x: x >= 1))
    pilot_examples: int = field(default=500, metadata=rule("an int >= 1", lambda x: x >= 1))
    prior_c: float = field(default=1.0, metadata=rule("a float > 0", lambda x: x > 0))
    prior_b: float = field(default=100.0, metadata=rule("a float > 0", lambda x: x > 0))
    sigmas: _Grid = field(
        default=(1e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2, 1.5e-2, 2e-2, 3e-2, 5e-2, 7e-2, 0.1),
        metadata=rule(_GRID, _grid_ok),
    )
    posterior_c: _Grid = field(
        default=(1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), metadata=rule(_GRID, _grid_ok)
    )
    eps: _Grid = field(default=(1e-2, 0.1, 1.0, 10.0), metadata=rule(_GRID, _grid_ok))
    top_k: int | None = field(default=None, metadata=rule("null or an int >= 0", lambda x: x is None or x >= 0))
    curvature_examples: int = field(default=1000, metadata=rule("an int >= 1", lambda x: x >= 1))
    quant_bits: _Bits = field(default=(2, 4, 8, 16), metadata=rule("a non-empty list of ints in [1, 32]", _bits_ok))
    optimize_steps: int = field(default=300, metadata=rule("an int >= 1", lambda x: x >= 1))
    optimize_lr: float = field(default=1e-3, metadata=rule("a float > 0", lambda x: x > 0))
    optimize_batch: int = field(default=250, metadata=rule("an int >= 1", lambda x: x >= 1))
    eval_batch_size: int = field(default=100, metadata=rule("an int >= 1", lambda x: x >= 1))
    bn_mode: str = field(default="eval", metadata=rule("'eval'", lambda x: x == "eval"))

    def _extra_checks(self) -> None:
        for name in _INTS:
            value = getattr(self, name)
            if (not isinstance(value, int) or isinstance(value, bool)) and not (name in ("top_k", "prior_epochs") and value is None):
                raise ConfigError(f"{name}={value!r} must be an int")
        if self.delta + self.mc_delta >= 1.0:
            raise ConfigError(f"delta + mc_delta must be < 1, got {self.delta} + {self.mc_delta}")
        for name in _GRIDS:
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "quant_bits", tuple(int(v) for v in self.quant_bits))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class RunBounds:
    """Every bound of one trained network, what it certifies, and its inputs.

    Attributes:
        n_train: Training examples of the run (all of S).
        n_bound: Examples of ``S_bound`` (the PAC-Bayes bounds and ``holdout_prior``).
        n_test: Test examples (``holdout_test`` and the posteriors' test errors).
        num_params: P, trainable parameters (dimension of the Gaussians).
        num_fixed: Entries of the floating tensors charged by description length.
        fixed_nats: Their description length, nats.
        prior: :class:`PriorSummary` (the prior network and its errors).
        top_k: Hessian eigenpairs on top of the diagonal (0 with BatchNorm folded).
        ritz_values: (k,) their eigenvalues.
        diag_summary: Quantiles of the GGN diagonal (min, median, max, mean).
        train_error: 0-1 error of ``theta*`` on all of S; ``test_error`` on the test split.
        isotropic, curvature, optimized: :class:`PosteriorBound` of the three posteriors.
        optimizer: Summary of arm 2's optimisation (objective first/last, steps, data).
        holdout_prior: Test-set bound of the prior network on ``S_bound``.
        holdout_test: Test-set bound of ``theta*`` on the test split.
        occam: Occam bound of the quantised ``theta*`` on all of S.
        certifies: Per bound: which classifier it certifies, trained on what, bounded on what.
        ordering: Bound names sorted by value, smallest first.
        folded_batchnorm: BatchNorm modules whose statistics were folded.
        seed: Seed of the split, the prior's training and every draw.
        config: The settings used.
    """

    n_train: int
    n_bound: int
    n_test: int
    num_params: int
    num_fixed: int
    fixed_nats: float
    prior: PriorSummary
    top_k: int
    ritz_values: tuple[float, ...]
    diag_summary: Mapping[str, float]
    train_error: float
    test_error: float
    isotropic: PosteriorBound
    curvature: PosteriorBound
    optimized: PosteriorBound
    optimizer: Mapping[str, Any]
    holdout_prior: HoldoutBound
    holdout_test: HoldoutBound
    occam: QuantizedOccam
    certifies: Mapping[str, str]
    ordering: tuple[str, ...]
    folded_batchnorm: tuple[str, ...]
    seed: int
    config: BoundsConfig

    @property
    def bounds(self) -> dict[str, float]:
        """Bound name -> value (the keys of :data:`FAMILIES`)."""
        return {name: float(getattr(self, name).bound) for name in FAMILIES}

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python fields for JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        out["bounds"] = self.bounds
        return out


def _score(err: float, cov: GaussianFamily, dist_sq: float, common: dict) -> tuple[float, float]:
    """(plug-in bound if the final estimate matched ``err``, its KL): a selection score, never a bound."""
    upper = float(kl_inv_upper(err, math.log(1.0 / common["mc_delta"]) / common["mc_draws"]))
    choice = best_prior(cov, dist_sq, upper, common["grid"], common["P"], common["fixed_nats"], common["n"], common["delta"])
    return choice.result.bound, choice.kl.kl


def _pilot(
    net: FlatClassifier, mu: Tensor, covs: list[GaussianFamily], restart: str | None, dist_sq: float, common: dict,
    pilot: tuple[Tensor, Tensor, Tensor],
) -> tuple[GaussianFamily, list[dict[str, float]]]:
    """The candidate with the smallest plug-in score; stops a sweep after two rises in a row.

    ``covs`` are swept in order; ``restart`` names the scale key whose first value starts a
    new sweep (None: one sweep).
    """
    zp, px, py = pilot
    rows: list[dict[str, float]] = []
    best: tuple[float, GaussianFamily] | None = None
    first = covs[0].scale[restart] if restart is not None else None
    rises, last = 0, math.inf
    for cov in covs:
        if restart is not None and cov.scale[restart] == first:
            rises, last = 0, math.inf
        elif rises >= 2:  # past the minimum of this unimodal-looking sweep: save the rest
            continue
        err = pilot_error(net, mu, cov, zp, px, py)
        score, kl = _score(err, cov, dist_sq, common)
        rows.append({**cov.scale, "pilot_error": err, "pilot_score": score, "kl": kl})
        if best is None or score < best[0]:
            best = (score, cov)
        rises, last = (rises + 1 if score > last else 0), score
    assert best is not None  # the grids are non-empty
    return best[1], rows


def _diagonal_family(var: Tensor, dtype: torch.dtype) -> GaussianFamily:
    """``N(0, diag(var))`` with its exact trace and log-determinant."""
    v = var.to(_F64)
    std = v.sqrt().to(dtype)
    return GaussianFamily({"mean_var": float(v.mean())}, float(v.sum()), float(torch.log(v).sum()), lambda z: z * std)


def _certify(
    family: str, cov: GaussianFamily, wrong: Tensor, test_errors: Any, dist_sq: float, common: dict, rows: list,
    mc_delta: float, delta: float,
) -> PosteriorBound:
    """The reported PAC-Bayes-kl bound of one posterior from its fresh paired draws."""
    sample = paired_draws_bound(wrong.cpu().numpy(), mc_delta)
    choice = best_prior(cov, dist_sq, sample.upper, common["grid"], common["P"], common["fixed_nats"], common["n"], delta)
    return PosteriorBound(
        family=family,
        scale=dict(cov.scale),
        bound=choice.result.bound,
        delta_total=delta + mc_delta,
        prior_index=choice.index,
        prior_var=choice.variance,
        kl=choice.kl,
        fixed_nats=common["fixed_nats"],
        pac_bayes=choice.result,
        sample=sample,
        test_error=float(test_errors.mean()),
        test_error_stderr=float(test_errors.std(ddof=1) / math.sqrt(test_errors.size)) if test_errors.size > 1 else math.nan,
        dist_sq=dist_sq,
        candidates=tuple(rows),
    )


def _check_inputs(model: nn.Module, init_state: Mapping[str, Tensor], config: Any, seed: Any, train_config: Any) -> None:
    if not isinstance(config, BoundsConfig):
        raise ValueError(f"config must be a BoundsConfig, got {type(config).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(train_config, TrainConfig):
        raise ValueError(f"train_config must be a TrainConfig (the prior network is trained with it), got {train_config!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    missing = [n for n, _ in named if n not in init_state]
    if missing:
        raise ValueError(f"init_state lacks the trainable parameters {missing[:5]} (has {sorted(init_state)[:5]}...)")
    for nm, p in named:
        if tuple(init_state[nm].shape) != tuple(p.shape):
            raise ValueError(f"init_state[{nm!r}] has shape {tuple(init_state[nm].shape)}, the model's has {tuple(p.shape)}")


def _top_k(krylov: Mapping[str, Tensor], P: int, top_k: int | None) -> tuple[Tensor, Tensor]:
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
    k = vals.shape[0] if top_k is None else top_k
    if k > vals.shape[0]:
        raise ValueError(f"top_k={top_k} needs that many cached Ritz pairs, krylov has {vals.shape[0]}")
    return vals[:k].to(_F64), vecs[:, :k].to(_F64)


def bounds_for_run(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    krylov: Mapping[str, Tensor],
    *,
    train_config: TrainConfig | None = None,
    config: BoundsConfig | None = None,
    seed: int,
    prior_dir: str | Path | None = None,
) -> RunBounds:
    """Every bound of one trained network (module docstring).

    Args:
        model: The trained classifier (logits (N, classes)); left unchanged (evaluated in
            eval mode through ``torch.func.functional_call``, flags restored).
        init_state: Its full ``state_dict()`` at initialisation: the prior network starts there.
        train_data: ``(x, y)``, all n examples the model was trained on (labels as trained).
        test_data: ``(x, y)`` held-out examples (``holdout_test`` and test errors).
        krylov: ``ritz_values`` (k,) descending and ``ritz_vectors`` (P, k), top Hessian
            eigenpairs at ``theta*`` over the trainable parameters in
            ``model.named_parameters()`` order (the ``measure`` stage's ``krylov.pt``).
        train_config: How the run was trained (the prior network is trained the same way).
        config: Settings (default :class:`BoundsConfig()`).
        seed: The run's seed: split, prior training and every draw.
        prior_dir: Where the trained prior is kept (:mod:`~landscape.pipeline.bounds_prior`);
            ``None`` trains it in memory.

    Returns:
        :class:`RunBounds`.

    Raises:
        ValueError: On a bad config or seed, missing / misshapen initial parameters, bad data,
            a ``krylov`` whose vectors do not have P rows or fewer than ``top_k`` columns, or
            a missing ``train_config``.
        InvalidBoundError: If a bound falls below the test error it should cover.
    """
    config = BoundsConfig() if config is None else config
    _check_inputs(model, init_state, config, seed, train_config)
    assert isinstance(train_config, TrainConfig)  # checked above
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names, shapes = tuple(n for n, _ in named), tuple(p.shape for _, p in named)
    device, dtype = named[0][1].device, named[0][1].dtype
    theta_star = torch.cat([p.detach().reshape(-1).to(_F64) for _, p in named])
    theta_0 = torch.cat([init_state[n].detach().reshape(-1).to(device=device, dtype=_F64) for n in names])
    P = int(theta_star.shape[0])
    fold = batchnorm_fold(model, names)  # coordinates of the data-free class
    theta_fold = fold.apply(theta_star)
    lam, V = _top_k(krylov, P, config.top_k)
    if not fold.is_identity:  # the cached eigenvectors live in unfolded coordinates
        lam, V = lam[:0], V[:, :0]

    train = check_pair(train_data, "train_data", device)
    test = check_pair(test_data, "test_data", device)
    n = int(train[1].shape[0])
    num_fixed, fixed_bits = fixed_tensors(model, exclude=tuple(fold.buffers))
    fixed_nats = fixed_bits * math.log(2.0)
    net = FlatClassifier(model, names, shapes, dtype, config.eval_batch_size, fold.buffers)
    stored = FlatClassifier(model, names, shapes, dtype, config.eval_batch_size, {})  # the network as stored
    delta_all = config.delta + config.mc_delta

    prior_idx, bound_idx = split_indices(n, config.prior_fraction, seed)
    bound = (train[0][bound_idx.to(device)], train[1][bound_idx.to(device)])
    n_bound = int(bound_idx.shape[0])
    with eval_mode(model):
        # The prior network: trained from the initialisation on S_prior alone.
        sub = (train[0][prior_idx.to(device)], train[1][prior_idx.to(device)])
        prior_net, prior_status, prior_epochs = train_prior(
            model, init_state, sub, test, train_config, config.prior_epochs, seed, prior_dir
        )
        prior_flat = dict(prior_net.named_parameters())
        w_p = torch.cat([prior_flat[nm].detach().reshape(-1).to(_F64) for nm in names])
        prior_mean = batchnorm_fold(prior_net, names).apply(w_p)
        pnet = FlatClassifier(prior_net, names, shapes, dtype, config.eval_batch_size, {})
        prior_wrong = pnet.wrong(None, *bound)
        holdout_prior = holdout_bound(prior_wrong, delta_all)
        prior_test_err = float(pnet.wrong(None, *test).float().mean())
        prior = PriorSummary(
            kind="trained", n_prior=int(prior_idx.numel()), status=prior_status, epochs=int(prior_epochs),
            bound_error=float(prior_wrong.float().mean()), test_error=prior_test_err,
            dist_sq_init=float(((theta_fold - theta_0) ** 2).sum()),
            dist_sq_prior=float(((theta_fold - prior_mean) ** 2).sum()),
        )
        det_train = float(net.wrong(None, *train).float().mean())
        test_wrong = net.wrong(None, *test)
        det_test = float(test_wrong.float().mean())
        holdout_test = holdout_bound(test_wrong, delta_all)

        # Curvature: the exact GGN diagonal at theta* (the coordinates the posterior lives in).
        mu = theta_fold.to(dtype)
        mu64 = mu.to(_F64)
        dist_sq = float(((mu64 - prior_mean) ** 2).sum())

        def logits(flat: Tensor, x: Tensor) -> Tensor:
            return functional_call(model, {**net.buffers, **net.params(flat)}, (x,))

        diag = ggn_diagonal(logits, mu, bound[0][: config.curvature_examples], batch_size=config.eval_batch_size)

        grid = PriorVarianceGrid(config.prior_c, config.prior_b)
        common: dict[str, Any] = {
            "mc_delta": config.mc_delta, "mc_draws": config.mc_draws, "grid": grid, "P": P, "fixed_nats": fixed_nats,
            "n": n_bound, "delta": config.delta,
        }
        np_ = min(config.pilot_examples, n_bound)
        zp = torch.randn((config.pilot_draws, P), generator=seeded_generator(seed, 1, device=device), dtype=dtype, device=device)
        pilot = (zp, bound[0][:np_], bound[1][:np_])
        iso_cov, iso_rows = _pilot(net, mu, isotropic_family(P, sorted(config.sigmas)), None, dist_sq, common, pilot)
        curv_covs = curvature_family(diag, lam.to(device), V.to(device), sorted(config.posterior_c), config.eps, dtype)
        curv_cov, curv_rows = _pilot(net, mu, curv_covs, "c", dist_sq, common, pilot)

        # Arm 2: mean and variances optimised from (theta*, the chosen isotropic sigma^2) on
        # minibatches of S_bound (Dziugaite & Roy 2017); the certificate comes after, below.
        gen_opt = seeded_generator(seed, 5, device=device)

        def surrogate(flat: Tensor) -> Tensor:
            idx = torch.randint(0, n_bound, (min(config.optimize_batch, n_bound),), generator=gen_opt, device=device)
            return nn.functional.cross_entropy(logits(flat, bound[0][idx]), bound[1][idx])

        sigma2 = iso_cov.scale["sigma"] ** 2
        opt = optimize_diagonal_posterior(
            surrogate, mu, prior_mean.to(dtype), n=n_bound, delta=config.delta, grid=grid, generator=gen_opt,
            steps=config.optimize_steps, lr=config.optimize_lr, init_var=sigma2,
            init_prior_var=float(grid.variance(grid.nearest_index(sigma2 + dist_sq / P))),
        )
        opt_mean = opt.mean.detach().to(dtype)
        opt_cov = _diagonal_family(opt.var.detach(), dtype)
        opt_dist = float(((opt_mean.to(_F64) - prior_mean) ** 2).sum())

        # Fresh draws: the estimates behind the reported numbers.
        wrong = paired_wrong(net, mu, (iso_cov, curv_cov), *bound, config.mc_draws, seeded_generator(seed, 2, device=device))
        tests = draw_errors(net, mu, (iso_cov, curv_cov), *test, config.test_draws, seeded_generator(seed, 3, device=device))
        (opt_wrong,) = paired_wrong(net, opt_mean, (opt_cov,), *bound, config.mc_draws, seeded_generator(seed, 4, device=device))
        (opt_tests,) = draw_errors(net, opt_mean, (opt_cov,), *test, config.test_draws, seeded_generator(seed, 6, device=device))

        # Parameter counting: theta* quantised to b bits, on all n examples (the stored
        # buffers, if any, are described at their own width).
        sizes = [math.prod(s) for s in shapes]
        quantised = {b: quantize_uniform(theta_star, sizes, b) for b in config.quant_bits}
        q_err = {b: float(stored.wrong(q, *train).float().mean()) for b, q in quantised.items()}
        _, stored_fixed_bits = fixed_tensors(model)
        occam = quantized_occam_bound(q_err, P, len(sizes), n, delta_all, extra_bits=stored_fixed_bits)
        occam_test = float(stored.wrong(quantised[occam.bits], *test).float().mean())

    iso = _certify("isotropic", iso_cov, wrong[0], tests[0], dist_sq, common, iso_rows, config.mc_delta, config.delta)
    curv = _certify("curvature", curv_cov, wrong[1], tests[1], dist_sq, common, curv_rows, config.mc_delta, config.delta)
    optd = _certify("optimized", opt_cov, opt_wrong, opt_tests, opt_dist, common, [], config.mc_delta, config.delta)

    checks = (("occam", occam.bound, occam_test), ("isotropic", iso.bound, iso.test_error),
              ("curvature", curv.bound, curv.test_error), ("optimized", optd.bound, optd.test_error))
    for name, value, err in checks:
        if not value >= err:
            raise InvalidBoundError(
                f"{name} bound {value:.6g} is below the test error {err:.6g} it must cover "
                f"(n_bound={n_bound}, seed={seed}): a bug or a broken input (prior not independent of the data?)"
            )
    n_prior = int(prior_idx.numel())
    certifies = {
        "isotropic": f"Gibbs classifier N(theta*, sigma^2 I); theta* trained on all {n} examples; bound on the {n_bound} of S_bound",
        "curvature": f"Gibbs classifier N(theta*, c A^-1) (GGN diagonal + top-{int(lam.numel())} Hessian pairs); theta* trained on "
                     f"all {n} examples; bound on the {n_bound} of S_bound",
        "optimized": f"Gibbs classifier N(mu, diag s), (mu, s) optimised from theta* on S_bound; bound on the {n_bound} of S_bound",
        "holdout_prior": f"deterministic prior network w_p, trained on the {n_prior} of S_prior only; bound on the {n_bound} of S_bound",
        "holdout_test": f"deterministic theta*, trained on all {n} examples; bound on the {int(test[1].shape[0])} test examples",
        "occam": f"deterministic theta* quantised to {occam.bits} bits per parameter; bound on all {n} training examples",
    }
    values = {"isotropic": iso.bound, "curvature": curv.bound, "optimized": optd.bound, "holdout_prior": holdout_prior.bound,
              "holdout_test": holdout_test.bound, "occam": occam.bound}
    d = diag.cpu()
    return RunBounds(
        n_train=n,
        n_bound=n_bound,
        n_test=int(test[1].shape[0]),
        num_params=P,
        num_fixed=num_fixed,
        fixed_nats=fixed_nats,
        prior=prior,
        top_k=int(lam.numel()),
        ritz_values=tuple(float(v) for v in lam.cpu()),
        diag_summary={"min": float(d.min()), "median": float(d.median()), "max": float(d.max()), "mean": float(d.mean()),
                      "num_examples": int(min(config.curvature_examples, n_bound))},
        train_error=det_train,
        test_error=det_test,
        isotropic=iso,
        curvature=curv,
        optimized=optd,
        optimizer={**opt.to_dict(), "steps": config.optimize_steps, "lr": config.optimize_lr, "batch": config.optimize_batch,
                   "data": "S_bound minibatches (the posterior may depend on S_bound; the prior may not)"},
        holdout_prior=holdout_prior,
        holdout_test=holdout_test,
        occam=occam,
        certifies=certifies,
        ordering=tuple(sorted(values, key=lambda key: values[key])),
        folded_batchnorm=fold.modules,
        seed=seed,
        config=config,
    )


# --------------------------------------------------------------------------------------
# The stage: every seed of every run in bounds.runs
# --------------------------------------------------------------------------------------


def parse_bounds_section(values: Any, experiments: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``bounds`` section's run list and sanity pair against ``experiments``.

    ``bounds.runs`` is a non-empty list of distinct ``"<experiment>/<config>"`` names;
    ``bounds.sanity`` is null or ``{real: <run>, random: <run>}``, both in ``runs``, the
    same model and training except ``random_labels`` (true for ``random`` only) and
    ``snapshot_every``; ``bounds.settings`` is left to ``BoundsConfig``.

    Returns:
        ``{"runs": [(experiment, config), ...], "sanity": {"real", "random"} | None,
        "settings": mapping}``.

    Raises:
        ConfigError: naming the key and value at fault.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"bounds must be a mapping with keys ['runs', 'sanity', 'settings'], got {values!r}")
    unknown = sorted(set(values) - {"runs", "sanity", "settings"})
    if unknown:
        raise ConfigError(f"unknown key bounds.{unknown[0]}; allowed keys: ['runs', 'sanity', 'settings']")
    names = values.get("runs")
    if not isinstance(names, list) or not names or not all(isinstance(r, str) for r in names):
        raise ConfigError(f"bounds.runs={names!r} is not allowed; allowed: a non-empty list of '<experiment>/<config>' strings")
    if len(set(names)) != len(names):
        raise ConfigError(f"bounds.runs={names!r} repeats a run")
    runs = []
    for name in names:
        exp, _, cfg = name.partition("/")
        configs = (experiments.get(exp) or {}).get("configs") if isinstance(experiments.get(exp), Mapping) else None
        if not configs or cfg not in configs:
            valid = [f"{e}/{c}" for e, spec in experiments.items() if isinstance(spec, Mapping) for c in (spec.get("configs") or {})]
            raise ConfigError(f"bounds.runs entry {name!r} is not an experiment config; valid: {valid}")
        runs.append((exp, cfg))
    sanity = values.get("sanity")
    if sanity is not None:
        if not isinstance(sanity, Mapping) or set(sanity) != {"real", "random"}:
            raise ConfigError(f"bounds.sanity={sanity!r} is not allowed; allowed: null or {{real: <run>, random: <run>}}")
        specs = {}
        for role in ("real", "random"):
            if sanity[role] not in names:
                raise ConfigError(f"bounds.sanity.{role}={sanity[role]!r} must be one of bounds.runs {names}")
            exp, _, cfg = sanity[role].partition("/")
            specs[role] = parse_config(RunConfig, experiments[exp]["configs"][cfg], f"experiments.{exp}.configs.{cfg}")
        if specs["real"].train.random_labels or not specs["random"].train.random_labels:
            raise ConfigError(
                f"bounds.sanity needs random_labels false for real={sanity['real']!r} and true for random={sanity['random']!r}"
            )
        same = lambda t: {**t.recipe(), "random_labels": None, "snapshot_every": None}  # noqa: E731
        if dict(specs["real"].model) != dict(specs["random"].model) or same(specs["real"].train) != same(specs["random"].train):
            raise ConfigError(
                f"bounds.sanity: {sanity['real']!r} and {sanity['random']!r} must be the same network and training "
                "except random_labels (and snapshot_every)"
            )
        sanity = {"real": sanity["real"], "random": sanity["random"]}
    settings = values.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"bounds.settings must be a mapping, got {settings!r}")
    return {"runs": runs, "sanity": sanity, "settings": dict(settings)}


def _bound_seed(layout: Layout, cfg: BoundsConfig, data: dict, device: torch.device, job: tuple[str, str, int]) -> dict:
    """Bound one seed's run; write its bounds.json; return the summary."""
    experiment, config, seed = job
    started = time.perf_counter()
    out = layout.bounds_run(experiment, config, seed)
    status = run_status(layout, experiment, config, seed)
    cpu_started = time.process_time()
    curvature = read_json(layout.curvature(experiment, config, seed))
    if status != "completed" or curvature.get("status") != "measured":
        why = f"run {status}" if status != "completed" else f"curvature {curvature.get('status')}"
        summary: dict[str, Any] = {"status": f"skipped: {why}"}
        write_json(out, summary)
        return summary
    stored = load_run(layout, experiment, config, seed, device)
    assert stored.model is not None  # a completed run carries its model
    init_state = initial_model(stored, device).state_dict()
    train_cfg = parse_config(TrainConfig, stored.train, f"runs/{experiment}/{config}/seed{seed}/model.pt:train")
    x_train, y_train = data["train"]
    if train_cfg.random_labels:
        y_train = randomize_labels(y_train, data["num_classes"], seed)
    krylov = torch.load(layout.krylov(experiment, config, seed), map_location="cpu", weights_only=False)
    result = bounds_for_run(
        stored.model,
        init_state,
        (x_train, y_train),
        data["test"],
        krylov,
        train_config=train_cfg,
        config=cfg,
        seed=seed,
        prior_dir=layout.bounds_prior(experiment, config, seed),
    )
    summary = {"status": "bounded", "random_labels": train_cfg.random_labels, "wall_time_s": time.perf_counter() - started,
               "cpu_time_s": time.process_time() - cpu_started, **result.to_dict()}
    write_json(out, summary)
    b = summary["bounds"]
    print(
        f"{experiment}/{config}/seed{seed}: " + " ".join(f"{k}={b[k]:.4f}" for k in FAMILIES)
        + f" (train error {result.train_error:.4f}, test error {result.test_error:.4f}; {summary['wall_time_s']:.1f}s)",
        flush=True,
    )
    return summary


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Bound every seed of every run in ``bounds.runs``; write the per-seed and summary files.

    Seeds run in forked workers (:func:`~landscape.pipeline.parallel.map_forked`,
    :func:`~landscape.pipeline.runtime.cpu_workers`); each is seeded, so results do not
    depend on the worker count.

    Returns:
        The contents of ``bounds/metrics.json``.

    Raises:
        ConfigError: A bad ``bounds`` section.
        StageError: A listed run was never trained, or a bound fell below its test error.
    """
    section_cfg = parse_bounds_section(section(params, "bounds"), params.get("experiments") or {})
    cfg = parse_config(BoundsConfig, section_cfg["settings"], "bounds.settings")
    datasets = {exp: experiment_dataset(params, exp) for exp, _ in section_cfg["runs"]}
    configure_torch()
    device = pick_device()
    data = {key: torch.load(layout.prepared(key), map_location="cpu", weights_only=False) for key in set(datasets.values())}
    jobs = [(exp, c, seed) for exp, c in section_cfg["runs"] for seed in group_seeds(params, exp)]
    missing = [f"{e}/{c}/seed{s}" for e, c, s in jobs if not layout.run(e, c, s).model.is_file()]
    if missing:
        raise StageError(f"bounds.runs needs trained runs that are missing: {missing[:5]} (run `dvc repro` for their train/measure stages)")

    started = time.perf_counter()
    workers = cpu_workers(device, len(jobs))
    by_dataset = {exp: data[key] for exp, key in datasets.items()}
    try:  # jobs are independent and each is seeded: same results in any order
        results = map_forked(lambda job: _bound_seed(layout, cfg, by_dataset[job[0]], device, job), jobs, workers)
    except InvalidBoundError as exc:  # a bound below its test error: never write a summary
        raise StageError(f"invalid bound: {exc}") from None

    per_run: dict[str, dict[int, dict]] = {}
    for (e, c, s), r in zip(jobs, results, strict=True):
        per_run.setdefault(f"{e}/{c}", {})[s] = r
    metrics: dict = {"runs": {key: summarise(v, FAMILIES) for key, v in per_run.items()}}
    if section_cfg["sanity"] is not None:
        metrics["sanity"] = sanity_summary(section_cfg["sanity"], metrics["runs"])
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["workers"] = workers
    write_json(layout.bounds_metrics, metrics)
    print(f"bounds: {len(jobs)} seed runs in {metrics['wall_time_s']:.1f}s ({workers} workers)")
    return metrics
