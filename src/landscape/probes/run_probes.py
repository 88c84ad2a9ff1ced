"""Entry functions of the three probe stages and their validated, frozen settings.

One function per stage, each called by a thin script in ``stages/`` with a config built by
:func:`landscape.schema.parse_config` from ``params.yaml`` (section ``probes``):

* :func:`run_landscape_probes` (stage ``probe``, one call per experiment config, all
  seeds): straight-line barriers between every pair of seeds on train and test data,
  before and after weight-matching alignment (Frankle, Dziugaite, Roy & Carbin 2020,
  *Linear mode connectivity and the lottery ticket hypothesis*; Ainsworth, Hayase &
  Srinivasa 2023, *Git Re-Basin*); trained quadratic Bezier curves with the expected-loss
  and minimax objectives (Garipov, Izmailov, Podoprikhin, Vetrov & Wilson 2018, *Loss
  surfaces, mode connectivity, and fast ensembling of DNNs*); the 1D interpolation scan
  ``alpha in [-0.5, 1.5]`` (Goodfellow, Vinyals & Saxe 2015); 2D scans on a
  filter-normalised random plane (Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the
  loss landscape of neural nets*) and on the plane of the top-2 Hessian eigenvectors
  cached by the ``measure`` stage; worst-case (L2, L-inf; Keskar et al. 2017),
  average-case and adaptive (Kwon, Kim, Park & Choi 2021, *ASAM*) sharpness; and, for
  ReLU MLPs without normalisation, the audit of flatness measures under a
  function-preserving layer rescaling (Dinh, Pascanu, Bengio & Bengio 2017, *Sharp minima
  can generalize for deep nets*).
* :func:`run_intrinsic_dim` (stage ``intrinsic_dim``): ``d_int90`` by random-subspace
  training with dense and sparse projections and a bootstrap interval across seeds (Li,
  Farkhoor, Liu & Yosinski 2018, *Measuring the intrinsic dimension of objective
  landscapes*), on their toy problem of known intrinsic dimension (``D`` parameters in
  ``m`` chunks, chunk ``k`` must sum to ``k``: ``d_int = m`` exactly) and on a model/data
  pair of the pipeline.
* :func:`run_sde_study` (stage ``sde``): basin occupancy of SGD and of its SDE on synthetic
  2D surfaces across ``(eta, B)``, against eq. (7) of the first research plan and the
  exact Gibbs masses, with Wilson intervals (Li, Tai & E 2017; Jastrzebski et al. 2017).

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

import copy
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.schema import ConfigError
from landscape.curvature import HessianOperator, logdet, top_eigenpairs
from landscape.curvature import trace as estimate_trace

from .connectivity import OBJECTIVES, SURROGATES, PathEvaluation, fit_bezier, linear_path
from .functional import BIAS_POLICIES, Batch, Evaluation, LossFn, Objective, has_batchnorm, parameter_dict
from .intrinsic_dim import PROJECTIONS, IntrinsicDimCI, IntrinsicDimResult, bootstrap_ci, search_intrinsic_dim, train_subspace
from .invariance import invariance_audit, rescale_layers
from landscape.pipeline.parallel import map_forked
from .permutation import align
from .scans import LineScan, PlaneScan, hessian_plane_scan, line_scan, plot_contour, plot_line, plot_surface, random_plane_scan
from .sde import GaussianWells, OccupancyStudy, Surface2D, TiltedDoubleWell, occupancy_study
from .sharpness import adaptive_sharpness, average_sharpness, worst_case_sharpness

__all__ = [
    "PROBES",
    "SURFACES",
    "BarrierSettings",
    "BezierSettings",
    "ScanSettings",
    "SharpnessSettings",
    "InvarianceSettings",
    "ProbeConfig",
    "TrainedRun",
    "ProbeReport",
    "run_landscape_probes",
    "ToyTaskSettings",
    "ModelTaskSettings",
    "IntrinsicDimConfig",
    "IntrinsicDimReport",
    "ChunkSumToy",
    "run_intrinsic_dim",
    "SdeConfig",
    "SdeReport",
    "build_surface",
    "run_sde_study",
    "validate_probe_params",
]

#: Probes of :func:`run_landscape_probes`, in the order they run.
PROBES: tuple[str, ...] = ("barriers", "bezier", "scans", "sharpness", "invariance")


# ============================================================== settings validation


def _rule(allowed: str, check: Callable[[Any], bool]) -> dict[str, Any]:
    return {"allowed": allowed, "check": check}


def _selection_ok(x: Any) -> bool:
    return x == "all" or (isinstance(x, (list, tuple)) and all(isinstance(c, str) for c in x))


def _int_at_least(k: int) -> dict[str, Any]:
    return _rule(f"an int >= {k}", lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= k)


def _is_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


def _positive() -> dict[str, Any]:
    return _rule("a number > 0", _is_positive)


def _optional_positive() -> dict[str, Any]:
    return _rule("null or a number > 0", lambda x: x is None or _is_positive(x))


def _subset_of(options: Sequence[str]) -> dict[str, Any]:
    """A non-empty list drawn from ``options``."""
    return _rule(f"a non-empty list of {list(options)}", lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(v in options for v in x))


def _optional_subset_of(options: Sequence[str]) -> dict[str, Any]:
    rule = _subset_of(options)
    return _rule(f"null or {rule['allowed']}", lambda x: x is None or rule["check"](x))


_SELECTION = _rule("'all' or a list of config names", _selection_ok)


class _Checked:
    """Re-runs the field rules of a settings dataclass on construction (lists become tuples),
    so objects built in code are validated like those built by ``parse_config``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, f.name, value)
            check = f.metadata.get("check")
            if check is None:
                continue
            try:
                ok = bool(check(value))
            except TypeError:
                ok = False
            if not ok:
                raise ConfigError(f"{type(self).__name__}.{f.name}={value!r} is not allowed; allowed: {f.metadata['allowed']}")
        self._extra_checks()

    def _extra_checks(self) -> None:
        return None

    def selects(self, config_name: str) -> bool:
        configs = getattr(self, "configs")
        return configs == "all" or config_name in configs


# ============================================================ landscape probe settings


