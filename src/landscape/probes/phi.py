"""The second plan's architecture-compatibility metric Phi(n, L, D) and the Phi-guided search.

Definition (the plan's eq. in section 3, with every term fixed)::

    Phi(n, L, D) = (tr(H) / d) / ||H||_2 * grad_rank / D

* ``H``: Hessian of the mean cross-entropy over a fixed probe subset (BatchNorm-free MLPs
  here; :class:`~landscape.curvature.HessianOperator`), ``d`` its parameter count.
  ``tr(H)`` by Hutch++ (Meyer et al. 2021); ``||H||_2`` the largest eigenvalue magnitude
  by Lanczos (``which="LM"``), so the first factor is the stable rank of H per parameter,
  ``tr(H) / (d ||H||_2)`` (at most 1 when H is PSD; negative when the trace is).
* ``grad_rank``: a rank of the per-example gradient covariance Sigma
  (:func:`~landscape.curvature.gradient_rank`). Default ``"stable"``:
  ``tr(Sigma) / lambda_max(Sigma)``, the stable rank of the centred gradient matrix. It is
  continuous, scale-free and needs no energy threshold, and it makes Phi the product of two
  stable ranks, ``srank(H)/d * srank(Sigma)/D``. ``"energy90"`` (the number of
  eigendirections carrying 90 % of tr(Sigma), as measure records) is the alternative; it
  is an integer capped at N - 1 for N examples, so it saturates with few examples.
* ``D``: input dimensionality of the data (features after flattening).

When: the search measures Phi of each candidate at its initialisation (``phi_at="init"``,
the only reading under which choosing by Phi saves training), and optionally again after
the training budget (``"trained"``, a diagnostic). The pipeline's trained runs get Phi
from measure's outputs at their final weights (:mod:`landscape.stats.phi`).

The search: every (width n, depth L) MLP of a grid is built for data of dimension D, Phi is
measured, the argmax is the search's choice; every candidate is also trained with the
same budget (same optimizer, batch size and number of SGD steps), so the realised test
error of the choice can be compared with that of a uniformly random grid member exactly
(:func:`landscape.stats.phi.search_vs_random`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.noise import GradientRank, gradient_covariance, gradient_rank
from landscape.curvature.operators import HessianOperator
from landscape.curvature.trace import trace as estimate_trace
from landscape.models import build_model
from landscape.pipeline.parallel import map_forked
from landscape.schema import ConfigError
from landscape.training.config import TrainConfig
from landscape.training.loop import train_model

__all__ = [
    "RANK_KINDS",
    "PHI_AT",
    "phi",
    "rank_value",
    "PhiMeasurement",
    "measure_phi",
    "PhiGrid",
    "PhiProbe",
    "PhiTraining",
    "PhiSearchConfig",
    "PhiConfig",
    "SearchData",
    "run_phi_search",
]

RANK_KINDS: tuple[str, ...] = ("stable", "energy90")
PHI_AT: tuple[str, ...] = ("init", "trained")


def phi(trace: float, num_params: int, spectral_norm: float, grad_rank: float, data_dim: int) -> float:
    """``Phi = (trace / num_params) / spectral_norm * grad_rank / data_dim``.

    Args:
        trace: tr(H).
        num_params: d >= 1.
        spectral_norm: ||H||_2 > 0 (finite).
        grad_rank: rank of the gradient covariance, >= 0.
        data_dim: D >= 1.

    Raises:
        ValueError: an argument outside its range (the message names it and its value).
    """
    if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1:
        raise ValueError(f"num_params must be an int >= 1, got {num_params!r}")
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
        raise ValueError(f"data_dim must be an int >= 1, got {data_dim!r}")
    if not (isinstance(spectral_norm, (int, float)) and math.isfinite(spectral_norm) and spectral_norm > 0):
        raise ValueError(f"spectral_norm must be a finite number > 0, got {spectral_norm!r}")
    if not (isinstance(grad_rank, (int, float)) and math.isfinite(grad_rank) and grad_rank >= 0):
        raise ValueError(f"grad_rank must be a finite number >= 0, got {grad_rank!r}")
    if not (isinstance(trace, (int, float)) and math.isfinite(trace)):
        raise ValueError(f"trace must be a finite number, got {trace!r}")
    return float(trace) / num_params / float(spectral_norm) * float(grad_rank) / data_dim


def rank_value(rank: GradientRank | Mapping[str, Any], kind: str) -> float:
    """The ``kind`` rank (``"stable"`` or ``"energy90"``) of a :class:`GradientRank` or of
    measure's ``noise`` record (keys ``stable_rank_gradients``, ``energy_rank_90``); NaN if absent."""
    if kind not in RANK_KINDS:
        raise ValueError(f"rank kind must be one of {list(RANK_KINDS)}, got {kind!r}")
    if isinstance(rank, GradientRank):
        if kind == "energy90" and rank.energy != 0.9:
            raise ValueError(f"energy90 needs a GradientRank with energy 0.9, got {rank.energy}")
        return float(rank.stable_rank_gradients if kind == "stable" else rank.energy_rank)
    value = rank.get("stable_rank_gradients" if kind == "stable" else "energy_rank_90")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class PhiMeasurement:
    """Phi of one network and the quantities it is made of.

    Attributes:
        phi: Phi with the ``rank_kind`` rank (NaN when ||H||_2 is 0).
        phi_energy90, phi_stable: Phi with each rank (sensitivity to the choice).
        trace, trace_stderr: tr(H) by Hutch++ and its standard error.
        spectral_norm: ||H||_2 = |lambda| of the largest-magnitude eigenvalue.
        top_eigenvalue: that eigenvalue with its sign.
        num_params: d.
        data_dim: D.
        rank_kind: the rank Phi uses.
        stable_rank, energy_rank_90: ranks of the gradient covariance.
        noise_examples: N of the gradient covariance.
        num_matvecs: Hessian-vector products spent.
    """

    phi: float
    phi_stable: float
    phi_energy90: float
    trace: float
    trace_stderr: float
    spectral_norm: float
    top_eigenvalue: float
    num_params: int
    data_dim: int
    rank_kind: str
    stable_rank: float
    energy_rank_90: int
    noise_examples: int
    num_matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_phi(trace: float, d: int, norm: float, rank: float, D: int) -> float:
    return phi(trace, d, norm, rank, D) if norm > 0 and math.isfinite(rank) else math.nan


