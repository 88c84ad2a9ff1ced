"""phi_search stage: Phi(n, L, D) over an MLP grid, the Phi-guided choice vs a random one,
and Phi of the pipeline's trained runs against their test error.

Data: Gaussian mixtures of dimensions ``phi.search.mixture_dims`` (same classes and
separation, fixed seed) and the prepared data set ``phi.dataset`` (training split,
flattened). Every (data set, seed, width n, depth L) MLP of the grid is built for data of
dimension D, Phi is measured (:func:`landscape.probes.phi.measure_phi`) and the argmax is the
search's choice (Phi at initialisation, ``select_at="init"``, the only reading under which
choosing by Phi saves training; optionally again after training, a diagnostic); every
candidate is also trained with the same budget (same optimizer, batch size and number of SGD
steps) in forked workers (:func:`landscape.pipeline.parallel.map_forked`), so the realised
test error of the choice can be compared with that of a uniformly random grid member exactly
(:func:`landscape.stats.phi.search_vs_random`). Phi of the runs of ``phi.run_experiments``
comes from measure's ``curvature.json`` at their final weights
(:func:`phi_of_runs`). Writes ``phi_search/results.json`` (config,
every candidate, the run table, the summary) and ``phi_search/metrics.json`` (headline numbers).
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from landscape.io import write_json
from landscape.models import build_model
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import section
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.pipeline.tables import data_dims, phi_inputs, require
from landscape.probes.phi import PHI_AT, RANK_KINDS, measure_phi, phi
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    nonneg,
    one_of,
    parse_config,
    rule,
)
from landscape.stats.phi import headline, summarise_search
from landscape.training.config import TrainConfig
from landscape.training.loop import train_model

__all__ = ["PhiGrid", "PhiProbe", "PhiTraining", "PhiSearchConfig", "PhiConfig", "SearchData", "run_phi_search",
           "search_data", "phi_of_runs", "load_config", "run"]


def _distinct_ints(k: int, allow_empty: bool = False) -> dict[str, Any]:
    what = f"a list of distinct ints >= {k} (may be empty)" if allow_empty else f"a non-empty list of distinct ints >= {k}"
    return rule(what, lambda x: isinstance(x, (list, tuple)) and (allow_empty or len(x) > 0)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= k for v in x) and len(set(x)) == len(x))


@dataclass(frozen=True)
class PhiGrid(Checked):
    """The (width, depth) grid of MLPs searched over.

    Attributes:
        widths: hidden widths n.
        depths: hidden layers L (>= 1).
        activation: ``relu``, ``tanh`` or ``gelu``.
    """

    widths: tuple[int, ...] = field(default=(16, 64, 256), metadata=_distinct_ints(1))
    depths: tuple[int, ...] = field(default=(1, 2, 3), metadata=_distinct_ints(1))
    activation: str = field(default="relu", metadata=one_of(("relu", "tanh", "gelu")))


@dataclass(frozen=True)
class PhiProbe(Checked):
    """How Phi is measured on each candidate.

    Attributes:
        num_examples: probe subset (first training examples) the Hessian is taken over.
        noise_examples: examples of the gradient covariance (first of the probe subset).
        trace_matvecs: Hutch++ budget.
        eig_tol: relative residual tolerance of ||H||_2.
        rank: ``stable`` or ``energy90`` (:mod:`landscape.probes.phi`).
        select_at: ``init`` (the search's choice is made before training) or ``trained``.
        also_trained: also measure Phi after training (for the Phi-vs-error diagnostic).
    """

    num_examples: int = field(default=500, metadata=int_at_least(2))
    noise_examples: int = field(default=128, metadata=int_at_least(2))
    trace_matvecs: int = field(default=30, metadata=int_at_least(4))
    eig_tol: float = field(default=1e-2, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    rank: str = field(default="stable", metadata=one_of(RANK_KINDS))
    select_at: str = field(default="init", metadata=one_of(PHI_AT))
    also_trained: bool = False

    def _extra_checks(self) -> None:
        if self.noise_examples > self.num_examples:
            raise ConfigError(f"noise_examples={self.noise_examples} exceeds num_examples={self.num_examples}")
        if self.select_at == "trained" and not self.also_trained:
            raise ConfigError("select_at='trained' needs also_trained=true")


@dataclass(frozen=True)
class PhiTraining(Checked):
    """The same budget for every candidate: optimizer, learning rate, batch size, epochs
    over ``train_examples`` examples, hence the same number of SGD steps."""

    train_examples: int = field(default=2000, metadata=int_at_least(2))
    epochs: int = field(default=8, metadata=int_at_least(1))
    batch_size: int = field(default=64, metadata=int_at_least(1))
    optimizer: str = field(default="sgd", metadata=one_of(("sgd", "adam")))
    lr: float = field(default=0.05, metadata=rule("a float > 0", lambda x: x > 0))
    momentum: float = field(default=0.9, metadata=rule("a float in [0, 1)", lambda x: 0 <= x < 1))
    schedule: str = field(default="cosine", metadata=one_of(("constant", "cosine")))

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           momentum=self.momentum, schedule=self.schedule, weight_decay=0.0, eval_batch_size=2000)

    def steps(self) -> int:
        return self.epochs * (self.train_examples // self.batch_size)


@dataclass(frozen=True)
class PhiSearchConfig(Checked):
    """Settings of the search (``phi.search`` in params.yaml).

    Attributes:
        seeds: model seeds; each seed is one independent search per data set.
        mixture_dims: dimensions D of the Gaussian mixtures (``gaussian_mixture``).
        mixture_classes, mixture_separation: shared by every mixture (simplex means when
            classes <= D + 1: then the Bayes error is the same for every D).
        mixture_test: test examples per mixture.
        mixture_seed: data seed of every mixture.
        grid, probe, training: see :class:`PhiGrid`, :class:`PhiProbe`, :class:`PhiTraining`.
    """

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_distinct_ints(0))
    mixture_dims: tuple[int, ...] = field(default=(8, 32, 128), metadata=_distinct_ints(1, allow_empty=True))
    mixture_classes: int = field(default=8, metadata=int_at_least(2))
    mixture_separation: float = field(default=3.0, metadata=rule("a float >= 0", nonneg))
    mixture_test: int = field(default=1000, metadata=int_at_least(1))
    mixture_seed: int = field(default=0, metadata=int_at_least(0))
    grid: PhiGrid = field(default_factory=PhiGrid)
    probe: PhiProbe = field(default_factory=PhiProbe)
    training: PhiTraining = field(default_factory=PhiTraining)

    def _extra_checks(self) -> None:
        if self.probe.num_examples > self.training.train_examples:
            raise ConfigError(f"probe.num_examples={self.probe.num_examples} exceeds "
                              f"training.train_examples={self.training.train_examples}")
        if self.training.batch_size > self.training.train_examples:
            raise ConfigError(f"training.batch_size={self.training.batch_size} exceeds "
                              f"training.train_examples={self.training.train_examples}")


@dataclass(frozen=True)
class PhiConfig(Checked):
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
    run_experiments: tuple[str, ...] = field(default=("scaling",), metadata=rule(
        "a list of distinct experiment names",
        lambda x: isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x) and len(set(x)) == len(x)))
    primary_experiment: str = "scaling"
    ci_level: float = field(default=0.95, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    search: PhiSearchConfig = field(default_factory=PhiSearchConfig)

    def check_experiments(self, experiments: Mapping[str, Any]) -> None:
        """Raise ConfigError unless every named group is a key of ``experiments``."""
        for name in (*self.run_experiments, self.primary_experiment):
            if name not in experiments:
                raise ConfigError(f"phi: experiment {name!r} is not a key of experiments; valid: {sorted(experiments)}")
        if self.primary_experiment not in self.run_experiments:
            raise ConfigError(f"phi.primary_experiment={self.primary_experiment!r} must be one of "
                              f"run_experiments {list(self.run_experiments)}")


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
        ``probe.select_at``), ``init`` (and ``trained``) :class:`~landscape.probes.phi.PhiMeasurement`
        dicts, realised ``test_error``, ``train_error``, ``train_loss``, ``gen_gap``, ``steps``.
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
    by_task = dict(zip(order, out, strict=True))  # map_forked returns one result per task, in task order
    return [by_task[j] for j in range(len(tasks))]


# ------------------------------------------------------------------ the trained runs


def phi_of_runs(inputs: Sequence[Mapping[str, Any]], rank_kind: str = "stable") -> list[dict[str, Any]]:
    """Phi of every trained run at its final weights (:func:`landscape.pipeline.tables.phi_inputs`).

    ``||H||_2`` is measure's ``lambda_max`` (the top algebraic eigenvalue; equal to the norm at
    a minimum, where negative eigenvalues are small).

    Args:
        inputs: One row per run (trace, lambda_max, ranks, num_params d, data_dim D).
        rank_kind: ``stable`` or ``energy90``.

    Returns:
        The rows (without ``curvature_status``) with ``phi`` and ``phi_status`` (``ok``, or
        ``input missing`` / ``lambda_max <= 0`` with Phi NaN).
    """
    rows = []
    for entry in inputs:
        row = {k: v for k, v in entry.items() if k != "curvature_status"}
        d, D = row["num_params"], row["data_dim"]
        rank = row["stable_rank"] if rank_kind == "stable" else row["energy_rank_90"]
        if entry["curvature_status"] != "measured" or not all(math.isfinite(v) for v in (row["trace"], row["lambda_max"], rank)) \
                or not isinstance(d, int) or not D:
            row.update(phi=math.nan, phi_status="input missing")
        elif row["lambda_max"] <= 0:
            row.update(phi=math.nan, phi_status="lambda_max <= 0")
        else:
            row.update(phi=phi(row["trace"], d, row["lambda_max"], rank, int(D)), phi_status="ok")
        rows.append(row)
    return rows


# ------------------------------------------------------------------ the stage


def load_config(params: Mapping[str, Any]) -> PhiConfig:
    """The ``phi`` section of params, validated against the experiment groups and data sets."""
    cfg = parse_config(PhiConfig, section(params, "phi"), "phi")
    cfg.check_experiments(section(params, "experiments"))
    section(params, "datasets", cfg.dataset)
    return cfg


def search_data(cfg: PhiConfig, layout: Layout) -> list[SearchData]:
    """The mixtures of ``search.mixture_dims`` and the prepared data set's first training examples (flattened).

    Raises:
        FileNotFoundError: The prepared data set is missing (names the path and its stage).
        ConfigError: ``search.training.train_examples`` exceeds the data set's training split.
    """
    from landscape.data.synthetic import gaussian_mixture

    s = cfg.search
    n_train = s.training.train_examples
    out = []
    for D in s.mixture_dims:
        ds = gaussian_mixture(num_classes=s.mixture_classes, dim=D, separation=s.mixture_separation, n=n_train + s.mixture_test,
                              seed=s.mixture_seed)
        out.append(SearchData(f"mixture_d{D}", (ds.x[:n_train], ds.y[:n_train]), (ds.x[n_train:], ds.y[n_train:]), s.mixture_classes,
                              "gaussian_mixture"))
    data = torch.load(require(layout.prepared(cfg.dataset), f"prepare@{cfg.dataset}"), map_location="cpu", weights_only=False)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    if xtr.shape[0] < n_train:
        raise ConfigError(f"phi.search.training.train_examples={n_train} exceeds the {xtr.shape[0]} training examples of {cfg.dataset}")
    flat = lambda x: x.reshape(x.shape[0], -1).to(torch.float32)  # noqa: E731  (a one-line local helper)
    out.append(SearchData(cfg.dataset, (flat(xtr[:n_train]), ytr[:n_train]), (flat(xte), yte), int(data["num_classes"]), "prepared"))
    return out


_DEFINITION = {
    "phi": "(tr(H)/d) / ||H||_2 * grad_rank / D",
    "H": "Hessian of the mean cross-entropy over the probe subset; tr(H) by Hutch++, ||H||_2 = largest |eigenvalue| by Lanczos",
}


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Search, summarise, write ``phi_search/{results,metrics}.json``."""
    started, cpu0 = time.perf_counter(), time.process_time()
    cfg = load_config(params)
    configure_torch()
    device = pick_device()
    datasets = search_data(cfg, layout)
    rows = run_phi_search(cfg.search, datasets, workers=cpu_workers(device), device=device)
    experiments = {k: v for k, v in section(params, "experiments").items() if k in cfg.run_experiments}
    run_rows = phi_of_runs(phi_inputs(layout, experiments, section(params, "seeds"), data_dims(layout, experiments)), cfg.search.probe.rank)
    summary = summarise_search(rows, run_rows, cfg.ci_level, cfg.primary_experiment)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu0 + children.ru_utime + children.ru_stime,
              "candidates": len(rows), "steps_per_candidate": cfg.search.training.steps()}
    t = cfg.search.training
    write_json(layout.results("phi_search"), {"profile": params.get("profile"), "config": dataclasses.asdict(cfg), "definition": {
        **_DEFINITION,
        "grad_rank": f"{cfg.search.probe.rank} rank of the per-example gradient covariance "
                     "(stable: tr(Sigma)/lambda_max(Sigma); energy90: directions carrying 90% of tr(Sigma))",
        "search_phi_at": cfg.search.probe.select_at,
        "runs_phi_at": "final weights (measure outputs; ||H||_2 read as measure's lambda_max, the top eigenvalue)",
        "same_budget": f"every candidate trained with {t.optimizer}, lr {t.lr}, batch {t.batch_size}, "
                       f"{t.epochs} epochs over {t.train_examples} examples = {t.steps()} steps; "
                       "the random choice is a uniformly random grid member, its error averaged exactly over the grid",
    }, "candidates": rows, "runs": run_rows, "summary": summary, "timing": timing})
    write_json(layout.metrics("phi_search"), {**headline(summary), "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"]})
    pooled = summary["pooled"]
    if "mean_diff" in pooled:
        print(f"phi search: chosen - random test error = {pooled['mean_diff']:.4f} "
              f"[{pooled['diff_ci_low']:.4f}, {pooled['diff_ci_high']:.4f}], "
              f"P(beat random) = {pooled['p_beat']:.3f} (n={pooled['n_units']}): {pooled['verdict']}")
    for name, entry in summary["per_dataset"].items():
        sp = entry["spearman_init"]
        print(f"  {name} (D={entry['data_dim']}): rho(Phi, test error) = {sp['rho']:.3f} "
              f"[{sp['ci_low']:.3f}, {sp['ci_high']:.3f}] n={sp['n']}")
    for exp, sp in summary["runs"]["per_experiment"].items():
        print(f"  runs {exp}: rho(Phi, test error) = {sp['rho']} [{sp['ci_low']}, {sp['ci_high']}] n={sp['n']}")
    print(f"wall {timing['wall_s']:.1f} s, cpu {timing['cpu_s']:.1f} s, {len(rows)} candidates")
    return summary
