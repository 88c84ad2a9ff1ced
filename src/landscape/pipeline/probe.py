"""The ``probe`` stage: landscape probes of one (experiment, config), over all its seeds.

Reads the config's trained runs (:func:`landscape.pipeline.runs.load_run`; runs that did
not complete are recorded and skipped), the Hessian Ritz vectors the ``measure`` stage
cached (``krylov.pt``, when present) and the prepared splits; runs the probes that
``probes.<experiment>`` selects for the config (:data:`~landscape.pipeline.probe_kinds.PROBE_KINDS`:
barriers, Bezier curves, scans, sharpness, invariance audit, trajectory) and writes
``probes/<experiment>/<config>/``: metrics.json (headline numbers), results.json
(everything, keyed by seed / seed pair, with settings and BN policy), arrays.npz,
figures/*.png, config.json.

BatchNorm policy (recorded in every result): probes at points other than a trained
solution (paths, scans, perturbations) run with ``bn_mode`` ``"recalibrate"`` (default;
statistics recomputed at every point on fixed training batches) or ``"batch"``; networks
without BatchNorm use ``"eval"`` (nothing to recalibrate). ``"eval"`` is not offered for
BatchNorm networks: a path between two runs has no single set of running statistics. The
Hessian-plane scan defaults to the policy its cached Hessian was computed with
(``ScanSettings.hessian_bn_mode``), and the invariance audit only applies to networks
without normalisation (``"eval"``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shutil
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.functional import first_batches, has_running_stats
from landscape.io import atomic_path, read_json, write_json
from landscape.pipeline.figures import new_figure, write_figures
from landscape.pipeline.intrinsic_dim import IntrinsicDimConfig
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import experiment_dataset, fingerprint, group_seeds, section
from landscape.pipeline.probe_kinds import (
    PROBE_KINDS,
    ProbeContext,
    TrainedRun,
    plan_tasks,
    run_task,
)
from landscape.pipeline.probe_settings import (
    SELECTION,
    BarrierSettings,
    BezierSettings,
    InvarianceSettings,
    ScanSettings,
    Selecting,
    SharpnessSettings,
    TrajectorySettings,
)
from landscape.pipeline.runs import load_run
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.pipeline.sde import SdeConfig
from landscape.probes.connectivity import PathEvaluation
from landscape.probes.functional import Batch, LossFn, Objective, parameter_dict
from landscape.probes.scans import (
    LineScan,
    PlaneScan,
    plot_contour,
    plot_line,
    plot_surface,
)
from landscape.probes.trajectory import TrajectoryScan, plot_trajectory
from landscape.schema import ConfigError, int_at_least, one_of, parse_config
from landscape.training.checkpoint import list_snapshots

__all__ = [
    "PROBES",
    "BarrierSettings",
    "BezierSettings",
    "ScanSettings",
    "SharpnessSettings",
    "InvarianceSettings",
    "TrajectorySettings",
    "ProbeConfig",
    "TrainedRun",
    "ProbeReport",
    "run_landscape_probes",
    "validate_probe_params",
    "load_trained_runs",
    "run",
]

#: Probes of :func:`run_landscape_probes`, in the order they are reported.
PROBES: tuple[str, ...] = tuple(PROBE_KINDS)


@dataclass(frozen=True)
class ProbeConfig(Selecting):
    """Settings of the ``probe`` stage for one experiment group (``probes.<experiment>``).

    Attributes:
        configs: Configs of the experiment that get probes at all (the ``probe`` stage has
            one entry per name; ``"all"`` in code). Each probe's own ``configs`` selects
            among these, ``"all"`` meaning all of them.
        num_examples: Examples of the fixed probe subset (part of the training split): the
            "train" side of barriers and scans, and the loss of sharpness and invariance.
        test_examples: Examples of the test split (the "test" side).
        batch_size: Evaluation batch size.
        bn_mode: Policy at perturbed points for BatchNorm networks, ``"recalibrate"`` or
            ``"batch"`` (networks without BatchNorm use ``"eval"``).
        recal_examples: First examples of the training split used to recalibrate BatchNorm.
        recal_batch_size: Batch size of the recalibration passes.
        barriers, bezier, scans, sharpness, invariance, trajectory: Per-probe settings;
            each has a ``configs`` selection.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=SELECTION)
    num_examples: int = field(default=500, metadata=int_at_least(2))
    test_examples: int = field(default=500, metadata=int_at_least(2))
    batch_size: int = field(default=500, metadata=int_at_least(1))
    bn_mode: str = field(default="recalibrate", metadata=one_of(("recalibrate", "batch")))
    recal_examples: int = field(default=500, metadata=int_at_least(1))
    recal_batch_size: int = field(default=250, metadata=int_at_least(1))
    barriers: BarrierSettings = field(default_factory=BarrierSettings)
    bezier: BezierSettings = field(default_factory=BezierSettings)
    scans: ScanSettings = field(default_factory=ScanSettings)
    sharpness: SharpnessSettings = field(default_factory=SharpnessSettings)
    invariance: InvarianceSettings = field(default_factory=InvarianceSettings)
    trajectory: TrajectorySettings = field(default_factory=TrajectorySettings)

    def probes_for(self, config_name: str) -> tuple[str, ...]:
        """The probes selected for ``config_name``, in :data:`PROBES` order (none if the
        config is not in :attr:`configs`)."""
        if not self.selects(config_name):
            return ()
        return tuple(p for p in PROBES if getattr(self, p).selects(config_name))

    def check_configs(self, known: Collection[str], where: str = "probes") -> None:
        """Raise ``ConfigError`` if a ``configs`` list names an unknown config, or a probe's
        list names a config outside this section's :attr:`configs`.

        Args:
            known: Config names of the experiment.
            where: Key path of this section, for the message.
        """
        if self.configs != "all":
            unknown = [c for c in self.configs if c not in known]
            if unknown:
                raise ConfigError(f"{where}.configs names unknown config {unknown[0]!r}; configs of this experiment: {sorted(known)}")
            if len(set(self.configs)) != len(self.configs):
                raise ConfigError(f"{where}.configs={list(self.configs)!r} repeats a config")
        for p in PROBES:
            sel = getattr(self, p).configs
            if sel == "all":
                continue
            unknown = [c for c in sel if c not in known]
            if unknown:
                raise ConfigError(f"{where}.{p}.configs names unknown config {unknown[0]!r}; configs of this experiment: {sorted(known)}")
            outside = [c for c in sel if not self.selects(c)]
            if outside:
                raise ConfigError(f"{where}.{p}.configs names {outside[0]!r}, which is not in {where}.configs={list(self.configs)!r}")


