"""Curvature-aware optimizers (second plan): adaptive learning rate and the hybrid step.

``CurvatureAdaptiveSGD`` (``eta_t = eta_0 / (1 + gamma ||H_t||_2)``) and ``HybridAdam``
(Adam plus ``mu`` times the normalised top Hessian eigenvector), both driven by
warm-started power iterations (``landscape.optim.power``). The training registry names them
``curvature_adaptive`` and ``hybrid`` (``landscape.training.optim``).
"""

from .curvature import CurvatureAdaptiveSGD, CurvatureProbeMixin, HybridAdam
from .power import PowerEstimate, gradients_with_graph, power_iteration

__all__ = [
    "CurvatureAdaptiveSGD",
    "CurvatureProbeMixin",
    "HybridAdam",
    "PowerEstimate",
    "gradients_with_graph",
    "power_iteration",
]
