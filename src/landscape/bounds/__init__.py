"""PAC-Bayes and classical generalization bounds (hypothesis H4 of the first plan).

Modules, one job each: :mod:`~landscape.bounds.kl` (binary kl and its inverses),
:mod:`~landscape.bounds.gaussians` (closed-form Gaussian KLs, the eq (8) posterior),
:mod:`~landscape.bounds.pacbayes` (PAC-Bayes-kl and McAllester bounds, prior grids),
:mod:`~landscape.bounds.naive` (Occam and VC parameter-count bounds),
:mod:`~landscape.bounds.mc` (Monte-Carlo posterior risk and its sample bound),
:mod:`~landscape.bounds.effective` (effective-rank / log-det / trace complexity),
:mod:`~landscape.bounds.optimize` (Dziugaite & Roy posterior optimisation).
"""

from landscape.bounds.effective import (
    ComplexitySummary,
    complexity_summary,
    effective_dimension,
    logdet_form,
    trace_form,
)
from landscape.bounds.gaussians import (
    GaussianKL,
    LowRankGaussian,
    complement_curvature,
    hessian_posterior,
    kl_diagonal,
    kl_isotropic,
    kl_lowrank,
    lowrank_log_prob,
    sample_diagonal,
    sample_lowrank,
)
from landscape.bounds.kl import binary_kl, kl_inv_lower, kl_inv_upper, kl_inv_upper_bisection
from landscape.bounds.mc import (
    GridMCBoundResult,
    MCBoundResult,
    SampleConvergenceResult,
    grid_mc_pac_bayes_bound,
    mc_pac_bayes_bound,
    monte_carlo_errors,
    sample_convergence_bound,
)
from landscape.bounds.naive import occam_bound, vc_bound
from landscape.bounds.optimize import OptimizedPosterior, optimize_diagonal_posterior
from landscape.bounds.pacbayes import (
    BoundResult,
    GridBoundResult,
    PriorVarianceGrid,
    confidence_term,
    finite_grid_cost,
    grid_pac_bayes_bound,
    mcallester_bound,
    pac_bayes_kl_bound,
)

__all__ = [
    "BoundResult",
    "ComplexitySummary",
    "GaussianKL",
    "GridBoundResult",
    "GridMCBoundResult",
    "LowRankGaussian",
    "MCBoundResult",
    "OptimizedPosterior",
    "PriorVarianceGrid",
    "SampleConvergenceResult",
    "binary_kl",
    "complement_curvature",
    "complexity_summary",
    "confidence_term",
    "effective_dimension",
    "finite_grid_cost",
    "grid_mc_pac_bayes_bound",
    "grid_pac_bayes_bound",
    "hessian_posterior",
    "kl_diagonal",
    "kl_inv_lower",
    "kl_inv_upper",
    "kl_inv_upper_bisection",
    "kl_isotropic",
    "kl_lowrank",
    "logdet_form",
    "lowrank_log_prob",
    "mc_pac_bayes_bound",
    "mcallester_bound",
    "monte_carlo_errors",
    "occam_bound",
    "optimize_diagonal_posterior",
    "pac_bayes_kl_bound",
    "sample_convergence_bound",
    "sample_diagonal",
    "sample_lowrank",
    "trace_form",
    "vc_bound",
]