@dataclass(frozen=True)
class ProbeReport:
    """Everything :func:`run_landscape_probes` measured for one config.

    Attributes:
        results: JSON-ready details, keyed by probe, then by seed (``"seed<k>"``) or seed
            pair (``"s<a>-s<b>"``); each probe records its settings, BN mode and status.
        summary: JSON-ready headline numbers (the stage's DVC metrics).
        arrays: Named arrays (grids, losses, errors, plane values) for an ``.npz`` file.
        line_scans: Line scans by name (for figures).
        plane_scans: Plane scans by name (for figures).
        paths: Path evaluations by name (for figures).
        trajectories: Optimisation paths on their principal planes by name (for figures).
    """

    results: dict[str, Any]
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]
    line_scans: dict[str, tuple[LineScan, ...]]
    plane_scans: dict[str, PlaneScan]
    paths: dict[str, tuple[tuple[str, PathEvaluation], ...]]
    trajectories: dict[str, TrajectoryScan] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.results

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (Agg canvas, no pyplot state) by file stem."""
        figs: dict[str, Any] = {}
        for name, scans in self.line_scans.items():
            fig = new_figure((9.0, 3.5))
            ax_l, ax_e = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
            for label, scan in zip(("train", "test"), scans, strict=True):
                plot_line(scan, metric="loss", ax=ax_l, label=label, log=True)
                plot_line(scan, metric="error", ax=ax_e, label=label)
            ax_l.set_title(name)
            fig.tight_layout()
            figs[name] = fig
        for name, plane in self.plane_scans.items():
            figs[name] = plot_contour(plane, metric="loss", log=True)
            if self.results.get("scans", {}).get("settings", {}).get("surface_plots", False):
                figs[f"{name}_surface"] = plot_surface(plane, metric="loss", log=True)
        barriers = self.results.get("barriers", {})
        if barriers.get("status") == "done":  # every pair's straight-line profile, raw and weight-matched
            fig = new_figure((9.0, 3.5))
            axes = (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2))
            for ax, split in zip(axes, ("train", "test"), strict=True):
                for j, pair in enumerate(barriers["pairs"]):
                    for kind, style in (("raw", "-"), ("aligned", "--")):
                        key = f"barriers.{split}.{kind}.{pair}"
                        if f"{key}.losses" in self.arrays:
                            ax.plot(self.arrays[f"{key}.ts"], self.arrays[f"{key}.losses"], style, color=f"C{j % 10}", lw=1,
                                    label=f"{pair} {kind}" if split == "train" else None)
                ax.set_xlabel("t")
                ax.set_ylabel(f"{split} loss (bn={barriers['bn_mode']})")
            axes[0].set_title("straight lines between seeds (dashed: weight-matched)")
            axes[0].legend(fontsize=6, ncol=2)
            fig.tight_layout()
            figs["barriers"] = fig
        for name, curves in self.paths.items():
            fig = new_figure((9.0, 3.5))
            axes = (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2))
            for label, pe in curves:
                split = label.split(":")[0]
                ax = axes[0] if split == "train" else axes[1]
                ax.plot(pe.ts, pe.losses, marker=".", label=label.split(":", 1)[1])
            for ax, split in zip(axes, ("train", "test"), strict=True):
                ax.set_xlabel("t")
                ax.set_ylabel(f"{split} loss (bn={curves[0][1].bn_mode})")
                ax.legend(fontsize=7)
            axes[0].set_title(name)
            fig.tight_layout()
            figs[name] = fig
        for name, trajectory in self.trajectories.items():
            fig = new_figure((6.5, 5.0))
            plot_trajectory(trajectory, ax=fig.add_subplot(1, 1, 1))
            fig.tight_layout()
            figs[name] = fig
        return figs


def _count(batches: Sequence[Batch]) -> int:
    return sum(int(b[1].shape[0]) for b in batches)


def run_landscape_probes(
    runs: Sequence[TrainedRun],
    data: Mapping[str, tuple[Tensor, Tensor]],
    config: ProbeConfig,
    *,
    config_name: str,
    model_spec: Mapping[str, Any],
    loss_fn: LossFn = F.cross_entropy,
    workers: int = 1,
) -> ProbeReport:
    """Every landscape probe selected for one config, over all its seeds.

    Pairs are all ``(a, b)`` with ``a < b`` among completed runs (in the order given);
    the line and plane scans and the invariance audit use the first completed run (and
    the second for the line). Runs that did not complete are recorded and skipped.

    The work is split into independent tasks (one per seed pair for barriers and Bezier
    curves, one per seed for sharpness, one per scan, the audit), each seeded on its
    own, so the results are the same for any ``workers``. Each seed's end point loss on
    the train and test batches is evaluated once and shared by all its paths.

    Args:
        runs: The config's runs (one per seed), sharing one architecture.
        data: ``{"probe": (x, y), "test": (x, y), "train": (x, y)}`` CPU or device
            tensors; "train" feeds BN recalibration and Bezier training.
        config: Stage settings.
        config_name: Name of the config (selects the probes).
        model_spec: Model name and options (``{"name": "mlp", "activation": ...}``);
            decides whether the ReLU rescaling audit applies and which layers it rescales.
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        workers: Forked CPU worker processes for the tasks (:func:`map_forked`; 1 runs
            everything in this process, as on an accelerator).

    Returns:
        A :class:`ProbeReport`.

    Raises:
        ValueError: ``runs`` is empty, has repeated seeds, ``data`` lacks a split, or
            ``workers`` is not an int >= 1.
    """
    if len(runs) == 0:
        raise ValueError("runs must contain at least one TrainedRun")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs repeat a seed: {seeds}")
    for split in ("probe", "test", "train"):
        if split not in data:
            raise ValueError(f"data must have the splits 'probe', 'test' and 'train'; missing {split!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    done = [r for r in runs if r.status == "completed" and r.model is not None]
    probes = config.probes_for(config_name)
    results: dict[str, Any] = {
        "config": config_name,
        "model": dict(model_spec),
        "probes": list(probes),
        "runs": {
            f"seed{r.seed}": {
                "status": r.status, "probed": any(r is d for d in done), "test_error": r.test_error, "state_hash": r.state_hash
            }
            for r in runs
        },
        "settings": dataclasses.asdict(config),
    }
    summary: dict[str, Any] = {"seeds_completed": len(done), "seeds_skipped": len(runs) - len(done)}
    if not done:
        results.update({p: {"status": "skipped: no completed run"} for p in probes})
        return ProbeReport(results, summary, {}, {}, {}, {})

    t_start = time.perf_counter()
    template = done[0].model
    assert template is not None  # done keeps only runs with a model
    device = next(template.parameters()).device
    bn = has_running_stats(template)
    bn_mode = config.bn_mode if bn else "eval"
    (px, py), (tx, ty), (rx, ry) = data["probe"], data["test"], data["train"]
    recal = first_batches(rx, ry, config.recal_examples, config.recal_batch_size, device) if bn else None
    ctx = ProbeContext(
        template=template,
        device=device,
        bn_mode=bn_mode,
        common={"loss_fn": loss_fn, "bn_mode": bn_mode, "recal_batches": recal},
        train_b=first_batches(px, py, config.num_examples, config.batch_size, device),
        test_b=first_batches(tx, ty, config.test_examples, config.batch_size, device),
        train_data=(rx, ry),
        example=px[:2].to(device),
        done=done,
        params={r.seed: parameter_dict(r.model) for r in done if r.model is not None},  # every run of done
        pairs=list(itertools.combinations([r.seed for r in done], 2)),
        settings={p: getattr(config, p) for p in PROBES},
        model_spec=model_spec,
        loss_fn=loss_fn,
    )
    results["bn"] = {"policy": config.bn_mode, "bn_mode": bn_mode, "has_batchnorm": bn, "recal_examples": _count(recal or [])}
    results["data"] = {"train_examples": _count(ctx.train_b), "test_examples": _count(ctx.test_b),
                       "train_source": "probe subset of the training split"}
    summary["bn_mode"] = bn_mode
    tasks = plan_tasks(ctx, probes)
    if any(t[0] in ("barriers", "bezier") for t in tasks):  # every seed's end points, once
        used = {s for t in tasks if t[0] == "barriers" for s in t[1:]} | {s for t in tasks if t[0] == "bezier" for s in t[1:]}
        splits = [("test", ctx.test_b)] + ([("train", ctx.train_b)] if any(t[0] == "barriers" for t in tasks) else [])
        for seed in sorted(used):
            for split, batches in splits:
                ctx.ends[(seed, split)] = Objective(template, batches, **ctx.common).evaluate(ctx.params[seed])
    outputs = dict(zip(tasks, map_forked(functools.partial(run_task, ctx), tasks, workers), strict=True))
    for task in tasks:  # merge in plan order: the same arrays and figures for any worker count
        ctx.merge(outputs[task][1])
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for probe in probes:
        results[probe], head = PROBE_KINDS[probe].assemble(ctx, outputs)
        if head is not None:
            summary[probe] = head
        mine = [out for task, out in outputs.items() if task[0] == probe]
        timings[probe] = sum(out[2] for out in mine)
        cpu[probe] = sum(out[3] for out in mine)
    results["timings_s"], results["cpu_s"] = timings, cpu
    results["workers"] = min(workers, max(1, len(tasks)))
    summary["wall_time_s"], summary["cpu_time_s"] = time.perf_counter() - t_start, sum(cpu.values())
    return ProbeReport(results, summary, ctx.arrays, ctx.line_scans, ctx.plane_scans, ctx.paths, ctx.trajectories)


# ======================================================================== validation


def validate_probe_params(params: Mapping[str, Any], required: Collection[str] = ()) -> dict[str, Any]:
    """Validate the ``probes`` section of a whole ``params.yaml`` mapping before any stage runs.

    ``probes.<experiment>`` (optional per experiment) is a :class:`ProbeConfig` whose
    ``configs`` must be an explicit list of that experiment's configs (the ``probe`` stage
    iterates it) and whose probe selections name only those; ``probes.intrinsic_dim``
    (:class:`IntrinsicDimConfig`, whose model-task data set must be a key of ``datasets``)
    and ``probes.sde`` (:class:`SdeConfig`) are optional. No other key is allowed.

    Args:
        params: The whole params mapping.
        required: Keys of ``probes`` that must be present (the pipeline's probe stages:
            experiment names, ``"intrinsic_dim"``, ``"sde"``).

    Returns:
        ``{"probe": {experiment: ProbeConfig}, "intrinsic_dim": IntrinsicDimConfig | None,
        "sde": SdeConfig | None}``.

    Raises:
        ConfigError: The first problem found, naming its key path and value.
    """
    section = params.get("probes")
    experiments = params.get("experiments") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"params.yaml needs a `probes` mapping (settings per experiment, intrinsic_dim, sde), got {section!r}")
    studies = ("intrinsic_dim", "sde")
    clash = sorted(set(experiments) & set(studies))
    if clash:
        raise ConfigError(f"experiment name {clash[0]!r} clashes with the probes study of the same name; rename the experiment")
    missing = sorted(set(required) - set(section))
    unknown = sorted(set(section) - set(experiments) - set(studies))
    if missing:
        raise ConfigError(f"missing key probes.{missing[0]}: the pipeline has a stage for it (required: {sorted(required)})")
    if unknown:
        raise ConfigError(f"unknown key probes.{unknown[0]}; allowed: the experiments {sorted(experiments)} and {list(studies)}")
    out: dict[str, Any] = {"probe": {}, "intrinsic_dim": None, "sde": None}
    for exp in experiments:
        if exp not in section:
            continue
        where = f"probes.{exp}"
        cfg = parse_config(ProbeConfig, section[exp], where)
        if cfg.configs == "all" or not cfg.configs:
            raise ConfigError(f"{where}.configs={section[exp].get('configs', 'all')!r} is not allowed; allowed: a non-empty list of "
                              f"config names (the probe stage has one entry per name)")
        cfg.check_configs(list((experiments[exp] or {}).get("configs") or {}), where)
        out["probe"][exp] = cfg
    if "intrinsic_dim" in section:
        idc = parse_config(IntrinsicDimConfig, section["intrinsic_dim"], "probes.intrinsic_dim")
        if idc.model.enabled and idc.model.dataset not in (params.get("datasets") or {}):
            valid = sorted(params.get("datasets") or {})
            raise ConfigError(f"probes.intrinsic_dim.model.dataset={idc.model.dataset!r} is not a key of `datasets`; valid: {valid}")
        out["intrinsic_dim"] = idc
    if "sde" in section:
        out["sde"] = parse_config(SdeConfig, section["sde"], "probes.sde")
    return out


# ========================================================================= the stage


def load_trained_runs(
    layout: Layout, experiment: str, config: str, seeds: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[list[TrainedRun], dict[str, Any]]:
    """The runs of ``config`` (one per seed) with their cached Ritz pairs, and the model spec.

    A run that did not complete is a :class:`TrainedRun` without model (nor test error,
    state hash or Ritz pairs). A completed run carries the ``measure`` stage's Ritz values
    and vectors when ``krylov.pt`` exists, the BatchNorm policy of that Hessian, the stored
    run it came from and the paths of the weight snapshots it kept along training.

    Returns:
        The runs in ``seeds`` order, and the model spec ``{name, **options}`` of the first
        completed run (empty when none completed).
    """
    runs: list[TrainedRun] = []
    spec: dict[str, Any] = {}
    for seed in seeds:
        stored = load_run(layout, experiment, config, seed, device)
        if stored.status != "completed":
            runs.append(TrainedRun(seed=seed, status=stored.status, model=None))
            continue
        values = vectors = ritz_bn = None
        krylov_file = layout.krylov(experiment, config, seed)
        if krylov_file.is_file():
            krylov = torch.load(krylov_file, map_location="cpu", weights_only=False)
            values, vectors = krylov.get("ritz_values"), krylov.get("ritz_vectors")
            ritz_bn = read_json(layout.curvature(experiment, config, seed)).get("settings", {}).get("bn_mode")
        metrics = stored.metrics
        runs.append(TrainedRun(seed=seed, status=stored.status, model=stored.model,
                               test_error=float(metrics.get("test_error", float("nan"))),
                               state_hash=metrics.get("state_hash"), ritz_values=values, ritz_vectors=vectors, ritz_bn_mode=ritz_bn,
                               source=stored, snapshots=tuple(list_snapshots(layout.run(experiment, config, seed).checkpoints))))
        spec = spec or dict(stored.spec)
    return runs, spec


def run(params: Mapping[str, Any], layout: Layout, experiment: str, config: str) -> ProbeReport:
    """The ``probe`` stage of ``(experiment, config)``: read ``probes.<experiment>``, probe
    every seed's run, write ``layout.probes_dir(experiment, config)``.

    Raises:
        ConfigError: Bad settings, an unknown config, or a config without a probe entry.
    """
    where = f"probes.{experiment}"
    cfg = parse_config(ProbeConfig, section(params, "probes", experiment), where)
    known = section(params, "experiments", experiment, "configs")
    cfg.check_configs(list(known), where)
    if config not in known:
        raise ConfigError(f"unknown config {config!r} of experiment {experiment!r}; configs: {sorted(known)}")
    if not cfg.selects(config):
        raise ConfigError(f"config {config!r} is not in {where}.configs={list(cfg.configs)!r}: it has no probe entry")
    dataset_key = experiment_dataset(params, experiment)
    seeds = group_seeds(params, experiment)
    configure_torch()
    device = pick_device()
    data = torch.load(layout.prepared(dataset_key), map_location="cpu", weights_only=False)
    runs, spec = load_trained_runs(layout, experiment, config, seeds, device)
    report = run_landscape_probes(runs, {k: data[k] for k in ("probe", "test", "train")}, cfg, config_name=config, model_spec=spec,
                                  workers=cpu_workers(device))

    out = layout.probes_dir(experiment, config)
    resolved = dataclasses.asdict(cfg)
    run_hashes = {f"seed{r.seed}": r.state_hash for r in runs}
    probe_id = fingerprint(resolved, run_hashes, experiment, config)
    meta = {"experiment": experiment, "config": config, "dataset": dataset_key, "probe_id": probe_id}
    figures_dir = layout.probe_figures_dir(experiment, config)
    if figures_dir.is_dir():  # figures of probes no longer selected must not linger
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)  # a DVC output even when no selected probe draws
    write_figures(report.figures(), figures_dir)
    with atomic_path(out / "arrays.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **report.arrays)  # type: ignore[arg-type]  # names as keywords; the stub types allow_pickle
    write_json(out / "results.json", {**meta, **report.results})
    write_json(out / "config.json", {**meta, "probes": resolved, "seeds": seeds})
    write_json(out / "metrics.json", {**meta, **report.summary})
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.results.get("cpu_s", {}).items())
    print(f"probe {experiment}/{config}: {len(report.results['probes'])} probes, "
          f"{report.summary['seeds_completed']} seeds, {report.summary.get('wall_time_s', 0.0):.1f}s wall "
          f"on {report.results.get('workers', 1)} workers (CPU: {timings})")
    return report
