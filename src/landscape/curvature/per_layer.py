"""Per-layer curvature: top eigenvalue and trace of the Hessian's diagonal blocks.

For a parameter group g, the diagonal block ``H_gg`` is the Hessian of the loss with
respect to the group's parameters with all others fixed (``HessianOperator(params=...)``).
Layer-wise Hessian spectra in this sense follow Sankar et al., "A deeper look at the
Hessian eigenspectrum of deep neural networks and its applications to regularization"
(AAAI 2021). Blocks up to ``exact_max_dim`` parameters are materialised and solved with
``torch.linalg.eigh``; larger blocks use thick-restart Lanczos
(:func:`landscape.curvature.lanczos.top_eigenpairs`) and a stochastic trace estimator
(:func:`landscape.curvature.trace.trace`), or, if those modules cannot be imported,
shifted power iteration and Hutchinson's estimator implemented here. Each result records
which method produced it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature.linop import SymmetricOperator
from landscape.curvature.losses import Reduction
from landscape.curvature.operators import DEFAULT_GRAPH_BUDGET_BYTES, HessianOperator, _CurvatureOperator
from landscape.functional import LossFn, trainable_parameter_names
from landscape.io import to_jsonable
from landscape.seeding import seeded_generator

__all__ = ["LayerCurvature", "PerLayerCurvature", "default_parameter_groups", "per_layer_curvature", "power_top_eigenvalue"]


@dataclasses.dataclass(frozen=True)
class LayerCurvature:
    """Curvature of one parameter group's diagonal Hessian block.

    Attributes:
        name: group name (module path, or the key of the user mapping).
        param_names: parameters in the group.
        num_params: block dimension.
        top_eigenvalue: largest (algebraic) eigenvalue of the block.
        eigen_residual: relative residual ``||H v - lambda v|| / |lambda|`` (0 for "dense").
        eigen_converged: whether the eigen solver met its tolerance.
        trace: trace of the block (exact for "dense" and "exact").
        trace_stderr: standard error of ``trace`` (0 when exact).
        eigen_method: "dense", "lanczos" or "power".
        trace_method: "dense", "exact", or the stochastic estimator's name.
        num_matvecs: block-operator products spent on this group.
    """

    name: str
    param_names: tuple[str, ...]
    num_params: int
    top_eigenvalue: float
    eigen_residual: float
    eigen_converged: bool
    trace: float
    trace_stderr: float
    eigen_method: str
    trace_method: str
    num_matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class PerLayerCurvature:
    """Per-group curvature of the Hessian of the loss over the data.

    Attributes:
        layers: one :class:`LayerCurvature` per group, in group order.
        bn_mode: BatchNorm policy used.
        num_examples: examples in the data.
        batch_order_dependent: as in :class:`~landscape.curvature.operators.OperatorReport`.
        seed: seed of the Krylov/stochastic estimators.
    """

    layers: tuple[LayerCurvature, ...]
    bn_mode: str
    num_examples: int
    batch_order_dependent: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def by_name(self) -> dict[str, LayerCurvature]:
        """Groups keyed by name."""
        return {layer.name: layer for layer in self.layers}


def default_parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """One group per module that directly owns trainable parameters.

    Returns:
        ``{module path: [parameter names]}`` in module order; the root module's own
        parameters (if any) are under the key ``"(root)"``.
    """
    trainable = set(trainable_parameter_names(model))
    groups: dict[str, list[str]] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        names = []
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if full in trainable and id(p) not in seen:
                seen.add(id(p))
                names.append(full)
        if names:
            groups[mod_name or "(root)"] = names
    return groups


def _random_unit(P: int, seed: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    g = seeded_generator(seed)
    v = torch.randn(P, generator=g, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)


def _power(op: SymmetricOperator, v: Tensor, shift: float, tol: float, max_iter: int) -> tuple[float, Tensor, bool, int]:
    """Power iteration on ``op - shift I``; returns (Rayleigh quotient of op, vector, converged, matvecs)."""
    lam_prev = math.inf
    lam_shifted = 0.0
    converged = False
    used = 0
    for _ in range(max_iter):
        w = op @ v - shift * v
        used += 1
        lam_shifted = float(v @ w)
        norm = w.norm()
        if norm == 0:
            converged = True
            break
        v = w / norm
        if abs(lam_shifted - lam_prev) <= tol * max(abs(lam_shifted), 1e-300):
            converged = True
            break
        lam_prev = lam_shifted
    return lam_shifted + shift, v, converged, used


def power_top_eigenvalue(
    op: SymmetricOperator, tol: float = 1e-8, max_iter: int = 1000, seed: int = 0
) -> tuple[float, float, bool, int]:
    """Largest algebraic eigenvalue by (shifted) power iteration.

    Power iteration finds the eigenvalue of largest magnitude ``mu``; if ``mu < 0`` a
    second run on ``A - mu I`` (whose spectrum is ``>= 0``) finds ``lambda_max - mu``.
    Convergence is linear in the gap ratio, so this is a fallback, not a replacement for
    Lanczos.

    Args:
        op: symmetric operator.
        tol: relative change of the Rayleigh quotient to stop at.
        max_iter: products per run.
        seed: seed of the start vector.

    Returns:
        ``(lambda_max, relative residual ||A v - lambda v|| / |lambda|, converged, matvecs)``.
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    v0 = _random_unit(op.shape[0], seed, op.dtype, op.device)
    mu, v, conv, used = _power(op, v0, 0.0, tol, max_iter)
    if mu < 0:
        lam, v, conv, used2 = _power(op, v0, mu, tol, max_iter)
        used += used2
    else:
        lam = mu
    r = op @ v - lam * v
    used += 1
    resid = float(r.norm()) / max(abs(lam), 1e-300)
    return lam, resid, conv, used


