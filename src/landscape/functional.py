"""The one functional core: parameter layout, batch iteration and the BatchNorm policy.

Curvature operators, landscape probes, bounds and escape trials all evaluate a network at
points of parameter space through ``torch.func.functional_call`` on a snapshot of its
parameters and buffers; this module owns what they share:

- the parameter layout: trainable parameters in ``named_parameters()`` order (tied ones
  once), flat vectors (P,) and blocks (P, k), dicts of named tensors;
- batches: ``(inputs, targets)`` pairs moved to the parameters' device and dtype;
- the BatchNorm policy, one for all (:data:`BN_MODES`): ``eval`` (running statistics),
  ``batch`` (batch statistics, running statistics untouched) and, for perturbed points,
  ``recalibrate`` (running statistics recomputed at the point on recalibration batches).
  Curvature at a fixed point takes ``eval`` or ``batch`` (:data:`POINT_BN_MODES`);
- attention on its plain-math path (:func:`math_attention`) wherever a forward is
  differentiated twice: the fused kernels have no double backward and no forward mode.

The caller's model is never modified: modes and flags are restored on exit, also on error.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeGuard

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_map

__all__ = [
    "BN_MODES",
    "POINT_BN_MODES",
    "BNMode",
    "Batch",
    "LossFn",
    "Params",
    "check_bn_mode",
    "check_batches",
    "trainable_parameter_names",
    "select_parameter_names",
    "parameter_vector",
    "parameter_dict",
    "flatten_tensors",
    "unflatten_vector",
    "flatten_params",
    "unflatten_params",
    "as_flat",
    "is_batchnorm",
    "has_batchnorm",
    "has_running_stats",
    "has_dropout",
    "curvature_mode",
    "math_attention",
    "eval_mode",
    "probe_modes",
    "fresh_bn_buffers",
    "model_buffers",
    "recalibrated_buffers",
    "buffers_for",
    "move_to",
    "batch_size_of",
    "iter_batches",
    "first_batches",
]

BNMode = Literal["eval", "batch", "recalibrate"]
BN_MODES: tuple[str, ...] = ("eval", "batch", "recalibrate")
"""The BatchNorm policy of every evaluation: running statistics, batch statistics, or
running statistics recalibrated at the evaluated point."""
POINT_BN_MODES: tuple[str, ...] = ("eval", "batch")
"""The modes of curvature at a fixed point (recalibration belongs to perturbed points)."""

_DROPOUT_TYPES: tuple[type, ...] = (nn.modules.dropout._DropoutNd,)
_DROPOUT_CLASS_NAMES = frozenset({"DropPath", "DropBlock2d", "DropBlock", "StochasticDepth"})

#: One batch: inputs and targets (tensors or pytrees of tensors).
Batch = tuple[Any, Any]
#: ``loss_fn(outputs, targets)`` -> scalar mean loss over the batch.
LossFn = Callable[[Any, Any], Tensor]
#: A point of parameter space: a flat vector (P,) or a ``{name: tensor}`` dict.
Params = Mapping[str, Tensor] | Tensor


# ------------------------------------------------------------------------------- checks


def check_bn_mode(bn_mode: Any, recal_batches: Sequence[Batch] | None = None,
                  allowed: Sequence[str] = BN_MODES) -> str:
    """Validate ``bn_mode`` against ``allowed``; ``"recalibrate"`` needs a non-empty ``recal_batches``.

    Raises:
        ValueError: Unknown mode, or ``"recalibrate"`` without recalibration batches.
    """
    if not isinstance(bn_mode, str) or bn_mode not in allowed:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; allowed values are {list(allowed)}")
    if bn_mode == "recalibrate" and not recal_batches:
        raise ValueError("bn_mode='recalibrate' needs a non-empty list of recal_batches")
    return bn_mode


def check_batches(batches: Sequence[Batch], name: str = "batches") -> None:
    if isinstance(batches, Tensor) or (
        isinstance(batches, (tuple, list)) and len(batches) > 0 and isinstance(batches[0], Tensor)
    ):
        raise ValueError(f"{name} must be a sequence of (inputs, targets) pairs, e.g. [(x, y)]; got a single tensor or pair")
    if len(batches) == 0:
        raise ValueError(f"{name} must contain at least one (inputs, targets) batch, got none")
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError(f"{name} must be a sequence of (inputs, targets) pairs, got an item of type {type(b).__name__}")


# ---------------------------------------------------------------------- parameter layout


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad`` in ``model.named_parameters()`` order.

    Tied (shared) parameters appear once, under their first name.
    """
    return [name for name, p in model.named_parameters() if p.requires_grad]


