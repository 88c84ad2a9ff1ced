"""The second plan's architecture-compatibility metric Phi(n, L, D) of a network.

Definition (the plan's eq. in section 3, with every term fixed)::

    Phi(n, L, D) = (tr(H) / d) / ||H||_2 * grad_rank / D

* ``H``: Hessian of the mean cross-entropy over a fixed probe subset (BatchNorm-free MLPs
  here; :class:`~landscape.curvature.HessianOperator`), ``d`` its parameter count.
  ``tr(H)`` by Hutch++ (Meyer et al. 2021); ``||H||_2`` the largest eigenvalue magnitude
  by Lanczos (``which="LM"``), so the first factor is the stable rank of H per parameter,
  ``tr(H) / (d ||H||_2)`` (at most 1 when H is PSD; negative when the trace is).
* ``grad_rank``: a rank of the per-example gradient covariance Sigma
  (:func:`~landscape.curvature.gradient_rank`). Default ``"stable"``:
  ``tr(Sigma) / lambda_max(Sigma)``, the stable rank of the centred gradient matrix. It is
  continuous, scale-free and needs no energy threshold, and it makes Phi the product of two
  stable ranks, ``srank(H)/d * srank(Sigma)/D``. ``"energy90"`` (the number of
  eigendirections carrying 90 % of tr(Sigma), as measure records) is the alternative; it
  is an integer capped at N - 1 for N examples, so it saturates with few examples.
* ``D``: input dimensionality of the data (features after flattening).

:func:`measure_phi` measures it on any classifier; :func:`phi` is the formula, used also
for the pipeline's trained runs from measure's outputs at their final weights
(:func:`landscape.pipeline.phi_search.phi_of_runs`). The Phi-guided architecture search (grid,
candidates trained with one budget, search vs random) is an experiment of the pipeline:
:mod:`landscape.pipeline.phi_search`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature.covariance import gradient_covariance
from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.noise import GradientRank, gradient_rank
from landscape.curvature.operators import HessianOperator
from landscape.curvature.trace import trace as estimate_trace

__all__ = [
    "RANK_KINDS",
    "PHI_AT",
    "phi",
    "rank_value",
    "PhiMeasurement",
    "measure_phi",
]

RANK_KINDS: tuple[str, ...] = ("stable", "energy90")
PHI_AT: tuple[str, ...] = ("init", "trained")


def phi(trace: float, num_params: int, spectral_norm: float, grad_rank: float, data_dim: int) -> float:
    """``Phi = (trace / num_params) / spectral_norm * grad_rank / data_dim``.

    Args:
        trace: tr(H).
        num_params: d >= 1.
        spectral_norm: ||H||_2 > 0 (finite).
        grad_rank: rank of the gradient covariance, >= 0.
        data_dim: D >= 1.

    Raises:
        ValueError: an argument outside its range (the message names it and its value).
    """
    if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1:
        raise ValueError(f"num_params must be an int >= 1, got {num_params!r}")
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
        raise ValueError(f"data_dim must be an int >= 1, got {data_dim!r}")
    if not (isinstance(spectral_norm, (int, float)) and math.isfinite(spectral_norm) and spectral_norm > 0):
        raise ValueError(f"spectral_norm must be a finite number > 0, got {spectral_norm!r}")
    if not (isinstance(grad_rank, (int, float)) and math.isfinite(grad_rank) and grad_rank >= 0):
        raise ValueError(f"grad_rank must be a finite number >= 0, got {grad_rank!r}")
    if not (isinstance(trace, (int, float)) and math.isfinite(trace)):
        raise ValueError(f"trace must be a finite number, got {trace!r}")
    return float(trace) / num_params / float(spectral_norm) * float(grad_rank) / data_dim


def rank_value(rank: GradientRank | Mapping[str, Any], kind: str) -> float:
    """The ``kind`` rank (``"stable"`` or ``"energy90"``) of a :class:`GradientRank` or of
    measure's ``noise`` record (keys ``stable_rank_gradients``, ``energy_rank_90``); NaN if absent."""
    if kind not in RANK_KINDS:
        raise ValueError(f"rank kind must be one of {list(RANK_KINDS)}, got {kind!r}")
    if isinstance(rank, GradientRank):
        if kind == "energy90" and rank.energy != 0.9:
            raise ValueError(f"energy90 needs a GradientRank with energy 0.9, got {rank.energy}")
        return float(rank.stable_rank_gradients if kind == "stable" else rank.energy_rank)
    value = rank.get("stable_rank_gradients" if kind == "stable" else "energy_rank_90")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class PhiMeasurement:
    """Phi of one network and the quantities it is made of.

    Attributes:
        phi: Phi with the ``rank_kind`` rank (NaN when ||H||_2 is 0).
        phi_energy90, phi_stable: Phi with each rank (sensitivity to the choice).
        trace, trace_stderr: tr(H) by Hutch++ and its standard error.
        spectral_norm: ||H||_2 = |lambda| of the largest-magnitude eigenvalue.
        top_eigenvalue: that eigenvalue with its sign.
        num_params: d.
        data_dim: D.
        rank_kind: the rank Phi uses.
        stable_rank, energy_rank_90: ranks of the gradient covariance.
        noise_examples: N of the gradient covariance.
        num_matvecs: Hessian-vector products spent.
    """

    phi: float
    phi_stable: float
    phi_energy90: float
    trace: float
    trace_stderr: float
    spectral_norm: float
    top_eigenvalue: float
    num_params: int
    data_dim: int
    rank_kind: str
    stable_rank: float
    energy_rank_90: int
    noise_examples: int
    num_matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_phi(trace: float, d: int, norm: float, rank: float, D: int) -> float:
    return phi(trace, d, norm, rank, D) if norm > 0 and math.isfinite(rank) else math.nan


