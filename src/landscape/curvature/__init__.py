"""Curvature of neural-network losses: Hessian/GGN operators and estimators on them.

Operators (:class:`HessianOperator`, :class:`GGNOperator`, their distributed versions and
:class:`GradientCovariance`) multiply blocks of vectors; estimators are free functions of
any symmetric operator or dense symmetric tensor. An operator is the curvature of the
loss over the whole data set, mean or sum as ``loss_fn`` reduces a batch (a callable
without a ``reduction`` attribute or keyword states it: ``reduction="mean"``)::

    op = HessianOperator(model, loss_fn, data, bn_mode="eval")
    res = top_eigenpairs(op, k=5, which="LA", tol=1e-4, seed=0)
    est = trace(op, num_matvecs=90, method="hutch++", seed=0)
    dens = spectral_density(op, num_probes=8, num_steps=100, seed=0)
    ld = logdet(op, eps=1e-3, seed=0)
"""

from landscape.curvature.covariance import (
    CovarianceEigenpairs,
    GradientCovariance,
    PerSampleGradients,
    dense_covariance_bytes,
    gradient_covariance,
    per_sample_gradients,
    streamed_covariance_bytes,
)
from landscape.curvature.distributed import (
    DistributedGGNOperator,
    DistributedHessianOperator,
)
from landscape.curvature.lanczos import (
    Eigenpairs,
    LanczosTridiagonal,
    lanczos_tridiagonal,
    top_eigenpairs,
)
from landscape.curvature.linop import DenseOperator, ObservedOperator, SymmetricOperator, as_operator
from landscape.curvature.losses import REDUCTIONS, resolve_reduction
from landscape.curvature.noise import (
    DifficultyIndex,
    GradientRank,
    NoiseAlignment,
    SubspaceAlignment,
    difficulty_index,
    gradient_rank,
    noise_alignment,
    noise_curvature_correlation,
    operator_diagonal,
    subspace_alignment,
)
from landscape.curvature.operators import (
    HVP_MODES,
    GGNOperator,
    HessianOperator,
    OperatorReport,
)
from landscape.curvature.per_layer import (
    LayerCurvature,
    PerLayerCurvature,
    per_layer_curvature,
)
from landscape.curvature.rmt import (
    MarchenkoPasturFit,
    SemicircleFit,
    fit_marchenko_pastur,
    fit_semicircle,
    spiked_outliers,
)
from landscape.curvature.slq import (
    GaussQuadrature,
    LogDetEstimate,
    SpectralDensity,
    SpectralMass,
    density_from_tridiagonals,
    logdet,
    logdet_from_tridiagonals,
    mass_below,
    quadrature_from_tridiagonals,
    slq_tridiagonals,
    spectral_density,
)
from landscape.curvature.trace import (
    TRACE_METHODS,
    TraceEstimate,
    exact_trace,
    hutchinson,
    hutchpp,
    trace,  # the function; import submodule names with `from ...trace import`
    xtrace,
)
from landscape.functional import (
    POINT_BN_MODES,
    parameter_vector,
    trainable_parameter_names,
)

__all__ = [
    "SymmetricOperator", "DenseOperator", "ObservedOperator", "as_operator",
    "HessianOperator", "GGNOperator", "OperatorReport", "POINT_BN_MODES", "HVP_MODES",
    "REDUCTIONS", "resolve_reduction",
    "parameter_vector", "trainable_parameter_names",
    "DistributedHessianOperator", "DistributedGGNOperator",
    "top_eigenpairs", "lanczos_tridiagonal", "Eigenpairs", "LanczosTridiagonal",
    "trace", "hutchinson", "hutchpp", "xtrace", "exact_trace", "TraceEstimate", "TRACE_METHODS",
    "spectral_density", "logdet", "slq_tridiagonals", "quadrature_from_tridiagonals",
    "density_from_tridiagonals", "logdet_from_tridiagonals", "SpectralDensity", "LogDetEstimate", "GaussQuadrature",
    "mass_below", "SpectralMass",
    "fit_semicircle", "fit_marchenko_pastur", "spiked_outliers", "SemicircleFit", "MarchenkoPasturFit",
    "per_layer_curvature", "PerLayerCurvature", "LayerCurvature",
    "per_sample_gradients", "PerSampleGradients", "GradientCovariance", "CovarianceEigenpairs", "gradient_covariance",
    "dense_covariance_bytes", "streamed_covariance_bytes", "gradient_rank", "GradientRank",
    "subspace_alignment", "SubspaceAlignment", "noise_alignment", "NoiseAlignment",
    "difficulty_index", "DifficultyIndex", "operator_diagonal", "noise_curvature_correlation",
]