def _hutchinson(op: SymmetricOperator, num_matvecs: int, seed: int) -> tuple[float, float]:
    g = seeded_generator(seed)
    Z = (torch.randint(0, 2, (op.shape[0], num_matvecs), generator=g) * 2 - 1).to(op.dtype).to(op.device)
    samples = (Z * (op @ Z)).sum(0)
    mean = float(samples.mean())
    stderr = float(samples.std(correction=1) / math.sqrt(num_matvecs)) if num_matvecs > 1 else math.nan
    return mean, stderr


def _block_curvature(
    name: str,
    op: _CurvatureOperator,
    exact_max_dim: int,
    num_matvecs: int,
    trace_method: str,
    tol: float,
    seed: int,
) -> LayerCurvature:
    P = op.shape[0]
    if exact_max_dim >= P or P < 2:
        dense = op.to_dense()
        dense = 0.5 * (dense + dense.T)
        evals = torch.linalg.eigvalsh(dense)
        return LayerCurvature(
            name=name,
            param_names=op.param_names,
            num_params=P,
            top_eigenvalue=float(evals[-1]),
            eigen_residual=0.0,
            eigen_converged=True,
            trace=float(torch.diagonal(dense).sum()),
            trace_stderr=0.0,
            eigen_method="dense",
            trace_method="dense",
            num_matvecs=P,
        )
    used = 0
    try:
        from landscape.curvature.lanczos import top_eigenpairs
    except ImportError:
        top_eigenpairs = None  # type: ignore[assignment]  # optional-import fallback below
    if top_eigenpairs is not None:
        eig = top_eigenpairs(op, k=1, which="LA", tol=tol, seed=seed)
        lam = float(eig.values[0])
        resid = float(eig.true_residuals[0]) if not math.isnan(float(eig.true_residuals[0])) else float(eig.residuals[0])
        conv, eigen_method = bool(eig.converged), "lanczos"
        used += int(eig.num_matvecs)
    else:
        lam, resid, conv, n_power = power_top_eigenvalue(op, tol=tol, seed=seed)
        eigen_method = "power"
        used += n_power
    if num_matvecs >= P:
        # Exact trace from P unit-vector products costs no more than the estimator.
        eye = torch.eye(P, dtype=op.dtype, device=op.device)
        tr, stderr, t_method = float(torch.diagonal(op @ eye).sum()), 0.0, "exact"
        used += P
    else:
        try:
            from landscape.curvature.trace import trace as trace_estimate
        except ImportError:
            trace_estimate = None  # type: ignore[assignment]  # optional-import fallback below
        if trace_estimate is not None:
            est = trace_estimate(op, num_matvecs=num_matvecs, method=trace_method, seed=seed)
            tr, stderr, t_method = float(est.value), float(est.stderr), est.method
            used += int(est.num_matvecs)
        else:
            tr, stderr = _hutchinson(op, num_matvecs, seed)
            t_method = "hutchinson"
            used += num_matvecs
    return LayerCurvature(
        name=name,
        param_names=op.param_names,
        num_params=P,
        top_eigenvalue=lam,
        eigen_residual=resid,
        eigen_converged=conv,
        trace=tr,
        trace_stderr=stderr,
        eigen_method=eigen_method,
        trace_method=t_method,
        num_matvecs=used,
    )