@dataclass(frozen=True)
class BarrierSettings(_Checked):
    """Straight-line barriers between every pair of seeds.

    Attributes:
        configs: Configs that get the probe (``"all"`` or a list of names).
        num_points: Points of the ``t`` grid on [0, 1] (end points included).
        max_pairs: Cap on the number of seed pairs (``null``: all pairs).
        align: Also measure after weight-matching alignment of the second run to the first.
        align_restarts: Restarts of the weight matching.
        align_max_sweeps: Sweep limit per restart.
        seed: Seed of the weight matching's random restarts and sweep orders.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=_SELECTION)
    num_points: int = field(default=11, metadata=_int_at_least(3))
    max_pairs: int | None = field(
        default=None, metadata=_rule("null or an int >= 1", lambda x: x is None or (isinstance(x, int) and not isinstance(x, bool) and x >= 1))
    )
    align: bool = True
    align_restarts: int = field(default=3, metadata=_int_at_least(1))
    align_max_sweeps: int = field(default=100, metadata=_int_at_least(1))
    seed: int = 0


@dataclass(frozen=True)
class BezierSettings(_Checked):
    """Bezier curves trained between the first ``num_pairs`` seed pairs (Garipov et al. 2018).

    Attributes:
        configs: Configs that get the probe (default: none; the costliest probe).
        num_pairs: Seed pairs, in the order ``(s0, s1), (s0, s2), ...``.
        num_bends: Interior control points (1: quadratic curve).
        objectives: Subset of ``["expected", "minimax"]``.
        steps: Adam steps.
        lr: Adam learning rate (parameter units).
        batch_size: Training batch size of the curve.
        train_examples: First examples of the training split used to train (and
            evaluate) the curve.
        ts_per_step: ``t`` draws per step of the expected-loss objective.
        minimax_points: Interior grid ``linspace(0.1, 0.9, minimax_points)`` of the minimax
            objective (each step costs one forward/backward per point).
        surrogate: Minimax surrogate, ``"logsumexp"`` or ``"topk"``.
        temperature: Log-sum-exp temperature (loss units).
        top_k: ``k`` of the top-k surrogate.
        num_points: Points of the evaluation grid on [0, 1].
        seed: Seed of the ``t`` draws.
    """

    configs: str | tuple[str, ...] = field(default=(), metadata=_SELECTION)
    num_pairs: int = field(default=1, metadata=_int_at_least(1))
    num_bends: int = field(default=1, metadata=_int_at_least(1))
    objectives: tuple[str, ...] = field(default=("expected", "minimax"), metadata=_subset_of(OBJECTIVES))
    steps: int = field(default=200, metadata=_int_at_least(1))
    lr: float = field(default=0.01, metadata=_positive())
    batch_size: int = field(default=128, metadata=_int_at_least(1))
    train_examples: int = field(default=1024, metadata=_int_at_least(1))
    ts_per_step: int = field(default=1, metadata=_int_at_least(1))
    minimax_points: int = field(default=9, metadata=_int_at_least(1))
    surrogate: str = field(default="logsumexp", metadata=_rule(f"one of {list(SURROGATES)}", lambda x: x in SURROGATES))
    temperature: float = field(default=0.05, metadata=_positive())
    top_k: int = field(default=1, metadata=_int_at_least(1))
    num_points: int = field(default=21, metadata=_int_at_least(3))
    seed: int = 0

    def _extra_checks(self) -> None:
        if self.surrogate == "topk" and self.top_k > self.minimax_points:
            raise ConfigError(f"BezierSettings.top_k={self.top_k} must be <= minimax_points={self.minimax_points}")


@dataclass(frozen=True)
class ScanSettings(_Checked):
    """1D interpolation scan between the first two seeds and 2D plane scans around the first.

    Attributes:
        configs: Configs that get the probe.
        line_points: Points of the line scan (``alpha = 0`` and ``1`` are added if the
            even grid misses them).
        line_min, line_max: Range of ``alpha`` (``(1 - alpha) theta_0 + alpha theta_1``).
        plane_points: Grid points per axis of each plane (odd: the solution is the centre).
        plane_span: Random-plane coordinates in ``[-span, span]`` (filter-normalised units).
        bias_policy: ``"zero"``, ``"keep"`` or ``"normalize"`` for 1-D parameters.
        direction_seed: Seed of the random directions.
        hessian_plane: Also scan the plane of the top-2 Hessian eigenvectors (needs the
            ``measure`` stage's ``krylov.pt`` with at least 2 Ritz vectors).
        hessian_span: Hessian-plane coordinates in ``[-span, span]`` (Euclidean parameter
            distance); ``null`` picks ``sqrt(2 hessian_rise / lambda_1)``, where the
            quadratic model rises by ``hessian_rise`` along the top eigenvector.
        hessian_rise: Loss rise setting the automatic span (loss units).
        hessian_bn_mode: BatchNorm policy of the Hessian-plane scan: ``"match"`` (default:
            the policy the cached Hessian was computed with, so the plane shows that
            Hessian's curvature; the stage's ``bn_mode`` if unknown) or ``"eval"``,
            ``"batch"``, ``"recalibrate"``. Measured on a BN ResNet (mnist14): at the edge
            of the automatic span along the top eigenvector of the eval-mode Hessian the
            loss rises by 2.8-4.1 nats in eval mode but by < 0.01 with recalibrated or
            batch statistics, which absorb that direction.
        surface_plots: Also draw 3D surface figures.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=_SELECTION)
    line_points: int = field(default=41, metadata=_int_at_least(3))
    line_min: float = -0.5
    line_max: float = 1.5
    plane_points: int = field(
        default=11, metadata=_rule("an odd int >= 3 (the solution is the centre point)", lambda x: isinstance(x, int) and x >= 3 and x % 2 == 1)
    )
    plane_span: float = field(default=1.0, metadata=_positive())
    bias_policy: str = field(default="zero", metadata=_rule(f"one of {list(BIAS_POLICIES)}", lambda x: x in BIAS_POLICIES))
    direction_seed: int = 0
    hessian_plane: bool = True
    hessian_span: float | None = field(default=None, metadata=_optional_positive())
    hessian_rise: float = field(default=1.0, metadata=_positive())
    hessian_bn_mode: str = field(
        default="match", metadata=_rule("one of ['match', 'eval', 'batch', 'recalibrate']", lambda x: x in ("match", "eval", "batch", "recalibrate"))
    )
    surface_plots: bool = True

    def _extra_checks(self) -> None:
        if not self.line_min < 0 < 1 < self.line_max:
            raise ConfigError(
                f"ScanSettings needs line_min < 0 and line_max > 1 (both solutions on the line), got [{self.line_min}, {self.line_max}]"
            )


