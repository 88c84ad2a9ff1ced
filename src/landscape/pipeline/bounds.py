"""bounds stage: occam vs. isotropic vs. eq (8) PAC-Bayes bounds of trained runs (H4).

:func:`bounds_for_run` bounds one trained network (hypothesis H4 of the first plan:
PAC-Bayes bounds whose posterior covariance follows the Hessian beat naive parameter-count
bounds); :func:`run` does it for every seed of every run in ``bounds.runs``. For a network
trained from ``theta_0`` to ``theta*`` on the sample S (n examples) it reports three upper
bounds on a true 0-1 risk:

1. **occam**: the Occam / description-length bound of the deterministic float32 network
   on all of S (Langford 2005, Thm 4.1; :func:`~landscape.bounds.naive.occam_bound`),
   ``32 ln 2`` nats per stored float: the raw parameter count.
2. **isotropic**: the PAC-Bayes-kl bound (Seeger 2002; Maurer 2004;
   :mod:`~landscape.bounds.pacbayes`) of the Gibbs classifier ``Q = N(mu, sigma^2 I)``.
3. **hessian**: the same bound for the eq (8) posterior ``Q = N(mu, c (H + eps I)^-1)``
   from the top-k Ritz pairs of H at ``theta*`` cached by the ``measure`` stage and the mean
   complement curvature ``(tr H - sum_i lambda_i) / (P - k)`` on the rest (Woodbury /
   determinant lemma, KL in closed form), with the KL split into its effective-rank,
   log-det and trace forms (:func:`~landscape.bounds.effective.complexity_summary`).

**Data-dependent prior** (Parrado-Hernandez et al. 2012; Dziugaite et al. 2021). With
``prior_fraction = a > 0``, S is split by a seeded permutation (independent of the data)
into ``S_prior`` (floor(a n) examples) and ``S_bound`` (the rest). A copy of the network is
trained from ``theta_0`` on ``S_prior`` alone with the run's own recipe (same optimizer,
schedule, batch size, seed; ``prior_epochs`` may shorten it): its weights ``w_p`` centre the
prior ``P_j = N(w_p, lambda_j I)``, and the bound is taken over ``S_bound`` only (n_bound
examples). ``prior_fraction = 0`` centres the prior at ``theta_0`` and uses all n examples
(Dziugaite & Roy 2017).

**Posterior mean** (Dziugaite & Roy 2017 optimise it on the bound): the candidates are
``mu_t = w_p + t (theta* - w_p)`` for t in ``mean_grid`` (t = 1 is the trained network).
Both families share the chosen t, so they differ only in their covariance, which is what
H4 asks about.

**Choosing the posterior costs nothing**: the PAC-Bayes bound holds for every Q at once,
and the Monte-Carlo estimate uses fresh draws, independent of the pilot draws
(``pilot_draws`` networks on the first ``pilot_examples`` bound examples, common random
numbers across candidates) that score ``(t, sigma)``, then ``(c, eps)`` at that t. The
score is the bound the final estimate would give if it matched the pilot error: a
plug-in, never reported as a bound. The prior variance comes from Dziugaite & Roy's
countable grid (:func:`~landscape.bounds.posterior.best_prior`).

**Empirical risk by paired draws** (:func:`~landscape.bounds.posterior.paired_wrong`,
:func:`~landscape.bounds.mc.paired_draws_bound`): N = ``mc_draws`` (example, network)
pairs; ``emp(Q) <= kl^-1(X_bar, ln(1/delta') / N)`` with probability >= 1 - delta'. The
final number is ``kl^-1(that, (KL + fixed + ln(2 sqrt(n_bound) / delta) + union) /
n_bound)``. The posterior's test error is estimated from ``test_draws`` networks, each
evaluated on the whole test split (sanity check only).

**Data-dependent fixed tensors.** Networks are evaluated in eval mode (the shared BN
policy). Every affine BatchNorm layer is *folded* (:mod:`~landscape.bounds.bn_fold`): its
statistics are absorbed into ``(gamma, beta)`` by a linear map T and reset to the data-free
``(0, 1)``; posterior (``T theta*``, eq (8) pushed forward as ``T# Q``) and prior mean
(``T_p w_p``, folded with the prior network's own statistics) live in those coordinates.
Any other floating buffer or frozen parameter is charged ``bits ln 2`` nats per entry.

Confidence: each PAC-Bayes bound holds with probability >= ``1 - delta - mc_delta``; both
together with >= ``1 - delta - 2 mc_delta``. The Occam bound is taken at ``delta +
mc_delta``. Sanity checks: every bound must be at least the corresponding test error; a
violation raises :class:`InvalidBoundError` naming the numbers. The ordering is reported,
never assumed.

Outputs (paths from :class:`~landscape.pipeline.layout.Layout`):
``bounds/runs/<exp>/<cfg>/seed<k>/bounds.json`` per seed (a diverged or unmeasured run is
recorded as skipped) and ``bounds/metrics.json`` (per run: mean/sd of each bound, test
errors, orderings; the random-label sanity pair ``bounds.sanity``). Each prior network is
kept in ``bounds/priors/<exp>/<cfg>/seed<k>/`` (checkpointed while it trains, ``persist`` in
DVC): a killed stage resumes the prior it was training and skips the finished ones.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from landscape.bounds.bn_fold import batchnorm_fold
from landscape.bounds.effective import complexity_summary
from landscape.bounds.gaussians import complement_curvature
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.mc import paired_draws_bound
from landscape.bounds.naive import occam_bound
from landscape.bounds.pacbayes import BoundResult, PriorVarianceGrid, pac_bayes_kl_bound
from landscape.bounds.posterior import (
    FlatClassifier,
    GaussianFamily,
    PosteriorBound,
    PriorSummary,
    best_prior,
    check_pair,
    draw_errors,
    fixed_tensors,
    hessian_family,
    isotropic_family,
    paired_wrong,
    pilot_error,
    split_indices,
)
from landscape.functional import eval_mode
from landscape.io import read_json, write_json
from landscape.pipeline.bounds_prior import train_prior
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
    "BoundsConfig",
    "InvalidBoundError",
    "RunBounds",
    "bounds_for_run",
    "parse_bounds_section",
    "run",
]

_F64 = torch.float64
_FORMS = ("exact", "logdet", "effective_rank", "trace")
FAMILIES = ("occam", "isotropic", "hessian")


class InvalidBoundError(RuntimeError):
    """A reported bound fell below the test error it must cover (a bug or a leaked prior)."""


def _grid_ok(values: Any, lo: float = 0.0, closed: bool = False) -> bool:
    def ok(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return v >= lo if closed else v > lo

    return isinstance(values, (list, tuple)) and len(values) > 0 and all(ok(v) for v in values)


_GRID = "a non-empty list of finite floats > 0"
_GRIDS = ("sigmas", "posterior_c", "eps", "mean_grid")
_INTS = ("mc_draws", "test_draws", "pilot_draws", "pilot_examples", "eval_batch_size", "top_k", "prior_epochs")
# Grid fields are annotated ``tuple[Real, ...]`` (stored as tuples of floats): parse_config
# would try float() on a whole list annotated ``tuple[float, ...]``. The type checker, which
# does not count float literals as ``numbers.Real``, reads them as tuples of floats.
if TYPE_CHECKING:
    _Grid = tuple[float, ...]
else:
    _Grid = tuple[Real, ...]


@dataclass(frozen=True)
class BoundsConfig(Checked):
    """Settings of the ``bounds`` stage (``bounds.settings``; build with ``parse_config``).

    Attributes:
        delta: Failure probability of the PAC-Bayes side, in (0, 1).
        mc_delta: Failure probability delta' of the Monte-Carlo side, in (0, 1);
            ``delta + mc_delta < 1``.
        prior_fraction: Share of the training examples used to train the prior mean, in
            [0, 0.95]; 0 centres the prior at the initialisation and bounds over all n.
        prior_epochs: Epochs of the prior's training (``None``: the run's own).
        mean_grid: Candidate t of the posterior mean ``w_p + t (theta* - w_p)``, in [0, 1].
        mc_draws: N, (example, network) pairs of the final Monte-Carlo estimate.
        test_draws: Networks drawn from the chosen posterior and evaluated on the whole test
            split (sanity check).
        pilot_draws: Networks per candidate posterior that score it (selection only).
        pilot_examples: Bound examples (the first ones) the pilot networks are scored on.
        prior_c: Largest prior variance of the countable grid ``prior_c exp(-j / prior_b)``.
        prior_b: Grid points per e-fold of prior variance.
        sigmas: Candidate posterior standard deviations of the isotropic family.
        posterior_c: Candidate scales c of the eq (8) family.
        eps: Candidate dampings eps of the eq (8) family (units of Hessian eigenvalues).
        top_k: Ritz pairs used (the leading ones); ``None`` uses all that were cached.
        eval_batch_size: Networks (paired draws) or examples per forward pass.
        bn_mode: BatchNorm policy; only ``"eval"`` (stored running statistics) is valid
            for these bounds (batch statistics would make a prediction depend on the
            other examples of its batch).
    """

    delta: float = field(default=0.025, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    mc_delta: float = field(default=0.01, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    prior_fraction: float = field(default=0.5, metadata=rule("a float in [0, 0.95]", lambda x: 0 <= x <= 0.95))
    prior_epochs: int | None = field(default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1))
    mean_grid: _Grid = field(
        default=(0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
        metadata=rule("a non-empty list of floats in [0, 1]", lambda v: _grid_ok(v, 0.0, True) and max(v) <= 1.0),
    )
    mc_draws: int = field(default=2000, metadata=rule("an int >= 1", lambda x: x >= 1))
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
    top_k: int | None = field(default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1))
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

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class RunBounds:
    """The three bounds of one trained network, their inputs and their ordering.

    Attributes:
        n_train: Training examples of the run.
        n_bound: Examples the PAC-Bayes bounds are over (``n_train - n_prior``).
        n_test: Test examples of the sanity check.
        num_params: P, trainable parameters (dimension of the Gaussians).
        num_fixed: Entries of the floating tensors charged by description length.
        fixed_nats: Their description length, nats (see the module docstring).
        prior: :class:`PriorSummary`.
        top_k: Ritz pairs used by the eq (8) posterior.
        ritz_values: (k,) those eigenvalues.
        lambda_rest: Curvature assigned to the complement of their span.
        trace: ``tr(H)`` estimate it came from.
        train_error: 0-1 training error of the deterministic network on all of S.
        test_error: Its test error.
        occam: Parameter-count bound of the deterministic network on all n_train examples
            (confidence ``1 - delta - mc_delta``).
        isotropic: :class:`PosteriorBound` of ``N(mu, sigma^2 I)``.
        hessian: :class:`PosteriorBound` of ``T# N(mu, c (H + eps I)^-1)``.
        ordering: Family names sorted by bound, smallest first.
        hessian_below_isotropic: ``hessian.bound < isotropic.bound``.
        isotropic_below_occam: ``isotropic.bound < occam.bound``.
        hessian_below_occam: ``hessian.bound < occam.bound``.
        folded_batchnorm: BatchNorm modules whose statistics were folded.
        seed: Seed of the split, the prior's training and every Monte-Carlo draw.
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