def measure_phi(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    noise_batch: tuple[Tensor, Tensor],
    data_dim: int,
    *,
    rank_kind: str = "stable",
    trace_matvecs: int = 30,
    eig_tol: float = 1e-2,
    seed: int = 0,
) -> PhiMeasurement:
    """Measure Phi of ``model`` (cross-entropy loss) at its current weights.

    Args:
        model: classifier without BatchNorm (left unchanged).
        batches: ``(x, y)`` batches of the probe subset the Hessian is taken over.
        noise_batch: ``(x, y)`` examples for the per-example gradient covariance (N >= 2).
        data_dim: D, the input dimensionality.
        rank_kind: ``"stable"`` or ``"energy90"`` (module docstring).
        trace_matvecs: Hutch++ budget.
        eig_tol: relative Ritz residual tolerance of the top-magnitude eigenvalue.
        seed: seed of the Lanczos start and the trace probes.
    """
    if rank_kind not in RANK_KINDS:
        raise ValueError(f"rank_kind must be one of {list(RANK_KINDS)}, got {rank_kind!r}")
    op = HessianOperator(model, F.cross_entropy, batches, bn_mode="eval")
    d = int(op.shape[0])
    eig = top_eigenpairs(op, k=1, which="LM", tol=eig_tol, seed=seed)
    tr = estimate_trace(op, num_matvecs=trace_matvecs, method="hutch++", seed=seed)
    rank = gradient_rank(gradient_covariance(model, F.cross_entropy, [noise_batch]))
    top = float(eig.values[0])
    norm = abs(top)
    stable, energy = rank_value(rank, "stable"), rank_value(rank, "energy90")
    values = {"stable": _safe_phi(tr.value, d, norm, stable, data_dim), "energy90": _safe_phi(tr.value, d, norm, energy, data_dim)}
    return PhiMeasurement(
        phi=values[rank_kind], phi_stable=values["stable"], phi_energy90=values["energy90"],
        trace=float(tr.value), trace_stderr=float(tr.stderr), spectral_norm=norm, top_eigenvalue=top,
        num_params=d, data_dim=int(data_dim), rank_kind=rank_kind, stable_rank=stable,
        energy_rank_90=int(rank.energy_rank), noise_examples=int(rank.num_samples),
        num_matvecs=int(eig.num_matvecs + tr.num_matvecs),
    )


