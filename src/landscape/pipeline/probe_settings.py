"""Settings blocks of the ``probe`` stage: one per probe kind (``probes.<experiment>.<kind>``).

Every block has a ``configs`` selection (``"all"`` or a list of config names) and is
validated on construction (:class:`landscape.schema.Checked`), in code as from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from landscape.probes.connectivity import OBJECTIVES, SURROGATES
from landscape.probes.functional import BIAS_POLICIES
from landscape.probes.trajectory import NORMALIZATIONS
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    nonneg,
    number_above_zero,
    one_of,
    optional_number_above_zero,
    rule,
    subset_of,
)

__all__ = [
    "SELECTION",
    "Selecting",
    "BarrierSettings",
    "BezierSettings",
    "ScanSettings",
    "SharpnessSettings",
    "InvarianceSettings",
    "TrajectorySettings",
    "TRAJECTORY_SOURCES",
]


def _selection_ok(x: Any) -> bool:
    return x == "all" or (isinstance(x, (list, tuple)) and all(isinstance(c, str) for c in x))


#: Rule of every ``configs`` selection: ``"all"`` or a list of config names.
SELECTION = rule("'all' or a list of config names", _selection_ok)


class Selecting(Checked):
    """Settings with a ``configs`` selection (validated on construction like every :class:`Checked`)."""

    if TYPE_CHECKING:  # a field of each subclass (no annotation here: not a field of this class)
        configs: str | tuple[str, ...]

    def selects(self, config_name: str) -> bool:
        """Whether ``config_name`` is in this block's ``configs`` (``"all"``: every config)."""
        configs = self.configs
        return configs == "all" or config_name in configs


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class BarrierSettings(Selecting):
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

    configs: str | tuple[str, ...] = field(default="all", metadata=SELECTION)
    num_points: int = field(default=11, metadata=int_at_least(3))
    max_pairs: int | None = field(
        default=None, metadata=rule("null or an int >= 1", lambda x: x is None or int_at_least(1)["check"](x))
    )
    align: bool = True
    align_restarts: int = field(default=3, metadata=int_at_least(1))
    align_max_sweeps: int = field(default=100, metadata=int_at_least(1))
    seed: int = 0


@dataclass(frozen=True)
class BezierSettings(Selecting):
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

    configs: str | tuple[str, ...] = field(default=(), metadata=SELECTION)
    num_pairs: int = field(default=1, metadata=int_at_least(1))
    num_bends: int = field(default=1, metadata=int_at_least(1))
    objectives: tuple[str, ...] = field(default=("expected", "minimax"), metadata=subset_of(OBJECTIVES))
    steps: int = field(default=200, metadata=int_at_least(1))
    lr: float = field(default=0.01, metadata=number_above_zero())
    batch_size: int = field(default=128, metadata=int_at_least(1))
    train_examples: int = field(default=1024, metadata=int_at_least(1))
    ts_per_step: int = field(default=1, metadata=int_at_least(1))
    minimax_points: int = field(default=9, metadata=int_at_least(1))
    surrogate: str = field(default="logsumexp", metadata=one_of(SURROGATES))
    temperature: float = field(default=0.05, metadata=number_above_zero())
    top_k: int = field(default=1, metadata=int_at_least(1))
    num_points: int = field(default=21, metadata=int_at_least(3))
    seed: int = 0

    def _extra_checks(self) -> None:
        if self.surrogate == "topk" and self.top_k > self.minimax_points:
            raise ConfigError(f"BezierSettings.top_k={self.top_k} must be <= minimax_points={self.minimax_points}")


@dataclass(frozen=True)
class ScanSettings(Selecting):
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

    configs: str | tuple[str, ...] = field(default="all", metadata=SELECTION)
    line_points: int = field(default=41, metadata=int_at_least(3))
    line_min: float = -0.5
    line_max: float = 1.5
    plane_points: int = field(
        default=11,
        metadata=rule("an odd int >= 3 (the solution is the centre point)", lambda x: isinstance(x, int) and x >= 3 and x % 2 == 1),
    )
    plane_span: float = field(default=1.0, metadata=number_above_zero())
    bias_policy: str = field(default="zero", metadata=one_of(BIAS_POLICIES))
    direction_seed: int = 0
    hessian_plane: bool = True
    hessian_span: float | None = field(default=None, metadata=optional_number_above_zero())
    hessian_rise: float = field(default=1.0, metadata=number_above_zero())
    hessian_bn_mode: str = field(
        default="match", metadata=one_of(("match", "eval", "batch", "recalibrate"))
    )
    surface_plots: bool = True

    def _extra_checks(self) -> None:
        if not self.line_min < 0 < 1 < self.line_max:
            raise ConfigError(
                f"ScanSettings needs line_min < 0 and line_max > 1 (both solutions on the line), got [{self.line_min}, {self.line_max}]"
            )


