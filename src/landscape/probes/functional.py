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

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

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
    "first_batches",
    "parameter_dict",
    "flatten_params",
    "unflatten_params",
    "as_flat",
    "has_batchnorm",
    "recalibrated_buffers",
    "evaluate",
    "mean_loss",
    "filter_normalize",
    "random_direction",
]

BNMode = Literal["eval", "batch", "recalibrate"]
BN_MODES: tuple[str, ...] = ("eval", "batch", "recalibrate")
BIAS_POLICIES: tuple[str, ...] = ("zero", "keep", "normalize")

#: One batch: inputs and targets.
Batch = tuple[Tensor, Tensor]
#: ``loss_fn(outputs, targets)`` -> scalar mean loss over the batch.
LossFn = Callable[[Tensor, Tensor], Tensor]
#: A point of parameter space: a flat vector (P,) or a ``{name: tensor}`` dict.
Params = Mapping[str, Tensor] | Tensor


# --------------------------------------------------------------------------- checks


def check_bn_mode(bn_mode: Any, recal_batches: Sequence[Batch] | None = None) -> str:
    """Validate ``bn_mode``; ``"recalibrate"`` needs a non-empty ``recal_batches``.

    Raises:
        ValueError: Unknown mode, or ``"recalibrate"`` without recalibration batches.
    """
    if not isinstance(bn_mode, str) or bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
    if bn_mode == "recalibrate" and not recal_batches:
        raise ValueError("bn_mode='recalibrate' needs a non-empty list of recal_batches")
    return bn_mode


def _check_batches(batches: Sequence[Batch], name: str = "batches") -> None:
    if isinstance(batches, Tensor) or (
        isinstance(batches, (tuple, list)) and len(batches) > 0 and isinstance(batches[0], Tensor)
    ):
        raise ValueError(f"{name} must be a sequence of (inputs, targets) pairs, e.g. [(x, y)]; got a single tensor or pair")
    if len(batches) == 0:
        raise ValueError(f"{name} must contain at least one (inputs, targets) batch, got none")
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError(f"{name} must be a sequence of (inputs, targets) pairs, got an item of type {type(b).__name__}")


def first_batches(x: Tensor, y: Tensor, n: int, batch_size: int, device: torch.device | str) -> list[Batch]:
    """The first ``n`` examples of ``(x, y)`` on ``device``, in consecutive batches of
    ``batch_size`` (the last one shorter when ``batch_size`` does not divide ``n``)."""
    x, y = x[:n].to(device), y[:n].to(device)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


# ------------------------------------------------------------------ parameter dicts