def _score(err: float, cov: GaussianFamily, dist_sq: float, common: dict) -> tuple[float, float]:
    """(plug-in bound if the final estimate matched ``err``, its KL)."""
    upper = float(kl_inv_upper(err, math.log(1.0 / common["mc_delta"]) / common["mc_draws"]))
    choice = best_prior(cov, dist_sq, upper, common["grid"], common["P"], common["fixed_nats"], common["n"], common["delta"])
    return choice.result.bound, choice.kl.kl


def bounds_for_run(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    krylov: Mapping[str, Tensor],
    trace: float,
    *,
    train_config: TrainConfig | None = None,
    config: BoundsConfig | None = None,
    seed: int,
    prior_dir: str | Path | None = None,
) -> RunBounds:
    """Occam, isotropic and eq (8) PAC-Bayes bounds of one trained network (module docstring).

    Args:
        model: The trained classifier (logits (N, classes)); left unchanged (evaluated in
            eval mode through ``torch.func.functional_call``, flags restored).
        init_state: Its ``state_dict()`` at initialisation (rebuilt from the training seed):
            the prior's starting point. Must hold every trainable parameter of ``model``
            with the same shape (and all of its state when a prior is trained).
        train_data: ``(x, y)``, all n examples the model was trained on (labels as trained).
        test_data: ``(x, y)`` held-out examples (sanity check only).
        krylov: ``ritz_values`` (k,) descending and ``ritz_vectors`` (P, k), top eigenpairs of
            the Hessian of the training loss at ``theta*`` over the trainable parameters in
            ``model.named_parameters()`` order (the ``measure`` stage's ``krylov.pt``).
        trace: ``tr(H)`` estimate for the same Hessian (sets the complement curvature).
        train_config: How the run was trained (the prior is trained the same way); needed
            when ``config.prior_fraction > 0``.
        config: Settings (default :class:`BoundsConfig()`).
        seed: The run's seed: split, prior training and every draw (the result is a
            deterministic function of it).
        prior_dir: Where the trained prior is checkpointed and kept, so that a killed
            stage resumes it and a rerun skips it (:mod:`~landscape.pipeline.bounds_prior`);
            ``None`` trains it in memory.

    Returns:
        :class:`RunBounds`.

    Raises:
        ValueError: On a bad config or seed, missing / misshapen initial parameters, bad data,
            a ``krylov`` whose vectors do not have P rows or fewer than ``top_k`` columns, a
            non-finite ``trace``, or a missing ``train_config``.
        InvalidBoundError: If a bound falls below the test error it should cover.
    """
    config = BoundsConfig() if config is None else config
    if not isinstance(config, BoundsConfig):
        raise ValueError(f"config must be a BoundsConfig, got {type(config).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if config.prior_fraction > 0 and not isinstance(train_config, TrainConfig):
        raise ValueError(f"prior_fraction={config.prior_fraction} trains a prior: train_config must be a TrainConfig, got {train_config!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    names = tuple(n for n, _ in named)
    shapes = tuple(p.shape for _, p in named)
    device, dtype = named[0][1].device, named[0][1].dtype
    missing = [n for n in names if n not in init_state]
    if missing:
        raise ValueError(f"init_state lacks the trainable parameters {missing[:5]} (has {sorted(init_state)[:5]}...)")
    for nm, s in zip(names, shapes, strict=True):
        if tuple(init_state[nm].shape) != tuple(s):
            raise ValueError(f"init_state[{nm!r}] has shape {tuple(init_state[nm].shape)}, the model's has {tuple(s)}")
    theta_star = torch.cat([p.detach().reshape(-1).to(_F64) for _, p in named])
    theta_0 = torch.cat([init_state[n].detach().reshape(-1).to(device=device, dtype=_F64) for n in names])
    P = int(theta_star.shape[0])
    fold = batchnorm_fold(model, names)  # coordinates of the data-free class
    theta_fold = fold.apply(theta_star)

    train = check_pair(train_data, "train_data", device)
    test = check_pair(test_data, "test_data", device)
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

    num_fixed, fixed_bits = fixed_tensors(model, exclude=tuple(fold.buffers))
    fixed_nats = fixed_bits * math.log(2.0)
    net = FlatClassifier(model, names, shapes, dtype, config.eval_batch_size, fold.buffers)

    # The prior mean: the initialisation, or a network trained on S_prior alone.
    prior_idx, bound_idx = split_indices(n, config.prior_fraction, seed)
    bound = (train[0][bound_idx.to(device)], train[1][bound_idx.to(device)])
    n_bound = int(bound_idx.shape[0])
    with eval_mode(model):
        if prior_idx.numel() > 0:
            sub = (train[0][prior_idx.to(device)], train[1][prior_idx.to(device)])
            assert train_config is not None  # checked above: prior_fraction > 0
            prior_net, prior_status, prior_epochs = train_prior(
                model, init_state, sub, test, train_config, config.prior_epochs, seed, prior_dir
            )
            prior_flat = dict(prior_net.named_parameters())
            w_p = torch.cat([prior_flat[nm].detach().reshape(-1).to(_F64) for nm in names])
            prior_mean = batchnorm_fold(prior_net, names).apply(w_p)
            pnet = FlatClassifier(prior_net, names, shapes, dtype, config.eval_batch_size, {})
            prior_bound_err = float(pnet.wrong(None, *bound).float().mean())
            prior_test_err = float(pnet.wrong(None, *test).float().mean())
            kind = "trained"
        else:
            prior_mean, prior_status, prior_epochs, kind = theta_0, "init", 0, "init"
            prior_bound_err = prior_test_err = float("nan")
        prior = PriorSummary(
            kind=kind,
            n_prior=int(prior_idx.numel()),
            status=prior_status,
            epochs=int(prior_epochs),
            bound_error=prior_bound_err,
            test_error=prior_test_err,
            dist_sq_init=float(((theta_fold - theta_0) ** 2).sum()),
            dist_sq_prior=float(((theta_fold - prior_mean) ** 2).sum()),
        )

        grid = PriorVarianceGrid(config.prior_c, config.prior_b)
        common: dict[str, Any] = {
            "mc_delta": config.mc_delta, "mc_draws": config.mc_draws, "grid": grid, "P": P, "fixed_nats": fixed_nats, "n": n_bound,
            "delta": config.delta,
        }
        means = {t: (prior_mean + t * (theta_fold - prior_mean)).to(dtype) for t in config.mean_grid}
        # Distances of the means as they are evaluated (rounded to the model's dtype).
        dists = {t: float(((m.to(_F64) - prior_mean) ** 2).sum()) for t, m in means.items()}
        np_ = min(config.pilot_examples, n_bound)
        px, py = bound[0][:np_], bound[1][:np_]
        zp = torch.randn((config.pilot_draws, P), generator=seeded_generator(seed, 1, device=device), dtype=dtype, device=device)

        # Pilot 1: isotropic family over (t, sigma).
        iso_rows, iso_best = [], None
        t_rises, t_last = 0, math.inf
        for t, mu in means.items():
            if t_rises == 2:  # the best score per t rose twice in a row along mean_grid
                break
            t_best = math.inf
            rises, last = 0, math.inf
            for cov in isotropic_family(P, sorted(config.sigmas)):
                err = pilot_error(net, mu, cov, zp, px, py)
                score, kl = _score(err, cov, dists[t], common)
                iso_rows.append({"t": t, **cov.scale, "pilot_error": err, "pilot_score": score, "kl": kl})
                if iso_best is None or score < iso_best[0]:
                    iso_best = (score, t, cov)
                t_best = min(t_best, score)
                rises, last = (rises + 1 if score > last else 0), score
                if rises == 2:  # past the minimum of this unimodal-looking curve: save the rest
                    break
            t_rises, t_last = (t_rises + 1 if t_best > t_last else 0), t_best
        assert iso_best is not None  # the grids are non-empty
        _, t_star, iso_cov = iso_best
        # Pilot 2: eq (8) family over (c, eps) at the same mean.
        hes_rows, hes_best = [], None
        hes_covs = hessian_family(theta_star, lam, V, lambda_rest, sorted(config.posterior_c), config.eps, fold, dtype)
        rises, last = 0, math.inf
        for cov in hes_covs:  # eps-major, c ascending
            if cov.scale["c"] == min(config.posterior_c):
                rises, last = 0, math.inf
            elif rises >= 2:
                continue
            err = pilot_error(net, means[t_star], cov, zp, px, py)
            score, kl = _score(err, cov, dists[t_star], common)
            hes_rows.append({"t": t_star, **cov.scale, "pilot_error": err, "pilot_score": score, "kl": kl})
            if hes_best is None or score < hes_best[0]:
                hes_best = (score, cov)
            rises, last = (rises + 1 if score > last else 0), score
        assert hes_best is not None
        hes_cov = hes_best[1]

        # Fresh draws: the estimates behind the reported numbers.
        mu = means[t_star]
        covs = (iso_cov, hes_cov)
        wrong = paired_wrong(net, mu, covs, *bound, config.mc_draws, seeded_generator(seed, 2, device=device))
        tests = draw_errors(net, mu, covs, *test, config.test_draws, seeded_generator(seed, 3, device=device))
        det_train = float(net.wrong(None, *train).float().mean())
        det_test = float(net.wrong(None, *test).float().mean())

    families = {}
    for family, cov, w, te, rows in (
        ("isotropic", iso_cov, wrong[0], tests[0], iso_rows),
        ("hessian", hes_cov, wrong[1], tests[1], hes_rows),
    ):
        sample = paired_draws_bound(w.cpu().numpy(), config.mc_delta)
        choice = best_prior(cov, dists[t_star], sample.upper, grid, P, fixed_nats, n_bound, config.delta)
        families[family] = PosteriorBound(
            family=family,
            scale={"t": t_star, **cov.scale},
            bound=choice.result.bound,
            delta_total=config.delta + config.mc_delta,
            prior_index=choice.index,
            prior_var=choice.variance,
            kl=choice.kl,
            fixed_nats=fixed_nats,
            pac_bayes=choice.result,
            sample=sample,
            test_error=float(te.mean()),
            test_error_stderr=float(te.std(ddof=1) / math.sqrt(te.size)) if te.size > 1 else math.nan,
            dist_sq=dists[t_star],
            candidates=tuple(rows),
        )
    iso, hes = families["isotropic"], families["hessian"]

    # Effective-rank / log-det / trace forms of the chosen eq (8) posterior's KL. Exact
    # only in unfolded coordinates: with BN folded the split is not computed.
    if fold.is_identity:
        spectrum = torch.cat([lam.cpu(), torch.tensor([lambda_rest], dtype=_F64)])
        mult = torch.cat([torch.ones(k, dtype=_F64), torch.tensor([float(P - k)], dtype=_F64)])
        summary = complexity_summary(
            spectrum, eps=hes.scale["eps"], c=hes.scale["c"], prior_var=hes.prior_var, dist_sq=hes.dist_sq, multiplicities=mult
        )
        forms = {
            f: pac_bayes_kl_bound(
                hes.sample.upper, summary.kl_with(f) + fixed_nats, n_bound, config.delta, union_cost=hes.pac_bayes.union_cost,
                grid_size=None,
            ).bound
            for f in _FORMS
        }
        hes = dataclasses.replace(hes, complexity=summary, bounds_by_form=forms)

    # Parameter-count baseline: the stored network as it is evaluated, on all n examples.
    _, stored_fixed_bits = fixed_tensors(model)
    bits = {torch.finfo(p.dtype).bits for _, p in named}
    param_bits = sum(p.numel() * torch.finfo(p.dtype).bits for _, p in named)
    total_bits = param_bits + stored_fixed_bits
    b = next(iter(bits)) if len(bits) == 1 and total_bits % next(iter(bits)) == 0 else 1
    occam = occam_bound(det_train, total_bits // b, n, config.delta + config.mc_delta, bits_per_param=b)

    checks = (("occam", occam.bound, det_test), ("isotropic", iso.bound, iso.test_error), ("hessian", hes.bound, hes.test_error))
    for name, value, err in checks:
        if not value >= err:
            raise InvalidBoundError(
                f"{name} bound {value:.6g} is below the test error {err:.6g} it must cover "
                f"(n_bound={n_bound}, seed={seed}): a bug or a broken input (prior not independent of the data?)"
            )
    values = {"occam": occam.bound, "isotropic": iso.bound, "hessian": hes.bound}
    return RunBounds(
        n_train=n,
        n_bound=n_bound,
        n_test=int(test[1].shape[0]),
        num_params=P,
        num_fixed=num_fixed,
        fixed_nats=fixed_nats,
        prior=prior,
        top_k=int(k),
        ritz_values=tuple(float(v) for v in lam.cpu()),
        lambda_rest=float(lambda_rest),
        trace=float(trace),
        train_error=det_train,
        test_error=det_test,
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


def _mean_sd(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"),
        "n": len(finite),
    }


def _bound_seed(layout: Layout, cfg: BoundsConfig, data: dict, device: torch.device, job: tuple[str, str, int]) -> dict:
    """Bound one seed's run; write its bounds.json; return the summary."""
    experiment, config, seed = job
    started = time.perf_counter()
    out = layout.bounds_run(experiment, config, seed)
    status = run_status(layout, experiment, config, seed)
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
    trace = curvature["trace"]
    result = bounds_for_run(
        stored.model,
        init_state,
        (x_train, y_train),
        data["test"],
        krylov,
        float("nan") if trace is None else float(trace),
        train_config=train_cfg,
        config=cfg,
        seed=seed,
        prior_dir=layout.bounds_prior(experiment, config, seed),
    )
    summary = {"status": "bounded", "random_labels": train_cfg.random_labels, "wall_time_s": time.perf_counter() - started,
               **result.to_dict()}
    write_json(out, summary)
    b = summary["bounds"]
    print(
        f"{experiment}/{config}/seed{seed}: occam={b['occam']:.4f} isotropic={b['isotropic']:.4f} "
        f"hessian={b['hessian']:.4f} (test error {result.test_error:.4f}, posterior {result.hessian.test_error:.4f}; "
        f"t={result.hessian.scale['t']}; order {' < '.join(result.ordering)}; {summary['wall_time_s']:.1f}s)",
        flush=True,
    )
    return summary


def _summarise(per_seed: dict[int, dict]) -> dict:
    """Mean/sd over the bounded seeds of one run, and its per-seed numbers."""
    ok = [s for s in per_seed.values() if s.get("status") == "bounded"]
    return {
        "seeds_bounded": len(ok),
        "seeds_skipped": len(per_seed) - len(ok),
        **{f"{f}_bound": _mean_sd([s["bounds"][f] for s in ok]) for f in FAMILIES},
        "test_error": _mean_sd([s["test_error"] for s in ok]),
        "train_error": _mean_sd([s["train_error"] for s in ok]),
        "isotropic_test_error": _mean_sd([s["isotropic"]["test_error"] for s in ok]),
        "hessian_test_error": _mean_sd([s["hessian"]["test_error"] for s in ok]),
        "isotropic_kl": _mean_sd([s["isotropic"]["kl"]["kl"] for s in ok]),
        "hessian_kl": _mean_sd([s["hessian"]["kl"]["kl"] for s in ok]),
        "seeds_hessian_below_isotropic": sum(s["hessian_below_isotropic"] for s in ok),
        "seeds_isotropic_below_occam": sum(s["isotropic_below_occam"] for s in ok),
        "ordering_per_seed": {str(k): " < ".join(s["ordering"]) if "ordering" in s else s["status"] for k, s in per_seed.items()},
        "bounds_per_seed": {str(k): s["bounds"] for k, s in per_seed.items() if s.get("status") == "bounded"},
    }


def _sanity(pair: Mapping[str, str], runs: Mapping[str, dict]) -> dict[str, Any]:
    """The random-label pair: the real run's best bounds must be non-vacuous, the random run's vacuous."""
    real, rand = runs[pair["real"]], runs[pair["random"]]
    lowest_random = min((min(b["isotropic"], b["hessian"]) for b in rand["bounds_per_seed"].values()), default=float("nan"))
    highest_real = max((min(b["isotropic"], b["hessian"]) for b in real["bounds_per_seed"].values()), default=float("nan"))
    return {
        "real": pair["real"],
        "random": pair["random"],
        "real_best_bound_max": highest_real,
        "random_best_bound_min": lowest_random,
        "random_vacuous": bool(lowest_random > 0.9),
        "real_nonvacuous": bool(highest_real < 1.0),
    }


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
    metrics: dict = {"runs": {key: _summarise(v) for key, v in per_run.items()}}
    if section_cfg["sanity"] is not None:
        metrics["sanity"] = _sanity(section_cfg["sanity"], metrics["runs"])
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["workers"] = workers
    write_json(layout.bounds_metrics, metrics)
    print(f"bounds: {len(jobs)} seed runs in {metrics['wall_time_s']:.1f}s ({workers} workers)")
    return metrics
