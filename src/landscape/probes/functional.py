"""Functional evaluation of parameter vectors: the shared core of every landscape probe.

A probe visits many points ``theta`` of parameter space (lines, planes, curves, balls,
subspaces). Here each point is a flat vector or a ``{name: tensor}`` dict that is run
through :func:`torch.func.functional_call`, so the caller's model is never edited (no
``.data`` writes, no hand-written "curve layers"); any ``nn.Module`` works.

BatchNorm policy (``bn_mode``), one for all probes and recorded in every result:

* ``"eval"``: running statistics held by the model's buffers (or the ``buffers`` given).
* ``"batch"``: each evaluation batch is normalised with its own statistics; the running
  statistics are left untouched (the forward runs on throw-away copies of the buffers).
* ``"recalibrate"``: at each visited point, fresh running statistics (mean 0, var 1,
  counter 0) are recomputed by forwarding the fixed list ``recal_batches`` with BatchNorm
  in training mode and ``momentum=None`` (PyTorch's cumulative moving average: the
  equal-weight mean over batches of each batch's mean and unbiased variance); the point is
  then evaluated with those statistics as in ``"eval"``. This is the usual treatment of
  interpolated or perturbed weights (Garipov et al. 2018, *Loss surfaces, mode
  connectivity, and fast ensembling of DNNs*; Frankle et al. 2020; Jordan et al. 2023,
  *REPAIR*).

Every other module (dropout, ...) is in eval mode during a probe; the train/eval flags
and the BatchNorm ``momentum`` attributes of the caller's model are restored on exit.

Filter normalisation of random directions follows Li, Xu, Taylor, Studer & Goldstein
2018, *Visualizing the loss landscape of neural nets*, section 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape.functional import (
    BN_MODES,
    Batch,
    BNMode,
    LossFn,
    Params,
    as_flat,
    buffers_for,
    check_batches,
    check_bn_mode,
    flatten_params,
    has_running_stats,
    model_buffers,
    parameter_dict,
    probe_modes,
    recalibrated_buffers,
    unflatten_params,
)

__all__ = [
    "BN_MODES",
    "BIAS_POLICIES",
    "BNMode",
    "Batch",
    "LossFn",
    "Params",
    "Evaluation",
    "Objective",
    "check_bn_mode",
    "parameter_dict",
    "flatten_params",
    "unflatten_params",
    "as_flat",
    "recalibrated_buffers",
    "evaluate",
    "mean_loss",
    "filter_normalize",
    "random_direction",
]

BIAS_POLICIES: tuple[str, ...] = ("zero", "keep", "normalize")


# ----------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and error of one parameter point on a set of batches.

    Attributes:
        loss: Example-weighted mean of ``loss_fn`` over all batches.
        error: Fraction of misclassified examples (argmax of (N, C) outputs against
            integer targets); NaN when the outputs/targets are not of that form.
        num_examples: Examples evaluated.
        bn_mode: BatchNorm policy used.
    """

    loss: float
    error: float
    num_examples: int
    bn_mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "error": self.error, "num_examples": self.num_examples, "bn_mode": self.bn_mode}


def _num_wrong(out: Tensor, y: Tensor) -> Tensor | None:
    if out.ndim == 2 and y.ndim == 1 and not y.is_floating_point() and not y.is_complex() and out.shape[0] == y.shape[0]:
        return (out.argmax(dim=1) != y).sum()
    return None


def _forward_sums(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    bn_train: bool,
    batches: Sequence[Batch],
    loss_fn: LossFn,
) -> tuple[Tensor, Tensor | None, int]:
    loss_sum: Tensor | None = None
    wrong: Tensor | None = None
    classify = True
    n_total = 0
    with probe_modes(model, bn_train=bn_train):
        for x, y in batches:
            out = functional_call(model, {**params, **buffers}, (x,))
            n = int(y.shape[0]) if y.ndim > 0 else 1
            term = loss_fn(out, y) * n
            loss_sum = term if loss_sum is None else loss_sum + term
            w = _num_wrong(out, y) if classify else None
            if w is None:
                classify = False
                wrong = None
            else:
                wrong = w if wrong is None else wrong + w
            n_total += n
    if loss_sum is None:
        raise ValueError("no batches to evaluate")
    return loss_sum, wrong, n_total