# ------------------------------------------------------------------ search configuration


def _rule(allowed: str, check) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _ints_at_least(k: int) -> dict[str, Any]:
    return _rule(f"a non-empty list of distinct ints >= {k}", lambda x: isinstance(x, (list, tuple)) and len(x) > 0
                 and all(isinstance(v, int) and not isinstance(v, bool) and v >= k for v in x) and len(set(x)) == len(x))


class _Checked:
    def __post_init__(self) -> None:
        for name, f in self.__dataclass_fields__.items():  # type: ignore[attr-defined]
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = tuple(value)
            check = f.metadata.get("check")
            if check is not None and not check(value):
                raise ConfigError(f"{name}={value!r} is not allowed; allowed: {f.metadata['allowed']}")


@dataclass(frozen=True)
class PhiGrid(_Checked):
    """The (width, depth) grid of ReLU MLPs searched over.

    Attributes:
        widths: hidden widths n.
        depths: hidden layers L (>= 1).
        activation: ``relu``, ``tanh`` or ``gelu``.
    """

    widths: tuple[int, ...] = field(default=(16, 64, 256), metadata=_ints_at_least(1))
    depths: tuple[int, ...] = field(default=(1, 2, 3), metadata=_ints_at_least(1))
    activation: str = field(default="relu", metadata=_rule("one of ['relu', 'tanh', 'gelu']", lambda x: x in ("relu", "tanh", "gelu")))