def select_parameter_names(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Validate a subset of parameter names; returned in ``named_parameters()`` order.

    Args:
        model: the network.
        params: parameter names, or None for all trainable parameters.

    Raises:
        ValueError: an unknown, repeated or non-trainable name, or an empty selection.
    """
    trainable = trainable_parameter_names(model)
    if params is None:
        if not trainable:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        return trainable
    if isinstance(params, str):
        raise ValueError(f"params must be a list of parameter names, got the string {params!r}")
    requested = list(params)
    if not requested:
        raise ValueError("params must name at least one parameter, got an empty list")
    all_names = {name for name, _ in model.named_parameters()}
    seen: set[str] = set()
    for name in requested:
        if name in seen:
            raise ValueError(f"parameter {name!r} is listed twice in params")
        seen.add(name)
        if name not in all_names:
            raise ValueError(f"unknown parameter name {name!r}; the model's parameters are {sorted(all_names)}")
        if name not in trainable:
            raise ValueError(f"parameter {name!r} does not require grad; trainable parameters are {trainable}")
    return [name for name in trainable if name in seen]


def parameter_vector(model: nn.Module, params: Sequence[str] | None = None) -> Tensor:
    """A detached copy of the selected parameters as one flat vector (P,)."""
    names = select_parameter_names(model, params)
    named = dict(model.named_parameters())
    return flatten_tensors([named[n].detach() for n in names]).clone()


def flatten_tensors(tensors: Sequence[Tensor], batch_dims: int = 0) -> Tensor:
    """Concatenate tensors into a flat vector, keeping ``batch_dims`` leading dims.

    Args:
        tensors: tensors of shapes (*B, *shape_i).
        batch_dims: number of leading dimensions B shared by all tensors.

    Returns:
        Tensor of shape (*B, sum_i prod(shape_i)).
    """
    if not tensors:
        raise ValueError("flatten_tensors needs at least one tensor")
    lead = tuple(tensors[0].shape[:batch_dims])
    return torch.cat([t.reshape(*lead, -1) for t in tensors], dim=-1)


def unflatten_vector(vector: Tensor, shapes: Sequence[torch.Size | tuple[int, ...]]) -> list[Tensor]:
    """Split a flat (P,) vector or a (P, k) block into tensors of the given shapes.

    Returns:
        For (P,): tensors of ``shapes``. For (P, k): tensors of shape (k, *shape_i)
        (the block dimension first, as ``torch.func.vmap`` and ``is_grads_batched`` want).
    """
    sizes = [math.prod(s) for s in shapes]
    if vector.shape[0] != sum(sizes):
        raise ValueError(f"vector has {vector.shape[0]} entries but the shapes hold {sum(sizes)}")
    if vector.ndim == 1:
        return [c.reshape(s) for c, s in zip(vector.split(sizes), shapes, strict=True)]
    if vector.ndim == 2:
        k = vector.shape[1]
        return [c.T.reshape(k, *s) for c, s in zip(vector.split(sizes, dim=0), shapes, strict=True)]
    raise ValueError(f"expected a (P,) vector or a (P, k) block, got shape {tuple(vector.shape)}")


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
    return {n: p.view(t.shape) for (n, t), p in zip(like.items(), parts, strict=True)}


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


# ---------------------------------------------------------------------- BatchNorm policy


def is_batchnorm(module: nn.Module) -> TypeGuard[nn.modules.batchnorm._BatchNorm]:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model contains a BatchNorm layer (any ``_BatchNorm`` subclass)."""
    return any(is_batchnorm(m) for m in model.modules())


def has_dropout(model: nn.Module) -> bool:
    """Whether the model contains dropout-like layers (Dropout*, AlphaDropout, DropPath)."""
    return any(isinstance(m, _DROPOUT_TYPES) or type(m).__name__ in _DROPOUT_CLASS_NAMES for m in model.modules())


@contextlib.contextmanager
def math_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Attention on its plain-math path for the duration; flags restored after, also on error.

    The fused attention kernels (``F.scaled_dot_product_attention``'s flash, memory-efficient
    and cuDNN backends; on CPU its flash kernel) have no double backward and no forward-mode
    derivative in torch 2.14, so a Hessian-vector product (double backward or
    forward-over-reverse) or a Jacobian-vector product through them fails. Inside this
    context every module with a boolean ``fused_attn`` attribute (timm's ``Attention`` and
    the other timm attention layers) takes its written-out path (scores, softmax, weighted
    sum) and any direct ``scaled_dot_product_attention`` call takes the math backend
    (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``). Both are compositions of ordinary
    differentiable ops. Training may keep the fused kernels; curvature enters this context
    (:func:`curvature_mode` does). The SDPA backend choice is process-wide state of torch
    and is restored on exit.
    """
    fused = [(m, flag) for m in model.modules() if isinstance(flag := getattr(m, "fused_attn", None), bool)]
    try:
        for m, _ in fused:
            setattr(m, "fused_attn", False)  # noqa: B010  (an attribute nn.Module does not declare)
        with sdpa_kernel(SDPBackend.MATH):
            yield model
    finally:
        for m, flag in fused:
            setattr(m, "fused_attn", flag)  # noqa: B010


@contextlib.contextmanager
def _point_modes(model: nn.Module, bn_mode: str) -> Iterator[nn.Module]:
    """Eval mode with BatchNorm per ``bn_mode`` (see :func:`curvature_mode`); restored on exit."""
    check_bn_mode(bn_mode, allowed=POINT_BN_MODES)
    flags = [(m, m.training) for m in model.modules()]
    tracked: list[tuple[nn.modules.batchnorm._BatchNorm, bool]] = []
    try:
        model.eval()
        if bn_mode == "batch":
            for m in model.modules():
                if is_batchnorm(m):
                    tracked.append((m, m.track_running_stats))
                    m.training = True
                    m.track_running_stats = False
        yield model
    finally:
        for bn, value in tracked:
            bn.track_running_stats = value
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def curvature_mode(model: nn.Module, bn_mode: str) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in the mode curvature is measured in; restore it after.

    All modules go to eval mode (dropout off). With ``bn_mode="batch"``, BatchNorm layers
    use batch statistics: they are switched to training mode with
    ``track_running_stats=False``, so their running statistics and ``num_batches_tracked``
    are neither read nor written. Attention runs on its math path (:func:`math_attention`),
    so the forward can be differentiated twice and in forward mode. Every module's
    ``training`` flag, every BatchNorm's ``track_running_stats`` and every attention flag are
    restored on exit, also on error.
    """
    with _point_modes(model, bn_mode), math_attention(model):
        yield model


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Every module in eval mode (BN running statistics, no dropout), flags restored after:
    the ``eval`` policy as a context (:func:`curvature_mode` with ``bn_mode="eval"``, but
    attention keeps its fused kernels: this context is for evaluation, not curvature)."""
    return _point_modes(model, "eval")


def has_running_stats(model: nn.Module) -> bool:
    """Whether the model contains a BatchNorm layer that tracks running statistics (the
    layers ``eval`` reads and ``recalibrate`` recomputes)."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


@contextlib.contextmanager
def probe_modes(model: nn.Module, bn_train: bool, cumulative: bool = False) -> Iterator[None]:
    """Everything in eval mode, BatchNorm in train mode if ``bn_train``; restore on exit."""
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        model.eval()
        if bn_train:
            for bn, _ in momenta:
                bn.train()
                if cumulative:
                    bn.momentum = None
        yield
    finally:
        for bn, mom in momenta:
            bn.momentum = mom
        for m, flag in flags:
            m.training = flag


def fresh_bn_buffers(model: nn.Module, buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
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


def model_buffers(model: nn.Module) -> dict[str, Tensor]:
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
    check_batches(recal_batches, "recal_batches")
    base = model_buffers(model) if buffers is None else dict(buffers)
    fresh = fresh_bn_buffers(model, base)
    if not has_running_stats(model):
        return fresh
    detached = {n: t.detach() for n, t in params.items()}
    with torch.no_grad(), probe_modes(model, bn_train=True, cumulative=True):
        for x, _ in recal_batches:
            functional_call(model, {**detached, **fresh}, (x,))
    return fresh


def buffers_for(
    model: nn.Module,
    params: Mapping[str, Tensor],
    bn_mode: str,
    recal_batches: Sequence[Batch] | None,
    buffers: Mapping[str, Tensor] | None,
) -> tuple[dict[str, Tensor], bool]:
    """Buffers to use and whether BN runs in train (batch-statistics) mode."""
    base = model_buffers(model) if buffers is None else dict(buffers)
    if bn_mode == "eval" or not has_running_stats(model):
        return base, False
    if bn_mode == "batch":
        return {n: b.clone() for n, b in base.items()}, True
    return recalibrated_buffers(model, params, recal_batches or (), base), False


# ------------------------------------------------------------------------------- batches


def _map_tensors(fn: Callable[[Tensor], Any], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in a nest of mappings, lists and tuples, keeping the
    containers' types.

    Any ``collections.abc.Mapping`` counts (``dict``, ``OrderedDict``, ``UserDict``, ...),
    not only the dict types ``torch.utils._pytree`` registers; a mapping type that cannot
    be rebuilt from a dict comes back as a plain ``dict``. Named tuples keep their type;
    other registered pytree nodes go through ``tree_map``.
    """
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        items = {k: _map_tensors(fn, v) for k, v in obj.items()}
        if isinstance(obj, defaultdict):
            return defaultdict(obj.default_factory, items)
        rebuild: Callable[[dict], Any] = type(obj)  # dict, OrderedDict, UserDict, ... take a dict
        try:
            return rebuild(items)
        except TypeError:
            return items
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(_map_tensors(fn, v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, v) for v in obj)
    return tree_map(lambda t: fn(t) if isinstance(t, Tensor) else t, obj)


def _tensor_leaves(obj: Any) -> list[Tensor]:
    """The tensors of a nest as :func:`_map_tensors` walks it, in order."""
    leaves: list[Tensor] = []

    def collect(t: Tensor) -> Tensor:
        leaves.append(t)
        return t

    _map_tensors(collect, obj)
    return leaves


def move_to(obj: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move the tensors of a nest (tensors inside any mappings, lists and tuples) to
    ``device``; floating tensors are cast to ``dtype``.

    The one place batches are cast: a float64 model gets float64 inputs whether they come
    as a tensor, a ``dict``, a ``collections.UserDict`` or a list of them.
    """

    def move(t: Tensor) -> Tensor:
        if t.is_floating_point():
            return t.to(device=device, dtype=dtype, non_blocking=True)
        return t.to(device=device, non_blocking=True)

    return _map_tensors(move, obj)


def batch_size_of(inputs: Any, targets: Any) -> int:
    """Leading dimension of the targets, else of the first batched tensor of the inputs.

    Raises:
        ValueError: neither holds a tensor with at least one dimension.
    """
    for obj in (targets, inputs):
        if isinstance(obj, Tensor) and obj.ndim > 0:
            return int(obj.shape[0])
    leaves = [t for t in _tensor_leaves(inputs) if t.ndim > 0]
    if not leaves:
        raise ValueError("cannot infer the batch size: neither targets nor inputs hold a batched tensor")
    return int(leaves[0].shape[0])


def iter_batches(data: Iterable[Batch], device: torch.device, dtype: torch.dtype) -> Iterator[tuple[Any, Any, int]]:
    """``(inputs, targets, n)`` of each non-empty batch, moved to ``device`` (floats cast to ``dtype``)."""
    for i, batch in enumerate(data):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"each batch must be an (inputs, targets) pair; batch {i} is a {type(batch).__name__}")
        inputs, targets = move_to(batch[0], device, dtype), move_to(batch[1], device, dtype)
        n = batch_size_of(inputs, targets)
        if n == 0:
            continue
        yield inputs, targets, n


def first_batches(x: Tensor, y: Tensor, n: int, batch_size: int, device: torch.device | str) -> list[Batch]:
    """The first ``n`` examples of ``(x, y)`` on ``device``, in consecutive batches of
    ``batch_size`` (the last one shorter when ``batch_size`` does not divide ``n``)."""
    x, y = x[:n].to(device), y[:n].to(device)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
