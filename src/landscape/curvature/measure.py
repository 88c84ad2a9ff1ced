"""One call that measures every curvature summary of a trained network on fixed data.

Used by the ``measure`` stage; a user can call it on their own model. One Lanczos pass
gives the top eigenpairs (and their Ritz vectors, cached for the PAC-Bayes posterior and
the Hessian-direction scans); one SLQ pass gives the spectral density, its moments and
the log-determinant (the tridiagonals are returned so they can be cached and reused).

Error bars: an eigenvalue's is its Ritz residual bound ``|lambda - theta| <= ||H v - theta v||``
(for a unit Ritz vector); the trace's and log-det's are standard errors across probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature.covariance import DEFAULT_COVARIANCE_MEMORY_BYTES, gradient_covariance
from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.losses import Reduction
from landscape.curvature.noise import (
    difficulty_index,
    gradient_rank,
    noise_alignment,
    noise_curvature_correlation,
    operator_diagonal,
)
from landscape.curvature.operators import HessianOperator, _CurvatureOperator
from landscape.curvature.per_layer import per_layer_curvature
from landscape.curvature.rmt import fit_spiked_bulk
from landscape.curvature.slq import logdet_from_tridiagonals, spectral_density
from landscape.curvature.trace import trace as estimate_trace

__all__ = ["CurvatureMeasurement", "measure_curvature", "sharpness_summary"]

LossFn = Callable[[Tensor, Tensor], Tensor]
OperatorClass = Callable[..., _CurvatureOperator]
"""``HessianOperator`` or a factory with its signature ``(model, loss_fn, data, bn_mode=..., params=...)``."""


@dataclass(frozen=True)
class CurvatureMeasurement:
    """Every curvature summary of one network, plus the Krylov data worth caching.

    Attributes:
        summary: JSON-ready scalars and small lists (eigenvalues with residual bounds,
            trace, log-det, density moments, RMT fit, per-layer figures, gradient noise).
        krylov: tensors to cache: ``ritz_values`` (k,), ``ritz_vectors`` (P, k),
            ``slq_alphas`` (probes, steps), ``slq_betas`` (probes, steps - 1), and the
            density on its ``grid`` / ``density``.
    """

    summary: dict[str, Any]
    krylov: dict[str, Tensor]

    def to_dict(self) -> dict[str, Any]:
        return self.summary


def measure_curvature(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    bn_mode: str = "eval",
    top_k: int = 10,
    eig_tol: float = 1e-3,
    trace_matvecs: int = 60,
    trace_method: str = "hutch++",
    slq_probes: int = 4,
    slq_steps: int = 40,
    logdet_eps: float = 1e-3,
    per_layer: bool = True,
    per_layer_matvecs: int = 20,
    per_layer_tol: float = 1e-2,
    noise_examples: int = 256,
    diag_probes: int = 20,
    seed: int = 0,
    reduction: Reduction | None = None,
    probe_batch_size: int | None = None,
    noise_memory_bytes: int = DEFAULT_COVARIANCE_MEMORY_BYTES,
    basis_device: torch.device | str | None = None,
    hessian: OperatorClass = HessianOperator,
) -> CurvatureMeasurement:
    """Measure the Hessian of the loss over ``batches`` at the model's current weights.

    Args:
        model: the network (unchanged afterwards).
        loss_fn: a batch's loss ``loss_fn(logits, targets)``, averaged or summed over it.
        batches: fixed ``(inputs, targets)`` batches (the probe subset).
        bn_mode: BatchNorm policy, ``"eval"`` or ``"batch"``.
        top_k: number of top (largest algebraic) eigenpairs by Lanczos; the RMT spike count
            needs ``top_k >= 6`` and can find up to ``top_k - 5`` spikes (use >= 2C for C classes).
        eig_tol: relative Ritz residual tolerance.
        trace_matvecs: product budget of the trace estimate.
        trace_method: ``"hutch++"``, ``"hutchinson"`` or ``"xtrace"``.
        slq_probes: SLQ probe vectors (density and log-det).
        slq_steps: Lanczos steps per SLQ probe.
        logdet_eps: the eps of ``log det(H + eps I)``.
        per_layer: also the top eigenvalue and trace of each module's diagonal block.
        per_layer_matvecs: trace budget per layer; a layer with at most this many
            parameters is materialised and solved exactly (same number of products).
        per_layer_tol: relative Ritz residual tolerance of each layer's top eigenvalue.
        noise_examples: examples (the first ones of ``batches``) used for per-sample
            gradients and the noise covariance Sigma; 0 skips the noise figures.
        diag_probes: Hutchinson probes for diag(H) in the ``C ~ diag(H)`` check (0 skips it).
        seed: seed of every random start and probe.
        reduction: "mean" or "sum" (None: read from ``loss_fn``), as for :class:`HessianOperator`.
        probe_batch_size: SLQ and trace probes materialised at once (default: all); the
            probes and so the figures are the same, up to the last digits of sums.
        noise_memory_bytes: budget of the per-sample gradients held at once for Sigma
            (:func:`~landscape.curvature.covariance.gradient_covariance`: dense when it fits).
        basis_device: where Lanczos bases live (default: the operator's device; "cpu"
            keeps a GPU's memory free of them).
        hessian: the operator class of the whole Hessian and of the per-layer blocks (e.g.
            :func:`~landscape.curvature.distributed.sharded_hessian_operator` under
            ``torchrun``: every rank passes all ``batches``, multiplies with its shard and
            gets the same results). The noise figures use the first ``noise_examples``
            examples of ``batches`` in this process, whatever the operator.

    Precision: the Hessian follows the model's and inputs' dtype (float32 or float64, the
    caller's choice); the summary records it as ``dtype``.
    """
    started = time.perf_counter()
    op = hessian(model, loss_fn, batches, bn_mode=bn_mode, reduction=reduction)
    summary: dict[str, Any] = {"operator": op.report.to_dict(), "seed": seed, "dtype": str(op.dtype).removeprefix("torch.")}
    summary["operator"].pop("param_names", None)
    P = op.shape[0]
    timings: dict[str, float] = {}
    lap = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[name] = now - lap
        lap = now

    # The Lanczos-relation certificates are the reported residuals; skipping the explicit
    # verification product (k matvecs) and the repeated-eigenvalue pass keeps top_k = 2C
    # (the spike count's need) at about the cost that top_k = C with both had.
    eig = top_eigenpairs(op, k=min(top_k, P - 1), which="LA", tol=eig_tol, seed=seed, verify=False, check_multiplicity=False,
                         basis_device=basis_device)
    abs_bounds = eig.residuals * eig.values.abs().clamp_min(torch.finfo(eig.values.dtype).tiny)
    summary["eigenvalues"] = {
        "values": eig.values.tolist(),
        "residual_bounds": abs_bounds.tolist(),
        "relative_residuals": eig.residuals.tolist(),
        "num_matvecs": eig.num_matvecs,
        "converged": bool(eig.converged),
    }
    lambda_max = float(eig.values[0])
    summary["lambda_max"] = lambda_max
    summary["lambda_max_err"] = float(abs_bounds[0])
    tick("eigenvalues")

    tr = estimate_trace(op, num_matvecs=trace_matvecs, method=trace_method, seed=seed,
                        probe_batch_size=probe_batch_size if trace_method != "xtrace" else None)
    summary["trace"] = tr.value
    summary["trace_stderr"] = tr.stderr
    summary["trace_method"] = trace_method
    summary["trace_num_matvecs"] = tr.num_matvecs
    tick("trace")

    dens = spectral_density(op, num_probes=slq_probes, num_steps=min(slq_steps, P), seed=seed,
                            probe_batch_size=probe_batch_size, basis_device=basis_device)
    ld = logdet_from_tridiagonals(dens.alphas, dens.betas, P, logdet_eps)
    summary["density"] = {
        "moments": dens.moments.tolist(),
        "moments_stderr": dens.moments_stderr.tolist(),
        "sigma_broadening": dens.sigma,
        "num_probes": dens.num_probes,
        "num_steps": dens.num_steps,
        "num_matvecs": dens.num_matvecs,
    }
    summary["logdet"] = ld.value
    summary["logdet_stderr"] = ld.stderr
    summary["logdet_eps"] = logdet_eps
    summary["logdet_clamped_mass"] = ld.clamped_mass

    try:  # spikes by the eigengap rule on the top-k values, bulk semicircle from the SLQ moments
        spiked = fit_spiked_bulk(eig.values, dens, dim=P)
    except ValueError as exc:  # e.g. top_k too small for the gap rule: record why, keep going
        summary["rmt"] = {"status": f"spiked bulk fit failed: {exc}", "outlier_count": float("nan")}
    else:
        summary["rmt"] = {
            "status": "ok",
            "method": "eigengap rule (Onatski 2010) on the top-k Ritz values; semicircle by the SLQ moments of the rest",
            "bulk_sigma": spiked.sigma,
            "bulk_centre": spiked.centre,
            "bulk_edge": spiked.upper_edge,
            "bulk_top": spiked.bulk_top,
            "outlier_count": spiked.num_spikes,
            "outlier_count_is_lower_bound": spiked.count.at_max,
            "gap_threshold": spiked.count.delta,
            "beyond_edge": spiked.beyond_edge,
            "ks_semicircle": spiked.ks_semicircle,
            "ks_spiked": spiked.ks_spiked,
        }

    tick("density")
    if per_layer:
        layers = per_layer_curvature(model, loss_fn, batches, bn_mode=bn_mode, num_matvecs=per_layer_matvecs, tol=per_layer_tol,
                                     exact_max_dim=per_layer_matvecs, seed=seed, reduction=reduction, hessian=hessian)
        summary["per_layer"] = [
            {"name": lc.name, "num_params": lc.num_params, "lambda_max": lc.top_eigenvalue, "trace": lc.trace,
             "trace_stderr": lc.trace_stderr}
            for lc in layers.layers
        ]

        tick("per_layer")
    if noise_examples > 0:
        noise_batch = _first_examples(batches, noise_examples)
        have = int(noise_batch[1].shape[0])
        sigma = gradient_covariance(model, loss_fn, [noise_batch], memory_bytes=noise_memory_bytes)
        rank = gradient_rank(sigma)
        align = noise_alignment(eig.vectors, sigma)
        diff = difficulty_index(lambda_max, tr.value, align.kappa)
        noise: dict[str, Any] = {
            "num_examples": have,
            "trace_sigma": rank.trace,
            "lambda_max_sigma": rank.lambda_max,
            "energy_rank_90": rank.energy_rank,
            "stable_rank_gradients": rank.stable_rank_gradients,
            "stable_rank_covariance": rank.stable_rank_covariance,
            "kappa": align.kappa,
            "kappa_max": align.kappa_max,
            "kappa_random": align.kappa_random,
            "principal_angles": align.alignment.principal_angles.tolist() if align.alignment is not None else [],
            "difficulty_index": diff.value,
            "difficulty_status": diff.status,
        }
        if diag_probes > 0:
            diag = operator_diagonal(op, method="hutchinson", num_probes=diag_probes, seed=seed)
            corr = noise_curvature_correlation(diag, sigma)
            noise["diag_correlation"] = corr.to_dict()
        summary["noise"] = noise

        tick("noise")
    summary["timings_s"] = timings
    summary["wall_time_s"] = time.perf_counter() - started
    krylov = {
        "ritz_values": eig.values.detach().cpu(),
        "ritz_vectors": eig.vectors.detach().cpu().to(torch.float32),
        "slq_alphas": dens.alphas.detach().cpu(),
        "slq_betas": dens.betas.detach().cpu(),
        "density_grid": dens.grid.detach().cpu(),
        "density": dens.density.detach().cpu(),
    }
    return CurvatureMeasurement(summary=summary, krylov=krylov)


def _first_examples(batches: Sequence[tuple[Tensor, Tensor]], n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples of ``batches`` (fewer if they hold fewer) as one batch."""
    xs, ys, have = [], [], 0
    for x, y in batches:
        take = min(n - have, x.shape[0])
        xs.append(x[:take])
        ys.append(y[:take])
        have += take
        if have >= n:
            break
    return torch.cat(xs), torch.cat(ys)


def sharpness_summary(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    bn_mode: str = "eval",
    eig_tol: float = 1e-3,
    trace_matvecs: int = 20,
    trace_method: str = "hutch++",
    noise_examples: int = 0,
    seed: int = 0,
    reduction: Reduction | None = None,
    hessian: OperatorClass = HessianOperator,
) -> dict[str, float]:
    """The cheap figures measured at every training snapshot (curvature along training).

    Top eigenvalue (with its residual bound) and trace of the Hessian; with
    ``noise_examples > 0`` also the gradient subspace at that point: the spectrum of the
    centred per-example gradient covariance Sigma of the first ``noise_examples`` examples
    (exact, by an SVD of the gradient matrix), summarised as its 90 %-energy rank, its stable
    ranks, tr(Sigma) and lambda_max(Sigma) (see :func:`gradient_rank`). ``reduction`` and
    ``hessian`` as in :func:`measure_curvature`.
    """
    op = hessian(model, loss_fn, batches, bn_mode=bn_mode, reduction=reduction)
    eig = top_eigenpairs(op, k=1, which="LA", tol=eig_tol, seed=seed)
    tr = estimate_trace(op, num_matvecs=trace_matvecs, method=trace_method, seed=seed)
    value = float(eig.values[0])
    out = {
        "lambda_max": value,
        "lambda_max_err": float(eig.residuals[0]) * abs(value),
        "trace": tr.value,
        "trace_stderr": tr.stderr,
        "num_matvecs": eig.num_matvecs + tr.num_matvecs,
    }
    if noise_examples > 0:
        rank = gradient_rank(gradient_covariance(model, loss_fn, [_first_examples(batches, noise_examples)]))
        out.update(energy_rank_90=rank.energy_rank, stable_rank_gradients=rank.stable_rank_gradients,
                   stable_rank_covariance=rank.stable_rank_covariance, trace_sigma=rank.trace,
                   lambda_max_sigma=rank.lambda_max, noise_examples=rank.num_samples)
    return out