@dataclass(frozen=True)
class PhiProbe(_Checked):
    """How Phi is measured on each candidate.

    Attributes:
        num_examples: probe subset (first training examples) the Hessian is taken over.
        noise_examples: examples of the gradient covariance (first of the probe subset).
        trace_matvecs: Hutch++ budget.
        eig_tol: relative residual tolerance of ||H||_2.
        rank: ``stable`` or ``energy90`` (see the module docstring).
        select_at: ``init`` (the search's choice is made before training) or ``trained``.
        also_trained: also measure Phi after training (for the Phi-vs-error diagnostic).
    """

    num_examples: int = field(default=500, metadata=_rule("an int >= 2", lambda x: x >= 2))
    noise_examples: int = field(default=128, metadata=_rule("an int >= 2", lambda x: x >= 2))
    trace_matvecs: int = field(default=30, metadata=_rule("an int >= 4", lambda x: x >= 4))
    eig_tol: float = field(default=1e-2, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    rank: str = field(default="stable", metadata=_rule(f"one of {list(RANK_KINDS)}", lambda x: x in RANK_KINDS))
    select_at: str = field(default="init", metadata=_rule(f"one of {list(PHI_AT)}", lambda x: x in PHI_AT))
    also_trained: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_examples > self.num_examples:
            raise ConfigError(f"noise_examples={self.noise_examples} exceeds num_examples={self.num_examples}")
        if self.select_at == "trained" and not self.also_trained:
            raise ConfigError("select_at='trained' needs also_trained=true")


@dataclass(frozen=True)
class PhiTraining(_Checked):
    """The same budget for every candidate: optimizer, learning rate, batch size, epochs
    over ``train_examples`` examples, hence the same number of SGD steps."""

    train_examples: int = field(default=2000, metadata=_rule("an int >= 2", lambda x: x >= 2))
    epochs: int = field(default=8, metadata=_rule("an int >= 1", lambda x: x >= 1))
    batch_size: int = field(default=64, metadata=_rule("an int >= 1", lambda x: x >= 1))
    optimizer: str = field(default="sgd", metadata=_rule("one of ['sgd', 'adam']", lambda x: x in ("sgd", "adam")))
    lr: float = field(default=0.05, metadata=_rule("a float > 0", lambda x: x > 0))
    momentum: float = field(default=0.9, metadata=_rule("a float in [0, 1)", lambda x: 0 <= x < 1))
    schedule: str = field(default="cosine", metadata=_rule("one of ['constant', 'cosine']", lambda x: x in ("constant", "cosine")))

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           momentum=self.momentum, schedule=self.schedule, weight_decay=0.0, eval_batch_size=2000)

    def steps(self) -> int:
        return self.epochs * (self.train_examples // self.batch_size)


@dataclass(frozen=True)
class PhiSearchConfig(_Checked):
    """Settings of the ``phi_search`` stage (``phi.search`` in params.yaml).

    Attributes:
        seeds: model seeds; each seed is one independent search per data set.
        mixture_dims: dimensions D of the Gaussian mixtures (``gaussian_mixture``).
        mixture_classes, mixture_separation: shared by every mixture (simplex means when
            classes <= D + 1: then the Bayes error is the same for every D).
        mixture_test: test examples per mixture.
        mixture_seed: data seed of every mixture.
        grid, probe, training: see :class:`PhiGrid`, :class:`PhiProbe`, :class:`PhiTraining`.
    """

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_rule("a non-empty list of distinct ints >= 0", lambda x: isinstance(x, (list, tuple))
                                   and len(x) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x) and len(set(x)) == len(x)))
    mixture_dims: tuple[int, ...] = field(default=(8, 32, 128), metadata=_rule("a list of distinct ints >= 1 (may be empty)", lambda x: isinstance(x, (list, tuple))
                                          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in x) and len(set(x)) == len(x)))
    mixture_classes: int = field(default=8, metadata=_rule("an int >= 2", lambda x: x >= 2))
    mixture_separation: float = field(default=3.0, metadata=_rule("a float >= 0", lambda x: x >= 0))
    mixture_test: int = field(default=1000, metadata=_rule("an int >= 1", lambda x: x >= 1))
    mixture_seed: int = field(default=0, metadata=_rule("an int >= 0", lambda x: x >= 0))
    grid: PhiGrid = field(default_factory=PhiGrid)
    probe: PhiProbe = field(default_factory=PhiProbe)
    training: PhiTraining = field(default_factory=PhiTraining)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.probe.num_examples > self.training.train_examples:
            raise ConfigError(f"probe.num_examples={self.probe.num_examples} exceeds training.train_examples={self.training.train_examples}")
        if self.training.batch_size > self.training.train_examples:
            raise ConfigError(f"training.batch_size={self.training.batch_size} exceeds training.train_examples={self.training.train_examples}")


@dataclass(frozen=True)
class PhiConfig(_Checked):
    """The ``phi`` section of params.yaml (the ``phi_search`` stage).

    Attributes:
        dataset: prepared data set key searched besides the mixtures (its training split,
            flattened; e.g. mnist14 with D = 196).
        run_experiments: experiment groups whose trained runs get Phi from measure's outputs.
        primary_experiment: the group whose Phi-vs-test-error correlation is the headline.
        ci_level: coverage of every interval.
        search: :class:`PhiSearchConfig`.
    """

    dataset: str
    run_experiments: tuple[str, ...] = field(default=("scaling",), metadata=_rule("a list of distinct experiment names", lambda x: isinstance(x, (list, tuple))
                                             and all(isinstance(v, str) for v in x) and len(set(x)) == len(x)))
    primary_experiment: str = "scaling"
    ci_level: float = field(default=0.95, metadata=_rule("a float in (0, 1)", lambda x: 0 < x < 1))
    search: PhiSearchConfig = field(default_factory=PhiSearchConfig)

    def check_experiments(self, experiments: Mapping[str, Any]) -> None:
        """Raise ConfigError unless every named group is a key of ``experiments``."""
        for name in (*self.run_experiments, self.primary_experiment):
            if name not in experiments:
                raise ConfigError(f"phi: experiment {name!r} is not a key of experiments; valid: {sorted(experiments)}")
        if self.primary_experiment not in self.run_experiments:
            raise ConfigError(f"phi.primary_experiment={self.primary_experiment!r} must be one of run_experiments {list(self.run_experiments)}")


