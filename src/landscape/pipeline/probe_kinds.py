"""The probes of the ``probe`` stage: each kind's tasks and assembly, and their registry.

A probe kind (:class:`ProbeKind`) splits its work on one config into independent, seeded
tasks (``plan``), computes one task (``run``) and assembles the tasks' values into its
results entry and headline numbers (``assemble``); its settings block is in
:mod:`landscape.pipeline.probe_settings`. :data:`PROBE_KINDS` maps the names that
``params.yaml`` uses (``probes.<experiment>.<name>``) to the kinds:

* ``barriers``: straight-line barriers between every pair of seeds on train and test
  data, before and after weight-matching alignment (Frankle, Dziugaite, Roy & Carbin 2020;
  Ainsworth, Hayase & Srinivasa 2023, *Git Re-Basin*); one task per pair.
* ``bezier``: trained Bezier curves with the expected-loss and minimax objectives
  (Garipov, Izmailov, Podoprikhin, Vetrov & Wilson 2018); one task per pair.
* ``scans``: the 1D interpolation scan (Goodfellow, Vinyals & Saxe 2015), a
  filter-normalised random plane (Li, Xu, Taylor, Studer & Goldstein 2018) and the plane of
  the top-2 cached Hessian eigenvectors; one task per scan.
* ``sharpness``: worst-case (L2, L-inf; Keskar et al. 2017), average-case and adaptive
  (Kwon, Kim, Park & Choi 2021, *ASAM*) sharpness; one task per seed.
* ``invariance``: flatness measures under a function-preserving ReLU rescaling (Dinh,
  Pascanu, Bengio & Bengio 2017); one task.
* ``trajectory``: the optimisation path on the top-2 principal plane of its weight
  snapshots with the loss on that plane (Li, Xu, Taylor, Studer & Goldstein 2018, section
  7); one task per seed. The snapshots are the ones the run kept, or, when it kept too few,
  those of a retraining from the run's initial weights with its recipe and seed, whose final
  weights are checked against the run's (bit-identical on the same machine).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature import HessianOperator, logdet, top_eigenpairs
from landscape.curvature import trace as estimate_trace
from landscape.functional import first_batches
from landscape.pipeline.depth import model_depth
from landscape.pipeline.probe_settings import (
    BarrierSettings,
    BezierSettings,
    InvarianceSettings,
    ScanSettings,
    SharpnessSettings,
    TrajectorySettings,
)
from landscape.pipeline.runs import StoredRun, initial_model
from landscape.pipeline.seed_summary import mean_sd
from landscape.probes.connectivity import PathEvaluation, fit_bezier, linear_path
from landscape.probes.functional import Batch, Evaluation, LossFn, Objective, parameter_dict
from landscape.probes.invariance import invariance_audit, rescale_layers
from landscape.probes.permutation import align
from landscape.probes.scans import (
    LineScan,
    PlaneScan,
    hessian_plane_scan,
    line_scan,
    random_plane_scan,
)
from landscape.probes.sharpness import (
    adaptive_sharpness,
    average_sharpness,
    worst_case_sharpness,
)
from landscape.probes.trajectory import TrajectoryScan, trajectory_scan
from landscape.schema import parse_config
from landscape.training import randomize_labels, train_model
from landscape.training.config import TrainConfig

__all__ = [
    "TrainedRun",
    "ProbeContext",
    "ProbeKind",
    "PROBE_KINDS",
    "PLAN_ORDER",
    "plan_tasks",
    "run_task",
]


@dataclass(frozen=True)
class TrainedRun:
    """One trained run of a config, as the ``probe`` stage loaded it.

    Attributes:
        seed: Training seed.
        status: ``"completed"`` or why it is unusable (e.g. ``"diverged"``); only completed
            runs are probed.
        model: The network with its final weights (None when not completed).
        test_error: Final test error reported by training (NaN if unknown).
        state_hash: Hash of the final state (provenance).
        ritz_values: (k,) cached top Hessian eigenvalues (None if not measured).
        ritz_vectors: (P, k) cached Ritz vectors in ``named_parameters`` order (None if not
            measured).
        ritz_bn_mode: BatchNorm policy of the Hessian those vectors belong to (None if
            unknown).
        source: The stored run (training settings, architecture; its initial weights are
            :func:`~landscape.pipeline.runs.initial_model`), for the trajectory probe's
            retraining (None when not loaded from a run directory).
        snapshots: The weight snapshots the run kept along training, in epoch order.
    """

    seed: int
    status: str
    model: nn.Module | None
    test_error: float = math.nan
    state_hash: str | None = None
    ritz_values: Tensor | None = None
    ritz_vectors: Tensor | None = None
    ritz_bn_mode: str | None = None
    source: StoredRun | None = None
    snapshots: tuple[Path, ...] = ()


def _path_arrays(arrays: dict[str, np.ndarray], key: str, pe: PathEvaluation) -> None:
    arrays[f"{key}.ts"] = pe.ts
    arrays[f"{key}.losses"] = pe.losses
    arrays[f"{key}.errors"] = pe.errors


def _path_summary(pe: PathEvaluation) -> dict[str, Any]:
    return {
        "barrier": pe.barrier,
        "barrier_interp": pe.barrier_interp,
        "error_barrier": pe.error_barrier,
        "error_barrier_interp": pe.error_barrier_interp,
        "t_max": pe.t_max,
        "end_losses": [float(pe.losses[0]), float(pe.losses[-1])],
        "bn_mode": pe.bn_mode,
    }


def _is_relu_mlp(model_spec: Mapping[str, Any]) -> tuple[bool, str]:
    if model_spec.get("name") != "mlp":
        return False, f"not applicable: model {model_spec.get('name')!r} is not an MLP"
    act, norm = model_spec.get("activation", "relu"), model_spec.get("norm", "none")
    if act != "relu":
        return False, f"not applicable: activation {act!r} is not positively homogeneous"
    if norm != "none":
        return False, f"not applicable: norm {norm!r} between the layers breaks the rescaling identity"
    if (model_depth(model_spec) or 0) < 1:
        return False, "not applicable: no hidden layer"
    return True, ""


def _model_at(template: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    """A private copy of ``template`` holding ``params`` (the caller's model is untouched)."""
    model = copy.deepcopy(template)
    model.load_state_dict({k: v.detach() for k, v in params.items()}, strict=False)
    return model


@dataclass
class ProbeContext:
    """What every probe task of one config needs. A task writes its arrays and plot data
    into a fresh copy's collectors, which the caller merges in task order.

    Attributes:
        template: The first completed run's network (architecture and buffers of every point).
        device: Device of its parameters.
        bn_mode: BatchNorm policy at perturbed points (``"eval"`` without BatchNorm).
        common: ``loss_fn``, ``bn_mode`` and ``recal_batches`` keyword arguments of the probes.
        train_b, test_b: Evaluation batches of the probe subset and of the test split.
        train_data: ``(x, y)`` of the training split (Bezier training).
        example: Two inputs for the permutation tracer.
        done: The completed runs, in the order given.
        params: Parameter dict of each completed run, by seed.
        pairs: Seed pairs ``(a, b)``, ``a`` before ``b``.
        settings: Settings of each probe kind, by name (:data:`PROBE_KINDS`).
        model_spec: Model name and options of the config.
        loss_fn: ``loss_fn(outputs, targets)`` -> batch mean.
        ends: End-point evaluations by ``(seed, split)``, shared by every path.
        arrays, line_scans, plane_scans, paths, trajectories: Collectors of a task's arrays
            and plot data.
    """

    template: nn.Module
    device: torch.device
    bn_mode: str
    common: dict[str, Any]
    train_b: list[Batch]
    test_b: list[Batch]
    train_data: tuple[Tensor, Tensor]
    example: Tensor
    done: list[TrainedRun]
    params: dict[int, dict[str, Tensor]]
    pairs: list[tuple[int, int]]
    settings: Mapping[str, Any]
    model_spec: Mapping[str, Any]
    loss_fn: LossFn
    ends: dict[tuple[int, str], Evaluation] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    line_scans: dict[str, tuple[LineScan, ...]] = field(default_factory=dict)
    plane_scans: dict[str, PlaneScan] = field(default_factory=dict)
    paths: dict[str, tuple[tuple[str, PathEvaluation], ...]] = field(default_factory=dict)
    trajectories: dict[str, TrajectoryScan] = field(default_factory=dict)

    def fresh(self) -> ProbeContext:
        """A copy sharing everything but with empty collectors."""
        return dataclasses.replace(self, arrays={}, line_scans={}, plane_scans={}, paths={}, trajectories={})

    def merge(self, other: ProbeContext) -> None:
        self.arrays.update(other.arrays)
        self.line_scans.update(other.line_scans)
        self.plane_scans.update(other.plane_scans)
        self.paths.update(other.paths)
        self.trajectories.update(other.trajectories)

    def end_evals(self, a: int, b: int, split: str) -> tuple[Evaluation | None, Evaluation | None]:
        return self.ends.get((a, split)), self.ends.get((b, split))


# ------------------------------------------------------------------------ barriers


def _plan_barriers(ctx: ProbeContext) -> list[tuple]:
    s: BarrierSettings = ctx.settings["barriers"]
    use = ctx.pairs if s.max_pairs is None else ctx.pairs[: s.max_pairs]
    return [("barriers", a, b) for a, b in use]


def _barrier_pair(ctx: ProbeContext, task: tuple) -> tuple[dict[str, Any], str]:
    """Straight-line barriers of one pair ``("barriers", a, b)``, train and test, raw and weight-matched."""
    s: BarrierSettings = ctx.settings["barriers"]
    _, a, b = task
    key = f"s{a}-s{b}"
    grid = np.linspace(0.0, 1.0, s.num_points)
    entry: dict[str, Any] = {}
    ends = {"raw": ctx.params[b]}
    align_status = "not requested"
    if s.align:
        states = {r.seed: r.model.state_dict() for r in ctx.done if r.seed in (a, b) and r.model is not None}
        try:
            aligned_state, match = align(ctx.template, states[a], states[b], ctx.example, restarts=s.align_restarts,
                                         max_sweeps=s.align_max_sweeps, seed=s.seed)
        except ValueError as exc:  # the tracer cannot follow this architecture: recorded, not hidden
            align_status = f"skipped: {exc}"
        else:
            align_status = "done"
            ends["aligned"] = {n: aligned_state[n] for n in ctx.params[b]}
            entry["matching"] = {"objective_start": float(match.objective[0]), "objective_end": float(match.objective[-1]),
                                 "sweeps": match.sweeps, "converged": match.converged,
                                 "restart_objectives": match.restart_objectives.tolist()}
    for split, batches in (("train", ctx.train_b), ("test", ctx.test_b)):
        entry[split] = {}
        ev_a, ev_b = ctx.end_evals(a, b, split)
        for kind, end in ends.items():
            known = (ev_a, ev_b if kind == "raw" else None)  # the aligned end is another point: evaluated
            pe = linear_path(ctx.template, ctx.params[a], end, batches, ts=grid, end_evals=known, **ctx.common)
            entry[split][kind] = {**_path_summary(pe), "losses": pe.losses.tolist(), "errors": pe.errors.tolist()}
            _path_arrays(ctx.arrays, f"barriers.{split}.{kind}.{key}", pe)
        if "aligned" in entry[split]:  # weight matching preserves the function: the end loss must not move
            raw_end, aligned_end = entry[split]["raw"]["end_losses"][1], entry[split]["aligned"]["end_losses"][1]
            entry[split]["aligned_end_loss_change"] = abs(aligned_end - raw_end)
    return entry, align_status


def _assemble_barriers(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    s: BarrierSettings = ctx.settings["barriers"]
    if not ctx.pairs:
        return {"status": "skipped: fewer than 2 completed runs"}, None
    mine = [(task, out[0]) for task, out in outputs.items() if task[0] == "barriers"]
    per_pair = {f"s{t[1]}-s{t[2]}": value[0] for t, value in mine}
    statuses = [value[1] for _, value in mine]
    align_status = next((st for st in statuses if st != "done"), "done") if s.align else "not requested"
    agg: dict[str, Any] = {}
    for split in ("train", "test"):
        for kind in ("raw", "aligned"):
            vals = [e[split][kind] for e in per_pair.values() if kind in e[split]]
            if vals:
                agg[f"{split}.{kind}"] = {m: mean_sd([v[m] for v in vals]) for m in ("barrier", "barrier_interp", "error_barrier")}
    entry = {"status": "done", "pairs": per_pair, "summary": agg, "alignment": align_status, "bn_mode": ctx.bn_mode,
             "num_pairs": len(per_pair), "num_pairs_total": len(ctx.pairs), "ts": np.linspace(0.0, 1.0, s.num_points).tolist()}
    return entry, {k: {m: v[m]["mean"] for m in v} for k, v in agg.items()}


# -------------------------------------------------------------------------- bezier


def _plan_bezier(ctx: ProbeContext) -> list[tuple]:
    return [("bezier", a, b) for a, b in ctx.pairs[: ctx.settings["bezier"].num_pairs]]


def _bezier_pair(ctx: ProbeContext, task: tuple) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bezier curves (each objective) vs the straight line of one pair ``("bezier", a, b)``,
    on the curve's training data and on test."""
    s: BezierSettings = ctx.settings["bezier"]
    _, a, b = task
    curve_train = first_batches(*ctx.train_data, s.train_examples, s.batch_size, ctx.device)
    grid = np.linspace(0.0, 1.0, s.num_points)
    key = f"s{a}-s{b}"
    pa, pb = ctx.params[a], ctx.params[b]
    train_obj = Objective(ctx.template, curve_train, **ctx.common)
    ends = {"train": (train_obj.evaluate(pa), train_obj.evaluate(pb)), "test": ctx.end_evals(a, b, "test")}
    straight = {
        split: linear_path(ctx.template, pa, pb, bt, ts=grid, end_evals=ends[split], **ctx.common)
        for split, bt in (("train", curve_train), ("test", ctx.test_b))
    }
    entry: dict[str, Any] = {"straight": {k: {**_path_summary(v), "losses": v.losses.tolist()} for k, v in straight.items()}}
    head: dict[str, Any] = {}
    curves: list[tuple[str, PathEvaluation]] = [(f"{k}:straight", v) for k, v in straight.items()]
    for split, v in straight.items():
        _path_arrays(ctx.arrays, f"bezier.{key}.straight.{split}", v)
    for objective in s.objectives:
        res = fit_bezier(ctx.template, pa, pb, curve_train, num_bends=s.num_bends, objective=objective, steps=s.steps, lr=s.lr,
                         seed=s.seed, ts_per_step=s.ts_per_step, minimax_ts=np.linspace(0.1, 0.9, s.minimax_points),
                         surrogate=s.surrogate, temperature=s.temperature, top_k=s.top_k, eval_ts=grid, test_batches=ctx.test_b,
                         end_evals=ends, **ctx.common)
        c_entry: dict[str, Any] = {"settings": res.settings, "history": res.history.tolist()}
        for split, pe in (("train", res.train), ("test", res.test)):
            assert pe is not None  # test_batches given: both splits are evaluated
            st = straight[split]
            below = bool(pe.barrier < st.barrier)
            c_entry[split] = {**_path_summary(pe), "losses": pe.losses.tolist(), "straight_barrier": st.barrier,
                              "barrier_reduction": st.barrier - pe.barrier, "below_straight": below}
            curves.append((f"{split}:bezier-{objective}", pe))
            _path_arrays(ctx.arrays, f"bezier.{key}.{objective}.{split}", pe)
            head[f"{key}.{objective}.{split}"] = {"straight": st.barrier, "curve": pe.barrier, "below_straight": below}
        ctx.arrays[f"bezier.{key}.{objective}.control_points"] = res.curve.control_points[1:-1].detach().cpu().numpy()
        entry[objective] = c_entry
    ctx.paths[f"bezier_{key}"] = tuple(curves)
    return entry, head


def _assemble_bezier(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    s: BezierSettings = ctx.settings["bezier"]
    if not ctx.pairs:
        return {"status": "skipped: fewer than 2 completed runs"}, None
    per_pair: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for task, out in outputs.items():
        if task[0] == "bezier":
            per_pair[f"s{task[1]}-s{task[2]}"], h = out[0]
            head.update(h)
    entry = {"status": "done", "pairs": per_pair, "bn_mode": ctx.bn_mode,
             "train_examples": min(s.train_examples, int(ctx.train_data[1].shape[0])),
             "train_source": "first examples of the training split"}
    return entry, head


# --------------------------------------------------------------------------- scans


def _plan_scans(ctx: ProbeContext) -> list[tuple]:
    tasks: list[tuple] = [("scans", "hessian_plane")] if ctx.settings["scans"].hessian_plane else []
    tasks.append(("scans", "random_plane"))
    if len(ctx.done) >= 2:
        tasks.append(("scans", "line"))
    return tasks


def _scan(ctx: ProbeContext, task: tuple) -> dict[str, Any]:
    """One scan ``("scans", "line" | "random_plane" | "hessian_plane")``."""
    return {"line": _line_scan, "random_plane": _random_plane, "hessian_plane": _hessian_plane}[task[1]](ctx, ctx.settings["scans"])


def _line_scan(ctx: ProbeContext, s: ScanSettings) -> dict[str, Any]:
    """Interpolation scan ``alpha in [line_min, line_max]`` between the first two runs."""
    first, second = ctx.done[0], ctx.done[1]
    alphas = np.union1d(np.linspace(s.line_min, s.line_max, s.line_points), [0.0, 1.0])  # both solutions on the grid
    scans = tuple(line_scan(ctx.template, ctx.params[first.seed], ctx.params[second.seed], bt, alphas=alphas, **ctx.common)
                  for bt in (ctx.train_b, ctx.test_b))
    for split, sc in zip(("train", "test"), scans, strict=True):
        ctx.arrays[f"scans.line.{split}.alphas"] = sc.alphas
        ctx.arrays[f"scans.line.{split}.losses"] = sc.losses
        ctx.arrays[f"scans.line.{split}.errors"] = sc.errors
    ctx.line_scans[f"line_s{first.seed}-s{second.seed}"] = scans
    return {"seeds": [first.seed, second.seed], "train": scans[0].to_dict(), "test": scans[1].to_dict()}


def _random_plane(ctx: ProbeContext, s: ScanSettings) -> dict[str, Any]:
    """Filter-normalised random plane around the first run."""
    first = ctx.done[0]
    coords = np.linspace(-s.plane_span, s.plane_span, s.plane_points)
    rp = random_plane_scan(ctx.template, ctx.params[first.seed], ctx.train_b, seed=s.direction_seed, bias_policy=s.bias_policy, xs=coords,
                           **ctx.common)
    _plane_arrays(ctx.arrays, "scans.random_plane", rp)
    ctx.plane_scans[f"plane_random_seed{first.seed}"] = rp
    return _plane_summary(rp)


def _assemble_scans(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    s: ScanSettings = ctx.settings["scans"]
    entry: dict[str, Any] = {"status": "done", "settings": dataclasses.asdict(s), "bn_mode": ctx.bn_mode, "center_seed": ctx.done[0].seed}
    line = outputs.get(("scans", "line"))
    entry["line"] = line[0] if line is not None else {"status": "skipped: fewer than 2 completed runs"}
    entry["random_plane"] = outputs[("scans", "random_plane")][0]
    hp = outputs.get(("scans", "hessian_plane"))
    entry["hessian_plane"] = hp[0] if hp is not None else {"status": "not requested"}
    return entry, None


def _hessian_plane(ctx: ProbeContext, s: ScanSettings) -> dict[str, Any]:
    """Plane of the cached top-2 Hessian eigenvectors around the first run."""
    run = ctx.done[0]
    vecs, lam = run.ritz_vectors, run.ritz_values
    if vecs is None or vecs.ndim != 2 or vecs.shape[1] < 2:
        return {"status": "skipped: no cached Ritz vectors (k >= 2) for this run"}
    lam1 = float(lam[0]) if lam is not None and lam.numel() else math.nan
    if s.hessian_span is not None:
        span = float(s.hessian_span)
    elif math.isfinite(lam1) and lam1 > 0:
        span = math.sqrt(2.0 * s.hessian_rise / lam1)
    else:
        return {"status": f"skipped: lambda_1 = {lam1} gives no automatic span; set hessian_span"}
    ref = ctx.params[run.seed]
    dtype = next(iter(ref.values())).dtype
    v1, v2 = (vecs[:, i].to(device=ctx.device, dtype=dtype) for i in (0, 1))
    if ctx.common["recal_batches"] is None:  # no BatchNorm: every policy is "eval"
        mode = "eval"
    elif s.hessian_bn_mode == "match":
        mode = run.ritz_bn_mode if run.ritz_bn_mode in ("eval", "batch", "recalibrate") else ctx.bn_mode
    else:
        mode = s.hessian_bn_mode
    common = {**ctx.common, "bn_mode": mode}  # eval uses this run's own running statistics (it is the template)
    hp = hessian_plane_scan(ctx.template, ref, v1, v2, ctx.train_b, xs=np.linspace(-span, span, s.plane_points), **common)
    _plane_arrays(ctx.arrays, "scans.hessian_plane", hp)
    ctx.plane_scans[f"plane_hessian_seed{run.seed}"] = hp
    return {**_plane_summary(hp), "span": span, "ritz_values": lam[:2].tolist() if lam is not None else None,
            "span_rule": "given" if s.hessian_span is not None else f"sqrt(2 * {s.hessian_rise} / lambda_1)",
            "ritz_bn_mode": run.ritz_bn_mode, "bn_policy": s.hessian_bn_mode}


# ----------------------------------------------------------------------- sharpness


def _plan_sharpness(ctx: ProbeContext) -> list[tuple]:
    return [("sharpness", r.seed) for r in ctx.done]


def _sharpness_seed(ctx: ProbeContext, task: tuple) -> dict[str, Any]:
    """Worst-case (L2, L-inf), average-case and adaptive sharpness of one run ``("sharpness", seed)``."""
    s: SharpnessSettings = ctx.settings["sharpness"]
    seed = task[1]
    run = next(r for r in ctx.done if r.seed == seed)
    th = ctx.params[seed]
    asc: dict[str, Any] = {"steps": s.steps, "restarts": s.restarts, "seed": s.seed}
    l2 = worst_case_sharpness(ctx.template, th, ctx.train_b, eps=s.eps_l2, norm="l2", **asc, **ctx.common)
    linf = worst_case_sharpness(ctx.template, th, ctx.train_b, eps=s.eps_linf, norm="linf", **asc, **ctx.common)
    avg = average_sharpness(ctx.template, th, ctx.train_b, sigma=s.sigma, num_samples=s.num_samples, seed=s.seed, **ctx.common)
    ada = adaptive_sharpness(ctx.template, th, ctx.train_b, eps=s.adaptive_eps, norm="l2", xi=s.adaptive_xi, **asc, **ctx.common)
    return {"worst_l2": l2.to_dict(), "worst_linf": linf.to_dict(), "average": avg.to_dict(), "adaptive_l2": ada.to_dict(),
            "test_error": run.test_error, "param_norm": float(torch.cat([t.reshape(-1) for t in th.values()]).norm())}


def _assemble_sharpness(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    per_seed = {f"seed{t[1]}": out[0] for t, out in outputs.items() if t[0] == "sharpness"}
    agg = {k: mean_sd([v[k]["value"] for v in per_seed.values()]) for k in ("worst_l2", "worst_linf", "average", "adaptive_l2")}
    return {"status": "done", "seeds": per_seed, "summary": agg, "bn_mode": ctx.bn_mode}, {k: v["mean"] for k, v in agg.items()}


def _plane_summary(scan: PlaneScan) -> dict[str, Any]:
    i = np.unravel_index(int(np.argmin(scan.Z)), scan.Z.shape)
    c = tuple(s // 2 for s in scan.Z.shape)
    return {
        "kind": scan.kind,
        "bn_mode": scan.bn_mode,
        "settings": dict(scan.settings),
        "grid": list(scan.Z.shape),
        "range": [float(scan.X.min()), float(scan.X.max())],
        "center_loss": float(scan.Z[c]),
        "min_loss": float(scan.Z[i]),
        "min_at": [float(scan.X[i]), float(scan.Y[i])],
        "max_loss": float(np.max(scan.Z)),
    }


def _plane_arrays(arrays: dict[str, np.ndarray], key: str, scan: PlaneScan) -> None:
    arrays[f"{key}.X"] = scan.X
    arrays[f"{key}.Y"] = scan.Y
    arrays[f"{key}.loss"] = scan.Z
    arrays[f"{key}.error"] = scan.errors


# ---------------------------------------------------------------------- invariance


def _plan_invariance(ctx: ProbeContext) -> list[tuple]:  # noqa: ARG001  (ProbeKind.plan signature)
    return [("invariance",)]


def _invariance(ctx: ProbeContext, task: tuple) -> tuple[dict[str, Any], dict[str, Any] | None]:  # noqa: ARG001  (ProbeKind.run)
    """Flatness measures of the first run before and after a function-preserving rescaling
    (the ascent settings of the sharpness probe)."""
    model_spec, loss_fn = ctx.model_spec, ctx.loss_fn
    ok, why = _is_relu_mlp(model_spec)
    if not ok:
        return {"status": why}, None
    s: InvarianceSettings = ctx.settings["invariance"]
    sh: SharpnessSettings = ctx.settings["sharpness"]
    theta, batches, template = ctx.params[ctx.done[0].seed], ctx.train_b, ctx.template
    first = "layers.0.linear"
    second = "layers.1.linear" if (model_depth(model_spec) or 0) >= 2 else "head"
    after = rescale_layers(theta, first, second, s.alpha)

    def hessian(p: Mapping[str, Tensor]) -> HessianOperator:
        return HessianOperator(_model_at(template, p), loss_fn, batches, bn_mode="eval")

    ascent: dict[str, Any] = {"steps": sh.steps, "restarts": sh.restarts, "seed": sh.seed, "loss_fn": loss_fn, "bn_mode": "eval"}
    measures = {
        "lambda_max": lambda p: float(top_eigenpairs(hessian(p), k=1, which="LA", tol=s.eig_tol, seed=0).values[0]),
        "trace": lambda p: estimate_trace(hessian(p), num_matvecs=s.trace_matvecs, method="hutch++", seed=0).value,
        "logdet_curvature": lambda p: _logdet_curvature(hessian(p), s),
        "eps_sharpness_l2": lambda p: worst_case_sharpness(template, p, batches, eps=sh.eps_l2, norm="l2", **ascent).value,
        "adaptive_sharpness_l2": lambda p: adaptive_sharpness(template, p, batches, eps=sh.adaptive_eps, norm="l2", xi=0.0, **ascent).value,
    }
    report = invariance_audit(measures, theta, after, rtol=s.rtol, model=template, inputs=[b[0] for b in batches])
    entry = {
        "status": "done",
        "seed": ctx.done[0].seed,
        "audit": report.to_dict(),
        "rescaled": {"first": first, "second": second, "alpha": s.alpha},
        "bn_mode": "eval",
        "adaptive_xi": 0.0,
        "note": "adaptive sharpness with xi = 0 is the scale-invariant measure",
    }
    return entry, {e.name: e.verdict for e in report.entries}


def _logdet_curvature(op: HessianOperator, s: InvarianceSettings) -> float:
    """``sum_i ln(1 + max(lambda_i, 0) / eps)`` with ``eps = logdet_eps_relative * lambda_max`` at this point
    (the measure stage's rule; NaN when ``lambda_max <= 0``)."""
    lam = float(top_eigenpairs(op, k=1, which="LA", tol=s.eig_tol, seed=0).values[0])
    if not lam > 0:
        return math.nan
    return logdet(op, eps=s.logdet_eps_relative * lam, seed=0, num_probes=s.slq_probes, num_steps=s.slq_steps).curvature_part


def _assemble_invariance(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:  # noqa: ARG001
    return outputs[("invariance",)][0]


# ---------------------------------------------------------------------- trajectory


def _plan_trajectory(ctx: ProbeContext) -> list[tuple]:
    return [("trajectory", r.seed) for r in ctx.done[: ctx.settings["trajectory"].num_seeds]]


def _stored_path(ctx: ProbeContext, run: TrainedRun) -> tuple[list[dict[str, Tensor]], list[str]]:
    """The snapshots the run kept (parameters only), and its final weights if the last one is not them."""
    final = ctx.params[run.seed]
    states: list[dict[str, Tensor]] = []
    labels: list[str] = []
    for path in run.snapshots:
        saved = torch.load(path, map_location=ctx.device, weights_only=False)
        states.append({n: saved["state_dict"][n] for n in final})
        labels.append(f"epoch {saved['epoch']}")
    if not states or any(not torch.equal(states[-1][n], final[n]) for n in final):
        states.append(final)
        labels.append("final")
    return states, labels


def _retrained_path(ctx: ProbeContext, run: TrainedRun) -> tuple[list[dict[str, Tensor]], list[str], dict[str, Any]]:
    """Train ``run`` again from its initial weights with its recipe, seed and data, keeping the
    weights at initialisation and after every epoch; the final ones are checked against the run's."""
    stored = run.source
    if stored is None:
        raise ValueError(f"seed {run.seed}: no stored run to retrain from (TrainedRun.source is None)")
    cfg = parse_config(TrainConfig, stored.train, f"seed{run.seed} model.pt:train")
    x, y = ctx.train_data
    if cfg.random_labels:
        y = randomize_labels(y, int(stored.model_kwargs["num_classes"]), run.seed)
    model = initial_model(stored, ctx.device)
    states = [parameter_dict(model)]

    def keep(history: list[dict[str, float]]) -> None:  # after every epoch; weights only, the run is untouched
        del history
        states.append(parameter_dict(model))

    test = (torch.cat([b[0] for b in ctx.test_b]), torch.cat([b[1] for b in ctx.test_b]))  # logged per epoch, not used
    t0 = time.perf_counter()
    result = train_model(model, (x, y), test, cfg, seed=run.seed, on_epoch=keep)
    final = ctx.params[run.seed]
    same = result.state_hash == run.state_hash
    info = {"status": result.status, "epochs": result.epochs_completed, "steps": result.steps, "wall_s": time.perf_counter() - t0,
            "state_hash": result.state_hash, "reproduces_run": same,
            "distance_to_run": float(torch.cat([(states[-1][n] - final[n]).reshape(-1) for n in final]).norm())}
    return states, ["init"] + [f"epoch {e + 1}" for e in range(len(states) - 1)], info


def _trajectory_seed(ctx: ProbeContext, task: tuple) -> dict[str, Any]:
    """The path of one run ``("trajectory", seed)`` on its principal plane, with the loss underneath."""
    s: TrajectorySettings = ctx.settings["trajectory"]
    seed = task[1]
    run = next(r for r in ctx.done if r.seed == seed)
    stored_count = len(run.snapshots) + 1  # the final weights close the path
    use_stored = s.source == "stored" or (s.source == "auto" and stored_count >= s.min_stored)
    entry: dict[str, Any] = {"source": "stored" if use_stored else "retrained", "stored_snapshots": len(run.snapshots)}
    if use_stored:
        states, labels = _stored_path(ctx, run)
    else:
        states, labels, entry["retrain"] = _retrained_path(ctx, run)
        if entry["retrain"]["status"] != "completed":
            return {**entry, "status": f"skipped: the retraining {entry['retrain']['status']}"}
    if len(states) < 3:
        return {**entry, "status": f"skipped: {len(states)} snapshots (a plane needs 3); set source: retrain or train.snapshot_every"}
    res = trajectory_scan(ctx.template, states, ctx.train_b, num=s.plane_points, margin=s.margin, normalization=s.normalization,
                          bias_policy=s.bias_policy, labels=labels, **ctx.common)
    key, name = f"trajectory.seed{seed}", f"trajectory_seed{seed}"
    _plane_arrays(ctx.arrays, key, res.plane)
    ctx.arrays[f"{key}.coords"] = res.coords
    ctx.arrays[f"{key}.residuals"] = res.residuals
    ctx.arrays[f"{key}.path_losses"] = res.path_losses
    ctx.arrays[f"{key}.projected_losses"] = res.projected_losses
    ctx.trajectories[name] = res
    pca = res.pca.to_dict()
    entry.update({
        "status": "done", "figure": name, "num_snapshots": len(states), "labels": list(res.labels),
        "explained_variance_ratio": pca["explained_variance_ratio"], "pca_plane_fraction": pca["plane_fraction"],
        "plane_fraction": res.plane_fraction, "normalization": res.normalization, "singular_values": pca["singular_values"],
        "coords": res.coords.tolist(), "residuals": res.residuals.tolist(), "distances": pca["distances"],
        "path_losses": res.path_losses.tolist(), "projected_losses": res.projected_losses.tolist(), "plane": _plane_summary(res.plane),
    })
    return entry


def _assemble_trajectory(ctx: ProbeContext, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    per_seed = {f"seed{t[1]}": out[0] for t, out in outputs.items() if t[0] == "trajectory"}
    head = {k: {"pc1": v["explained_variance_ratio"][0], "pc2": v["explained_variance_ratio"][1], "plane_fraction": v["plane_fraction"],
                "num_snapshots": v["num_snapshots"], "source": v["source"]}
            for k, v in per_seed.items() if v.get("status") == "done"}
    entry = {"status": "done", "seeds": per_seed, "settings": dataclasses.asdict(ctx.settings["trajectory"]), "bn_mode": ctx.bn_mode,
             "data": "probe subset of the training split"}
    return entry, head or None


# ------------------------------------------------------------------------ registry


class ProbeKind(NamedTuple):
    """One probe of the ``probe`` stage.

    Attributes:
        settings: Its settings dataclass (the field of the same name of ``ProbeConfig``).
        plan: ``plan(ctx)`` -> its independent tasks, tuples ``(name, ...)``.
        run: ``run(ctx, task)`` -> the task's value (picklable; arrays and plot data go
            into ``ctx``'s collectors).
        assemble: ``assemble(ctx, outputs)`` -> ``(results entry, headline or None)`` from
            ``outputs[task] = (value, context, wall s, CPU s)`` of every task.
    """

    settings: type
    plan: Callable[[ProbeContext], list[tuple]]
    run: Callable[[ProbeContext, tuple], Any]
    assemble: Callable[[ProbeContext, Mapping[tuple, tuple]], tuple[dict[str, Any], dict[str, Any] | None]]


#: The probes by name, in the order their results are reported.
PROBE_KINDS: dict[str, ProbeKind] = {
    "barriers": ProbeKind(BarrierSettings, _plan_barriers, _barrier_pair, _assemble_barriers),
    "bezier": ProbeKind(BezierSettings, _plan_bezier, _bezier_pair, _assemble_bezier),
    "scans": ProbeKind(ScanSettings, _plan_scans, _scan, _assemble_scans),
    "sharpness": ProbeKind(SharpnessSettings, _plan_sharpness, _sharpness_seed, _assemble_sharpness),
    "invariance": ProbeKind(InvarianceSettings, _plan_invariance, _invariance, _assemble_invariance),
    "trajectory": ProbeKind(TrajectorySettings, _plan_trajectory, _trajectory_seed, _assemble_trajectory),
}

#: The order tasks are planned in: costliest kinds first, for a balanced worker load.
PLAN_ORDER: tuple[str, ...] = ("bezier", "trajectory", "invariance", "barriers", "sharpness", "scans")


def plan_tasks(ctx: ProbeContext, probes: Sequence[str]) -> list[tuple]:
    """The independent tasks of the selected ``probes``, in :data:`PLAN_ORDER`."""
    return [task for name in PLAN_ORDER if name in probes for task in PROBE_KINDS[name].plan(ctx)]


def run_task(ctx: ProbeContext, task: tuple) -> tuple[Any, ProbeContext, float, float]:
    """One task on a fresh copy of ``ctx``: ``(value, that copy with its arrays, wall s, CPU s)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    local = ctx.fresh()
    value = PROBE_KINDS[task[0]].run(local, task)
    return value, local, time.perf_counter() - t0, time.process_time() - c0