@dataclass(frozen=True)
class SharpnessSettings(Selecting):
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

    configs: str | tuple[str, ...] = field(default="all", metadata=SELECTION)
    eps_l2: float = field(default=0.05, metadata=number_above_zero())
    eps_linf: float = field(default=1e-3, metadata=number_above_zero())
    steps: int = field(default=10, metadata=int_at_least(1))
    restarts: int = field(default=1, metadata=int_at_least(1))
    sigma: float = field(default=0.01, metadata=number_above_zero())
    num_samples: int = field(default=20, metadata=int_at_least(2))
    adaptive_eps: float = field(default=0.05, metadata=number_above_zero())
    adaptive_xi: float = field(default=0.0, metadata=rule("a number >= 0", nonneg))
    seed: int = 0


@dataclass(frozen=True)
class InvarianceSettings(Selecting):
    """Flatness measures before/after a ReLU rescaling (first completed seed; ReLU MLPs
    without normalisation only, others are recorded as not applicable).

    Attributes:
        configs: Configs that get the probe.
        alpha: Factor of the first hidden layer (the next layer's inputs get ``1/alpha``).
        eig_tol: Lanczos tolerance of ``lambda_max``.
        trace_matvecs: Hutch++ budget of the trace.
        logdet_eps_relative: r in ``eps = r * lambda_max`` of the audited log-det curvature part
            ``log det(H + eps I) - P ln eps = sum_i ln(1 + max(lambda_i, 0) / eps)``.
        slq_probes: SLQ probes of the log-det.
        slq_steps: Lanczos steps per SLQ probe.
        rtol: Relative change below which a measure is called invariant.
    """

    configs: str | tuple[str, ...] = field(default="all", metadata=SELECTION)
    alpha: float = field(default=10.0, metadata=number_above_zero())
    eig_tol: float = field(default=1e-3, metadata=rule("a number in (0, 1)", lambda x: 0 < x < 1))
    trace_matvecs: int = field(default=30, metadata=int_at_least(4))
    logdet_eps_relative: float = field(default=1e-3, metadata=number_above_zero())
    slq_probes: int = field(default=2, metadata=int_at_least(1))
    slq_steps: int = field(default=30, metadata=int_at_least(2))
    rtol: float = field(default=0.01, metadata=number_above_zero())


#: Where the trajectory probe takes its snapshots from (:class:`TrajectorySettings`).
TRAJECTORY_SOURCES: tuple[str, ...] = ("auto", "stored", "retrain")


@dataclass(frozen=True)
class TrajectorySettings(Selecting):
    """The optimisation path of the first ``num_seeds`` completed runs on the top-2 principal
    plane of its weight snapshots, with the loss on that plane (Li et al. 2018, section 7).

    Attributes:
        configs: Configs that get the probe (default: none).
        num_seeds: Completed runs drawn, in seed order (one task each).
        source: Snapshots of the path: ``"stored"`` (the ones the run kept,
            ``train.snapshot_every``, plus its final weights), ``"retrain"`` (train again from
            the run's initial weights with its recipe, seed and data, keeping the weights after
            every epoch; the final weights are checked against the run's state hash), or
            ``"auto"`` (stored when the run kept at least ``min_stored``, else retrain).
        min_stored: Least number of stored snapshot files plus one (the final weights) for
            which ``"auto"`` takes the stored path.
        plane_points: Grid points per axis of the plane.
        margin: Extra fraction of the path's extent on each side of the grid.
        normalization: ``"none"`` (unit principal directions: coordinates are parameter
            distances, the path's projection is the PCA's) or ``"filter"``
            (filter-normalised to the final weights, as the random planes are).
        bias_policy: ``"zero"``, ``"keep"`` or ``"normalize"`` for 1-D parameters under
            ``"filter"``.
    """

    configs: str | tuple[str, ...] = field(default=(), metadata=SELECTION)
    num_seeds: int = field(default=1, metadata=int_at_least(1))
    source: str = field(default="auto", metadata=one_of(TRAJECTORY_SOURCES))
    min_stored: int = field(default=10, metadata=int_at_least(3))
    plane_points: int = field(default=21, metadata=int_at_least(3))
    margin: float = field(default=0.2, metadata=rule("a number >= 0", nonneg))
    normalization: str = field(default="none", metadata=one_of(NORMALIZATIONS))
    bias_policy: str = field(default="zero", metadata=one_of(BIAS_POLICIES))