def per_layer_curvature(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[tuple[Any, Any]],
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    bn_mode: str = "eval",
    hvp_mode: str = "auto",
    exact_max_dim: int = 64,
    num_matvecs: int = 60,
    trace_method: str = "hutch++",
    tol: float = 1e-4,
    seed: int = 0,
    graph_budget_bytes: int | None = DEFAULT_GRAPH_BUDGET_BYTES,
    reduction: Reduction | None = None,
    on_group: Callable[[LayerCurvature], Any] | None = None,
    hessian: Callable[..., _CurvatureOperator] = HessianOperator,
) -> PerLayerCurvature:
    """Top eigenvalue and trace of each parameter group's diagonal Hessian block.

    Args:
        model: the network (unchanged afterwards).
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's loss (mean or sum).
        data: iterable of ``(inputs, targets)`` batches; the Hessian is of the loss over
            all of them concatenated (see :class:`HessianOperator`).
        groups: ``{group name: [parameter names]}``; default
            :func:`default_parameter_groups` (one group per module owning parameters).
        bn_mode: "eval" or "batch" (see :class:`HessianOperator`).
        hvp_mode: product variant (see :class:`HessianOperator`).
        exact_max_dim: blocks with at most this many parameters are materialised and
            solved exactly with ``eigh``.
        num_matvecs: product budget of the stochastic trace estimate (larger blocks);
            a block with at most this many parameters gets the exact trace instead.
        trace_method: estimator passed to :func:`landscape.curvature.trace.trace`.
        tol: relative residual tolerance of the top eigenpair.
        seed: seed of the start vector and trace probes (the same for every group).
        graph_budget_bytes: memory budget of the kept gradient graph per group.
        reduction: "mean" or "sum", as for :class:`HessianOperator` (None: from ``loss_fn``).
        on_group: called with each group's result as soon as it is done (progress).
        hessian: the operator class (or a factory with its signature), e.g.
            :func:`~landscape.curvature.distributed.sharded_hessian_operator` under ``torchrun``.

    Returns:
        :class:`PerLayerCurvature`.
    """
    if groups is None:
        groups = default_parameter_groups(model)
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"groups must be a non-empty mapping name -> list of parameter names, got {groups!r}")
    if not isinstance(exact_max_dim, int) or exact_max_dim < 0:
        raise ValueError(f"exact_max_dim must be an int >= 0, got {exact_max_dim!r}")
    if not isinstance(num_matvecs, int) or num_matvecs < 1:
        raise ValueError(f"num_matvecs must be a positive int, got {num_matvecs!r}")
    layers = []
    num_examples, order_dependent = 0, False
    for name, names in groups.items():
        if isinstance(names, str):
            raise ValueError(f"group {name!r} must list parameter names, got the string {names!r}")
        op = hessian(
            model, loss_fn, data, bn_mode=bn_mode, params=list(names), hvp_mode=hvp_mode, graph_budget_bytes=graph_budget_bytes,
            reduction=reduction,
        )
        num_examples, order_dependent = op.num_examples, op.report.batch_order_dependent
        layers.append(_block_curvature(str(name), op, exact_max_dim, num_matvecs, trace_method, tol, seed))
        del op
        if on_group is not None:
            on_group(layers[-1])
    return PerLayerCurvature(
        layers=tuple(layers), bn_mode=bn_mode, num_examples=num_examples, batch_order_dependent=order_dependent, seed=seed
    )