# ------------------------------------------------------------------ the search


@dataclass(frozen=True)
class SearchData:
    """One data set of the search: flat inputs (N, D) and labels (N,)."""

    name: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    source: str

    @property
    def dim(self) -> int:
        return int(self.train[0].shape[1])


def _candidate(data: SearchData, width: int, depth: int, seed: int, cfg: PhiSearchConfig, device: torch.device) -> dict[str, Any]:
    """Build, measure (init), train, measure (trained, optional) one grid member."""
    started = time.perf_counter()
    model = build_model("mlp", num_classes=data.num_classes, seed=seed, in_features=data.dim, width=width, depth=depth,
                        activation=cfg.grid.activation, norm="none").to(device)
    xt, yt = data.train[0][: cfg.training.train_examples].to(device), data.train[1][: cfg.training.train_examples].to(device)
    k = cfg.probe.num_examples
    probe = [(xt[:k], yt[:k])]
    noise = (xt[: cfg.probe.noise_examples], yt[: cfg.probe.noise_examples])

    def measure() -> dict[str, Any]:
        return measure_phi(model, probe, noise, data.dim, rank_kind=cfg.probe.rank, trace_matvecs=cfg.probe.trace_matvecs,
                           eig_tol=cfg.probe.eig_tol, seed=seed).to_dict()

    at_init = measure()
    result = train_model(model, (xt, yt), data.test, cfg.training.train_config(), seed=seed)
    row: dict[str, Any] = {
        "dataset": data.name, "source": data.source, "data_dim": data.dim, "width": width, "depth": depth, "seed": seed,
        "num_params": at_init["num_params"], "status": result.status, "steps": result.steps,
        "test_error": float(result.final["test_error"]), "train_error": float(result.final["train_error"]),
        "train_loss": float(result.final["train_loss"]), "gen_gap": float(result.final["gen_gap"]),
        "init": at_init,
    }
    if cfg.probe.also_trained:
        row["trained"] = measure()
    row["phi"] = row[cfg.probe.select_at]["phi"]
    row["wall_time_s"] = time.perf_counter() - started
    return row


def run_phi_search(cfg: PhiSearchConfig, datasets: Sequence[SearchData], workers: int = 1,
                   device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """Measure Phi and train every (data set, seed, width, depth) candidate.

    Tasks run in up to ``workers`` forked processes (:func:`landscape.pipeline.parallel.map_forked`),
    the most expensive first; each carries its own seed, so results do not depend on ``workers``.
    Models and data go to ``device`` (use ``workers=1`` off the CPU: forked workers cannot
    share a CUDA context).

    Returns:
        One row per candidate in (data set, seed, width, depth) order: ``phi`` (at
        ``probe.select_at``), ``init`` (and ``trained``) :class:`PhiMeasurement` dicts,
        realised ``test_error``, ``train_error``, ``train_loss``, ``gen_gap``, ``steps``.
    """
    if not datasets:
        raise ValueError("datasets must name at least one data set")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"data set names must be distinct, got {names}")
    tasks = [(i, s, w, L) for i in range(len(datasets)) for s in cfg.seeds for w in cfg.grid.widths for L in cfg.grid.depths]
    cost = {t: datasets[t[0]].dim * t[2] + (t[3] - 1) * t[2] ** 2 for t in tasks}  # ~ parameter count
    order = sorted(range(len(tasks)), key=lambda j: -cost[tasks[j]])

    def work(j: int) -> dict[str, Any]:
        i, s, w, L = tasks[j]
        return _candidate(datasets[i], w, L, s, cfg, torch.device(device))

    out = map_forked(work, order, workers=workers)
    rows = [None] * len(tasks)
    for j, row in zip(order, out):
        rows[j] = row
    return rows  # type: ignore[return-value]
