"""measure stage: curvature of every trained run of one (experiment, config), all seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

from landscape.schema import nonneg, positive, rule

__all__ = ["CurvatureConfig"]


@dataclass(frozen=True)
class CurvatureConfig:
    """Settings of the ``measure`` stage (keyword arguments of ``measure_curvature``).

    Attributes:
        num_examples: examples of the fixed probe subset the Hessian is taken over.
        batch_size: examples per forward pass when forming products.
        at_init: also measure the network at its initialisation (rebuilt from the seed).
        bn_mode: BatchNorm policy, ``eval`` or ``batch``.
        top_k: top eigenpairs by Lanczos (their Ritz vectors are cached).
        eig_tol: relative Ritz residual tolerance.
        trace_matvecs: Hessian-vector products of the trace estimate.
        trace_method: ``hutch++``, ``hutchinson`` or ``xtrace``.
        slq_probes, slq_steps: stochastic Lanczos quadrature budget (density and log-det).
        logdet_eps: eps of ``log det(H + eps I)``.
        per_layer: per-module top eigenvalue and trace.
        per_layer_matvecs: trace budget per module.
        per_layer_tol: relative Ritz residual tolerance of each module's top eigenvalue
            (looser than ``eig_tol``: one Lanczos run per module, each product a full one).
        noise_examples: examples for per-sample gradients and the noise covariance, at the final
            weights and at every training snapshot (0 skips).
        diag_probes: Hutchinson probes for diag(H) (the ``C ~ diag(H)`` check; 0 skips).
        along_training_matvecs: trace budget at each training snapshot (lambda_max and
            trace along training, when the run kept snapshots).
    """

    num_examples: int = field(default=1000, metadata=rule("an int >= 2", lambda x: x >= 2))
    batch_size: int = field(default=500, metadata=rule("an int >= 1", lambda x: x >= 1))
    at_init: bool = False
    bn_mode: str = field(default="eval", metadata=rule("one of ['eval', 'batch']", lambda x: x in ("eval", "batch")))
    top_k: int = field(default=10, metadata=rule("an int >= 1", lambda x: x >= 1))
    eig_tol: float = field(default=1e-3, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    trace_matvecs: int = field(default=60, metadata=rule("an int >= 4", lambda x: x >= 4))
    trace_method: str = field(
        default="hutch++", metadata=rule("one of ['hutch++', 'hutchinson', 'xtrace']", lambda x: x in ("hutch++", "hutchinson", "xtrace"))
    )
    slq_probes: int = field(default=4, metadata=rule("an int >= 1", lambda x: x >= 1))
    slq_steps: int = field(default=40, metadata=rule("an int >= 2", lambda x: x >= 2))
    logdet_eps: float = field(default=1e-3, metadata=rule("a float > 0", positive))
    per_layer: bool = True
    per_layer_matvecs: int = field(default=20, metadata=rule("an int >= 4", lambda x: x >= 4))
    per_layer_tol: float = field(default=1e-2, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    noise_examples: int = field(default=256, metadata=rule("an int >= 0", nonneg))
    diag_probes: int = field(default=20, metadata=rule("an int >= 0", nonneg))
    along_training_matvecs: int = field(default=20, metadata=rule("an int >= 4", lambda x: x >= 4))