@dataclass(frozen=True)
class SharpnessSettings(_Checked):
    """Sharpness of every completed run on the probe subset.

    Attributes:
        configs: Configs that get the probe.
        eps_l2: Radius of the L2 ball (parameter units).
        eps_linf: Radius of the L-inf ball (parameter units).
        steps: Projected-ascent steps per restart.
        restarts: Random restarts.
        sigma: Standard deviation of the Gaussian (average-case) perturbation.
        num_samples: Monte-Carlo draws of the average case.
        adaptive_eps: Radius of the adaptive L2 ball (relative units).
        adaptive_xi: Offset ``xi`` of the adaptive scale ``|theta| + xi``.
        seed: Seed of the restarts and draws.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=_SELECTION)
    eps_l2: float = field(default=0.05, metadata=_positive())
    eps_linf: float = field(default=1e-3, metadata=_positive())
    steps: int = field(default=10, metadata=_int_at_least(1))
    restarts: int = field(default=1, metadata=_int_at_least(1))
    sigma: float = field(default=0.01, metadata=_positive())
    num_samples: int = field(default=20, metadata=_int_at_least(2))
    adaptive_eps: float = field(default=0.05, metadata=_positive())
    adaptive_xi: float = field(default=0.0, metadata=_rule("a number >= 0", lambda x: x >= 0))
    seed: int = 0


@dataclass(frozen=True)
class InvarianceSettings(_Checked):
    """Flatness measures before/after a ReLU rescaling (first completed seed; ReLU MLPs
    without normalisation only, others are recorded as not applicable).

    Attributes:
        configs: Configs that get the probe.
        alpha: Factor of the first hidden layer (the next layer's inputs get ``1/alpha``).
        eig_tol: Lanczos tolerance of ``lambda_max``.
        trace_matvecs: Hutch++ budget of the trace.
        logdet_eps: ``eps`` of ``log det(H + eps I)``.
        slq_probes: SLQ probes of the log-det.
        slq_steps: Lanczos steps per SLQ probe.
        rtol: Relative change below which a measure is called invariant.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=_SELECTION)
    alpha: float = field(default=10.0, metadata=_positive())
    eig_tol: float = field(default=1e-3, metadata=_rule("a number in (0, 1)", lambda x: 0 < x < 1))
    trace_matvecs: int = field(default=30, metadata=_int_at_least(4))
    logdet_eps: float = field(default=1e-3, metadata=_positive())
    slq_probes: int = field(default=2, metadata=_int_at_least(1))
    slq_steps: int = field(default=30, metadata=_int_at_least(2))
    rtol: float = field(default=0.01, metadata=_positive())


@dataclass(frozen=True)
class ProbeConfig(_Checked):
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
        barriers, bezier, scans, sharpness, invariance: Per-probe settings; each has a
            ``configs`` selection.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=_SELECTION)
    num_examples: int = field(default=500, metadata=_int_at_least(2))
    test_examples: int = field(default=500, metadata=_int_at_least(2))
    batch_size: int = field(default=500, metadata=_int_at_least(1))
    bn_mode: str = field(default="recalibrate", metadata=_rule("one of ['recalibrate', 'batch']", lambda x: x in ("recalibrate", "batch")))
    recal_examples: int = field(default=500, metadata=_int_at_least(1))
    recal_batch_size: int = field(default=250, metadata=_int_at_least(1))
    barriers: BarrierSettings = field(default_factory=BarrierSettings)
    bezier: BezierSettings = field(default_factory=BezierSettings)
    scans: ScanSettings = field(default_factory=ScanSettings)
    sharpness: SharpnessSettings = field(default_factory=SharpnessSettings)
    invariance: InvarianceSettings = field(default_factory=InvarianceSettings)

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