def evaluate(
    model: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> Evaluation:
    """Mean loss and error of the point ``params`` (no gradient).

    Args:
        model: Any module; used through ``functional_call`` only.
        params: Flat vector (P,) in :func:`parameter_dict` layout, or a dict of tensors.
        batches: Evaluation batches ``(x, y)``; ``loss_fn`` must return the batch mean.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar.
        bn_mode: ``"eval"``, ``"batch"`` or ``"recalibrate"`` (module docstring).
        recal_batches: Batches for ``"recalibrate"``.
        buffers: Buffers to use instead of the model's (``"eval"``; base for the others).
    """
    return Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers).evaluate(params)


def mean_loss(
    model: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn = F.cross_entropy,
    bn_mode: BNMode,
    recal_batches: Sequence[Batch] | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Differentiable mean loss at ``params`` (a scalar tensor with autograd graph).

    Recalibrated statistics (``"recalibrate"``) are computed without gradient and treated
    as constants. Arguments as :func:`evaluate`.
    """
    return Objective(model, batches, loss_fn=loss_fn, bn_mode=bn_mode, recal_batches=recal_batches, buffers=buffers).loss(params)


class Objective:
    """Model, data, loss and BN policy bundled to evaluate many points of one landscape.

    The probes build one of these from their keyword arguments; it is also public so that
    user code can evaluate points with the same conventions.

    Args:
        model: Any module (never modified).
        batches: Non-empty sequence of ``(x, y)`` batches.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar batch mean.
        bn_mode: ``"eval"``, ``"batch"`` or ``"recalibrate"``.
        recal_batches: Needed for ``"recalibrate"``.
        buffers: Buffers used instead of the model's.

    Raises:
        ValueError: Unknown ``bn_mode``, missing ``recal_batches``, empty ``batches``, or a
            model without trainable parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        *,
        loss_fn: LossFn = F.cross_entropy,
        bn_mode: BNMode,
        recal_batches: Sequence[Batch] | None = None,
        buffers: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.bn_mode = check_bn_mode(bn_mode, recal_batches)
        check_batches(batches)
        if recal_batches is not None and len(recal_batches) > 0:
            check_batches(recal_batches, "recal_batches")
        self.model = model
        self.batches = batches
        self.loss_fn = loss_fn
        self.recal_batches = recal_batches
        self.buffers = None if buffers is None else dict(buffers)
        self.template = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if not self.template:
            raise ValueError("model has no trainable parameters")
        first = next(iter(self.template.values()))
        self.dtype = first.dtype
        self.device = first.device
        self.num_params = sum(t.numel() for t in self.template.values())

    def flat(self, params: Params) -> Tensor:
        """The point as a flat vector (P,) in the model's dtype and device."""
        return as_flat(params, self.template)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Flat vector (P,) -> parameter dict (views, differentiable)."""
        return unflatten_params(vector, self.template)

    def _as_dict(self, params: Params) -> dict[str, Tensor]:
        if isinstance(params, Tensor):
            return self.unflatten(params.to(device=self.device, dtype=self.dtype))
        self.flat(params)  # validates names and shapes
        return {n: params[n].to(device=self.device, dtype=self.dtype) for n in self.template}

    def evaluate(self, params: Params, batches: Sequence[Batch] | None = None) -> Evaluation:
        """Mean loss and error at ``params`` (no gradient), on ``batches`` or the default."""
        data = self.batches if batches is None else batches
        with torch.no_grad():
            p = {n: t.detach() for n, t in self._as_dict(params).items()}
            bufs, bn_train = buffers_for(self.model, p, self.bn_mode, self.recal_batches, self.buffers)
            loss_sum, wrong, n = _forward_sums(self.model, p, bufs, bn_train, data, self.loss_fn)
            w = wrong.to(torch.float64) if wrong is not None else torch.full((), math.nan, dtype=torch.float64)
            vals = torch.stack([(loss_sum.detach() / n).to(torch.float64).cpu(), w.cpu()])
            loss, wrong_count = vals.tolist()
            err = wrong_count / n
        return Evaluation(loss=float(loss), error=float(err), num_examples=n, bn_mode=self.bn_mode)

    def loss(self, params: Params, batches: Sequence[Batch] | None = None) -> Tensor:
        """Differentiable mean loss at ``params`` (a flat vector or dict with autograd)."""
        data = self.batches if batches is None else batches
        p = self._as_dict(params)
        bufs, bn_train = buffers_for(self.model, p, self.bn_mode, self.recal_batches, self.buffers)
        loss_sum, _, n = _forward_sums(self.model, p, bufs, bn_train, data, self.loss_fn)
        return loss_sum / n

    def training_loss(self, params: Params, batch: Batch) -> Tensor:
        """Differentiable loss on one batch for optimisation (Bezier curves, subspaces).

        BatchNorm uses batch statistics unless ``bn_mode == "eval"`` (then the running
        statistics): recalibrating at every optimisation step would be wasteful, and the
        final evaluation recalibrates anyway.
        """
        p = self._as_dict(params)
        base = model_buffers(self.model) if self.buffers is None else self.buffers
        bn_train = self.bn_mode != "eval" and has_running_stats(self.model)
        bufs = {n: b.clone() for n, b in base.items()} if bn_train else base
        loss_sum, _, n = _forward_sums(self.model, p, bufs, bn_train, [batch], self.loss_fn)
        return loss_sum / n


# ------------------------------------------------------------ filter normalisation


def filter_normalize(
    direction: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    *,
    bias_policy: str = "zero",
) -> dict[str, Tensor]:
    """Filter-normalise a direction (Li et al. 2018, eq. (1) and section 4).

    For every parameter with ``ndim >= 2`` (Linear rows, conv filters, embedding rows) each
    filter ``d_i`` (slice along dim 0) is rescaled to the norm of the matching filter of
    ``params``: ``d_i <- d_i / ||d_i|| * ||theta_i||``. A zero direction filter stays zero.

    Parameters with ``ndim <= 1`` (biases and the weights/biases of BatchNorm, LayerNorm,
    GroupNorm) follow ``bias_policy``:

    * ``"zero"`` (Li et al.'s choice, default): direction set to zero, so these are not moved;
    * ``"keep"``: left as drawn, unnormalised;
    * ``"normalize"``: the whole vector is treated as one filter (scaled to ``||theta_p||``).

    Returns:
        A new dict with the keys of ``direction``.

    Raises:
        ValueError: Unknown ``bias_policy`` or mismatched names/shapes.
    """
    if bias_policy not in BIAS_POLICIES:
        raise ValueError(f"bias_policy must be one of {list(BIAS_POLICIES)}, got {bias_policy!r}")
    out: dict[str, Tensor] = {}
    for name, d in direction.items():
        if name not in params or tuple(params[name].shape) != tuple(d.shape):
            raise ValueError(f"direction entry {name!r} has no parameter of shape {tuple(d.shape)}")
        w = params[name].to(dtype=d.dtype, device=d.device)
        if d.ndim >= 2:
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            wn = w.reshape(w.shape[0], -1).norm(dim=1)
            scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, torch.ones_like(dn)), torch.zeros_like(dn))
            out[name] = d * scale.view(-1, *([1] * (d.ndim - 1)))
        elif bias_policy == "zero":
            out[name] = torch.zeros_like(d)
        elif bias_policy == "keep":
            out[name] = d.clone()
        else:
            dn = d.norm()
            out[name] = d * (w.norm() / dn) if dn > 0 else torch.zeros_like(d)
    return out


def random_direction(
    params: Mapping[str, Tensor],
    *,
    generator: torch.Generator,
    bias_policy: str = "zero",
) -> dict[str, Tensor]:
    """A zero-mean Gaussian direction, filter-normalised to ``params`` (Li et al. 2018).

    Entries are drawn i.i.d. N(0, 1) on the CPU with ``generator`` (so a seed gives the same
    direction on any device), then moved to the parameters' device and dtype and passed
    through :func:`filter_normalize` with ``bias_policy``.
    """
    raw = {
        n: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(device=t.device, dtype=t.dtype)
        for n, t in params.items()
    }
    return filter_normalize(raw, params, bias_policy=bias_policy)
