"""The ``intrinsic_dim`` stage: ``d_int90`` by random-subspace training, with a bootstrap
interval across seeds (Li, Farkhoor, Liu & Yosinski 2018, *Measuring the intrinsic
dimension of objective landscapes*; the method is :mod:`landscape.probes.intrinsic_dim`).

Two tasks (``probes.intrinsic_dim``): Li et al.'s toy problem of known intrinsic dimension
(``D`` parameters in ``m`` chunks, chunk ``k`` must sum to ``k``: ``d_int = m`` exactly),
and a network of the pipeline (``model``: name + options, trained from its seed's
initialisation on the prepared data set ``model.dataset``); dense and sparse projections.
No trained run is read. Writes ``probes/intrinsic_dim/``: metrics.json (``d_int`` mean and
interval per task and projection), results.json (every search), figures/*.png, config.json.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.functional import first_batches, has_running_stats
from landscape.io import write_json
from landscape.models import build_model
from landscape.pipeline.cli import StageError
from landscape.pipeline.figures import new_figure, write_figures
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import section
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.probes.functional import LossFn, parameter_dict
from landscape.probes.intrinsic_dim import (
    PROJECTIONS,
    IntrinsicDimCI,
    IntrinsicDimResult,
    bootstrap_ci,
    search_intrinsic_dim,
    train_subspace,
)
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    number_above_zero,
    one_of,
    optional_number_above_zero,
    optional_subset_of,
    parse_config,
    rule,
    subset_of,
)
from landscape.seeding import seeded_generator

__all__ = [
    "SUBSPACE_PROJECTIONS",
    "ToyTaskSettings",
    "ModelTaskSettings",
    "IntrinsicDimConfig",
    "IntrinsicDimReport",
    "ChunkSumToy",
    "run_intrinsic_dim",
    "run",
]

#: Random projections of the intrinsic-dimension search (the identity is the baseline).
SUBSPACE_PROJECTIONS: tuple[str, ...] = tuple(p for p in PROJECTIONS if p != "identity")


def _seeds_ok(x: Any) -> bool:
    ints = isinstance(x, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
    return ints and len(x) >= 2 and len(set(x)) == len(x)


@dataclass(frozen=True)
class ToyTaskSettings(Checked):
    """Li et al.'s toy problem: ``D`` parameters in ``m`` chunks; chunk ``k`` (1-based)
    must sum to ``k``. The loss ``sum_k (sum_{i in chunk k} theta_i - k)^2`` depends on
    ``m`` directions only, so ``d_int = m`` exactly. Performance ``exp(-loss)`` (1 at a
    solution); the start ``theta_0 ~ N(0, 1/D)`` is drawn per seed.

    Attributes:
        enabled: Run the task.
        num_params: ``D`` (a multiple of ``num_constraints``).
        num_constraints: ``m``, the known intrinsic dimension.
        steps: Optimiser steps per subspace training (full batch).
        optimizer: ``"sgd"`` (heavy ball; converges on this least-squares problem where
            Adam at a constant rate keeps oscillating) or ``"adam"``.
        lr: Learning rate (units of ``z``). With ``sgd`` keep ``lr < 2 (1 + momentum) /
            lambda_max``, where ``lambda_max ~ 2 (sqrt(d / m) + 1)^2`` (largest Hessian
            eigenvalue in ``z``; measured up to 15 at ``m = 3, d = 4``): the defaults are
            stable up to ``d ~ 6 m``. Square random ``A P`` (``d = m``) are often
            ill-conditioned (condition numbers 40-80 at ``m = 10`` for some seeds), so a
            short budget can miss ``d = m`` and report ``m + 1``.
        momentum: Heavy-ball momentum of ``sgd``.
        d_min, d_max, factor: Search grid (see ``search_intrinsic_dim``).
        rtol: Relative stop tolerance of the bisection (0: exact integer ``d_int``, which
            the known answer of this task calls for).
        projections: Projections of this task (``null``: the stage's ``projections``).
    """

    enabled: bool = True
    num_params: int = field(default=1000, metadata=int_at_least(2))
    num_constraints: int = field(default=10, metadata=int_at_least(1))
    steps: int = field(default=500, metadata=int_at_least(1))
    optimizer: str = field(default="sgd", metadata=one_of(("adam", "sgd")))
    lr: float = field(default=0.1, metadata=number_above_zero())
    momentum: float = field(default=0.9, metadata=rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    d_min: int = field(default=1, metadata=int_at_least(1))
    d_max: int = field(default=20, metadata=int_at_least(1))
    factor: float = field(default=2.0, metadata=rule("a number > 1", lambda x: x > 1))
    rtol: float = field(default=0.0, metadata=rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    projections: tuple[str, ...] | None = field(default=None, metadata=optional_subset_of(SUBSPACE_PROJECTIONS))

    def _extra_checks(self) -> None:
        if self.num_params % self.num_constraints:
            raise ConfigError(f"ToyTaskSettings.num_params={self.num_params} must be a multiple of num_constraints={self.num_constraints}")
        if not self.d_min <= self.d_max <= self.num_params:
            raise ConfigError(f"ToyTaskSettings needs d_min <= d_max <= num_params, got {self.d_min}, {self.d_max}, {self.num_params}")


@dataclass(frozen=True)
class ModelTaskSettings(Checked):
    """A network of the pipeline trained in random subspaces of its parameter space.

    Attributes:
        enabled: Run the task.
        dataset: Key of the prepared data set (``datasets.<key>``).
        model: Model name and options, as in an experiment config (build from the seed).
        train_examples: First examples of the training split used to train.
        eval_examples: First examples of the test split scoring the accuracy.
        batch_size: Batch size.
        epochs: Passes over the training examples per subspace training (and baseline).
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: Learning rate of the subspace training (units of ``z``).
        baseline_lr: Learning rate of the full-space baseline (``null``: ``lr``); a rate
            that suits ``z`` can be unstable for all ``D`` weights at once.
        bn_mode: Evaluation policy for BatchNorm networks.
        d_min, d_max, factor: Search grid (``d_max`` is capped at the parameter count).
        rtol: Relative stop tolerance of the bisection: it stops once the bracket is
            within ``rtol * d`` (each evaluation is a full subspace training).
        projections: Projections of this task (``null``: the stage's ``projections``).
    """

    enabled: bool = True
    dataset: str = "mnist14"
    model: Mapping[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    train_examples: int = field(default=1000, metadata=int_at_least(1))
    eval_examples: int = field(default=500, metadata=int_at_least(1))
    batch_size: int = field(default=100, metadata=int_at_least(1))
    epochs: int = field(default=5, metadata=int_at_least(1))
    optimizer: str = field(default="adam", metadata=one_of(("adam", "sgd")))
    lr: float = field(default=0.1, metadata=number_above_zero())
    baseline_lr: float | None = field(default=0.01, metadata=optional_number_above_zero())
    bn_mode: str = field(default="recalibrate", metadata=one_of(("recalibrate", "batch")))
    d_min: int = field(default=16, metadata=int_at_least(1))
    d_max: int = field(default=4096, metadata=int_at_least(1))
    factor: float = field(default=2.0, metadata=rule("a number > 1", lambda x: x > 1))
    rtol: float = field(default=0.05, metadata=rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    projections: tuple[str, ...] | None = field(default=None, metadata=optional_subset_of(SUBSPACE_PROJECTIONS))

    def _extra_checks(self) -> None:
        if not isinstance(self.model.get("name"), str):
            raise ConfigError(f"ModelTaskSettings.model needs a 'name', got {dict(self.model)!r}")
        if self.d_min > self.d_max:
            raise ConfigError(f"ModelTaskSettings needs d_min <= d_max, got {self.d_min} > {self.d_max}")


@dataclass(frozen=True)
class IntrinsicDimConfig(Checked):
    """Settings of the ``intrinsic_dim`` stage (``probes.intrinsic_dim``).

    Attributes:
        seeds: Seeds of the searches (new start point, projection and batch order each);
            at least 2, for the bootstrap interval.
        projections: Subset of ``["dense", "sparse"]``.
        threshold: Fraction of the baseline that defines ``d_int`` (0.9: ``d_int90``).
        confidence: Level of the percentile-bootstrap interval of the mean ``d_int``.
        num_bootstrap: Bootstrap resamples.
        toy: The toy task of known intrinsic dimension.
        model: The network task.
    """

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=rule("a list of >= 2 distinct ints", _seeds_ok))
    projections: tuple[str, ...] = field(default=("dense", "sparse"), metadata=subset_of(SUBSPACE_PROJECTIONS))
    threshold: float = field(default=0.9, metadata=rule("a number in (0, 1]", lambda x: 0 < x <= 1))
    confidence: float = field(default=0.95, metadata=rule("a number in (0, 1)", lambda x: 0 < x < 1))
    num_bootstrap: int = field(default=2000, metadata=int_at_least(100))
    toy: ToyTaskSettings = field(default_factory=ToyTaskSettings)
    model: ModelTaskSettings = field(default_factory=ModelTaskSettings)


class ChunkSumToy(nn.Module):
    """Li et al. (2018) toy problem as a module: ``theta in R^D``; the output (N, m) is the
    vector of chunk sums (input ignored), the targets are ``1, ..., m``.

    Args:
        num_params: ``D``.
        num_constraints: ``m`` (divides ``D``).
        seed: Seed of ``theta_0 ~ N(0, 1/D)`` (float64).
    """

    def __init__(self, num_params: int, num_constraints: int, seed: int) -> None:
        super().__init__()
        if num_params % num_constraints:
            raise ValueError(f"num_params={num_params} must be a multiple of num_constraints={num_constraints}")
        g = seeded_generator(seed)
        self.m = num_constraints
        self.theta = nn.Parameter(torch.randn(num_params, generator=g, dtype=torch.float64) / math.sqrt(num_params))

    def forward(self, x: Tensor) -> Tensor:
        return self.theta.view(self.m, -1).sum(dim=1).expand(x.shape[0], self.m)

    def targets(self) -> Tensor:
        """(1, m) targets ``1, ..., m``."""
        return torch.arange(1, self.m + 1, dtype=torch.float64)[None, :]

    def loss_at(self, theta: Tensor) -> Tensor:
        """Loss ``sum_k (chunk sum_k - k)^2`` at a flat ``theta`` (D,)."""
        return ((theta.view(self.m, -1).sum(dim=1) - self.targets()[0].to(theta)) ** 2).sum()


def _sum_squares(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).sum(dim=-1).mean()


@dataclass(frozen=True)
class IntrinsicDimReport:
    """``d_int`` results of :func:`run_intrinsic_dim`.

    Attributes:
        results: ``{task: {projection: IntrinsicDimCI.to_dict() + extras}}`` plus task info.
        summary: Headline numbers (``d_int`` mean and interval per task and projection).
        cis: The :class:`IntrinsicDimCI` objects by ``(task, projection)``.
    """

    results: dict[str, Any]
    summary: dict[str, Any]
    cis: dict[tuple[str, str], IntrinsicDimCI]

    def to_dict(self) -> dict[str, Any]:
        return self.results

    def figures(self) -> dict[str, Any]:
        """Performance vs ``d`` (every evaluated ``d`` of every seed) per task."""
        figs = {}
        for task in sorted({t for t, _ in self.cis}):
            fig = new_figure((5.5, 3.8))
            ax = fig.add_subplot(1, 1, 1)
            for (t, proj), ci in sorted(self.cis.items()):
                if t != task:
                    continue
                marker = "o" if proj == "dense" else "s"
                for j, s in enumerate(ci.searches):
                    order = np.argsort(s.dims)
                    ax.plot(np.asarray(s.dims)[order], np.asarray(s.performances)[order], marker=marker, ms=3, lw=0.8,
                            label=f"{proj}" if j == 0 else None, color="C0" if proj == "dense" else "C1", alpha=0.8)
                ax.axhline(ci.searches[0].target, color="0.4", ls="--", lw=0.8)
                if math.isfinite(ci.mean):
                    ax.axvspan(ci.ci_low, ci.ci_high, color="C0" if proj == "dense" else "C1", alpha=0.15)
            known = self.results.get(task, {}).get("known_d_int")
            if known is not None:
                ax.axvline(known, color="k", lw=0.8, ls=":", label=f"known d_int = {known}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("subspace dimension d")
            ax.set_ylabel("performance")
            ax.set_title(f"{task}: d_int{round(100 * self.results['threshold'])} search")
            ax.legend(fontsize=7)
            fig.tight_layout()
            figs[f"intrinsic_dim_{task}"] = fig
        return figs


def run_intrinsic_dim(
    config: IntrinsicDimConfig,
    *,
    model_factory: Callable[[int], nn.Module] | None = None,
    train_data: tuple[Tensor, Tensor] | None = None,
    eval_data: tuple[Tensor, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    workers: int = 1,
) -> IntrinsicDimReport:
    """``d_int`` (threshold ``config.threshold``) with a bootstrap interval, per task and projection.

    Toy task (``config.toy``): :class:`ChunkSumToy`; baseline 1 (a solution exists and has
    performance ``exp(0)``), so the target is ``exp(-loss) >= threshold``.

    Model task (``config.model``): the network ``model_factory(seed)`` (its initial
    weights are ``theta_0``), trained in ``theta_0 + P z`` with ``train_subspace`` and
    scored by accuracy on ``eval_data``; the baseline is the mean accuracy of the same
    training in the full space (identity projection), one per seed.

    The per-seed baselines, then the per-(task, projection, seed) searches, are
    independent seeded tasks spread over ``workers`` forked processes (same results for
    any count).

    Args:
        config: Stage settings.
        model_factory: ``seed -> model`` with the seed's initial weights (model task).
        train_data: ``(x, y)`` training examples (model task; the first
            ``train_examples`` are used).
        eval_data: ``(x, y)`` held-out examples (model task).
        loss_fn: Loss of the model task.
        workers: Forked CPU worker processes (1: all in this process).

    Raises:
        ValueError: The model task is enabled without ``model_factory`` or data.
    """
    m = config.model
    if m.enabled and (model_factory is None or train_data is None or eval_data is None):
        raise ValueError("the model task is enabled: pass model_factory, train_data and eval_data (or set model.enabled: false)")
    results: dict[str, Any] = {"threshold": config.threshold, "seeds": list(config.seeds), "settings": dataclasses.asdict(config)}
    summary: dict[str, Any] = {}
    cis: dict[tuple[str, str], IntrinsicDimCI] = {}
    boot: dict[str, Any] = {"confidence": config.confidence, "num_bootstrap": config.num_bootstrap}
    seeds = list(config.seeds)
    t0 = time.perf_counter()
    # search specs: (task, projection) -> (performance_fn(d, seed), baseline, grid kwargs)
    specs: dict[tuple[str, str], tuple[Callable[[int, int], float], float, dict[str, Any]]] = {}

    if config.toy.enabled:
        s = config.toy
        toys = {seed: ChunkSumToy(s.num_params, s.num_constraints, seed) for seed in seeds}
        dummy = torch.zeros(1, 1, dtype=torch.float64)

        def toy_perf(proj: str) -> Callable[[int, int], float]:
            def fn(d: int, seed: int) -> float:
                toy = toys[seed]
                batches = [(dummy, toy.targets())]
                res = train_subspace(toy, parameter_dict(toy), d, batches, projection=proj, epochs=s.steps, optimizer=s.optimizer,
                                     lr=s.lr, momentum=s.momentum, performance=lambda th: math.exp(-float(toy.loss_at(th))), seed=seed,
                                     loss_fn=_sum_squares, bn_mode="eval")
                return res.performance
            return fn

        results["toy"] = {"known_d_int": s.num_constraints, "num_params": s.num_params, "baseline": 1.0, "performance": "exp(-loss)"}
        for proj in s.projections or config.projections:
            specs[("toy", proj)] = (toy_perf(proj), 1.0, {"d_min": s.d_min, "d_max": s.d_max, "factor": s.factor, "rtol": s.rtol})

    if m.enabled:
        assert model_factory is not None and train_data is not None and eval_data is not None  # checked above
        models = {seed: model_factory(seed) for seed in seeds}
        first = models[seeds[0]]
        device = next(first.parameters()).device
        train_b = first_batches(train_data[0], train_data[1], m.train_examples, m.batch_size, device)
        eval_b = first_batches(eval_data[0], eval_data[1], m.eval_examples, max(m.batch_size, 500), device)
        bn_mode = m.bn_mode if has_running_stats(first) else "eval"
        recal = train_b if bn_mode == "recalibrate" else None
        kw: dict[str, Any] = {"epochs": m.epochs, "optimizer": m.optimizer, "lr": m.lr, "loss_fn": loss_fn, "bn_mode": bn_mode,
                              "recal_batches": recal}
        num_params = sum(p.numel() for p in first.parameters() if p.requires_grad)
        base_kw = {**kw, "lr": m.lr if m.baseline_lr is None else m.baseline_lr}

        def baseline_of(seed: int) -> float:
            mod = models[seed]
            return train_subspace(
                mod, parameter_dict(mod), num_params, train_b, eval_b, projection="identity", seed=seed, **base_kw
            ).performance

        baselines = dict(zip(seeds, map_forked(baseline_of, seeds, workers), strict=True))
        baseline = float(np.mean(list(baselines.values())))
        d_max = min(m.d_max, num_params)

        def model_perf(proj: str) -> Callable[[int, int], float]:
            def fn(d: int, seed: int) -> float:
                mod = models[seed]
                return train_subspace(mod, parameter_dict(mod), d, train_b, eval_b, projection=proj, seed=seed, **kw).performance
            return fn

        results["model"] = {
            "num_params": num_params, "baseline": baseline, "baselines": {f"seed{k}": v for k, v in baselines.items()},
            "performance": "test accuracy", "bn_mode": bn_mode, "d_max_used": d_max,
            "train_examples": sum(int(b[1].shape[0]) for b in train_b), "eval_examples": sum(int(b[1].shape[0]) for b in eval_b),
            "baseline_wall_time_s": time.perf_counter() - t0,
        }
        for proj in m.projections or config.projections:
            specs[("model", proj)] = (model_perf(proj), baseline, {"d_min": min(m.d_min, d_max), "d_max": d_max, "factor": m.factor,
                                                                   "rtol": m.rtol})

    # costliest first: the model searches, then the toy
    tasks = sorted(((task, proj, seed) for task, proj in specs for seed in seeds), key=lambda t: t[0] != "model")

    def search(task: tuple[str, str, int]) -> tuple[IntrinsicDimResult, float]:
        c0 = time.process_time()
        fn, base, grid = specs[task[:2]]
        seed = task[2]
        res = search_intrinsic_dim(lambda d: fn(d, seed), base, threshold=config.threshold, **grid)
        return res, time.process_time() - c0

    found = dict(zip(tasks, map_forked(search, tasks, workers), strict=True))
    for (task, proj), (_, base, _grid) in specs.items():
        ci = bootstrap_ci([found[(task, proj, seed)][0] for seed in seeds], seeds, **boot)
        cis[(task, proj)] = ci
        results[task][proj] = {**ci.to_dict(), "cpu_time_s": sum(found[(task, proj, seed)][1] for seed in seeds)}
        head = {"d_int_mean": ci.mean, "ci_low": ci.ci_low, "ci_high": ci.ci_high}
        head.update({"known": config.toy.num_constraints} if task == "toy" else {"baseline": base})
        summary[f"{task}.{proj}"] = head
    results["wall_time_s"] = time.perf_counter() - t0
    results["workers"] = workers
    return IntrinsicDimReport(results, summary, cis)


def _model_task_inputs(cfg: ModelTaskSettings, layout: Layout, device: torch.device) -> dict[str, Any]:
    """``model_factory``, ``train_data`` and ``eval_data`` of the model task, from the
    prepared data set (input shape and class count as in the train stage)."""
    data_file = layout.prepared(cfg.dataset)
    if not data_file.is_file():
        raise StageError(f"prepared data {data_file} is missing; run `dvc repro prepare@{cfg.dataset}` first")
    data = torch.load(data_file, map_location="cpu", weights_only=False)
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    shape = tuple(data["train"][0].shape[1:])
    if len(shape) == 3:  # images (C, H, W), as in the train stage
        options.update(in_chans=shape[0], img_size=shape[1])
    else:
        options["in_features"] = shape[0]
    name = cfg.model["name"]
    try:
        build_model(name, num_classes=data["num_classes"], seed=0, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"probes.intrinsic_dim.model.model: {exc}") from None
    return {
        "model_factory": lambda seed: build_model(name, num_classes=data["num_classes"], seed=seed, **options).to(device),
        "train_data": data["train"],
        "eval_data": data["test"],
    }


def run(params: Mapping[str, Any], layout: Layout) -> IntrinsicDimReport:
    """The ``intrinsic_dim`` stage: read ``probes.intrinsic_dim``, search, write ``layout.intrinsic_dim_dir``."""
    cfg = parse_config(IntrinsicDimConfig, section(params, "probes", "intrinsic_dim"), "probes.intrinsic_dim")
    if cfg.model.enabled:
        section(params, "datasets", cfg.model.dataset)
    configure_torch()
    device = pick_device()
    inputs = _model_task_inputs(cfg.model, layout, device) if cfg.model.enabled else {}
    report = run_intrinsic_dim(cfg, workers=cpu_workers(device), **inputs)
    out = layout.intrinsic_dim_dir
    write_figures(report.figures(), out / "figures")
    write_json(out / "results.json", report.to_dict())
    write_json(out / "config.json", dataclasses.asdict(cfg))
    write_json(out / "metrics.json", report.summary)
    for key, s in report.summary.items():
        print(f"intrinsic_dim {key}: d_int = {s['d_int_mean']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]")
    return report
