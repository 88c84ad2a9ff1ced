"""What the curvature operators know about losses: how a loss reduces over a batch, how
batches combine into the loss over a data set, and closed-form Hessians in the outputs.

A curvature operator represents the curvature of the loss over the whole data set, as in
curvlinops (F. Dangel et al., https://github.com/f-dangel/curvlinops): the loss of the
concatenation of all batches under the loss function's own reduction.

* ``"mean"``: each batch's loss is an average over its loss terms; the data-set loss is
  the average over all terms, ``L = sum_b w_b L_b / sum_b w_b`` with ``w_b`` the batch's
  share of terms. For losses whose terms are proportional to the examples (MSE, BCE,
  soft-label or unignored cross-entropy, sequence outputs of a fixed length) ``w_b = n_b``,
  the batch size. For class-index cross-entropy / NLL with ignored targets or class
  weights the batch mean divides by the (weighted) number of counted targets, so
  ``w_b = n_b * counted_b / numel(targets_b)``, which makes ``L`` the mean over all counted
  targets, as ``loss_fn`` on the concatenated data computes it.
* ``"sum"``: each batch's loss is a sum; the data-set loss is ``L = sum_b L_b``.

The reduction is read from ``loss_fn.reduction`` (torch loss modules; ``nn.KLDivLoss``'s
``"batchmean"`` is the mean over examples) or from the default of a ``reduction`` keyword
in ``loss_fn``'s signature (``torch.nn.functional`` losses and ``functools.partial`` of
them); any other callable must state it. ``"none"`` and unknown values are refused.

Closed-form Hessians of the loss in the model outputs (for Gauss-Newton products,
Schraudolph 2002): softmax cross-entropy with class-index targets and no class weights has
``diag(p) - p p^T`` at every counted position (also with label smoothing, a convex
combination of such terms), divided by the number of counted positions for ``"mean"``;
MSE has ``2 I`` (``"sum"``) or ``2 I / numel`` (``"mean"``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "resolve_reduction",
    "BatchWeights",
    "closed_form_output_hessian",
    "output_hvp_closed_form",
]

Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum")
"""The batch reductions a curvature operator accepts."""

_ALIASES = {"batchmean": "mean"}  # nn.KLDivLoss: sum / batch size, the mean over examples
_ACCEPTED = "accepted reductions are 'mean' and 'sum' (and nn.KLDivLoss's 'batchmean', a mean over examples)"


def _name(loss_fn: Any) -> str:
    base = loss_fn.func if isinstance(loss_fn, functools.partial) else loss_fn
    return getattr(base, "__qualname__", None) or type(base).__name__


def _declared_reduction(loss_fn: Any) -> tuple[str, str] | None:
    """(reduction, where it was read) from the loss itself, or None if it declares none."""
    value = getattr(loss_fn, "reduction", None)
    if isinstance(value, str):
        return value, "its reduction attribute"
    try:
        param = inspect.signature(loss_fn).parameters.get("reduction")
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return None
    if param is not None and isinstance(param.default, str):
        return param.default, "the default of its reduction keyword"
    return None


def resolve_reduction(loss_fn: Any, reduction: str | None = None) -> str:
    """The batch reduction of ``loss_fn``: ``"mean"`` or ``"sum"``.

    Args:
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar loss of a batch.
        reduction: the caller's statement, ``"mean"`` or ``"sum"``; None reads it from
            ``loss_fn`` (see the module docstring).

    Raises:
        ValueError: ``reduction`` or the loss's own reduction is not accepted, the two
            disagree, or neither is known.
    """
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; {_ACCEPTED}")
    declared = _declared_reduction(loss_fn)
    if declared is not None:
        value, source = declared
        value = _ALIASES.get(value, value) if isinstance(loss_fn, nn.KLDivLoss) else value
        if value not in REDUCTIONS:
            raise ValueError(
                f"loss_fn {_name(loss_fn)} has reduction {value!r} ({source}); a curvature operator needs a "
                f"scalar loss per batch: {_ACCEPTED}"
            )
        if reduction is not None and reduction != value:
            raise ValueError(
                f"reduction={reduction!r} contradicts loss_fn {_name(loss_fn)}, whose reduction is {value!r} ({source})"
            )
        return value
    if reduction is None:
        raise ValueError(
            f"cannot tell how loss_fn {_name(loss_fn)} reduces a batch (no reduction attribute or keyword); "
            f"pass reduction='mean' (averaged over the batch) or reduction='sum' (summed): {_ACCEPTED}"
        )
    return reduction


def _class_index_loss(loss_fn: Any) -> tuple[int, Tensor | None] | None:
    """(ignore_index, class weights) of a cross-entropy / NLL loss, else None."""
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return loss_fn.ignore_index, loss_fn.weight
    base = loss_fn.func if isinstance(loss_fn, functools.partial) else loss_fn
    if base is F.cross_entropy or base is F.nll_loss:
        params = inspect.signature(loss_fn).parameters
        return params["ignore_index"].default, params["weight"].default
    return None


class BatchWeights:
    """Per-batch weights ``w_b`` and the normaliser of the data-set loss ``sum_b w_b L_b / Z``.

    ``"sum"``: ``w_b = 1`` and ``Z = 1``. ``"mean"``: ``w_b = n_b`` (an int, so that the
    products are those of a size-weighted mean) unless the loss is a class-index
    cross-entropy / NLL whose batch mean runs over fewer (or weighted) targets, and
    ``Z = sum_b w_b``; see the module docstring.
    """

    def __init__(self, loss_fn: Any, reduction: str):
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; {_ACCEPTED}")
        self.reduction = reduction
        self._class_index = _class_index_loss(loss_fn) if reduction == "mean" else None

    def weight(self, targets: Any, n: int) -> int | float:
        """``w_b`` of a batch of ``n`` examples with these targets."""
        if self.reduction == "sum":
            return 1
        if self._class_index is None or not isinstance(targets, Tensor) or targets.is_floating_point():
            return n
        ignore_index, class_weight = self._class_index
        counted = targets != ignore_index
        if class_weight is None:
            terms = int(counted.sum())
            return n if terms == targets.numel() else n * terms / targets.numel()
        per_target = class_weight.to(targets.device)[torch.where(counted, targets, 0)]
        return n * float((per_target * counted).sum()) / targets.numel()

    def normaliser(self, weights: list[int | float]) -> int | float:
        """``Z``: the sum of the weights for ``"mean"``, 1 for ``"sum"``."""
        return sum(weights) if self.reduction == "mean" else 1


def closed_form_output_hessian(loss_fn: Any) -> str:
    """``"closed_form_cross_entropy"``, ``"closed_form_mse"`` or ``"autodiff"``: how the
    Hessian of ``loss_fn`` in the outputs is multiplied (closed form where one is known)."""
    reduces = getattr(loss_fn, "reduction", None) in REDUCTIONS
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None and reduces:
        return "closed_form_cross_entropy"
    if isinstance(loss_fn, nn.MSELoss) and reduces:
        return "closed_form_mse"
    return "autodiff"


def output_hvp_closed_form(kind: str, loss_fn: Any, z: Tensor, targets: Any, U: Tensor) -> Tensor | None:
    """``H_out U`` in closed form for a block ``U`` (k, *z.shape), or None where ``kind``
    has none for these targets (then the caller differentiates).

    Args:
        kind: from :func:`closed_form_output_hessian`.
        loss_fn: the loss module ``kind`` was chosen for.
        z: model outputs (n, C, ...) of the batch.
        targets: the batch's targets.
        U: (k, n, C, ...) block of output-space vectors.
    """
    if kind == "closed_form_mse":
        return (2.0 / z.numel() if loss_fn.reduction == "mean" else 2.0) * U
    if kind == "closed_form_cross_entropy" and isinstance(targets, Tensor) and not targets.is_floating_point():
        mask = (targets != loss_fn.ignore_index).to(z.dtype).unsqueeze(1)  # (n, 1, ...)
        p = torch.softmax(z, dim=1)
        pu = p * U
        hu = (pu - p * pu.sum(dim=2, keepdim=True)) * mask  # class dimension of (k, n, C, ...)
        return hu / mask.sum() if loss_fn.reduction == "mean" else hu
    return None