def parameter_dict(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the model's trainable parameters, in ``named_parameters`` order.

    This dict (its names, order and shapes) is the layout of every flat vector the probes
    use; parameters with ``requires_grad=False`` are not part of it and keep the model's
    values.
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def flatten_params(params: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a parameter dict into one flat vector (P,), in the dict's order."""
    if len(params) == 0:
        raise ValueError("cannot flatten an empty parameter dict")
    return torch.cat([t.reshape(-1) for t in params.values()])


def unflatten_params(vector: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat vector (P,) into a dict shaped as ``like`` (views; autograd flows).

    Raises:
        ValueError: ``vector`` is not 1-D of length ``sum(numel)`` of ``like``.
    """
    sizes = [t.numel() for t in like.values()]
    if vector.ndim != 1 or vector.numel() != sum(sizes):
        raise ValueError(f"expected a flat vector of length {sum(sizes)}, got shape {tuple(vector.shape)}")
    parts = torch.split(vector, sizes)
    return {n: p.view(t.shape) for (n, t), p in zip(like.items(), parts)}


def as_flat(params: Params, like: Mapping[str, Tensor]) -> Tensor:
    """A point given as flat vector or dict -> flat vector in ``like``'s dtype and device.

    Raises:
        ValueError: Wrong length, or a dict whose names differ from ``like``'s.
    """
    ref = next(iter(like.values()))
    if isinstance(params, Tensor):
        total = sum(t.numel() for t in like.values())
        if params.ndim != 1 or params.numel() != total:
            raise ValueError(f"expected a flat vector of length {total}, got shape {tuple(params.shape)}")
        return params.detach().to(device=ref.device, dtype=ref.dtype)
    missing = [n for n in like if n not in params]
    extra = [n for n in params if n not in like]
    if missing or extra:
        raise ValueError(f"parameter names differ from the model's: missing {missing[:5]}, unexpected {extra[:5]}")
    for n, t in like.items():
        if tuple(params[n].shape) != tuple(t.shape):
            raise ValueError(f"parameter {n!r} has shape {tuple(params[n].shape)}, expected {tuple(t.shape)}")
    return torch.cat([params[n].detach().reshape(-1).to(device=ref.device, dtype=ref.dtype) for n in like])


# ------------------------------------------------------------------- BN machinery


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model contains a BatchNorm layer that tracks running statistics."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


@contextlib.contextmanager
def _probe_modes(model: nn.Module, bn_train: bool, cumulative: bool = False) -> Iterator[None]:
    """Everything in eval mode, BatchNorm in train mode if ``bn_train``; restore on exit."""
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        model.eval()
        if bn_train:
            for m, _ in momenta:
                m.train()
                if cumulative:
                    m.momentum = None
        yield
    finally:
        for m, mom in momenta:
            m.momentum = mom
        for m, flag in flags:
            m.training = flag


def _fresh_buffers(model: nn.Module, buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copies of ``buffers`` with BatchNorm statistics reset to (mean 0, var 1, count 0)."""
    out = {n: b.clone() for n, b in buffers.items()}
    for mname, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            prefix = f"{mname}." if mname else ""
            for bname, fill in (("running_mean", 0.0), ("running_var", 1.0), ("num_batches_tracked", 0)):
                key = prefix + bname
                if key in out:
                    out[key] = torch.full_like(out[key], fill)
    return out


def _model_buffers(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_buffers())


def recalibrated_buffers(
    model: nn.Module,
    params: Mapping[str, Tensor],
    recal_batches: Sequence[Batch],
    buffers: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """BatchNorm running statistics recomputed at ``params`` on ``recal_batches``.

    Fresh statistics are accumulated with ``momentum=None`` (cumulative average over the
    batches), without gradient. Non-BN buffers are copied from ``buffers`` (default: the
    model's). The model and its buffers are left unchanged.

    Returns:
        A new buffer dict (same keys as ``model.named_buffers()``).
    """
    _check_batches(recal_batches, "recal_batches")
    base = _model_buffers(model) if buffers is None else dict(buffers)
    fresh = _fresh_buffers(model, base)
    if not has_batchnorm(model):
        return fresh
    detached = {n: t.detach() for n, t in params.items()}
    with torch.no_grad(), _probe_modes(model, bn_train=True, cumulative=True):
        for x, _ in recal_batches:
            functional_call(model, {**detached, **fresh}, (x,))
    return fresh


def _buffers_for(
    model: nn.Module,
    params: Mapping[str, Tensor],
    bn_mode: str,
    recal_batches: Sequence[Batch] | None,
    buffers: Mapping[str, Tensor] | None,
) -> tuple[dict[str, Tensor], bool]:
    """Buffers to use and whether BN runs in train (batch-statistics) mode."""
    base = _model_buffers(model) if buffers is None else dict(buffers)
    if bn_mode == "eval" or not has_batchnorm(model):
        return base, False
    if bn_mode == "batch":
        return {n: b.clone() for n, b in base.items()}, True
    return recalibrated_buffers(model, params, recal_batches or (), base), False


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
    with _probe_modes(model, bn_train=bn_train):
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
        _check_batches(batches)
        if recal_batches is not None and len(recal_batches) > 0:
            _check_batches(recal_batches, "recal_batches")
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
            bufs, bn_train = _buffers_for(self.model, p, self.bn_mode, self.recal_batches, self.buffers)
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
        bufs, bn_train = _buffers_for(self.model, p, self.bn_mode, self.recal_batches, self.buffers)
        loss_sum, _, n = _forward_sums(self.model, p, bufs, bn_train, data, self.loss_fn)
        return loss_sum / n

    def training_loss(self, params: Params, batch: Batch) -> Tensor:
        """Differentiable loss on one batch for optimisation (Bezier curves, subspaces).

        BatchNorm uses batch statistics unless ``bn_mode == "eval"`` (then the running
        statistics): recalibrating at every optimisation step would be wasteful, and the
        final evaluation recalibrates anyway.
        """
        p = self._as_dict(params)
        base = _model_buffers(self.model) if self.buffers is None else self.buffers
        bn_train = self.bn_mode != "eval" and has_batchnorm(self.model)
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