# ===================================================================== landscape probes


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
    """

    seed: int
    status: str
    model: nn.Module | None
    test_error: float = math.nan
    state_hash: str | None = None
    ritz_values: Tensor | None = None
    ritz_vectors: Tensor | None = None
    ritz_bn_mode: str | None = None


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
    """

    results: dict[str, Any]
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]
    line_scans: dict[str, tuple[LineScan, ...]]
    plane_scans: dict[str, PlaneScan]
    paths: dict[str, tuple[tuple[str, PathEvaluation], ...]]

    def to_dict(self) -> dict[str, Any]:
        return self.results

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (Agg canvas, no pyplot state) by file stem."""
        figs: dict[str, Any] = {}
        for name, scans in self.line_scans.items():
            fig = _new_figure((9.0, 3.5))
            ax_l, ax_e = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
            for label, scan in zip(("train", "test"), scans):
                plot_line(scan, metric="loss", ax=ax_l, label=label, log=True)
                plot_line(scan, metric="error", ax=ax_e, label=label)
            ax_l.set_title(name)
            fig.tight_layout()
            figs[name] = fig
        for name, scan in self.plane_scans.items():
            figs[name] = plot_contour(scan, metric="loss", log=True)
            if self.results.get("scans", {}).get("settings", {}).get("surface_plots", False):
                figs[f"{name}_surface"] = plot_surface(scan, metric="loss", log=True)
        barriers = self.results.get("barriers", {})
        if barriers.get("status") == "done":  # every pair's straight-line profile, raw and weight-matched
            fig = _new_figure((9.0, 3.5))
            axes = (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2))
            for ax, split in zip(axes, ("train", "test")):
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
            fig = _new_figure((9.0, 3.5))
            axes = (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2))
            for label, pe in curves:
                split = label.split(":")[0]
                ax = axes[0] if split == "train" else axes[1]
                ax.plot(pe.ts, pe.losses, marker=".", label=label.split(":", 1)[1])
            for ax, split in zip(axes, ("train", "test")):
                ax.set_xlabel("t")
                ax.set_ylabel(f"{split} loss (bn={curves[0][1].bn_mode})")
                ax.legend(fontsize=7)
            axes[0].set_title(name)
            fig.tight_layout()
            figs[name] = fig
        return figs


def _new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _batches(x: Tensor, y: Tensor, n: int, batch_size: int, device: torch.device) -> list[Batch]:
    x, y = x[:n].to(device), y[:n].to(device)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else math.nan,
        "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "n": int(v.size),
    }


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
    if int(model_spec.get("depth", 2)) < 1:
        return False, "not applicable: no hidden layer"
    return True, ""


def _model_at(template: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    """A private copy of ``template`` holding ``params`` (the caller's model is untouched)."""
    model = copy.deepcopy(template)
    model.load_state_dict({k: v.detach() for k, v in params.items()}, strict=False)
    return model


@dataclass
class _Context:
    """What every probe task of one config needs (private). A task writes its arrays and
    plot data into a fresh copy's collectors, which the caller merges in task order."""

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
    ends: dict[tuple[int, str], Evaluation] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    line_scans: dict[str, tuple[LineScan, ...]] = field(default_factory=dict)
    plane_scans: dict[str, PlaneScan] = field(default_factory=dict)
    paths: dict[str, tuple[tuple[str, PathEvaluation], ...]] = field(default_factory=dict)

    def fresh(self) -> _Context:
        """A copy sharing everything but with empty collectors."""
        return dataclasses.replace(self, arrays={}, line_scans={}, plane_scans={}, paths={})

    def merge(self, other: _Context) -> None:
        self.arrays.update(other.arrays)
        self.line_scans.update(other.line_scans)
        self.plane_scans.update(other.plane_scans)
        self.paths.update(other.paths)

    def end_evals(self, a: int, b: int, split: str) -> tuple[Evaluation | None, Evaluation | None]:
        return self.ends.get((a, split)), self.ends.get((b, split))


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
    device = next(template.parameters()).device
    bn = has_batchnorm(template)
    bn_mode = config.bn_mode if bn else "eval"
    (px, py), (tx, ty), (rx, ry) = data["probe"], data["test"], data["train"]
    recal = _batches(rx, ry, config.recal_examples, config.recal_batch_size, device) if bn else None
    ctx = _Context(
        template=template,
        device=device,
        bn_mode=bn_mode,
        common={"loss_fn": loss_fn, "bn_mode": bn_mode, "recal_batches": recal},
        train_b=_batches(px, py, config.num_examples, config.batch_size, device),
        test_b=_batches(tx, ty, config.test_examples, config.batch_size, device),
        train_data=(rx, ry),
        example=px[:2].to(device),
        done=done,
        params={r.seed: parameter_dict(r.model) for r in done},
        pairs=list(itertools.combinations([r.seed for r in done], 2)),
    )
    results["bn"] = {"policy": config.bn_mode, "bn_mode": bn_mode, "has_batchnorm": bn, "recal_examples": _count(recal or [])}
    results["data"] = {"train_examples": _count(ctx.train_b), "test_examples": _count(ctx.test_b),
                       "train_source": "probe subset of the training split"}
    summary["bn_mode"] = bn_mode
    tasks = _plan_tasks(ctx, config, probes)
    if any(t[0] in ("barriers", "bezier") for t in tasks):  # every seed's end points, once
        used = {s for t in tasks if t[0] == "barriers" for s in t[1:]} | {s for t in tasks if t[0] == "bezier" for s in t[1:]}
        splits = [("test", ctx.test_b)] + ([("train", ctx.train_b)] if any(t[0] == "barriers" for t in tasks) else [])
        for seed in sorted(used):
            for split, batches in splits:
                ctx.ends[(seed, split)] = Objective(template, batches, **ctx.common).evaluate(ctx.params[seed])
    runner = functools.partial(_run_task, ctx, config, model_spec, loss_fn)
    outputs = dict(zip(tasks, map_forked(runner, tasks, workers)))
    for task in tasks:  # merge in plan order: the same arrays and figures for any worker count
        ctx.merge(outputs[task][1])
    assemblers = {
        "barriers": lambda: _assemble_barriers(ctx, config.barriers, outputs),
        "bezier": lambda: _assemble_bezier(ctx, config.bezier, outputs),
        "scans": lambda: _assemble_scans(ctx, config.scans, outputs),
        "sharpness": lambda: _assemble_sharpness(ctx, outputs),
        "invariance": lambda: outputs[("invariance",)][0],
    }
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for probe in probes:
        results[probe], head = assemblers[probe]()
        if head is not None:
            summary[probe] = head
        mine = [out for task, out in outputs.items() if task[0] == probe]
        timings[probe] = sum(out[2] for out in mine)
        cpu[probe] = sum(out[3] for out in mine)
    results["timings_s"], results["cpu_s"] = timings, cpu
    results["workers"] = min(workers, max(1, len(tasks)))
    summary["wall_time_s"], summary["cpu_time_s"] = time.perf_counter() - t_start, sum(cpu.values())
    return ProbeReport(results, summary, ctx.arrays, ctx.line_scans, ctx.plane_scans, ctx.paths)


def _count(batches: Sequence[Batch]) -> int:
    return sum(int(b[1].shape[0]) for b in batches)


def _plan_tasks(ctx: _Context, config: ProbeConfig, probes: Sequence[str]) -> list[tuple]:
    """The independent tasks of the selected probes, costliest kinds first."""
    tasks: list[tuple] = []
    if "bezier" in probes:
        tasks += [("bezier", a, b) for a, b in ctx.pairs[: config.bezier.num_pairs]]
    if "invariance" in probes:
        tasks.append(("invariance",))
    if "barriers" in probes:
        use = ctx.pairs if config.barriers.max_pairs is None else ctx.pairs[: config.barriers.max_pairs]
        tasks += [("barriers", a, b) for a, b in use]
    if "sharpness" in probes:
        tasks += [("sharpness", r.seed) for r in ctx.done]
    if "scans" in probes:
        if config.scans.hessian_plane:
            tasks.append(("scans", "hessian_plane"))
        tasks.append(("scans", "random_plane"))
        if len(ctx.done) >= 2:
            tasks.append(("scans", "line"))
    return tasks


def _run_task(ctx: _Context, config: ProbeConfig, model_spec: Mapping[str, Any], loss_fn: LossFn, task: tuple) -> tuple:
    """One task on a fresh context: ``(value, context with its arrays, wall s, CPU s)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    local = ctx.fresh()
    kind = task[0]
    if kind == "barriers":
        value = _barrier_pair(local, config.barriers, *task[1:])
    elif kind == "bezier":
        value = _bezier_pair(local, config.bezier, *task[1:])
    elif kind == "sharpness":
        value = _sharpness_seed(local, config.sharpness, task[1])
    elif kind == "scans":
        value = {"line": _line_scan, "random_plane": _random_plane, "hessian_plane": _hessian_plane}[task[1]](local, config.scans)
    elif kind == "invariance":
        value = _invariance(local, config, model_spec, loss_fn)
    else:  # pragma: no cover - _plan_tasks only emits the kinds above
        raise ValueError(f"unknown probe task {task!r}")
    return value, local, time.perf_counter() - t0, time.process_time() - c0


def _barrier_pair(ctx: _Context, s: BarrierSettings, a: int, b: int) -> tuple[dict[str, Any], str]:
    """Straight-line barriers of one pair, train and test, raw and weight-matched."""
    key = f"s{a}-s{b}"
    grid = np.linspace(0.0, 1.0, s.num_points)
    entry: dict[str, Any] = {}
    ends = {"raw": ctx.params[b]}
    align_status = "not requested"
    if s.align:
        states = {r.seed: r.model.state_dict() for r in ctx.done if r.seed in (a, b)}
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


def _assemble_barriers(ctx: _Context, s: BarrierSettings, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
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
                agg[f"{split}.{kind}"] = {m: _mean_sd([v[m] for v in vals]) for m in ("barrier", "barrier_interp", "error_barrier")}
    entry = {"status": "done", "pairs": per_pair, "summary": agg, "alignment": align_status, "bn_mode": ctx.bn_mode,
             "num_pairs": len(per_pair), "num_pairs_total": len(ctx.pairs), "ts": np.linspace(0.0, 1.0, s.num_points).tolist()}
    return entry, {k: {m: v[m]["mean"] for m in v} for k, v in agg.items()}


def _bezier_pair(ctx: _Context, s: BezierSettings, a: int, b: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bezier curves (each objective) vs the straight line, on the curve's training data and on test."""
    curve_train = _batches(*ctx.train_data, s.train_examples, s.batch_size, ctx.device)
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


def _assemble_bezier(ctx: _Context, s: BezierSettings, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if not ctx.pairs:
        return {"status": "skipped: fewer than 2 completed runs"}, None
    per_pair: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for task, out in outputs.items():
        if task[0] == "bezier":
            per_pair[f"s{task[1]}-s{task[2]}"], h = out[0]
            head.update(h)
    entry = {"status": "done", "pairs": per_pair, "bn_mode": ctx.bn_mode, "train_examples": min(s.train_examples, int(ctx.train_data[1].shape[0])),
             "train_source": "first examples of the training split"}
    return entry, head


def _line_scan(ctx: _Context, s: ScanSettings) -> dict[str, Any]:
    """Interpolation scan ``alpha in [line_min, line_max]`` between the first two runs."""
    first, second = ctx.done[0], ctx.done[1]
    alphas = np.union1d(np.linspace(s.line_min, s.line_max, s.line_points), [0.0, 1.0])  # both solutions on the grid
    scans = tuple(line_scan(ctx.template, ctx.params[first.seed], ctx.params[second.seed], bt, alphas=alphas, **ctx.common)
                  for bt in (ctx.train_b, ctx.test_b))
    for split, sc in zip(("train", "test"), scans):
        ctx.arrays[f"scans.line.{split}.alphas"] = sc.alphas
        ctx.arrays[f"scans.line.{split}.losses"] = sc.losses
        ctx.arrays[f"scans.line.{split}.errors"] = sc.errors
    ctx.line_scans[f"line_s{first.seed}-s{second.seed}"] = scans
    return {"seeds": [first.seed, second.seed], "train": scans[0].to_dict(), "test": scans[1].to_dict()}


def _random_plane(ctx: _Context, s: ScanSettings) -> dict[str, Any]:
    """Filter-normalised random plane around the first run."""
    first = ctx.done[0]
    coords = np.linspace(-s.plane_span, s.plane_span, s.plane_points)
    rp = random_plane_scan(ctx.template, ctx.params[first.seed], ctx.train_b, seed=s.direction_seed, bias_policy=s.bias_policy, xs=coords,
                           **ctx.common)
    _plane_arrays(ctx.arrays, "scans.random_plane", rp)
    ctx.plane_scans[f"plane_random_seed{first.seed}"] = rp
    return _plane_summary(rp)


def _assemble_scans(ctx: _Context, s: ScanSettings, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    entry: dict[str, Any] = {"status": "done", "settings": dataclasses.asdict(s), "bn_mode": ctx.bn_mode, "center_seed": ctx.done[0].seed}
    line = outputs.get(("scans", "line"))
    entry["line"] = line[0] if line is not None else {"status": "skipped: fewer than 2 completed runs"}
    entry["random_plane"] = outputs[("scans", "random_plane")][0]
    hp = outputs.get(("scans", "hessian_plane"))
    entry["hessian_plane"] = hp[0] if hp is not None else {"status": "not requested"}
    return entry, None


def _hessian_plane(ctx: _Context, s: ScanSettings) -> dict[str, Any]:
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


def _sharpness_seed(ctx: _Context, s: SharpnessSettings, seed: int) -> dict[str, Any]:
    """Worst-case (L2, L-inf), average-case and adaptive sharpness of one run."""
    run = next(r for r in ctx.done if r.seed == seed)
    th = ctx.params[seed]
    asc = {"steps": s.steps, "restarts": s.restarts, "seed": s.seed}
    l2 = worst_case_sharpness(ctx.template, th, ctx.train_b, eps=s.eps_l2, norm="l2", **asc, **ctx.common)
    linf = worst_case_sharpness(ctx.template, th, ctx.train_b, eps=s.eps_linf, norm="linf", **asc, **ctx.common)
    avg = average_sharpness(ctx.template, th, ctx.train_b, sigma=s.sigma, num_samples=s.num_samples, seed=s.seed, **ctx.common)
    ada = adaptive_sharpness(ctx.template, th, ctx.train_b, eps=s.adaptive_eps, norm="l2", xi=s.adaptive_xi, **asc, **ctx.common)
    return {"worst_l2": l2.to_dict(), "worst_linf": linf.to_dict(), "average": avg.to_dict(), "adaptive_l2": ada.to_dict(),
            "test_error": run.test_error, "param_norm": float(torch.cat([t.reshape(-1) for t in th.values()]).norm())}


def _assemble_sharpness(ctx: _Context, outputs: Mapping[tuple, tuple]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    per_seed = {f"seed{t[1]}": out[0] for t, out in outputs.items() if t[0] == "sharpness"}
    agg = {k: _mean_sd([v[k]["value"] for v in per_seed.values()]) for k in ("worst_l2", "worst_linf", "average", "adaptive_l2")}
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


def _invariance(
    ctx: _Context, config: ProbeConfig, model_spec: Mapping[str, Any], loss_fn: LossFn
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Flatness measures of the first run before and after a function-preserving rescaling."""
    ok, why = _is_relu_mlp(model_spec)
    if not ok:
        return {"status": why}, None
    s, sh = config.invariance, config.sharpness
    theta, batches, template = ctx.params[ctx.done[0].seed], ctx.train_b, ctx.template
    first = "layers.0.linear"
    second = "layers.1.linear" if int(model_spec.get("depth", 2)) >= 2 else "head"
    after = rescale_layers(theta, first, second, s.alpha)

    def hessian(p: Mapping[str, Tensor]) -> HessianOperator:
        return HessianOperator(_model_at(template, p), loss_fn, batches, bn_mode="eval")

    ascent = {"steps": sh.steps, "restarts": sh.restarts, "seed": sh.seed, "loss_fn": loss_fn, "bn_mode": "eval"}
    measures = {
        "lambda_max": lambda p: float(top_eigenpairs(hessian(p), k=1, which="LA", tol=s.eig_tol, seed=0).values[0]),
        "trace": lambda p: estimate_trace(hessian(p), num_matvecs=s.trace_matvecs, method="hutch++", seed=0).value,
        "logdet": lambda p: logdet(hessian(p), eps=s.logdet_eps, seed=0, num_probes=s.slq_probes, num_steps=s.slq_steps).value,
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


# ===================================================================== intrinsic dimension


#: Random projections of the intrinsic-dimension search (the identity is the baseline).
SUBSPACE_PROJECTIONS: tuple[str, ...] = tuple(p for p in PROJECTIONS if p != "identity")


def _seeds_ok(x: Any) -> bool:
    ints = isinstance(x, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
    return ints and len(x) >= 2 and len(set(x)) == len(x)


@dataclass(frozen=True)
class ToyTaskSettings(_Checked):
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
    num_params: int = field(default=1000, metadata=_int_at_least(2))
    num_constraints: int = field(default=10, metadata=_int_at_least(1))
    steps: int = field(default=500, metadata=_int_at_least(1))
    optimizer: str = field(default="sgd", metadata=_rule("one of ['adam', 'sgd']", lambda x: x in ("adam", "sgd")))
    lr: float = field(default=0.1, metadata=_positive())
    momentum: float = field(default=0.9, metadata=_rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    d_min: int = field(default=1, metadata=_int_at_least(1))
    d_max: int = field(default=20, metadata=_int_at_least(1))
    factor: float = field(default=2.0, metadata=_rule("a number > 1", lambda x: x > 1))
    rtol: float = field(default=0.0, metadata=_rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    projections: tuple[str, ...] | None = field(default=None, metadata=_optional_subset_of(SUBSPACE_PROJECTIONS))

    def _extra_checks(self) -> None:
        if self.num_params % self.num_constraints:
            raise ConfigError(f"ToyTaskSettings.num_params={self.num_params} must be a multiple of num_constraints={self.num_constraints}")
        if not self.d_min <= self.d_max <= self.num_params:
            raise ConfigError(f"ToyTaskSettings needs d_min <= d_max <= num_params, got {self.d_min}, {self.d_max}, {self.num_params}")


@dataclass(frozen=True)
class ModelTaskSettings(_Checked):
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
    train_examples: int = field(default=1000, metadata=_int_at_least(1))
    eval_examples: int = field(default=500, metadata=_int_at_least(1))
    batch_size: int = field(default=100, metadata=_int_at_least(1))
    epochs: int = field(default=5, metadata=_int_at_least(1))
    optimizer: str = field(default="adam", metadata=_rule("one of ['adam', 'sgd']", lambda x: x in ("adam", "sgd")))
    lr: float = field(default=0.1, metadata=_positive())
    baseline_lr: float | None = field(default=0.01, metadata=_optional_positive())
    bn_mode: str = field(default="recalibrate", metadata=_rule("one of ['recalibrate', 'batch']", lambda x: x in ("recalibrate", "batch")))
    d_min: int = field(default=16, metadata=_int_at_least(1))
    d_max: int = field(default=4096, metadata=_int_at_least(1))
    factor: float = field(default=2.0, metadata=_rule("a number > 1", lambda x: x > 1))
    rtol: float = field(default=0.05, metadata=_rule("a number in [0, 1)", lambda x: 0 <= x < 1))
    projections: tuple[str, ...] | None = field(default=None, metadata=_optional_subset_of(SUBSPACE_PROJECTIONS))

    def _extra_checks(self) -> None:
        if not isinstance(self.model.get("name"), str):
            raise ConfigError(f"ModelTaskSettings.model needs a 'name', got {dict(self.model)!r}")
        if self.d_min > self.d_max:
            raise ConfigError(f"ModelTaskSettings needs d_min <= d_max, got {self.d_min} > {self.d_max}")


@dataclass(frozen=True)
class IntrinsicDimConfig(_Checked):
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

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_rule("a list of >= 2 distinct ints", _seeds_ok))
    projections: tuple[str, ...] = field(default=("dense", "sparse"), metadata=_subset_of(SUBSPACE_PROJECTIONS))
    threshold: float = field(default=0.9, metadata=_rule("a number in (0, 1]", lambda x: 0 < x <= 1))
    confidence: float = field(default=0.95, metadata=_rule("a number in (0, 1)", lambda x: 0 < x < 1))
    num_bootstrap: int = field(default=2000, metadata=_int_at_least(100))
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
        g = torch.Generator().manual_seed(int(seed))
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
            fig = _new_figure((5.5, 3.8))
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
            ax.set_title(f"{task}: d_int{int(round(100 * self.results['threshold']))} search")
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
    boot = {"confidence": config.confidence, "num_bootstrap": config.num_bootstrap}
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
        models = {seed: model_factory(seed) for seed in seeds}
        first = models[seeds[0]]
        device = next(first.parameters()).device
        train_b = _batches(train_data[0], train_data[1], m.train_examples, m.batch_size, device)
        eval_b = _batches(eval_data[0], eval_data[1], m.eval_examples, max(m.batch_size, 500), device)
        bn_mode = m.bn_mode if has_batchnorm(first) else "eval"
        recal = train_b if bn_mode == "recalibrate" else None
        kw = {"epochs": m.epochs, "optimizer": m.optimizer, "lr": m.lr, "loss_fn": loss_fn, "bn_mode": bn_mode, "recal_batches": recal}
        num_params = sum(p.numel() for p in first.parameters() if p.requires_grad)
        base_kw = {**kw, "lr": m.lr if m.baseline_lr is None else m.baseline_lr}

        def baseline_of(seed: int) -> float:
            mod = models[seed]
            return train_subspace(mod, parameter_dict(mod), num_params, train_b, eval_b, projection="identity", seed=seed, **base_kw).performance

        baselines = dict(zip(seeds, map_forked(baseline_of, seeds, workers)))
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

    found = dict(zip(tasks, map_forked(search, tasks, workers)))
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


# ============================================================================= SDE study

#: Surface kinds of the SDE study, by the name used in ``params.yaml``.
SURFACES: dict[str, type[Surface2D]] = {"tilted_double_well": TiltedDoubleWell, "gaussian_wells": GaussianWells}


def build_surface(spec: Mapping[str, Any]) -> Surface2D:
    """A surface from ``{"kind": name, **options}`` (kinds: :data:`SURFACES`).

    Raises:
        ValueError: Unknown kind (the message lists them) or bad options.
    """
    kind = spec.get("kind")
    if kind not in SURFACES:
        raise ValueError(f"surface kind must be one of {sorted(SURFACES)}, got {kind!r}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return SURFACES[kind](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for surface kind {kind!r}: {exc}") from None


def _settings_ok(x: Any) -> bool:
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        return False
    for pair in x:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            return False
        eta, b = pair
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            return False
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            return False
    return True


@dataclass(frozen=True)
class SdeConfig(_Checked):
    """Settings of the ``sde`` stage (``probes.sde``).

    Attributes:
        surfaces: ``{name: {"kind": ..., **options}}`` (see :func:`build_surface`).
        settings: ``[eta, batch_size]`` pairs.
        methods: Subset of ``["sde", "sgd"]`` (Euler-Maruyama of eq. (6); plain SGD on a
            data set with exactly isotropic gradient noise).
        noise_scale: ``s`` of ``Sigma = s^2 I`` (``T_eff = eta s^2 / (2 B)``).
        dt: Euler-Maruyama step.
        horizon: Simulated time per run.
        num_runs: Independent runs per setting.
        dataset_size: Size of the synthetic data set of ``"sgd"``.
        init: ``"minima"`` (runs split over the minima; mixing is checked) or ``"uniform"``.
        confidence: Level of the Wilson intervals.
        quadrature_grid: Grid of the exact Gibbs masses.
        seed: Base seed.
    """

    surfaces: Mapping[str, Any] = field(
        default_factory=lambda: {
            "double_well": {"kind": "tilted_double_well", "height": 1.0, "tilt": 0.25, "kappa_left": 1.0, "kappa_right": 4.0}
        },
        metadata=_rule(
            "a non-empty mapping name -> {kind, options}",
            lambda x: isinstance(x, Mapping) and len(x) > 0 and all(isinstance(v, Mapping) for v in x.values()),
        ),
    )
    settings: tuple[tuple[float, int], ...] = field(
        default=((0.05, 1), (0.05, 2), (0.05, 4)), metadata=_rule("a non-empty list of [eta > 0, batch_size >= 1] pairs", _settings_ok)
    )
    methods: tuple[str, ...] = field(default=("sde", "sgd"), metadata=_subset_of(("sde", "sgd")))
    noise_scale: float = field(default=4.0, metadata=_positive())
    dt: float = field(default=0.01, metadata=_positive())
    horizon: float = field(default=50.0, metadata=_positive())
    num_runs: int = field(default=1000, metadata=_int_at_least(10))
    dataset_size: int = field(default=1000, metadata=_int_at_least(3))
    init: str = field(default="minima", metadata=_rule("one of ['minima', 'uniform']", lambda x: x in ("minima", "uniform")))
    confidence: float = field(default=0.95, metadata=_rule("a number in (0, 1)", lambda x: 0 < x < 1))
    quadrature_grid: int = field(default=201, metadata=_int_at_least(10))
    seed: int = 0

    def _extra_checks(self) -> None:
        for name, spec in self.surfaces.items():
            try:
                build_surface(spec)
            except ValueError as exc:
                raise ConfigError(f"SdeConfig.surfaces.{name}: {exc}") from None


@dataclass(frozen=True)
class SdeReport:
    """Results of :func:`run_sde_study`.

    Attributes:
        studies: ``{(surface name, method): OccupancyStudy}``.
        table: One flat row per (surface, method, eta, B) with predicted, Gibbs and
            simulated occupancy of each basin, Wilson bounds, ``barrier / T`` and the verdict.
        summary: Counts of verdicts and the regime where eq. (7) breaks, per surface and method.
        settings: The resolved settings.
    """

    studies: dict[tuple[str, str], OccupancyStudy]
    table: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "studies": {f"{s}.{m}": st.to_dict() for (s, m), st in self.studies.items()},
            "table": list(self.table),
            "summary": self.summary,
            "settings": self.settings,
        }

    def markdown(self) -> str:
        """The table as Markdown (probabilities of each basin as ``pred / gibbs / sim [lo, hi]``)."""
        lines = ["| surface | method | eta | B | T | barrier/T | basin | eq.(7) | Gibbs | simulated [95% Wilson] | verdict |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.table:
            for k in range(len(r["predicted"])):
                head = f"| {r['surface']} | {r['method']} | {r['eta']:g} | {r['batch_size']} | {r['temperature']:.4g} | {r['barrier_over_t']:.3g}"
                sim = f"{r['simulated'][k]:.3f} [{r['ci_low'][k]:.3f}, {r['ci_high'][k]:.3f}]"
                lines.append(f"{head} | {k} | {r['predicted'][k]:.3f} | {r['gibbs'][k]:.3f} | {sim} | {r['verdict']} |")
        return "\n".join(lines) + "\n"

    def figures(self) -> dict[str, Any]:
        """Per surface: the surface with its minima, and predicted vs simulated occupancy of
        basin 0 against ``barrier / T`` (Wilson bars)."""
        from matplotlib.ticker import NullFormatter

        figs = {}
        for name in sorted({s for s, _ in self.studies}):
            surface = build_surface(self.settings["surfaces"][name])
            fig = _new_figure((10.0, 4.0))
            ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
            x0, x1, y0, y1 = surface.box
            xs, ys = np.linspace(x0, x1, 161), np.linspace(y0, y1, 161)
            X, Y = np.meshgrid(xs, ys)
            pts = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], axis=1))
            Z = surface.loss(pts).numpy().reshape(X.shape)
            cs = ax0.contourf(X, Y, Z, levels=30, cmap="viridis")
            fig.colorbar(cs, ax=ax0, label="L")
            for k, b in enumerate(surface.minima()):
                ax0.plot(*b.center, "rx")
                ax0.annotate(f"basin {k}", b.center, color="red", xytext=(4, 4), textcoords="offset points")
            ax0.set_title(name)
            for j, method in enumerate(sorted({m for s, m in self.studies if s == name})):
                rows = [r for r in self.table if r["surface"] == name and r["method"] == method]
                bt = np.array([r["barrier_over_t"] for r in rows])
                sim = np.array([r["simulated"][0] for r in rows])
                err = np.array([[r["simulated"][0] - r["ci_low"][0], r["ci_high"][0] - r["simulated"][0]] for r in rows]).T
                ax1.errorbar(bt * (1 + 0.02 * j), sim, yerr=err, fmt="o", capsize=3, label=f"simulated ({method})")
                if j == 0:
                    order = np.argsort(bt)
                    ax1.plot(bt[order], np.array([r["predicted"][0] for r in rows])[order], "k--", label="eq. (7)")
                    ax1.plot(bt[order], np.array([r["gibbs"][0] for r in rows])[order], "k:", label="Gibbs (exact)")
            ax1.set_xscale("log")
            ax1.xaxis.set_minor_formatter(NullFormatter())
            ax1.set_xlabel("barrier / T")
            ax1.set_ylabel("P(basin 0)")
            ax1.legend(fontsize=7)
            fig.tight_layout()
            figs[f"sde_{name}"] = fig
        return figs


def run_sde_study(config: SdeConfig, *, device: torch.device | str = "cpu", workers: int = 1) -> SdeReport:
    """Basin occupancy across ``(eta, B)`` for every surface and method of ``config``.

    Each row's verdict (from ``occupancy_study``) is ``"agrees"`` (eq. (7) inside every
    Wilson interval), ``"disagrees"``, or ``"not mixed"`` (runs started in different
    minima still differ: no stationary prediction can be judged). The summary names where
    eq. (7) breaks: the rows that disagree while the exact Gibbs masses agree (Laplace
    error, high ``T``), those where neither agrees (discretisation or non-stationarity),
    and the unmixed rows (low ``T``, horizon below the Kramers time).

    Every (surface, method, setting) is simulated as its own task with seed
    ``config.seed + j`` for setting ``j`` (as ``occupancy_study`` seeds a whole sweep), spread
    over ``workers`` forked processes: the same rows for any count.

    Args:
        config: Stage settings.
        device: Simulation device.
        workers: Forked CPU worker processes (1 on an accelerator).
    """
    pairs = [(float(e), int(b)) for e, b in config.settings]
    surfaces = {name: build_surface(spec) for name, spec in config.surfaces.items()}
    common = {"noise_scale": config.noise_scale, "dt": config.dt, "horizon": config.horizon, "num_runs": config.num_runs,
              "dataset_size": config.dataset_size, "init": config.init, "confidence": config.confidence,
              "quadrature_grid": config.quadrature_grid, "device": device}
    tasks = [(name, method, j) for name in surfaces for method in config.methods for j in range(len(pairs))]

    def simulate(task: tuple[str, str, int]) -> tuple[OccupancyStudy, float]:
        name, method, j = task
        t0 = time.perf_counter()
        study = occupancy_study(surfaces[name], [pairs[j]], method=method, seed=config.seed + j, **common)
        return study, time.perf_counter() - t0

    done = dict(zip(tasks, map_forked(simulate, tasks, workers)))
    studies: dict[tuple[str, str], OccupancyStudy] = {}
    table: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name in surfaces:
        for method in config.methods:
            parts = [done[(name, method, j)] for j in range(len(pairs))]
            first = parts[0][0]
            study = OccupancyStudy(first.basins, tuple(p[0].rows[0] for p in parts), {**first.settings, "seed": config.seed})
            studies[(name, method)] = study
            rows = [{"surface": name, **r.to_dict()} for r in study.rows]
            table.extend(rows)
            laplace = [r for r in rows if r["verdict"] == "disagrees" and r["gibbs_agrees"]]
            neither = [r for r in rows if r["verdict"] == "disagrees" and not r["gibbs_agrees"]]
            frozen = [r for r in rows if r["verdict"] == "not mixed"]
            summary[f"{name}.{method}"] = {
                "agrees": sum(r["verdict"] == "agrees" for r in rows),
                "disagrees": sum(r["verdict"] == "disagrees" for r in rows),
                "not_mixed": len(frozen),
                "breaks_laplace": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in laplace],
                "breaks_other": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in neither],
                "breaks_not_mixed": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in frozen],
                "task_time_s": sum(p[1] for p in parts),
            }
    return SdeReport(studies, tuple(table), summary, dataclasses.asdict(config))


# ========================================================================= validation


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
    from landscape.schema import parse_config

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
