"""Landscape probes: scans, optimisation trajectories, mode connectivity, permutation
alignment, sharpness, reparametrisation audits and intrinsic dimension.

Every probe evaluates parameter points of any ``nn.Module`` through
``torch.func.functional_call`` (the caller's model is never edited) under one explicit
BatchNorm policy ``bn_mode`` in ``{"eval", "batch", "recalibrate"}`` that each result
records (see :mod:`landscape.probes.functional`). Modules, one method each:

* :mod:`~landscape.probes.functional`: parameter layouts, BN policies, evaluation, filter
  normalisation (Li et al. 2018);
* :mod:`~landscape.probes.scans`: line and plane scans, plots;
* :mod:`~landscape.probes.trajectory`: the optimisation path on the top-2 principal plane of
  its snapshots, with the loss surface of that plane (Li et al. 2018, section 7);
* :mod:`~landscape.probes.connectivity`: straight-line barriers, Bezier curves (Garipov
  et al. 2018), the minimax path objective;
* :mod:`~landscape.probes.permutation`: weight matching (Ainsworth et al. 2023);
* :mod:`~landscape.probes.sharpness`: worst-case, average-case and adaptive sharpness;
* :mod:`~landscape.probes.invariance`: ReLU rescalings (Dinh et al. 2017) and audits;
* :mod:`~landscape.probes.intrinsic_dim`: random-subspace training (Li et al. 2018);
* :mod:`~landscape.probes.phi`: the second plan's Phi(n, L, D) of a network (the Phi-guided search is
  the pipeline's ``phi_search`` stage).

The SGD-as-SDE basin study is :mod:`landscape.dynamics`; the stages that run probes on
trained runs are in :mod:`landscape.pipeline`.
"""

from .connectivity import (
    BezierCurve,
    BezierResult,
    PathEvaluation,
    barrier_heights,
    evaluate_path,
    fit_bezier,
    linear_path,
    plot_paths,
)
from .functional import (
    BN_MODES,
    Evaluation,
    Objective,
    evaluate,
    filter_normalize,
    flatten_params,
    mean_loss,
    parameter_dict,
    random_direction,
    recalibrated_buffers,
    unflatten_params,
)
from .intrinsic_dim import (
    IntrinsicDimCI,
    IntrinsicDimResult,
    SubspaceResult,
    bootstrap_ci,
    intrinsic_dim_ci,
    make_projection,
    search_intrinsic_dim,
    subspace_performance,
    train_subspace,
)
from .invariance import (
    InvarianceReport,
    MeasureChange,
    invariance_audit,
    output_change,
    rescale_layers,
)
from .permutation import (
    MatchingResult,
    PermutationSpec,
    align,
    apply_permutation,
    permutation_spec,
    random_permutation,
    weight_matching,
)
from .scans import (
    LineScan,
    PlaneScan,
    direction_scan,
    hessian_plane_scan,
    line_scan,
    plane_scan,
    plot_contour,
    plot_line,
    plot_surface,
    random_line_scan,
    random_plane_scan,
    three_point_plane,
    three_point_plane_scan,
)
from .sharpness import (
    AverageSharpnessResult,
    SharpnessResult,
    adaptive_sharpness,
    average_sharpness,
    worst_case_sharpness,
)
from .trajectory import (
    TrajectoryPCA,
    TrajectoryScan,
    plot_trajectory,
    trajectory_pca,
    trajectory_scan,
)

__all__ = [
    "BN_MODES",
    "AverageSharpnessResult",
    "BezierCurve",
    "BezierResult",
    "Evaluation",
    "IntrinsicDimCI",
    "IntrinsicDimResult",
    "InvarianceReport",
    "LineScan",
    "MatchingResult",
    "MeasureChange",
    "Objective",
    "PathEvaluation",
    "PermutationSpec",
    "PlaneScan",
    "SharpnessResult",
    "SubspaceResult",
    "TrajectoryPCA",
    "TrajectoryScan",
    "adaptive_sharpness",
    "align",
    "apply_permutation",
    "average_sharpness",
    "barrier_heights",
    "direction_scan",
    "evaluate",
    "evaluate_path",
    "filter_normalize",
    "fit_bezier",
    "flatten_params",
    "hessian_plane_scan",
    "bootstrap_ci",
    "intrinsic_dim_ci",
    "invariance_audit",
    "line_scan",
    "linear_path",
    "make_projection",
    "mean_loss",
    "output_change",
    "parameter_dict",
    "permutation_spec",
    "plane_scan",
    "plot_contour",
    "plot_line",
    "plot_paths",
    "plot_surface",
    "plot_trajectory",
    "random_direction",
    "random_permutation",
    "random_line_scan",
    "random_plane_scan",
    "recalibrated_buffers",
    "rescale_layers",
    "search_intrinsic_dim",
    "subspace_performance",
    "three_point_plane",
    "three_point_plane_scan",
    "train_subspace",
    "trajectory_pca",
    "trajectory_scan",
    "unflatten_params",
    "weight_matching",
    "worst_case_sharpness",
]