def measure_phi(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    noise_batch: tuple[Tensor, Tensor],
    data_dim: int,
    *,
    rank_kind: str = "stable",
    trace_matvecs: int = 30,
    eig_tol: float = 1e-2,
    seed: int = 0,
) -> PhiMeasurement:
    """Measure Phi of ``model`` (cross-entropy loss) at its current weights.

    Args:
        model: classifier without BatchNorm (left unchanged).
        batches: ``(x, y)`` batches of the probe subset the Hessian is taken over.
        noise_batch: ``(x, y)`` examples for the per-example gradient covariance (N >= 2).
        data_dim: D, the input dimensionality.
        rank_kind: ``"stable"`` or ``"energy90"`` (module docstring).
        trace_matvecs: Hutch++ budget.
        eig_tol: relative Ritz residual tolerance of the top-magnitude eigenvalue.
        seed: seed of the Lanczos start and the trace probes.
    """
    if rank_kind not in RANK_KINDS:
        raise ValueError(f"rank_kind must be one of {list(RANK_KINDS)}, got {rank_kind!r}")
    op = HessianOperator(model, F.cross_entropy, batches, bn_mode="eval")
    d = int(op.shape[0])
    eig = top_eigenpairs(op, k=1, which="LM", tol=eig_tol, seed=seed)
    tr = estimate_trace(op, num_matvecs=trace_matvecs, method="hutch++", seed=seed)
    rank = gradient_rank(gradient_covariance(model, F.cross_entropy, [noise_batch]))
    top = float(eig.values[0])
    norm = abs(top)
    stable, energy = rank_value(rank, "stable"), rank_value(rank, "energy90")
    values = {"stable": _safe_phi(tr.value, d, norm, stable, data_dim), "energy90": _safe_phi(tr.value, d, norm, energy, data_dim)}
    return PhiMeasurement(
        phi=values[rank_kind], phi_stable=values["stable"], phi_energy90=values["energy90"],
        trace=float(tr.value), trace_stderr=float(tr.stderr), spectral_norm=norm, top_eigenvalue=top,
        num_params=d, data_dim=int(data_dim), rank_kind=rank_kind, stable_rank=stable,
        energy_rank_90=int(rank.energy_rank), noise_examples=int(rank.num_samples),
        num_matvecs=int(eig.num_matvecs + tr.num_matvecs),
    )
